//! The write side of applied entries: a [`WriteTx`] collects the puts and deletes of a
//! request (or of a whole txn) at the next revision, lets later ops of the same txn read them
//! (as etcd does), and finally turns them into fjall batch operations.
//!
//! Every write of one request gets the same revision; their order (etcd's sub-revisions) is
//! the order of `touched`. The duplicate-key rules of a txn guarantee that a key is written
//! at most once per revision, so one `kv_versions` record per key and revision suffices.
//!
//! A run of puts (a batch entry, see `Store::apply_puts`) shares one `WriteTx`:
//! [`WriteTx::seal`] closes each put's revision and the next put starts the one after it, so
//! the whole run lands in one fjall batch, each put at its own revision. Only ops that read
//! the current state ([`WriteTx::get`], [`WriteTx::scan`]) may follow a sealed revision:
//! reading history at a revision of the run is not supported, so txns never share a run.

use std::cmp::Ordering;
use std::collections::{BTreeMap, btree_map};
use std::iter::Peekable;

use etch_proto::{
    DeleteRangeRequest, DeleteRangeResponse, Error as ProtoError, KeyRange, KeyValue, PutRequest,
    PutResponse, RangeRequest, RangeResponse, Revision,
};
use fjall::OwnedWriteBatch;

use super::error::Result;
use super::keycode::{encode_rev, version_key};
use super::layout::{History, META_REVISION, Touch, Version, VersionRecord, encode, lease_key};
use super::view::{KvIter, View, bounds, collect_range, read_revision};

/// The pending writes of one entry on top of a [`View`].
pub(crate) struct WriteTx<'v> {
    view: &'v View,
    /// Key → its state after every write so far (`None` = deleted here).
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    /// The keys written at the open revision, in sub-revision order.
    touched: Vec<Touch>,
    /// The last sealed revision (the view's until [`WriteTx::seal`] closes one).
    revision: Revision,
    /// The revisions sealed so far: each with its keys and who made it, and the keys' state
    /// at that revision.
    sealed: Vec<(Revision, History, Vec<Option<KeyValue>>)>,
    /// Whose write the open revision is (recorded in its history).
    principal: String,
    /// The live version each written key had before this transaction, where it had one:
    /// its `kv_versions` record is written whole again (its value leaves `kv_current`), and
    /// `lease_keys` follows its lease.
    before: BTreeMap<Vec<u8>, KeyValue>,
}

impl<'v> WriteTx<'v> {
    pub fn new(view: &'v View) -> Self {
        WriteTx {
            view,
            overlay: BTreeMap::new(),
            touched: Vec::new(),
            revision: view.revision,
            sealed: Vec::new(),
            before: BTreeMap::new(),
            principal: String::new(),
        }
    }

    /// Records the writes from now on (until the next [`WriteTx::seal`]) as `principal`'s.
    pub fn made_by(&mut self, principal: &str) {
        principal.clone_into(&mut self.principal);
    }

    pub fn view(&self) -> &'v View {
        self.view
    }

    /// The revision as the ops of this entry see it: one past the last sealed revision once
    /// anything changed.
    pub fn current_revision(&self) -> Revision {
        self.revision + Revision::from(!self.touched.is_empty())
    }

    /// Closes the open revision (if anything was written at it); the next write starts the
    /// revision after it. Returns the revision after the writes so far.
    pub fn seal(&mut self) -> Revision {
        if !self.touched.is_empty() {
            self.revision += 1;
            let touches = std::mem::take(&mut self.touched);
            let states = touches
                .iter()
                .map(|t| self.overlay.get(&t.key).cloned().flatten())
                .collect();
            let principal = self.principal.clone();
            let history = History { touches, principal };
            self.sealed.push((self.revision, history, states));
        }
        self.revision
    }

    /// The live version of `key`, this entry's writes included.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        match self.overlay.get(key) {
            Some(state) => Ok(state.clone()),
            None => self.view.get(key),
        }
    }

    /// The live versions in `range`, this entry's writes included.
    pub fn scan(&self, range: &KeyRange<'_>) -> KvIter<'_> {
        let Some(bounds) = bounds(range) else {
            return Box::new(std::iter::empty());
        };
        Box::new(Merge {
            base: self.view.scan(range).peekable(),
            over: self.overlay.range(bounds).peekable(),
        })
    }

    /// A range inside this entry: at the current revision it sees this entry's writes, at an
    /// older one it reads history. It returns at most `budget` bytes (see
    /// [`collect_range`]), and takes what it returns out of it.
    pub fn range(
        &self,
        req: &RangeRequest,
        budget: &mut usize,
    ) -> Result<std::result::Result<RangeResponse, ProtoError>> {
        if req.key.is_empty() {
            return Ok(Err(super::view::empty_key()));
        }
        let current = self.current_revision();
        let rev = match read_revision(req.revision, current, self.view.compact) {
            Ok(rev) => rev,
            Err(e) => return Ok(Err(e)),
        };
        if rev != current && rev > self.view.revision {
            return Err(super::error::Error::Corrupt(
                "a range at a revision sealed in the same write batch".into(),
            ));
        }
        let range = KeyRange::new(&req.key, &req.range_end);
        let iter = if rev == current {
            self.scan(&range)
        } else {
            self.view.scan_at(&range, rev)
        };
        collect_range(iter, req, current, budget)
    }

    /// Puts `req.key` (already checked: key not empty, lease granted). A put that keeps
    /// the key's value or lease (`ignore_value`, `ignore_lease`) fails with etcd's "key not
    /// found" when there is no key to keep them from.
    pub fn put(
        &mut self,
        req: &PutRequest,
    ) -> Result<std::result::Result<PutResponse, ProtoError>> {
        let prev = self.get(&req.key)?;
        Ok(self.put_over(req, prev))
    }

    /// [`WriteTx::put`] of a key whose live version the caller has just read
    /// (`prev` = [`WriteTx::get`] of `req.key`, with no write in between): one read fewer.
    pub fn put_over(
        &mut self,
        req: &PutRequest,
        prev: Option<KeyValue>,
    ) -> std::result::Result<PutResponse, ProtoError> {
        let keep = req.ignore_value || req.ignore_lease;
        let (value, lease) = match &prev {
            None if keep => return Err(ProtoError::InvalidArgument("key not found".into())),
            Some(prev) => (
                if req.ignore_value {
                    &prev.value
                } else {
                    &req.value
                },
                if req.ignore_lease {
                    prev.lease
                } else {
                    req.lease
                },
            ),
            None => (&req.value, req.lease),
        };
        let value = value.clone();
        let rev = self.revision + 1;
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
            mod_revision: rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        let mut resp = PutResponse {
            // Copied only when asked for: the old value goes on to `before` either way.
            prev_kv: if req.prev_kv { prev.clone() } else { None },
            ..Default::default()
        };
        if let Some(prev) = prev {
            self.note_before(prev);
        }
        self.overlay.insert(req.key.clone(), Some(kv));
        self.touched.push(Touch {
            key: req.key.clone(),
            deleted: false,
        });
        resp.header.revision = self.current_revision();
        Ok(resp)
    }

    /// Deletes every live key in the range, in key order, but etch's own
    /// ([`super::view::RESERVED_PREFIX`]): `del "" --prefix` empties the user's key space.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let deleted: Vec<KeyValue> = self
            .scan(&range)
            .filter(|kv| {
                kv.as_ref()
                    .map_or(true, |kv| !super::view::is_reserved(&kv.key))
            })
            .collect::<Result<_>>()?;
        let mut resp = DeleteRangeResponse {
            deleted: deleted.len() as i64,
            prev_kvs: if req.prev_kv {
                deleted.clone()
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        for kv in deleted {
            let key = kv.key.clone();
            self.note_before(kv);
            self.overlay.insert(key.clone(), None);
            self.touched.push(Touch { key, deleted: true });
        }
        resp.header.revision = self.current_revision();
        Ok(resp)
    }

    /// Remembers `live`, the version of its key before this transaction, on the key's
    /// first write (call it before recording the write).
    fn note_before(&mut self, live: KeyValue) {
        if !self.overlay.contains_key(&live.key) {
            self.before.insert(live.key.clone(), live);
        }
    }

    /// The live version `key` had before this transaction, if it was written and had one.
    pub fn before(&self, key: &[u8]) -> Option<&KeyValue> {
        self.before.get(key)
    }

    /// The keys written so far in sub-revision order, each with its state after this entry
    /// (`None` = deleted).
    pub fn changes(&self) -> Vec<(Vec<u8>, Option<KeyValue>)> {
        self.touched
            .iter()
            .map(|t| (t.key.clone(), self.overlay.get(&t.key).cloned().flatten()))
            .collect()
    }

    /// Adds every write to `batch` (sealing the open revision) and returns the store revision
    /// after them (unchanged if nothing was written).
    pub fn write(mut self, batch: &mut OwnedWriteBatch) -> Result<Revision> {
        let last = self.seal();
        if self.sealed.is_empty() {
            return Ok(last);
        }
        let spaces = self.view.spaces();
        for (rev, history, states) in &self.sealed {
            for (touch, state) in history.touches.iter().zip(states) {
                // The version that stays live is whole in `kv_current` only.
                let live = self
                    .overlay
                    .get(&touch.key)
                    .and_then(Option::as_ref)
                    .is_some_and(|now| now.mod_revision == *rev);
                batch.insert(
                    &spaces.versions,
                    version_key(&touch.key, *rev),
                    encode(&VersionRecord::of(state.as_ref(), live))?,
                );
            }
            batch.insert(&spaces.history, encode_rev(*rev), encode(history)?);
        }
        // The versions this entry replaced or deleted are history now: whole again.
        for (key, was) in &self.before {
            batch.insert(
                &spaces.versions,
                version_key(key, was.mod_revision),
                encode(&VersionRecord::Full(Version::from_kv(was)))?,
            );
        }
        for (key, state) in self.overlay {
            // Keep `lease_keys` in step with the keys' leases: detach from the old lease,
            // attach to the new one.
            let before = self.before.get(&key).map_or(0, |was| was.lease);
            let after = state.as_ref().map_or(0, |kv| kv.lease);
            if before != after {
                if before != 0 {
                    batch.remove(&spaces.lease_keys, lease_key(before, &key));
                }
                if after != 0 {
                    batch.insert(&spaces.lease_keys, lease_key(after, &key), []);
                }
            }
            match state.as_ref().map(Version::from_kv) {
                Some(version) => batch.insert(&spaces.current, key, encode(&version)?),
                None => batch.remove(&spaces.current, key),
            }
        }
        batch.insert(&spaces.meta, META_REVISION, encode(&last)?);
        Ok(last)
    }
}

/// Merges the snapshot's live keys with the overlay; the overlay wins on equal keys and its
/// deletions hide the snapshot's versions.
struct Merge<'a> {
    base: Peekable<KvIter<'static>>,
    over: Peekable<btree_map::Range<'a, Vec<u8>, Option<KeyValue>>>,
}

impl Iterator for Merge<'_> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            // How the overlay's next key compares with the snapshot's next key.
            let order = match (self.base.peek(), self.over.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Greater,
                (None, Some(_)) => Ordering::Less,
                (Some(Ok(base)), Some((key, _))) => key.as_slice().cmp(&base.key),
            };
            match order {
                Ordering::Greater => return self.base.next(),
                Ordering::Equal => {
                    self.base.next();
                }
                Ordering::Less => {}
            }
            if let Some((_, Some(kv))) = self.over.next() {
                return Some(Ok(kv.clone()));
            }
        }
    }
}
