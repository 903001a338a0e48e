//! HashKV: one number that says whether two members hold the same key history.
//!
//! The hash is the CRC-32 (IEEE) of every `kv_versions` record (its storage key, which
//! spells the user key and the revision, then its stored value) at or below the requested
//! revision, in storage-key order. Compaction goes through the log, so members that applied
//! the same entries hold the same records and agree; a member with a lost or extra write
//! does not.

use etch_proto::{HashKvResponse, Revision};
use fjall::Readable;

use super::keycode::decode_version_key;
use super::layout::encode;
use super::store::{Outcome, Store};
use super::view::read_revision;

impl Store {
    /// The hash of the key history up to `revision` (0: the current revision).
    ///
    /// # Errors
    ///
    /// A storage failure; the inner error is Compacted below the floor and FutureRevision
    /// past the current revision.
    pub fn hash_kv(&self, revision: Revision) -> Outcome<HashKvResponse> {
        let view = self.view()?;
        let rev = match read_revision(revision, view.revision, view.compact) {
            Ok(rev) => rev,
            Err(e) => return Ok(Err(e)),
        };
        let mut hasher = crc32fast::Hasher::new();
        for item in view.snapshot().iter(&view.spaces().versions) {
            let (raw_key, raw) = item.into_inner()?;
            let (key, at) = decode_version_key(&raw_key)?;
            if at <= rev {
                // What the record stands for, in the form stores kept before values were
                // stored once (`Option<Version>`): members that store a version whole or as
                // the live marker hash alike.
                let version = view.read_version(&key, at, &raw)?;
                hasher.update(&raw_key);
                hasher.update(&encode(&version)?);
            }
        }
        let mut resp = HashKvResponse {
            hash: hasher.finalize(),
            compact_revision: view.compact,
            hash_revision: rev,
            ..Default::default()
        };
        resp.header.revision = view.revision;
        Ok(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use etch_proto::Error as ProtoError;

    use super::*;
    use crate::testing::{put, temp_store as store};

    fn hash(store: &Store, rev: Revision) -> u32 {
        store.hash_kv(rev).expect("storage").expect("hash").hash
    }

    #[test]
    fn equal_histories_hash_equal_and_any_difference_shows() {
        let ((_a, a), (_b, b), (_c, c)) = (store(), store(), store());
        for s in [&a, &b, &c] {
            put(s, "k1", "v1");
            put(s, "k2", "v2");
        }
        put(&a, "k1", "v3");
        put(&b, "k1", "v3");
        put(&c, "k1", "v4");
        assert_eq!(hash(&a, 0), hash(&b, 0));
        assert_ne!(hash(&a, 0), hash(&c, 0), "a different value");
        // Up to revision 3 the histories are the same.
        assert_eq!(hash(&a, 3), hash(&c, 3));
        assert_ne!(hash(&a, 3), hash(&a, 4));
        let resp = a.hash_kv(0).expect("storage").expect("hash");
        assert_eq!((resp.hash_revision, resp.header.revision), (4, 4));
        assert_eq!(
            a.hash_kv(5).expect("storage"),
            Err(ProtoError::FutureRevision {
                current_revision: 4
            })
        );
    }
}
