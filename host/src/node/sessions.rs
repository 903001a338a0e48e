//! The leader's clean-up of sessions (`crate::mvcc` keeps the outcomes of named writes):
//! every minute it proposes to forget the clients not seen for [`SESSION_TTL`].

use std::time::Duration;

use super::Node;
use super::plugin::now_ms;
use super::route::Checked;
use super::ticks::Ticks;
use crate::raft::Command;

/// How long a client's recorded outcomes outlive its last write. An SDK client retries a
/// write within its request timeout (seconds), so ten minutes leave a wide margin.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(600);
/// How often the leader looks.
const EVERY: Duration = Duration::from_secs(60);

pub(super) async fn expire_sessions(node: Node) {
    let mut ticks = Ticks::new(&node, EVERY);
    while let Some(standing) = ticks.next().await {
        if !standing.leading {
            continue;
        }
        let before_ms = now_ms().saturating_sub(SESSION_TTL.as_millis() as u64);
        let command = Command::SessionsExpire { before_ms };
        if let Err(e) = node
            .propose_command(command, Checked::Unconditionally)
            .await
        {
            tracing::debug!(error = %e, "sessions expiry not applied");
        }
    }
}
