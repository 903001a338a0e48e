//! `move-leader`: handing the leadership to another voter, as etcd's `MoveLeader`.
//!
//! openraft 0.9 has no leadership transfer (no `TimeoutNow`), and its voters refuse to vote
//! while their leader lease runs (an election timeout max since they last heard from a
//! leader). So the leader hands over in steps:
//!
//! 1. the target must be a voter that holds every entry the leader has (waited for a
//!    little);
//! 2. the other voters hold their own elections for the handover's length
//!    ([`PeerRequest::HoldElections`]: bounded, they campaign again by themselves after it,
//!    and are released at the end), and count the leader as alive meanwhile (requests they
//!    forward to it wait instead of giving up);
//! 3. the leader stops sending anything (heartbeats off; writes and linearizable reads that
//!    arrive wait), so every voter's lease runs out;
//! 4. the target ([`PeerRequest::Campaign`]) waits out the lease and calls elections until
//!    it leads: it is the only candidate, with the longest log, so it wins;
//! 5. the old leader turns its heartbeats back on (it is a follower by then) and lets the
//!    waiting requests go, which now meet the new leader.
//!
//! Writes pause for about one lease (two election timeouts): etcd's transfer is quicker.
//! If the target does not win in time the handover is called off and the client told so;
//! whoever leads then (usually the old leader) serves on.

use std::collections::BTreeSet;
use std::time::Duration;

use etch_proto::alarm::MoveLeaderResponse;
use etch_proto::{Error, Response};
use tokio::time::Instant;

use super::Node;
use crate::NodeId;
use crate::raft::wire::{PeerRequest, PeerResponse};

/// How long a voter may be asked to hold its elections, at most, in leases.
const MAX_HOLD_LEASES: u32 = 6;

impl Node {
    /// The voters' leader lease in openraft: the maximum election timeout.
    fn lease(&self) -> Duration {
        self.options().election_timeout * 2
    }

    /// Moves the leadership from this node, the leader, to voter `target`.
    pub(super) async fn move_leader(&self, target: NodeId) -> Result<Response, Error> {
        let response = Response::MoveLeader(MoveLeaderResponse::default());
        if target == self.id() {
            return Ok(response);
        }
        let (voters, addr) = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let addr = membership.get_node(&target).map(|n| n.peer_addr.clone());
            (voters, addr)
        };
        let Some(addr) = addr.filter(|_| voters.contains(&target)) else {
            return Err(Error::InvalidArgument(format!(
                "member {target:x} is not a voter of this cluster (move-leader needs a voting member)"
            )));
        };
        self.await_caught_up(target).await?;

        let lease = self.lease();
        let campaign = lease * 3;
        let hold = lease + campaign + Duration::from_secs(1);
        tracing::info!(
            target = format_args!("{target:x}"),
            "moving the leadership: holding elections, pausing heartbeats"
        );
        // The target holds too (an election it is asked to call still runs): every voter
        // then knows that the silence that follows is a handover, not a dead leader.
        let others: Vec<(NodeId, String)> = voters
            .iter()
            .filter(|&&v| v != self.id())
            .filter_map(|&v| self.member(v).map(|m| (v, m.peer_addr)))
            .collect();
        self.tell_voters(&others, hold).await;
        let _pause = Pause::begin(self);
        let asked = self
            .peers()
            .call(
                target,
                &addr,
                PeerRequest::Campaign {
                    after_ms: millis(lease + self.options().heartbeat_interval),
                    for_ms: millis(campaign),
                },
                lease + campaign + Duration::from_secs(2),
            )
            .await;
        drop(_pause);
        self.tell_voters(&others, Duration::ZERO).await;
        match asked {
            Ok(PeerResponse::Campaigned(true)) => {
                tracing::info!(target = format_args!("{target:x}"), "leadership moved");
                Ok(response)
            }
            Ok(other) => Err(Error::Unavailable {
                reason: format!(
                    "member {target:x} did not win the election in time ({other:?}); the leadership was not moved"
                ),
            }),
            Err(e) => Err(Error::Unavailable {
                reason: format!("could not ask member {target:x} to campaign: {e}"),
            }),
        }
    }

    /// Waits (up to an election timeout) until `target` has every entry this leader has.
    async fn await_caught_up(&self, target: NodeId) -> Result<(), Error> {
        let deadline = Instant::now() + self.options().election_timeout;
        let mut metrics = self.raft().metrics();
        loop {
            let (last, matched) = {
                let m = metrics.borrow_and_update();
                let matched = (m.replication.as_ref())
                    .and_then(|r| r.get(&target).cloned())
                    .flatten()
                    .map(|l| l.index);
                (m.last_log_index, matched)
            };
            if matched.is_some() && matched >= last {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                let at = matched.map_or_else(|| "nothing yet".to_owned(), |m| m.to_string());
                return Err(Error::Unavailable {
                    reason: format!(
                        "member {target:x} is behind the leader (at {at}, leader at {}): try again when it has caught up",
                        last.unwrap_or(0)
                    ),
                });
            }
        }
    }

    /// Asks `voters` to hold their elections for `hold` (zero: release them), together.
    async fn tell_voters(&self, voters: &[(NodeId, String)], hold: Duration) {
        let mut asked = tokio::task::JoinSet::new();
        for (id, addr) in voters.iter().cloned() {
            let peers = self.inner.peers.clone();
            let body = PeerRequest::HoldElections {
                for_ms: millis(hold),
            };
            let timeout = self.options().election_timeout;
            asked.spawn(async move { (id, peers.call(id, &addr, body, timeout).await) });
        }
        while let Some(done) = asked.join_next().await {
            if let Ok((id, answer)) = done
                && !matches!(answer, Ok(PeerResponse::Held))
            {
                tracing::info!(
                    member = format_args!("{id:x}"),
                    ?answer,
                    "a voter did not hold its elections"
                );
            }
        }
    }

    /// Holds this node's own elections for `for_ms` milliseconds (0: releases them), when
    /// `from` is the leader.
    pub(crate) fn hold_elections(&self, from: NodeId, for_ms: u64) -> Result<(), String> {
        let max = millis(self.lease() * MAX_HOLD_LEASES);
        if for_ms > max {
            return Err(format!("holding elections for {for_ms} ms (at most {max})"));
        }
        if for_ms > 0 && self.raft().metrics().borrow().current_leader != Some(from) {
            return Err(format!("{from:x} is not the leader"));
        }
        let until = Instant::now() + Duration::from_millis(for_ms);
        if for_ms > 0 {
            self.note_leader_contact_until(from, until.into_std());
        }
        *self
            .inner
            .election_hold
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(until);
        self.raft().runtime_config().elect(for_ms == 0);
        if for_ms > 0 {
            tracing::info!(for_ms, "holding elections while the leadership moves");
            let node = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(until).await;
                let mut hold = node
                    .inner
                    .election_hold
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                // A later hold (or a release) decides instead.
                if *hold == Some(until) {
                    *hold = None;
                    node.raft().runtime_config().elect(true);
                }
            });
        }
        Ok(())
    }

    /// Calls elections, from `after_ms` on and for at most `for_ms`, until this node leads,
    /// when `from` is the leader handing over to it. Answers whether it leads.
    pub(crate) async fn campaign(
        &self,
        from: NodeId,
        after_ms: u64,
        for_ms: u64,
    ) -> Result<bool, String> {
        let max = millis(self.lease() * MAX_HOLD_LEASES);
        if after_ms.saturating_add(for_ms) > max {
            return Err(format!(
                "campaigning for {after_ms} + {for_ms} ms (at most {max})"
            ));
        }
        if self.raft().metrics().borrow().current_leader != Some(from) {
            return Err(format!("{from:x} is not the leader"));
        }
        let silent = Duration::from_millis(after_ms + for_ms);
        self.note_leader_contact_until(from, std::time::Instant::now() + silent);
        tokio::time::sleep(Duration::from_millis(after_ms)).await;
        let deadline = Instant::now() + Duration::from_millis(for_ms);
        let mut metrics = self.raft().metrics();
        while Instant::now() < deadline {
            if metrics.borrow_and_update().current_leader == Some(self.id()) {
                return Ok(true);
            }
            tracing::info!("calling an election: the leader hands over to this node");
            self.raft()
                .trigger()
                .elect()
                .await
                .map_err(|e| format!("raft stopped: {e}"))?;
            let next = (Instant::now() + self.lease()).min(deadline);
            while Instant::now() < next {
                if tokio::time::timeout_at(next, metrics.changed())
                    .await
                    .is_err()
                {
                    break;
                }
                if metrics.borrow_and_update().current_leader == Some(self.id()) {
                    return Ok(true);
                }
            }
        }
        Ok(metrics.borrow().current_leader == Some(self.id()))
    }

    /// Waits while this node hands its leadership over: what it would send meanwhile
    /// (entries, read-index heartbeats) would renew the voters' leases.
    pub(super) async fn await_no_handover(&self) {
        let mut pause = self.inner.handover.subscribe();
        let _ = pause.wait_for(|paused| !*paused).await;
    }
}

/// The leader's pause while it hands over: heartbeats off and requests waiting, until
/// dropped (whatever happens to the handover).
struct Pause<'a>(&'a Node);

impl<'a> Pause<'a> {
    fn begin(node: &'a Node) -> Self {
        node.inner.handover.send_replace(true);
        node.raft().runtime_config().heartbeat(false);
        Pause(node)
    }
}

impl Drop for Pause<'_> {
    fn drop(&mut self) {
        self.0.raft().runtime_config().heartbeat(true);
        self.0.inner.handover.send_replace(false);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
