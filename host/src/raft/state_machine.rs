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

use super::snapshot::{SnapshotDir, SnapshotFile};
use super::storage_error;
use super::types::{
    Command, CommandResult, Entry, LogId, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::NodeId;
use crate::mvcc;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// What the state machine records beside the data, as one opaque blob in the MVCC meta.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct AppliedState {
    log_id: Option<LogId>,
    membership: StoredMembership,
}

impl AppliedState {
    fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self).map_err(|e| storage_error(true, &e))
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
}

impl StateMachine {
    /// Loads the applied state recorded in `store`.
    pub fn open(
        store: mvcc::Store,
        snapshots: SnapshotDir,
    ) -> std::result::Result<Self, mvcc::Error> {
        let applied = match store.applied()? {
            Some(blob) => postcard::from_bytes(&blob).map_err(mvcc::Error::from)?,
            None => AppliedState::default(),
        };
        let on_apply = Arc::new(tokio::sync::watch::Sender::new(store.revision()));
        Ok(StateMachine {
            store,
            snapshots,
            applied,
            on_apply,
            plugins: None,
        })
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

    fn apply_one(&mut self, entry: Entry) -> Result<Option<CommandResult>> {
        self.applied.log_id = Some(entry.log_id);
        let command = match entry.payload {
            EntryPayload::Blank => None,
            EntryPayload::Membership(m) => {
                self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                None
            }
            EntryPayload::Normal(command) => Some(command),
        };
        let blob = self.applied.encode()?;
        let store = &self.store;
        let outcome = match command {
            None => {
                store
                    .set_applied(&blob)
                    .map_err(|e| storage_error(true, &e))?;
                return Ok(None);
            }
            Some(Command::Kv(req)) => store.apply(&req, &blob),
            Some(Command::LeaseExpire { id }) => store.apply(
                &etch_proto::Request::LeaseRevoke(etch_proto::lease::LeaseRevokeRequest { id }),
                &blob,
            ),
            Some(Command::Write { request, guard }) => store.apply_guarded(&request, &guard, &blob),
            Some(Command::PluginInstall(req)) => store.plugin_install(&req, &blob),
            Some(Command::PluginRemove { name }) => store.plugin_remove(&name, &blob),
        };
        Ok(Some(outcome.map_err(|e| storage_error(true, &e))?))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Option<CommandResult>>>
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
        self.on_apply.send_replace(self.store.revision());
        tracing::trace!(
            entries = results.len(),
            took_us = started.elapsed().as_micros() as u64,
            "applied"
        );
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Building runs beside later applies, so capture the data now, in apply order.
        SnapshotBuilder {
            built: self.write_snapshot(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>> {
        Ok(Box::new(SnapshotFile {
            path: self.snapshots.temp_path(),
        }))
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
        };
        self.store
            .import(&mut body, &applied.encode()?)
            .map_err(|e| storage_error(true, &e))?;
        self.snapshots
            .keep(&snapshot, meta)
            .map_err(|e| storage_error(true, &e))?;
        self.applied = applied;
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
        let Some(file) = self
            .snapshots
            .current()
            .map_err(|e| storage_error(false, &e))?
        else {
            return Ok(None);
        };
        let (meta, _) = file.open().map_err(|e| storage_error(false, &e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

impl StateMachine {
    fn write_snapshot(&self) -> Result<Snapshot<TypeConfig>> {
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
        let store = &self.store;
        let file = self
            .snapshots
            .write(&meta, |w| store.export(w).map_err(io::Error::other))
            .map_err(|e| storage_error(true, &e))?;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

/// Hands openraft the snapshot captured when the builder was made.
pub struct SnapshotBuilder {
    built: Result<Snapshot<TypeConfig>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        std::mem::replace(
            &mut self.built,
            Err(storage_error(
                false,
                &io::Error::other("snapshot already taken"),
            )),
        )
    }
}
