//! The Raft log and vote, in fjall.
//!
//! Layout: keyspace `raft_log` maps a big-endian log index to a postcard [`Entry`];
//! `raft_meta` holds the vote, the last purged log id and the committed log id.
//!
//! Durability: [`LogStore::append`] writes the entries into fjall at once (so replication can
//! read them) and hands openraft's flush callback to the *flusher* thread. The flusher takes
//! every callback waiting, persists the journal once with `PersistMode::SyncData`, and only
//! then reports the entries flushed: that is group commit, and it is the only way an entry
//! starts to count toward a quorum. The vote is persisted before `save_vote` returns.
//! A failed fsync is reported to openraft as an I/O error, which stops the Raft core: the
//! node stops rather than diverge.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageError, Vote};
use serde::{Serialize, de::DeserializeOwned};

use super::storage_error;
use super::types::{Entry, LogId, TypeConfig};
use crate::NodeId;

const VOTE: &[u8] = b"vote";
const PURGED: &[u8] = b"purged";
const COMMITTED: &[u8] = b"committed";
const CLUSTER_ID: &[u8] = b"cluster_id";

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The fjall-backed Raft log; cheap to clone (clones share the database and the flusher).
#[derive(Clone)]
pub struct LogStore {
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Opens the log keyspaces in `db` and starts the flusher thread.
    pub fn open(db: &Database) -> std::result::Result<Self, fjall::Error> {
        let log = db.keyspace("raft_log", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("raft_meta", KeyspaceCreateOptions::default)?;
        let (flusher, pending) = mpsc::channel();
        let flush_db = db.clone();
        std::thread::Builder::new()
            .name("etch-log-flush".into())
            .spawn(move || flush_loop(&flush_db, &pending))
            .map_err(fjall::Error::Io)?;
        Ok(LogStore {
            db: db.clone(),
            log,
            meta,
            flusher,
        })
    }

    /// The id of the cluster this node belongs to, once known.
    pub fn cluster_id(&self) -> std::result::Result<Option<u64>, StorageError<NodeId>> {
        self.read_meta(CLUSTER_ID)
    }

    /// Records the cluster id, durably.
    pub fn save_cluster_id(&self, id: u64) -> std::result::Result<(), StorageError<NodeId>> {
        self.write_meta(CLUSTER_ID, &id, true)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>> {
        let Some(bytes) = self.meta.get(key).map_err(|e| storage_error(false, &e))? else {
            return Ok(None);
        };
        postcard::from_bytes(&bytes)
            .map(Some)
            .map_err(|e| storage_error(false, &e))
    }

    fn write_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<()> {
        let bytes = postcard::to_allocvec(value).map_err(|e| storage_error(true, &e))?;
        self.meta
            .insert(key, bytes)
            .map_err(|e| storage_error(true, &e))?;
        if sync {
            self.db
                .persist(PersistMode::SyncData)
                .map_err(|e| storage_error(true, &e))?;
        }
        Ok(())
    }

    fn last_entry_id(&self) -> Result<Option<LogId>> {
        let Some(guard) = self.log.last_key_value() else {
            return Ok(None);
        };
        let value = guard.value().map_err(|e| storage_error(false, &e))?;
        let entry: Entry = postcard::from_bytes(&value).map_err(|e| storage_error(false, &e))?;
        Ok(Some(entry.log_id))
    }

    /// Removes every entry whose index lies in `range`.
    fn remove(&self, range: (Bound<u64>, Bound<u64>)) -> Result<()> {
        let mut batch = self.db.batch();
        let bounds = (range.0.map(u64::to_be_bytes), range.1.map(u64::to_be_bytes));
        for guard in self.log.range(bounds) {
            batch.remove(
                &self.log,
                guard.key().map_err(|e| storage_error(false, &e))?,
            );
        }
        batch.commit().map_err(|e| storage_error(true, &e))
    }
}

/// The flusher: one fsync for every append waiting, then all their callbacks.
fn flush_loop(db: &Database, pending: &mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter());
        match db.persist(PersistMode::SyncData) {
            Ok(()) => batch.into_iter().for_each(|cb| cb.log_io_completed(Ok(()))),
            Err(e) => {
                tracing::error!(error = %e, "fsync of the Raft log failed; stopping Raft");
                for cb in batch {
                    cb.log_io_completed(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let bounds = (
            range.start_bound().map(|i| i.to_be_bytes()),
            range.end_bound().map(|i| i.to_be_bytes()),
        );
        self.log
            .range(bounds)
            .map(|guard| {
                let value = guard.value().map_err(|e| storage_error(false, &e))?;
                postcard::from_bytes(&value).map_err(|e| storage_error(false, &e))
            })
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId> = self.read_meta(PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        let store = self.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || store.write_meta(VOTE, &vote, true))
            .await
            .map_err(|e| storage_error(true, &e))?
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        // Not synced: a lost committed id only means re-applying from the last applied one.
        self.write_meta(COMMITTED, &committed, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        Ok(self.read_meta::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = self.db.batch();
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry).map_err(|e| storage_error(true, &e))?;
            batch.insert(&self.log, entry.log_id.index.to_be_bytes(), bytes);
        }
        batch.commit().map_err(|e| storage_error(true, &e))?;
        // The flusher reports the entries durable once they are fsynced.
        self.flusher
            .send(callback)
            .map_err(|e| storage_error(true, &e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<()> {
        tracing::debug!(%log_id, "truncating the Raft log");
        self.remove((Bound::Included(log_id.index), Bound::Unbounded))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        tracing::debug!(%log_id, "purging the Raft log");
        // Record the purge point first: a crash in between leaves entries below it, harmless.
        self.write_meta(PURGED, &log_id, false)?;
        self.remove((Bound::Unbounded, Bound::Included(log_id.index)))
    }
}
