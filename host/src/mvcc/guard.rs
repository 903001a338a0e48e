//! Guards: what a validated write was decided on, checked again when it is applied.
//!
//! Validator plugins run on the leader *before* a write is proposed, against the state at
//! some applied revision R. Between R and the moment the entry is applied other entries may
//! commit. A [`Guard`] records everything the decision depended on, and apply refuses the
//! write with `Conflict` (deterministically, on every replica) if any of it changed:
//!
//! - the **bindings version**: a plugin installed or removed since validation means the
//!   write was judged by the wrong set of plugins (or by none);
//! - the **read set**: one [`Read`] per key or range that the decision looked at — each key
//!   the write changes (the plugin saw its previous version), the keys of a delete range,
//!   a txn's compares (they chose the branch), and every `kv` read a plugin made.
//!
//! A [`Read`] is the range's fingerprint at R: how many live keys it held and the greatest
//! `mod_revision` among them (a single key is a range of one: count 0 or 1, and its
//! `mod_revision`). The fingerprint changes with any write to the range: a put raises the
//! maximum (a new revision is above every existing one) and a delete alone lowers the
//! count. So equal fingerprints mean no write touched the range in between. Checking costs a
//! scan of each range read; plugins read little, and a write that touches no bound prefix
//! carries no read set at all.
//!
//! A guard travels in the Raft entry, so it is capped at [`MAX_GUARD_BYTES`]
//! ([`Guard::check_size`]): a validator that read 4 GB of keys once made 121 MB entries
//! that no peer would take (issue 12). Plugin calls stop at the cap themselves
//! (`crate::plugin`), and the leader checks the whole guard again before proposing.

use etch_proto::{Error as ProtoError, KeyRange, Revision};
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::view::View;

/// The most bytes of reads (keys and range ends, [`READ_OVERHEAD`] each) one guard may hold.
/// Decision: 1 MiB, below the default request limit (1.5 MiB) so a guarded write stays an
/// entry of ordinary size, and far above what a validator reading a few keys needs (a txn
/// of 128 ops on 8 KiB keys has a 1 MiB write set of its own: its preview's reads fit).
pub const MAX_GUARD_BYTES: usize = 1 << 20;
/// Bytes counted per read beside its key and range end (its counters and the encoding).
pub const READ_OVERHEAD: usize = 64;

/// The fingerprint of a key range at the revision a decision was made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// etcd's conventions: empty = just `key`, `[0]` = to the end.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Live keys in the range.
    pub count: u64,
    /// Greatest `mod_revision` among them (0 when empty).
    pub max_mod_revision: Revision,
}

/// What a validated write was decided on (see the module doc).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub bindings_version: u64,
    pub reads: Vec<Read>,
    /// Whose write this is: the principal the validators judged it for, recorded with its
    /// revision (a reactor sees who made each change).
    pub principal: String,
}

impl Read {
    /// The fingerprint of `[key, range_end)` as `view` sees it.
    pub(crate) fn observe(view: &View, key: &[u8], range_end: &[u8]) -> Result<Read> {
        let mut read = Read {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            count: 0,
            max_mod_revision: 0,
        };
        for kv in view.scan(&KeyRange::new(key, range_end)) {
            read.note(kv?.mod_revision);
        }
        Ok(read)
    }

    /// The fingerprint of the single key `key` whose live version is `live`: what
    /// [`Read::observe`] finds for it, without reading it again.
    pub(crate) fn of_key(key: &[u8], live: Option<&etch_proto::KeyValue>) -> Read {
        let mut read = Read {
            key: key.to_vec(),
            ..Read::default()
        };
        if let Some(kv) = live {
            read.note(kv.mod_revision);
        }
        read
    }

    /// Whether this is the fingerprint of one key (no range), which a writer can check
    /// against that key's state alone ([`Read::matches`]).
    pub fn is_single_key(&self) -> bool {
        self.range_end.is_empty()
    }

    /// Whether a single-key read still holds for the key's current state.
    fn matches(&self, state: Option<&etch_proto::KeyValue>) -> bool {
        debug_assert!(self.is_single_key());
        let (count, max_mod_revision) = state.map_or((0, 0), |kv| (1, kv.mod_revision));
        self.count == count && self.max_mod_revision == max_mod_revision
    }

    /// Counts one live key of the range.
    pub(crate) fn note(&mut self, mod_revision: Revision) {
        self.count += 1;
        self.max_mod_revision = self.max_mod_revision.max(mod_revision);
    }
}

impl Guard {
    /// The bytes this guard counts against [`MAX_GUARD_BYTES`], and (about, from above)
    /// takes in a log entry.
    pub fn bytes(&self) -> usize {
        let reads: usize = (self.reads.iter())
            .map(|r| r.key.len() + r.range_end.len() + READ_OVERHEAD)
            .sum();
        reads + self.principal.len()
    }

    /// Refuses a guard over [`MAX_GUARD_BYTES`]: nothing may be proposed with it.
    ///
    /// # Errors
    ///
    /// `InvalidArgument` naming the guard's size and the cap.
    pub fn check_size(&self) -> std::result::Result<(), ProtoError> {
        let bytes = self.bytes();
        if bytes > MAX_GUARD_BYTES {
            return Err(ProtoError::InvalidArgument(format!(
                "the reads this write was validated on (its guard) take {bytes} bytes, over the cap of {MAX_GUARD_BYTES} bytes"
            )));
        }
        Ok(())
    }

    /// Whether a guard whose reads are all single keys ([`Read::is_single_key`]) still
    /// holds when the bindings version is `bindings_version` and `state` gives each key's
    /// current version: how a writer checks it against state it has not committed yet.
    pub(crate) fn holds_for_keys(
        &self,
        bindings_version: u64,
        mut state: impl FnMut(&[u8]) -> Result<Option<etch_proto::KeyValue>>,
    ) -> Result<bool> {
        if bindings_version != self.bindings_version {
            return Ok(false);
        }
        for read in &self.reads {
            debug_assert!(read.is_single_key());
            if !read.matches(state(&read.key)?.as_ref()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether nothing this guard records has changed in `view`, whose bindings version is
    /// `bindings_version`.
    pub(crate) fn holds(&self, view: &View, bindings_version: u64) -> Result<bool> {
        if bindings_version != self.bindings_version {
            return Ok(false);
        }
        for read in &self.reads {
            if Read::observe(view, &read.key, &read.range_end)? != *read {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_over_the_cap_is_refused() {
        let read = |len: usize| Read {
            key: vec![b'k'; len],
            ..Read::default()
        };
        let mut guard = Guard {
            bindings_version: 1,
            reads: vec![read(MAX_GUARD_BYTES - READ_OVERHEAD)],
            principal: String::new(),
        };
        assert_eq!(guard.bytes(), MAX_GUARD_BYTES);
        assert!(guard.check_size().is_ok());
        guard.reads.push(read(0));
        let err = guard.check_size().expect_err("over the cap");
        assert!(err.to_string().contains("guard"), "{err}");
    }
}
