//! [`Lessor`]: the leader's lease deadlines, a pure structure over an explicit clock.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use etch_proto::LeaseId;

/// Deadlines of the leases this node knows while it leads. Every method takes `now`, so the
/// expiry logic is tested with a clock the test moves.
#[derive(Debug, Default)]
pub struct Lessor {
    /// The term this node leads in, once every deadline has been refreshed for it.
    term: Option<u64>,
    deadlines: HashMap<LeaseId, Instant>,
    /// Leases whose revoke has been proposed and not yet come back.
    expiring: HashSet<LeaseId>,
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

impl Lessor {
    /// The term this node took over as leader in, if it leads.
    pub fn term(&self) -> Option<u64> {
        self.term
    }

    /// Takes over as leader in `term`: every lease's deadline becomes `now` + its TTL, so a
    /// leader change never expires a lease early (etcd's behaviour). A no-op when already
    /// leading in `term`.
    pub fn promote(&mut self, term: u64, leases: &[(LeaseId, i64)], now: Instant) {
        if self.term == Some(term) {
            return;
        }
        self.term = Some(term);
        self.expiring.clear();
        self.deadlines = leases
            .iter()
            .map(|&(id, ttl)| (id, now + ttl_duration(ttl)))
            .collect();
    }

    /// Stops leading: deadlines mean nothing on a follower.
    pub fn demote(&mut self) {
        self.term = None;
        self.deadlines.clear();
        self.expiring.clear();
    }

    /// Brings the set of leases in line with the replicated table `leases`: a lease this
    /// node has no deadline for (granted meanwhile) gets `now` + TTL, one that is gone from
    /// the table is forgotten.
    pub fn sync(&mut self, leases: &[(LeaseId, i64)], now: Instant) {
        let known: HashSet<LeaseId> = leases.iter().map(|&(id, _)| id).collect();
        self.deadlines.retain(|id, _| known.contains(id));
        self.expiring.retain(|id| known.contains(id));
        for &(id, ttl) in leases {
            self.deadlines
                .entry(id)
                .or_insert_with(|| now + ttl_duration(ttl));
        }
    }

    /// Records a lease just granted.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) {
        self.deadlines.insert(id, now + ttl_duration(ttl));
    }

    /// Refreshes a lease to `now` + `ttl`; `false` when it has already expired (its revoke
    /// is on its way) and must not be revived.
    pub fn keep_alive(&mut self, id: LeaseId, ttl: i64, now: Instant) -> bool {
        if self.expiring.contains(&id) || self.deadlines.get(&id).is_some_and(|&d| d <= now) {
            return false;
        }
        self.deadlines.insert(id, now + ttl_duration(ttl));
        true
    }

    /// Forgets a revoked lease.
    pub fn revoked(&mut self, id: LeaseId) {
        self.deadlines.remove(&id);
        self.expiring.remove(&id);
    }

    /// Time left on lease `id`, if this node has a deadline for it.
    pub fn remaining(&self, id: LeaseId, now: Instant) -> Option<Duration> {
        self.deadlines
            .get(&id)
            .map(|&d| d.saturating_duration_since(now))
    }

    /// The leases whose deadline has passed and whose revoke is not yet proposed, in id
    /// order; they are marked as expiring.
    pub fn expired(&mut self, now: Instant) -> Vec<LeaseId> {
        let mut due: Vec<LeaseId> = self
            .deadlines
            .iter()
            .filter(|&(id, &d)| d <= now && !self.expiring.contains(id))
            .map(|(&id, _)| id)
            .collect();
        due.sort_unstable();
        self.expiring.extend(&due);
        due
    }

    /// The proposed revoke of `id` came back (applied or failed): if the lease still
    /// exists, the next [`Lessor::expired`] proposes it again.
    pub fn expire_done(&mut self, id: LeaseId) {
        self.expiring.remove(&id);
    }
}

/// Whole seconds left, rounded up (a lease with 0.2 s left has 1 s left, as etcd reports).
pub fn seconds_left(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}
