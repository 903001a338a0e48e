//! The space quota (etcd's `--quota-backend-bytes`), the free-space reserve, alarms and
//! defragmentation.
//!
//! The leader refuses a write that adds data ([`mvcc::adds_data`]) once the database would
//! pass the quota, and raises `NOSPACE` for itself through Raft; from then on every replica
//! refuses such writes at apply (`mvcc::alarm`) until `etchctl alarm disarm`. Reads,
//! deletes, compaction and lease revokes go on, so an operator frees space by compacting
//! and defragmenting, then disarms (docs/operations.md).
//!
//! A disk can fill before the quota does (other files, a small volume). Every member
//! therefore looks at the free space of its data dir's filesystem each second and, below
//! `--disk-free-reserve-bytes`, raises `NOSPACE` for itself through the leader: writes that
//! add data stop cluster-wide while the member still has room for the alarm, deletes,
//! compaction and the defragmentation that frees space. Decision: etcd has no such check
//! (it panics on ENOSPC); a write that still meets a full disk stops the member's Raft, as
//! any storage failure does, and nothing written before is lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use etch_proto::alarm::{AlarmAction, AlarmRequest, AlarmResponse, AlarmType, DefragmentResponse};
use etch_proto::{Error, Mutation, Request, Response};

use super::{Checked, Node, Ticks, blocking};
use crate::mvcc;

/// etcd's default quota: 2 GiB.
pub const DEFAULT_QUOTA_BACKEND_BYTES: u64 = 2 << 30;

/// The default free-space reserve: 128 MiB, room for a few memtable flushes and the
/// compactions that follow them.
pub const DEFAULT_DISK_FREE_RESERVE_BYTES: u64 = 128 << 20;

/// How often the database's size on disk and its filesystem's free space are measured.
const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// Runs for the node's lifetime: keeps the measured database size current, and raises
/// `NOSPACE` for this member while its filesystem has less free space than the reserve.
pub(super) async fn measure_db_size(node: Node) {
    metrics::gauge!(crate::metrics::QUOTA).set(node.options().quota_backend_bytes as f64);
    let reserve = node.options().disk_free_reserve_bytes;
    let mut ticks = Ticks::new(&node, MEASURE_EVERY);
    while ticks.next().await.is_some() {
        let measured = node.clone();
        let sizes = tokio::task::spawn_blocking(move || {
            let free = crate::data_dir::disk_free(&measured.options().data_dir);
            (measured.db_size(), free)
        });
        let Ok((size, free)) = sizes.await else {
            continue;
        };
        node.inner.db_size.store(size, Ordering::Relaxed);
        let Some(free) = free else { continue };
        metrics::gauge!(crate::metrics::DISK_FREE).set(free as f64);
        if free < reserve && !node.raised_no_space() {
            tracing::warn!(
                free,
                reserve,
                "the data dir's filesystem is almost full: raising NOSPACE"
            );
            if let Err(e) = node.raise_no_space().await {
                tracing::warn!(error = %e, "raising NOSPACE failed; trying again in a second");
            }
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
        // This node leads (it is serving a write): propose the alarm itself.
        if let Err(e) = self
            .propose(self.no_space(), Checked::Unconditionally)
            .await
        {
            tracing::warn!(error = %e, "raising NOSPACE failed; the next write tries again");
        }
        Err(Error::NoSpace)
    }

    /// The request that raises `NOSPACE` for this member.
    fn no_space(&self) -> Mutation {
        Mutation::Alarm(AlarmRequest {
            action: AlarmAction::Activate,
            member_id: self.id(),
            alarm: AlarmType::NoSpace,
        })
    }

    /// Whether `NOSPACE` is raised for this member.
    fn raised_no_space(&self) -> bool {
        (self.store().alarms_of(AlarmType::NoSpace))
            .iter()
            .any(|a| a.member_id == self.id())
    }

    /// Raises `NOSPACE` for this member through Raft, from the leader or a follower (whose
    /// request the leader takes as the node's own, with root's rights).
    async fn raise_no_space(&self) -> Result<(), Error> {
        (self.on_leader(
            etch_proto::auth::ROOT,
            self.no_space().into_request(),
            false,
        ))
        .await
        .map(drop)
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
