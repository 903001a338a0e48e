//! Validator instances kept between calls (`validator::call`): a component that exports
//! `init` serves many calls of its binding in one instance; one that does not, a call that
//! fails, an instance that grew past what may be kept, or a changed binding gets a fresh
//! instance (its `init` run again).

use etch_proto::plugin::{PluginBinding, PluginInstallRequest, PluginLimits};
use etch_proto::{Error as ProtoError, PutRequest, Request};

use super::limits_test::{BUMP_ALLOC, Fixture, encode_component};

/// A 0.2.0 validator that counts its calls in a global and denies every write with the
/// count as its reason ("1" on an instance's first call). A write from principal "trap"
/// (its length, 4, is the second parameter) traps after counting. `grow` pages are added to
/// its memory on every call.
fn counter(world: &str, grow: u32) -> Vec<u8> {
    let init = if world == "validator" {
        "(func (export \"init\") (param i32 i32) (result i32)
            (i32.store8 (i32.const 48) (i32.const 0)) (i32.const 48))"
    } else {
        ""
    };
    let wat = format!(
        r#"(module
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          (global $calls (mut i32) (i32.const 0))
          (data (i32.const 100) "calls")
          {BUMP_ALLOC}
          {init}
          (func (export "validate") (param i32 i32 i32 i32 i64 i32 i32) (result i32)
            (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
            (drop (memory.grow (i32.const {grow})))
            (if (i32.eq (local.get 1) (i32.const 4)) (then (unreachable)))
            (i32.store8 (i32.const 200) (i32.add (i32.const 48) (global.get $calls)))
            (i32.store8 (i32.const 16) (i32.const 1))
            (i32.store (i32.const 20) (i32.const 100))
            (i32.store (i32.const 24) (i32.const 5))
            (i32.store (i32.const 28) (i32.const 200))
            (i32.store (i32.const 32) (i32.const 1))
            (i32.const 16)))"#
    );
    encode_component(&wat, world)
}

fn install(f: &Fixture, name: &str, wasm: Vec<u8>, config: &[(&str, &str)], memory_mb: u32) {
    let req = PluginInstallRequest {
        binding: PluginBinding {
            name: name.into(),
            prefix: format!("/r/{name}/").into_bytes(),
            config: (config.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            limits: PluginLimits {
                memory_mb,
                ..PluginLimits::default()
            },
            ..Default::default()
        },
        wasm,
        installed_by: "root".into(),
    };
    let outcome = f.store.plugin_install(&req, b"applied").expect("storage");
    assert!(outcome.is_ok(), "{outcome:?}");
    f.plugins.warm(&f.store);
}

/// The count the counter answers a put under `name` from `principal` with, or the error.
fn count(f: &Fixture, name: &str, principal: &str) -> Result<String, ProtoError> {
    let req = Request::Put(PutRequest {
        key: format!("/r/{name}/k").into_bytes(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    match f.plugins.judge(&f.store, principal, &req) {
        Err(ProtoError::PluginRejected { reason, .. }) => Ok(reason),
        Err(e) => Err(e),
        Ok(_) => panic!("the counter denies every write"),
    }
}

fn counts(f: &Fixture, name: &str, calls: usize) -> Vec<String> {
    (0..calls)
        .map(|_| count(f, name, "alice").expect("judged"))
        .collect()
}

#[test]
fn a_component_with_init_serves_many_calls_in_one_instance_until_a_call_fails() {
    let f = Fixture::new();
    install(&f, "kept", counter("validator", 0), &[], 32);
    assert_eq!(counts(&f, "kept", 3), ["1", "2", "3"]);

    let Err(ProtoError::PluginFailed { cause, .. }) = count(&f, "kept", "trap") else {
        panic!("the call traps");
    };
    assert!(cause.contains("unreachable"), "{cause}");
    // The instance that trapped (its count at 4) is gone: the next call starts afresh.
    assert_eq!(counts(&f, "kept", 2), ["1", "2"]);

    // A changed binding (new settings for its `init`) never gets the old instance.
    install(&f, "kept", counter("validator", 0), &[("k", "v")], 32);
    assert_eq!(counts(&f, "kept", 2), ["1", "2"]);
}

#[test]
fn a_component_without_init_or_grown_past_what_is_kept_gets_a_fresh_instance_per_call() {
    let f = Fixture::new();
    install(&f, "core", counter("validator-core", 0), &[], 32);
    assert_eq!(counts(&f, "core", 3), ["1", "1", "1"]);

    // 40 pages (2.5 MiB) a call: more than half of a 4 MiB cap.
    install(&f, "grown", counter("validator", 40), &[], 4);
    assert_eq!(counts(&f, "grown", 3), ["1", "1", "1"]);
    // Under a cap of 64 MiB, 2.5 MiB may be kept; 5 MiB (two calls) may not.
    install(&f, "big", counter("validator", 40), &[], 64);
    assert_eq!(counts(&f, "big", 4), ["1", "2", "1", "2"]);
}

#[test]
fn calls_of_two_bindings_keep_their_own_instances() {
    let f = Fixture::new();
    install(&f, "a", counter("validator", 0), &[], 32);
    install(&f, "b", counter("validator", 0), &[], 32);
    for round in 1..=3 {
        assert_eq!(count(&f, "a", "alice").expect("judged"), round.to_string());
        assert_eq!(count(&f, "b", "alice").expect("judged"), round.to_string());
    }
}
