//! The storage layout: the `kv_*` and `lease*` keyspaces and the records stored in them.
//!
//! | keyspace      | key                                   | value                              |
//! |---------------|---------------------------------------|------------------------------------|
//! | `kv_current`  | user key                              | [`Version`]: the live version      |
//! | `kv_versions` | [`keycode::version_key`]`(key, rev)`  | `Option<Version>`; `None` = delete |
//! | `kv_history`  | [`keycode::encode_rev`]`(rev)`        | `Vec<`[`Touch`]`>` in sub-rev order |
//! | `kv_meta`     | [`META_REVISION`] / [`META_COMPACT`] / [`META_APPLIED`] | postcard `i64` / opaque |
//! | `lease`       | [`keycode::encode_rev`]`(lease id)`   | [`Lease`]: the granted TTL         |
//! | `lease_keys`  | `encode_rev(lease id) ++ user key`    | empty: the key is attached         |
//! | `plugin_modules`  | sha256 of the component (32 bytes) | the component's bytes (opaque)   |
//! | `plugin_bindings` | binding name                       | [`BindingRecord`]                |
//!
//! `kv_meta` also holds [`META_BINDINGS`], the bindings version: it advances with every
//! plugin install or removal, and a validated write carries the version it was validated
//! under (see [`super::guard`]).
//!
//! Every value is postcard-encoded, except the opaque `applied` blob and the components,
//! which are stored as given.

use etch_proto::{KeyValue, LeaseId, Revision};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Memtable size of every MVCC keyspace.
pub const MEMTABLE_BYTES: u64 = 64 * 1024 * 1024;

use super::error::Result;
#[cfg(doc)]
use super::keycode;

/// Meta key of the current store revision (absent in a fresh store: revision 1).
pub(crate) const META_REVISION: &[u8] = b"revision";
/// Meta key of the compaction floor (absent until the first compaction: 0).
pub(crate) const META_COMPACT: &[u8] = b"compact_revision";
/// Meta key of the caller's opaque applied blob (Raft applied log id + membership).
pub(crate) const META_APPLIED: &[u8] = b"applied";
/// Meta key of the bindings version (absent until the first plugin change: 0).
pub(crate) const META_BINDINGS: &[u8] = b"bindings_version";

/// Handles to the mvcc keyspaces of the shared database.
#[derive(Clone)]
pub(crate) struct Spaces {
    pub db: Database,
    pub current: Keyspace,
    pub versions: Keyspace,
    pub history: Keyspace,
    pub meta: Keyspace,
    pub leases: Keyspace,
    pub lease_keys: Keyspace,
    pub plugin_modules: Keyspace,
    pub plugin_bindings: Keyspace,
}

impl Spaces {
    /// Opens the keyspaces, creating any that is missing.
    pub fn open(db: &Database) -> Result<Self> {
        // Small memtables: etch keeps modest state, and a node's memory should stay small
        // (fjall's default is 64 MiB per keyspace).
        let options = || KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES);
        let open = |name: &str| db.keyspace(name, options);
        Ok(Spaces {
            db: db.clone(),
            current: open("kv_current")?,
            versions: open("kv_versions")?,
            history: open("kv_history")?,
            meta: open("kv_meta")?,
            leases: open("lease")?,
            lease_keys: open("lease_keys")?,
            plugin_modules: open("plugin_modules")?,
            plugin_bindings: open("plugin_bindings")?,
        })
    }

    /// All of them, in the order snapshots list them (new ones are only appended, so the
    /// snapshot's keyspace numbers stay stable).
    pub fn all(&self) -> [&Keyspace; 8] {
        [
            &self.current,
            &self.versions,
            &self.history,
            &self.meta,
            &self.leases,
            &self.lease_keys,
            &self.plugin_modules,
            &self.plugin_bindings,
        ]
    }

    /// Reads `(revision, compact_revision)` from the meta keyspace as `r` sees it.
    pub fn counters(&self, r: &impl Readable) -> Result<(Revision, Revision)> {
        let read = |key: &[u8], default: Revision| -> Result<Revision> {
            match r.get(&self.meta, key)? {
                Some(v) => decode(&v),
                None => Ok(default),
            }
        };
        Ok((read(META_REVISION, 1)?, read(META_COMPACT, 0)?))
    }
}

/// Reads the bindings version from the meta keyspace as `r` sees it.
pub(crate) fn bindings_version(spaces: &Spaces, r: &impl Readable) -> Result<u64> {
    match r.get(&spaces.meta, META_BINDINGS)? {
        Some(v) => decode(&v),
        None => Ok(0),
    }
}

/// A plugin binding as `plugin_bindings` stores it: the binding and the component it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub binding: etch_proto::plugin::PluginBinding,
    /// sha256 of the component, the key of its bytes in `plugin_modules`.
    #[serde(with = "serde_bytes")]
    pub sha256: Vec<u8>,
    /// The component's size in bytes.
    pub size: u64,
}

/// One version of a key, without the key itself (which the storage key already holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Version {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    pub lease: LeaseId,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl Version {
    pub fn from_kv(kv: &KeyValue) -> Self {
        Version {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
            value: kv.value.clone(),
        }
    }

    pub fn into_kv(self, key: Vec<u8>) -> KeyValue {
        KeyValue {
            key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: self.value,
            lease: self.lease,
        }
    }
}

/// A granted lease as the state machine records it. The deadline is not here: it lives in
/// the leader's memory only (see `crate::lease`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Lease {
    /// The TTL granted, in seconds.
    pub ttl: i64,
}

/// The `lease_keys` key of `key` attached to `lease`.
pub(crate) fn lease_key(lease: LeaseId, key: &[u8]) -> Vec<u8> {
    let mut out = super::keycode::encode_rev(lease).to_vec();
    out.extend_from_slice(key);
    out
}

/// One key touched at a revision, as `kv_history` lists them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Touch {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// `true` for a delete, `false` for a put.
    pub deleted: bool,
}

/// Encodes a record with postcard.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a postcard record.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Ok(postcard::from_bytes(bytes)?)
}
