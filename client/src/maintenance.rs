//! Alarms and defragmentation, as etcd's maintenance `Alarm` and `Defragment`.

use etch_proto::alarm::{
    AlarmAction, AlarmMember, AlarmRequest, AlarmType, DefragmentRequest, DefragmentResponse,
};
use etch_proto::{Request, Response};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::response_name;

impl Client {
    /// The alarms raised in the cluster (`NOSPACE` once the database passed its quota).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// for alarm in client.alarm_list().await? {
    ///     println!("memberID:{} alarm:{}", alarm.member_id, alarm.alarm.name());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn alarm_list(&self) -> Result<Vec<AlarmMember>> {
        self.alarm(AlarmRequest::default()).await
    }

    /// Clears `alarm` (root only): writes that add data go through again. Returns the
    /// alarm cleared, or nothing when it was not raised.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// for alarm in client.alarm_list().await? {
    ///     client.alarm_disarm(alarm).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn alarm_disarm(&self, alarm: AlarmMember) -> Result<Vec<AlarmMember>> {
        self.alarm(AlarmRequest {
            action: AlarmAction::Deactivate,
            member_id: alarm.member_id,
            alarm: alarm.alarm,
        })
        .await
    }

    /// Raises `alarm` for member `member_id` (root only), as etcd's `Alarm` with
    /// `ACTIVATE`; the node raises `NOSPACE` by itself.
    pub async fn alarm_activate(
        &self,
        member_id: u64,
        alarm: AlarmType,
    ) -> Result<Vec<AlarmMember>> {
        self.alarm(AlarmRequest {
            action: AlarmAction::Activate,
            member_id,
            alarm,
        })
        .await
    }

    async fn alarm(&self, req: AlarmRequest) -> Result<Vec<AlarmMember>> {
        match self.request(Request::Alarm(req)).await? {
            Response::Alarm(r) => Ok(r.alarms),
            other => Err(Error::UnexpectedResponse {
                expected: "Alarm",
                got: response_name(&other),
            }),
        }
    }

    /// Defragments the storage of the node this client is connected to (root only): what
    /// compaction and deletes left on disk is dropped. Not replicated: defragment each
    /// member.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// client.defragment().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn defragment(&self) -> Result<DefragmentResponse> {
        match self
            .request(Request::Defragment(DefragmentRequest {}))
            .await?
        {
            Response::Defragment(r) => Ok(r),
            other => Err(Error::UnexpectedResponse {
                expected: "Defragment",
                got: response_name(&other),
            }),
        }
    }
}
