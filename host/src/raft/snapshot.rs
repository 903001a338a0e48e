//! Snapshots: the state machine's database is the snapshot.
//!
//! A Raft snapshot of etch is the database itself, so no copy of the state is kept beside
//! it. Building one (openraft's policy, or `log_bytes` by bytes) makes the database durable
//! at or past the applied point and records that point as the one the log may be purged
//! behind ([`SnapshotDir::covering`]): an fsync, not a rewrite of the state. A snapshot
//! asked for to catch a follower up is the state applied at that moment (a fjall
//! snapshot: a consistent view, taken in apply order at no cost), written out under a
//! temporary name only when it is sent ([`Outgoing`]) and removed after, so a new member
//! has nothing to replay but what was committed while it was sent. A snapshot received
//! from a peer goes to a temporary file ([`SnapshotDir::receive`]), is imported into the
//! database, and the file is removed.
//!
//! A snapshot file is the magic `ETCHSNP2`, a 4-byte big-endian length, the postcard
//! [`SnapshotMeta`] (last included log id, membership, id) and its CRC-32, then the MVCC
//! export stream (sealed with a CRC-32 of its own, see `mvcc::snapshot`); files of releases
//! before start with the length (no magic, no checksum of the meta) and are still read.
//! Those releases also kept their newest snapshot as a `.snap` file in this directory; the
//! database always holds that file's state or a later one (it was made durable before the
//! file was written, and a received one was imported first), so such a file is removed
//! once the database is verified and found to hold it
//! ([`SnapshotDir::remove_older_releases_file`]).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::types::{LogId, SnapshotMeta};
use crate::mvcc;

/// What openraft moves around as `SnapshotData`.
#[derive(Debug)]
pub enum SnapshotData {
    /// This node's state at a point, written out when it is sent.
    Local(Outgoing),
    /// A file received from a peer, to be installed.
    File(SnapshotFile),
}

impl SnapshotData {
    /// The file to stream to a peer: this node's state written out under a temporary name
    /// (on a blocking thread), or the file itself. Dropping the future stops the write at
    /// its next look at the free space and removes what it wrote (openraft drops a send
    /// when replication to the peer ends, as on a change of leader).
    ///
    /// # Errors
    ///
    /// The state could not be read or written out, or was written out already.
    pub async fn file_to_send(&self, meta: &SnapshotMeta) -> io::Result<SnapshotFile> {
        match self {
            SnapshotData::Local(state) => {
                let (state, meta) = (state.clone(), meta.clone());
                let given_up = GivenUp::default();
                let watched = given_up.0.clone();
                tokio::task::spawn_blocking(move || {
                    let started = std::time::Instant::now();
                    let file = state.write(&meta, &watched)?;
                    log_done("snapshot written out to send", &meta, &file, started);
                    Ok(file)
                })
                .await
                .map_err(io::Error::other)?
            }
            SnapshotData::File(file) => Ok(SnapshotFile::at(file.path.clone())),
        }
    }
}

/// Set when dropped: tells a write-out that nobody waits for it any more.
#[derive(Default)]
struct GivenUp(Arc<std::sync::atomic::AtomicBool>);

impl Drop for GivenUp {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// This node's state at one applied point, held as a consistent view of its database
/// until it is written out to be sent (see the module docs). The view is let go once
/// written out: held through the send and the peer's install (up to minutes), it kept
/// compactions from dropping the versions written meanwhile.
#[derive(Clone)]
pub struct Outgoing {
    state: Arc<std::sync::Mutex<Option<Arc<mvcc::Export>>>>,
    dir: SnapshotDir,
    /// Why this state must not be sent, if it must not.
    unsendable: Option<String>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("dir", &self.dir.dir)
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    pub fn new(state: Arc<mvcc::Export>, dir: SnapshotDir) -> Self {
        Outgoing {
            state: Arc::new(std::sync::Mutex::new(Some(state))),
            dir,
            unsendable: None,
        }
    }

    /// A state that is not the state at any entry: its meta may be read (openraft does at
    /// start), but a send of it fails with `why`.
    pub fn unsendable(dir: SnapshotDir, why: String) -> Self {
        Outgoing {
            state: Arc::default(),
            dir,
            unsendable: Some(why),
        }
    }

    /// Writes the state out as a snapshot file for `meta`, under a temporary name removed
    /// with the file, and lets the database's view go. Not synced: it is read back at
    /// once, and gone after.
    ///
    /// # Errors
    ///
    /// I/O, a storage failure reading the state, a disk it would leave with less free space
    /// than the directory keeps (`StorageFull`, looked at every [`ROOM_EVERY`] bytes), a
    /// write given up, or a state written out already: a write that fails removes its file.
    fn write(
        &self,
        meta: &SnapshotMeta,
        given_up: &std::sync::atomic::AtomicBool,
    ) -> io::Result<SnapshotFile> {
        if let Some(why) = &self.unsendable {
            return Err(io::Error::other(why.clone()));
        }
        let taken = (self.state.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(state) = taken else {
            return Err(io::Error::other("this snapshot was written out already"));
        };
        let file = SnapshotFile::temporary(self.dir.temp_path_named("sending"));
        let out = Roomy {
            file: File::create(&file.path)?,
            dir: &self.dir,
            given_up,
            // Looked at before the first byte.
            unchecked: ROOM_EVERY,
        };
        let mut w = BufWriter::with_capacity(256 * 1024, out);
        w.write_all(&header(meta)?)?;
        state.write(&mut w).map_err(|e| match e {
            mvcc::Error::Io(e) => e,
            other => io::Error::other(other),
        })?;
        w.into_inner().map_err(|e| e.into_error())?;
        Ok(file)
    }
}

/// How many bytes a snapshot being written out to send may grow by between two looks at
/// the free space (and at whether it is still wanted).
const ROOM_EVERY: u64 = 8 << 20;

/// A snapshot file being written out to send, stopped short of the free space its directory
/// keeps (a large state written out on a nearly full disk would otherwise raise NOSPACE for
/// the whole cluster, or fill the disk the log needs), and as soon as nobody waits for it.
struct Roomy<'a> {
    file: File,
    dir: &'a SnapshotDir,
    given_up: &'a std::sync::atomic::AtomicBool,
    unchecked: u64,
}

impl Write for Roomy<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.unchecked >= ROOM_EVERY {
            if self.given_up.load(std::sync::atomic::Ordering::Relaxed) {
                // Not `Interrupted`, which `write_all` retries.
                return Err(io::Error::other("the snapshot's send was given up"));
            }
            self.dir.check_free(ROOM_EVERY)?;
            self.unchecked = 0;
        }
        let n = self.file.write(buf)?;
        self.unchecked += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Logs how long a snapshot took to write out or receive, and its size.
fn log_done(what: &str, meta: &SnapshotMeta, file: &SnapshotFile, started: std::time::Instant) {
    let bytes = fs::metadata(&file.path).map_or(0, |m| m.len());
    tracing::info!(
        snapshot = %meta.snapshot_id,
        mib = bytes >> 20,
        ms = started.elapsed().as_millis() as u64,
        "{what}"
    );
}

/// A snapshot file: received from a peer, or this node's state written out to be sent.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    /// Set for a file under a temporary name of the snapshot directory: removed with this.
    _temporary: Option<Temporary>,
}

/// A temporary file, removed when dropped.
#[derive(Debug)]
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a snapshot file");
        }
    }
}

/// The first bytes of a snapshot file with a checksummed header.
const MAGIC: &[u8; 8] = b"ETCHSNP2";
/// Largest header accepted.
const MAX_HEADER: usize = 64 * 1024 * 1024;

fn damaged(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The header of a snapshot file for `meta`.
fn header(meta: &SnapshotMeta) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(meta).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
    Ok(out)
}

impl SnapshotFile {
    /// The snapshot file at `path`.
    pub fn at(path: PathBuf) -> Self {
        SnapshotFile {
            path,
            _temporary: None,
        }
    }

    /// A file under a temporary name, removed with this.
    fn temporary(path: PathBuf) -> Self {
        SnapshotFile {
            _temporary: Some(Temporary(path.clone())),
            path,
        }
    }

    /// Opens the file positioned after the header, returning the meta and a reader of the
    /// MVCC export that follows it.
    ///
    /// # Errors
    ///
    /// I/O, or a header that is damaged (`InvalidData`).
    pub fn open(&self) -> io::Result<(SnapshotMeta, BufReader<File>)> {
        let mut r = BufReader::new(File::open(&self.path)?);
        let mut first = [0u8; 4];
        r.read_exact(&mut first)?;
        let checked = first == MAGIC[..4];
        let len = if checked {
            let mut rest = [0u8; 8];
            r.read_exact(&mut rest)?;
            if rest[..4] != MAGIC[4..] {
                return Err(damaged("not a snapshot file (bad magic)".into()));
            }
            u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]])
        } else {
            u32::from_be_bytes(first)
        } as usize;
        if len > MAX_HEADER {
            return Err(damaged(format!("snapshot header of {len} bytes")));
        }
        let mut header = vec![0u8; len];
        r.read_exact(&mut header)?;
        if checked {
            let mut crc = [0u8; 4];
            r.read_exact(&mut crc)?;
            let (stored, computed) = (u32::from_be_bytes(crc), crc32fast::hash(&header));
            if stored != computed {
                return Err(damaged(format!(
                    "snapshot header checksum {computed:08x} where {stored:08x} was written"
                )));
            }
        }
        let meta = postcard::from_bytes(&header)
            .map_err(|e| damaged(format!("snapshot header does not decode: {e}")))?;
        Ok((meta, r))
    }

    /// Where the MVCC export starts in the file (after the header, whichever format).
    ///
    /// # Errors
    ///
    /// I/O, or a damaged header.
    pub fn body_start(&self) -> io::Result<u64> {
        use std::io::Seek;
        let (_, mut r) = self.open()?;
        r.stream_position()
    }
}

/// Free space a received snapshot must leave beyond its file and its copy in the database.
pub const RECEIVE_RESERVE: u64 = 64 << 20;

/// The directory of a node's snapshot files while they are sent or received, and the point
/// up to which its database is durable as a snapshot.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// The last log id of the newest snapshot: the state applied up to it is durable in the
    /// database (see [`SnapshotDir::covering`]).
    durable: Arc<tokio::sync::watch::Sender<Option<LogId>>>,
    /// Free space a snapshot written out to be sent must leave on the filesystem.
    keep_free: u64,
}

impl SnapshotDir {
    /// Opens the directory, removing what an interrupted send or reception left.
    ///
    /// # Errors
    ///
    /// I/O.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_owned(),
            durable: Arc::new(tokio::sync::watch::Sender::new(None)),
            keep_free: RECEIVE_RESERVE,
        })
    }

    /// Makes a snapshot written out to be sent leave at least `bytes` free (the node's
    /// `--disk-free-reserve-bytes`: below it, the member raises NOSPACE for the cluster)
    /// besides [`RECEIVE_RESERVE`].
    pub fn keeping_free(mut self, bytes: u64) -> Self {
        self.keep_free = bytes.saturating_add(RECEIVE_RESERVE);
        self
    }

    /// Removes the snapshot file an older release kept (see the module docs), once the
    /// database, verified, holds its state or a later one (`applied`).
    ///
    /// # Errors
    ///
    /// I/O; a file whose header is damaged, or that holds a state past the database's
    /// (which no release wrote: the database lost data), is refused with its path and kept.
    pub fn remove_older_releases_file(&self, applied: Option<LogId>) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "snap") {
                continue;
            }
            let refused = |why: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: {why}: this member's data cannot be trusted; rebuild it from its peers (docs/operations.md, \"Corruption\")",
                        path.display()
                    ),
                )
            };
            let (meta, _) = SnapshotFile::at(path.clone())
                .open()
                .map_err(|e| refused(format!("the snapshot file is damaged ({e})")))?;
            if meta.last_log_id > applied {
                return Err(refused(format!(
                    "the snapshot file holds the state up to {:?}, past the database's {applied:?}",
                    meta.last_log_id
                )));
            }
            tracing::info!(path = %path.display(), "removing the snapshot file of an older release: the database holds its state");
            fs::remove_file(&path)?;
        }
        Ok(())
    }

    /// Records that the database is durable with the state applied up to `log_id`: the
    /// newest snapshot, the log may be purged behind it. An older point changes nothing.
    pub fn made_durable(&self, log_id: Option<LogId>) {
        self.durable.send_if_modified(|durable| {
            let newer = log_id.is_some_and(|l| durable.is_none_or(|d| l > d));
            if newer {
                *durable = log_id;
            }
            newer
        });
    }

    /// Waits until the newest snapshot covers `index`, for up to `timeout`; `false` if it
    /// did not.
    ///
    /// The log may be purged only behind a snapshot the database holds durably. openraft
    /// 0.9 purges the log behind a received snapshot (awaiting the purge in its core task)
    /// while the state machine is still installing it: a node killed in between restarted
    /// with its log purged past its state, which openraft refuses, and purging only up to
    /// the old snapshot instead left a gap in the log. So `LogStore::purge` waits here
    /// first.
    pub async fn covering(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.durable.subscribe();
        let covered = rx.wait_for(|d| d.is_some_and(|d| d.index >= index));
        tokio::time::timeout(timeout, covered)
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// The last log index of the newest snapshot.
    pub fn durable_index(&self) -> Option<u64> {
        self.durable.borrow().map(|l| l.index)
    }

    /// A fresh temporary file name in this directory, for a snapshot being received.
    pub fn temp_path(&self) -> PathBuf {
        self.temp_path_named("incoming")
    }

    /// A fresh temporary file name in this directory, starting with `what`.
    fn temp_path_named(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{what}-{}-{n}.tmp", std::process::id()))
    }

    /// Receives a snapshot body from a peer into a temporary file (removed with the file
    /// returned), writing the header for `meta` in front of it. A body announced larger
    /// than the disk can take is refused before anything is written
    /// ([`SnapshotDir::check_room`]). The body must be exactly `body_len` bytes: a short one
    /// (a sender that gave up) or a longer one (read no further than one byte past it) is
    /// an error, and the partial file is removed. Not synced: the import that follows makes
    /// the database durable, and a crash before leaves nothing to read it back for.
    pub async fn receive<R>(
        &self,
        meta: &SnapshotMeta,
        body_len: u64,
        body: &mut R,
    ) -> io::Result<SnapshotFile>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let started = std::time::Instant::now();
        self.check_room(body_len)?;
        let file = SnapshotFile::temporary(self.temp_path());
        // In large writes: each write of a `tokio::fs::File` is a trip to a blocking thread.
        let mut out = tokio::io::BufWriter::with_capacity(
            1 << 20,
            tokio::fs::File::create(&file.path).await?,
        );
        out.write_all(&header(meta)?).await?;
        let mut body = body.take(body_len.saturating_add(1));
        let (mut got, mut buf) = (0u64, vec![0u8; 256 * 1024]);
        loop {
            let n = body.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).await?;
            got += n as u64;
        }
        out.flush().await?;
        if got < body_len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("snapshot body cut short: {got} of {body_len} bytes"),
            ));
        }
        if got > body_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("snapshot body longer than the {body_len} bytes announced"),
            ));
        }
        log_done("snapshot received", meta, &file, started);
        Ok(file)
    }

    /// Refuses to write `more` bytes of a snapshot to send when the filesystem would be left
    /// with less free space than this directory keeps. A filesystem that cannot tell its
    /// free space is not refused.
    fn check_free(&self, more: u64) -> io::Result<()> {
        let Some(free) = crate::data_dir::disk_free(&self.dir) else {
            return Ok(());
        };
        if free >= more.saturating_add(self.keep_free) {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "writing out a snapshot to send would leave less than {} MiB free in {} ({} MiB now): free space or give this member a larger disk; the follower is sent it again",
                self.keep_free >> 20,
                self.dir.display(),
                free >> 20
            ),
        ))
    }

    /// Refuses a received snapshot of `body_len` bytes whose file and ingested copy would not
    /// fit on the disk beside [`RECEIVE_RESERVE`]: written anyway, it would fill the disk
    /// the node's log and database need (a peer may announce any length). A filesystem
    /// that cannot tell its free space is not refused.
    fn check_room(&self, body_len: u64) -> io::Result<()> {
        let Some(free) = crate::data_dir::disk_free(&self.dir) else {
            return Ok(());
        };
        let need = body_len.saturating_mul(2).saturating_add(RECEIVE_RESERVE);
        if need <= free {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            format!(
                "a snapshot of {body_len} bytes needs {need} bytes free (its file, its copy in \
                 the database and a {} MiB reserve), and {} has {free}: free space or give \
                 this member a larger disk; the leader sends it again",
                RECEIVE_RESERVE >> 20,
                self.dir.display()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta::default()
    }

    fn at(index: u64) -> Option<LogId> {
        Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index))
    }

    /// A peer's body is exactly as long as it announced: a short one or a longer one is
    /// refused, and nothing of it stays in the directory (a peer streaming for ever fills
    /// no disk: reading stops one byte past the announced length).
    #[tokio::test]
    async fn a_body_longer_or_shorter_than_announced_is_refused_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("dir");
        let files = || std::fs::read_dir(dir.path()).expect("dir").count();
        let body = vec![7u8; 1000];
        let longer = snapshots.receive(&meta(), 999, &mut body.as_slice()).await;
        let Err(e) = longer else {
            panic!("a longer body was received");
        };
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let shorter = snapshots.receive(&meta(), 1001, &mut body.as_slice()).await;
        let Err(e) = shorter else {
            panic!("a shorter body was received");
        };
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
        assert_eq!(files(), 0, "partial files left behind");
        let exact = snapshots.receive(&meta(), 1000, &mut body.as_slice()).await;
        let file = exact.expect("the announced length is received");
        assert_eq!(
            file.body_start().expect("header") + 1000,
            std::fs::metadata(&file.path).expect("meta").len()
        );
        let (_, mut read) = file.open().expect("opens");
        let mut back = Vec::new();
        read.read_to_end(&mut back).expect("reads");
        assert_eq!(back, body);
        drop(read);
        drop(file);
        assert_eq!(files(), 0, "a received file outlived its install");
    }

    /// A peer may announce any length: one the disk cannot take is refused before a byte
    /// is read or written (it would otherwise fill the disk the log needs), and says why.
    #[tokio::test]
    async fn a_body_announced_larger_than_the_disk_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("dir");
        let free = crate::data_dir::disk_free(dir.path()).expect("statvfs");
        let mut body: &[u8] = &[7u8; 1000];
        for announced in [free, u64::MAX] {
            let Err(e) = snapshots.receive(&meta(), announced, &mut body).await else {
                panic!("{announced} bytes were accepted on a disk with {free} free");
            };
            assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
            assert!(e.to_string().contains("larger disk"), "{e}");
        }
        assert_eq!(body.len(), 1000, "nothing read");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    /// Opening the directory removes what a crash left (a file being sent or received). An
    /// older release's snapshot file is removed once the database holds its state or a
    /// later one; one past the database, or damaged, is refused and kept.
    #[test]
    fn leftovers_go_at_open_and_an_older_releases_file_once_the_database_covers_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = dir.path().join("00000000000000000007-s7.snap");
        let mut file = header(&meta_at(7)).expect("header");
        file.extend_from_slice(b"body");
        std::fs::write(&old, &file).expect("write");
        for name in ["incoming-1-0.tmp", "notes"] {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let names = || -> Vec<String> {
            let mut names: Vec<String> = (std::fs::read_dir(dir.path()).expect("dir"))
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let snapshots = SnapshotDir::open(dir.path()).expect("dir");
        assert_eq!(names(), ["00000000000000000007-s7.snap", "notes"]);
        assert_eq!(
            snapshots.durable_index(),
            None,
            "no snapshot until one is made"
        );

        let Err(e) = snapshots.remove_older_releases_file(at(6)) else {
            panic!("a snapshot file past the database was removed");
        };
        assert!(e.to_string().contains("past the database"), "{e}");
        std::fs::write(&old, &file[..6]).expect("cut");
        let Err(e) = snapshots.remove_older_releases_file(at(9)) else {
            panic!("a damaged snapshot file was removed");
        };
        assert!(e.to_string().contains("is damaged"), "{e}");
        assert_eq!(names().len(), 2, "both refusals kept the file");
        std::fs::write(&old, &file).expect("whole again");
        snapshots
            .remove_older_releases_file(at(7))
            .expect("the database holds its state");
        assert_eq!(names(), ["notes"]);
    }

    /// The meta of a snapshot at index `i`, named `s<i>`.
    fn meta_at(i: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: at(i),
            snapshot_id: format!("s{i}"),
            ..SnapshotMeta::default()
        }
    }

    /// The durable point only moves forward, and `covering` answers from it: what the log's
    /// purge waits for.
    #[tokio::test]
    async fn the_durable_point_only_moves_forward_and_covers_what_is_behind_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("dir");
        let covers = |index| snapshots.covering(index, std::time::Duration::ZERO);
        assert!(!covers(1).await);
        snapshots.made_durable(at(5));
        snapshots.made_durable(at(3));
        snapshots.made_durable(None);
        assert_eq!(snapshots.durable_index(), Some(5));
        assert!(covers(5).await && covers(1).await);
        assert!(!covers(6).await);
        let later = snapshots.covering(9, std::time::Duration::from_secs(10));
        let (covered, ()) = tokio::join!(later, async { snapshots.made_durable(at(9)) });
        assert!(covered, "a waiting purge goes on once the point passes it");
    }
}
