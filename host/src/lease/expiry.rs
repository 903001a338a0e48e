//! The leader's expiry loop: refresh deadlines on takeover, propose revokes when they pass.

use std::time::Instant;

use crate::node::{Checked, Node, Ticks};
use crate::raft::Command;

/// Runs for the node's lifetime: every `lease_check_interval`, if this node leads, brings
/// its deadlines in line with the lease table and proposes a `LeaseExpire` for each lease
/// whose deadline has passed. Expiry is a decision of the leader, applied through Raft like
/// any write, so every replica deletes the same keys at the same revision.
pub async fn expire_leases(node: Node) {
    let mut ticks = Ticks::new(&node, node.options().lease_check_interval);
    while let Some(standing) = ticks.next().await {
        let term = standing.term;
        if !standing.leading {
            node.lessor().demote();
            continue;
        }
        let store = node.store().clone();
        let leases = match tokio::task::spawn_blocking(move || store.leases()).await {
            Ok(Ok(leases)) => leases,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the lease table");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "lease table reader failed");
                continue;
            }
        };
        let due = {
            let now = Instant::now();
            let mut lessor = node.lessor();
            if lessor.term() != Some(term) {
                tracing::info!(
                    term,
                    leases = leases.len(),
                    "leading: lease deadlines refreshed"
                );
            }
            lessor.promote(term, &leases, now);
            lessor.sync(&leases, now);
            lessor.expired(now)
        };
        for id in due {
            let node = node.clone();
            tokio::spawn(async move {
                tracing::debug!(lease = format_args!("{id:x}"), "lease expired; revoking");
                if let Err(e) = node
                    .propose_command(Command::LeaseExpire { id }, Checked::Unconditionally)
                    .await
                {
                    tracing::debug!(lease = format_args!("{id:x}"), error = %e, "expiry not applied");
                }
                node.lessor().expire_done(id);
            });
        }
    }
}
