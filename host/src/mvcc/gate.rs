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
//! fjall's own stall, rare with `super::memtables`); a snapshot for an atomic load. A
//! snapshot's import ingests tables instead of committing batches, and fjall's ingestion
//! takes the journal lock itself, so it needs no gate. The
//! test below forces the race: without the gate it fails within half a second.

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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use fjall::{KeyspaceCreateOptions, Readable};

    use super::*;

    /// Batches that each write the same counter to two keyspaces, committed while a thread
    /// rotates and flushes both keyspaces' memtables back to back: every snapshot sees both
    /// keys at the same counter. Without the gate a flush that finishes between a commit's
    /// two inserts publishes the first alone (the soak's failure, forced here).
    #[test]
    fn a_snapshot_sees_a_batch_whole_while_memtables_flush() {
        const BATCHES: u64 = 30_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::builder(dir.path()).open().expect("db");
        let first = db
            .keyspace("first", KeyspaceCreateOptions::default)
            .expect("first");
        let second = db
            .keyspace("second", KeyspaceCreateOptions::default)
            .expect("second");
        let done = AtomicBool::new(false);
        let seen = std::thread::scope(|s| {
            s.spawn(|| {
                for n in 1..=BATCHES {
                    let mut batch = db.batch();
                    batch.insert(&first, "k", n.to_be_bytes());
                    batch.insert(&second, "k", n.to_be_bytes());
                    commit(batch).expect("commit");
                }
                done.store(true, Ordering::Release);
            });
            s.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    first.rotate_memtable_and_wait().expect("flush first");
                    second.rotate_memtable_and_wait().expect("flush second");
                }
            });
            let mut seen = 0u64;
            while !done.load(Ordering::Acquire) {
                let snap = snapshot(&db);
                let one = snap.get(&first, "k").expect("get first");
                let two = snap.get(&second, "k").expect("get second");
                assert_eq!(one, two, "a snapshot saw a batch half committed");
                seen += 1;
            }
            seen
        });
        assert!(seen > 0, "the reader never ran");
    }
}
