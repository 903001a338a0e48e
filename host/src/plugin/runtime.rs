//! [`Runtime`]: one wasmtime engine per node, and the components compiled on it.
//!
//! The engine is configured once for every plugin call the node will make:
//!
//! - **component model**, no WASI: one linker per world and contract version defines only
//!   that world's imports (`validator`: log, config, kv, and from 0.2.0 binding;
//!   `reactor`: those and kv-write). Every version ever shipped is served ([`SERVED`]); a
//!   component's version is read from the versions of the interfaces it imports
//!   ([`contract`]), and 0.2.0's optional `init` export is looked up by name when an
//!   instance is made (`ctx::instantiate`);
//! - **fuel** (`consume_fuel`): each call gets the binding's budget, and a loop stops
//!   deterministically when it runs out;
//! - **epoch interruption**: a dedicated OS thread advances the engine's epoch every
//!   [`TICK`] (a tokio task would not do: on a busy runtime it never runs while the guest
//!   spins — STACK.md; the thread holds only a weak reference and ends with the engine).
//!   On every tick a running call looks at its deadline (CPU time of its thread, with a
//!   wall-clock ceiling) and at its [`Cancel`] flags ([`arm`]): a call is interrupted when
//!   its deadline passes, when its binding is
//!   removed or replaced, or when the node stops, within a tick of it;
//! - the **pooling allocator**: instances, memories and tables come from preallocated slots,
//!   so a fresh instance costs microseconds (validator instances are also kept between
//!   calls: `idle.rs`, at most [`CALL_SLOTS`] of them). Its slots bound how many instances
//!   can live at once ([`POOL_SLOTS`]; a component may hold several core instances) and how
//!   large a memory can ever be ([`MAX_MEMORY_MB`]); each binding's own memory cap is
//!   enforced per store by a limiter (see `ctx.rs`). Calls wait for one of [`CALL_SLOTS`]
//!   before they instantiate, so many concurrent writes queue instead of exhausting the
//!   pool (they failed with "maximum concurrent limit of 64 for core instances reached"
//!   under 100 clients).
//!
//! Components are compiled ahead of use and cached by sha256 and hook as `InstancePre`s
//! (imports already resolved), so that a call only instantiates: the leader compiles an
//! upload before proposing it (a component that does not compile or does not fit its
//! hook's world is refused there), every node compiles it again while applying the install,
//! before the binding takes effect (`raft::StateMachine`), and at start and after a
//! snapshot for the bindings already stored. The cache forgets components no binding uses
//! any more ([`Runtime::retain`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etch_proto::plugin::PluginHook;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use super::ctx::Ctx;
use super::error::{PluginError, Result};
use super::log_gate::LogGate;
use super::{reactor, validator};

/// How often the epoch advances: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(2);
/// Component instances the pool holds (each with up to two core instances, memories and
/// tables on average; a component with more still fits while [`CALL_SLOTS`] bounds calls).
pub const POOL_SLOTS: u32 = 32;
/// Plugin calls that run at once on a node; more wait. Calls are CPU-bound and a node has
/// few cores: running more at once would only hold more instances.
pub const CALL_SLOTS: usize = 8;
/// The largest memory cap a binding may ask for, in MiB.
pub const MAX_MEMORY_MB: u32 = 256;

/// The node's plugin engine and compiled components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    slots: Arc<Slots>,
    /// One linker per world and contract version (index: [`Contract`]).
    validators: [Linker<Ctx>; 2],
    reactors: [Linker<Ctx>; 2],
    /// Compiled components by sha256 and hook.
    cache: Mutex<HashMap<(Vec<u8>, PluginHook), Compiled>>,
    /// The per-binding rate limit of plugin log lines.
    log_gate: Arc<LogGate>,
    /// The CPU time of the calling thread, which call deadlines count ([`arm`]).
    cpu_clock: CpuClock,
}

/// A clock of the CPU time the calling thread has used.
pub(super) type CpuClock = fn() -> Duration;

/// The count of free call slots.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One of the [`CALL_SLOTS`], held by a running call.
pub(super) struct Slot {
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut free = (self.slots.free.lock()).unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.slots.freed.notify_one();
    }
}

/// A component compiled for one hook, its imports resolved.
#[derive(Clone)]
pub enum Compiled {
    Validator(validator::Pre),
    Reactor(reactor::Pre),
}

/// The versions of the contract (`etch:plugin`) a node serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Contract {
    V0_1 = 0,
    V0_2 = 1,
}

/// The contract versions served, as the error for any other says.
const SERVED: &str = "0.1.0 and 0.2.0";

impl Runtime {
    /// Makes the engine and starts its epoch thread.
    ///
    /// # Errors
    ///
    /// The engine configuration is refused (e.g. the pool cannot be reserved).
    pub fn new() -> anyhow::Result<Runtime> {
        Runtime::with_cpu_clock(thread_cpu)
    }

    /// [`Runtime::new`] whose call deadlines count `cpu_clock` (tests: a thread that never
    /// gets a CPU).
    pub(super) fn with_cpu_clock(cpu_clock: CpuClock) -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 2)
            .total_memories(POOL_SLOTS * 2)
            .total_tables(POOL_SLOTS * 2)
            .total_stacks(POOL_SLOTS)
            .max_memory_size((MAX_MEMORY_MB as usize) << 20)
            // Reset small memories and tables with memset and keep them resident instead
            // of an madvise per call (6.5% of the leader's CPU under put100 with json-schema
            // bound); at most CALL_SLOTS slots stay warm, bounding what this keeps.
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            .max_unused_warm_slots(CALL_SLOTS as u32)
            .decommit_batch_size(CALL_SLOTS);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_reservation(u64::from(MAX_MEMORY_MB) << 20)
            // One compiler thread: spread over every core, a compile starves the node's
            // Raft heartbeats on a small or busy machine, and followers then take the
            // leader for dead (seen on 2 cores; compiles are rare and cached).
            .parallel_compilation(false)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("plugin engine: {e}"))?;
        let linker_error = |e: wasmtime::Error| anyhow::anyhow!("plugin linker: {e}");
        let mut validators = [Linker::new(&engine), Linker::new(&engine)];
        validator::v1::Validator::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut validators[0], |c| c)
            .map_err(linker_error)?;
        validator::v2::ValidatorCore::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut validators[1], |c| c)
            .map_err(linker_error)?;
        let mut reactors = [Linker::new(&engine), Linker::new(&engine)];
        reactor::v1::Reactor::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut reactors[0], |c| c)
            .map_err(linker_error)?;
        reactor::v2::ReactorCore::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut reactors[1], |c| c)
            .map_err(linker_error)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                slots: Arc::new(Slots {
                    free: Mutex::new(CALL_SLOTS),
                    freed: Condvar::new(),
                }),
                validators,
                reactors,
                cache: Mutex::new(HashMap::new()),
                log_gate: Arc::default(),
                cpu_clock,
            }),
        })
    }

    /// The clock call deadlines count.
    pub(super) fn cpu_clock(&self) -> CpuClock {
        self.inner.cpu_clock
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The node's plugin log gate (`log_gate.rs`).
    pub(super) fn log_gate(&self) -> Arc<LogGate> {
        self.inner.log_gate.clone()
    }

    /// Waits for one of the [`CALL_SLOTS`]; the call holds it until the slot is dropped.
    pub(super) fn slot(&self) -> Slot {
        let slots = &self.inner.slots;
        let mut free = slots.free.lock().unwrap_or_else(PoisonError::into_inner);
        while *free == 0 {
            free = slots
                .freed
                .wait(free)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *free -= 1;
        Slot {
            slots: slots.clone(),
        }
    }

    /// One of the [`CALL_SLOTS`] if one is free now, without waiting.
    pub(super) fn try_slot(&self) -> Option<Slot> {
        let slots = &self.inner.slots;
        let mut free = slots.free.lock().unwrap_or_else(PoisonError::into_inner);
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Slot {
            slots: slots.clone(),
        })
    }

    /// The compiled component `sha256` for `hook`, compiling `bytes()` on a miss.
    /// Compiling takes tens of milliseconds: call it off the async runtime.
    ///
    /// # Errors
    ///
    /// The bytes cannot be had, do not compile, or do not fit the hook's world.
    pub fn prepare(
        &self,
        sha256: &[u8],
        hook: PluginHook,
        bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Compiled> {
        let key = (sha256.to_vec(), hook);
        if let Some(compiled) = self.cache().get(&key) {
            return Ok(compiled.clone());
        }
        let started = std::time::Instant::now();
        let bytes = bytes()?;
        if let Some(why) = not_a_component(&bytes) {
            return Err(PluginError::Invalid(why.into()));
        }
        let component = Component::new(&self.inner.engine, &bytes)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let contract = contract(&self.inner.engine, &component)?;
        let linker = match hook {
            PluginHook::Validate => &self.inner.validators[contract as usize],
            PluginHook::React => &self.inner.reactors[contract as usize],
        };
        let world = hook_world(hook);
        let invalid = |e: wasmtime::Error| {
            let why = misfit(&self.inner.engine, &component, hook)
                .unwrap_or_else(|| format!("not a {world}: {e:#}"));
            PluginError::Invalid(why)
        };
        let instance_pre = linker.instantiate_pre(&component).map_err(invalid)?;
        let compiled = match (hook, contract) {
            (PluginHook::Validate, Contract::V0_1) => {
                validator::v1::ValidatorPre::new(instance_pre)
                    .map(|pre| Compiled::Validator(validator::Pre::V1(pre)))
            }
            (PluginHook::Validate, Contract::V0_2) => {
                validator::v2::ValidatorCorePre::new(instance_pre)
                    .map(|pre| Compiled::Validator(validator::Pre::V2(pre)))
            }
            (PluginHook::React, Contract::V0_1) => reactor::v1::ReactorPre::new(instance_pre)
                .map(|pre| Compiled::Reactor(reactor::Pre::V1(pre))),
            (PluginHook::React, Contract::V0_2) => reactor::v2::ReactorCorePre::new(instance_pre)
                .map(|pre| Compiled::Reactor(reactor::Pre::V2(pre))),
        }
        .map_err(invalid)?;
        tracing::debug!(elapsed = ?started.elapsed(), size = bytes.len(), world, ?contract, "compiled plugin");
        self.cache().insert(key, compiled.clone());
        Ok(compiled)
    }

    /// Whether the component `sha256` is compiled for `hook`.
    pub fn is_compiled(&self, sha256: &[u8], hook: PluginHook) -> bool {
        self.cache().contains_key(&(sha256.to_vec(), hook))
    }

    /// Forgets compiled components whose sha256 is not in `keep`.
    pub fn retain(&self, keep: &[&[u8]]) {
        self.cache()
            .retain(|(sha, _), _| keep.contains(&sha.as_slice()));
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(Vec<u8>, PluginHook), Compiled>> {
        // The map holds only finished compilations: valid after a panic elsewhere.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What stops a call before its deadline: its binding was removed or replaced, or the node
/// is stopping. Cheap to clone; the flags are shared with whoever may set them.
#[derive(Clone, Debug, Default)]
pub struct Cancel {
    pub(super) binding: Arc<AtomicBool>,
    pub(super) node: Arc<AtomicBool>,
}

impl Cancel {
    /// Why the call was cancelled, if it was.
    pub fn reason(&self) -> Option<&'static str> {
        if self.node.load(Ordering::Relaxed) {
            Some("the node is stopping")
        } else if self.binding.load(Ordering::Relaxed) {
            Some("the binding was removed or replaced")
        } else {
            None
        }
    }
}

/// How many times its CPU deadline a call may last in wall time, up to [`WALL_CAP`]: a call
/// that has not used up its CPU deadline by then fails as well ([`PluginError::Starved`]).
pub const WALL_FACTOR: u32 = 10;
/// The longest a call may last in wall time beyond its CPU deadline's own length: past the
/// node's default request timeout (5 s) a client would get an ambiguous timeout instead of
/// the plugin's failure, so a starved call ends by half of it.
pub const WALL_CAP: Duration = Duration::from_millis(2500);

/// The wall-clock ceiling of a call whose deadline is `timeout_ms` of CPU time: ten times
/// it, at most [`WALL_CAP`], never less than the deadline itself.
pub fn wall_ceiling(timeout_ms: u64) -> Duration {
    let deadline = Duration::from_millis(timeout_ms);
    deadline.max(deadline.saturating_mul(WALL_FACTOR).min(WALL_CAP))
}

/// Arms `store`'s call with its deadline and `cancel`: on every epoch tick the call goes on
/// only while none of them has happened. The deadline is **CPU time** of the call's thread:
/// plugin threads run `SCHED_IDLE` (`executor.rs`), so on a node whose own work, or another
/// process, keeps the CPUs busy a call waits for a CPU, and a wall-clock deadline failed
/// writes whose validator had done almost nothing (seen in CI: a JSON-schema check refused
/// with "deadline of 200 ms exceeded" on a machine busy with other tests). A call still
/// ends after [`wall_ceiling`] in wall time, so a starved call cannot hold its write for
/// ever. Both trap as an interrupt; [`Ctx::starved`] tells them apart. A
/// cancellation traps with an error the caller maps through [`Cancel::reason`].
///
/// Each tick the call also yields its CPU (`sched_yield`). Plugin threads are `SCHED_IDLE`,
/// yet on the 2-core VMs measured a node or client thread that became runnable behind a
/// spinning call still waited for the scheduler tick, 4–9 ms, which set the p99 of reads
/// outside a looping validator's prefix at 5–15× their baseline; yielding every tick bounds
/// that wait by [`TICK`] (BENCHMARKS.md, "Fairness").
pub(super) fn arm(store: &mut Store<Ctx>, clock: CpuClock, timeout_ms: u64, cancel: Cancel) {
    let cpu = Duration::from_millis(timeout_ms);
    let started = clock();
    let ceiling = Instant::now() + wall_ceiling(timeout_ms);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |mut store| {
        if let Some(reason) = cancel.reason() {
            return Err(wasmtime::Error::msg(reason));
        }
        let used = clock().saturating_sub(started);
        if used >= cpu {
            return Ok(UpdateDeadline::Interrupt);
        }
        if Instant::now() >= ceiling {
            store.data_mut().starved = Some(used);
            return Ok(UpdateDeadline::Interrupt);
        }
        std::thread::yield_now();
        Ok(UpdateDeadline::Continue(1))
    });
}

/// The CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(now.tv_sec).unwrap_or(0),
        u32::try_from(now.tv_nsec).unwrap_or(0),
    )
}

/// What to do with bytes that are WebAssembly but no component: a core module, as a plain
/// `cargo build` makes.
fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(
            "this is a core WebAssembly module, not a component: build the plugin with \
             `etch-plugin build` (or wrap the module with `etch-plugin encode`)",
        ),
        _ => None,
    }
}

/// Why a component that compiled does not fit `hook`, in the terms of what to do about
/// it, when its imports and exports tell: it was built for WASI, or for the other hook.
fn misfit(engine: &wasmtime::Engine, component: &Component, hook: PluginHook) -> Option<String> {
    let ty = component.component_type();
    if let Some((wasi, _)) = ty
        .imports(engine)
        .find(|(name, _)| name.starts_with("wasi:"))
    {
        return Some(format!(
            "this component imports WASI ({wasi}, ...): plugins import no WASI; build for \
             wasm32-unknown-unknown with `etch-plugin build`"
        ));
    }
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    match hook {
        PluginHook::Validate if exports.contains(&"on-events") => {
            Some("this component is a reactor: install it with `--hook react`".into())
        }
        PluginHook::React if exports.contains(&"validate") => {
            Some("this component is a validator: install it with `--hook validate`".into())
        }
        _ => None,
    }
}

/// The version of `etch:plugin` a component was built against, by the versions of the
/// interfaces it imports. One that imports none of them fits either; it is taken as 0.2.0
/// when it exports `init` (0.1.0 has none), else as 0.1.0.
fn contract(engine: &wasmtime::Engine, component: &Component) -> Result<Contract> {
    let ty = component.component_type();
    let mut versions: Vec<&str> = ty
        .imports(engine)
        .filter_map(|(name, _)| name.strip_prefix("etch:plugin/"))
        .filter_map(|name| name.split_once('@').map(|(_, version)| version))
        .collect();
    versions.sort_unstable();
    versions.dedup();
    match versions.as_slice() {
        ["0.1.0"] => Ok(Contract::V0_1),
        ["0.2.0"] => Ok(Contract::V0_2),
        [] if ty.exports(engine).any(|(name, _)| name == "init") => Ok(Contract::V0_2),
        [] => Ok(Contract::V0_1),
        [one] => Err(PluginError::Invalid(format!(
            "this component was built against etch:plugin@{one}; this node serves {SERVED}"
        ))),
        several => Err(PluginError::Invalid(format!(
            "this component imports several versions of etch:plugin ({}); build it against \
             one (this node serves {SERVED})",
            several.join(", ")
        ))),
    }
}

/// The WIT world a hook's components implement.
fn hook_world(hook: PluginHook) -> &'static str {
    match hook {
        PluginHook::Validate => "validator",
        PluginHook::React => "reactor",
    }
}
