//! The Raft log and vote, in a fjall database of their own.
//!
//! Layout (`<data-dir>/raft`): keyspace `raft_log` maps a big-endian log index to a postcard
//! [`Entry`]; `raft_meta` holds the vote, the last purged log id, the committed log id and
//! the cluster id. The log has its own database, and so its own journal: fsyncing the log
//! never waits for, or holds up, the state machine's writes.
//!
//! **One writer.** Every change to the log goes through the *writer* thread, in order:
//! [`LogStore::append`] puts the entries in an in-memory `pending` map (so replication can
//! read them at once) and queues them with openraft's flush callback. The writer takes every
//! operation waiting, writes them, persists the journal **once** with
//! `PersistMode::SyncData`, and only then reports the entries flushed and drops them from
//! `pending`. That is group commit, and it is the only way an entry starts to count toward a
//! quorum. The Raft core task never touches the journal, so it never waits behind an fsync.
//! The vote, a truncation and a purge are queued the same way and wait for their fsync.
//! A failed fsync is reported to openraft as an I/O error, which stops the Raft core: the
//! node stops rather than diverge.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};

use fjall::{Database, Keyspace, PersistMode};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageError, Vote};
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::oneshot;

use super::backlog::ApplyBacklog;
use super::log_bytes::LogBytes;
use super::snapshot::SnapshotDir;
use super::storage_error;
use super::types::{Entry, LogId, TypeConfig};
use crate::NodeId;

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
const COMMITTED: &[u8] = b"committed";
const CLUSTER_ID: &[u8] = b"cluster_id";
/// How long a purge waits for the snapshot it follows to be installed.
const PURGE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Done = oneshot::Sender<Result<()>>;

/// The fjall-backed Raft log; cheap to clone (clones share the database and the writer).
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    /// Set on the instance openraft's core reads for apply with (never on the readers it
    /// replicates with): those reads wait while the apply backlog is full.
    backlog: Option<Arc<ApplyBacklog>>,
}

struct Shared {
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    /// Appended entries the writer has not written yet, by index, tagged with the append
    /// that put them there (a later append may replace an entry before it is written).
    pending: Mutex<BTreeMap<u64, (u64, Entry)>>,
    next_append: AtomicU64,
    writer: mpsc::Sender<Op>,
    /// Purges stop at this directory's durable snapshot.
    snapshots: SnapshotDir,
    /// The size of every entry in the log (see [`super::log_bytes`]).
    bytes: Mutex<LogBytes>,
}

/// What the writer thread is asked to do, in order.
enum Op {
    Append {
        tag: u64,
        entries: Vec<(u64, Vec<u8>)>,
        callback: LogFlushed<TypeConfig>,
    },
    Meta {
        key: &'static [u8],
        value: Vec<u8>,
        done: Option<Done>,
    },
    Remove {
        from: Bound<u64>,
        to: Bound<u64>,
        done: Done,
    },
}

impl LogStore {
    /// Opens (creating) the log database in `dir` and starts the writer thread. Purges never
    /// go past the durable snapshot of `snapshots`.
    pub fn open(dir: &Path, snapshots: SnapshotDir) -> std::result::Result<Self, fjall::Error> {
        // The log is written once and read back mostly while still in memory: a small block
        // cache and small memtables keep the node's footprint down.
        let db = Database::builder(dir)
            .cache_size(4 * 1024 * 1024)
            .worker_threads(crate::FJALL_WORKERS)
            .open()?;
        let log = db.keyspace("raft_log", crate::keyspace_options)?;
        let meta = db.keyspace("raft_meta", crate::keyspace_options)?;
        let mut bytes = LogBytes::default();
        for guard in log.iter() {
            let (key, value) = guard.into_inner()?;
            let index: [u8; 8] = (*key).try_into().map_err(|_| {
                fjall::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the Raft log is damaged: a key of {} bytes where every key is an 8-byte index; rebuild this member from its peers (docs/operations.md, \"Corruption\")",
                        key.len()
                    ),
                ))
            })?;
            bytes.appended(u64::from_be_bytes(index), value.len() as u64);
        }
        let (writer, queue) = mpsc::channel();
        let shared = Arc::new(Shared {
            db,
            log,
            meta,
            pending: Mutex::new(BTreeMap::new()),
            next_append: AtomicU64::new(1),
            writer,
            snapshots,
            bytes: Mutex::new(bytes),
        });
        let for_writer = shared.clone();
        std::thread::Builder::new()
            .name("etch-log-writer".into())
            .spawn(move || write_loop(&for_writer, &queue))
            .map_err(fjall::Error::Io)?;
        Ok(LogStore {
            shared,
            backlog: None,
        })
    }

    /// This store, its reads counted in (and waiting for room in) `backlog`: the instance
    /// to hand openraft, whose core reads committed entries for apply through it.
    pub fn with_apply_backlog(self, backlog: Arc<ApplyBacklog>) -> Self {
        LogStore {
            backlog: Some(backlog),
            ..self
        }
    }

    /// The size of every entry in the log.
    pub fn bytes(&self) -> MutexGuard<'_, LogBytes> {
        // Every change to the map is whole: a panic elsewhere cannot leave it inconsistent.
        self.shared.bytes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log's database, for [`crate::verify::database`].
    pub fn database(&self) -> &Database {
        &self.shared.db
    }

    /// The id of the cluster this node belongs to, once known.
    pub fn cluster_id(&self) -> Result<Option<u64>> {
        self.read_meta(CLUSTER_ID)
    }

    /// Records the cluster id, durably.
    pub async fn save_cluster_id(&self, id: u64) -> Result<()> {
        self.write_meta(CLUSTER_ID, &id, true).await
    }

    fn pending(&self) -> MutexGuard<'_, BTreeMap<u64, (u64, Entry)>> {
        // The map is only ever replaced or pruned whole-entry: a panic elsewhere cannot leave
        // it inconsistent.
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        let Some(bytes) = self
            .shared
            .meta
            .get(key)
            .map_err(|e| storage_error(false, &e))?
        else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| storage_error(false, &e))
    }

    /// Queues a meta write; with `sync`, waits until it is on disk.
    async fn write_meta<T: Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
        sync: bool,
    ) -> Result<()> {
        let value = postcard::to_allocvec(value).map_err(|e| storage_error(true, &e))?;
        if !sync {
            return self.send(Op::Meta {
                key,
                value,
                done: None,
            });
        }
        let (done, wait) = oneshot::channel();
        self.send(Op::Meta {
            key,
            value,
            done: Some(done),
        })?;
        wait.await.map_err(|e| storage_error(true, &e))?
    }

    async fn remove(&self, from: Bound<u64>, to: Bound<u64>) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.send(Op::Remove { from, to, done })?;
        wait.await.map_err(|e| storage_error(true, &e))?
    }

    fn send(&self, op: Op) -> Result<()> {
        self.shared
            .writer
            .send(op)
            .map_err(|e| storage_error(true, &e))
    }

    fn last_written_id(&self) -> Result<Option<LogId>> {
        let Some(guard) = self.shared.log.last_key_value() else {
            return Ok(None);
        };
        let value = guard.value().map_err(|e| storage_error(false, &e))?;
        let entry: Entry = postcard::from_bytes(&value).map_err(|e| storage_error(false, &e))?;
        Ok(Some(entry.log_id))
    }
}

/// The writer: everything waiting, in order, then one fsync, then the answers.
fn write_loop(shared: &Shared, queue: &mpsc::Receiver<Op>) {
    while let Ok(first) = queue.recv() {
        let ops: Vec<Op> = std::iter::once(first).chain(queue.try_iter()).collect();
        let written = (crate::failpoint::check("log-write").map_err(fjall::Error::Io))
            .and_then(|()| write_all(shared, &ops));
        // A round of unwaited meta writes (the committed index) needs no fsync of its own:
        // the next round that does persists it too.
        let durable = ops
            .iter()
            .any(|op| !matches!(op, Op::Meta { done: None, .. }));
        let outcome = written.and_then(|()| {
            if durable {
                let started = std::time::Instant::now();
                let synced = (crate::failpoint::check("log-fsync").map_err(fjall::Error::Io))
                    .and_then(|()| shared.db.persist(PersistMode::SyncData));
                metrics::histogram!(crate::metrics::WAL_FSYNC)
                    .record(started.elapsed().as_secs_f64());
                synced
            } else {
                Ok(())
            }
        });
        if let Err(e) = &outcome {
            tracing::error!(error = %e, "writing the Raft log failed; stopping Raft");
        }
        let mut pending = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
        for op in ops {
            let result = outcome.as_ref().map(|_| ()).map_err(|e| e.to_string());
            match op {
                Op::Append {
                    tag,
                    entries,
                    callback,
                } => {
                    if result.is_ok() {
                        for (index, _) in &entries {
                            if pending.get(index).is_some_and(|(t, _)| *t == tag) {
                                pending.remove(index);
                            }
                        }
                    }
                    callback.log_io_completed(result.map_err(std::io::Error::other));
                }
                Op::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(
                            result.map_err(|e| storage_error(true, &std::io::Error::other(e))),
                        );
                    }
                }
                Op::Remove { done, .. } => {
                    let _ = done
                        .send(result.map_err(|e| storage_error(true, &std::io::Error::other(e))));
                }
            }
        }
    }
}

fn write_all(shared: &Shared, ops: &[Op]) -> std::result::Result<(), fjall::Error> {
    let mut batch = shared.db.batch();
    for op in ops {
        match op {
            Op::Append { entries, .. } => {
                for (index, bytes) in entries {
                    batch.insert(&shared.log, index.to_be_bytes(), bytes.as_slice());
                }
            }
            Op::Meta { key, value, .. } => batch.insert(&shared.meta, *key, value.as_slice()),
            Op::Remove { from, to, .. } => {
                // Earlier appends in this round must be visible to the scan: write them first.
                std::mem::replace(&mut batch, shared.db.batch()).commit()?;
                let bounds = (from.map(u64::to_be_bytes), to.map(u64::to_be_bytes));
                for guard in shared.log.range(bounds) {
                    batch.remove(&shared.log, guard.key()?);
                }
            }
        }
    }
    batch.commit()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        if let Some(backlog) = &self.backlog {
            backlog.room().await;
        }
        // Pending first: an entry leaves `pending` only after it is written, so reading in
        // this order never misses one.
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let pending: Vec<Entry> = self
            .pending()
            .range(bounds)
            .map(|(_, (_, e))| e.clone())
            .collect();
        let key_bounds = (
            bounds.0.map(u64::to_be_bytes),
            bounds.1.map(u64::to_be_bytes),
        );
        let mut entries = BTreeMap::new();
        let mut bytes = 0;
        for guard in self.shared.log.range(key_bounds) {
            let value = guard.value().map_err(|e| storage_error(false, &e))?;
            bytes += value.len();
            let entry: Entry =
                postcard::from_bytes(&value).map_err(|e| storage_error(false, &e))?;
            entries.insert(entry.log_id.index, entry);
        }
        if self.backlog.is_some() {
            bytes += pending
                .iter()
                .map(|e| postcard::experimental::serialized_size(e).unwrap_or(0))
                .sum::<usize>();
        }
        entries.extend(pending.into_iter().map(|e| (e.log_id.index, e)));
        if let (Some(backlog), Some(&last)) = (&self.backlog, entries.keys().next_back()) {
            backlog.read(last, bytes);
        }
        Ok(entries.into_values().collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_pending = self.pending().last_key_value().map(|(_, (_, e))| e.log_id);
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED)?;
        let last_log_id = last_pending
            .or(self.last_written_id()?)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        // Replication reads never wait for this member's apply.
        LogStore {
            shared: self.shared.clone(),
            backlog: None,
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.write_meta(VOTE, vote, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        let index = committed.map_or(0, |c| c.index);
        metrics::gauge!(crate::metrics::PROPOSALS_COMMITTED).set(index as f64);
        // Not waited for: a lost committed id only means re-applying from the last applied one.
        self.write_meta(COMMITTED, &committed, false).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let tag = self.shared.next_append.fetch_add(1, Ordering::Relaxed);
        let mut encoded = Vec::new();
        {
            let mut pending = self.pending();
            let mut sizes = self.bytes();
            for entry in entries {
                let bytes = postcard::to_allocvec(&entry).map_err(|e| storage_error(true, &e))?;
                sizes.appended(entry.log_id.index, bytes.len() as u64);
                encoded.push((entry.log_id.index, bytes));
                pending.insert(entry.log_id.index, (tag, entry));
            }
        }
        // The writer reports the entries flushed once they are fsynced.
        self.send(Op::Append {
            tag,
            entries: encoded,
            callback,
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<()> {
        tracing::debug!(%log_id, "truncating the Raft log");
        self.pending().retain(|index, _| *index < log_id.index);
        self.bytes().truncated(log_id.index);
        self.remove(Bound::Included(log_id.index), Bound::Unbounded)
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        // Never past the snapshot on disk (see `SnapshotDir::covering`).
        if !self
            .shared
            .snapshots
            .covering(log_id.index, PURGE_WAIT)
            .await
        {
            return Err(storage_error(
                true,
                &std::io::Error::other(format!(
                    "purge up to {log_id}: no snapshot on disk covers it after {PURGE_WAIT:?}"
                )),
            ));
        }
        tracing::info!(%log_id, "purging the Raft log");
        // Record the purge point first: a crash in between leaves entries below it, harmless.
        self.write_meta(PURGED, &log_id, false).await?;
        self.bytes().purged(log_id.index);
        self.remove(Bound::Unbounded, Bound::Included(log_id.index))
            .await
    }
}
