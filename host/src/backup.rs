//! Backups: what `etchctl snapshot save | status | restore` write and read.
//!
//! A backup file is:
//!
//! 1. [`MAGIC`] (8 bytes);
//! 2. a 4-byte big-endian length and the postcard [`BackupHeader`] (revision, source member
//!    and cluster, time);
//! 3. the mvcc export of one consistent point (`crate::mvcc::Export`: every key-value of
//!    the key space, its history, leases, plugins, users and roles; self-delimiting, with a
//!    record count at its end);
//! 4. the SHA-256 of everything before it (32 bytes), as etcd's snapshot ends in its own;
//! 5. only in a backup streamed through etcd's `Snapshot` RPC (the gRPC front), etcd's
//!    frame ([`EtcdTrailer`]): zero bytes up to a multiple of 512, then the SHA-256 of all
//!    before it — etcd's clients check that a snapshot's length is 32 past a multiple of
//!    512 before they keep it.
//!
//! [`verify`] reads a whole file and checks all of it (magic, header, every record, the
//! count, the hash, nothing after it) before anything trusts it; [`restore`] verifies
//! first, then builds the data directory of a member of a *new* cluster beside the target
//! and renames it into place: a refused or interrupted restore leaves no data directory.
//!
//! A restored data directory holds the key space and an empty Raft log, plus
//! [`RESTORED_FILE`], the membership the restore was made for. `etchd` started on it with
//! that name, `--initial-cluster` and token founds the new cluster (new cluster id, fresh
//! membership, the restored revision) as on any first start; other flags are refused
//! ([`check_restored`]). Alarms are not restored: they named the old cluster's members.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::mvcc::{self, Export, Store};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"ETCHBAK\0";
/// Version of the backup format.
pub const FORMAT: u32 = 1;
/// Largest header accepted (it is a few dozen bytes).
const MAX_HEADER: usize = 64 * 1024;
/// Length of the trailing hash.
const HASH_LEN: usize = 32;
/// The file in a restored data directory naming the membership it was restored for.
pub const RESTORED_FILE: &str = "restored.json";

/// What a backup says about itself, in front of the data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// The store's revision at the saved point.
    pub revision: i64,
    /// History below this revision was compacted away before the save.
    pub compact_revision: i64,
    /// The member that wrote the backup, and its cluster.
    pub member_id: u64,
    pub cluster_id: u64,
    /// When the save began, in milliseconds since the Unix epoch.
    pub saved_at_unix_ms: u64,
}

/// A verified backup file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupStatus {
    pub header: BackupHeader,
    /// The SHA-256 the file ends with (and its content hashes to).
    pub hash: [u8; HASH_LEN],
    /// Live keys at the saved revision.
    pub total_keys: u64,
    /// Records of every keyspace (keys, their history, leases, plugins, auth).
    pub entries: u64,
    /// The file's size in bytes.
    pub total_size: u64,
}

impl BackupStatus {
    /// etcd's 32-bit `hash` column: the first four bytes of the SHA-256.
    pub fn short_hash(&self) -> u32 {
        u32::from_be_bytes([self.hash[0], self.hash[1], self.hash[2], self.hash[3]])
    }

    /// The whole SHA-256, in hex.
    pub fn hex_hash(&self) -> String {
        self.hash.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a backup could not be written, read or restored.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not an etch backup (it does not start with etch's backup magic)")]
    NotABackup,
    #[error("backup format {0} is not supported (this etch reads format {FORMAT})")]
    Format(u32),
    #[error("the backup is truncated: it ends before its {0}")]
    Truncated(&'static str),
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the backup is corrupt: its content hashes to {found} but it records {recorded} (a bit flipped or a file cut and joined)"
    )]
    HashMismatch { recorded: String, found: String },
    #[error("{0}")]
    Target(String),
    #[error("writing the restored store failed: {0}")]
    Store(#[from] mvcc::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Writes a backup of `export` with `header` into `w`; returns the hash it ends with.
///
/// # Errors
///
/// A storage failure, or `w` failing.
pub fn write(
    export: &Export,
    header: &BackupHeader,
    w: &mut dyn Write,
) -> Result<[u8; HASH_LEN], BackupError> {
    let mut hashing = Hashing::new(w);
    hashing.write_all(MAGIC)?;
    let header = postcard::to_allocvec(header).map_err(io::Error::other)?;
    let len = u32::try_from(header.len()).map_err(io::Error::other)?;
    hashing.write_all(&len.to_be_bytes())?;
    hashing.write_all(&header)?;
    export.write(&mut hashing)?;
    let (w, hash) = hashing.finish();
    w.write_all(&hash)?;
    w.flush()?;
    Ok(hash)
}

/// Reads a whole backup from `r` and checks every part of it; answers what it holds.
///
/// # Errors
///
/// `r` failing, or a file that is not a backup, is truncated, malformed or corrupt.
pub fn verify(r: &mut dyn Read) -> Result<BackupStatus, BackupError> {
    // Everything read, hashed: what an etcd trailer would record.
    let mut whole = Hashing::new(r);
    let mut counted = Counting {
        inner: &mut whole,
        read: 0,
    };
    let mut hashing = Hashing::new(&mut counted);
    let header = read_header(&mut hashing)?;
    let scanned = mvcc::scan(&mut hashing).map_err(|e| stream_error(e, "last record"))?;
    let (r, found) = hashing.finish();
    let mut recorded = [0u8; HASH_LEN];
    r.read_exact(&mut recorded).map_err(|e| eof_as(e, "hash"))?;
    if recorded != found {
        let hex = |h: &[u8]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        return Err(BackupError::HashMismatch {
            recorded: hex(&recorded),
            found: hex(&found),
        });
    }
    let (length, mut so_far) = (r.read, r.inner.hash.clone());
    let mut rest = Vec::new();
    // An etcd trailer is at most a sector of padding and a hash; more is not one.
    (r.by_ref().take((EtcdTrailer::SECTOR + HASH_LEN + 1) as u64)).read_to_end(&mut rest)?;
    if !rest.is_empty() {
        check_trailer(length, &mut so_far, &rest)?;
    }
    Ok(BackupStatus {
        header,
        hash: recorded,
        total_keys: scanned.current_keys,
        entries: scanned.entries,
        total_size: r.read,
    })
}

/// Checks that `rest`, the bytes after the backup's own hash (`length` bytes in, with
/// `so_far` the hash of them), is an [`EtcdTrailer`].
fn check_trailer(length: u64, so_far: &mut Sha256, rest: &[u8]) -> Result<(), BackupError> {
    let not_a_trailer = || BackupError::Corrupt("bytes follow its hash".into());
    let Some(padding_len) = rest.len().checked_sub(HASH_LEN) else {
        return Err(not_a_trailer());
    };
    let (padding, recorded) = rest.split_at(padding_len);
    let sector = EtcdTrailer::SECTOR as u64;
    if !(length + padding_len as u64).is_multiple_of(sector) || padding.iter().any(|&b| b != 0) {
        return Err(not_a_trailer());
    }
    so_far.update(padding);
    let found: [u8; HASH_LEN] = so_far.clone().finalize().into();
    if recorded != found {
        return Err(BackupError::Corrupt(
            "the hash etcd's frame ends with does not match the file".into(),
        ));
    }
    Ok(())
}

/// etcd's frame around a snapshot streamed through its `Snapshot` RPC, computed as the
/// bytes go by: [`EtcdTrailer::finish`] gives the zero padding up to a multiple of
/// [`EtcdTrailer::SECTOR`] and the SHA-256 of everything before it, to send last.
pub struct EtcdTrailer {
    hash: Sha256,
    length: u64,
}

impl EtcdTrailer {
    /// The block size etcd pads a snapshot to, before its hash.
    pub const SECTOR: usize = 512;

    pub fn new() -> Self {
        EtcdTrailer {
            hash: Sha256::new(),
            length: 0,
        }
    }

    /// Counts and hashes `bytes`, sent before the trailer.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        self.length += bytes.len() as u64;
    }

    /// The padding and the hash that end the stream.
    pub fn finish(mut self) -> Vec<u8> {
        let sector = Self::SECTOR as u64;
        let padding = ((sector - self.length % sector) % sector) as usize;
        let mut trailer = vec![0u8; padding];
        self.hash.update(&trailer);
        trailer.extend_from_slice(&self.hash.finalize());
        trailer
    }
}

impl Default for EtcdTrailer {
    fn default() -> Self {
        Self::new()
    }
}

/// Verifies the backup file at `path`.
///
/// # Errors
///
/// As [`verify`], or the file cannot be opened.
pub fn verify_file(path: &Path) -> Result<BackupStatus, BackupError> {
    let file = File::open(path).map_err(|source| BackupError::File {
        path: path.to_owned(),
        source,
    })?;
    verify(&mut BufReader::new(file))
}

/// The member a backup is restored as, and the new cluster it founds (etcdutl's flags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTarget {
    pub name: String,
    /// The new cluster's founding members, `(name, peer host:port)`.
    pub initial_cluster: Vec<(String, String)>,
    pub initial_cluster_token: String,
}

/// The contents of [`RESTORED_FILE`].
#[derive(Debug, Serialize, Deserialize)]
struct Restored {
    target: RestoreTarget,
    revision: i64,
    hash: String,
}

/// Restores the backup at `file` into a new data directory `data_dir`, for the member and
/// cluster of `target`; answers what the backup held.
///
/// # Errors
///
/// The backup does not verify, `data_dir` already holds something, `target` does not name
/// its member among the founders, or writing fails (nothing is left at `data_dir` then).
pub fn restore(
    file: &Path,
    data_dir: &Path,
    target: &RestoreTarget,
) -> Result<BackupStatus, BackupError> {
    if !target
        .initial_cluster
        .iter()
        .any(|(n, _)| *n == target.name)
    {
        return Err(BackupError::Target(format!(
            "--initial-cluster does not name this member ({})",
            target.name
        )));
    }
    if fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::Target(format!(
            "data dir {} already exists and is not empty: a restore creates a new member's data dir",
            data_dir.display()
        )));
    }
    let status = verify_file(file)?;
    let building = with_suffix(data_dir, ".restoring");
    let _ = fs::remove_dir_all(&building);
    let built = build(file, &building, target, &status);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&building);
        return Err(e);
    }
    // An empty directory made beforehand is replaced.
    let _ = fs::remove_dir(data_dir);
    fs::rename(&building, data_dir)?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        File::open(parent)?.sync_all()?;
    }
    Ok(status)
}

fn build(
    file: &Path,
    dir: &Path,
    target: &RestoreTarget,
    status: &BackupStatus,
) -> Result<(), BackupError> {
    fs::create_dir_all(dir)?;
    let mut r = BufReader::new(File::open(file)?);
    read_header(&mut r)?;
    {
        let db = mvcc::open_database(&dir.join("db"))?;
        let store = Store::open(&db)?;
        store.import(&mut r, &crate::raft::state_machine::nothing_applied())?;
        store.clear_alarms()?;
        db.persist(fjall::PersistMode::SyncAll)
            .map_err(mvcc::Error::from)?;
    }
    let restored = Restored {
        target: target.clone(),
        revision: status.header.revision,
        hash: status.hex_hash(),
    };
    let mut w = BufWriter::new(File::create(dir.join(RESTORED_FILE))?);
    serde_json::to_writer_pretty(&mut w, &restored).map_err(io::Error::other)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Refuses to found a cluster on a restored data directory with another membership than
/// the one it was restored for. Called before the first start's bootstrap.
///
/// # Errors
///
/// The node's name, `--initial-cluster` or token differ from the restore's.
pub fn check_restored(
    data_dir: &Path,
    name: &str,
    initial_cluster: &[(String, String)],
    token: &str,
) -> anyhow::Result<()> {
    let path = data_dir.join(RESTORED_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let restored: Restored = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} does not parse: {e}", path.display()))?;
    let mut ours = initial_cluster.to_vec();
    let mut theirs = restored.target.initial_cluster.clone();
    ours.sort();
    theirs.sort();
    let join = |m: &[(String, String)]| {
        m.iter()
            .map(|(n, a)| format!("{n}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    if name != restored.target.name
        || ours != theirs
        || token != restored.target.initial_cluster_token
    {
        anyhow::bail!(
            "this data dir was restored (revision {}) for member {} of a new cluster: start it with --name {} --initial-cluster {} --initial-cluster-token {} (got --name {name} --initial-cluster {} --initial-cluster-token {token})",
            restored.revision,
            restored.target.name,
            restored.target.name,
            join(&theirs),
            restored.target.initial_cluster_token,
            join(&ours),
        );
    }
    Ok(())
}

fn read_header(r: &mut dyn Read) -> Result<BackupHeader, BackupError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| eof_as(e, "magic"))?;
    if magic != *MAGIC {
        return Err(BackupError::NotABackup);
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|e| eof_as(e, "header"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(BackupError::Corrupt(format!("a header of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|e| eof_as(e, "header"))?;
    let header: BackupHeader = postcard::from_bytes(&buf)
        .map_err(|e| BackupError::Corrupt(format!("header does not decode: {e}")))?;
    if header.format != FORMAT {
        return Err(BackupError::Format(header.format));
    }
    Ok(header)
}

fn eof_as(e: io::Error, what: &'static str) -> BackupError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        BackupError::Truncated(what)
    } else {
        BackupError::Io(e)
    }
}

fn stream_error(e: mvcc::Error, what: &'static str) -> BackupError {
    match e {
        mvcc::Error::Io(io) => eof_as(io, what),
        mvcc::Error::Codec(c) => BackupError::Corrupt(format!("a record does not decode: {c}")),
        mvcc::Error::Corrupt(c) => BackupError::Corrupt(c),
        other => BackupError::Store(other),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Hashes what passes through it, either way.
struct Hashing<T> {
    inner: T,
    hash: Sha256,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Hashing {
            inner,
            hash: Sha256::new(),
        }
    }

    fn finish(self) -> (T, [u8; HASH_LEN]) {
        (self.inner, self.hash.finalize().into())
    }
}

impl<T: Write> Write for Hashing<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Hashing<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Counts the bytes read through it.
struct Counting<'a, R: Read + ?Sized> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read + ?Sized> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "backup_test.rs"]
mod tests;
