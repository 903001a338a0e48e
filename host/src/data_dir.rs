//! The data directory's format record: which layout of `db/`, `raft/` and `snapshots/` a
//! data directory holds, so that an etch of another release opens it or refuses clearly.
//!
//! `<data-dir>/FORMAT` is a few lines of text, with a CRC-32 of the lines above it:
//!
//! ```text
//! etch data directory
//! format: 2
//! written-by: etch 0.1.0
//! crc32: 0a1b2c3d
//! ```
//!
//! - A directory with no record and no data is new: the record is written.
//! - A directory with data and no record was written by the release before records existed
//!   (format 1): it is adopted and the record written.
//! - A record of this format opens; an older one is migrated (see [`FORMAT`]) and its
//!   record rewritten; a newer one is refused (this etch cannot read it: run the release
//!   that wrote it, or restore a backup).
//! - A record that does not parse or fails its checksum is refused with its path: the
//!   directory cannot be trusted blindly (docs/operations.md, "Corruption").
//!
//! Bump [`FORMAT`] with any change to what is stored that an older etch would misread, and
//! keep a data directory of the older format as a test fixture (`tests/fixtures`).

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// The layout this etch writes and reads.
///
/// - 1: the first (`db/`, `raft/`, `snapshots/`).
/// - 2: snapshot files checksummed (a magic, the meta's CRC-32, a sealed export). Format 1
///   directories are migrated by rewriting the record alone: this etch reads format-1
///   snapshot files, and the next snapshot it takes is of format 2.
/// - 3: a value stored once: a key's live version is whole in `kv_current` only, with a
///   marker in `kv_versions` that format 2 does not know (`mvcc::layout::VersionRecord`).
///   Format 2 directories are migrated by rewriting the record alone: their records (every
///   version whole) are read as they are.
pub const FORMAT: u32 = 3;
/// The record's file name, in the data directory.
pub const FORMAT_FILE: &str = "FORMAT";
const TITLE: &str = "etch data directory";

/// Why a data directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{path}: data directory format {found} (written by {by}) is newer than this etch reads (format {FORMAT}): run that release of etch, or restore a backup into an empty data directory"
    )]
    Newer {
        path: String,
        found: u32,
        by: String,
    },
    #[error(
        "{path}: the format record is damaged ({why}); the data directory cannot be trusted: rebuild this member from its peers (docs/operations.md, \"Corruption\")"
    )]
    Damaged { path: String, why: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Checks the data directory's format record, writing it for a new directory or one from
/// before records existed. Called before anything else in the directory is opened.
///
/// # Errors
///
/// A newer or damaged record, or an I/O failure.
/// Bytes an unprivileged process may still write on the filesystem holding `dir`; `None`
/// when the filesystem cannot tell.
pub fn disk_free(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

pub fn check_or_init(dir: &Path) -> Result<(), Error> {
    let path = dir.join(FORMAT_FILE);
    let io_err = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let (found, by) = parse(&bytes).map_err(|why| Error::Damaged {
                path: path.display().to_string(),
                why,
            })?;
            if found > FORMAT {
                return Err(Error::Newer {
                    path: path.display().to_string(),
                    found,
                    by,
                });
            }
            if found < FORMAT {
                // Every older format is read as it is (see FORMAT): only the record moves.
                write(dir).map_err(io_err)?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => write(dir).map_err(io_err),
        Err(e) => Err(io_err(e)),
    }
}

/// The record's text for `format`, written by this release (public for tests that make a
/// record of another format).
pub fn render(format: u32) -> String {
    let body = format!(
        "{TITLE}\nformat: {format}\nwritten-by: etch {}\n",
        env!("CARGO_PKG_VERSION")
    );
    let crc = crc32fast::hash(body.as_bytes());
    format!("{body}crc32: {crc:08x}\n")
}

/// Writes the record durably: a temporary file, fsynced, renamed into place, the directory
/// fsynced.
fn write(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(render(FORMAT).as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(FORMAT_FILE))?;
    fs::File::open(dir)?.sync_all()
}

/// The format and writer a record names, once its checksum holds.
fn parse(bytes: &[u8]) -> Result<(u32, String), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let crc_at = text
        .rfind("crc32: ")
        .ok_or_else(|| "no crc32 line".to_owned())?;
    let (body, crc_line) = text.split_at(crc_at);
    let stored = u32::from_str_radix(crc_line["crc32: ".len()..].trim_end(), 16)
        .map_err(|_| "the crc32 line does not parse".to_owned())?;
    let computed = crc32fast::hash(body.as_bytes());
    if stored != computed {
        return Err(format!(
            "checksum {computed:08x} where {stored:08x} was recorded"
        ));
    }
    let mut lines = body.lines();
    if lines.next() != Some(TITLE) {
        return Err(format!("the first line is not {TITLE:?}"));
    }
    let field = |line: Option<&str>, name: &str| {
        (line.and_then(|l| l.strip_prefix(name)).map(str::to_owned))
            .ok_or_else(|| format!("no {name:?} line"))
    };
    let format = field(lines.next(), "format: ")?
        .parse()
        .map_err(|_| "the format is not a number".to_owned())?;
    let by = field(lines.next(), "written-by: ")?;
    Ok((format, by))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_a_record_that_reads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        check_or_init(&data).expect("a new directory");
        let text = fs::read_to_string(data.join(FORMAT_FILE)).expect("the record");
        assert!(
            text.starts_with(&format!("etch data directory\nformat: {FORMAT}\n")),
            "{text}"
        );
        check_or_init(&data).expect("its own record");
    }

    #[test]
    fn an_older_record_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FORMAT_FILE), render(1)).expect("write");
        check_or_init(dir.path()).expect("format 1 opens");
        let text = fs::read_to_string(dir.path().join(FORMAT_FILE)).expect("the record");
        assert!(text.contains(&format!("format: {FORMAT}\n")), "{text}");
    }

    #[test]
    fn every_damaged_record_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = render(FORMAT).into_bytes();
        let mut damaged: Vec<Vec<u8>> = (0..good.len())
            .map(|i| {
                let mut b = good.clone();
                b[i] ^= 0x04;
                b
            })
            .collect();
        damaged.extend((0..good.len() - 1).map(|n| good[..n].to_vec()));
        for bytes in damaged {
            fs::write(dir.path().join(FORMAT_FILE), &bytes).expect("write");
            match check_or_init(dir.path()) {
                Err(Error::Damaged { path, .. }) => assert!(path.ends_with(FORMAT_FILE)),
                other => panic!(
                    "{:?} was not refused as damaged: {other:?}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
    }

    #[test]
    fn a_newer_format_is_refused_and_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FORMAT_FILE), render(FORMAT + 1)).expect("write");
        match check_or_init(dir.path()) {
            Err(e @ Error::Newer { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&format!("format {FORMAT}")) && text.contains("restore a backup"),
                    "{text}"
                );
            }
            other => panic!("a newer format was not refused: {other:?}"),
        }
    }
}
