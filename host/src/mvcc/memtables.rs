//! Memtables bounded by the applier waiting, not only by fjall's worker.
//!
//! fjall asks its worker thread to rotate a keyspace's memtable once it passes the keyspace's
//! size (2 MiB here, `crate::keyspace_options`), and stalls writers once four rotated
//! memtables wait to be flushed. But a node's database has one worker (`FJALL_WORKERS`), and
//! while it runs a long compaction the rotation waits behind it: nothing is sealed, so
//! nothing stalls, and the active memtable grows with every write. A member catching up
//! applies as fast as it can read its log, and the added member of `etch-bench suite`
//! (put100, range, grow, catchup) held 212–790 MiB, 220 MiB of it the values of
//! `kv_current` and `kv_versions` in two memtables (heaptrack, at its peak).
//!
//! [`behind`] tells the applier when to wait (asynchronously, see `raft::state_machine`)
//! for the worker: a memtable past [`CEILING`] that the worker has not rotated yet, or
//! [`SEALED_LIMIT`] rotated ones not flushed yet. It only looks. Rotating from the applier
//! was tried: fjall's rotation then sends the worker a flush with a blocking send on its
//! bounded queue, which writers fill with rotation requests while the worker compacts, so
//! the applier blocked a runtime thread, and the worker, whose own sends go to the same
//! queue, could block on itself for good (found in review).

use fjall::{AbstractTree, Keyspace};

/// Bytes an active memtable may hold before the applier waits for the worker to rotate it:
/// twice the size at which fjall asks it to, so that a worker that keeps up never makes
/// the applier wait.
pub const CEILING: u64 = 4 * 1024 * 1024;
/// Rotated memtables waiting for a flush, per keyspace, at which the applier waits (fjall
/// stalls writers, with a thread sleep inside the write, at 4).
pub const SEALED_LIMIT: usize = 3;

/// Whether a memtable of `keyspaces` is past `ceiling` or a keyspace has
/// [`SEALED_LIMIT`] memtables waiting for a flush: the writer should wait for fjall's
/// worker before it writes again.
pub fn behind(keyspaces: &[&Keyspace], ceiling: u64) -> bool {
    keyspaces.iter().any(|keyspace| {
        keyspace.sealed_memtable_count() >= SEALED_LIMIT
            || keyspace.tree.active_memtable().size() > ceiling
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyspace is behind once its memtable passes the ceiling and fjall has not rotated
    /// it (here never on its own: its memtables may grow to 1 GiB), not before, and no
    /// longer once it is rotated and flushed.
    #[test]
    fn a_memtable_past_the_ceiling_is_behind_until_it_is_rotated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let open = |name: &str| {
            db.keyspace(name, || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(1 << 30)
            })
            .expect("keyspace")
        };
        let (grown, small) = (open("grown"), open("small"));
        let ceiling = 2 * 1024 * 1024;
        let value = vec![7u8; 64 * 1024];
        let write = |keyspace: &Keyspace, count: u32| {
            for i in 0..count {
                keyspace
                    .insert(i.to_be_bytes(), value.as_slice())
                    .expect("insert");
            }
        };
        write(&grown, 16);
        write(&small, 16);
        assert!(
            !behind(&[&grown, &small], ceiling),
            "1 MiB is under the ceiling"
        );
        write(&grown, 64);
        assert!(behind(&[&grown], ceiling), "4 MiB never rotated is behind");
        assert!(
            behind(&[&small, &grown], ceiling),
            "one keyspace behind is enough"
        );
        assert!(!behind(&[&small], ceiling));
        grown.rotate_memtable_and_wait().expect("rotate and flush");
        assert!(!behind(&[&grown, &small], ceiling), "rotated and flushed");
        assert_eq!(
            grown.get(3u32.to_be_bytes()).expect("get").map(|v| v.len()),
            Some(value.len())
        );
    }
}
