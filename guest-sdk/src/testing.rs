//! A native test harness: run a [`Validator`] or a [`Reactor`] as plain Rust against an
//! in-memory key space, without WebAssembly and without a cluster.
//!
//! [`Harness`] plays the node for a validator: it turns writes into the [`Request`] a
//! validator would get (each key with its previous version), answers the [`Host`] calls
//! from its own key space and the binding's config, and applies a write only when the
//! validator allows it — so a test reads as a sequence of writes and the verdicts they get.
//!
//! [`ReactorHarness`] plays the leader for a reactor: writes made through it commit at once
//! and queue their events (those under the binding's prefix); [`ReactorHarness::run`]
//! delivers the queue as one batch and, if the reactor returns `Ok`, commits the writes it
//! staged at one new revision, which — as on a node — is never delivered back to it. An
//! `Err` commits nothing and keeps the batch queued, to be delivered again.
//!
//! What neither can show is behaviour under the node's limits (fuel, time, memory); test
//! those on a node.
//!
//! # Examples
//!
//! ```
//! use etch_plugin::testing::{Harness, Write};
//! use etch_plugin::{Host, OpKind, Request, Validator, Verdict};
//!
//! /// Keys under the prefix may be created but never changed.
//! struct WriteOnce;
//!
//! impl Validator for WriteOnce {
//!     fn validate(_: &dyn Host, request: &Request) -> Verdict {
//!         match request.ops_in_prefix().find(|op| op.prev.is_some()) {
//!             Some(op) => Verdict::deny("immutable", format!("{} exists", op.key_str())),
//!             None => Verdict::Allow,
//!         }
//!     }
//! }
//!
//! let mut h = Harness::<WriteOnce>::new("/ids/");
//! assert!(h.put("/ids/a", "1").is_allow());
//! assert!(!h.put("/ids/a", "2").is_allow());
//! assert_eq!(h.get("/ids/a").unwrap().value, b"1");
//! // A txn is judged as a whole: nothing of it applies.
//! let v = h.write([Write::put("/ids/b", "1"), Write::delete("/ids/a")]);
//! assert!(!v.is_allow());
//! assert!(h.get("/ids/b").is_none());
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use crate::host::{Host, in_range, prefix_end};
use crate::reactor::{Reactor, ReactorHost};
use crate::types::{Event, KeyValue, Level, Op, OpKind, Request, Verdict};
use crate::validator::Validator;

/// The prefix of keys reserved for etch (reactor checkpoints), as on a node.
const RESERVED_PREFIX: &[u8] = b"\0etch/";

/// One write of a request given to [`Harness::write`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Deletes the keys of `[key, range_end)` (etcd's conventions; empty = just `key`).
    Delete {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl Write {
    /// Whether this write may change a key under `prefix`, by the node's rule.
    fn touches(&self, prefix: &[u8]) -> bool {
        match self {
            Write::Put { key, .. } => key.starts_with(prefix),
            Write::Delete { key, range_end } if range_end.is_empty() => key.starts_with(prefix),
            Write::Delete { key, range_end } => {
                let end = prefix_end(prefix);
                let below_end = |k: &[u8]| end == [0] || k < end.as_slice();
                if range_end.as_slice() == [0] {
                    below_end(key)
                } else {
                    key < range_end && below_end(key) && range_end.as_slice() > prefix
                }
            }
        }
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Write {
        Write::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Write {
        Write::Delete {
            key: key.into(),
            range_end: Vec::new(),
        }
    }

    pub fn delete_prefix(prefix: impl Into<Vec<u8>>) -> Write {
        let key = prefix.into();
        Write::Delete {
            range_end: prefix_end(&key),
            key,
        }
    }
}

/// An in-memory node for one binding of validator `V`.
pub struct Harness<V> {
    host: TestHost,
    principal: String,
    prefix: Vec<u8>,
    validator: PhantomData<V>,
}

impl<V: Validator> Harness<V> {
    /// A harness for a binding on `prefix`, with an empty key space at revision 1, no
    /// config and principal `root`.
    pub fn new(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        Harness {
            host: TestHost::new(prefix.clone()),
            principal: "root".into(),
            prefix,
            validator: PhantomData,
        }
    }

    /// Sets a config entry of the binding.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.host.config.insert(name.into(), value.into());
        self
    }

    /// Sets who the following writes come from.
    pub fn principal(mut self, principal: &str) -> Self {
        self.principal = principal.into();
        self
    }

    /// Writes `key` without asking the validator (state that existed before the binding).
    pub fn seed(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.host.apply(&[Write::put(key, value)], "root");
    }

    /// Validates a put and applies it if allowed.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Verdict {
        self.write([Write::put(key, value)])
    }

    /// Validates a delete of `key` and applies it if allowed.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> Verdict {
        self.write([Write::delete(key)])
    }

    /// Validates all `writes` as one request (a txn) and applies them all if allowed. As on
    /// a node, the validator is asked only when a write may change a key under its prefix
    /// (a put under it, a delete whose range meets it); other requests apply unasked.
    pub fn write(&mut self, writes: impl IntoIterator<Item = Write>) -> Verdict {
        let writes: Vec<Write> = writes.into_iter().collect();
        if !writes.iter().any(|w| w.touches(&self.prefix)) {
            self.host.apply(&writes, &self.principal);
            return Verdict::Allow;
        }
        if let Err(e) = self.init() {
            panic!(
                "the validator's init failed: {e} (on a node every call of this binding would \
                 fail; Harness::init runs it alone)"
            );
        }
        let verdict = V::validate(&self.host, &self.request(&writes));
        if verdict.is_allow() {
            self.host.apply(&writes, &self.principal);
        }
        verdict
    }

    /// Runs the validator's [`Validator::init`] with the binding's configuration, as a node
    /// does before an instance's first call ([`write`](Self::write) does it before each).
    ///
    /// # Errors
    ///
    /// What `init` returns.
    pub fn init(&self) -> Result<(), String> {
        V::init(&self.host, &self.host.config_list())
    }

    /// The request the validator gets for `writes`, at the current state.
    pub fn request(&self, writes: &[Write]) -> Request {
        let mut ops = Vec::new();
        for w in writes {
            match w {
                Write::Put { key, value } => ops.push(Op {
                    kind: OpKind::Put,
                    key: key.clone(),
                    value: value.clone(),
                    prev: self.host.kvs.get(key).cloned(),
                }),
                Write::Delete { key, range_end } => {
                    ops.extend(self.host.select(key, range_end).map(|kv| Op {
                        kind: OpKind::Delete,
                        key: kv.key.clone(),
                        value: Vec::new(),
                        prev: Some(kv.clone()),
                    }))
                }
            }
        }
        Request {
            principal: self.principal.clone(),
            prefix: self.prefix.clone(),
            revision: self.host.revision,
            ops,
        }
    }

    /// The live version of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<KeyValue> {
        self.host.kvs.get(key.as_ref()).cloned()
    }

    /// The messages the validator logged so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.host.logs.borrow().clone()
    }

    /// The host the validator sees, for calling [`Validator::validate`] directly.
    pub fn host(&self) -> &dyn Host {
        &self.host
    }
}

/// An in-memory node for one binding of reactor `R`.
///
/// # Examples
///
/// ```
/// use etch_plugin::testing::{ReactorHarness, Write};
/// use etch_plugin::{Event, Reactor, ReactorHost};
///
/// /// Copies every value under the prefix to `copy/` + the key.
/// struct Copy;
///
/// impl Reactor for Copy {
///     fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String> {
///         for e in events {
///             host.put(&[b"copy/".as_slice(), &e.kv.key].concat(), &e.kv.value)?;
///         }
///         Ok(())
///     }
/// }
///
/// let mut h = ReactorHarness::<Copy>::new("/cfg/");
/// h.put("/cfg/a", "1");
/// h.put("/other", "x"); // not under the prefix: never delivered
/// assert_eq!(h.run(), Ok(vec![Write::put("copy//cfg/a", "1")]));
/// assert_eq!(h.get("copy//cfg/a").unwrap().value, b"1");
/// assert!(h.pending().is_empty());
/// // Nothing queued: the reactor is not called.
/// assert_eq!(h.run(), Ok(vec![]));
/// ```
pub struct ReactorHarness<R> {
    host: TestHost,
    prefix: Vec<u8>,
    /// Who the client writes are from (`principal` of their events).
    principal: String,
    pending: Vec<Event>,
    calls: usize,
    reactor: PhantomData<R>,
}

impl<R: Reactor> ReactorHarness<R> {
    /// A harness for a binding on `prefix`, with an empty key space at revision 1 and no
    /// config.
    pub fn new(prefix: impl Into<Vec<u8>>) -> Self {
        let prefix = prefix.into();
        ReactorHarness {
            host: TestHost::new(prefix.clone()),
            prefix,
            principal: "root".into(),
            pending: Vec::new(),
            calls: 0,
            reactor: PhantomData,
        }
    }

    /// Sets a config entry of the binding.
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.host.config.insert(name.into(), value.into());
        self
    }

    /// Makes the following client writes `principal`'s (default `root`): the `principal` of
    /// their events.
    pub fn principal(&mut self, principal: &str) -> &mut Self {
        self.principal = principal.into();
        self
    }

    /// Commits a put from a client; returns its revision.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> i64 {
        self.write([Write::put(key, value)])
    }

    /// Commits a delete of `key` from a client; returns the store revision after it (as
    /// before it if there was nothing to delete).
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> i64 {
        self.write([Write::delete(key)])
    }

    /// Commits `writes` from a client as one txn at one revision, and queues the events
    /// under the prefix; returns the store revision after it.
    pub fn write(&mut self, writes: impl IntoIterator<Item = Write>) -> i64 {
        let writes: Vec<Write> = writes.into_iter().collect();
        let events = self.host.apply(&writes, &self.principal);
        let prefix = &self.prefix;
        self.pending.extend(
            events
                .into_iter()
                .filter(|e| e.kv.key.starts_with(prefix) && !e.kv.key.starts_with(RESERVED_PREFIX)),
        );
        self.host.revision
    }

    /// Delivers the queued events as one batch (if there are any). `Ok` commits the writes
    /// the reactor staged at one new revision and returns them; `Err` commits nothing and
    /// keeps the batch queued.
    ///
    /// # Errors
    ///
    /// The reactor's error, or a staged write the node would refuse.
    pub fn run(&mut self) -> Result<Vec<Write>, String> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        self.calls += 1;
        self.host.staged.borrow_mut().clear();
        R::init(&self.host, &self.host.config_list()).map_err(|e| format!("init failed: {e}"))?;
        let result = R::on_events(&self.host, &self.pending);
        let staged = std::mem::take(&mut *self.host.staged.borrow_mut());
        result?;
        self.pending.clear();
        // The reactor's own revision: committed, never delivered back.
        self.host.apply(&staged, "reactor:harness");
        Ok(staged)
    }

    /// The events queued for the next [`run`](Self::run).
    pub fn pending(&self) -> &[Event] {
        &self.pending
    }

    /// How many times the reactor has been called.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// The live version of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<KeyValue> {
        self.host.kvs.get(key.as_ref()).cloned()
    }

    /// The live keys starting with `prefix`, in key order.
    pub fn prefix(&self, prefix: impl AsRef<[u8]>) -> Vec<KeyValue> {
        Host::prefix(&self.host, prefix.as_ref(), 0)
    }

    /// The store revision.
    pub fn revision(&self) -> i64 {
        self.host.revision
    }

    /// The messages the reactor logged so far.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.host.logs.borrow().clone()
    }
}

/// The in-memory [`Host`] behind the harnesses.
struct TestHost {
    /// The binding's name and prefix.
    name: String,
    prefix: Vec<u8>,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    config: BTreeMap<String, String>,
    logs: RefCell<Vec<(Level, String)>>,
    revision: i64,
    /// A reactor's writes during a call.
    staged: RefCell<Vec<Write>>,
}

impl TestHost {
    /// A host for a binding on `prefix` (named `harness`).
    fn new(prefix: Vec<u8>) -> Self {
        TestHost {
            name: "harness".into(),
            prefix,
            kvs: BTreeMap::new(),
            config: BTreeMap::new(),
            logs: RefCell::new(Vec::new()),
            revision: 1,
            staged: RefCell::new(Vec::new()),
        }
    }

    /// The binding's configuration, as `init` receives it.
    fn config_list(&self) -> Vec<(String, String)> {
        (self.config.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The live keys of `[key, end)`, in key order.
    fn select<'a>(&'a self, key: &'a [u8], end: &'a [u8]) -> impl Iterator<Item = &'a KeyValue> {
        self.kvs
            .range(key.to_vec()..)
            .map(|(_, kv)| kv)
            .take_while(move |kv| in_range(&kv.key, key, end))
    }

    /// Applies `writes` at the next revision, as the node would; returns the changes.
    fn apply(&mut self, writes: &[Write], principal: &str) -> Vec<Event> {
        let rev = self.revision + 1;
        let mut events = Vec::new();
        for w in writes {
            match w {
                Write::Put { key, value } => {
                    let prev = self.kvs.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: 0,
                    };
                    self.kvs.insert(key.clone(), kv.clone());
                    events.push(Event {
                        kind: OpKind::Put,
                        kv,
                        prev,
                        principal: principal.into(),
                    });
                }
                Write::Delete { key, range_end } => {
                    let doomed: Vec<Vec<u8>> = self
                        .select(key, range_end)
                        .map(|kv| kv.key.clone())
                        .collect();
                    for k in doomed {
                        let prev = self.kvs.remove(&k);
                        events.push(Event {
                            kind: OpKind::Delete,
                            kv: KeyValue {
                                key: k,
                                mod_revision: rev,
                                ..KeyValue::default()
                            },
                            prev,
                            principal: principal.into(),
                        });
                    }
                }
            }
        }
        if !events.is_empty() {
            self.revision = rev;
        }
        events
    }

    /// Stages a reactor's write with the node's rules.
    fn stage(&self, key: &[u8], write: Write) -> Result<(), String> {
        if key.is_empty() {
            return Err("a key may not be empty".into());
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err("keys under \"\\0etch/\" are reserved for etch".into());
        }
        self.staged.borrow_mut().push(write);
        Ok(())
    }
}

impl Host for TestHost {
    fn config(&self, name: &str) -> Option<String> {
        self.config.get(name).cloned()
    }

    fn config_entries(&self) -> Vec<(String, String)> {
        self.config_list()
    }

    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.kvs.get(key).cloned()
    }

    fn range(&self, key: &[u8], range_end: &[u8], limit: u32) -> Vec<KeyValue> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        self.select(key, range_end).take(limit).cloned().collect()
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn binding_name(&self) -> String {
        self.name.clone()
    }

    fn binding_prefix(&self) -> Vec<u8> {
        self.prefix.clone()
    }
}

impl ReactorHost for TestHost {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.stage(key, Write::put(key, value))
    }

    fn delete(&self, key: &[u8]) -> Result<(), String> {
        self.stage(key, Write::delete(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refuses everything it is asked about, and counts the asks in its log.
    struct No;

    impl Validator for No {
        fn validate(host: &dyn Host, _: &Request) -> Verdict {
            host.log(Level::Info, "asked");
            Verdict::deny("no", "never")
        }
    }

    #[test]
    fn the_validator_is_asked_only_about_writes_that_touch_its_prefix() {
        let mut h = Harness::<No>::new("/p/");
        assert!(
            h.put("/q/a", "1").is_allow(),
            "outside the prefix: not asked"
        );
        assert!(h.delete("/q/a").is_allow());
        assert!(h.write([Write::delete_prefix("/q/")]).is_allow());
        assert!(h.logs().is_empty(), "{:?}", h.logs());
        assert!(!h.put("/p/a", "1").is_allow());
        assert!(
            !h.write([Write::put("/q/b", "1"), Write::put("/p/b", "1")])
                .is_allow()
        );
        assert!(
            !h.write([Write::delete_prefix("/")]).is_allow(),
            "a range over the prefix"
        );
        assert_eq!(h.logs().len(), 3);
        assert!(h.get("/q/b").is_none(), "a txn is judged as a whole");
    }

    /// Wants a numeric `max`; denies with its binding's name and prefix as the reason.
    struct Strict;

    impl Validator for Strict {
        fn init(_: &dyn Host, config: &[(String, String)]) -> Result<(), String> {
            let (_, max) = (config.iter().find(|(k, _)| k == "max")).ok_or("max is not set")?;
            max.parse::<u32>()
                .map(|_| ())
                .map_err(|e| format!("max: {e}"))
        }

        fn validate(host: &dyn Host, _: &Request) -> Verdict {
            let prefix = String::from_utf8_lossy(&host.binding_prefix()).into_owned();
            Verdict::deny("no", format!("{} on {prefix}", host.binding_name()))
        }
    }

    #[test]
    fn init_gets_the_configuration_and_the_host_tells_the_binding() {
        assert_eq!(
            Harness::<Strict>::new("/p/").init(),
            Err("max is not set".into())
        );
        let mut h = Harness::<Strict>::new("/p/").config("max", "3");
        assert_eq!(h.init(), Ok(()));
        assert_eq!(h.put("/p/a", "1"), Verdict::deny("no", "harness on /p/"));
    }

    #[test]
    #[should_panic(expected = "the validator's init failed: max: invalid digit found in string")]
    fn a_write_through_a_harness_whose_init_fails_panics_with_the_reason() {
        Harness::<Strict>::new("/p/")
            .config("max", "x")
            .put("/p/a", "1");
    }
}
