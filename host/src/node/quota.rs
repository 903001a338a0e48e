//! The space quota (etcd's `--quota-backend-bytes`), alarms and defragmentation.
//!
//! The leader refuses a write that adds data ([`mvcc::adds_data`]) once the database would
//! pass the quota, and raises `NOSPACE` for itself through Raft; from then on every replica
//! refuses such writes at apply (`mvcc::alarm`) until `etchctl alarm disarm`. Reads,
//! deletes, compaction and lease revokes go on, so an operator frees space by compacting
//! and defragmenting, then disarms (docs/operations.md).

use std::sync::atomic::Ordering;
use std::time::Duration;

use etch_proto::alarm::{AlarmAction, AlarmRequest, AlarmResponse, AlarmType, DefragmentResponse};
use etch_proto::{Error, Request, Response};

use super::{Checked, Node, Ticks, blocking};
use crate::mvcc;

/// etcd's default quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;

/// How often the database's size on disk is measured for the quota check.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Runs for the node's lifetime: keeps the measured database size current.
pub(super) async fn measure_db_size(node: Node) {
    metrics::gauge!(crate::metrics::QUOTA).set(node.options().quota_backend_bytes as f64);
    let mut ticks = Ticks::new(&node, MEASURE_EVERY);
    while ticks.next().await.is_some() {
        let measured = node.clone();
        if let Ok(size) = tokio::task::spawn_blocking(move || measured.db_size()).await {
            node.inner.db_size.store(size, Ordering::Relaxed);
        }
    }
}

impl Node {
    /// Refuses `request` when it adds data and NOSPACE is raised, or when it would take the
    /// database past the quota, which raises NOSPACE first.
    pub(super) async fn check_quota(&self, request: &Request) -> Result<(), Error> {
        if !mvcc::adds_data(request) {
            return Ok(());
        }
        if self.store().no_space() {
            return Err(Error::NoSpace);
        }
        let quota = self.options().quota_backend_bytes;
        let size = self.inner.db_size.load(Ordering::Relaxed);
        let cost = etch_proto::limits::request_bytes(request) as u64;
        if size.saturating_add(cost) <= quota {
            return Ok(());
        }
        tracing::warn!(
            size,
            quota,
            "the database passed its space quota: raising NOSPACE"
        );
        let raise = Request::Alarm(AlarmRequest {
            action: AlarmAction::Activate,
            member_id: self.id(),
            alarm: AlarmType::NoSpace,
        });
        if let Err(e) = self.propose(raise, Checked::Unconditionally).await {
            tracing::warn!(error = %e, "raising NOSPACE failed; the next write tries again");
        }
        Err(Error::NoSpace)
    }

    /// The raised alarms this node knows (a `Get`), answered by the node asked.
    pub(super) fn alarm_list(&self, req: &AlarmRequest) -> Response {
        Response::Alarm(AlarmResponse {
            alarms: self.store().alarms_of(req.alarm),
            ..Default::default()
        })
    }

    /// Defragments this node's storage (not replicated) and measures it again.
    pub(super) async fn defragment(&self) -> Result<Response, Error> {
        let store = self.store().clone();
        blocking(move || store.defragment()).await?;
        let node = self.clone();
        if let Ok(size) = tokio::task::spawn_blocking(move || node.db_size()).await {
            self.inner.db_size.store(size, Ordering::Relaxed);
        }
        tracing::info!("defragmented");
        Ok(Response::Defragment(DefragmentResponse::default()))
    }
}
