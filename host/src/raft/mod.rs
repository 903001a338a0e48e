//! Consensus: etch's glue to openraft.
//!
//! Every change to the key space is a [`Command`] appended to the Raft log. A command counts
//! once a majority of voters has made its log entry durable (fsynced in [`LogStore`]); then
//! every replica applies it, in log order, to its [`StateMachine`], which hands it to the
//! MVCC store. Apply is a pure function of (state, entry): no clocks, no randomness, no
//! plugin calls, so every replica reaches the same revision with the same data.
//!
//! The pieces, one file each:
//! - [`types`]: the openraft type configuration (`TypeConfig`), [`Command`] and [`Member`].
//! - [`backlog`]: the bound on committed entries read for apply and not applied yet.
//! - [`log_bytes`]: the log counted in bytes: snapshots and purges by its size.
//! - [`log_store`]: the Raft log and vote in fjall keyspaces `raft_log` and `raft_meta`.
//!   An append is persisted with `PersistMode::SyncData` before openraft is told it is
//!   flushed; openraft batches appends, so many proposals share one fsync.
//! - [`state_machine`]: applies committed entries through [`crate::mvcc::Store`], writing the
//!   applied log id and membership in the same atomic batch as the data.
//! - [`snapshot`]: snapshot files (a header with the snapshot meta, then the MVCC export).
//! - [`network`]: the QUIC peer transport as openraft sees it (`RaftNetwork`), with one
//!   cached connection per peer; [`wire`]: the messages on it. The serving side is
//!   `crate::server::peer`.
//!
//! Everything openraft-specific stays in this module so that a later move to openraft 0.10
//! stays local.

// openraft's `StorageError` is large by design and every storage trait returns it; boxing it
// in our helpers would only add allocations on the error path.
#![allow(clippy::result_large_err)]

pub mod backlog;
pub mod log_bytes;
pub mod log_store;
pub mod network;
pub mod snapshot;
pub mod state_machine;
pub mod types;
pub mod wire;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use types::{Applied, Command, CommandResult, Member, Named, Raft, TypeConfig};

use openraft::{AnyError, StorageError, StorageIOError};

use crate::NodeId;

/// Wraps a storage failure for openraft, as a read or a write of `what`.
pub(crate) fn storage_error<E: std::error::Error + 'static>(
    write: bool,
    e: &E,
) -> StorageError<NodeId> {
    let source = AnyError::new(e);
    if write {
        StorageIOError::write(source)
    } else {
        StorageIOError::read(source)
    }
    .into()
}

#[cfg(test)]
mod apply_prop_test;
