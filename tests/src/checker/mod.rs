//! Linearizability checking of recorded client histories, and a watch-stream checker.
//!
//! A history ([`crate::history`]) is linearizable when each operation can be given one
//! instant between its invocation and its completion at which it takes effect, such that
//! the operations, run one by one in that order against a sequential model of the store,
//! return exactly what the clients were told. Failed operations never happened; an
//! operation of unknown outcome may take effect at any instant after its invocation, or
//! never.
//!
//! # The model
//!
//! etcd's KV with revisions: the store has one revision, and every write that changes
//! something (a put, a delete of a present key, a CAS whose compare held) advances it by
//! exactly one. Each key holds a value and the revision that wrote it (`mod_revision`).
//! Results carry revisions, and the checker checks them: a lost write shows up as a read
//! whose `mod_revision` is older than an acknowledged put's, and a stale read as a header
//! revision older than a completed write's.
//!
//! # Partitioning, and why it is sound
//!
//! The search is exponential in the worst case, so it runs per key (Herlihy & Wing's
//! locality: a history of independent objects is linearizable iff each object's is). The
//! global revision couples the keys, so they are not independent; the checker splits the
//! coupling out:
//!
//! - The global pass ([`revision`]) checks across keys that no two writes reported the
//!   same revision, and that an operation that began after another ended reported a
//!   revision at least as new (strictly newer for a write) — revisions respect real time.
//!   It also rejects a read of a value nobody wrote, with a clearer message than the
//!   search would give.
//! - The per-key search ([`search`]) checks values, `mod_revision`s and each key's own
//!   revisions against a model that knows only a lower bound ("floor") of the global
//!   revision, raised by every revision an operation on the key reports ([`model`]).
//!
//! Both are necessary conditions: a linearizable history passes them (restrict its
//! linearization to one key and the floors hold). When every write's revision is known
//! they are also sufficient: sorting the operations by revision (a write before the reads
//! at its revision) gives an order that respects real time (global pass) in which each
//! read sees the newest write of its key at or below its revision (per-key pass). With
//! unknown outcomes the revision of a write is only bounded, and a cross-key anomaly that
//! hides behind such a write can go unnoticed: the check may miss, it never accuses.
//!
//! # Budget and explanations
//!
//! A [`Budget`] bounds steps and time; running out yields [`Verdict::Unknown`] rather
//! than a hang. A violation names the operation that came due with no place for it, the
//! operations linearized just before, and the candidate states it met, each with why it
//! did not fit ([`Violation`]).
//!
//! Lost answers are what makes the search expensive: a write of unknown outcome stays a
//! candidate forever. With 6 clients on 3 keys, 9,000 operations with 1% lost answers
//! check in about half a second (debug build), 2% in a few seconds; 10 clients on one
//! key with 1% lost answers exhaust the default budget. Fault tests should spread their
//! load over several keys, keep a handful of clients per key, and treat
//! [`Verdict::Unknown`] as a failure to check, not a pass.
//!
//! # Watches
//!
//! [`watch::check_watch`] checks a watcher's received responses against the committed
//! events: ordered, unique, reliable (no gap) and atomic (a revision in one response).

mod check;
mod model;
mod revision;
mod search;
mod verdict;
pub mod watch;

#[cfg(test)]
mod check_test;
#[cfg(test)]
mod generated_test;

pub use check::check;
pub use verdict::{Budget, KeyViolation, Verdict, Violation};
