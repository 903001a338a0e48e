//! The replicated state machine: committed entries in, MVCC state out.
//!
//! [`StateMachine::apply`] hands each committed [`Command`] to [`mvcc::Store::apply`], which
//! writes the data, the new revision and this module's *applied blob* (the applied log id and
//! the last membership) in one atomic fjall batch. A crash therefore leaves the state at some
//! applied entry, never between two, and openraft re-applies what follows from the log.
//! Apply is deterministic; a request that fails (a compacted revision, a bad txn) fails the
//! same way on every replica and still counts as applied.
//!
//! Given the node's plugin engine ([`StateMachine::compiling_plugins`]), applying a plugin
//! install first compiles the component into the engine's cache, so that the binding never
//! takes effect on a node that has not compiled it (what the compiler says does not change
//! what is applied: a component that fails is logged and the entry applies the same way on
//! every node). After a snapshot install every stored binding's component is compiled.

use std::io;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageError};
use serde::{Deserialize, Serialize};

use super::backlog::ApplyBacklog;
use super::snapshot::{Outgoing, SnapshotData, SnapshotDir, SnapshotFile};
use super::storage_error;
use super::types::{
    Applied, Command, CommandResult, Entry, LogId, Named, SnapshotMeta, StoredMembership,
    TypeConfig,
};
use crate::NodeId;
use crate::mvcc;
use etch_proto::Mutation;

/// The longest apply waits for fjall's worker at once (see `StateMachine::wait_for_flushes`).
const MAX_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// What the state machine records beside the data, as one opaque blob in the MVCC meta.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    log_id: Option<LogId>,
    membership: StoredMembership,
    /// Part-way through a batch entry: the entry and how many of its commands are applied
    /// (`log_id` is still the entry before it).
    partial: Option<(LogId, u32)>,
}

/// The applied-state blob of a store that no Raft entry has touched yet: what a restored
/// backup records, so that the new cluster's log applies on top of it from its start.
pub fn nothing_applied() -> Vec<u8> {
    // A default state has no variable-length part that could fail to encode.
    postcard::to_allocvec(&AppliedState::default()).unwrap_or_default()
}

/// The applied state as nodes before batch entries recorded it (no `partial`).
#[derive(Deserialize)]
struct AppliedStateV1 {
    log_id: Option<LogId>,
    membership: StoredMembership,
}

impl AppliedState {
    fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| storage_error(true, &e))
    }

    /// Decodes the blob, also in the format written before batch entries: a data
    /// directory from an older node opens as it was.
    fn decode(blob: &[u8]) -> std::result::Result<Self, mvcc::Error> {
        match postcard::from_bytes(blob) {
            Ok(state) => Ok(state),
            Err(e) => match postcard::from_bytes::<AppliedStateV1>(blob) {
                Ok(old) => Ok(AppliedState {
                    log_id: old.log_id,
                    membership: old.membership,
                    partial: None,
                }),
                Err(_) => Err(mvcc::Error::from(e)),
            },
        }
    }
}

/// The state machine of one node.
pub struct StateMachine {
    store: mvcc::Store,
    snapshots: SnapshotDir,
    applied: AppliedState,
    /// Notified after every applied batch, with the store revision (watchers, waiters).
    on_apply: Arc<tokio::sync::watch::Sender<i64>>,
    /// Compiles plugins ahead of their bindings (none in storage-only tests).
    plugins: Option<crate::plugin::Plugins>,
    /// Told what is applied, so that the log's reads for apply can wait for room.
    backlog: Option<Arc<ApplyBacklog>>,
    /// When apply waits for fjall's flushes ([`StateMachine::wait_for_flushes`]).
    pacer: mvcc::memtables::Pacer,
}

impl StateMachine {
    /// Loads the applied state recorded in `store`.
    pub fn open(
        store: mvcc::Store,
        snapshots: SnapshotDir,
    ) -> std::result::Result<Self, mvcc::Error> {
        let applied = match store.applied()? {
            Some(blob) => AppliedState::decode(&blob)?,
            None => AppliedState::default(),
        };
        let on_apply = Arc::new(tokio::sync::watch::Sender::new(store.revision()));
        Ok(StateMachine {
            store,
            snapshots,
            applied,
            on_apply,
            plugins: None,
            backlog: None,
            pacer: mvcc::memtables::Pacer::new(MAX_FLUSH_WAIT),
        })
    }

    /// Readies the state before Raft starts. An entry a crash left applied part-way is
    /// finished first, from the log (a snapshot sent of the state between two of its
    /// commands would be the state at no entry). Then the database is made durable and the
    /// applied point recorded as the newest snapshot, so that the log behind it may be
    /// purged: openraft's first act at startup when the applied state is past the log's end
    /// (a node killed after importing a snapshot and before purging its log; soak seed
    /// 13159862368466355055 once left such a node waiting for ever).
    ///
    /// # Errors
    ///
    /// The log or the database failed.
    pub async fn settle<L>(&mut self, log: &mut L) -> Result<()>
    where
        L: openraft::storage::RaftLogReader<TypeConfig>,
    {
        if let Some((log_id, done)) = self.applied.partial {
            let entries = log.try_get_log_entries(log_id.index..=log_id.index).await?;
            match entries.into_iter().find(|e| e.log_id == log_id) {
                Some(entry) => {
                    tracing::info!(%log_id, done, "finishing an entry applied part-way before the node stopped");
                    self.apply([entry]).await?;
                }
                // A follower applies what the leader committed before its own log's fsync,
                // so its state can hold part of an entry its log lost with the machine. The
                // leader sends the entry again, and apply skips what is done; until then
                // this node cannot lead (its log lacks a committed entry), so it sends no
                // snapshot of the state between two commands (see `get_current_snapshot`).
                None => tracing::warn!(
                    %log_id,
                    done,
                    "an entry applied part-way before the node stopped is not in its log: waiting for the leader to send it again"
                ),
            }
        }
        self.store
            .begin_export()
            .persist()
            .map_err(|e| storage_error(true, &e))?;
        self.snapshots.made_durable(self.applied.log_id);
        Ok(())
    }

    /// Reports every applied batch to `backlog` (see [`super::backlog`]).
    pub fn reporting_to(mut self, backlog: Arc<ApplyBacklog>) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Tells the backlog that everything up to the applied state is applied.
    fn report_applied(&self) {
        if let (Some(backlog), Some(applied)) = (&self.backlog, self.applied.log_id) {
            backlog.applied(applied.index);
        }
    }

    /// Compiles installed plugins with `plugins` before their bindings take effect.
    pub fn compiling_plugins(mut self, plugins: crate::plugin::Plugins) -> Self {
        self.plugins = Some(plugins);
        self
    }

    /// Subscribes to the store revision after each applied batch.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.on_apply.subscribe()
    }

    fn apply_one(&mut self, entry: Entry) -> Result<Applied> {
        let log_id = entry.log_id;
        let command = match entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Membership(m) => {
                self.applied.membership = StoredMembership::new(Some(log_id), m);
                None
            }
            EntryPayload::Normal(command) => Some(command),
        };
        match command {
            None => {
                self.record_whole(log_id)?;
                Ok(Vec::new())
            }
            Some(Command::Batch(commands)) => self.apply_batch(log_id, commands),
            Some(command) => {
                let blob = self.progress(log_id, 1, 1)?;
                Ok(vec![self.apply_command(&command, &blob)?])
            }
        }
    }

    /// Records entry `log_id` as applied, with nothing else to write.
    fn record_whole(&mut self, log_id: LogId) -> Result<()> {
        let blob = self.progress(log_id, 1, 1)?;
        self.store
            .set_applied(&blob)
            .map_err(|e| storage_error(true, &e))
    }

    /// Applies the commands of a batch entry in order, each as if it were its own entry.
    /// A run of puts ([`plain_put`]) goes to the store as one atomic batch
    /// (`Store::apply_puts`), any other command alone; each atomic batch records the progress
    /// through the entry. After a crash part-way through, the entry is applied again and what
    /// was applied is skipped: each command is applied exactly once.
    fn apply_batch(&mut self, log_id: LogId, commands: Vec<Command>) -> Result<Applied> {
        let count = commands.len();
        let done = match self.applied.partial.take() {
            Some((partial, done)) if partial == log_id => (done as usize).min(count),
            _ => 0,
        };
        // Nobody waits for an answer across a restart.
        let mut results: Applied = (0..done)
            .map(|_| {
                Err(etch_proto::Error::Internal(
                    "applied before the node restarted".into(),
                ))
            })
            .collect();
        let mut next = done;
        while next < count {
            let run = commands[next..]
                .iter()
                .map_while(plain_put)
                .collect::<Vec<_>>();
            // Under NOSPACE each put goes alone, to be refused by `apply_command`.
            if run.len() >= 2 && !self.store.no_space() {
                let blob = self.progress(log_id, next + run.len(), count)?;
                let answers = self
                    .store
                    .apply_puts(&run, &blob)
                    .map_err(|e| storage_error(true, &e))?;
                next += run.len();
                results.extend(answers);
            } else {
                let blob = self.progress(log_id, next + 1, count)?;
                results.push(self.apply_command(&commands[next], &blob)?);
                next += 1;
            }
        }
        if done == count {
            // Nothing (left) to apply: still record the entry.
            self.record_whole(log_id)?;
        }
        Ok(results)
    }

    /// The applied state once the first `through` of the `count` commands of entry `log_id`
    /// are applied, encoded.
    fn progress(&mut self, log_id: LogId, through: usize, count: usize) -> Result<Vec<u8>> {
        if through >= count {
            self.applied.log_id = Some(log_id);
            self.applied.partial = None;
        } else {
            self.applied.partial = Some((log_id, through as u32));
        }
        self.applied.encode()
    }

    /// Applies one command, recording `blob` as the applied state in the same atomic batch.
    fn apply_command(&self, command: &Command, blob: &[u8]) -> Result<CommandResult> {
        let store = &self.store;
        let adds_data = match command {
            Command::Kv(req) | Command::Write { request: req, .. } => mvcc::mutation_adds_data(req),
            Command::Once { write, .. } => mvcc::mutation_adds_data(write.request()),
            Command::PluginInstall(_) => true,
            _ => false,
        };
        if adds_data && store.no_space() {
            // The alarm is in the replicated state: every replica refuses the same commands.
            return (store.set_applied(blob))
                .map(|()| Err(etch_proto::Error::NoSpace))
                .map_err(|e| storage_error(true, &e));
        }
        let outcome = match command {
            Command::Kv(req) => store.apply(req, blob),
            Command::LeaseExpire { id } => store.apply(
                &Mutation::LeaseRevoke(etch_proto::lease::LeaseRevokeRequest { id: *id }),
                blob,
            ),
            Command::Write { request, guard } => store.apply_guarded(request, guard, blob),
            Command::PluginInstall(req) => store.plugin_install(req, blob),
            Command::PluginRemove { name } => store.plugin_remove(name, blob),
            Command::Batch(_) => Ok(Err(etch_proto::Error::Internal(
                "a batch inside a batch".into(),
            ))),
            // Nobody reads the answer of the leader's clean-up: an empty compaction answer.
            Command::SessionsExpire { before_ms } => store
                .expire_sessions(*before_ms, blob)
                .map(|_| Ok(etch_proto::Response::Compact(Default::default()))),
            Command::Once { id, write } => match write {
                Named::Kv(req) => store.apply_once(req, None, id, blob),
                Named::Write { request, guard } => store.apply_once(request, Some(guard), id, blob),
            },
            Command::Authorized {
                auth_revision,
                command,
            } => {
                if matches!(**command, Command::Batch(_) | Command::Authorized { .. }) {
                    store.set_applied(blob).map(|()| {
                        Err(etch_proto::Error::Internal(
                            "a nested authorized command".into(),
                        ))
                    })
                } else if store.auth().revision != *auth_revision {
                    // Users or roles changed since the leader checked it: it checks again.
                    store
                        .set_applied(blob)
                        .map(|()| Err(etch_proto::Error::Conflict))
                } else {
                    return self.apply_command(command, blob);
                }
            }
        };
        outcome.map_err(|e| storage_error(true, &e))
    }
}

/// The put a command makes, if it is one that may share an atomic batch with the puts
/// around it: a put, alone or judged by validators that read single keys only (the preview
/// reads the put's own key).
fn plain_put(command: &Command) -> Option<PlainPut<'_>> {
    match command {
        Command::Kv(Mutation::Put(put)) => Some((put, None, None)),
        Command::Write {
            request: Mutation::Put(put),
            guard,
        } if guard.reads.iter().all(mvcc::Read::is_single_key) => Some((put, Some(guard), None)),
        Command::Once {
            id,
            write: Named::Kv(Mutation::Put(put)),
        } => Some((put, None, Some(id))),
        Command::Once {
            id,
            write:
                Named::Write {
                    request: Mutation::Put(put),
                    guard,
                },
        } if guard.reads.iter().all(mvcc::Read::is_single_key) => {
            Some((put, Some(guard), Some(id)))
        }
        _ => None,
    }
}

/// A put that may share an atomic batch: the put, its guard, its request id.
type PlainPut<'a> = (
    &'a etch_proto::PutRequest,
    Option<&'a mvcc::Guard>,
    Option<&'a mvcc::RequestId>,
);

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        for entry in entries {
            if let (Some(plugins), EntryPayload::Normal(Command::PluginInstall(req))) =
                (&self.plugins, &entry.payload)
            {
                // Compiling takes a while: off the runtime's worker threads, so that this
                // node goes on answering its peers meanwhile.
                let (plugins, req) = (plugins.clone(), req.clone());
                if let Err(e) = tokio::task::spawn_blocking(move || plugins.precompile(&req)).await
                {
                    tracing::error!(error = %e, "compiling a plugin failed");
                }
            }
            results.push(self.apply_one(entry)?);
        }
        // Once per call, not per entry: a call holds at most the apply backlog's 8 MiB, and
        // the look takes two locks per keyspace, on the write path.
        self.wait_for_flushes().await;
        self.report_applied();
        self.on_apply.send_replace(self.store.revision());
        tracing::trace!(
            entries = results.len(),
            took_us = started.elapsed().as_micros() as u64,
            "applied"
        );
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshot_builder()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>> {
        // Only for snapshots sent in chunks, which etch never does (`full_snapshot`).
        Ok(Box::new(SnapshotData::File(SnapshotFile::at(
            self.snapshots.temp_path(),
        ))))
    }

    /// Imports a snapshot received from a peer into the database (which makes it durable)
    /// and makes it the newest snapshot; its file is removed after.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<()> {
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installing snapshot");
        let started = std::time::Instant::now();
        let SnapshotData::File(file) = *snapshot else {
            return Err(storage_error(
                false,
                &io::Error::other("only a snapshot received from a peer is installed"),
            ));
        };
        let read_err = |e: io::Error| storage_error(false, &e);
        let (_, mut body) = file.open().map_err(read_err)?;
        let applied = AppliedState {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
            partial: None,
        };
        self.store
            .import(&mut body, &applied.encode()?)
            .map_err(|e| storage_error(true, &e))?;
        drop((body, file));
        self.snapshots.made_durable(meta.last_log_id);
        tracing::info!(snapshot = %meta.snapshot_id, ms = started.elapsed().as_millis() as u64, "installed snapshot");
        self.applied = applied;
        self.report_applied();
        if let Some(plugins) = &self.plugins {
            let (plugins, store) = (plugins.clone(), self.store.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || plugins.warm(&store)).await {
                tracing::error!(error = %e, "compiling plugins failed");
            }
        }
        self.on_apply.send_replace(self.store.revision());
        Ok(())
    }

    /// The state applied now, to be sent to a follower (see `raft::snapshot`): newer than
    /// the last snapshot built, which openraft 0.9 accepts, and what spares a new member
    /// replaying the log since that snapshot.
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        if self.applied.log_id.is_none() {
            return Ok(None);
        }
        let state = match self.applied.partial {
            // Never sent: the state between two commands of an entry is the state at no
            // entry. Only a node whose log lacks the entry gets here (see `settle`), and it
            // cannot lead; openraft reads the meta at start.
            Some((log_id, done)) => Outgoing::unsendable(
                self.snapshots.clone(),
                format!(
                    "no snapshot is sent while entry {log_id} is applied part-way ({done} commands)"
                ),
            ),
            None => Outgoing::new(Arc::new(self.store.begin_export()), self.snapshots.clone()),
        };
        Ok(Some(Snapshot {
            meta: self.snapshot_meta(),
            snapshot: Box::new(SnapshotData::Local(state)),
        }))
    }
}

impl StateMachine {
    /// Waits while fjall's one worker, busy with a compaction, has let the memtables grow
    /// past their bound (a member catching up applies as fast as it reads its log), without
    /// holding a runtime thread; at most [`MAX_FLUSH_WAIT`] at once (`mvcc::memtables`).
    async fn wait_for_flushes(&mut self) {
        if !self.pacer.should_wait(self.store.memtables_behind()) {
            return;
        }
        let started = std::time::Instant::now();
        while self.store.memtables_behind() {
            if self.pacer.ran_out(started) {
                tracing::warn!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "storage flushes are behind (a long compaction?); applying on"
                );
                return;
            }
            tokio::time::sleep(mvcc::memtables::POLL).await;
        }
    }

    /// The meta of a snapshot of the state as applied now.
    fn snapshot_meta(&self) -> SnapshotMeta {
        let last = self.applied.log_id;
        SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            ),
        }
    }

    /// A builder of a snapshot of the state as applied now: a consistent view of the
    /// database, taken in apply order (cheap), made durable when openraft builds it.
    fn snapshot_builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            meta: self.snapshot_meta(),
            state: Arc::new(self.store.begin_export()),
            snapshots: self.snapshots.clone(),
        }
    }
}

/// A snapshot of one applied point (see [`StateMachine::snapshot_builder`]).
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    state: Arc<mvcc::Export>,
    snapshots: SnapshotDir,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Makes the database durable at or past this point, on a blocking thread beside later
    /// applies, and records the point as the newest snapshot: the log behind it may be
    /// purged, as the state it holds is never lost with the machine. Nothing is written
    /// out (the database is the snapshot).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.persist())
            .await
            .map_err(|e| storage_error(true, &io::Error::other(e)))?
            .map_err(|e| storage_error(true, &e))?;
        self.snapshots.made_durable(self.meta.last_log_id);
        tracing::info!(snapshot = %self.meta.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(SnapshotData::Local(Outgoing::new(
                self.state.clone(),
                self.snapshots.clone(),
            ))),
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use etch_proto::{PutRequest, RangeRequest, Response};
    use openraft::{CommittedLeaderId, Entry as RaftEntry};

    use super::*;

    fn put(key: &str, value: &str) -> Command {
        Command::Kv(Mutation::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }))
    }

    /// Entry `index` of term 1, carrying `command`.
    pub(crate) fn entry(index: u64, command: Command) -> Entry {
        RaftEntry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    }

    /// A replica's storage in a temporary directory; state machines open over it.
    pub(crate) struct Node {
        _dir: tempfile::TempDir,
        pub(crate) store: mvcc::Store,
        snapshots: SnapshotDir,
    }

    impl Node {
        pub(crate) fn new() -> Node {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = fjall::Database::builder(dir.path().join("db"))
                .open()
                .expect("db");
            let store = mvcc::Store::open(&db).expect("store");
            let snapshots = SnapshotDir::open(&dir.path().join("snap")).expect("snapshots");
            Node {
                _dir: dir,
                store,
                snapshots,
            }
        }

        pub(crate) fn state_machine(&self) -> StateMachine {
            StateMachine::open(self.store.clone(), self.snapshots.clone()).expect("open")
        }

        /// How many files the snapshot directory holds.
        fn snapshot_files(&self) -> usize {
            std::fs::read_dir(self._dir.path().join("snap"))
                .expect("dir")
                .count()
        }

        fn get(&self, key: &str) -> etch_proto::KeyValue {
            let range = RangeRequest {
                key: key.into(),
                ..Default::default()
            };
            let mut kvs = self.store.range(&range).expect("read").expect("range").kvs;
            assert_eq!(kvs.len(), 1, "{key}");
            kvs.remove(0)
        }
    }

    fn revision_of(result: &CommandResult) -> i64 {
        match result {
            Ok(Response::Put(p)) => p.header.revision,
            other => panic!("expected a put answer, got {other:?}"),
        }
    }

    #[test]
    fn the_applied_state_of_an_older_node_still_decodes() {
        #[derive(Serialize)]
        struct Old {
            log_id: Option<LogId>,
            membership: StoredMembership,
        }
        let log_id = entry(7, put("a", "1")).log_id;
        let old = postcard::to_allocvec(&Old {
            log_id: Some(log_id),
            membership: StoredMembership::default(),
        })
        .expect("encode");
        let state = AppliedState::decode(&old).expect("decode");
        assert_eq!((state.log_id, state.partial), (Some(log_id), None));
        let new = AppliedState {
            partial: Some((log_id, 3)),
            ..state
        };
        let again = AppliedState::decode(&new.encode().expect("encode")).expect("decode");
        assert_eq!(again.partial, Some((log_id, 3)));
    }

    #[tokio::test]
    async fn a_command_authorized_before_an_auth_change_is_refused_at_apply() {
        use etch_proto::auth::AuthRequest;
        let node = Node::new();
        let mut sm = node.state_machine();
        let rev = node.store.auth().revision;
        let authorized = |auth_revision, command| Command::Authorized {
            auth_revision,
            command: Box::new(command),
        };
        let add = Command::Kv(Mutation::Auth(AuthRequest::UserAdd {
            name: "alice".into(),
        }));
        let results = sm
            .apply([
                entry(1, authorized(rev, put("a", "1"))),
                entry(2, add),
                // Checked before the change committed: refused, nothing written.
                entry(3, authorized(rev, put("a", "2"))),
                entry(4, authorized(rev + 1, put("a", "3"))),
                entry(5, authorized(rev + 1, Command::Batch(vec![put("b", "1")]))),
            ])
            .await
            .expect("apply");
        assert!(matches!(results[0][0], Ok(Response::Put(_))));
        assert!(matches!(results[1][0], Ok(Response::Auth(_))));
        assert_eq!(results[2][0], Err(etch_proto::Error::Conflict));
        assert!(matches!(results[3][0], Ok(Response::Put(_))));
        assert!(matches!(results[4][0], Err(etch_proto::Error::Internal(_))));
        assert_eq!(node.get("a").value, b"3");
        assert_eq!(node.store.auth().revision, rev + 1);
    }

    #[tokio::test]
    async fn applying_entries_frees_their_room_in_the_apply_backlog() {
        let node = Node::new();
        let backlog = Arc::new(ApplyBacklog::new(std::time::Duration::ZERO));
        let mut sm = node.state_machine().reporting_to(backlog.clone());
        backlog.read(2, 100);
        backlog.read(3, 50);
        sm.apply([entry(1, put("a", "1")), entry(2, put("b", "2"))])
            .await
            .expect("apply");
        assert_eq!(backlog.bytes(), 50, "entry 3 is not applied yet");
        sm.apply([entry(3, put("c", "3"))]).await.expect("apply");
        assert_eq!(backlog.bytes(), 0);
    }

    /// The snapshot `sm` hands out now.
    async fn current(sm: &mut StateMachine) -> Snapshot<TypeConfig> {
        (sm.get_current_snapshot().await)
            .expect("read")
            .expect("a snapshot")
    }

    /// A Raft log holding `entries`, for [`StateMachine::settle`].
    struct Entries(Vec<Entry>);

    impl openraft::storage::RaftLogReader<TypeConfig> for Entries {
        async fn try_get_log_entries<R>(&mut self, range: R) -> Result<Vec<Entry>>
        where
            R: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + Send,
        {
            Ok(self
                .0
                .iter()
                .filter(|e| range.contains(&e.log_id.index))
                .cloned()
                .collect())
        }
    }

    /// Before Raft starts the applied state is the newest snapshot (the log may be purged
    /// behind it at once: openraft does so when the applied state is past the log's end).
    #[tokio::test]
    async fn settling_makes_the_applied_state_the_newest_snapshot() {
        let node = Node::new();
        let mut sm = node.state_machine();
        sm.settle(&mut Entries(Vec::new()))
            .await
            .expect("nothing applied");
        assert_eq!(node.snapshots.durable_index(), None);
        sm.apply([entry(1, put("a", "1")), entry(2, put("b", "2"))])
            .await
            .expect("apply");
        assert_eq!(
            node.snapshots.durable_index(),
            None,
            "not before it is built"
        );
        let mut sm = node.state_machine();
        sm.settle(&mut Entries(Vec::new())).await.expect("settle");
        assert_eq!(node.snapshots.durable_index(), Some(2));
    }

    /// An entry applied part-way when the node stopped is finished from the log before Raft
    /// starts, each command once: a snapshot of the state between two of its commands
    /// would be the state at no entry. One the log no longer holds (a follower applies
    /// before its own fsync) waits for the leader, and no snapshot is handed out meanwhile.
    #[tokio::test]
    async fn settling_finishes_an_entry_applied_part_way_from_the_log() {
        let (node, batch) = cut_short_after_one_command().await;

        // Not in the log (lost with the machine before its fsync): the node starts, applies
        // nothing, and hands out no snapshot of the state between two commands.
        let mut sm = node.state_machine();
        sm.settle(&mut Entries(Vec::new()))
            .await
            .expect("starts without the entry");
        assert_eq!(
            node.snapshots.durable_index(),
            Some(1),
            "the last whole entry"
        );
        let snapshot = (sm.get_current_snapshot().await)
            .expect("its meta reads, as openraft does at start")
            .expect("a snapshot");
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(1));
        let Err(e) = snapshot.snapshot.file_to_send(&snapshot.meta).await else {
            panic!("a snapshot of an entry applied part-way was written out");
        };
        assert!(e.to_string().contains("part-way"), "{e}");
        let mut sm = node.state_machine();
        let mut log = Entries(vec![
            entry(1, put("x", "0")),
            entry(2, Command::Batch(batch)),
        ]);
        sm.settle(&mut log).await.expect("settle");
        assert_eq!(sm.applied.partial, None);
        assert_eq!(node.snapshots.durable_index(), Some(2));
        assert_eq!(
            (node.get("a").version, node.get("c").mod_revision),
            (1, 5),
            "each command applied once"
        );
    }

    /// The snapshot handed out to send is the state applied when it was asked for, whatever
    /// is applied after; written out, it installs on another node as that state, and no
    /// file stays on either. A snapshot built writes no file.
    #[tokio::test]
    async fn a_snapshot_sent_is_the_state_applied_when_asked_and_leaves_no_file() {
        let node = Node::new();
        let mut sm = node.state_machine();
        sm.apply([entry(1, put("a", "1"))]).await.expect("apply");
        let first = current(&mut sm).await;
        assert_eq!(first.meta.last_log_id.map(|l| l.index), Some(1));
        sm.apply([entry(2, put("a", "2"))]).await.expect("apply");
        let mut builder = sm.get_snapshot_builder().await;
        sm.apply([entry(3, put("a", "3"))]).await.expect("apply");
        let built = builder.build_snapshot().await.expect("build");
        assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(2));
        assert_eq!(node.snapshots.durable_index(), Some(2));

        let file = (first.snapshot.file_to_send(&first.meta).await).expect("written out");
        let path = file.path.clone();
        let elsewhere = Node::new();
        let copy = elsewhere.snapshots.temp_path();
        std::fs::copy(&path, &copy).expect("copy");
        drop(file);
        assert!(!path.exists(), "the file written to send outlived the send");
        elsewhere
            .state_machine()
            .install_snapshot(
                &first.meta,
                Box::new(SnapshotData::File(SnapshotFile::at(copy))),
            )
            .await
            .expect("install");
        assert_eq!(elsewhere.get("a").value, b"1", "the state at entry 1");
        assert_eq!(elsewhere.snapshots.durable_index(), Some(1));

        let now = current(&mut sm).await;
        assert_eq!(now.meta.last_log_id.map(|l| l.index), Some(3));
        let files = node.snapshot_files();
        assert_eq!(files, 0, "a snapshot wrote a file of its own");
    }

    /// A snapshot to send is not written out on a disk it would leave with less free space
    /// than the node keeps (it would raise NOSPACE for the cluster, or starve the log): the
    /// send fails with a reason, and nothing is left behind.
    #[tokio::test]
    async fn a_snapshot_is_not_written_out_past_the_free_space_kept() {
        let node = Node::new();
        let snapshots = node.snapshots.clone().keeping_free(u64::MAX / 4);
        let mut sm = StateMachine::open(node.store.clone(), snapshots).expect("open");
        sm.apply([entry(1, put("a", "1"))]).await.expect("apply");
        let snapshot = current(&mut sm).await;
        let Err(e) = snapshot.snapshot.file_to_send(&snapshot.meta).await else {
            panic!("written out on a disk without the room kept");
        };
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        assert!(e.to_string().contains("larger disk"), "{e}");
        let files = node.snapshot_files();
        assert_eq!(files, 0, "a partial file was left");
    }

    #[tokio::test]
    async fn each_command_of_a_batch_gets_its_own_revision_and_answer() {
        let node = Node::new();
        let mut sm = node.state_machine();
        let batch = Command::Batch(vec![put("a", "1"), put("b", "2"), put("a", "3")]);
        let applied = sm.apply([entry(1, batch)]).await.expect("apply");
        let revisions: Vec<i64> = applied[0].iter().map(revision_of).collect();
        assert_eq!(revisions, vec![2, 3, 4]);
        assert_eq!(node.store.revision(), 4);
        let a = node.get("a");
        assert_eq!(
            (a.value.as_slice(), a.version, a.mod_revision),
            (&b"3"[..], 2, 4)
        );
        assert_eq!(
            sm.applied_state().await.expect("state").0.map(|l| l.index),
            Some(1)
        );
    }

    /// A node that applied entry 1 whole and the first of entry 2's three puts (`batch`),
    /// then "crashed": its applied state says entry 2 is part-way.
    async fn cut_short_after_one_command() -> (Node, Vec<Command>) {
        let node = Node::new();
        let mut sm = node.state_machine();
        sm.apply([entry(1, put("x", "0"))]).await.expect("apply");
        let batch = vec![put("a", "1"), put("b", "2"), put("c", "3")];
        let partial = AppliedState {
            log_id: sm.applied.log_id,
            membership: sm.applied.membership.clone(),
            partial: Some((entry(2, put("", "")).log_id, 1)),
        };
        sm.apply_command(&batch[0], &partial.encode().expect("encode"))
            .expect("apply the first")
            .expect("a put");
        (node, batch)
    }

    #[tokio::test]
    async fn a_batch_cut_short_by_a_crash_resumes_where_it_stopped() {
        let (node, batch) = cut_short_after_one_command().await;

        let mut sm = node.state_machine();
        // openraft re-applies the entry after the last one fully applied.
        assert_eq!(
            sm.applied_state().await.expect("state").0.map(|l| l.index),
            Some(1)
        );
        sm.apply([entry(2, Command::Batch(batch))])
            .await
            .expect("re-apply");
        // "a" was not written twice, and the rest followed it.
        assert_eq!(node.get("a").version, 1);
        assert_eq!(node.get("a").mod_revision, 3);
        assert_eq!(node.get("b").mod_revision, 4);
        assert_eq!(node.get("c").mod_revision, 5);
        assert_eq!(node.store.revision(), 5);
        assert_eq!(
            sm.applied_state().await.expect("state").0.map(|l| l.index),
            Some(2)
        );
        drop(sm);
        let mut sm = node.state_machine();
        assert_eq!(
            sm.applied_state().await.expect("state").0.map(|l| l.index),
            Some(2)
        );
        assert_eq!(sm.applied.partial, None);
    }

    fn guarded_put(key: &str, bindings_version: u64) -> Command {
        Command::Write {
            request: Mutation::Put(PutRequest {
                key: key.into(),
                value: key.into(),
                prev_kv: true,
                ..Default::default()
            }),
            guard: mvcc::Guard {
                bindings_version,
                reads: Vec::new(),
                principal: String::new(),
            },
        }
    }

    /// A put judged when `key` had `count` live versions, the newest at `mod_revision`.
    fn put_read_at(key: &str, count: u64, mod_revision: i64) -> Command {
        let Command::Write { request, mut guard } = guarded_put(key, 0) else {
            unreachable!("guarded_put makes a Write");
        };
        guard.reads.push(mvcc::Read {
            key: key.into(),
            range_end: Vec::new(),
            count,
            max_mod_revision: mod_revision,
        });
        Command::Write { request, guard }
    }

    #[tokio::test]
    async fn a_batch_applies_exactly_as_its_commands_one_by_one() {
        let leased = |key: &str, lease| {
            Command::Kv(Mutation::Put(PutRequest {
                key: key.into(),
                value: "v".into(),
                lease,
                ..Default::default()
            }))
        };
        let commands = vec![
            Command::Kv(Mutation::LeaseGrant(etch_proto::lease::LeaseGrantRequest {
                ttl: 60,
                id: 5,
            })),
            // "l" moves onto the lease and off it again within one run; "m" stays on it.
            leased("l", 5),
            leased("m", 5),
            leased("l", 0),
            put("a", "1"),
            put("b", "1"),
            put("a", "2"),
            Command::Kv(Mutation::DeleteRange(etch_proto::DeleteRangeRequest {
                key: "b".into(),
                ..Default::default()
            })),
            put("b", "2"),
            guarded_put("c", 0),
            // A stale bindings version: Conflict, nothing written.
            guarded_put("d", 7),
            // An unknown lease and an empty key fail alone too.
            Command::Kv(Mutation::Put(PutRequest {
                key: "e".into(),
                lease: 99,
                ..Default::default()
            })),
            put("", "x"),
            put("a", "3"),
            // Decided on "a" as the put before wrote it (at revision 11): holds. Then decided
            // on the same state again, but "a" moved on: Conflict. A key that never existed
            // holds with count 0.
            put_read_at("a", 1, 11),
            put_read_at("a", 1, 11),
            put_read_at("new", 0, 0),
            // Revoking the lease deletes "m" only.
            Command::Kv(Mutation::LeaseRevoke(
                etch_proto::lease::LeaseRevokeRequest { id: 5 },
            )),
            put("z", "1"),
        ];
        let batched = Node::new();
        let mut sm = batched.state_machine();
        let applied = sm
            .apply([entry(1, Command::Batch(commands.clone()))])
            .await
            .expect("apply");
        let one_by_one = Node::new();
        let mut alone = one_by_one.state_machine();
        let entries = (0..commands.len()).map(|i| entry(i as u64 + 1, commands[i].clone()));
        let expected: Applied = alone
            .apply(entries)
            .await
            .expect("apply")
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(applied[0], expected);
        assert!(matches!(expected[10], Err(etch_proto::Error::Conflict)));
        let put_revision = |result: &CommandResult| match result {
            Ok(Response::Put(p)) => Some(p.header.revision),
            _ => None,
        };
        assert_eq!(put_revision(&expected[13]), Some(11), "{:?}", expected[13]);
        assert_eq!(put_revision(&expected[14]), Some(12), "{:?}", expected[14]);
        assert!(matches!(expected[15], Err(etch_proto::Error::Conflict)));
        assert_eq!(put_revision(&expected[16]), Some(13), "{:?}", expected[16]);
        let live = |node: &Node, key: &str| {
            let range = RangeRequest {
                key: key.into(),
                ..Default::default()
            };
            node.store
                .range(&range)
                .expect("read")
                .expect("range")
                .count
        };
        assert_eq!((live(&batched, "l"), live(&batched, "m")), (1, 0));
        assert_eq!(batched.store.revision(), one_by_one.store.revision());
        for rev in 1..=batched.store.revision() {
            assert_eq!(
                batched.store.events_at(rev).expect("read"),
                one_by_one.store.events_at(rev).expect("read"),
                "events at {rev}"
            );
            assert_eq!(
                batched.store.hash_kv(rev).expect("read"),
                one_by_one.store.hash_kv(rev).expect("read"),
                "hash at {rev}"
            );
        }
    }
}
