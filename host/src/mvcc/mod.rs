//! The revisioned key space: etcd's MVCC model on fjall.
//!
//! # The model
//!
//! The store holds byte-string keys and a store-wide *revision*. A fresh store is at
//! revision 1. Every applied write that changes something advances the revision by exactly
//! one, however many keys it touched: a put, a delete that deleted at least one key, a txn
//! whose executed branch changed something (a delete of nothing changes nothing, as in
//! etcd). All changes of one entry share its revision and are ordered within it (etcd's
//! sub-revisions). Each version of a key carries `create_revision` (the revision of the put
//! that created this incarnation of the key), `mod_revision` (its last put), `version` (1 on
//! creation, +1 per put; a delete ends the incarnation, so the next put starts again at 1)
//! and `lease`.
//!
//! Reads may ask for an older revision and see the key space exactly as it was then, down to
//! the *compaction floor*: `Compact(rev)` drops, for every key, all versions older than the
//! newest one at or below `rev` (and that one too if it is a deletion), drops the change
//! history below `rev`, and records `rev` as the floor. Reads at the floor still work;
//! below it they fail with `Compacted`, above the current revision with `FutureRevision`.
//! Compaction does not advance the revision.
//!
//! Transactions compare keys (value, version, create/mod revision, lease; `= != < >`), then
//! run one of two branches of range/put/delete ops at a single revision; a range inside a txn
//! sees the txn's earlier writes. A branch may not write the same key twice (etcd's
//! duplicate-key rules, see [`txn`]). Everything is etcd's behaviour, down to the error
//! texts; where etcd has a quirk we do not copy, the module that handles it says so.
//!
//! # Storage
//!
//! The store lives in eight fjall keyspaces of the node's one database (the Raft log owns the
//! `raft_*` ones); [`layout`] has the table. In short:
//!
//! - `kv_current`: key → its live version. Current reads (the common case) are one scan here.
//! - `kv_versions`: (key, revision) → the version written then, or a deletion marker. The
//!   key encoding ([`keycode`]) keeps `(key, revision)` order, so a point-in-time range scans
//!   the selected keys' versions and picks, per key, the newest one at or below the revision.
//! - `kv_history`: revision → the keys touched then, put or delete, in sub-revision order.
//!   Watches replay from it ([`Store::events_at`]); compaction uses it to find the keys with
//!   versions to drop, so its cost follows the history dropped, not the store's size.
//! - `kv_meta`: the current revision, the compaction floor and the caller's opaque `applied`
//!   blob (Raft applied log id and membership).
//! - `lease` and `lease_keys`: every granted lease with its TTL, and the keys attached to
//!   each ([`lease`]). They change in the same batch as the keys they describe.
//!
//! # Applying
//!
//! [`Store::apply`] is a pure function of (state, request): no clock, no randomness. It
//! reads one fjall snapshot ([`view`]), stages the request's writes in a [`write::WriteTx`]
//! (which also serves the txn's own reads), and commits effects, new revision and `applied`
//! in **one** fjall batch, so a crash leaves either all of an entry or none of it. The batch
//! is not fsynced: the Raft log is the durable record, and entries after the last persisted
//! `applied` are applied again on restart. A request's own failure (`InvalidArgument`,
//! `Compacted`, `FutureRevision`, `LeaseNotFound`) is deterministic, returned inside `Ok`,
//! and still records `applied`; an outer `Err` is a storage failure and fatal for the node.
//!
//! Reads ([`Store::range`], [`Store::txn`] for read-only txns, [`Store::events_at`]) each
//! take their own snapshot and read the counters from it, so they never see half an entry.
//! Raft snapshots stream the keyspaces out and in ([`snapshot`]).
//!
//! # Plugins
//!
//! Validator plugins and their bindings are replicated state too ([`plugins`]: keyspaces
//! `plugin_modules` and `plugin_bindings`, exported in snapshots like the rest). A write
//! judged by plugins is applied with [`Store::apply_guarded`]: its [`Guard`] (the bindings
//! version and the read set the decision depended on) is checked first, and a stale one
//! fails the write with `Conflict` ([`guard`]). [`preview`] computes, on the leader, what a
//! write would change, for the plugins to judge.
//!
//! # Leases
//!
//! The store keeps the replicated half of leases: which leases exist, their granted TTL and
//! the keys attached to them. A put naming a lease attaches the key (an unknown lease fails
//! with `LeaseNotFound`), a put without one detaches it, a delete detaches it. Revoking a
//! lease deletes every attached key at **one** new revision. Deadlines are not state: they
//! live in the leader's memory (`crate::lease`), which proposes a revoke when one passes.
//!
//! [`Store::watch_events`] serves the watch hub: the events of one revision with each key's
//! previous version.

mod alarm;
mod auth;
mod compact;
mod error;
mod gate;
mod guard;
mod hash;
mod history;
mod keycode;
mod layout;
mod lease;
pub(crate) mod memtables;
mod plugins;
mod preview;
mod sessions;
mod snapshot;
mod store;
mod txn;
mod view;
mod write;

#[cfg(test)]
mod bounds_test;
#[cfg(test)]
pub(crate) mod script_parse;
#[cfg(test)]
pub(crate) mod script_test;
#[cfg(test)]
mod values_test;

pub use alarm::{adds_data, mutation_adds_data};
pub use error::{Error, Result};
pub use guard::{Guard, MAX_GUARD_BYTES, READ_OVERHEAD, Read};
pub use history::Changes;
pub(crate) use layout::BindingRecord;
pub(crate) use plugins::{bindings_in, bindings_version_in, hex};
pub(crate) use preview::preview;
pub use preview::{Change, Preview};
pub use sessions::{EXPIRE_BATCH, RequestId, WINDOW as SESSION_WINDOW};
pub use snapshot::{Export, Scanned, scan};
pub use view::{RESERVED_PREFIX, is_reserved};

/// Opens (creating it if need be) the fjall database of a node's data directory, with the
/// node's cache and worker settings: the one place that decides them, for `etchd` and for
/// a restore.
///
/// # Errors
///
/// fjall cannot open it (another process holds it, or it is damaged).
///
/// The journals are capped at fjall's least, 64 MiB (its default is 512 MiB): a journal can
/// go only once every keyspace has flushed what it holds of it, and a keyspace written
/// rarely (leases, auth, meta) would otherwise pin every journal written since, up to the
/// cap: after 300,000 puts of 1 KiB, half a gigabyte of journals beside 300 MB of data.
/// Past the cap fjall flushes the keyspaces that pin the oldest journal.
pub fn open_database(path: &std::path::Path) -> Result<fjall::Database> {
    Ok(fjall::Database::builder(path)
        .cache_size(8 * 1024 * 1024)
        .max_journaling_size(MAX_JOURNALS)
        .worker_threads(crate::FJALL_WORKERS)
        .open()?)
}

/// The most bytes of journal a node's database keeps (fjall's minimum).
pub const MAX_JOURNALS: u64 = 64 * 1024 * 1024;
pub use store::{Event, Outcome, Store};
pub(crate) use view::View;
