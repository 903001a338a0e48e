//! Judgements on the asking task (`quick.rs`): a quick validator is judged there, without a
//! plugin thread; one that outgrows the quick caps is judged again on the plugin threads
//! under its own limits, uncounted the first time, and its lane stays there for a while.

use etch_proto::plugin::PluginLimits;
use etch_proto::{Error as ProtoError, PutRequest, Request, RequestOp, TxnRequest};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Plugins;
use super::limits_test::{ALLOW, Fixture, LOOP, failed};
use super::quick::SLOW_FORGIVEN;

/// A put under `name`'s prefix judged as the node judges it (`node/plugin.rs`): the bound
/// validators looked up first, which also names the judgement's lane.
async fn judge(f: &Fixture, name: &str) -> Result<crate::mvcc::Guard, ProtoError> {
    let put = Request::Put(PutRequest {
        key: format!("/p/{name}/k").into_bytes(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    let unbound = f.plugins.unbound(&f.store, &put).expect("storage");
    assert!(unbound.is_none(), "a validator is bound to {name}");
    f.plugins.judge_on_executor(&f.store, "alice", &put).await
}

#[tokio::test]
async fn a_quick_validator_is_judged_on_the_asking_task() {
    let f = Fixture::new();
    f.bind("fast", ALLOW, PluginLimits::default());
    // With no plugin thread left, only a judgement on the asking task can answer.
    f.plugins.stop_threads();
    // Not compiled yet: compiling takes too long for the asking task, so it is not judged
    // there (and the plugin threads are gone).
    let cause = failed(judge(&f, "fast").await);
    assert!(cause.contains("stopping"), "{cause}");
    f.plugins.warm(&f.store);
    let guard = judge(&f, "fast").await.expect("allowed on the asking task");
    assert_eq!(guard.reads.len(), 1, "the put's fingerprint");
    assert_eq!(f.plugins.stats_of("fast").calls, 1);
}

#[tokio::test]
async fn a_call_that_outgrows_the_caps_is_judged_again_on_a_plugin_thread_under_its_own_limits() {
    let f = Fixture::new();
    // More fuel than the loop can burn in its 20 ms: it ends at its own deadline.
    f.bind("loop", LOOP, outgrowing());
    f.plugins.warm(&f.store);
    let cause = failed(judge(&f, "loop").await);
    // Its own deadline (or its wall-clock ceiling) ended it, not the quick caps: it ran
    // again on a plugin thread.
    assert!(cause.starts_with("deadline of 20 ms"), "{cause}");
    assert_eq!(
        f.plugins.stats_of("loop").calls,
        1,
        "the quick try is not counted"
    );

    // The lane now goes to the plugin threads at once: with none left, it is refused.
    f.plugins.stop_threads();
    let cause = failed(judge(&f, "loop").await);
    assert!(cause.contains("stopping"), "{cause}");
    assert_eq!(f.plugins.stats_of("loop").calls, 1);
}

#[tokio::test]
async fn a_validator_whose_own_limits_are_under_the_caps_fails_on_its_own_terms_at_once() {
    let f = Fixture::new();
    let limits = PluginLimits {
        fuel: 10_000,
        ..PluginLimits::default()
    };
    f.bind("small", LOOP, limits);
    f.plugins.warm(&f.store);
    f.plugins.stop_threads();
    let cause = failed(judge(&f, "small").await);
    assert!(cause.contains("fuel"), "{cause}");
    assert_eq!(f.plugins.stats_of("small").calls, 1);
}

/// Limits under which [`LOOP`] outgrows the quick caps and ends at its own 20 ms deadline.
fn outgrowing() -> PluginLimits {
    PluginLimits {
        fuel: 1_000_000_000,
        timeout_ms: 20,
        ..PluginLimits::default()
    }
}

#[tokio::test]
async fn a_judgement_names_its_lane_from_the_store_without_a_lookup_first() {
    let f = Fixture::new();
    f.bind("loop", LOOP, outgrowing());
    f.plugins.warm(&f.store);
    f.plugins.stop_threads();
    let put = Request::Put(PutRequest {
        key: b"/p/loop/k".to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    });
    // Judged without `unbound` first: it outgrows the caps on the asking task, and the
    // plugin threads refuse its lane, which is named after the validator, not left empty.
    for _ in 0..2 {
        match f.plugins.judge_on_executor(&f.store, "alice", &put).await {
            Err(ProtoError::PluginFailed { plugin, cause }) => {
                assert_eq!(plugin, "loop", "{cause}");
                assert!(cause.contains("stopping"), "{cause}");
            }
            other => panic!("expected the loop's lane refused, got {other:?}"),
        }
    }
}

/// A txn that puts under `aa` (which allows) and `bb` (a loop that outgrows the quick
/// caps): `aa` is judged first, then `bb` stops the quick try.
fn two_validators() -> (Fixture, Request) {
    let f = Fixture::new();
    f.bind("aa", ALLOW, PluginLimits::default());
    f.bind("bb", LOOP, outgrowing());
    f.plugins.warm(&f.store);
    let put = |name: &str| {
        RequestOp::Put(PutRequest {
            key: format!("/p/{name}/k").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        })
    };
    let txn = Request::Txn(TxnRequest {
        success: vec![put("aa"), put("bb")],
        ..Default::default()
    });
    assert!(
        f.plugins
            .unbound(&f.store, &txn)
            .expect("storage")
            .is_none()
    );
    (f, txn)
}

/// Expects `judged` refused by the stopped plugin threads, in lane `aa,bb`.
fn refused_in_both_lanes(judged: Result<crate::mvcc::Guard, ProtoError>) {
    match judged {
        Err(ProtoError::PluginFailed { plugin, cause }) => {
            assert_eq!(plugin, "aa,bb", "{cause}");
            assert!(cause.contains("stopping"), "{cause}");
        }
        other => panic!("expected the lane refused, got {other:?}"),
    }
}

#[tokio::test]
async fn calls_before_an_overrun_are_counted_once_when_judged_again() {
    let (f, txn) = two_validators();
    // `aa` allows on the asking task, `bb` outgrows the caps there: the whole judgement
    // runs again on a plugin thread, where `aa` allows again and `bb` fails on its own
    // deadline. Each ran once as far as anyone counting is concerned.
    let cause = failed(f.plugins.judge_on_executor(&f.store, "alice", &txn).await);
    assert!(cause.starts_with("deadline of 20 ms"), "{cause}");
    let (aa, bb) = (f.plugins.stats_of("aa"), f.plugins.stats_of("bb"));
    assert_eq!((aa.calls, aa.denials, aa.failures), (1, 0, 0), "{aa:?}");
    assert_eq!((bb.calls, bb.denials, bb.failures), (1, 0, 1), "{bb:?}");
    // The quick try did overrun: the lane now goes to the plugin threads at once, and
    // with none left it is refused without a call.
    f.plugins.stop_threads();
    refused_in_both_lanes(f.plugins.judge_on_executor(&f.store, "alice", &txn).await);
    assert_eq!(f.plugins.stats_of("aa").calls, 1);
}

#[tokio::test]
async fn calls_before_an_overrun_are_counted_when_the_plugin_threads_refuse_the_rest() {
    let (f, txn) = two_validators();
    f.plugins.stop_threads();
    // `aa` ran on the asking task before `bb` stopped the try; nothing runs it again.
    refused_in_both_lanes(f.plugins.judge_on_executor(&f.store, "alice", &txn).await);
    let (aa, bb) = (f.plugins.stats_of("aa"), f.plugins.stats_of("bb"));
    assert_eq!((aa.calls, aa.denials, aa.failures), (1, 0, 0), "{aa:?}");
    assert_eq!(bb.calls, 0, "an abandoned call is not the plugin's: {bb:?}");
}

/// A CPU clock a millisecond further on at every reading: any judgement "takes" more than
/// [`super::quick::SLOW_CPU`].
fn ticking() -> Duration {
    static MS: AtomicU64 = AtomicU64::new(0);
    Duration::from_millis(MS.fetch_add(1, Ordering::Relaxed))
}

#[tokio::test]
async fn a_judgement_within_the_caps_but_slow_sends_its_lane_to_the_plugin_threads() {
    let f = Fixture::with(Plugins::with_cpu_clock(ticking).expect("engine"));
    f.bind("slowish", ALLOW, PluginLimits::default());
    f.plugins.warm(&f.store);
    // The first slow ones are forgiven, and judged where they arrive: with no plugin
    // thread left, they are still answered.
    f.plugins.stop_threads();
    for _ in 0..=SLOW_FORGIVEN {
        judge(&f, "slowish").await.expect("answered");
    }
    assert_eq!(
        f.plugins.stats_of("slowish").calls,
        SLOW_FORGIVEN as u64 + 1
    );
    // One too many: its lane now goes to the plugin threads, and with none left, refused.
    let cause = failed(judge(&f, "slowish").await);
    assert!(cause.contains("stopping"), "{cause}");
}

/// What `tracing` writes on the thread that installed it, kept for reading.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

const WOULD_REJECT: &str = "audit: plugin would reject this write";

impl Captured {
    /// Captures this thread's log, at debug and above, until the guard drops: the
    /// judgements on the asking task, not the plugin threads'.
    fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, needle: &str) -> usize {
        let bytes = self.0.lock().expect("the log buffer").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// `aa`, an audit binding that would reject every write, and `bb`, a loop that outgrows
/// the quick caps; and a txn that puts under both.
fn audit_then_overrun() -> (Fixture, Request) {
    use etch_proto::plugin::{FailurePolicy, PluginMode};
    let f = Fixture::new();
    f.bind_with(
        "aa",
        super::limits_test::DENY,
        PluginLimits::default(),
        PluginMode::Audit,
        FailurePolicy::FailClosed,
    );
    f.bind("bb", LOOP, outgrowing());
    f.plugins.warm(&f.store);
    let txn = Request::Txn(TxnRequest {
        success: ["aa", "bb"]
            .map(|name| {
                RequestOp::Put(PutRequest {
                    key: format!("/p/{name}/k").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
            })
            .to_vec(),
        ..Default::default()
    });
    (f, txn)
}

#[tokio::test]
async fn a_quick_try_that_stops_leaves_its_warnings_to_the_judgement_that_answers() {
    let (f, txn) = audit_then_overrun();
    let (captured, _on) = Captured::install();

    // `aa` alone is answered on the asking task, which says so once.
    judge(&f, "aa")
        .await
        .expect("an audit binding lets the write through");
    assert_eq!(captured.lines_with(WOULD_REJECT), 1);

    // A txn under both: `aa` would reject on the asking task, then `bb` outgrows the
    // caps there and the judgement runs again on a plugin thread, which says it. The
    // asking task says nothing more (before, it warned for `aa`, and the thread again).
    let cause = failed(f.plugins.judge_on_executor(&f.store, "alice", &txn).await);
    assert!(cause.starts_with("deadline of 20 ms"), "{cause}");
    // The quick try did run here, and stopped at `bb`.
    assert_eq!(captured.lines_with("outgrew the quick caps"), 1);
    assert_eq!(captured.lines_with(WOULD_REJECT), 1);
    assert_eq!(captured.lines_with("plugin failed"), 0);
    assert_eq!(
        f.plugins.stats_of("aa").calls,
        2,
        "once alone, once in the txn"
    );
}

#[tokio::test]
async fn a_quick_try_whose_asker_leaves_still_says_what_it_saw() {
    let (f, txn) = audit_then_overrun();
    let (captured, _on) = Captured::install();
    // The asker gives up while the judgement waits for (or runs on) the plugin threads,
    // as a client's reset or deadline does: `aa` would reject, and that is logged here
    // once; nothing judges the write again for this asker. (Before, it was lost.)
    let judged = tokio::time::timeout(
        std::time::Duration::from_millis(1),
        f.plugins.judge_on_executor(&f.store, "alice", &txn),
    )
    .await;
    assert!(judged.is_err(), "answered within 1 ms: {judged:?}");
    assert_eq!(captured.lines_with("outgrew the quick caps"), 1);
    assert_eq!(captured.lines_with(WOULD_REJECT), 1);
}
