//! Plugins as replicated state: components by sha256 in `plugin_modules`, bindings by name
//! in `plugin_bindings`, and the bindings version in `kv_meta`.
//!
//! Installing or removing a binding is applied like any other entry: deterministically, in
//! one fjall batch with the applied log id, and it advances the bindings version (not the
//! store revision: no key changes). A component is stored once however many bindings use
//! it, and dropped with the last binding that does. The sha256 is computed here, at apply,
//! from the bytes in the log, so every replica agrees on it.

use etch_proto::plugin::{PluginInstallRequest, PluginInstallResponse, PluginRemoveResponse};
use etch_proto::{Error as ProtoError, Response};
use fjall::{OwnedWriteBatch, Readable};
use sha2::{Digest, Sha256};

use super::error::Result;
use super::layout::{BindingRecord, META_APPLIED, META_BINDINGS, bindings_version, decode, encode};
use super::store::{Outcome, Store};
use super::view::View;

/// Largest binding name, in bytes.
const MAX_NAME: usize = 128;

impl Store {
    /// Stores the component of `req` (unless present) and binds it under the binding's name,
    /// replacing a binding of that name; records `applied` in the same batch.
    ///
    /// # Errors
    ///
    /// A storage failure; the inner error is InvalidArgument for a bad name or no bytes.
    pub fn plugin_install(&self, req: &PluginInstallRequest, applied: &[u8]) -> Outcome<Response> {
        self.plugin_change(applied, |view, batch| install(view, batch, req))
    }

    /// Removes binding `name` (and its component, if no other binding uses it).
    ///
    /// # Errors
    ///
    /// A storage failure; the inner error is InvalidArgument when there is no such binding.
    pub fn plugin_remove(&self, name: &str, applied: &[u8]) -> Outcome<Response> {
        self.plugin_change(applied, |view, batch| remove(view, batch, name))
    }

    /// The bindings version and every binding, from one snapshot.
    ///
    /// # Errors
    ///
    /// A storage failure or a record that does not decode.
    pub fn plugin_bindings(&self) -> Result<(u64, Vec<BindingRecord>)> {
        bindings_in(&View::open(&self.spaces())?)
    }

    /// The bytes of the component with this sha256.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn plugin_module(&self, sha256: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .spaces()
            .plugin_modules
            .get(sha256)?
            .map(|v| v.to_vec()))
    }

    fn plugin_change(
        &self,
        applied: &[u8],
        change: impl FnOnce(&View, &mut OwnedWriteBatch) -> Outcome<Response>,
    ) -> Outcome<Response> {
        let _guard = self.lock();
        let spaces = &self.spaces();
        let view = self.writer_view(spaces);
        let mut batch = spaces.db.batch();
        let outcome = change(&view, &mut batch)?;
        let mut version = None;
        if outcome.is_err() {
            batch = spaces.db.batch();
        } else {
            let next = self.bindings_version() + 1;
            batch.insert(&spaces.meta, META_BINDINGS, encode(&next)?);
            version = Some(next);
        }
        batch.insert(&spaces.meta, META_APPLIED, applied);
        super::gate::commit(batch)?;
        if let Some(version) = version {
            self.set_bindings_version(version);
        }
        Ok(outcome)
    }
}

/// The bindings version and every binding as `view` sees them, in name order.
pub(crate) fn bindings_in(view: &View) -> Result<(u64, Vec<BindingRecord>)> {
    let version = bindings_version_in(view)?;
    let spaces = view.spaces();
    let mut records = Vec::new();
    for item in view.snapshot().iter(&spaces.plugin_bindings) {
        let (_, raw) = item.into_inner()?;
        records.push(decode::<BindingRecord>(&raw)?);
    }
    Ok((version, records))
}

/// The bindings version `view` sees (it moves with every install and removal).
pub(crate) fn bindings_version_in(view: &View) -> Result<u64> {
    bindings_version(view.spaces(), view.snapshot())
}

fn install(
    view: &View,
    batch: &mut OwnedWriteBatch,
    req: &PluginInstallRequest,
) -> Outcome<Response> {
    let spaces = view.spaces();
    let name = &req.binding.name;
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Ok(Err(ProtoError::InvalidArgument(format!(
            "a plugin name is 1 to {MAX_NAME} printable characters, got {name:?}"
        ))));
    }
    if req.wasm.is_empty() {
        return Ok(Err(ProtoError::InvalidArgument(
            "the plugin has no bytes".into(),
        )));
    }
    let sha256 = Sha256::digest(&req.wasm).to_vec();
    let (_, bindings) = bindings_in(view)?;
    let old = bindings.iter().find(|b| b.binding.name == *name);
    if let Some(old) = old
        && old.sha256 != sha256
        && !bindings
            .iter()
            .any(|b| b.binding.name != *name && b.sha256 == old.sha256)
    {
        batch.remove(&spaces.plugin_modules, old.sha256.clone());
    }
    if view
        .snapshot()
        .get(&spaces.plugin_modules, &sha256)?
        .is_none()
    {
        batch.insert(&spaces.plugin_modules, sha256.clone(), req.wasm.as_slice());
    }
    let record = BindingRecord {
        binding: req.binding.clone(),
        sha256: sha256.clone(),
        size: req.wasm.len() as u64,
        installed_at: old.map_or(view.revision, |o| o.installed_at),
        installed_by: req.installed_by.clone(),
    };
    batch.insert(&spaces.plugin_bindings, name.as_bytes(), encode(&record)?);
    let mut resp = PluginInstallResponse {
        sha256: hex(&sha256),
        replaced: old.is_some(),
        ..Default::default()
    };
    resp.header.revision = view.revision;
    Ok(Ok(Response::PluginInstall(resp)))
}

fn remove(view: &View, batch: &mut OwnedWriteBatch, name: &str) -> Outcome<Response> {
    let spaces = view.spaces();
    let (_, bindings) = bindings_in(view)?;
    let Some(old) = bindings.iter().find(|b| b.binding.name == name) else {
        return Ok(Err(ProtoError::InvalidArgument(format!(
            "plugin {name:?} is not installed"
        ))));
    };
    if !bindings
        .iter()
        .any(|b| b.binding.name != name && b.sha256 == old.sha256)
    {
        batch.remove(&spaces.plugin_modules, old.sha256.clone());
    }
    batch.remove(&spaces.plugin_bindings, name.as_bytes());
    let mut resp = PluginRemoveResponse::default();
    resp.header.revision = view.revision;
    Ok(Ok(Response::PluginRemove(resp)))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use etch_proto::plugin::PluginBinding;
    use etch_proto::{Mutation, PutRequest};

    use super::*;
    use crate::mvcc::{Guard, Read};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let store = Store::open(&db).expect("store");
        (dir, store)
    }

    fn install(store: &Store, name: &str, wasm: &[u8]) -> Response {
        let req = PluginInstallRequest {
            binding: PluginBinding {
                name: name.into(),
                prefix: b"/p/".to_vec(),
                ..Default::default()
            },
            wasm: wasm.to_vec(),
            installed_by: "root".into(),
        };
        store
            .plugin_install(&req, b"applied")
            .expect("storage")
            .expect("installed")
    }

    fn put(key: &str) -> Mutation {
        Mutation::Put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    }

    #[test]
    fn components_are_shared_and_dropped_with_their_last_binding() {
        let (_dir, store) = store();
        install(&store, "a", b"one");
        install(&store, "b", b"one");
        let (version, bindings) = store.plugin_bindings().expect("bindings");
        assert_eq!((version, bindings.len()), (2, 2));
        let sha = bindings[0].sha256.clone();
        assert_eq!(bindings[1].sha256, sha);
        // Rebinding `a` to other bytes keeps the shared component for `b`.
        let Response::PluginInstall(r) = install(&store, "a", b"two") else {
            panic!("not an install response")
        };
        assert!(r.replaced);
        assert!(store.plugin_module(&sha).expect("read").is_some());
        let applied = b"applied";
        assert!(store.plugin_remove("b", applied).expect("storage").is_ok());
        assert!(store.plugin_module(&sha).expect("read").is_none());
        assert!(matches!(
            store.plugin_remove("b", applied).expect("storage"),
            Err(ProtoError::InvalidArgument(_))
        ));
        assert_eq!(store.bindings_version(), 4);
    }

    #[test]
    fn a_stale_guard_fails_the_write_with_conflict() {
        let (_dir, store) = store();
        store
            .apply(&put("/p/k"), b"applied")
            .expect("storage")
            .expect("put");
        let view = store.view().expect("view");
        let guard = Guard {
            bindings_version: 0,
            reads: vec![Read::observe(&view, b"/p/", b"/p0").expect("read")],
            principal: String::new(),
        };
        assert_eq!(guard.reads[0].count, 1);
        // Unchanged: applies.
        let ok = store
            .apply_guarded(&put("/q"), &guard, b"applied")
            .expect("storage");
        assert!(ok.is_ok(), "{ok:?}");
        // A write inside the read range makes the guard stale.
        store
            .apply(&put("/p/other"), b"applied")
            .expect("storage")
            .expect("put");
        let stale = store
            .apply_guarded(&put("/q"), &guard, b"applied")
            .expect("storage");
        assert_eq!(stale, Err(ProtoError::Conflict));
        // So does a binding change.
        let fresh = Guard {
            bindings_version: 0,
            reads: Vec::new(),
            principal: String::new(),
        };
        install(&store, "a", b"one");
        let stale = store
            .apply_guarded(&put("/q"), &fresh, b"applied")
            .expect("storage");
        assert_eq!(stale, Err(ProtoError::Conflict));
    }

    #[test]
    fn plugins_travel_in_snapshots() {
        let (_dir, store) = store();
        install(&store, "a", b"component");
        let mut snapshot = Vec::new();
        store.export(&mut snapshot).expect("export");
        let (_dir2, other) = self::store();
        other
            .import(&mut snapshot.as_slice(), b"applied")
            .expect("import");
        assert_eq!(
            other.plugin_bindings().expect("bindings"),
            store.plugin_bindings().expect("bindings")
        );
        // The in-memory bindings version follows the import.
        assert_eq!(other.bindings_version(), 1);
        assert_eq!(other.bindings_version(), store.bindings_version());
        let sha = &other.plugin_bindings().expect("bindings").1[0].sha256;
        assert_eq!(
            other.plugin_module(sha).expect("read").as_deref(),
            Some(&b"component"[..])
        );
    }
}
