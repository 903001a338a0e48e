//! [`Store`]: the entry points the Raft state machine and the read path call.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use etch_proto::limits::{check_key, check_mutation, check_put};
use etch_proto::{
    CompactResponse, Error as ProtoError, KeyValue, Mutation, PutRequest, RangeRequest,
    RangeResponse, Response, Revision, TxnRequest, TxnResponse,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch};

use super::error::{Error, Result};
use super::guard::Guard;
use super::keycode::encode_rev;
use super::layout::{
    History, META_APPLIED, ROOT_GENERATION, ROOT_SPACE, Spaces, Touch, bindings_version, decode,
};
use super::sessions::{Recorder, RequestId};
use super::view::{View, empty_key};
use super::write::WriteTx;
use super::{compact, lease, txn};
use crate::auth::AuthState;

/// The outcome of a request: outer `Err` = storage failure, inner `Err` = the request's own
/// deterministic failure.
pub type Outcome<T> = Result<std::result::Result<T, ProtoError>>;

/// One change at a revision, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The new version for a put; for a delete only `key` and `mod_revision` (the revision of
    /// the delete) are set, as in etcd's tombstone events.
    pub kv: KeyValue,
    pub is_delete: bool,
}

/// The revisioned key space of one node. Cheap to clone; clones share the same state.
///
/// Writes ([`Store::apply`], [`Store::set_applied`], [`Store::import`]) are serialised by an
/// internal lock; reads each take their own fjall snapshot and never block writes.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    /// The live keyspaces; [`Store::import`] switches them to a new generation.
    spaces: RwLock<Arc<Spaces>>,
    /// The root keyspace (see [`ROOT_SPACE`]).
    root: Keyspace,
    revision: AtomicI64,
    compact: AtomicI64,
    /// The bindings version (see `Store::bindings_version`), kept in step by the writer.
    bindings: AtomicU64,
    /// Serialises writers; guards no data (the state lives in fjall), so a poisoned lock is
    /// still usable.
    write: Mutex<()>,
    /// The authorization state, as stored (`super::auth`).
    auth: RwLock<Arc<AuthState>>,
    /// Told the auth revision after every change.
    auth_signal: tokio::sync::watch::Sender<u64>,
    /// The raised alarms, as stored (`super::alarm`).
    alarms: RwLock<std::collections::BTreeSet<etch_proto::alarm::AlarmMember>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("revision", &self.revision())
            .field("compact_revision", &self.compact_revision())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the mvcc keyspaces of `db`, creating the missing ones, and loads the counters.
    ///
    /// # Errors
    ///
    /// A storage failure, or meta records that do not decode.
    pub fn open(db: &Database) -> Result<Store> {
        let root = db.keyspace(ROOT_SPACE, KeyspaceCreateOptions::default)?;
        let generation = match root.get(ROOT_GENERATION)? {
            Some(raw) => decode(&raw)?,
            None => 0,
        };
        // Leftovers: an import cut short (the next generation), or the generation an import
        // replaced when the node stopped before deleting it.
        Spaces::delete_generation(db, generation + 1)?;
        if let Some(previous) = generation.checked_sub(1) {
            Spaces::delete_generation(db, previous)?;
        }
        let spaces = Spaces::open(db, generation)?;
        let snapshot = super::gate::snapshot(db);
        let (revision, compact) = spaces.counters(&snapshot)?;
        let bindings = bindings_version(&spaces, &snapshot)?;
        let auth = super::auth::load(&spaces, &snapshot)?;
        let (auth_signal, _) = tokio::sync::watch::channel(auth.revision);
        let alarms = super::alarm::load(&spaces, &snapshot)?;
        Ok(Store {
            inner: Arc::new(Inner {
                spaces: RwLock::new(Arc::new(spaces)),
                root,
                revision: AtomicI64::new(revision),
                compact: AtomicI64::new(compact),
                bindings: AtomicU64::new(bindings),
                write: Mutex::new(()),
                auth: RwLock::new(Arc::new(auth)),
                auth_signal,
                alarms: RwLock::new(alarms),
            }),
        })
    }

    /// Applies one committed mutation deterministically and writes its effects, the new
    /// revision and `applied` in one atomic fjall batch (not fsynced: the Raft log is the
    /// durable record). A deterministic failure still records `applied` and leaves the
    /// revision alone.
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn apply(&self, req: &Mutation, applied: &[u8]) -> Outcome<Response> {
        match req {
            Mutation::Auth(auth) => self.apply_auth(auth, applied),
            Mutation::Alarm(alarm) => self.apply_alarm(alarm, applied),
            _ => self.apply_inner(req, None, None, applied),
        }
    }

    /// [`Store::apply`] of a request, for tests: panics on one that is not a mutation.
    #[cfg(test)]
    pub(crate) fn apply_request(
        &self,
        req: &etch_proto::Request,
        applied: &[u8],
    ) -> Outcome<Response> {
        let m = Mutation::from_request(req.clone()).expect("a request applied through the log");
        self.apply(&m, applied)
    }

    /// Like [`Store::apply`] (or [`Store::apply_guarded`] with `guard`) for a write its
    /// client named `id`: if an outcome is recorded under `id` (the client sent it again
    /// after losing the answer), that is the outcome and nothing else is written but
    /// `applied`; otherwise the write applies and its outcome is recorded in the same
    /// atomic batch. See [`super::sessions`].
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn apply_once(
        &self,
        req: &Mutation,
        guard: Option<&Guard>,
        id: &RequestId,
        applied: &[u8],
    ) -> Outcome<Response> {
        self.apply_inner(req, guard, Some(id), applied)
    }

    /// Forgets the clients last seen before `before_ms` (at most
    /// [`super::sessions::EXPIRE_BATCH`] of them), with their recorded outcomes; answers
    /// how many.
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn expire_sessions(&self, before_ms: u64, applied: &[u8]) -> Result<usize> {
        let _guard = self.lock();
        let spaces = &self.spaces();
        let mut batch = spaces.db.batch();
        let forgotten = super::sessions::expire(spaces, &mut batch, before_ms)?;
        batch.insert(&spaces.meta, META_APPLIED, applied);
        crate::failpoint::check("apply-write")?;
        super::gate::commit(batch)?;
        Ok(forgotten)
    }

    /// Like [`Store::apply`] for a write that validator plugins judged: first checks that
    /// nothing `guard` records has changed since (the bindings version, the read set), and
    /// otherwise fails the request with `Conflict`, deterministically, writing nothing but
    /// `applied`. See [`super::guard`].
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn apply_guarded(
        &self,
        req: &Mutation,
        guard: &Guard,
        applied: &[u8],
    ) -> Outcome<Response> {
        self.apply_inner(req, Some(guard), None, applied)
    }

    fn apply_inner(
        &self,
        req: &Mutation,
        guard: Option<&Guard>,
        once: Option<&RequestId>,
        applied: &[u8],
    ) -> Outcome<Response> {
        let _guard = self.lock();
        let spaces = &self.spaces();
        let mut sessions = Recorder::new(spaces);
        if let Some(id) = once
            && let Some(found) = sessions.lookup(id)?
        {
            let mut batch = spaces.db.batch();
            batch.insert(&spaces.meta, META_APPLIED, applied);
            crate::failpoint::check("apply-write")?;
            super::gate::commit(batch)?;
            return Ok(found);
        }
        let view = self.writer_view(spaces);
        let mut batch = spaces.db.batch();
        // A command over the shape limits never reaches fjall (which refuses long keys by
        // panicking): it fails here, the same way on every replica.
        let shape = check_mutation(req).and_then(|()| guard.map_or(Ok(()), check_guard));
        let mut outcome = match (shape, guard) {
            (Err(e), _) => Ok(Err(e)),
            (Ok(()), Some(guard)) if !guard.holds(&view, self.bindings_version())? => {
                Ok(Err(ProtoError::Conflict))
            }
            (Ok(()), _) => {
                let principal = guard.map_or("", |g| g.principal.as_str());
                execute(&view, req, &mut batch, principal)
            }
        }?;
        if outcome.is_err() {
            batch = spaces.db.batch();
        }
        // A conflict applied nothing and is judged again under the same id: not recorded.
        if let Some(id) = once
            && outcome != Err(ProtoError::Conflict)
        {
            sessions.record(id, &outcome)?;
            sessions.write(&mut batch)?;
        }
        batch.insert(&spaces.meta, META_APPLIED, applied);
        crate::failpoint::check("apply-write")?;
        super::gate::commit(batch)?;
        if let Ok(resp) = &mut outcome {
            let revision = resp.header_mut().revision;
            self.inner.revision.store(revision, Ordering::Release);
            if let Mutation::Compact(c) = req {
                self.inner.compact.store(c.revision, Ordering::Release);
            }
        }
        Ok(outcome)
    }

    /// Applies a run of puts (from one batch entry) in one atomic fjall batch, each at
    /// its own revision, with the same outcome as applying them one by one with
    /// [`Store::apply_guarded`] (or [`Store::apply`] for a put without a guard), and records
    /// `applied` in the same batch. A guard in the run may record only single-key reads
    /// ([`super::Read::is_single_key`]), which are checked against the state the run has
    /// reached.
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn apply_puts(
        &self,
        puts: &[(&PutRequest, Option<&Guard>, Option<&RequestId>)],
        applied: &[u8],
    ) -> Result<Vec<std::result::Result<Response, ProtoError>>> {
        let _guard = self.lock();
        let spaces = &self.spaces();
        let view = self.writer_view(spaces);
        let bindings = self.bindings_version();
        let mut tx = WriteTx::new(&view);
        let mut sessions = Recorder::new(spaces);
        let mut answers = Vec::with_capacity(puts.len());
        for (put, guard, once) in puts {
            if let Some(id) = once
                && let Some(found) = sessions.lookup(id)?
            {
                answers.push(found);
                continue;
            }
            let answer = put_in_run(&view, &mut tx, bindings, put, *guard)?;
            if let Some(id) = once
                && answer != Err(ProtoError::Conflict)
            {
                sessions.record(id, &answer)?;
            }
            answers.push(answer);
        }
        let mut batch = spaces.db.batch();
        let revision = tx.write(&mut batch)?;
        sessions.write(&mut batch)?;
        batch.insert(&spaces.meta, META_APPLIED, applied);
        crate::failpoint::check("apply-write")?;
        super::gate::commit(batch)?;
        self.inner.revision.store(revision, Ordering::Release);
        Ok(answers)
    }

    /// Whether fjall's worker is so far behind with the memtables (a long compaction) that
    /// the applier should wait before it writes again (`super::memtables`).
    pub fn memtables_behind(&self) -> bool {
        super::memtables::behind(&self.spaces().all(), super::memtables::CEILING)
    }

    /// The view a writer starts from; the caller holds the write lock.
    pub(crate) fn writer_view(&self, spaces: &Arc<Spaces>) -> View {
        View::open_known(spaces, self.revision(), self.compact_revision())
    }

    /// The bindings version: advances with every plugin install or removal.
    pub fn bindings_version(&self) -> u64 {
        self.inner.bindings.load(Ordering::Acquire)
    }

    /// Records the bindings version a writer just committed; the caller holds the write lock.
    pub(crate) fn set_bindings_version(&self, version: u64) {
        self.inner.bindings.store(version, Ordering::Release);
    }

    /// A consistent snapshot of the state.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub(crate) fn view(&self) -> Result<View> {
        View::open(&self.spaces())
    }

    /// Records `applied` alone, for Raft entries without a request (blank, membership).
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn set_applied(&self, applied: &[u8]) -> Result<()> {
        let _guard = self.lock();
        let spaces = self.spaces();
        let mut batch = spaces.db.batch();
        batch.insert(&spaces.meta, META_APPLIED, applied);
        crate::failpoint::check("apply-write")?;
        Ok(super::gate::commit(batch)?)
    }

    /// The blob last given to [`Store::apply`], [`Store::set_applied`] or [`Store::import`].
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn applied(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.spaces().meta.get(META_APPLIED)?.map(|v| v.to_vec()))
    }

    /// Serves a range from one consistent snapshot of the applied state.
    ///
    /// # Errors
    ///
    /// A storage failure; the inner error is the request's (empty key, Compacted,
    /// FutureRevision).
    pub fn range(&self, req: &RangeRequest) -> Outcome<RangeResponse> {
        self.range_within(req, super::view::MAX_RANGE_BYTES)
    }

    /// [`Store::range`] with at most `max_bytes` of keys and values in the answer (a larger
    /// answer fails with `TooLarge` once it passes, having held no more).
    ///
    /// # Errors
    ///
    /// As [`Store::range`].
    pub fn range_within(&self, req: &RangeRequest, max_bytes: usize) -> Outcome<RangeResponse> {
        View::open(&self.spaces())?.range(req, max_bytes)
    }

    /// Serves a read-only txn (compares and ranges) from one snapshot, without the Raft log.
    /// A txn with a put or delete in either branch is refused: it must go through
    /// [`Store::apply`].
    ///
    /// # Errors
    ///
    /// As [`Store::range`].
    pub fn txn(&self, req: &TxnRequest) -> Outcome<TxnResponse> {
        if !req.is_read_only() {
            return Ok(Err(ProtoError::InvalidArgument(
                "a txn that writes must be applied through the log".into(),
            )));
        }
        let view = View::open(&self.spaces())?;
        txn::execute(&mut WriteTx::new(&view), req)
    }

    /// How many keys are live (reserved keys included): a scan of them all, for metrics.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn key_count(&self) -> Result<u64> {
        Ok(self.spaces().current.len()? as u64)
    }

    /// The current store revision (1 for an empty store).
    pub fn revision(&self) -> Revision {
        self.inner.revision.load(Ordering::Acquire)
    }

    /// The compaction floor: the lowest readable revision (0 before any compaction).
    pub fn compact_revision(&self) -> Revision {
        self.inner.compact.load(Ordering::Acquire)
    }

    /// The changes made at `rev`, in sub-revision order (empty for a revision that wrote
    /// nothing, such as 1).
    ///
    /// # Errors
    ///
    /// A storage failure or corrupt history; the inner error is Compacted below the floor
    /// and FutureRevision past the current revision.
    pub fn events_at(&self, rev: Revision) -> Outcome<Vec<Event>> {
        events_in(&View::open(&self.spaces())?, rev)
    }

    /// The live keyspaces (still readable after an import replaced them).
    pub(crate) fn spaces(&self) -> Arc<Spaces> {
        self.inner
            .spaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `spaces` the live keyspaces; the caller holds the write lock and has committed
    /// the root record naming their generation.
    pub(crate) fn switch_spaces(&self, spaces: Spaces) -> Arc<Spaces> {
        let mut live = self
            .inner
            .spaces
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut live, Arc::new(spaces))
    }

    /// The root keyspace (see [`ROOT_SPACE`]).
    pub(crate) fn root(&self) -> &Keyspace {
        &self.inner.root
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, ()> {
        self.inner
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reloads the in-memory counters from storage (after an import).
    pub(crate) fn reload_counters(&self) -> Result<()> {
        let spaces = self.spaces();
        let snapshot = super::gate::snapshot(&spaces.db);
        let (revision, compact) = spaces.counters(&snapshot)?;
        self.inner.revision.store(revision, Ordering::Release);
        self.inner.compact.store(compact, Ordering::Release);
        self.set_bindings_version(bindings_version(&spaces, &snapshot)?);
        self.set_auth(Arc::new(super::auth::load(&spaces, &snapshot)?));
        self.reload_alarms(&spaces, &snapshot)?;
        Ok(())
    }

    pub(super) fn alarm_cell(
        &self,
    ) -> &RwLock<std::collections::BTreeSet<etch_proto::alarm::AlarmMember>> {
        &self.inner.alarms
    }

    pub(super) fn auth_cell(&self) -> &RwLock<Arc<AuthState>> {
        &self.inner.auth
    }

    pub(super) fn auth_signal(&self) -> &tokio::sync::watch::Sender<u64> {
        &self.inner.auth_signal
    }
}

/// Refuses a guard whose reads name keys over the shape limits: checking it would hand
/// them to fjall.
fn check_guard(guard: &Guard) -> std::result::Result<(), ProtoError> {
    guard.reads.iter().try_for_each(|read| {
        check_key("guarded key", &read.key)?;
        check_key("guarded range end", &read.range_end)
    })
}

/// The events at `rev` as `view` sees them (see [`Store::events_at`]).
pub(crate) fn events_in(view: &View, rev: Revision) -> Outcome<Vec<Event>> {
    let touches = match touches_in(view, rev)? {
        Ok(touches) => touches,
        Err(e) => return Ok(Err(e)),
    };
    let events = (touches.touches.into_iter())
        .map(|touch| event_of(view, rev, touch))
        .collect::<Result<_>>()?;
    Ok(Ok(events))
}

/// The keys written at `rev`, in sub-revision order, without their values, and who wrote
/// them.
pub(crate) fn touches_in(view: &View, rev: Revision) -> Outcome<History> {
    if rev < view.compact {
        return Ok(Err(ProtoError::Compacted {
            compact_revision: view.compact,
        }));
    }
    if rev > view.revision {
        return Ok(Err(ProtoError::FutureRevision {
            current_revision: view.revision,
        }));
    }
    let Some(raw) = fjall::Readable::get(view.snapshot(), &view.spaces().history, encode_rev(rev))?
    else {
        return Ok(Ok(History::default()));
    };
    Ok(Ok(decode::<History>(&raw)?))
}

/// One key written at `rev`, with the version written (a put's value is read here).
pub(crate) fn event_of(view: &View, rev: Revision, touch: Touch) -> Result<Event> {
    let Touch { key, deleted } = touch;
    let kv = if deleted {
        KeyValue {
            key,
            mod_revision: rev,
            ..Default::default()
        }
    } else {
        match view.version(&key, rev)? {
            Some(Some(version)) => version.into_kv(key),
            _ => {
                return Err(Error::Corrupt(format!(
                    "history at {rev} lists a put of {key:02x?} without its version"
                )));
            }
        }
    };
    Ok(Event {
        kv,
        is_delete: deleted,
    })
}

/// Runs one request against `view` as `principal`'s write, adding its writes to `batch`.
fn execute(
    view: &View,
    req: &Mutation,
    batch: &mut OwnedWriteBatch,
    principal: &str,
) -> Outcome<Response> {
    let mut tx = WriteTx::new(view);
    tx.made_by(principal);
    let resp = match req {
        Mutation::Put(p) => {
            if p.key.is_empty() {
                return Ok(Err(empty_key()));
            }
            if let Err(e) = lease::check_lease(view, p.lease)? {
                return Ok(Err(e));
            }
            let mut resp = match tx.put(p)? {
                Ok(resp) => resp,
                Err(e) => return Ok(Err(e)),
            };
            resp.header.revision = tx.write(batch)?;
            Response::Put(resp)
        }
        Mutation::DeleteRange(d) => {
            if d.key.is_empty() {
                return Ok(Err(empty_key()));
            }
            let mut resp = tx.delete_range(d)?;
            resp.header.revision = tx.write(batch)?;
            Response::DeleteRange(resp)
        }
        Mutation::Txn(t) => {
            let mut resp = match txn::execute(&mut tx, t)? {
                Ok(resp) => resp,
                Err(e) => return Ok(Err(e)),
            };
            resp.header.revision = tx.write(batch)?;
            Response::Txn(resp)
        }
        Mutation::Compact(c) => {
            if let Err(e) = compact::compact(view, batch, c.revision)? {
                return Ok(Err(e));
            }
            let mut resp = CompactResponse::default();
            resp.header.revision = view.revision;
            Response::Compact(resp)
        }
        Mutation::LeaseGrant(g) => return lease::grant(view, batch, g),
        Mutation::LeaseRevoke(r) => return lease::revoke(view, batch, r.id),
        // Applied on their own ([`Store::apply`]); never named by a client nor judged.
        Mutation::Auth(_) | Mutation::Alarm(_) => {
            return Ok(Err(ProtoError::InvalidArgument(
                "a change of users, roles or alarms cannot be named or judged".into(),
            )));
        }
    };
    Ok(Ok(resp))
}

/// One put of a run ([`Store::apply_puts`]): refused as applying it alone would refuse it,
/// or written into `tx` at a revision of its own.
fn put_in_run(
    view: &View,
    tx: &mut WriteTx<'_>,
    bindings: u64,
    put: &PutRequest,
    guard: Option<&Guard>,
) -> Result<std::result::Result<Response, ProtoError>> {
    if let Some(Err(e)) = guard.map(check_guard) {
        return Ok(Err(e));
    }
    if put.key.is_empty() {
        return Ok(Err(empty_key()));
    }
    // Before any read: storage refuses keys past its limit.
    if let Err(e) = check_put(put) {
        return Ok(Err(e));
    }
    // The key's live version, read once for the guard (whose one read is usually this
    // key) and the put.
    let live = tx.get(&put.key)?;
    if let Some(guard) = guard
        && !guard.holds_for_keys(bindings, |key| {
            if key == put.key.as_slice() {
                Ok(live.clone())
            } else {
                tx.get(key)
            }
        })?
    {
        return Ok(Err(ProtoError::Conflict));
    }
    if let Err(e) = lease::check_lease(view, put.lease)? {
        return Ok(Err(e));
    }
    tx.made_by(guard.map_or("", |g| g.principal.as_str()));
    let mut resp = match tx.put_over(put, live) {
        Ok(resp) => resp,
        Err(e) => return Ok(Err(e)),
    };
    resp.header.revision = tx.seal();
    Ok(Ok(Response::Put(resp)))
}
