//! Reactor steps with reactors written in WAT (the canonical ABI of `on-events` on a bump
//! allocator, the `reactor` world embedded and encoded as `etch-plugin build` does): what
//! a batch holds (the binding's prefix, no reserved keys, never the reactor's own
//! revisions), the writes it stages, and every failure coming back typed and counted while
//! the same engine goes on serving.

use etch_proto::limits::Limits;
use etch_proto::plugin::{PluginBinding, PluginHook, PluginInstallRequest, PluginLimits};
use etch_proto::{
    Compare, CompareResult, CompareTarget, PutRequest, Request, RequestOp, TxnRequest,
};

use super::limits_test::{BUMP_ALLOC, Fixture};
use super::{PluginError, Step, checkpoint_key};
use crate::mvcc::BindingRecord;

/// `on-events(list<event>) -> result<_, string>` as a core function: the list's pointer
/// and length in, a pointer to the result out (discriminant byte at +0, the error string
/// at +4 and +8). `$put` is the `kv-write.put` import (key, value, return pointer).
fn component(body: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (import "etch:plugin/kv-write@0.1.0" "put" (func $put (param i32 i32 i32 i32 i32)))
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          (data (i32.const 100) "/out/x")
          (data (i32.const 200) "seen")
          (data (i32.const 300) "broken")
          (data (i32.const 400) "\00etch/x")
          {BUMP_ALLOC}
          (func (export "on-events") (param i32 i32) (result i32)
            {body}))"#
    );
    super::limits_test::encode_component(&wat, "reactor@0.1.0")
}

/// Stages `/out/x = seen`, returns ok.
const WRITE: &str =
    "(call $put (i32.const 100) (i32.const 6) (i32.const 200) (i32.const 4) (i32.const 48))
    (i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)";
/// Tries to stage a reserved key; returns ok only if that was refused (`48` holds 1).
const RESERVED: &str =
    "(call $put (i32.const 400) (i32.const 7) (i32.const 200) (i32.const 4) (i32.const 48))
    (if (i32.eqz (i32.load8_u (i32.const 48))) (then unreachable))
    (i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)";
const ERR: &str = "(i32.store8 (i32.const 32) (i32.const 1))
    (i32.store (i32.const 36) (i32.const 300)) (i32.store (i32.const 40) (i32.const 6))
    (i32.const 32)";
const LOOP: &str = "(loop $l (br $l)) (unreachable)";
const TRAP: &str = "(unreachable)";

impl Fixture {
    /// Binds reactor `name` with `body` on `/in/`, and returns its record.
    fn bind_reactor(&self, name: &str, body: &str, limits: PluginLimits) -> BindingRecord {
        let req = PluginInstallRequest {
            binding: PluginBinding {
                name: name.into(),
                prefix: b"/in/".to_vec(),
                hook: PluginHook::React,
                limits,
                ..Default::default()
            },
            wasm: component(body),
            installed_by: "root".into(),
        };
        self.plugins.precompile(&req);
        let outcome = self
            .store
            .plugin_install(&req, b"applied")
            .expect("storage");
        assert!(outcome.is_ok(), "{outcome:?}");
        let (_, bindings) = self.store.plugin_bindings().expect("bindings");
        bindings
            .into_iter()
            .find(|b| b.binding.name == name)
            .expect("bound")
    }

    fn write(&self, key: &[u8]) -> i64 {
        let req = Request::Put(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        let outcome = self.store.apply_request(&req, b"applied").expect("storage");
        assert!(outcome.is_ok(), "{outcome:?}");
        self.store.revision()
    }
}

#[test]
fn a_batch_holds_the_prefix_and_never_the_reactors_own_revisions() {
    let f = Fixture::new();
    let record = f.bind_reactor("r", WRITE, PluginLimits::default());
    assert_eq!(record.installed_at, 1);
    assert!(
        f.plugins
            .runtime()
            .is_compiled(&record.sha256, PluginHook::React)
    );
    let first = f.write(b"/in/a");
    f.write(b"/elsewhere");
    // A revision that puts the reactor's checkpoint is its own write: skipped whole, even
    // the key under its prefix written with it.
    let txn = Request::Txn(TxnRequest {
        compare: vec![Compare {
            key: checkpoint_key("r"),
            range_end: Vec::new(),
            result: CompareResult::Equal,
            target: CompareTarget::ModRevision(0),
        }],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"/in/own".to_vec(),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: checkpoint_key("r"),
                value: b"3".to_vec(),
                ..Default::default()
            }),
        ],
        failure: Vec::new(),
    });
    assert!(
        f.store
            .apply_request(&txn, b"applied")
            .expect("storage")
            .is_ok()
    );
    let last = f.write(b"/in/b");
    let step = f
        .plugins
        .react(&f.store, &record, first, &Limits::default())
        .expect("step");
    let Step::Batch {
        through,
        events,
        outcome,
    } = step
    else {
        panic!("expected a batch, got {step:?}")
    };
    assert_eq!((through, events), (last, 2), "/in/a and /in/b only");
    assert!(
        matches!(&outcome.writes[..], [RequestOp::Put(p)] if p.key == b"/out/x" && p.value == b"seen"),
        "{outcome:?}"
    );
    // Past the end: nothing to do.
    let step = f
        .plugins
        .react(&f.store, &record, last + 1, &Limits::default())
        .expect("step");
    assert!(
        matches!(step, Step::Idle { through } if through == last),
        "{step:?}"
    );
    // Only revisions without events for it: idle up to the last one.
    let quiet = f.write(b"/elsewhere");
    let step = f
        .plugins
        .react(&f.store, &record, last + 1, &Limits::default())
        .expect("step");
    assert!(
        matches!(step, Step::Idle { through } if through == quiet),
        "{step:?}"
    );
    assert_eq!(f.plugins.stats_of("r").calls, 1);
}

#[test]
fn a_reactor_cannot_stage_reserved_keys() {
    let f = Fixture::new();
    let record = f.bind_reactor("r", RESERVED, PluginLimits::default());
    let from = f.write(b"/in/a");
    let step = f
        .plugins
        .react(&f.store, &record, from, &Limits::default())
        .expect("the put was refused, not staged");
    assert!(
        matches!(&step, Step::Batch { outcome, .. } if outcome.writes.is_empty()),
        "{step:?}"
    );
}

#[test]
fn failures_are_typed_counted_and_the_engine_goes_on() {
    let f = Fixture::new();
    let limits = PluginLimits {
        fuel: 1_000_000,
        timeout_ms: 10_000,
        memory_mb: 1,
    };
    let from = f.write(b"/in/a");
    let cases = [
        ("err", ERR, limits),
        ("trap", TRAP, limits),
        ("fuel", LOOP, limits),
        (
            "slow",
            LOOP,
            PluginLimits {
                fuel: u64::MAX,
                timeout_ms: 20,
                memory_mb: 1,
            },
        ),
    ];
    for (name, body, limits) in cases {
        let record = f.bind_reactor(name, body, limits);
        let err = f
            .plugins
            .react(&f.store, &record, from, &Limits::default())
            .expect_err("a failing reactor");
        let expected = match name {
            "err" => matches!(&err, PluginError::Refused(m) if m == "broken"),
            "trap" => matches!(err, PluginError::Trap(_)),
            "fuel" => matches!(err, PluginError::OutOfFuel),
            _ => err.to_string().starts_with("deadline of 20 ms "),
        };
        assert!(expected, "{name}: {err:?}");
        let stats = f.plugins.stats_of(name);
        assert_eq!((stats.calls, stats.failures), (1, 1), "{name}");
        assert_eq!(stats.last_error, err.to_string());
    }
    // The engine still serves a well-behaved reactor.
    let record = f.bind_reactor("good", WRITE, PluginLimits::default());
    let step = f
        .plugins
        .react(&f.store, &record, from, &Limits::default())
        .expect("good");
    assert!(matches!(step, Step::Batch { events: 1, .. }), "{step:?}");
    assert!(f.plugins.stats_of("good").last_error.is_empty());
}
