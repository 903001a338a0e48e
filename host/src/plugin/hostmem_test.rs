//! Hostile plugins against the host side of a call (issue 12, findings 6 and 7), written in
//! WAT as in `limits_test.rs`: what the host holds or builds for a call counts against its
//! memory cap, a read set never outgrows the guard cap, `kv.range` stops at its limit,
//! strings a plugin hands back are cut, a reactor stages no more than one transaction holds,
//! a revision too large for a reactor is reported, and over-long keys are refused. Each
//! outcome is typed, and the node (here: the engine and store) serves on.

use etch_proto::limits::{Limits, MAX_KEY_BYTES};
use etch_proto::plugin::{PluginBinding, PluginHook, PluginInstallRequest, PluginLimits};
use etch_proto::{Error as ProtoError, PutRequest, Request, RequestOp, TxnRequest};

use super::limits_test::{BUMP_ALLOC, Fixture, encode_component};
use super::{MAX_MESSAGE, PluginError, Step};
use crate::mvcc::{BindingRecord, Guard, MAX_GUARD_BYTES, Read};

/// The canonical ABI of the imports the tests call: `kv.get(key) -> option<key-value>`
/// (key pointer and length, return area), `kv.range(key, end, limit) -> list<key-value>`
/// (two lists, the limit, return area), `log(level, message)`.
const IMPORTS: &str = r#"
  (import "etch:plugin/kv@0.1.0" "get" (func $get (param i32 i32 i32)))
  (import "etch:plugin/kv@0.1.0" "range" (func $range (param i32 i32 i32 i32 i32 i32)))
  (import "etch:plugin/log@0.1.0" "log" (func $log (param i32 i32 i32)))"#;

/// `/r/` and `/r0` (the prefix's range end).
const DATA: &str = r#"
  (data (i32.const 100) "/r/")
  (data (i32.const 110) "/r0")"#;

const ALLOW: &str = "(i32.store8 (i32.const 16) (i32.const 0)) (i32.const 16)";

/// A validator with `pages` of memory running `body` (then the body's own verdict).
fn validator(pages: u32, body: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module {IMPORTS}
          (memory (export "memory") {pages})
          (global $heap (mut i32) (i32.const 4096))
          {DATA}
          {BUMP_ALLOC}
          (func (export "validate") (param i32 i32 i32 i32 i64 i32 i32) (result i32)
            (local $i i32)
            {body}))"#
    );
    encode_component(&wat, "validator@0.1.0")
}

/// A reactor running `body` on each batch; `$put` stages a write.
fn reactor(body: &str) -> Vec<u8> {
    let wat = format!(
        r#"(module
          (import "etch:plugin/kv-write@0.1.0" "put" (func $put (param i32 i32 i32 i32 i32)))
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 4096))
          (data (i32.const 100) "/out/")
          {BUMP_ALLOC}
          (func (export "on-events") (param i32 i32) (result i32)
            (local $i i32)
            {body}))"#
    );
    encode_component(&wat, "reactor@0.1.0")
}

impl Fixture {
    fn install(
        &self,
        name: &str,
        prefix: &str,
        hook: PluginHook,
        wasm: Vec<u8>,
        limits: PluginLimits,
    ) -> BindingRecord {
        let req = PluginInstallRequest {
            binding: PluginBinding {
                name: name.into(),
                prefix: prefix.as_bytes().to_vec(),
                hook,
                limits,
                ..Default::default()
            },
            wasm,
            installed_by: "root".into(),
        };
        let outcome = self
            .store
            .plugin_install(&req, b"applied")
            .expect("storage");
        assert!(outcome.is_ok(), "{outcome:?}");
        let (_, bindings) = self.store.plugin_bindings().expect("bindings");
        (bindings.into_iter())
            .find(|b| b.binding.name == name)
            .expect("bound")
    }

    fn apply(&self, req: Request) -> i64 {
        let outcome = self.store.apply_request(&req, b"applied").expect("storage");
        assert!(outcome.is_ok(), "{outcome:?}");
        self.store.revision()
    }

    fn judge_put(&self, key: &str) -> Result<Guard, ProtoError> {
        let req = Request::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        self.plugins.judge(&self.store, "alice", &req)
    }
}

fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
}

fn cause(result: Result<Guard, ProtoError>) -> String {
    match result {
        Err(ProtoError::PluginFailed { cause, .. }) => cause,
        other => panic!("expected PluginFailed, got {other:?}"),
    }
}

/// The finding: a validator looping on `kv.get` of large keys grew the host-side read set
/// to 4 GB in one call, and the guard went into the Raft entry. Now the read set stops at
/// the guard cap, far below: the call fails typed, and its reads stay bounded.
#[test]
fn a_kv_get_loop_on_distinct_large_keys_stops_at_the_read_set_cap() {
    let f = Fixture::new();
    // 4,000 distinct keys of 8 KiB (the counter written into each): 32 MiB of reads
    // before, had the call been let run.
    let body = format!(
        "(loop $l
           (i32.store (i32.const 32768) (local.get $i))
           (call $get (i32.const 32768) (i32.const {MAX_KEY_BYTES}) (i32.const 48))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 4000))))
         {ALLOW}"
    );
    let patient = PluginLimits {
        timeout_ms: 10_000,
        ..PluginLimits::default()
    };
    f.install(
        "reader",
        "/v/",
        PluginHook::Validate,
        validator(1, &body),
        patient,
    );
    let cause = cause(f.judge_put("/v/k"));
    assert!(
        cause.starts_with("host-side memory cap exceeded: "),
        "{cause}"
    );
    assert!(cause.contains("read set"), "{cause}");
    // Reading one key over and over records it once: allowed, with a small guard.
    let body = format!(
        "(loop $l
           (call $get (i32.const 32768) (i32.const {MAX_KEY_BYTES}) (i32.const 48))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 500))))
         {ALLOW}"
    );
    f.install(
        "again",
        "/w/",
        PluginHook::Validate,
        validator(1, &body),
        patient,
    );
    let guard = f.judge_put("/w/k").expect("allowed");
    assert_eq!(
        guard.reads.len(),
        2,
        "the put's own key and the one read: {guard:?}"
    );
    assert!(guard.bytes() < MAX_GUARD_BYTES);
}

/// Results the host builds count against the cap too: a range of large values is refused
/// before it is built whole (it used to be built, then fail to fit the guest).
#[test]
fn a_range_result_over_the_memory_cap_fails_as_host_memory() {
    let f = Fixture::new();
    for i in 0..12 {
        f.apply(put(format!("/r/{i:02}"), vec![b'x'; 1 << 20]));
    }
    let body = format!(
        "(call $range (i32.const 100) (i32.const 3) (i32.const 110) (i32.const 3) (i32.const 0) (i32.const 48))
         {ALLOW}"
    );
    let limits = PluginLimits {
        memory_mb: 8,
        ..PluginLimits::default()
    };
    f.install(
        "ranger",
        "/v/",
        PluginHook::Validate,
        validator(1, &body),
        limits,
    );
    let cause = cause(f.judge_put("/v/k"));
    assert!(
        cause.starts_with("host-side memory cap exceeded: memory cap of 8 MiB: a kv.range result"),
        "{cause}"
    );
}

/// `kv.range` with limit 1 over a large prefix reads one key, and its fingerprint covers
/// only that key: a write past it cannot change the answer, so it does not conflict.
#[test]
fn kv_range_stops_at_its_limit_and_guards_only_what_it_returned() {
    let f = Fixture::new();
    let first = f.apply(put("/r/000", "v"));
    for i in 1..500 {
        f.apply(put(format!("/r/{i:03}"), "v"));
    }
    let body = format!(
        "(call $range (i32.const 100) (i32.const 3) (i32.const 110) (i32.const 3) (i32.const 1) (i32.const 48))
         (if (i32.ne (i32.load (i32.const 52)) (i32.const 1)) (then unreachable))
         {ALLOW}"
    );
    f.install(
        "first",
        "/v/",
        PluginHook::Validate,
        validator(1, &body),
        PluginLimits::default(),
    );
    let guard = f.judge_put("/v/k").expect("allowed");
    let read = (guard.reads.iter())
        .find(|r| r.key == b"/r/")
        .expect("the range was read");
    assert_eq!(
        read,
        &Read {
            key: b"/r/".to_vec(),
            range_end: b"/r/000\0".to_vec(),
            count: 1,
            max_mod_revision: first,
        }
    );
    let version = f.store.bindings_version();
    f.apply(put("/r/999", "later"));
    let later = f.store.view().expect("view");
    assert!(
        guard.holds(&later, version).expect("storage"),
        "a write past the limit"
    );
    f.apply(put("/r/000", "changed"));
    let changed = f.store.view().expect("view");
    assert!(
        !guard.holds(&changed, version).expect("storage"),
        "the key it returned"
    );
}

/// A key longer than any stored key can be is refused typed before it reaches storage
/// (70,000 bytes panicked in fjall, which refuses keys of 64 KiB).
#[test]
fn an_over_long_key_in_kv_get_or_kv_range_is_an_invalid_argument() {
    let f = Fixture::new();
    let get = format!("(call $get (i32.const 4096) (i32.const 70000) (i32.const 48)) {ALLOW}");
    f.install(
        "get",
        "/g/",
        PluginHook::Validate,
        validator(2, &get),
        PluginLimits::default(),
    );
    let range = format!(
        "(call $range (i32.const 100) (i32.const 3) (i32.const 4096) (i32.const 70000) (i32.const 0) (i32.const 48)) {ALLOW}"
    );
    f.install(
        "range",
        "/h/",
        PluginHook::Validate,
        validator(2, &range),
        PluginLimits::default(),
    );
    assert_eq!(
        cause(f.judge_put("/g/k")),
        "invalid argument: kv.get: key of 70000 bytes exceeds the limit of 8192 bytes"
    );
    assert_eq!(
        cause(f.judge_put("/h/k")),
        "invalid argument: kv.range: range end of 70000 bytes exceeds the limit of 8192 bytes"
    );
    assert_eq!(f.plugins.stats_of("get").failures, 1);
}

/// A denial reason of 1 MiB reaches the client cut to [`MAX_MESSAGE`] bytes.
#[test]
fn a_huge_denial_reason_is_cut() {
    let f = Fixture::new();
    let body = "(memory.fill (i32.const 65536) (i32.const 120) (i32.const 1048576))
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 100)) (i32.store (i32.const 24) (i32.const 3))
        (i32.store (i32.const 28) (i32.const 65536)) (i32.store (i32.const 32) (i32.const 1048576))
        (i32.const 16)";
    f.install(
        "loud",
        "/v/",
        PluginHook::Validate,
        validator(20, body),
        PluginLimits::default(),
    );
    match f.judge_put("/v/k") {
        Err(ProtoError::PluginRejected { reason, code, .. }) => {
            assert_eq!(code, "/r/");
            assert_eq!(reason.len(), MAX_MESSAGE);
            assert!(
                reason.ends_with("... (1048576 bytes, cut)"),
                "{}",
                &reason[4000..]
            );
        }
        other => panic!("expected PluginRejected, got {other:?}"),
    }
}

/// A log flood is cut and rate-limited (the gate's own tests count lines); here: a call
/// logging 2,000 lines of 64 KiB succeeds and the node serves on.
#[test]
fn a_log_flood_does_not_fail_the_call() {
    let f = Fixture::new();
    let body = format!(
        "(loop $l
           (call $log (i32.const 3) (i32.const 65536) (i32.const 65536))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 2000))))
         {ALLOW}"
    );
    f.install(
        "noisy",
        "/v/",
        PluginHook::Validate,
        validator(2, &body),
        PluginLimits::default(),
    );
    assert!(f.judge_put("/v/k").is_ok());
}

/// A reactor staging more writes than one transaction may hold fails its call, whatever it
/// returns (it once staged 599,191 puts into one revision).
#[test]
fn a_reactor_staging_past_the_txn_limits_fails_its_call() {
    let f = Fixture::new();
    // Stages /out/<i> for i in 0..1000, ignoring every refusal, then returns ok.
    let body = "(loop $l
           (i32.store (i32.const 105) (local.get $i))
           (call $put (i32.const 100) (i32.const 9) (i32.const 100) (i32.const 5) (i32.const 48))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $l (i32.lt_u (local.get $i) (i32.const 1000))))
         (i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)";
    let record = f.install(
        "flood",
        "/in/",
        PluginHook::React,
        reactor(body),
        PluginLimits::default(),
    );
    let from = f.apply(put("/in/a", "v"));
    let err = f
        .plugins
        .react(&f.store, &record, from, &Limits::default())
        .expect_err("too many writes");
    assert!(
        matches!(&err, PluginError::TooManyWrites(m) if m.contains("at most 127 writes")),
        "{err:?}"
    );
    assert_eq!(f.plugins.stats_of("flood").last_error, err.to_string());
    // Under a byte limit instead.
    let small = Limits {
        max_request_bytes: 1024 + 100,
        ..Limits::default()
    };
    let err = f
        .plugins
        .react(&f.store, &record, from, &small)
        .expect_err("too many bytes");
    assert!(
        matches!(&err, PluginError::TooManyWrites(m) if m.contains("at most 100 bytes")),
        "{err:?}"
    );
}

/// A revision holding more for a reactor than one call can take is reported (stalled)
/// instead of failing on the guest's memory for ever; a smaller one after a large
/// batch-mate starts the next batch.
#[test]
fn a_revision_too_large_for_a_reactor_is_reported_as_a_stall() {
    let f = Fixture::new();
    let ok = "(i32.store8 (i32.const 32) (i32.const 0)) (i32.const 32)";
    let limits = PluginLimits {
        memory_mb: 2,
        ..PluginLimits::default()
    };
    let record = f.install("r", "/in/", PluginHook::React, reactor(ok), limits);
    let big = |i: usize| {
        RequestOp::Put(PutRequest {
            key: format!("/in/{i}").into_bytes(),
            value: vec![b'x'; 300 << 10],
            ..Default::default()
        })
    };
    // 600 KiB, then 600 KiB: two batches under a 1 MiB half-cap.
    let first = f.apply(Request::Txn(TxnRequest {
        success: vec![big(0), big(1)],
        ..Default::default()
    }));
    let second = f.apply(Request::Txn(TxnRequest {
        success: vec![big(2), big(3)],
        ..Default::default()
    }));
    let step = f
        .plugins
        .react(&f.store, &record, first, &Limits::default())
        .expect("step");
    assert!(
        matches!(step, Step::Batch { through, events: 2, .. } if through == first),
        "{step:?}"
    );
    let step = f
        .plugins
        .react(&f.store, &record, second, &Limits::default())
        .expect("step");
    assert!(
        matches!(step, Step::Batch { through, events: 2, .. } if through == second),
        "{step:?}"
    );
    // 1.2 MiB in one revision: more than one call can take.
    let huge = f.apply(Request::Txn(TxnRequest {
        success: (4..8).map(big).collect(),
        ..Default::default()
    }));
    let err = f
        .plugins
        .react(&f.store, &record, huge, &Limits::default())
        .expect_err("too large");
    assert!(
        matches!(err, PluginError::RevisionTooLarge { revision, events: 4, .. } if revision == huge),
        "{err:?}"
    );
    let stats = f.plugins.stats_of("r");
    assert!(stats.stalled);
    assert!(stats.last_error.contains("stalled"), "{}", stats.last_error);
}
