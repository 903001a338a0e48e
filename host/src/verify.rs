//! Verifying a node's fjall databases when it starts: corruption is found before the node
//! serves, and named.
//!
//! fjall checks the checksum of every block it reads from disk, and of a table's meta and
//! index blocks when it opens it, but a flipped bit in a data block or a filter of a table
//! surfaces only when a read or a compaction reaches it (a compaction that meets one
//! poisons the database), and it never checks the manifests' own checksums (measured on
//! fjall 3.1.13: `docs/operations.md`, "Corruption"). So at start every table file of every
//! keyspace is read whole and its xxh3-128 compared with the one its manifest recorded when
//! the table was written, and each keyspace's manifest (`v<N>`) with the checksum in its
//! `current` file. That reads the whole data set once (about a second per GiB here).
//!
//! The table list and checksums come from fjall's `#[doc(hidden)]` tree API
//! (`Keyspace::tree`, `AbstractTree::current_version`): stable within the fjall version
//! pinned in `Cargo.lock`, and exercised by the tests, so an upgrade that moves them fails to
//! build rather than to verify.

use std::io::Read;
use std::path::{Path, PathBuf};

use fjall::AbstractTree;

/// What a verification read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verified {
    pub tables: u64,
    pub bytes: u64,
}

/// A damaged file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {what}")]
pub struct Damaged {
    pub path: PathBuf,
    pub what: String,
}

/// Reads every table of every keyspace of `db`, opened from `dir`, and every manifest
/// under `dir` (fjall's own keyspace of keyspace names included, whose tables fjall reads
/// and checks at open).
///
/// # Errors
///
/// The first damaged or unreadable file.
pub fn database(db: &fjall::Database, dir: &Path) -> Result<Verified, Damaged> {
    let keyspaces = dir.join("keyspaces");
    let listed = std::fs::read_dir(&keyspaces).map_err(|e| Damaged {
        path: keyspaces.clone(),
        what: e.to_string(),
    })?;
    for entry in listed {
        let entry = entry.map_err(|e| Damaged {
            path: keyspaces.clone(),
            what: e.to_string(),
        })?;
        if entry.path().is_dir() {
            manifest(&entry.path())?;
        }
    }
    let mut verified = Verified::default();
    for name in db.list_keyspace_names() {
        let keyspace = db
            .keyspace(&name, fjall::KeyspaceCreateOptions::default)
            .map_err(|e| Damaged {
                path: PathBuf::from(&*name),
                what: format!("keyspace {name:?} does not open: {e}"),
            })?;
        for table in keyspace.tree.current_version().iter_tables() {
            let (hash, bytes) = xxh3_128(&table.path).map_err(|e| Damaged {
                path: table.path.to_path_buf(),
                what: format!(
                    "table {} of keyspace {name:?} does not read: {e}",
                    table.id()
                ),
            })?;
            let recorded = table.checksum().into_u128();
            if hash != recorded {
                return Err(Damaged {
                    path: table.path.to_path_buf(),
                    what: format!(
                        "table {} of keyspace {name:?} is damaged (xxh3 {hash:032x} where {recorded:032x} was recorded)",
                        table.id()
                    ),
                });
            }
            verified.tables += 1;
            verified.bytes += bytes;
        }
    }
    Ok(verified)
}

/// Checks a keyspace's manifest against its `current` file: the manifest id (8 bytes, little
/// endian) and its xxh3-128 (16 bytes, little endian).
fn manifest(keyspace: &Path) -> Result<(), Damaged> {
    let current = keyspace.join("current");
    let damaged = |path: &Path, what: String| Damaged {
        path: path.to_path_buf(),
        what,
    };
    let bytes = std::fs::read(&current).map_err(|e| damaged(&current, e.to_string()))?;
    let (Some(id), Some(recorded)) = (bytes.get(..8), bytes.get(8..24)) else {
        return Err(damaged(
            &current,
            format!("{} bytes, too short", bytes.len()),
        ));
    };
    let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
    let recorded = u128::from_le_bytes(recorded.try_into().unwrap_or_default());
    let path = keyspace.join(format!("v{id}"));
    let (hash, _) = xxh3_128(&path).map_err(|e| damaged(&path, e.to_string()))?;
    if hash != recorded {
        return Err(damaged(
            &path,
            format!(
                "the manifest is damaged (xxh3 {hash:032x} where {recorded:032x} was recorded)"
            ),
        ));
    }
    Ok(())
}

/// The xxh3-128 of a file and its length, read in 256 KiB pieces.
fn xxh3_128(path: &Path) -> std::io::Result<(u128, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3Default::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.digest128(), total));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with a few flushed tables in one keyspace.
    fn with_tables() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        let ks = db
            .keyspace("data", fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        for round in 0..3 {
            for i in 0..200 {
                ks.insert(format!("key{round}-{i:04}"), vec![b'v'; 100])
                    .expect("insert");
            }
            ks.rotate_memtable_and_wait().expect("flush");
        }
        let tables: Vec<PathBuf> = (ks.tree.current_version().iter_tables())
            .map(|t| t.path.to_path_buf())
            .collect();
        let whole = database(&db, dir.path()).expect("whole");
        assert_eq!(whole.tables, tables.len() as u64);
        drop(ks);
        drop(db);
        (dir, tables)
    }

    fn reopened(dir: &Path) -> Result<Verified, String> {
        let db = fjall::Database::builder(dir)
            .open()
            .map_err(|e| format!("open: {e}"))?;
        database(&db, dir).map_err(|e| e.to_string())
    }

    #[test]
    fn a_flipped_bit_anywhere_in_a_table_is_found_and_named() {
        let (dir, tables) = with_tables();
        assert!(tables.len() >= 3, "{tables:?}");
        let table = &tables[1];
        let good = std::fs::read(table).expect("table");
        for at in (0..good.len()).step_by(97) {
            let mut bad = good.clone();
            bad[at] ^= 0x08;
            std::fs::write(table, &bad).expect("flip");
            match reopened(dir.path()) {
                // fjall itself refuses some flips at open (meta, index).
                Err(e) if e.starts_with("open:") => {}
                Err(e) => assert!(e.contains(&table.display().to_string()), "{e}"),
                Ok(v) => panic!("a flip at byte {at} of {} went unseen: {v:?}", good.len()),
            }
        }
        std::fs::write(table, &good).expect("restore");
        assert_eq!(
            reopened(dir.path()).expect("whole again").tables,
            tables.len() as u64
        );
    }

    #[test]
    fn a_flipped_bit_in_a_manifest_is_found() {
        let (dir, _) = with_tables();
        let keyspaces = dir.path().join("keyspaces");
        let mut flipped = 0;
        for entry in std::fs::read_dir(&keyspaces).expect("keyspaces") {
            let ks = entry.expect("entry").path();
            let current = std::fs::read(ks.join("current")).expect("current");
            let id = u64::from_le_bytes(current[..8].try_into().expect("8 bytes"));
            let manifest = ks.join(format!("v{id}"));
            let good = std::fs::read(&manifest).expect("manifest");
            let mut bad = good.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x01;
            std::fs::write(&manifest, &bad).expect("flip");
            match reopened(dir.path()) {
                Err(e) => assert!(
                    e.contains("open:") || e.contains(&manifest.display().to_string()),
                    "{e}"
                ),
                Ok(v) => panic!("a flip in {} went unseen: {v:?}", manifest.display()),
            }
            std::fs::write(&manifest, &good).expect("restore");
            flipped += 1;
        }
        assert!(flipped >= 2, "{flipped} keyspaces");
        reopened(dir.path()).expect("whole again");
    }
}
