//! Golden-script tests of watch and leases: a store, a watch hub, a lessor and a clock the
//! script moves, all driven synchronously, so every file reads as a specification. The
//! lease scripts (`crate::lease`) use the same runner. Regenerate after a deliberate change
//! with `UPDATE_GOLDENFILES=1 cargo test -p etch-host --lib` and review the diff.
//!
//! Commands (keys and values as in the mvcc scripts; every write publishes to the hub):
//!
//! ```text
//! put KEY VALUE [lease=N]     delete KEY [END]     txn ...     compact REV
//! watch NAME KEY [END] [start=N] [prev_kv=true] [no_put=true] [no_delete=true]
//! poll NAME                   (every response the watcher has now)
//! progress NAME               (ask for a progress notification, then poll)
//! cancel NAME   status   range KEY [END]   snapshot (export/import)
//! queue N [bytes=B]           (each live watcher's bounds: N revisions, B bytes; before any watch)
//! queued NAME                 (what the watcher has in its live queue, in revisions and bytes)
//! grant ID TTL   revoke ID   keepalive ID   ttl ID [keys=true]   leases
//! leader TERM    follower    advance SECONDS     expire  (revoke what the lessor finds due)
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use etch_proto::lease::{LeaseGrantRequest, LeaseRevokeRequest};
use etch_proto::watch::{EventType, WatchCreateRequest, WatchResponse};
use etch_proto::{CompactRequest, Error as ProtoError, Request, Response, TxnRequest};
use fjall::Database;
use tempfile::TempDir;

use super::{Hub, Limits, Step, Watcher};
use crate::lease::{Lessor, seconds_left};
use crate::mvcc::Store;
use crate::mvcc::script_parse::{Args, Res, compare, delete_req, op, put_req};
use crate::mvcc::script_test::{show, show_kv, show_response};

macro_rules! scripts {
    ($dir:literal: $($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() -> std::io::Result<()> {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/", $dir, "/testscripts/", stringify!($name), ".txt");
            goldenscript::run(&mut crate::watch::script_test::Runner::new(), path)
        }
    )*};
}
pub(crate) use scripts;

scripts!("watch": replay, live, filters, prev_kv, compacted, progress, slow_watcher, byte_budget);

/// The runner's queue bounds unless a script sets them: the node's defaults.
const LIMITS: Limits = Limits {
    revisions: 128,
    bytes: 16 << 20,
    node_bytes: 256 << 20,
};

pub(crate) struct Runner {
    _dir: TempDir,
    store: Store,
    hub: Hub,
    watchers: BTreeMap<String, Watcher>,
    lessor: Lessor,
    start: Instant,
    elapsed: Duration,
    entries: u64,
}

impl Runner {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Database::builder(dir.path()).open().expect("open db");
        let store = Store::open(&db).expect("open store");
        Runner {
            _dir: dir,
            hub: Hub::new(store.clone(), LIMITS),
            store,
            watchers: BTreeMap::new(),
            lessor: Lessor::default(),
            start: Instant::now(),
            elapsed: Duration::ZERO,
            entries: 0,
        }
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    /// Applies a write as the state machine would, then lets the hub publish it.
    fn apply(&mut self, req: Request) -> Res<Result<Response, ProtoError>> {
        self.entries += 1;
        let applied = format!("entry {}", self.entries);
        let outcome = self.store.apply_request(&req, applied.as_bytes())?;
        self.hub.publish()?;
        Ok(outcome)
    }

    fn watcher(&mut self, name: &str) -> Res<&mut Watcher> {
        self.watchers
            .get_mut(name)
            .ok_or_else(|| format!("no watcher {name}").into())
    }

    fn poll(&mut self, name: &str, out: &mut String) -> Res<()> {
        let mut any = false;
        loop {
            match self.watcher(name)?.step()? {
                Step::Idle => break,
                Step::Send(resp) => {
                    any = true;
                    show_watch(out, &resp)?;
                    if resp.canceled {
                        self.watchers.remove(name);
                        break;
                    }
                }
            }
        }
        if !any {
            writeln!(out, "nothing")?;
        }
        Ok(())
    }
}

fn show_watch(out: &mut String, resp: &WatchResponse) -> Res<()> {
    let rev = resp.header.revision;
    if resp.created {
        writeln!(out, "created rev={rev}")?;
    } else if resp.canceled {
        writeln!(
            out,
            "canceled rev={rev} compact_revision={} reason={:?}",
            resp.compact_revision, resp.cancel_reason
        )?;
    } else if resp.is_progress_notify() {
        writeln!(out, "progress rev={rev}")?;
    } else {
        writeln!(out, "rev={rev}")?;
        for event in &resp.events {
            match event.kind {
                EventType::Put => write!(out, "  put {}", show_kv(&event.kv))?,
                EventType::Delete => write!(
                    out,
                    "  delete {} mod={}",
                    show(&event.kv.key),
                    event.kv.mod_revision
                )?,
            }
            if let Some(prev) = &event.prev_kv {
                write!(out, " (prev {})", show_kv(prev))?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn outcome(out: &mut String, result: Result<Response, ProtoError>) -> Res<()> {
    match result {
        Ok(resp) => show_response(out, "", &resp),
        Err(e) => Err(e.into()),
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(&mut self, cmd: &goldenscript::Command, _: &goldenscript::Context) -> Res<String> {
        let mut out = String::new();
        let mut args = Args::from_command(cmd);
        match cmd.name.as_str() {
            "put" => {
                let req = put_req(&mut args)?;
                args.done()?;
                outcome(&mut out, self.apply(Request::Put(req))?)?;
            }
            "delete" => {
                let req = delete_req(&mut args)?;
                args.done()?;
                outcome(&mut out, self.apply(Request::DeleteRange(req))?)?;
            }
            "txn" => {
                let req = TxnRequest {
                    compare: args
                        .take_all("if")
                        .iter()
                        .map(|c| compare(c))
                        .collect::<Res<_>>()?,
                    success: args
                        .take_all("then")
                        .iter()
                        .map(|o| op(o))
                        .collect::<Res<_>>()?,
                    failure: args
                        .take_all("else")
                        .iter()
                        .map(|o| op(o))
                        .collect::<Res<_>>()?,
                };
                args.done()?;
                outcome(&mut out, self.apply(Request::Txn(req))?)?;
            }
            "compact" => {
                let revision = args.pos.pop_front().ok_or("revision not given")?.parse()?;
                args.done()?;
                let req = CompactRequest {
                    revision,
                    physical: false,
                };
                outcome(&mut out, self.apply(Request::Compact(req))?)?;
            }
            "watch" => {
                let name = args.pos.pop_front().ok_or("watcher name not given")?;
                let req = WatchCreateRequest {
                    key: args.next("key")?,
                    range_end: args.next_opt(),
                    start_revision: args.opt("start")?,
                    progress_notify: false,
                    no_put: args.opt("no_put")?,
                    no_delete: args.opt("no_delete")?,
                    prev_kv: args.opt("prev_kv")?,
                };
                args.done()?;
                match Watcher::open(&self.hub, &req) {
                    Ok((watcher, created)) => {
                        show_watch(&mut out, &created)?;
                        self.watchers.insert(name, watcher);
                    }
                    Err(canceled) => show_watch(&mut out, &canceled)?,
                }
            }
            "poll" => {
                let name = args.pos.pop_front().ok_or("watcher name not given")?;
                args.done()?;
                self.poll(&name, &mut out)?;
            }
            "progress" => {
                let name = args.pos.pop_front().ok_or("watcher name not given")?;
                args.done()?;
                self.watcher(&name)?.request_progress();
                self.poll(&name, &mut out)?;
            }
            "cancel" => {
                let name = args.pos.pop_front().ok_or("watcher name not given")?;
                args.done()?;
                let resp = self.watcher(&name)?.cancel();
                show_watch(&mut out, &resp)?;
                self.watchers.remove(&name);
            }
            "queue" => {
                let revisions = args.pos.pop_front().ok_or("length not given")?.parse()?;
                let bytes: usize = args.opt("bytes")?;
                args.done()?;
                if !self.watchers.is_empty() {
                    return Err("set the queue bounds before any watch".into());
                }
                let bytes = if bytes == 0 { LIMITS.bytes } else { bytes };
                self.hub = Hub::new(
                    self.store.clone(),
                    Limits {
                        revisions,
                        bytes,
                        ..LIMITS
                    },
                );
                if bytes == LIMITS.bytes {
                    writeln!(out, "queue length {revisions}")?;
                } else {
                    writeln!(out, "queue length {revisions}, {bytes} bytes")?;
                }
            }
            "queued" => {
                let name = args.pos.pop_front().ok_or("watcher name not given")?;
                args.done()?;
                match self.watcher(&name)?.queued() {
                    Some((revisions, bytes)) => {
                        writeln!(out, "live: {revisions} revisions, {bytes} bytes queued")?
                    }
                    None => writeln!(out, "catching up from history")?,
                }
            }
            "range" => {
                let req = crate::mvcc::script_parse::range_req(&mut args)?;
                args.done()?;
                crate::mvcc::script_test::show_range(&mut out, "", &self.store.range(&req)??)?;
            }
            "snapshot" => {
                args.done()?;
                if !self.watchers.is_empty() {
                    return Err("snapshot with no watchers open".into());
                }
                let mut stream = Vec::new();
                self.store.export(&mut stream)?;
                let dir = tempfile::tempdir()?;
                let store = Store::open(&Database::builder(dir.path()).open()?)?;
                store.import(&mut stream.as_slice(), b"snapshot")?;
                self.hub = Hub::new(store.clone(), LIMITS);
                self.store = store;
                self._dir = dir;
                writeln!(out, "exported and imported into a fresh database")?;
            }
            "status" => {
                args.done()?;
                writeln!(
                    out,
                    "revision={} compact_revision={} published={} live_watchers={}",
                    self.store.revision(),
                    self.store.compact_revision(),
                    self.hub.published(),
                    self.hub.live_watchers()
                )?;
            }
            _ => return self.run_lease(cmd.name.as_str(), args),
        }
        Ok(out)
    }
}

impl Runner {
    /// The lease commands, as the node runs them on the leader.
    fn run_lease(&mut self, name: &str, mut args: Args) -> Res<String> {
        let mut out = String::new();
        let mut id =
            || -> Res<i64> { Ok(args.pos.pop_front().ok_or("lease id not given")?.parse()?) };
        match name {
            "grant" => {
                let id = id()?;
                let ttl = args.pos.pop_front().ok_or("ttl not given")?.parse()?;
                args.done()?;
                match self.apply(Request::LeaseGrant(LeaseGrantRequest { ttl, id }))? {
                    Ok(Response::LeaseGrant(g)) => {
                        self.lessor.grant(g.id, g.ttl, self.now());
                        writeln!(
                            out,
                            "granted id={} ttl={} rev={}",
                            g.id, g.ttl, g.header.revision
                        )?;
                    }
                    Ok(other) => return Err(format!("unexpected {other:?}").into()),
                    Err(e) => return Err(e.into()),
                }
            }
            "revoke" => {
                let id = id()?;
                args.done()?;
                let result = self.apply(Request::LeaseRevoke(LeaseRevokeRequest { id }))?;
                self.lessor.revoked(id);
                let resp = result?;
                writeln!(out, "revoked rev={}", Self::revision(resp))?;
            }
            "keepalive" => {
                let id = id()?;
                args.done()?;
                let Some(ttl) = self.store.lease(id)? else {
                    return Err(ProtoError::LeaseNotFound(id).into());
                };
                if !self.lessor.keep_alive(id, ttl, self.now()) {
                    return Err(ProtoError::LeaseNotFound(id).into());
                }
                writeln!(out, "ttl={ttl}")?;
            }
            "ttl" => {
                let id = id()?;
                let keys: bool = args.opt("keys")?;
                args.done()?;
                match self.store.lease(id)? {
                    None => writeln!(out, "ttl=-1 (not found)")?,
                    Some(granted) => {
                        let left = self.lessor.remaining(id, self.now()).map(seconds_left);
                        writeln!(out, "ttl={} granted_ttl={granted}", left.unwrap_or(granted))?;
                        if keys {
                            for key in self.store.lease_keys(id)? {
                                writeln!(out, "  key {}", show(&key))?;
                            }
                        }
                    }
                }
            }
            "leases" => {
                args.done()?;
                for (id, ttl) in self.store.leases()? {
                    writeln!(out, "lease {id} ttl={ttl}")?;
                }
            }
            "leader" => {
                let term = args.pos.pop_front().ok_or("term not given")?.parse()?;
                args.done()?;
                let leases = self.store.leases()?;
                self.lessor.promote(term, &leases, self.now());
                writeln!(out, "leading in term {term}")?;
            }
            "follower" => {
                args.done()?;
                self.lessor.demote();
                writeln!(out, "following")?;
            }
            "advance" => {
                let secs: f64 = args.pos.pop_front().ok_or("seconds not given")?.parse()?;
                args.done()?;
                self.elapsed += Duration::from_secs_f64(secs);
                writeln!(out, "t={}s", self.elapsed.as_secs_f64())?;
            }
            "expire" => {
                args.done()?;
                let now = self.now();
                self.lessor.sync(&self.store.leases()?, now);
                let due = self.lessor.expired(now);
                if due.is_empty() {
                    writeln!(out, "nothing expired")?;
                }
                for id in due {
                    let result = self.apply(Request::LeaseRevoke(LeaseRevokeRequest { id }))?;
                    self.lessor.expire_done(id);
                    match result {
                        Ok(resp) => writeln!(out, "expired {id} rev={}", Self::revision(resp))?,
                        Err(e) => writeln!(out, "expired {id}: {e}")?,
                    }
                }
            }
            name => return Err(format!("unknown command {name:?}").into()),
        }
        Ok(out)
    }

    fn revision(mut resp: Response) -> i64 {
        resp.header_mut().revision
    }
}
