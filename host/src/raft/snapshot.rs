//! Snapshot files.
//!
//! A snapshot is one file in `<data-dir>/snapshots`: the magic `ETCHSNP2`, a 4-byte
//! big-endian length, the postcard [`SnapshotMeta`] (last included log id, membership, id)
//! and its CRC-32, then the MVCC export stream (sealed with a CRC-32 of its own, see
//! `mvcc::snapshot`). Files of the release before start with the length (no magic, no
//! checksum of the meta) and are still read. [`SnapshotFile::verify`] reads a whole file
//! and checks both checksums: a node does so for its snapshot when it starts.
//! Files are written under a temporary name and renamed into place, so a crash never leaves a
//! half snapshot that looks whole. Only the newest snapshot is kept.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::types::{LogId, SnapshotMeta};

/// A snapshot on disk; what openraft moves around as `SnapshotData`.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: PathBuf,
    /// For the current snapshot handed out ([`SnapshotDir::current_with_meta`]): `path` is
    /// a link of its own to the file, removed with this, so that a newer snapshot kept
    /// meanwhile (which removes the older file) does not take the file from a send.
    _link: Option<Link>,
}

/// A hard link of a snapshot file, removed when dropped.
#[derive(Debug)]
struct Link(PathBuf);

impl Drop for Link {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove a snapshot link");
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
        SnapshotFile { path, _link: None }
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

    /// Reads the whole file: the header's checksum, every record of the export and its
    /// seal, and nothing after it.
    ///
    /// # Errors
    ///
    /// I/O, or a damaged or truncated file (`InvalidData`, saying what is wrong).
    pub fn verify(&self) -> io::Result<SnapshotMeta> {
        let (meta, mut r) = self.open()?;
        crate::mvcc::scan(&mut r).map_err(|e| damaged(e.to_string()))?;
        if r.read(&mut [0u8; 1])? != 0 {
            return Err(damaged("bytes after the end of the snapshot".into()));
        }
        Ok(meta)
    }
}

/// A snapshot file is synced every this many bytes as it is written or received. A snapshot
/// of a large state written whole and then synced at once put hundreds of megabytes in
/// front of the Raft log's next fsync, and every write waited behind them (the suite's
/// grow: puts of 200–280 ms while a snapshot was written, under 60 ms otherwise).
const SYNC_EVERY: usize = 8 * 1024 * 1024;

/// Bytes written since the last sync.
#[derive(Default)]
struct Unsynced(usize);

impl Unsynced {
    /// Counts `n` more bytes; `true` when the file should be synced now.
    fn wrote(&mut self, n: usize) -> bool {
        self.0 += n;
        let due = self.0 >= SYNC_EVERY;
        if due {
            self.0 = 0;
        }
        due
    }
}

/// A file synced every [`SYNC_EVERY`] bytes as it is written.
struct Paced {
    file: File,
    unsynced: Unsynced,
}

impl Write for Paced {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        if self.unsynced.wrote(n) {
            self.file.sync_data()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Free space a received snapshot must leave beyond its file and its copy in the database.
pub const RECEIVE_RESERVE: u64 = 64 << 20;

/// The directory holding a node's snapshots.
#[derive(Clone, Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    /// The last log id of the current snapshot, once its file is in place and the state it
    /// holds is on disk (see [`SnapshotDir::covering`]).
    durable: Arc<tokio::sync::watch::Sender<Option<LogId>>>,
    /// Held while a snapshot becomes current: a build writes beside apply and installs.
    keeping: Arc<std::sync::Mutex<()>>,
}

impl SnapshotDir {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        // Leftovers of interrupted writes or receptions.
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        let snapshots = SnapshotDir {
            dir: dir.to_owned(),
            durable: Arc::new(tokio::sync::watch::Sender::new(None)),
            keeping: Arc::default(),
        };
        // Only its meta: nothing replaces it yet, and nothing sends it (no link needed).
        if let Some(file) = snapshots.current()? {
            snapshots.durable.send_replace(file.open()?.0.last_log_id);
        }
        Ok(snapshots)
    }

    /// Waits until the snapshot on disk covers `index`, for up to `timeout`; `false` if it
    /// did not.
    ///
    /// The log may be purged only behind a snapshot on disk. openraft 0.9 purges the log
    /// behind a received snapshot (awaiting the purge in its core task) while the state
    /// machine is still installing it: a node killed in between restarted with its log
    /// purged past its snapshot, which openraft refuses, and purging only up to the old
    /// snapshot instead left a gap in the log. So `LogStore::purge` waits here first.
    pub async fn covering(&self, index: u64, timeout: std::time::Duration) -> bool {
        let mut rx = self.durable.subscribe();
        let covered = rx.wait_for(|d| d.is_some_and(|d| d.index >= index));
        tokio::time::timeout(timeout, covered)
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// The last log index of the current snapshot, once its file is in place.
    pub fn durable_index(&self) -> Option<u64> {
        self.durable.borrow().map(|l| l.index)
    }

    /// The current snapshot as openraft sees it: its meta and its file.
    ///
    /// # Errors
    ///
    /// I/O, or a damaged header.
    pub fn current_with_meta(&self) -> io::Result<Option<(SnapshotMeta, SnapshotFile)>> {
        // Not while a newer snapshot replaces it: `keep` removes the older file, and a read
        // between the listing and the open failed with ENOENT, which openraft takes for a
        // broken disk and stops the node (found by the fault soak).
        let _one = self
            .keeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(file) = self.current()? else {
            return Ok(None);
        };
        #[cfg(test)]
        tests::between_listing_and_open();
        // A link of its own: a send streams the file long after this returns, and a newer
        // snapshot kept meanwhile removes the file's own name. Named as a temporary file,
        // so that one left by a crash is removed when the directory is opened.
        let link = self.temp_path_named("sending");
        let file = match fs::hard_link(&file.path, &link) {
            Ok(()) => SnapshotFile {
                path: link.clone(),
                _link: Some(Link(link)),
            },
            // A filesystem without hard links: the file by its own name, as a send that
            // finds it gone fails and openraft sends the newer one.
            Err(e) => {
                tracing::debug!(error = %e, "cannot link the current snapshot");
                file
            }
        };
        let (meta, _) = file.open()?;
        Ok(Some((meta, file)))
    }

    /// The size of the current snapshot's file (0 without one).
    pub fn current_len(&self) -> u64 {
        let current = self.current().ok().flatten();
        current
            .and_then(|file| fs::metadata(&file.path).ok())
            .map_or(0, |m| m.len())
    }

    /// A fresh temporary path in this directory, for a snapshot being written or received.
    pub fn temp_path(&self) -> PathBuf {
        self.temp_path_named("incoming")
    }

    /// A fresh temporary path in this directory whose name starts with `what`.
    fn temp_path_named(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{what}-{}-{n}.tmp", std::process::id()))
    }

    /// Writes a new snapshot: the header for `meta`, then whatever `body` writes. A write
    /// that fails removes what it wrote (a disk that filled up gets its room back).
    pub fn write(
        &self,
        meta: &SnapshotMeta,
        body: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<SnapshotFile> {
        let tmp = self.temp_path();
        let written = (|| {
            let file = File::create(&tmp)?;
            let mut w = BufWriter::new(Paced {
                file,
                unsynced: Unsynced::default(),
            });
            w.write_all(&header(meta)?)?;
            body(&mut w)?;
            let file = w.into_inner().map_err(|e| e.into_error())?.file;
            file.sync_data()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.keep(&SnapshotFile::at(tmp), meta)
    }

    /// Receives a snapshot body from a peer into a temporary file, writing the header for
    /// `meta` in front of it. The file becomes current only when it is installed. A body
    /// announced larger than the disk can take is refused before anything is written
    /// ([`SnapshotDir::check_room`]).
    /// The body must be exactly `body_len` bytes: a short one (a sender that gave up) or a
    /// longer one (read no further than one byte past it) is an error, and the partial file
    /// is removed.
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
        self.check_room(body_len)?;
        let tmp = self.temp_path();
        let received = async {
            let mut file = tokio::fs::File::create(&tmp).await?;
            file.write_all(&header(meta)?).await?;
            // Synced as it arrives, as a snapshot written here is (`SYNC_EVERY`).
            let mut body = body.take(body_len.saturating_add(1));
            let (mut got, mut unsynced) = (0u64, Unsynced::default());
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = body.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                file.write_all(&buf[..n]).await?;
                got += n as u64;
                if unsynced.wrote(n) {
                    file.sync_data().await?;
                }
            }
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
            file.sync_data().await?;
            Ok::<_, io::Error>(())
        };
        match received.await {
            Ok(()) => Ok(SnapshotFile::at(tmp)),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
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

    /// Makes `file` (written or received) the current snapshot under its final name and
    /// removes every other snapshot; unless the current one is newer (a build that began
    /// before a newer snapshot was installed), which then stays, and `file` goes.
    pub fn keep(&self, file: &SnapshotFile, meta: &SnapshotMeta) -> io::Result<SnapshotFile> {
        let _one = self
            .keeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let newer = *self.durable.borrow();
        if newer.is_some_and(|newer| meta.last_log_id.is_none_or(|l| l < newer))
            && let Some(current) = self.current()?
        {
            tracing::info!(
                dropped = ?meta.last_log_id,
                current = ?newer,
                "a newer snapshot is in place: dropping the one just written"
            );
            if file.path != current.path {
                fs::remove_file(&file.path)?;
            }
            return Ok(current);
        }
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let path = self
            .dir
            .join(format!("{index:020}-{}.snap", meta.snapshot_id));
        if file.path != path {
            fs::rename(&file.path, &path)?;
            // The rename must survive a machine crash before the log behind it is purged.
            File::open(&self.dir)?.sync_all()?;
        }
        self.durable.send_if_modified(|durable| {
            let newer = durable.is_none_or(|d| meta.last_log_id.is_some_and(|l| l > d));
            if newer {
                *durable = meta.last_log_id;
            }
            newer
        });
        for entry in fs::read_dir(&self.dir)? {
            let other = entry?.path();
            if other != path && other.extension().is_some_and(|e| e == "snap") {
                fs::remove_file(&other)?;
            }
        }
        Ok(SnapshotFile::at(path))
    }

    /// The newest snapshot, if any.
    pub fn current(&self) -> io::Result<Option<SnapshotFile>> {
        let mut newest: Option<PathBuf> = None;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "snap")
                && newest.as_ref().is_none_or(|n| path > *n)
            {
                newest = Some(path);
            }
        }
        Ok(newest.map(SnapshotFile::at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta::default()
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

    /// The meta of a snapshot at index `i`, named `s<i>`.
    fn meta_at(i: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), i)),
            snapshot_id: format!("s{i}"),
            ..SnapshotMeta::default()
        }
    }

    /// A snapshot directory holding one snapshot, `s1`, whose body is `body`.
    fn one_snapshot(body: &[u8]) -> (tempfile::TempDir, SnapshotDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let snapshots = SnapshotDir::open(dir.path()).expect("dir");
        snapshots
            .write(&meta_at(1), |w| w.write_all(body))
            .expect("first");
        (dir, snapshots)
    }

    /// openraft takes the current snapshot to send it, and streams it later: a newer
    /// snapshot kept meanwhile removes the older file, which the send still reads in full
    /// (it used to reopen the file by its name, fail, and have openraft send again). Its
    /// link goes with it.
    #[test]
    fn a_snapshot_handed_out_for_sending_outlives_a_newer_one_and_leaves_nothing() {
        let (dir, snapshots) = one_snapshot(b"first body");
        let (meta, sending) = (snapshots.current_with_meta())
            .expect("reads")
            .expect("one");
        assert_eq!(meta.snapshot_id, "s1");
        snapshots
            .write(&meta_at(2), |w| w.write_all(b"second body"))
            .expect("newer kept");
        let names = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = (fs::read_dir(dir).expect("dir"))
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let snaps = names(dir.path());
        assert_eq!(
            snaps.iter().filter(|n| n.ends_with(".snap")).count(),
            1,
            "{snaps:?}"
        );
        // What the send streams: the older snapshot, whole.
        let (meta, mut body) = sending.open().expect("the older file still reads");
        assert_eq!(meta.snapshot_id, "s1");
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes).expect("body");
        assert_eq!(bytes, b"first body");
        drop(body);
        drop(sending);
        let left = names(dir.path());
        assert_eq!(left.len(), 1, "only the newer snapshot: {left:?}");
        assert!(left[0].ends_with("-s2.snap"), "{left:?}");
    }

    /// Held by the test below between `current_with_meta`'s listing and its open.
    static BETWEEN: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>> =
        std::sync::Mutex::new(None);

    /// Waits, when the test below asks, until it says go.
    pub(super) fn between_listing_and_open() {
        let waiting = BETWEEN.lock().expect("lock").take();
        if let Some(go) = waiting {
            let _ = go.recv_timeout(std::time::Duration::from_secs(5));
        }
    }

    /// The current snapshot is read while a newer one replaces it, as openraft asks for it
    /// to send to a follower while a build completes: the reader between its listing and
    /// its open, the newer snapshot kept meanwhile. Without the lock the older file was
    /// gone by the open (`ENOENT`, taken by openraft for a broken disk: the soak saw the
    /// node stop).
    #[test]
    fn the_current_snapshot_is_never_missing_while_a_newer_one_replaces_it() {
        let (_dir, snapshots) = one_snapshot(b"body");
        let (go, wait) = std::sync::mpsc::channel();
        *BETWEEN.lock().expect("lock") = Some(wait);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| snapshots.current_with_meta());
            // Once the reader is between its listing and its open (it took the receiver).
            while BETWEEN.lock().expect("lock").is_some() {
                std::thread::yield_now();
            }
            let (done, written) = std::sync::mpsc::channel();
            let (dir, newer) = (&snapshots, meta_at(2));
            let writer = scope.spawn(move || {
                let kept = dir.write(&newer, |w| w.write_all(b"body"));
                let _ = done.send(());
                kept
            });
            // The writer replaces the file, unless it waits for the reader (then this gives
            // up after a while and lets the reader go first).
            let _ = written.recv_timeout(std::time::Duration::from_millis(200));
            go.send(()).expect("the reader waits");
            let (meta, _) = (reader.join().expect("reader"))
                .expect("the current snapshot reads")
                .expect("there is one");
            assert_eq!(meta.snapshot_id, "s1");
            writer.join().expect("writer").expect("newer kept");
        });
        let (meta, _) = (snapshots.current_with_meta())
            .expect("reads")
            .expect("one");
        assert_eq!(meta.snapshot_id, "s2");
    }
}
