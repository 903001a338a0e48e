//! Alarms, defragmentation and backups, as etcd's maintenance `Alarm`, `Defragment` and
//! `Snapshot`.

use etch_proto::alarm::{
    AlarmAction, AlarmMember, AlarmRequest, AlarmType, DefragmentRequest, DefragmentResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
};
use etch_proto::frame::FrameError;
use etch_proto::{Request, Response};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::error::{Attempts, Error, Result};
use crate::kv::response_name;
use crate::transport::read_failure;

/// A backup streamed by [`Client::snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSaved {
    /// The revision the backup holds the state at.
    pub revision: i64,
    /// The member that wrote it.
    pub member_id: u64,
    /// Bytes written.
    pub bytes: u64,
}

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

    /// Hands the leadership to voting member `target_id` (root only), as etcd's
    /// `MoveLeader`: answered once the target leads. The answer's header names the member
    /// that led before. Writes pause for about two election timeouts meanwhile.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let moved = client.move_leader(0x8b37e07b558d9d9).await?;
    /// println!("leadership moved from {:x}", moved.header.member_id);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn move_leader(&self, target_id: u64) -> Result<MoveLeaderResponse> {
        match self
            .request(Request::MoveLeader(MoveLeaderRequest { target_id }))
            .await?
        {
            Response::MoveLeader(r) => Ok(r),
            other => Err(Error::UnexpectedResponse {
                expected: "MoveLeader",
                got: response_name(&other),
            }),
        }
    }

    /// Streams a backup of the whole state of the node this client is connected to (root
    /// only) into `out`: every key with its history, leases, plugins, users and roles, at
    /// one revision, in etch's backup format (it ends in its SHA-256; `etchctl snapshot
    /// status` checks it, `etchctl snapshot restore` founds a new cluster from it). The
    /// node goes on serving meanwhile. Connect to one endpoint: the backup is that node's.
    ///
    /// Opening the stream waits at most the request timeout; after that, the stream fails
    /// if no byte arrives for a request timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let mut file = tokio::fs::File::create("backup.db").await.expect("create");
    /// let saved = client.snapshot(&mut file).await?;
    /// println!("saved revision {} ({} bytes)", saved.revision, saved.bytes);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn snapshot<W>(&self, out: &mut W) -> Result<SnapshotSaved>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let inner = self.inner();
        let after = inner.opts.request_timeout;
        let first = inner.encode(&Request::Snapshot(SnapshotRequest {}))?;
        let mut attempts = Attempts::default();
        let opened =
            match tokio::time::timeout(after, inner.open_stream(&first, &mut attempts)).await {
                Ok(opened) => opened?,
                Err(_) => return Err(attempts.timeout(after)),
            };
        let started = match opened.first {
            Response::Snapshot(r) => r,
            other => {
                return Err(Error::UnexpectedResponse {
                    expected: "Snapshot",
                    got: response_name(&other),
                });
            }
        };
        let (live, mut recv) = (opened.live, opened.recv);
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = match tokio::time::timeout(after, recv.read(&mut buf)).await {
                Ok(Ok(None)) => break,
                Ok(Ok(Some(n))) => n,
                Ok(Err(e)) => {
                    let e = FrameError::Io(std::io::Error::from(e));
                    return Err(read_failure(&live.conn, &live.endpoint, e));
                }
                Err(_) => {
                    let mut attempts = Attempts::default();
                    attempts.reached(&live.endpoint);
                    return Err(attempts.timeout(after));
                }
            };
            out.write_all(&buf[..n]).await.map_err(Error::Output)?;
            bytes += n as u64;
        }
        out.flush().await.map_err(Error::Output)?;
        Ok(SnapshotSaved {
            revision: started.revision,
            member_id: started.header.member_id,
            bytes,
        })
    }
}
