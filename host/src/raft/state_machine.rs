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
use super::snapshot::{SnapshotDir, SnapshotFile};
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

    /// Writes a snapshot of the applied state if the Raft log ends before it (`last_log`):
    /// a node killed between importing a snapshot and keeping its file has applied entries
    /// that neither its log nor any snapshot on disk holds, and openraft's first act at
    /// startup, purging the log up to the applied state, would wait for a snapshot that
    /// never comes (soak seed 13159862368466355055: the node never served again).
    ///
    /// # Errors
    ///
    /// The snapshot could not be written.
    pub fn cover_applied(&self, last_log: Option<LogId>) -> Result<()> {
        let Some(applied) = self.applied.log_id else {
            return Ok(());
        };
        if last_log.is_some_and(|last| last.index >= applied.index) {
            return Ok(());
        }
        tracing::info!(%applied, ?last_log, "the applied state is past the log's end: writing a snapshot of it");
        self.snapshot_builder().write().map(drop)
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>> {
        Ok(Box::new(SnapshotFile::at(self.snapshots.temp_path())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<()> {
        tracing::info!(snapshot = %meta.snapshot_id, last = ?meta.last_log_id, "installing snapshot");
        let read_err = |e: io::Error| storage_error(false, &e);
        let (_, mut body) = snapshot.open().map_err(read_err)?;
        let applied = AppliedState {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
            partial: None,
        };
        self.store
            .import(&mut body, &applied.encode()?)
            .map_err(|e| storage_error(true, &e))?;
        self.snapshots
            .keep(&snapshot, meta)
            .map_err(|e| storage_error(true, &e))?;
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

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        current_snapshot(&self.snapshots)
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

    /// A builder of a snapshot of the state as applied now. It holds a fjall snapshot of
    /// this point, taken in apply order (cheap), and writes it out when openraft builds it,
    /// on a blocking thread beside later applies: a node with a large state no longer
    /// stops applying for as long as its snapshot takes to write.
    fn snapshot_builder(&self) -> SnapshotBuilder {
        let last = self.applied.log_id;
        let meta = SnapshotMeta {
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
        };
        SnapshotBuilder {
            meta,
            export: Arc::new(self.store.begin_export()),
            snapshots: self.snapshots.clone(),
        }
    }
}

/// The snapshot on disk, as openraft takes it.
fn current_snapshot(snapshots: &SnapshotDir) -> Result<Option<Snapshot<TypeConfig>>> {
    let current = snapshots
        .current_with_meta()
        .map_err(|e| storage_error(false, &e))?;
    Ok(current.map(|(meta, file)| Snapshot {
        meta,
        snapshot: Box::new(file),
    }))
}

/// A snapshot of one applied point, to be written out (see
/// [`StateMachine::snapshot_builder`]).
#[derive(Clone)]
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    export: Arc<mvcc::Export>,
    snapshots: SnapshotDir,
}

impl SnapshotBuilder {
    /// Writes the snapshot file and makes it the current one. The database is made durable
    /// first, at or past this point, so that the log behind the snapshot is never purged
    /// while the state it holds could still be lost with the machine.
    fn write(&self) -> Result<Snapshot<TypeConfig>> {
        self.persist()?;
        let file = self.write_file().map_err(|e| storage_error(true, &e))?;
        Ok(self.built(file))
    }

    fn persist(&self) -> Result<()> {
        self.export.persist().map_err(|e| storage_error(true, &e))
    }

    fn built(&self, file: SnapshotFile) -> Snapshot<TypeConfig> {
        tracing::info!(snapshot = %self.meta.snapshot_id, "built snapshot");
        Snapshot {
            meta: self.meta.clone(),
            snapshot: Box::new(file),
        }
    }

    fn write_file(&self) -> io::Result<SnapshotFile> {
        self.snapshots.write(&self.meta, |w| {
            self.export.write(w).map_err(|e| match e {
                mvcc::Error::Io(e) => e,
                other => io::Error::other(other),
            })
        })
    }

    /// What openraft is told when a snapshot did not fit on the disk: the current snapshot,
    /// or none at all (an empty meta), which openraft takes as nothing newer.
    fn not_built(&self) -> Result<Snapshot<TypeConfig>> {
        Ok(
            current_snapshot(&self.snapshots)?.unwrap_or_else(|| Snapshot {
                meta: SnapshotMeta::default(),
                snapshot: Box::new(SnapshotFile::at(self.snapshots.temp_path())),
            }),
        )
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// Writes the snapshot beside apply. One that does not fit on the disk is skipped, not
    /// fatal: the log stays unpurged behind the last snapshot, and the node serves until a
    /// write it must make (its log) fails. Before, a snapshot by bytes taken on a nearly
    /// full disk stopped a node that had just been given room again (disk_faults test).
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let builder = self.clone();
        tokio::task::spawn_blocking(move || {
            builder.persist()?;
            match builder.write_file() {
                Ok(file) => Ok(builder.built(file)),
                Err(e) if e.kind() == io::ErrorKind::StorageFull => {
                    tracing::error!(
                        error = %e,
                        "no room on the disk for a snapshot: skipped; the Raft log is kept until one fits"
                    );
                    builder.not_built()
                }
                Err(e) => Err(storage_error(true, &e)),
            }
        })
        .await
        .map_err(|e| storage_error(true, &io::Error::other(e)))?
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

    #[tokio::test]
    async fn an_applied_state_past_the_logs_end_gets_a_snapshot_before_raft_starts() {
        let node = Node::new();
        let mut sm = node.state_machine();
        sm.apply([entry(1, put("a", "1")), entry(2, put("b", "2"))])
            .await
            .expect("apply");
        let at = |index| Some(entry(index, put("x", "")).log_id);
        let covered = || node.snapshots.covering(2, std::time::Duration::ZERO);
        // The log holds what was applied: nothing to write.
        let sm = node.state_machine();
        sm.cover_applied(at(2)).expect("nothing to do");
        assert!(!covered().await);
        // The log ends before it (a snapshot imported, the node killed before keeping it).
        sm.cover_applied(at(1)).expect("snapshot");
        assert!(
            covered().await,
            "a snapshot on disk covers the applied state"
        );
        let sm = node.state_machine();
        sm.cover_applied(None)
            .expect("an empty log, covered already");
    }

    /// A snapshot is written beside later applies: it holds the state its builder was made
    /// at, and a build that ends after a newer snapshot is in place leaves that one current.
    #[tokio::test]
    async fn a_snapshot_holds_the_state_its_builder_saw_and_never_replaces_a_newer_one() {
        let node = Node::new();
        let mut sm = node.state_machine();
        sm.apply([entry(1, put("a", "1"))]).await.expect("apply");
        let (mut first, mut stale) = (
            sm.get_snapshot_builder().await,
            sm.get_snapshot_builder().await,
        );
        sm.apply([entry(2, put("a", "2"))]).await.expect("apply");
        let mut second = sm.get_snapshot_builder().await;
        sm.apply([entry(3, put("a", "3"))]).await.expect("apply");

        let first = first.build_snapshot().await.expect("build");
        assert_eq!(first.meta.last_log_id.map(|l| l.index), Some(1));
        let elsewhere = Node::new();
        let copy = elsewhere.snapshots.temp_path();
        std::fs::copy(&first.snapshot.path, &copy).expect("copy");
        elsewhere
            .state_machine()
            .install_snapshot(&first.meta, Box::new(SnapshotFile::at(copy)))
            .await
            .expect("install");
        assert_eq!(elsewhere.get("a").value, b"1", "the state at entry 1");

        let second = second.build_snapshot().await.expect("build");
        assert_eq!(second.meta.last_log_id.map(|l| l.index), Some(2));
        let stale = stale.build_snapshot().await.expect("build");
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("a snapshot");
        assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(2));
        // The current snapshot is handed out under a link of its own, gone with it.
        drop(current);
        let files: Vec<_> = std::fs::read_dir(node._dir.path().join("snap"))
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .collect();
        assert_eq!(
            files,
            vec![stale.snapshot.path.clone()],
            "only the current snapshot is kept"
        );
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

    #[tokio::test]
    async fn a_batch_cut_short_by_a_crash_resumes_where_it_stopped() {
        let node = Node::new();
        let mut sm = node.state_machine();
        sm.apply([entry(1, put("x", "0"))]).await.expect("apply");
        // Apply the first command of entry 2 as the batch does, then "crash".
        let batch = vec![put("a", "1"), put("b", "2"), put("c", "3")];
        let partial = AppliedState {
            log_id: sm.applied.log_id,
            membership: sm.applied.membership.clone(),
            partial: Some((entry(2, put("", "")).log_id, 1)),
        };
        sm.apply_command(&batch[0], &partial.encode().expect("encode"))
            .expect("apply the first")
            .expect("a put");
        drop(sm);

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
