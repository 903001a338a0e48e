//! Containment of hostile validators (WAT): limits above the node's maxima are clamped at
//! call time, and a running call is interrupted when its binding is removed or the node
//! stops, long before its own deadline.

use std::time::Duration;

use etch_proto::plugin::{PluginBinding, PluginInstallRequest, PluginLimits};
use etch_proto::{Error as ProtoError, PutRequest, Request};

use super::limits_test::{BUMP_ALLOC, encode_component};
use super::{Maxima, PluginError, Plugins};
use crate::mvcc::Store;

/// A validator whose `validate` runs `body`.
fn validator(body: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          {BUMP_ALLOC}
          (func (export "validate") (param i32 i32 i32 i32 i64 i32 i32) (result i32)
            {body}))"#
    );
    encode_component(&wat, "validator@0.1.0")
}

const LOOP: &str = "(loop $l (br $l)) (unreachable)";
const GROW: &str = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    (unreachable)";

/// An hour of deadline and all the fuel there is: what an unbounded install asked for.
const ENDLESS: PluginLimits = PluginLimits {
    fuel: u64::MAX,
    timeout_ms: 3_600_000,
    memory_mb: 256,
};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    plugins: Plugins,
}

impl Fixture {
    fn new(maxima: Maxima) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = fjall::Database::builder(dir.path()).open().expect("db");
        Fixture {
            store: Store::open(&db).expect("store"),
            plugins: Plugins::with_maxima(maxima, Duration::from_secs(5)).expect("engine"),
            _dir: dir,
        }
    }

    /// Stores a binding as apply would, whatever its limits (no maxima at apply).
    fn bind(&self, name: &str, body: &str, limits: PluginLimits) {
        let req = PluginInstallRequest {
            binding: PluginBinding {
                name: name.into(),
                prefix: format!("/p/{name}/").into_bytes(),
                limits,
                ..Default::default()
            },
            wasm: validator(body),
            installed_by: "root".into(),
        };
        let outcome = self
            .store
            .plugin_install(&req, b"applied")
            .expect("storage");
        assert!(outcome.is_ok(), "{outcome:?}");
    }

    fn put(&self, name: &str) -> Result<crate::mvcc::Guard, ProtoError> {
        let req = Request::Put(PutRequest {
            key: format!("/p/{name}/k").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        self.plugins.judge(&self.store, "mallory", &req)
    }
}

fn cause(result: Result<crate::mvcc::Guard, ProtoError>) -> String {
    match result {
        Err(ProtoError::PluginFailed { cause, .. }) => cause,
        other => panic!("expected PluginFailed, got {other:?}"),
    }
}

#[test]
fn a_stored_binding_above_the_maxima_obeys_them() {
    let f = Fixture::new(Maxima {
        fuel: u64::MAX,
        timeout: Duration::from_millis(50),
        memory_mb: 2,
    });
    f.bind("spin", LOOP, ENDLESS);
    f.bind("hog", GROW, ENDLESS);
    let spun = cause(f.put("spin"));
    assert!(spun.starts_with("deadline of 50 ms "), "{spun}");
    assert_eq!(cause(f.put("hog")), PluginError::Memory(2).to_string());
    let fuel = Fixture::new(Maxima {
        fuel: 1_000_000,
        ..Maxima::default()
    });
    fuel.bind("spin", LOOP, ENDLESS);
    assert_eq!(cause(fuel.put("spin")), PluginError::OutOfFuel.to_string());
}

/// Starts a judged put into `spin` on its own thread and waits until its call holds a
/// cancel flag (so an interruption from now on reaches it).
fn spinning(f: &Fixture) -> std::thread::JoinHandle<Result<crate::mvcc::Guard, ProtoError>> {
    let (store, plugins) = (f.store.clone(), f.plugins.clone());
    let call = std::thread::spawn(move || {
        let req = Request::Put(PutRequest {
            key: b"/p/spin/k".to_vec(),
            ..Default::default()
        });
        plugins.judge(&store, "mallory", &req)
    });
    crate::testing::wait_until("the call to start", || f.plugins.has_cancel("spin"));
    call
}

#[test]
fn removing_a_binding_interrupts_its_running_calls() {
    let f = Fixture::new(Maxima {
        fuel: u64::MAX,
        timeout: Duration::from_secs(3600),
        memory_mb: 256,
    });
    f.bind("spin", LOOP, ENDLESS);
    let call = spinning(&f);
    let removed = f.store.plugin_remove("spin", b"applied").expect("storage");
    assert!(removed.is_ok(), "{removed:?}");
    f.plugins.warm(&f.store);
    let cause = cause(call.join().expect("no panic"));
    assert_eq!(
        cause,
        PluginError::Cancelled("the binding was removed or replaced").to_string()
    );
}

#[test]
fn stopping_interrupts_running_calls_and_refuses_new_ones() {
    let f = Fixture::new(Maxima {
        fuel: u64::MAX,
        timeout: Duration::from_secs(3600),
        memory_mb: 256,
    });
    f.bind("spin", LOOP, ENDLESS);
    let call = spinning(&f);
    f.plugins.stop();
    let cause = cause(call.join().expect("no panic"));
    assert_eq!(
        cause,
        PluginError::Cancelled("the node is stopping").to_string()
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let req = Request::Put(PutRequest {
        key: b"/p/spin/k".to_vec(),
        ..Default::default()
    });
    f.plugins.unbound(&f.store, &req).expect("storage");
    let refused = runtime.block_on(f.plugins.judge_on_executor(&f.store, "mallory", &req));
    assert!(
        matches!(&refused, Err(ProtoError::PluginFailed { plugin, cause })
            if plugin == "spin" && cause.contains("stopping")),
        "{refused:?}"
    );
}
