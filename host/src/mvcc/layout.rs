//! The storage layout: the `kv_*` and `lease*` keyspaces and the records stored in them.
//!
//! | keyspace      | key                                   | value                              |
//! |---------------|---------------------------------------|------------------------------------|
//! | `kv_current`  | user key                              | [`Version`]: the live version      |
//! | `kv_versions` | [`keycode::version_key`]`(key, rev)`  | [`VersionRecord`]: a version, a delete, or the live version's marker |
//! | `kv_history`  | [`keycode::encode_rev`]`(rev)`        | [`History`]: keys in sub-rev order, who |
//! | `kv_meta`     | [`META_REVISION`] / [`META_COMPACT`] / [`META_APPLIED`] | postcard `i64` / opaque |
//! | `lease`       | [`keycode::encode_rev`]`(lease id)`   | [`Lease`]: the granted TTL         |
//! | `lease_keys`  | `encode_rev(lease id) ++ user key`    | empty: the key is attached         |
//! | `plugin_modules`  | sha256 of the component (32 bytes) | the component's bytes (opaque)   |
//! | `plugin_bindings` | binding name                       | [`BindingRecord`]                |
//! | `sessions`    | `c ++ client` / `o ++ client ++ seq` (big endian) | the client's newest request / a write's outcome (`super::sessions`) |
//!
//! `kv_meta` also holds [`META_BINDINGS`], the bindings version: it advances with every
//! plugin install or removal, and a validated write carries the version it was validated
//! under (see [`super::guard`]); and [`META_AUTH`], the users, roles and permissions.
//!
//! Every value is postcard-encoded, except the opaque `applied` blob and the components,
//! which are stored as given.
//!
//! **A value is stored once.** The live version of a key is whole in `kv_current`; its
//! `kv_versions` record is [`VersionRecord::Live`], a marker without the value. The write
//! that replaces or deletes the key rewrites that record whole ([`VersionRecord::Full`])
//! in the same batch, so within one snapshot a `Live` record at `(key, rev)` always
//! finds `kv_current[key]` at `mod_revision == rev`. Stores written before this kept every
//! version whole; their records read the same.

use etch_proto::{KeyValue, LeaseId, Revision};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::error::{Error, Result};
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
/// Meta key of the authorization state, `crate::auth::AuthState` (absent until the first
/// change: the secure default).
pub(crate) const META_AUTH: &[u8] = b"auth";
/// The raised alarms (`super::alarm`).
pub(crate) const META_ALARMS: &[u8] = b"alarms";

/// The keyspace that records which generation of the mvcc keyspaces is live, under
/// [`ROOT_GENERATION`] (absent: generation 0). A snapshot is imported into the keyspaces of
/// the next generation, and one atomic batch writes its `applied` blob and switches this
/// record, so a reader or a crash sees the old state or the new one, never a mix.
pub(crate) const ROOT_SPACE: &str = "mvcc_root";
/// Root key of the live generation (postcard `u64`).
pub(crate) const ROOT_GENERATION: &[u8] = b"generation";

/// Base names of the mvcc keyspaces; generation 0 uses them as they are, generation `g`
/// appends `.g{g}`.
const SPACE_NAMES: [&str; 9] = [
    "kv_current",
    "kv_versions",
    "kv_history",
    "kv_meta",
    "lease",
    "lease_keys",
    "plugin_modules",
    "plugin_bindings",
    "sessions",
];

fn space_name(base: &str, generation: u64) -> String {
    if generation == 0 {
        base.to_owned()
    } else {
        format!("{base}.g{generation}")
    }
}

/// Handles to the mvcc keyspaces of the shared database.
#[derive(Clone)]
pub(crate) struct Spaces {
    pub db: Database,
    /// Which set of keyspaces these are (see [`ROOT_SPACE`]).
    pub generation: u64,
    pub current: Keyspace,
    pub versions: Keyspace,
    pub history: Keyspace,
    pub meta: Keyspace,
    pub leases: Keyspace,
    pub lease_keys: Keyspace,
    pub plugin_modules: Keyspace,
    pub plugin_bindings: Keyspace,
    pub sessions: Keyspace,
}

/// How many keyspaces [`Spaces::all`] lists; the current key space is the first.
pub(crate) const SPACE_COUNT: usize = 9;

impl Spaces {
    /// Opens the keyspaces of `generation`, creating any that is missing.
    pub fn open(db: &Database, generation: u64) -> Result<Self> {
        let open = |base: &str| db.keyspace(&space_name(base, generation), crate::keyspace_options);
        Ok(Spaces {
            db: db.clone(),
            generation,
            current: open("kv_current")?,
            versions: open("kv_versions")?,
            history: open("kv_history")?,
            meta: open("kv_meta")?,
            leases: open("lease")?,
            lease_keys: open("lease_keys")?,
            plugin_modules: open("plugin_modules")?,
            plugin_bindings: open("plugin_bindings")?,
            sessions: open("sessions")?,
        })
    }

    /// Deletes the keyspaces of `generation`, if there are any. Handles still open (a
    /// reader's snapshot) keep working; fjall removes the files once the last one drops.
    pub fn delete_generation(db: &Database, generation: u64) -> Result<()> {
        for base in SPACE_NAMES {
            let name = space_name(base, generation);
            if db.keyspace_exists(&name) {
                db.delete_keyspace(db.keyspace(&name, KeyspaceCreateOptions::default)?)?;
            }
        }
        Ok(())
    }

    /// All of them, in the order snapshots list them (new ones are only appended, so the
    /// snapshot's keyspace numbers stay stable).
    pub fn all(&self) -> [&Keyspace; SPACE_COUNT] {
        [
            &self.current,
            &self.versions,
            &self.history,
            &self.meta,
            &self.leases,
            &self.lease_keys,
            &self.plugin_modules,
            &self.plugin_bindings,
            &self.sessions,
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
    /// The store revision when a binding of this name was first installed (kept when it is
    /// replaced): a reactor without a checkpoint starts after it.
    pub installed_at: Revision,
    /// The user who installed this binding: a reactor's writes have this user's rights.
    pub installed_by: String,
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

/// A `kv_versions` record. Its postcard form extends the `Option<Version>` written before
/// values were stored once: `Deleted` is `None`'s byte and `Full` is `Some`'s, so those
/// records read as they were.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum VersionRecord {
    /// The key was deleted at this revision.
    Deleted,
    /// A version, whole: one that was replaced or deleted since (or any version of a store
    /// written before the `Live` marker).
    Full(Version),
    /// The key's live version: whole in `kv_current`, under `mod_revision` = this record's
    /// revision.
    Live,
}

impl VersionRecord {
    /// The record of `state` at `rev`, where `live` says whether it is still the key's
    /// live version after the batch that writes it.
    pub fn of(state: Option<&KeyValue>, live: bool) -> VersionRecord {
        match state {
            None => VersionRecord::Deleted,
            Some(_) if live => VersionRecord::Live,
            Some(kv) => VersionRecord::Full(Version::from_kv(kv)),
        }
    }
}

/// The version the `kv_versions` record `raw` of `key` at `rev` stands for (`None`: a
/// delete), as `r` sees it: a live record's version is read from `kv_current`, where it
/// must be, at `rev`.
pub(crate) fn read_version(
    r: &impl Readable,
    current: &Keyspace,
    key: &[u8],
    rev: Revision,
    raw: &[u8],
) -> Result<Option<Version>> {
    match decode::<VersionRecord>(raw)? {
        VersionRecord::Deleted => Ok(None),
        VersionRecord::Full(version) => Ok(Some(version)),
        VersionRecord::Live => {
            let live = match r.get(current, key)? {
                Some(raw) => decode::<Version>(&raw)?,
                None => {
                    return Err(Error::Corrupt(format!(
                        "the live version of {key:02x?} at {rev} is not in kv_current"
                    )));
                }
            };
            if live.mod_revision != rev {
                return Err(Error::Corrupt(format!(
                    "the live version of {key:02x?} at {rev} is at {} in kv_current",
                    live.mod_revision
                )));
            }
            Ok(Some(live))
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

/// What `kv_history` records of one revision: the keys it touched, in sub-revision order,
/// and the principal whose write made it (empty for etch's own: a lease expiry).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct History {
    pub touches: Vec<Touch>,
    pub principal: String,
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
