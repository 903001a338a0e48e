//! Consistent reads: a [`View`] is one fjall snapshot of the mvcc keyspaces together with the
//! revision counters as that snapshot saw them, so a read never mixes two revisions.
//!
//! Reads at the current revision scan `kv_current`; reads at an older revision scan the
//! versions of the selected keys in `kv_versions` and keep, per key, the newest version at or
//! below the revision (skipping the key if that version is a deletion). Results stream out of
//! the scan; [`collect_range`] keeps at most `limit` of them while counting all.

use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::sync::Arc;

use etch_proto::{
    Error as ProtoError, KeyRange, KeyValue, RangeRequest, RangeResponse, Revision, SortOrder,
    SortTarget,
};
use fjall::{Keyspace, Readable, Slice, Snapshot};

use super::error::Result;
use super::keycode::{decode_version_key, key_prefix, version_key};
use super::layout::{Spaces, Version, decode, read_version};

/// A stream of key-values in ascending key order.
pub(crate) type KvIter<'a> = Box<dyn Iterator<Item = Result<KeyValue>> + 'a>;

/// The error for a request without a key, worded as etcd's.
pub(crate) fn empty_key() -> ProtoError {
    ProtoError::InvalidArgument("key is not provided".into())
}

/// Lower and upper bound of a key scan.
pub(crate) type Bounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The user-key bounds of a range, or `None` when it selects nothing (`key >= range_end`).
pub(crate) fn bounds(range: &KeyRange<'_>) -> Option<Bounds> {
    match *range {
        KeyRange::Single(k) => Some((Included(k.to_vec()), Included(k.to_vec()))),
        KeyRange::From(start) => Some((Included(start.to_vec()), Unbounded)),
        KeyRange::Between(start, end) if start < end => {
            Some((Included(start.to_vec()), Excluded(end.to_vec())))
        }
        KeyRange::Between(..) => None,
    }
}

/// Resolves a request's `revision` (0 or negative = `current`) against the counters, as
/// etcd does: newer than `current` is a future revision, below the floor is compacted, and
/// the floor itself is still readable.
pub(crate) fn read_revision(
    requested: Revision,
    current: Revision,
    compact: Revision,
) -> std::result::Result<Revision, ProtoError> {
    if requested > current {
        return Err(ProtoError::FutureRevision {
            current_revision: current,
        });
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compact {
        return Err(ProtoError::Compacted {
            compact_revision: compact,
        });
    }
    Ok(rev)
}

/// The most bytes of keys and values one range (or all ranges of one txn) may return: an
/// answer's frame limit. A range past it fails with `TooLarge` as soon as it passes, before
/// it holds more, instead of building an answer that could never be sent. A constant, not a
/// flag: ranges inside a txn are applied, and every replica must give the same answer.
pub const MAX_RANGE_BYTES: usize = etch_proto::DEFAULT_MAX_RESPONSE_BYTES;

/// What one returned key-value costs against [`MAX_RANGE_BYTES`] beyond its key and value
/// (its revisions, version and lease as encoded, about).
const KV_OVERHEAD: usize = 32;

/// Keys under this prefix belong to etch itself (reactor checkpoints). They live in the key
/// space, so that a reactor's checkpoint commits with its writes, but no client sees them:
/// ranges and counts leave them out, a delete range skips them, watches never show them,
/// and a put of one is refused where it enters.
pub const RESERVED_PREFIX: &[u8] = b"\0etch/";

/// Whether `key` is one of etch's own (see [`RESERVED_PREFIX`]).
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Applies the revision filters, the sort, `limit`, `keys_only` and `count_only` to a
/// stream of matches, leaving out etch's own keys. `count` is every match in the range
/// (before the filters, as etcd's). Only the returned ones are held in memory — all the
/// filtered matches when a sort other than key order must see them all before it can pick
/// the first `limit` — and at most `budget` bytes of them (what is left of it is handed
/// back through `budget`).
pub(crate) fn collect_range(
    iter: KvIter<'_>,
    req: &RangeRequest,
    header_revision: Revision,
    budget: &mut usize,
) -> Result<std::result::Result<RangeResponse, ProtoError>> {
    let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
    let sorts = req.sorts();
    // A sort by value needs the values even when only keys are returned.
    let clear_values = req.keys_only && !(sorts && req.sort_target == SortTarget::Value);
    let mut resp = RangeResponse::default();
    resp.header.revision = header_revision;
    for kv in iter {
        let mut kv = kv?;
        if is_reserved(&kv.key) {
            continue;
        }
        resp.count += 1;
        if req.count_only || !req.admits(&kv) {
            continue;
        }
        if !sorts && limit.is_some_and(|l| resp.kvs.len() >= l) {
            resp.more = true;
            continue;
        }
        if clear_values {
            kv.value.clear();
        }
        let bytes = kv_bytes(&kv);
        let Some(left) = budget.checked_sub(bytes) else {
            let held: usize = resp.kvs.iter().map(kv_bytes).sum();
            return Ok(Err(ProtoError::TooLarge {
                size: (held + bytes) as u64,
                limit: MAX_RANGE_BYTES as u64,
            }));
        };
        *budget = left;
        resp.kvs.push(kv);
    }
    if sorts {
        sort(&mut resp.kvs, req.sort_target, req.effective_order());
        if let Some(l) = limit.filter(|&l| resp.kvs.len() > l) {
            *budget += resp.kvs.drain(l..).map(|kv| kv_bytes(&kv)).sum::<usize>();
            resp.more = true;
        }
        if req.keys_only {
            for kv in &mut resp.kvs {
                *budget += kv.value.len();
                kv.value = Vec::new();
            }
        }
    }
    Ok(Ok(resp))
}

/// What `kv` costs against [`MAX_RANGE_BYTES`].
fn kv_bytes(kv: &KeyValue) -> usize {
    kv.key.len() + kv.value.len() + KV_OVERHEAD
}

/// Sorts key-ordered `kvs` by `target`; ties stay in key order.
fn sort(kvs: &mut [KeyValue], target: SortTarget, order: SortOrder) {
    kvs.sort_by(|a, b| {
        let by = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        match order {
            SortOrder::Descend => by.reverse(),
            SortOrder::None | SortOrder::Ascend => by,
        }
    });
}

/// One consistent snapshot of the mvcc state.
pub(crate) struct View {
    spaces: Arc<Spaces>,
    snap: Snapshot,
    /// The store revision in this snapshot.
    pub revision: Revision,
    /// The compaction floor in this snapshot (0 before the first compaction).
    pub compact: Revision,
}

impl View {
    pub fn open(spaces: &Arc<Spaces>) -> Result<View> {
        let snap = super::gate::snapshot(&spaces.db);
        let (revision, compact) = spaces.counters(&snap)?;
        Ok(View {
            spaces: spaces.clone(),
            snap,
            revision,
            compact,
        })
    }

    /// A snapshot whose counters the caller already knows: the store's writer, which holds
    /// the write lock, so nothing can move them between its last commit and this snapshot.
    pub(crate) fn open_known(spaces: &Arc<Spaces>, revision: Revision, compact: Revision) -> View {
        let snap = super::gate::snapshot(&spaces.db);
        View {
            spaces: spaces.clone(),
            snap,
            revision,
            compact,
        }
    }

    pub fn spaces(&self) -> &Spaces {
        &self.spaces
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// Serves a range request from this snapshot.
    pub fn range(
        &self,
        req: &RangeRequest,
        max_bytes: usize,
    ) -> Result<std::result::Result<RangeResponse, ProtoError>> {
        if req.key.is_empty() {
            return Ok(Err(empty_key()));
        }
        let rev = match read_revision(req.revision, self.revision, self.compact) {
            Ok(rev) => rev,
            Err(e) => return Ok(Err(e)),
        };
        let range = KeyRange::new(&req.key, &req.range_end);
        let iter = if rev == self.revision {
            self.scan(&range)
        } else {
            self.scan_at(&range, rev)
        };
        let mut budget = max_bytes;
        collect_range(iter, req, self.revision, &mut budget)
    }

    /// The live version of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.snap.get(&self.spaces.current, key)? {
            Some(raw) => Ok(Some(decode::<Version>(&raw)?.into_kv(key.to_vec()))),
            None => Ok(None),
        }
    }

    /// The live versions of the keys in `range`.
    pub fn scan(&self, range: &KeyRange<'_>) -> KvIter<'static> {
        if let KeyRange::Single(key) = range {
            return Box::new(self.get(key).transpose().into_iter());
        }
        let Some(bounds) = bounds(range) else {
            return Box::new(std::iter::empty());
        };
        Box::new(self.snap.range(&self.spaces.current, bounds).map(|guard| {
            let (key, raw) = guard.into_inner()?;
            Ok(decode::<Version>(&raw)?.into_kv(key.to_vec()))
        }))
    }

    /// The versions of the keys in `range` as they were at `rev`.
    pub fn scan_at(&self, range: &KeyRange<'_>, rev: Revision) -> KvIter<'static> {
        let (lower, upper) = match *range {
            KeyRange::Single(k) => {
                let prefix = key_prefix(k);
                let mut upper = prefix.clone();
                upper.extend_from_slice(&[0xff; 8]);
                (prefix, Included(upper))
            }
            KeyRange::From(start) => (key_prefix(start), Unbounded),
            KeyRange::Between(start, end) if start < end => {
                (key_prefix(start), Excluded(key_prefix(end)))
            }
            KeyRange::Between(..) => return Box::new(std::iter::empty()),
        };
        let inner = self
            .snap
            .range(&self.spaces.versions, (Included(lower), upper));
        Box::new(AtRevision {
            inner,
            rev,
            group: None,
            snap: self.snap.clone(),
            current: self.spaces.current.clone(),
        })
    }

    /// The record of `key` written exactly at `rev`: `None` if there is none (never written
    /// then, or compacted away), `Some(None)` for a deletion.
    pub fn version(&self, key: &[u8], rev: Revision) -> Result<Option<Option<Version>>> {
        match self
            .snap
            .get(&self.spaces.versions, version_key(key, rev))?
        {
            Some(raw) => Ok(Some(self.read_version(key, rev, &raw)?)),
            None => Ok(None),
        }
    }

    /// The version the `kv_versions` record `raw` of `key` at `rev` stands for (`None`: a
    /// delete); a live version's value is read from `kv_current` in this snapshot.
    pub fn read_version(&self, key: &[u8], rev: Revision, raw: &[u8]) -> Result<Option<Version>> {
        read_version(&self.snap, &self.spaces.current, key, rev, raw)
    }
}

/// A `kv_versions` record as read: its revision and its raw value.
type RawVersion = (Revision, Slice);

/// Walks `kv_versions` in `(key, revision)` order and yields, per key, the newest version at
/// or below `rev` unless it is a deletion.
struct AtRevision {
    inner: fjall::Iter,
    rev: Revision,
    /// The key being grouped and the revision and raw record of its best version so far.
    group: Option<(Vec<u8>, Option<RawVersion>)>,
    /// Where a live version's value is read (the snapshot `inner` walks).
    snap: Snapshot,
    current: Keyspace,
}

impl AtRevision {
    fn emit(&self, key: Vec<u8>, best: Option<RawVersion>) -> Option<Result<KeyValue>> {
        let (rev, raw) = best?;
        match read_version(&self.snap, &self.current, &key, rev, &raw) {
            Ok(Some(version)) => Some(Ok(version.into_kv(key))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl Iterator for AtRevision {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let Some(guard) = self.inner.next() else {
                let (key, best) = self.group.take()?;
                return self.emit(key, best);
            };
            let (raw_key, raw) = match guard.into_inner() {
                Ok(pair) => pair,
                Err(e) => return Some(Err(e.into())),
            };
            let (key, rev) = match decode_version_key(&raw_key) {
                Ok(decoded) => decoded,
                Err(e) => return Some(Err(e)),
            };
            let candidate = (rev <= self.rev).then_some((rev, raw));
            match &mut self.group {
                Some((current, best)) if *current == key => {
                    if candidate.is_some() {
                        *best = candidate;
                    }
                }
                _ => {
                    if let Some((done, best)) = self.group.replace((key, candidate))
                        && let Some(item) = self.emit(done, best)
                    {
                        return Some(item);
                    }
                }
            }
        }
    }
}
