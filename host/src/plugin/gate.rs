//! [`Plugins`]: the leader's gate in front of `propose` — which bindings a write touches,
//! running their validators, and the [`Guard`] the write then carries.
//!
//! [`Plugins::judge`] reads one snapshot of the state and, from it, the bindings and their
//! version. A write that touches no bound prefix gets a guard with just that version (so a
//! binding installed while it is in flight still conflicts). Otherwise the write is
//! previewed (`mvcc::preview`: every key changed, with its previous version; a txn's branch
//! chosen) and each bound validator runs in turn on the whole write, against the same
//! snapshot. The first enforced refusal ends it with `PluginRejected`; a failure ends it
//! with `PluginFailed` unless the binding fails open. In audit mode refusals and failures
//! are logged and counted but never reject. The guard collects the preview's reads and
//! every plugin's reads.
//!
//! Counters (calls, refusals, failures per binding) live in memory on the node that ran
//! the calls — the leader — and are reported by `plugin list`.
//!
//! Containment: every call runs under its binding's limits clamped to the node's
//! [`Maxima`]; the node's async code runs judgements and reactor steps on the plugin
//! [`Executor`] ([`Plugins::judge_on_executor`], never tokio's blocking pool), in the lane of
//! the bindings they call, but for a judgement whose validators stay within the quick caps
//! (`quick.rs`), run where the request is; and each call carries a [`Cancel`] that [`Plugins::warm`] sets
//! when its binding is removed or replaced, and [`Plugins::stop`] when the node stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use etch_proto::plugin::{FailurePolicy, PluginHook, PluginInstallRequest, PluginMode};
use etch_proto::{Error as ProtoError, KeyRange, Request, RequestOp, prefix_end};
use sha2::{Digest, Sha256};

use super::ctx::{self, Ctx};
use super::error::PluginError;
use super::executor::Executor;
use super::idle::Idle;
use super::maxima::Maxima;
use super::quick::{self, Stop};
use super::runtime::{CALL_SLOTS, Cancel, Compiled, Runtime};
use super::validator::{self, Op, OpKind, Verdict};
use crate::mvcc::{self, BindingRecord, Guard, Store, View, hex};

/// Per-binding counters on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls: u64,
    pub denials: u64,
    pub failures: u64,
    /// Why the last call failed (reactors), empty after a success.
    pub last_error: String,
    /// Whether the reactor cannot go on: its next revision is larger than a call can take.
    pub stalled: bool,
    /// Whether the reactor is parked by its `Park` policy (on this leader).
    pub parked: bool,
}

/// Where a judgement runs: on a plugin thread under the bindings' limits, or on the task
/// that asked under the quick caps (`quick.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Thread,
    Quick,
}

/// Why a judgement ended without a guard: the answer for the client, or a quick judgement
/// that must run on the plugin threads.
#[derive(Debug)]
enum Halt {
    Answer(ProtoError),
    Quick(Stop),
}

impl From<ProtoError> for Halt {
    fn from(e: ProtoError) -> Halt {
        Halt::Answer(e)
    }
}

/// One validator call of a judgement, counted once the judgement is answered: a quick
/// judgement stopped to run again on the plugin threads counts its calls there.
#[derive(Debug)]
struct Tally {
    name: String,
    outcome: &'static str,
    cause: Option<&'static str>,
    took: Duration,
    /// What the call has to tell the operator, said with the count: a quick try that
    /// stopped and runs again says it once, in the judgement that answers.
    said: Option<Said>,
}

/// The calls of a quick judgement that stopped: counted, and their warnings logged, when
/// dropped, unless cleared because the judgement ran again and counted its own. (A request
/// whose asker goes away while it waits for the plugin threads is not judged again.)
struct Unjudged<'a> {
    plugins: &'a Plugins,
    ran: Vec<Tally>,
}

impl Drop for Unjudged<'_> {
    fn drop(&mut self) {
        if !self.ran.is_empty() {
            self.plugins.count_judged(std::mem::take(&mut self.ran));
        }
    }
}

/// A call's warning for the node's log.
#[derive(Debug)]
enum Said {
    /// An audit binding would have rejected the write.
    WouldReject { code: String, reason: String },
    /// The call failed.
    Failed(String),
}

/// A call's outcomes, as metrics name them.
const ALLOWED: &str = "allowed";
const DENIED: &str = "denied";
const FAILED: &str = "failed";

/// Per binding name: the cancel flag of its calls, and the binding it was made for.
type Cancels = HashMap<String, (BindingRecord, Arc<AtomicBool>)>;

/// The plugins of one node: the engine, the validator gate, reactor calls, counters.
/// Cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    runtime: Runtime,
    stats: Arc<Mutex<HashMap<String, Stats>>>,
    /// The validator bindings as of a bindings version, for [`Plugins::unbound`].
    validators: Arc<Mutex<(u64, Arc<Vec<BindingRecord>>)>>,
    /// The ceiling on every binding's limits.
    maxima: Maxima,
    /// The threads plugin calls run on.
    executor: Arc<Executor>,
    /// The cancel flag of each binding that has run, with the binding it was made for.
    cancels: Arc<Mutex<Cancels>>,
    /// Set when the node stops: every call ends.
    stopping: Arc<AtomicBool>,
    /// Lanes judged on the plugin threads only for now (`quick.rs`).
    slow_lanes: Arc<quick::Lanes>,
    /// Validator instances kept between calls (`validator::call`), as many as calls may
    /// run at once, so kept and running instances never fill the pool.
    idle: Arc<Idle<validator::Warm>>,
}

impl Plugins {
    /// A gate with its own engine, default [`Maxima`] and a 5 s queue wait.
    ///
    /// # Errors
    ///
    /// The engine or its threads cannot be started.
    pub fn new() -> anyhow::Result<Plugins> {
        Plugins::with_maxima(Maxima::default(), Duration::from_secs(5))
    }

    /// A gate whose calls obey `maxima` and wait at most `queue_wait` for a plugin thread
    /// (the node gives half its request timeout: later, the client would have given up).
    ///
    /// # Errors
    ///
    /// The engine or its threads cannot be started.
    pub fn with_maxima(maxima: Maxima, queue_wait: Duration) -> anyhow::Result<Plugins> {
        Plugins::with_runtime(Runtime::new()?, maxima, queue_wait)
    }

    /// A default gate whose call deadlines count `cpu_clock` (tests).
    #[cfg(test)]
    pub(super) fn with_cpu_clock(cpu_clock: super::runtime::CpuClock) -> anyhow::Result<Plugins> {
        let runtime = Runtime::with_cpu_clock(cpu_clock)?;
        Plugins::with_runtime(runtime, Maxima::default(), Duration::from_secs(5))
    }

    fn with_runtime(
        runtime: Runtime,
        maxima: Maxima,
        queue_wait: Duration,
    ) -> anyhow::Result<Plugins> {
        Ok(Plugins {
            runtime,
            stats: Arc::default(),
            validators: Arc::new(Mutex::new((u64::MAX, Arc::default()))),
            maxima,
            executor: Arc::new(Executor::start(queue_wait)?),
            cancels: Arc::default(),
            stopping: Arc::default(),
            idle: Arc::new(Idle::new(CALL_SLOTS)),
            slow_lanes: Arc::default(),
        })
    }

    /// The node's maxima.
    pub fn maxima(&self) -> &Maxima {
        &self.maxima
    }

    /// Interrupts every running call and refuses new ones: the node is stopping.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.executor.stop();
    }

    /// Judges `request` as [`Plugins::judge`] does: on the asking task when its validators
    /// are quick (`quick.rs`), else on the plugin executor in the lane of the validators it
    /// touches. A judgement that cannot get a thread is `PluginFailed` (not run) without
    /// waiting.
    ///
    /// # Errors
    ///
    /// As [`Plugins::judge`], and `PluginFailed` when the executor refuses the job.
    pub async fn judge_on_executor(
        &self,
        store: &Store,
        principal: &str,
        request: &Request,
    ) -> Result<Guard, ProtoError> {
        let lane = self.lane(store, request)?;
        // Calls of a quick try that stopped, counted only if nothing judges it again.
        let mut ran = Unjudged {
            plugins: self,
            ran: Vec::new(),
        };
        if self.slow_lanes.allows(&lane, Instant::now()) {
            let clock = self.runtime.cpu_clock();
            let (cpu, wall) = (clock(), Instant::now());
            let judged = self.judge_in(store, principal, request, Mode::Quick, &mut ran.ran);
            let (cpu, wall) = (clock().saturating_sub(cpu), wall.elapsed());
            // Answered, but slow: a validator that keeps under the caps yet takes a
            // millisecond a call would hold the request tasks. A few are forgiven (an
            // instance's first call pays for making it and touching its memory).
            if quick::too_slow(cpu, wall) && self.slow_lanes.slow(&lane, Instant::now()) {
                tracing::debug!(
                    lane,
                    ?cpu,
                    ?wall,
                    "quick judgements took too long: judged on the plugin threads for a while"
                );
            }
            match judged {
                Ok(guard) => return Ok(guard),
                Err(Halt::Answer(e)) => return Err(e),
                Err(Halt::Quick(Stop::Overran)) => {
                    tracing::debug!(
                        lane,
                        "validators outgrew the quick caps: judged on the plugin threads for a while"
                    );
                    self.slow_lanes.overran(&lane, Instant::now());
                }
                Err(Halt::Quick(Stop::Busy)) => {}
            }
        }
        let (plugins, store) = (self.clone(), store.clone());
        let (principal, request) = (principal.to_owned(), request.clone());
        let judged = (self.executor)
            .run(&lane, move || plugins.judge(&store, &principal, &request))
            .await;
        match judged {
            // Judged again there: the calls made here are counted with the new ones.
            Ok(judged) => {
                ran.ran.clear();
                judged
            }
            // Not judged again: the calls that ran here are all there is to count (when
            // `ran` drops, as when the asker is gone before the plugin threads answer).
            Err(refused) => {
                drop(ran);
                Err(ProtoError::PluginFailed {
                    plugin: lane,
                    cause: PluginError::NotRun(refused).to_string(),
                })
            }
        }
    }

    /// Runs [`Plugins::react`] on the plugin executor, in the reactor's own lane.
    ///
    /// # Errors
    ///
    /// As [`Plugins::react`], and [`PluginError::NotRun`] when the executor refuses the job.
    pub async fn react_on_executor(
        &self,
        store: &Store,
        record: &BindingRecord,
        from: etch_proto::Revision,
        limits: &etch_proto::limits::Limits,
    ) -> Result<super::Step, PluginError> {
        let lane = format!("react:{}", record.binding.name);
        let (plugins, store, record) = (self.clone(), store.clone(), record.clone());
        let limits = *limits;
        self.executor
            .run(&lane, move || plugins.react(&store, &record, from, &limits))
            .await?
    }

    /// The executor lane of a write: the names of the validators bound to what it may
    /// change, in the store's current bindings.
    fn lane(&self, store: &Store, request: &Request) -> Result<String, ProtoError> {
        let (_, validators) = self
            .validators(store.bindings_version(), || store.plugin_bindings())
            .map_err(|e| ProtoError::Internal(format!("storage: {e}")))?;
        let names: Vec<&str> = (validators.iter())
            .filter(|b| touches(request, &b.binding.prefix))
            .map(|b| b.binding.name.as_str())
            .collect();
        Ok(names.join(","))
    }

    /// The limits a call of `record` runs under: its own, clamped to the node's maxima.
    pub(super) fn limits_of(&self, record: &BindingRecord) -> etch_proto::plugin::PluginLimits {
        self.maxima.clamp(&record.binding.limits)
    }

    /// What interrupts a call of `record`: its binding changing, or the node stopping.
    pub(super) fn cancel_of(&self, record: &BindingRecord) -> Cancel {
        let mut cancels = self.cancels();
        let entry = cancels
            .entry(record.binding.name.clone())
            .or_insert_with(|| (record.clone(), Arc::default()));
        if entry.0 != *record {
            // A call of a newer binding than the one this flag was made for; calls of the
            // older one are cancelled as soon as `warm` sees the change.
            *entry = (record.clone(), Arc::default());
        }
        Cancel {
            binding: entry.1.clone(),
            node: self.stopping.clone(),
        }
    }

    /// Interrupts the calls of every binding not in `current` (removed, or replaced by a
    /// different binding of the same name).
    fn cancel_changed(&self, current: &[BindingRecord]) {
        self.cancels().retain(|name, (record, flag)| {
            let unchanged = current.iter().any(|c| c.binding.name == *name && c == record);
            if !unchanged {
                flag.store(true, Ordering::Relaxed);
                tracing::info!(plugin = %name, "binding changed: its running calls are interrupted");
            }
            unchanged
        });
    }

    /// Stops the plugin threads alone: judgements that need them are refused (tests).
    #[cfg(test)]
    pub(super) fn stop_threads(&self) {
        self.executor.stop();
    }

    /// Whether a call of binding `name` has run or is running (tests wait for one).
    #[cfg(test)]
    pub(super) fn has_cancel(&self, name: &str) -> bool {
        self.cancels().contains_key(name)
    }

    fn cancels(&self) -> MutexGuard<'_, Cancels> {
        // Flags and the records they were made for: valid after a panic elsewhere.
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The guard for `request` when no validator is bound to a key it may change, without
    /// a snapshot or a blocking thread: most writes touch no binding, and this keeps them
    /// off [`Plugins::judge`]. `None` when a validator must judge it. The bindings are
    /// cached per bindings version, which moves with every install or removal.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn unbound(&self, store: &Store, request: &Request) -> Result<Option<Guard>, ProtoError> {
        let storage = |e: mvcc::Error| ProtoError::Internal(format!("storage: {e}"));
        let (version, validators) = self
            .validators(store.bindings_version(), || store.plugin_bindings())
            .map_err(storage)?;
        if validators
            .iter()
            .any(|b| touches(request, &b.binding.prefix))
        {
            return Ok(None);
        }
        Ok(Some(Guard {
            bindings_version: version,
            reads: Vec::new(),
            principal: String::new(),
        }))
    }

    /// The validator bindings of bindings version `current`: cached, or those `read` gives
    /// (with the version they are of), which are then cached.
    fn validators(
        &self,
        current: u64,
        read: impl FnOnce() -> mvcc::Result<(u64, Vec<BindingRecord>)>,
    ) -> mvcc::Result<(u64, Arc<Vec<BindingRecord>>)> {
        let cached = {
            let cached = (self.validators.lock()).unwrap_or_else(PoisonError::into_inner);
            (cached.0, cached.1.clone())
        };
        if cached.0 == current {
            return Ok(cached);
        }
        let (version, records) = read()?;
        let records: Arc<Vec<BindingRecord>> = Arc::new(
            (records.into_iter())
                .filter(|b| b.binding.hook == PluginHook::Validate)
                .collect(),
        );
        *(self.validators.lock()).unwrap_or_else(PoisonError::into_inner) =
            (version, records.clone());
        Ok((version, records))
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Judges `request` from `principal` against the current state: `Ok` with the guard to
    /// propose it with, or the error to answer. Blocking (storage and WebAssembly): call it
    /// off the async runtime.
    pub fn judge(
        &self,
        store: &Store,
        principal: &str,
        request: &Request,
    ) -> Result<Guard, ProtoError> {
        match self.judge_in(store, principal, request, Mode::Thread, &mut Vec::new()) {
            Ok(guard) => Ok(guard),
            Err(Halt::Answer(e)) => Err(e),
            // On the plugin threads a call waits for its slot and runs under its own
            // limits: no stop of a quick judgement applies.
            Err(Halt::Quick(stop)) => Err(ProtoError::Internal(format!(
                "a judgement on a plugin thread stopped as a quick one: {stop:?}"
            ))),
        }
    }

    /// [`Plugins::judge`] in `mode`. The calls of a judgement that is answered are counted;
    /// those of a quick one that stopped are left in `ran`, for the caller to count only if
    /// nothing judges the write again.
    fn judge_in(
        &self,
        store: &Store,
        principal: &str,
        request: &Request,
        mode: Mode,
        ran: &mut Vec<Tally>,
    ) -> Result<Guard, Halt> {
        let storage = |e: mvcc::Error| ProtoError::Internal(format!("storage: {e}"));
        let view = store.view().map_err(storage)?;
        let current = mvcc::bindings_version_in(&view).map_err(storage)?;
        let (version, validators) = self
            .validators(current, || mvcc::bindings_in(&view))
            .map_err(storage)?;
        let bound: Vec<&BindingRecord> = (validators.iter())
            .filter(|b| touches(request, &b.binding.prefix))
            .collect();
        let mut guard = Guard {
            bindings_version: version,
            reads: Vec::new(),
            principal: String::new(),
        };
        if bound.is_empty() {
            return Ok(guard);
        }
        let preview = mvcc::preview(&view, request).map_err(storage)??;
        guard.reads = preview.reads;
        let mut wit = validator::Request {
            principal: principal.to_owned(),
            prefix: Vec::new(),
            revision: view.revision,
            ops: preview
                .changes
                .into_iter()
                .map(|c| Op {
                    kind: if c.value.is_some() {
                        OpKind::Put
                    } else {
                        OpKind::Delete
                    },
                    key: c.key,
                    value: c.value.unwrap_or_default(),
                    prev: c.prev.map(ctx::to_wit),
                })
                .collect(),
        };
        let view = Arc::new(view);
        let judged = (bound.into_iter()).try_for_each(|record| {
            wit.prefix.clone_from(&record.binding.prefix);
            self.run_one(store, &view, record, &wit, mode, (&mut guard, &mut *ran))
        });
        if let Err(Halt::Quick(stop)) = judged {
            return Err(Halt::Quick(stop));
        }
        self.count_judged(std::mem::take(ran));
        judged.map(|()| guard)
    }

    /// Counts the calls of a judgement that is answered (`plugin list`, metrics) and logs
    /// what they have to say.
    fn count_judged(&self, tallies: Vec<Tally>) {
        for tally in &tallies {
            crate::metrics::plugin_call(
                &tally.name,
                "validate",
                tally.outcome,
                tally.cause,
                tally.took,
            );
            match &tally.said {
                Some(Said::WouldReject { code, reason }) => {
                    tracing::warn!(
                        plugin = tally.name,
                        code,
                        reason,
                        "audit: plugin would reject this write"
                    );
                }
                Some(Said::Failed(error)) => {
                    tracing::warn!(plugin = tally.name, error, "plugin failed");
                }
                None => {}
            }
        }
        let mut stats = self.stats();
        for tally in tallies {
            let stats = stats.entry(tally.name).or_default();
            stats.calls += 1;
            match tally.outcome {
                DENIED => stats.denials += 1,
                FAILED => stats.failures += 1,
                _ => {}
            }
        }
    }

    /// Runs one binding's validator and applies its mode and failure policy.
    fn run_one(
        &self,
        store: &Store,
        view: &Arc<View>,
        record: &BindingRecord,
        request: &validator::Request,
        mode: Mode,
        (guard, tallies): (&mut Guard, &mut Vec<Tally>),
    ) -> Result<(), Halt> {
        let binding = &record.binding;
        let name = binding.name.as_str();
        let started = Instant::now();
        let own = self.limits_of(record);
        let (limits, slot) = match mode {
            Mode::Thread => (own, self.runtime.slot()),
            // Compiling takes tens of milliseconds: never on the asking task.
            Mode::Quick if !self.runtime.is_compiled(&record.sha256, binding.hook) => {
                return Err(Halt::Quick(Stop::Busy));
            }
            Mode::Quick => match self.runtime.try_slot() {
                Some(slot) => (quick::capped(&own), slot),
                None => return Err(Halt::Quick(Stop::Busy)),
            },
        };
        let outcome = self.compiled(store, record).and_then(|compiled| {
            let Compiled::Validator(pre) = compiled else {
                return Err(PluginError::Invalid("not a validator".into()));
            };
            let ctx = Ctx::new(binding, view.clone(), limits.memory_mb);
            Ok(validator::call(
                &self.runtime,
                &self.idle,
                &pre,
                record,
                ctx,
                &limits,
                &self.cancel_of(record),
                slot,
                request,
            ))
        });
        let (verdict, reads) = match outcome {
            Ok((verdict, reads)) => (verdict, reads),
            Err(e) => (Err(e), Vec::new()),
        };
        if mode == Mode::Quick
            && let Err(e) = &verdict
            && quick::outgrew(&own, e)
        {
            // Not this binding's failure: judged again on the plugin threads.
            return Err(Halt::Quick(Stop::Overran));
        }
        guard.reads.extend(reads);
        let audit = binding.mode == PluginMode::Audit;
        tracing::debug!(plugin = name, elapsed = ?started.elapsed(), ?verdict, "validated");
        let (outcome, cause) = match &verdict {
            Ok(Verdict::Allow) => (ALLOWED, None),
            Ok(Verdict::Deny(_)) => (DENIED, None),
            Err(e) => (FAILED, Some(e.cause())),
        };
        let said = match &verdict {
            Ok(Verdict::Allow) => None,
            Ok(Verdict::Deny(denial)) => audit.then(|| Said::WouldReject {
                code: denial.code.to_string(),
                reason: denial.reason.to_string(),
            }),
            Err(e) => Some(Said::Failed(e.to_string())),
        };
        tallies.push(Tally {
            name: name.to_owned(),
            outcome,
            cause,
            took: started.elapsed(),
            said,
        });
        match verdict {
            Ok(Verdict::Allow) => Ok(()),
            Ok(Verdict::Deny(denial)) => {
                if audit {
                    return Ok(());
                }
                Err(Halt::Answer(ProtoError::PluginRejected {
                    plugin: name.to_owned(),
                    code: denial.code,
                    reason: denial.reason,
                }))
            }
            Err(e) => {
                if audit || binding.on_error == FailurePolicy::FailOpen {
                    return Ok(());
                }
                Err(Halt::Answer(ProtoError::PluginFailed {
                    plugin: name.to_owned(),
                    cause: e.to_string(),
                }))
            }
        }
    }

    /// The compiled component of `record`'s binding, compiling it from storage on a miss.
    pub(super) fn compiled(
        &self,
        store: &Store,
        record: &BindingRecord,
    ) -> Result<Compiled, PluginError> {
        self.runtime
            .prepare(&record.sha256, record.binding.hook, || {
                store
                    .plugin_module(&record.sha256)
                    .map_err(|e| PluginError::Host(e.to_string()))?
                    .ok_or_else(|| PluginError::Missing(hex(&record.sha256)))
            })
    }

    /// Compiles `wasm` for `hook` into the cache (a no-op when it is there already): checks
    /// that it compiles and fits the hook's world. Blocking.
    pub fn check(&self, sha256: &[u8], hook: PluginHook, wasm: &[u8]) -> Result<(), PluginError> {
        self.runtime
            .prepare(sha256, hook, || Ok(wasm.to_vec()))
            .map(drop)
    }

    /// Compiles the component of an install about to be applied, unless it is compiled
    /// already (on the leader it was, when the install was checked). A failure is only
    /// logged: the install applies the same way on every node, and a call of a binding
    /// whose component does not compile fails with `PluginFailed`. Blocking.
    pub fn precompile(&self, install: &PluginInstallRequest) {
        let sha256 = Sha256::digest(&install.wasm);
        let hook = install.binding.hook;
        if self.runtime.is_compiled(&sha256, hook) {
            return;
        }
        let started = Instant::now();
        match self.check(&sha256, hook, &install.wasm) {
            Ok(()) => {
                tracing::info!(plugin = %install.binding.name, elapsed = ?started.elapsed(), "compiled plugin ahead of its binding")
            }
            Err(e) => {
                tracing::warn!(plugin = %install.binding.name, error = %e, "cannot compile plugin")
            }
        }
    }

    /// Interrupts the running calls of bindings removed or replaced, compiles every bound
    /// component not compiled yet and forgets the others. Run on every bindings change.
    /// Blocking.
    pub fn warm(&self, store: &Store) {
        let Ok((_, bindings)) = store.plugin_bindings() else {
            return;
        };
        self.cancel_changed(&bindings);
        self.idle
            .retain(|warm| bindings.iter().any(|b| warm.serves(b)));
        let keep: Vec<&[u8]> = bindings.iter().map(|b| b.sha256.as_slice()).collect();
        self.runtime.retain(&keep);
        for record in &bindings {
            if let Err(e) = self.compiled(store, record) {
                tracing::warn!(plugin = %record.binding.name, error = %e, "cannot compile plugin");
            }
        }
    }

    /// Counts one call of binding `name` and its outcome.
    pub(super) fn count(&self, name: &str, failure: Option<&PluginError>) {
        let mut stats = self.stats();
        let stats = stats.entry(name.to_owned()).or_default();
        stats.calls += 1;
        stats.stalled = matches!(failure, Some(PluginError::RevisionTooLarge { .. }));
        match failure {
            Some(e) => {
                stats.failures += 1;
                stats.last_error = e.to_string();
            }
            None => stats.last_error.clear(),
        }
    }

    /// Records that binding `name`'s last call failed after all, outside the plugin (a
    /// reactor batch whose writes did not commit).
    pub fn count_failure(&self, name: &str, cause: &str) {
        let mut stats = self.stats();
        let stats = stats.entry(name.to_owned()).or_default();
        stats.failures += 1;
        stats.last_error = cause.to_owned();
    }

    /// Records whether reactor `name` is parked (see [`FailurePolicy::Park`]).
    pub fn set_parked(&self, name: &str, parked: bool) {
        self.stats().entry(name.to_owned()).or_default().parked = parked;
    }

    /// This node's counters for binding `name`.
    pub fn stats_of(&self, name: &str) -> Stats {
        self.stats().get(name).cloned().unwrap_or_default()
    }

    fn stats(&self) -> MutexGuard<'_, HashMap<String, Stats>> {
        // Plain counters: valid after a panic elsewhere.
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `request` may change a key under `prefix` (judged from the request alone,
/// before any read).
pub fn touches(request: &Request, prefix: &[u8]) -> bool {
    match request {
        Request::Put(p) => p.key.starts_with(prefix),
        Request::DeleteRange(d) => overlaps(&d.key, &d.range_end, prefix),
        Request::Txn(t) => txn_touches(t, prefix),
        _ => false,
    }
}

/// [`touches`] for a txn: either branch, nested txns included.
fn txn_touches(t: &etch_proto::TxnRequest, prefix: &[u8]) -> bool {
    t.success.iter().chain(&t.failure).any(|op| match op {
        RequestOp::Put(p) => p.key.starts_with(prefix),
        RequestOp::DeleteRange(d) => overlaps(&d.key, &d.range_end, prefix),
        RequestOp::Range(_) => false,
        RequestOp::Txn(inner) => txn_touches(inner, prefix),
    })
}

/// Whether the range `(key, range_end)` (etcd's conventions) holds a key under `prefix`.
fn overlaps(key: &[u8], range_end: &[u8], prefix: &[u8]) -> bool {
    let end = prefix_end(prefix);
    let below_end = |k: &[u8]| end == [0] || k < end.as_slice();
    match KeyRange::new(key, range_end) {
        KeyRange::Single(k) => k.starts_with(prefix),
        KeyRange::From(start) => below_end(start),
        KeyRange::Between(start, stop) => start < stop && below_end(start) && stop > prefix,
    }
}

#[cfg(test)]
mod tests {
    use etch_proto::{DeleteRangeRequest, PutRequest, TxnRequest};

    use super::*;

    fn del(key: &[u8], end: &[u8]) -> Request {
        Request::DeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            prev_kv: false,
        })
    }

    #[test]
    fn touches_follows_etcds_range_conventions() {
        let put = |k: &str| {
            Request::Put(PutRequest {
                key: k.into(),
                ..Default::default()
            })
        };
        assert!(touches(&put("/a/x"), b"/a/"));
        assert!(!touches(&put("/ab"), b"/a/"));
        assert!(touches(&put("anything"), b""));
        assert!(touches(&del(b"/a/x", b""), b"/a/"));
        assert!(touches(&del(b"/", b"/b"), b"/a/"));
        assert!(!touches(&del(b"/b", b"/c"), b"/a/"));
        assert!(!touches(&del(b"/", b"/a/"), b"/a/"));
        assert!(touches(&del(b"/", &[0]), b"/a/"));
        assert!(!touches(&del(b"/b", &[0]), b"/a/"));
        let txn = Request::Txn(TxnRequest {
            failure: vec![RequestOp::Put(PutRequest {
                key: b"/a/1".to_vec(),
                ..Default::default()
            })],
            ..Default::default()
        });
        assert!(touches(&txn, b"/a/"));
        assert!(!touches(&txn, b"/b/"));
    }
}
