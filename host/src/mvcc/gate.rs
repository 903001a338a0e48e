//! Snapshots never open while a batch commits.
//!
//! fjall 3.1.13 commits a batch by taking a seqno, inserting the items into the memtables
//! one by one, then publishing `seqno + 1` on the counter snapshots read. A flush that
//! finishes on fjall's worker meanwhile gives its new version a later seqno and publishes
//! that on the same counter, without the journal lock the commit holds
//! (`lsm_tree::Tree::register_tables`); a snapshot opened in between sees the batch half
//! inserted. A soak saw it: two linearizable gets answered with the value of revision 5693
//! under a header of revision 5692 (`WriteTx::write` inserts `kv_current` before the
//! revision counter in `kv_meta`). Every commit of the node database therefore holds this
//! gate exclusively, and every snapshot opens under it shared: a snapshot then sees a batch
//! whole or not at all. A commit holds it for its journal write and memtable inserts (and
//! fjall's own stall, rare with `super::memtables`); a snapshot for an atomic load.

use std::sync::{PoisonError, RwLock};

use fjall::{Database, OwnedWriteBatch, Snapshot};

/// One for the process: the gate guards no data, and a node has one database.
static GATE: RwLock<()> = RwLock::new(());

/// `db`'s snapshot, never taken while a batch commits.
pub(crate) fn snapshot(db: &Database) -> Snapshot {
    let _shared = GATE.read().unwrap_or_else(PoisonError::into_inner);
    db.snapshot()
}

/// Commits `batch` with no snapshot opening meanwhile.
pub(crate) fn commit(batch: OwnedWriteBatch) -> fjall::Result<()> {
    let _exclusive = GATE.write().unwrap_or_else(PoisonError::into_inner);
    batch.commit()
}
