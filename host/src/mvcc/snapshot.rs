//! Export and import of the whole mvcc state, for Raft snapshots.
//!
//! The stream is a sequence of records, each a 4-byte big-endian length followed by that many
//! bytes of postcard (the framing of the wire protocol): one [`Record::Header`], then one
//! [`Record::Entry`] per stored key-value of the state keyspaces (`kv_*`, leases, plugins:
//! [`super::layout::Spaces::all`]; from one fjall snapshot, keyspace by keyspace, in key
//! order), then [`Record::Sealed`] with the number of entries and the CRC-32 of every byte
//! before it, so a truncated stream or a flipped bit (on a disk, in a transfer) is detected
//! before anything imported is used. Streams of format 1 (the release before) end with
//! [`Record::End`] and carry no checksum; they are still read. The `applied` blob is not
//! exported: the importer supplies its own. Neither side holds more than one record (or one
//! bounded batch) in memory.
//!
//! Import fills a fresh generation of the keyspaces and switches to it in one atomic batch
//! (see [`Store::import`]): the state is the old one or the new one, never a mix.

use std::io::{Read, Write};

use etch_proto::Revision;
use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::layout::{META_APPLIED, ROOT_GENERATION, SPACE_COUNT, Spaces, encode};
use super::store::Store;

/// Version of the stream format written: 2 seals the stream with a CRC-32.
const FORMAT: u32 = 2;
/// The format before, still read: ends with [`Record::End`], no checksum.
const FORMAT_UNSEALED: u32 = 1;
/// Largest record accepted on import (a key is at most 64 KiB; values are far below this).
const MAX_RECORD: usize = 64 << 20;

#[derive(Debug, Serialize, Deserialize)]
enum Record<'a> {
    Header {
        format: u32,
    },
    Entry {
        /// Index into [`super::layout::Spaces::all`].
        space: u8,
        #[serde(with = "serde_bytes", borrow)]
        key: &'a [u8],
        #[serde(with = "serde_bytes", borrow)]
        value: &'a [u8],
    },
    /// The end of a format-1 stream.
    End {
        entries: u64,
    },
    /// The end of a format-2 stream: the entries and the CRC-32 of every byte before this
    /// record (length prefixes included).
    Sealed {
        entries: u64,
        crc32: u32,
    },
}

/// One consistent point of the mvcc state, held open while it is written out: what
/// [`Store::export`] and a backup (`crate::backup`) read.
pub struct Export {
    spaces: std::sync::Arc<Spaces>,
    snap: fjall::Snapshot,
}

impl Export {
    /// `(revision, compact_revision)` at this point.
    ///
    /// # Errors
    ///
    /// A storage failure or a meta record that does not decode.
    pub fn counters(&self) -> Result<(Revision, Revision)> {
        self.spaces.counters(&self.snap)
    }

    /// Makes the database durable as it is now, this point included: a Raft snapshot's
    /// state is on disk before the log behind it may be purged (the state machine writes
    /// no fsync of its own; the log is its record until then).
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn persist(&self) -> Result<()> {
        Ok(self.spaces.db.persist(fjall::PersistMode::SyncAll)?)
    }

    /// Writes every record of the mvcc keyspaces at this point into `w`.
    ///
    /// # Errors
    ///
    /// A storage failure, or `w` failing.
    pub fn write(&self, w: &mut dyn Write) -> Result<()> {
        let spaces = &self.spaces;
        let crc = &mut crc32fast::Hasher::new();
        write_record(w, crc, &Record::Header { format: FORMAT })?;
        let mut entries = 0u64;
        for (space, keyspace) in (0u8..).zip(spaces.all()) {
            let is_meta = std::ptr::eq(keyspace, &spaces.meta);
            for item in fjall::Readable::iter(&self.snap, keyspace) {
                let (key, value) = item.into_inner()?;
                if is_meta && &*key == META_APPLIED {
                    continue;
                }
                let (key, value) = (&*key, &*value);
                write_record(w, crc, &Record::Entry { space, key, value })?;
                entries += 1;
            }
        }
        let crc32 = crc.clone().finalize();
        write_record(w, crc, &Record::Sealed { entries, crc32 })?;
        Ok(w.flush()?)
    }
}

/// What a scan of an export found (see [`scan`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scanned {
    /// Every record of every keyspace.
    pub entries: u64,
    /// Records of the current key space: the live keys.
    pub current_keys: u64,
}

/// Reads a whole export from `r` and checks its structure (header, records of known
/// keyspaces, the end record's count), storing nothing: how a backup is verified.
///
/// # Errors
///
/// `r` failing, or a stream that is truncated or malformed.
pub fn scan(r: &mut dyn Read) -> Result<Scanned> {
    let mut scanned = Scanned::default();
    read_records(r, |space, _, _| {
        scanned.entries += 1;
        scanned.current_keys += u64::from(space == 0);
        Ok(())
    })?;
    Ok(scanned)
}

/// Reads the header, every entry (handed to `entry` with its keyspace index, checked to be
/// one of [`Spaces::all`]) and the end record, whose count (and, from format 2, checksum)
/// must match.
fn read_records(
    r: &mut dyn Read,
    mut entry: impl FnMut(usize, &[u8], &[u8]) -> Result<()>,
) -> Result<u64> {
    let mut buf = Vec::new();
    let crc = &mut crc32fast::Hasher::new();
    let sealed = match read_record(r, crc, &mut buf)? {
        Record::Header { format: FORMAT } => true,
        Record::Header {
            format: FORMAT_UNSEALED,
        } => false,
        other => return Err(Error::Corrupt(format!("bad snapshot header {other:?}"))),
    };
    let mut entries = 0u64;
    loop {
        let before = crc.clone().finalize();
        match read_record(r, crc, &mut buf)? {
            Record::Entry { space, key, value } if usize::from(space) < SPACE_COUNT => {
                entry(usize::from(space), key, value)?;
                entries += 1;
            }
            Record::End { entries: n } if !sealed && n == entries => return Ok(entries),
            Record::Sealed { entries: n, crc32 } if sealed && n == entries => {
                if crc32 != before {
                    return Err(Error::Corrupt(format!(
                        "snapshot checksum {before:08x} where {crc32:08x} was written: the data is damaged"
                    )));
                }
                return Ok(entries);
            }
            other => {
                return Err(Error::Corrupt(format!(
                    "unexpected snapshot record {other:?}"
                )));
            }
        }
    }
}

impl Store {
    /// Opens a consistent point of the whole mvcc state, to be written out.
    pub fn begin_export(&self) -> Export {
        let spaces = self.spaces();
        let snap = super::gate::snapshot(&spaces.db);
        Export { spaces, snap }
    }

    /// Writes every record of the mvcc keyspaces, from one consistent snapshot, into `w`.
    ///
    /// # Errors
    ///
    /// A storage failure, or `w` failing.
    pub fn export(&self, w: &mut dyn Write) -> Result<()> {
        self.begin_export().write(w)
    }

    /// Replaces the whole mvcc state with an export read from `r`, records `applied` and
    /// reloads the revision counters.
    ///
    /// The records go into the keyspaces of the next generation, which nothing reads yet;
    /// one last batch writes `applied` there and switches the root record to them, and the
    /// database is made durable before the live handles move over. Readers and watchers
    /// therefore see the old state until the switch and the new one after it, and a crash
    /// at any point leaves one of the two (the leftovers of the other are deleted when the
    /// store next opens).
    ///
    /// # Errors
    ///
    /// A storage failure, or a stream that fails, is truncated or malformed (the live state
    /// is then untouched).
    pub fn import(&self, r: &mut dyn Read, applied: &[u8]) -> Result<()> {
        let _guard = self.lock();
        let live = self.spaces();
        let db = &live.db;
        let generation = live.generation + 1;
        // A failed import earlier in this run may have left records there.
        Spaces::delete_generation(db, generation)?;
        let next = Spaces::open(db, generation)?;
        let all = next.all();
        // Each keyspace's records, in key order as exported, are ingested: written
        // straight into tables, past the journal and the memtables (a catching-up member
        // wrote each record twice, and paced its memtables, before). Ingestion requires
        // keys in ascending order, and asserts it: a stream out of order is refused first.
        let (mut ingesting, mut space_now) = (None, None::<usize>);
        let mut last_key = Vec::new();
        read_records(r, |space, key, value| {
            if space_now == Some(space) && key <= last_key.as_slice() {
                return Err(Error::Corrupt(format!(
                    "snapshot keys out of order in keyspace {space}"
                )));
            }
            if space_now != Some(space) {
                if space_now.is_some_and(|now| now > space) {
                    return Err(Error::Corrupt(format!(
                        "snapshot keyspace {space} after a later one"
                    )));
                }
                let next = all[space].start_ingestion()?;
                if let Some(done) = ingesting.replace(next) {
                    done.finish()?;
                }
                space_now = Some(space);
            }
            last_key.clear();
            last_key.extend_from_slice(key);
            if let Some(ingestion) = ingesting.as_mut() {
                ingestion.write(key, value)?;
            }
            Ok(())
        })?;
        if let Some(done) = ingesting {
            done.finish()?;
        }
        let mut batch = db.batch();
        batch.insert(&next.meta, META_APPLIED, applied);
        batch.insert(self.root(), ROOT_GENERATION, encode(&generation)?);
        super::gate::commit(batch)?;
        // The Raft log behind the snapshot is purged after this returns: the new state must
        // be on disk first.
        db.persist(fjall::PersistMode::SyncAll)?;
        let old = self.switch_spaces(next);
        self.reload_counters()?;
        Spaces::delete_generation(db, old.generation)
    }
}

fn write_record(w: &mut dyn Write, crc: &mut crc32fast::Hasher, record: &Record<'_>) -> Result<()> {
    let body = encode(record)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len as usize <= MAX_RECORD)
        .ok_or_else(|| Error::Corrupt(format!("snapshot record of {} bytes", body.len())))?;
    crc.update(&len.to_be_bytes());
    crc.update(&body);
    w.write_all(&len.to_be_bytes())?;
    Ok(w.write_all(&body)?)
}

fn read_record<'b>(
    r: &mut dyn Read,
    crc: &mut crc32fast::Hasher,
    buf: &'b mut Vec<u8>,
) -> Result<Record<'b>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    crc.update(&len);
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_RECORD {
        return Err(Error::Corrupt(format!("snapshot record of {len} bytes")));
    }
    buf.resize(len, 0);
    r.read_exact(buf)?;
    crc.update(buf);
    decode_borrowed(buf)
}

fn decode_borrowed(buf: &[u8]) -> Result<Record<'_>> {
    Ok(postcard::from_bytes(buf)?)
}

#[cfg(test)]
#[path = "snapshot_test.rs"]
mod tests;
