//! Memtables bounded by the writer, not only by fjall's worker.
//!
//! fjall asks its worker thread to rotate a keyspace's memtable once it passes the keyspace's
//! size (2 MiB here, `crate::keyspace_options`), and stalls writers once four rotated
//! memtables wait to be flushed. But a node's database has one worker (`FJALL_WORKERS`), and
//! while it runs a long compaction the rotation waits behind it: nothing is sealed, so
//! nothing stalls, and the active memtable grows with every write. A member catching up
//! applies as fast as it can read its log, and the added member of `etch-bench suite`
//! (put100, range, grow, catchup) held 300–790 MiB, 220 MiB of it the values of
//! `kv_current` and `kv_versions` in two memtables (heaptrack, at its peak).
//!
//! [`relieve`] is called by the applier after each write: it rotates, on the applier's own
//! thread, a memtable past [`CEILING`], and says when the flushes behind are as many as
//! [`SEALED_LIMIT`]. The applier then waits (asynchronously, see `raft::state_machine`)
//! instead of writing on and meeting fjall's own stall, a thread sleep inside the write.
//! A keyspace then holds at most its active memtable and [`SEALED_LIMIT`] sealed ones, each
//! about [`CEILING`] plus one write.

use fjall::{AbstractTree, Keyspace};

/// Bytes an active memtable may hold before the applier rotates it itself: twice the size
/// at which fjall asks its worker to, so that a worker that keeps up always does it first.
pub const CEILING: u64 = 4 * 1024 * 1024;
/// Rotated memtables waiting for a flush, per keyspace, at which the applier waits (fjall
/// stalls writers, with a thread sleep, at 4).
pub const SEALED_LIMIT: usize = 3;

/// Rotates every memtable of `keyspaces` past `ceiling`; `true` when one of them has
/// [`SEALED_LIMIT`] memtables waiting for a flush, so that the writer should wait before it
/// writes again.
pub fn relieve(keyspaces: &[&Keyspace], ceiling: u64) -> bool {
    let mut behind = false;
    for keyspace in keyspaces {
        let mut sealed = keyspace.sealed_memtable_count();
        if sealed < SEALED_LIMIT
            && keyspace.tree.active_memtable().size() > ceiling
            && let Ok(true) = keyspace.rotate_memtable()
        {
            sealed += 1;
        }
        behind |= sealed >= SEALED_LIMIT;
    }
    behind
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyspace whose memtable fjall would let grow to 1 GiB stays within the ceiling
    /// plus one write when every write is followed by [`relieve`]; without it, the same
    /// writes leave 16 MiB in one memtable.
    #[test]
    fn the_writer_rotates_a_memtable_past_the_ceiling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let open = |name: &str| {
            db.keyspace(name, || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(1 << 30)
            })
            .expect("keyspace")
        };
        let (relieved, left) = (open("relieved"), open("left"));
        let value = vec![7u8; 64 * 1024];
        let ceiling = 1024 * 1024;
        let mut peak = 0;
        for i in 0..256u32 {
            let mut batch = db.batch();
            batch.insert(&relieved, i.to_be_bytes(), value.as_slice());
            batch.insert(&left, i.to_be_bytes(), value.as_slice());
            batch.commit().expect("commit");
            while relieve(&[&relieved], ceiling) {
                std::thread::yield_now();
            }
            peak = peak.max(relieved.tree.active_memtable().size());
        }
        assert!(peak <= ceiling + 2 * value.len() as u64, "peak {peak}");
        assert!(left.tree.active_memtable().size() >= 16 << 20);
        for i in [0u32, 100, 255] {
            let got = relieved.get(i.to_be_bytes()).expect("get").expect("kept");
            assert_eq!(got.len(), value.len());
        }
    }
}
