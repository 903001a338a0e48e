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
//! queue, could block on itself for good (found in review). [`Pacer`] decides how long
//! a writer waits.

use std::time::{Duration, Instant};

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

/// When a writer waits for fjall's worker: while the keyspaces are [`behind`], at most
/// `max` at once, and after a wait that ran out not again until they have caught up, so
/// that a long compaction (or a flush that never comes) costs one wait, not one per write.
/// The applier waits asynchronously (`raft::state_machine`); a snapshot's import ingests
/// its records into tables, past the memtables, and never waits.
pub struct Pacer {
    max: Duration,
    expired: bool,
}

impl Pacer {
    pub fn new(max: Duration) -> Pacer {
        Pacer {
            max,
            expired: false,
        }
    }

    /// Whether the writer should start waiting, given whether it is `behind` now.
    pub fn should_wait(&mut self, behind: bool) -> bool {
        if !behind {
            self.expired = false;
        }
        behind && !self.expired
    }

    /// Whether a wait that began at `started` has run out; it is then not repeated until
    /// the keyspaces have caught up.
    pub fn ran_out(&mut self, started: Instant) -> bool {
        self.expired |= started.elapsed() >= self.max;
        self.expired
    }
}

/// How often a waiting writer looks again.
pub const POLL: Duration = Duration::from_millis(5);

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

    /// A pacer whose wait runs out does not wait again until the keyspace has caught up,
    /// then waits again: a long compaction costs apply one wait, not one per entry.
    #[test]
    fn a_pacer_waits_once_per_stretch_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let keyspace = db
            .keyspace("grown", || {
                fjall::KeyspaceCreateOptions::default().max_memtable_size(1 << 30)
            })
            .expect("keyspace");
        let value = vec![7u8; 64 * 1024];
        for i in 0..80u32 {
            keyspace
                .insert(i.to_be_bytes(), value.as_slice())
                .expect("insert");
        }
        let max = Duration::from_millis(20);
        let mut pacer = Pacer::new(max);
        let behind_now = || behind(&[&keyspace], CEILING);
        assert!(behind_now(), "5 MiB never rotated");
        assert!(pacer.should_wait(behind_now()));
        let long_ago = Instant::now()
            .checked_sub(max * 2)
            .expect("an instant before");
        assert!(pacer.ran_out(long_ago), "the wait ran out");
        assert!(
            !pacer.should_wait(behind_now()),
            "and is not repeated while still behind"
        );
        keyspace
            .rotate_memtable_and_wait()
            .expect("rotate and flush");
        assert!(!pacer.should_wait(behind_now()), "caught up");
        assert!(
            pacer.should_wait(true),
            "caught up: the next stretch behind is waited for again"
        );
    }
}
