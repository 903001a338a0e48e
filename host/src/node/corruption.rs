//! The corruption check (etcd's `--experimental-corrupt-check-time`): every period the
//! leader hashes its key history at its current revision (HashKV) and asks every other
//! member for its hash at the same revision; a member whose hash differs while its
//! compaction floor is the same raises the `CORRUPT` alarm for that member, through Raft,
//! and the leader logs both hashes at ERROR. The first check comes a few seconds after a
//! node starts leading, so a diverged member is found soon after a restart.
//!
//! `CORRUPT` is reported, not enforced: `alarm list`, `/health` (503 `ALARM CORRUPT`) and
//! the log name the member, and docs/operations.md says to replace it (remove it, then add
//! it back with an empty data directory). etcd also stops serving writes on `CORRUPT`; etch
//! leaves the healthy majority serving.

use std::time::Duration;

use etch_proto::alarm::{AlarmAction, AlarmRequest, AlarmType};
use etch_proto::{HashKvResponse, Mutation};

use super::{Checked, Node, Ticks, blocking};
use crate::raft::wire::{PeerRequest, PeerResponse};

/// How long a member has to answer with its hash.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// The first check after this node starts leading.
const FIRST_CHECK: Duration = Duration::from_secs(3);
/// How often the task looks whether a round is due.
const TICK: Duration = Duration::from_millis(500);

/// Runs for the node's lifetime: checks the members every `period` while this node leads.
pub(super) async fn check_corruption(node: Node, period: Duration) {
    let mut ticks = Ticks::new(&node, TICK);
    let mut next: Option<tokio::time::Instant> = None;
    while let Some(standing) = ticks.next().await {
        let now = tokio::time::Instant::now();
        if !standing.leading {
            next = None;
            continue;
        }
        // The first round a little after this node starts leading, then every period.
        let due = *next.get_or_insert(now + FIRST_CHECK.min(period));
        if now < due {
            continue;
        }
        next = Some(now + period);
        if let Err(e) = check_once(&node).await {
            tracing::warn!(error = %e, "corruption check could not run");
        }
    }
}

/// One round: the leader's hash against every other member's, at the leader's revision.
async fn check_once(node: &Node) -> Result<(), etch_proto::Error> {
    let store = node.store().clone();
    let revision = store.revision();
    let mine = blocking(move || store.hash_kv(revision)).await??;
    let members: Vec<(u64, String)> = {
        let metrics = node.raft().metrics();
        let m = metrics.borrow();
        (m.membership_config.membership().nodes())
            .filter(|(id, _)| **id != node.id())
            .map(|(id, member)| (*id, member.peer_addr.clone()))
            .collect()
    };
    for (id, addr) in members {
        let Some(theirs) = ask(node, id, &addr, revision).await else {
            continue;
        };
        if theirs.compact_revision != mine.compact_revision || theirs.hash == mine.hash {
            continue;
        }
        tracing::error!(
            member = format_args!("{id:x}"),
            revision,
            leader_hash = mine.hash,
            member_hash = theirs.hash,
            compact_revision = mine.compact_revision,
            "corruption check: the member's key history differs from the leader's; raising CORRUPT"
        );
        let raise = Mutation::Alarm(AlarmRequest {
            action: AlarmAction::Activate,
            member_id: id,
            alarm: AlarmType::Corrupt,
        });
        node.propose(raise, Checked::Unconditionally).await?;
    }
    Ok(())
}

/// Member `id`'s hash at `revision`, once it has applied it (asked a few times); `None`
/// when it cannot say (down, behind, or compacted past it).
async fn ask(node: &Node, id: u64, addr: &str, revision: i64) -> Option<HashKvResponse> {
    for _ in 0..5 {
        let asked = node
            .peers()
            .call(id, addr, PeerRequest::HashKv { revision }, ASK_TIMEOUT)
            .await;
        match asked {
            Ok(PeerResponse::HashKv(Ok(hash))) => return Some(hash),
            Ok(PeerResponse::HashKv(Err(etch_proto::Error::FutureRevision { .. }))) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => return None,
        }
    }
    None
}
