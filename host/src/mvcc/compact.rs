//! Compaction: dropping the history below a revision.
//!
//! `Compact(rev)` keeps, for every key, the newest version at or below `rev` unless that
//! version is a deletion, and drops every older one; it drops the `kv_history` entries below
//! `rev` and records `rev` as the new floor. Reads at the floor still work: they find exactly
//! the kept versions. The store revision does not move.
//!
//! Only keys written since the previous floor can have more than one version at or below
//! `rev` (an earlier compaction left each key at most one), and `kv_history` lists exactly
//! those keys, so the work is proportional to the history being dropped, not to the store.
//! It all goes into the entry's one batch.

use std::collections::BTreeSet;
use std::ops::Bound::Included;

use etch_proto::{Error as ProtoError, Revision};
use fjall::{OwnedWriteBatch, Readable};

use super::error::Result;
use super::keycode::{decode_rev, encode_rev, key_prefix, version_key};
use super::layout::{History, META_COMPACT, VersionRecord, decode, encode};
use super::view::View;

/// Adds the compaction at `rev` to `batch`, or says why it cannot be done.
pub(crate) fn compact(
    view: &View,
    batch: &mut OwnedWriteBatch,
    rev: Revision,
) -> Result<std::result::Result<(), ProtoError>> {
    if rev <= view.compact {
        return Ok(Err(ProtoError::Compacted {
            compact_revision: view.compact,
        }));
    }
    if rev > view.revision {
        return Ok(Err(ProtoError::FutureRevision {
            current_revision: view.revision,
        }));
    }
    let (spaces, snap) = (view.spaces(), view.snapshot());

    let mut keys = BTreeSet::new();
    let history = (
        Included(encode_rev(view.compact.max(1))),
        Included(encode_rev(rev)),
    );
    for item in snap.range(&spaces.history, history) {
        let (raw_rev, raw) = item.into_inner()?;
        if decode_rev(&raw_rev)? < rev {
            batch.remove(&spaces.history, raw_rev);
        }
        keys.extend(decode::<History>(&raw)?.touches.into_iter().map(|t| t.key));
    }

    for key in keys {
        let upto = (Included(key_prefix(&key)), Included(version_key(&key, rev)));
        let mut versions = snap.range(&spaces.versions, upto).peekable();
        while let Some(item) = versions.next() {
            let (raw_key, raw) = item.into_inner()?;
            let newest = versions.peek().is_none();
            if !newest || decode::<VersionRecord>(&raw)? == VersionRecord::Deleted {
                batch.remove(&spaces.versions, raw_key);
            }
        }
    }

    batch.insert(&spaces.meta, META_COMPACT, encode(&rev)?);
    Ok(Ok(()))
}
