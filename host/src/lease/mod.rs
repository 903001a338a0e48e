//! Leases: keys that live only as long as their owner keeps saying so.
//!
//! A lease has an id and a TTL. Keys put with it are attached; when it is revoked, or when
//! it expires because no keep-alive came for a whole TTL, every attached key is deleted at
//! one revision, and watchers see those deletes like any other.
//!
//! The state is split in two, and the split is what keeps apply deterministic:
//!
//! - **Replicated** (in the state machine, `crate::mvcc`, keyspaces `lease` and
//!   `lease_keys`): which leases exist, their granted TTL, and their keys. Grant and revoke
//!   are log entries, written in the same atomic batch as the key changes and carried by
//!   snapshots. A grant's id is chosen by the leader *before* proposing (when the client
//!   leaves it 0), so the entry says everything apply needs.
//! - **Leader memory** ([`Lessor`]): when each lease runs out. Keep-alives go to the leader
//!   (a follower forwards them) and only move a deadline: nothing is logged. The expiry loop
//!   ([`expire_leases`]) proposes `Command::LeaseExpire` for a lease whose deadline passed;
//!   apply treats it as a revoke. Apply never looks at a clock.
//!
//! A new leader knows no deadlines, so on taking over it gives every lease a full TTL from
//! now (etcd does the same): a leader change can make a lease live longer, never shorter.
//! [`Lessor`] takes the current [`std::time::Instant`] as an argument everywhere, so golden
//! scripts drive expiry with a clock they move by hand.

mod expiry;
mod lessor;

#[cfg(test)]
mod script_test;

pub use expiry::expire_leases;
pub use lessor::{Lessor, seconds_left};
