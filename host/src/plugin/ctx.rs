//! [`Ctx`]: the state of one plugin call, and the host side of the imports every world
//! shares (`log`, `config`, `kv`).
//!
//! A call's store holds a `Ctx`: the snapshot the plugin reads (for a validator the one
//! the write is judged against, shared by every plugin of that write), the binding's
//! config, the reads made so far, the call's memory [`Budget`] and, for a reactor, the
//! writes it staged. `kv` reads are answered from the snapshot and recorded as [`Read`]
//! fingerprints; `log` goes to `tracing` under the plugin's name, cut and rate-limited
//! (`log_gate.rs`). A host failure (storage) traps the guest and is reported as
//! [`PluginError::Host`].
//!
//! What the host holds or builds for the call is charged to its budget (issue 12, finding
//! 6): the read set (held: it becomes the write's guard, and is also capped at
//! [`MAX_GUARD_BYTES`]), results and strings crossing the boundary (lent). A read repeated
//! with the same key and range is recorded once. `kv.range` stops scanning at `limit`, and
//! its fingerprint then covers only the keys up to the last one returned: the answer
//! depends on nothing past it. Keys longer than `etch_proto::limits::MAX_KEY_BYTES` are
//! refused ([`PluginError::InvalidArgument`]) before they reach storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etch_proto::limits::MAX_KEY_BYTES;
use etch_proto::plugin::{PluginBinding, PluginLimits};
use etch_proto::{KeyRange, RequestOp};
use wasmtime::{Store, Trap};

use super::budget::{Budget, Exceeded, RECORD_OVERHEAD};
use super::error::PluginError;
use super::log_gate::{self, Admit, LogGate, MAX_LOG_LINE};
use super::runtime::{self, Cancel, Runtime, Slot};
use super::validator::v1::etch::plugin::{config, kv, log, types};
use super::validator::v2::etch::plugin as v2;
use crate::mvcc::{MAX_GUARD_BYTES, READ_OVERHEAD, Read, View};

pub use types::KeyValue;

/// The state of one call.
pub struct Ctx {
    pub(super) plugin: String,
    /// The binding's prefix (the `binding` import of 0.2.0).
    prefix: Vec<u8>,
    /// The snapshot the call reads; none while the instance waits between calls.
    view: Option<Arc<View>>,
    config: Vec<(String, String)>,
    pub(super) reads: Vec<Read>,
    /// Bytes of the read set, as [`crate::mvcc::Guard::bytes`] counts them.
    read_bytes: usize,
    /// Each recorded read's index by a hash of its key and range end, so a repeated read
    /// is recorded once.
    read_index: HashMap<u64, usize>,
    pub(super) budget: Budget,
    host_error: Option<String>,
    /// Why the call must fail whatever the plugin returns (a host call it made was refused
    /// in a way the plugin cannot undo, e.g. staging past a transaction's limits).
    pub(super) refused: Option<PluginError>,
    /// A reactor's staged writes (always empty for a validator: its world cannot write).
    pub(super) staged: Vec<RequestOp>,
    /// Bytes of keys and values staged so far, as `etch_proto::limits::request_bytes`
    /// counts them.
    pub(super) staged_bytes: usize,
    /// How much a reactor may stage (see `reactor.rs`).
    pub(super) stage_limits: etch_proto::limits::Limits,
    /// The node's log gate (set with the store).
    logs: Option<Arc<LogGate>>,
    /// The call slot held while the call runs (see [`Runtime::slot`]).
    slot: Option<Slot>,
    /// The CPU time the call had used when it reached its wall-clock ceiling, if it did
    /// (see [`super::runtime::arm`]).
    pub(super) starved: Option<Duration>,
    /// Wall time spent in `kv` reads of storage (a starved call says if they took it).
    storage: Duration,
}

impl Ctx {
    /// The state of a call of `binding`'s plugin reading `view`, its memory capped at
    /// `memory_mb`.
    pub(crate) fn new(binding: &PluginBinding, view: Arc<View>, memory_mb: u32) -> Ctx {
        Ctx {
            plugin: binding.name.clone(),
            prefix: binding.prefix.clone(),
            view: Some(view),
            config: binding.config.clone(),
            ..Ctx::idle(Budget::new((memory_mb as usize) << 20))
        }
    }

    /// The state of an instance between calls: no snapshot, nothing held but `budget`.
    fn idle(budget: Budget) -> Ctx {
        Ctx {
            plugin: String::new(),
            prefix: Vec::new(),
            view: None,
            config: Vec::new(),
            reads: Vec::new(),
            read_bytes: 0,
            read_index: HashMap::new(),
            budget,
            host_error: None,
            refused: None,
            staged: Vec::new(),
            staged_bytes: 0,
            stage_limits: etch_proto::limits::Limits::default(),
            logs: None,
            slot: None,
            starved: None,
            storage: Duration::ZERO,
        }
    }

    /// The snapshot the call reads.
    fn view(&mut self) -> wasmtime::Result<Arc<View>> {
        match &self.view {
            Some(view) => Ok(view.clone()),
            None => Err(self.host_failed("no snapshot to read: the instance is not in a call")),
        }
    }

    /// Turns a storage failure into a trap, remembering why.
    fn host_failed(&mut self, e: impl std::fmt::Display) -> wasmtime::Error {
        let message = e.to_string();
        self.host_error = Some(message.clone());
        wasmtime::Error::msg(message)
    }

    /// Fails the call: the plugin passed an argument no host call accepts.
    fn check_key(&mut self, call: &str, what: &str, bytes: &[u8]) -> wasmtime::Result<()> {
        if bytes.len() <= MAX_KEY_BYTES {
            return Ok(());
        }
        let message = format!(
            "{call}: {what} of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes",
            bytes.len()
        );
        self.refused = Some(PluginError::InvalidArgument(message.clone()));
        Err(wasmtime::Error::msg(message))
    }

    /// Records `read` in the read set, once, charging it to the budget and the guard cap.
    fn record(&mut self, read: Read) -> wasmtime::Result<()> {
        use std::hash::BuildHasher;
        let hash = (self.read_index.hasher()).hash_one((&read.key, &read.range_end));
        if let Some(&i) = self.read_index.get(&hash)
            && let Some(seen) = self.reads.get(i)
            && seen.key == read.key
            && seen.range_end == read.range_end
        {
            // The same snapshot answers the same range the same way: nothing new to guard.
            return Ok(());
        }
        let bytes = read.key.len() + read.range_end.len() + READ_OVERHEAD;
        if self.read_bytes + bytes > MAX_GUARD_BYTES {
            let message =
                format!("the read set (the write's guard) would exceed {MAX_GUARD_BYTES} bytes");
            self.refused = Some(PluginError::HostMemory(message.clone()));
            return Err(wasmtime::Error::msg(message));
        }
        self.budget.hold("the read set", bytes)?;
        self.read_bytes += bytes;
        self.read_index.entry(hash).or_insert(self.reads.len());
        self.reads.push(read);
        Ok(())
    }
}

/// A fresh store for one call under `limits`: fuel, the deadline (until `cancel`led), the
/// memory budget.
pub(super) fn store(
    runtime: &Runtime,
    ctx: Ctx,
    limits: &PluginLimits,
    cancel: &Cancel,
    slot: Slot,
) -> wasmtime::Result<Store<Ctx>> {
    let mut store = Store::new(runtime.engine(), ctx);
    store.limiter(|ctx| &mut ctx.budget);
    begin(runtime, &mut store, limits, cancel, slot)?;
    Ok(store)
}

/// Readies a kept instance's `store` for a call with `ctx`: what the instance's memory
/// already holds stays counted in its budget ([`Budget::next_call`]); fuel, deadline and
/// everything else are the new call's.
pub(super) fn reuse(
    runtime: &Runtime,
    store: &mut Store<Ctx>,
    ctx: Ctx,
    limits: &PluginLimits,
    cancel: &Cancel,
    slot: Slot,
) -> wasmtime::Result<()> {
    let budget = store.data().budget.next_call();
    *store.data_mut() = Ctx { budget, ..ctx };
    begin(runtime, store, limits, cancel, slot)
}

/// Ends a call on an instance that is kept: returns the call's state (its reads; its slot,
/// freed when it is dropped) and leaves the instance holding no snapshot.
pub(super) fn park(store: &mut Store<Ctx>) -> Ctx {
    let budget = store.data().budget.next_call();
    std::mem::replace(store.data_mut(), Ctx::idle(budget))
}

/// Bytes of linear memory the instance in `store` holds.
pub(super) fn linear_bytes(store: &Store<Ctx>) -> usize {
    store.data().budget.linear()
}

/// Readies `store` for one call: the call slot it holds (see [`Runtime::slot`]), the log
/// gate, the call's fuel and its deadline.
fn begin(
    runtime: &Runtime,
    store: &mut Store<Ctx>,
    limits: &PluginLimits,
    cancel: &Cancel,
    slot: Slot,
) -> wasmtime::Result<()> {
    let ctx = store.data_mut();
    ctx.logs = Some(runtime.log_gate());
    ctx.slot = Some(slot);
    store.set_fuel(limits.fuel)?;
    runtime::arm(
        store,
        runtime.cpu_clock(),
        limits.timeout_ms,
        cancel.clone(),
    );
    Ok(())
}

/// Why a call failed, from the error it returned and what its context saw.
pub(super) fn failure(ctx: &Ctx, limits: &PluginLimits, e: &wasmtime::Error) -> PluginError {
    if let Some(refused) = &ctx.refused {
        return refused.clone();
    }
    match ctx.budget.exceeded() {
        Some(Exceeded::Linear) => return PluginError::Memory(limits.memory_mb),
        Some(Exceeded::Host(what)) => {
            return PluginError::HostMemory(format!(
                "memory cap of {} MiB: {what}",
                limits.memory_mb
            ));
        }
        None => {}
    }
    if let Some(message) = ctx.host_error.clone() {
        PluginError::Host(message)
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::OutOfFuel,
            Some(Trap::Interrupt) => match ctx.starved {
                Some(cpu) => PluginError::Starved {
                    timeout_ms: limits.timeout_ms,
                    cpu_ms: cpu.as_millis(),
                    wall_ms: runtime::wall_ceiling(limits.timeout_ms).as_millis(),
                    storage_ms: ctx.storage.as_millis(),
                },
                None => PluginError::Deadline(limits.timeout_ms),
            },
            Some(trap) => PluginError::Trap(trap.to_string()),
            None => PluginError::Trap(log_gate::truncate(format!("{e:#}"), MAX_MESSAGE)),
        }
    }
}

/// Longest message a plugin can make the node log, store or send to a client (a denial
/// reason, a reactor's error): issue 12 saw 20-100 MB ones logged on every retry.
pub const MAX_MESSAGE: usize = 4096;
/// Longest denial code (a short machine-readable word).
pub const MAX_CODE: usize = 256;

/// A verdict whose denial fits [`MAX_CODE`] and [`MAX_MESSAGE`].
pub(super) fn bounded(verdict: types::Verdict) -> types::Verdict {
    match verdict {
        types::Verdict::Deny(denial) => types::Verdict::Deny(types::Denial {
            code: log_gate::truncate(denial.code, MAX_CODE),
            reason: log_gate::truncate(denial.reason, MAX_MESSAGE),
        }),
        allow => allow,
    }
}

/// Instantiates `pre` in `store` and runs the component's `init` (0.2.0, optional) when it
/// exports one, with the binding's configuration. An `err` from it fails the call with
/// [`PluginError::Init`].
pub(super) fn instantiate(
    store: &mut Store<Ctx>,
    pre: &wasmtime::component::InstancePre<Ctx>,
) -> wasmtime::Result<wasmtime::component::Instance> {
    let instance = pre.instantiate(&mut *store)?;
    let Some(index) = instance.get_export_index(&mut *store, None, "init") else {
        return Ok(instance);
    };
    let init = instance
        .get_typed_func::<(Vec<(String, String)>,), (Result<(), String>,)>(&mut *store, &index)
        .map_err(|e| e.context("the component's `init` does not have the contract's type"))?;
    let config = store.data().config.clone();
    let (result,) = init.call(&mut *store, (config,))?;
    if let Err(message) = result {
        let message = log_gate::truncate(message, MAX_MESSAGE);
        store.data_mut().refused = Some(PluginError::Init(message.clone()));
        return Err(wasmtime::Error::msg(format!("init failed: {message}")));
    }
    Ok(instance)
}

/// The bytes a key-value takes on the host.
fn kv_bytes(kv: &etch_proto::KeyValue) -> usize {
    kv.key.len() + kv.value.len() + RECORD_OVERHEAD
}

impl types::Host for Ctx {}

impl log::Host for Ctx {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        use log::Level;
        self.budget.lend("a log line", message.len())?;
        let admit = match &self.logs {
            Some(gate) => gate.admit(&self.plugin, std::time::Instant::now()),
            None => Admit::Yes { suppressed: 0 },
        };
        let Admit::Yes { suppressed } = admit else {
            return Ok(());
        };
        let plugin = self.plugin.as_str();
        if suppressed > 0 {
            tracing::warn!(
                plugin,
                suppressed,
                "plugin log lines suppressed (rate limit)"
            );
        }
        let message = log_gate::truncate(message, MAX_LOG_LINE);
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

impl config::Host for Ctx {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        let value = (self.config.iter())
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone());
        let bytes = value.as_ref().map_or(0, String::len);
        self.budget.lend("a config value", bytes)?;
        Ok(value)
    }

    fn entries(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        let bytes = (self.config.iter())
            .map(|(k, v)| k.len() + v.len() + RECORD_OVERHEAD)
            .sum();
        self.budget.lend("the config", bytes)?;
        Ok(self.config.clone())
    }
}

impl kv::Host for Ctx {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<KeyValue>> {
        self.check_key("kv.get", "key", &key)?;
        let view = self.view()?;
        let started = std::time::Instant::now();
        let kv = view.get(&key);
        self.storage += started.elapsed();
        let kv = match kv {
            Ok(kv) => kv,
            Err(e) => return Err(self.host_failed(e)),
        };
        if let Some(kv) = &kv {
            self.budget.lend("a kv.get result", kv_bytes(kv))?;
        }
        let mut read = Read {
            key,
            ..Read::default()
        };
        if let Some(kv) = &kv {
            read.note(kv.mod_revision);
        }
        self.record(read)?;
        Ok(kv.map(to_wit))
    }

    fn range(
        &mut self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        limit: u32,
    ) -> wasmtime::Result<Vec<KeyValue>> {
        self.check_key("kv.range", "key", &key)?;
        self.check_key("kv.range", "range end", &range_end)?;
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        let mut read = Read {
            key,
            range_end,
            ..Read::default()
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let view = self.view()?;
        let started = std::time::Instant::now();
        for kv in (view.scan(&KeyRange::new(&read.key, &read.range_end))).take(limit) {
            let kv = match kv {
                Ok(kv) => kv,
                Err(e) => return Err(self.host_failed(e)),
            };
            bytes += kv_bytes(&kv);
            self.budget.lend("a kv.range result", bytes)?;
            read.note(kv.mod_revision);
            out.push(kv);
        }
        self.storage += started.elapsed();
        // Cut short by the limit, the answer rests only on the keys up to the last one
        // returned: the fingerprint covers `[key, last]`, so writes past it (which could
        // not change the answer) do not conflict with the write.
        if out.len() == limit
            && !read.range_end.is_empty()
            && let Some(last) = out.last()
        {
            let mut end = last.key.clone();
            end.push(0);
            read.range_end = end;
        }
        self.record(read)?;
        Ok(out.into_iter().map(to_wit).collect())
    }
}

// 0.2.0 serves the same imports as 0.1.0 (its types are 0.1.0's), plus `binding`.

impl v2::log::Host for Ctx {
    fn log(&mut self, level: v2::log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            v2::log::Level::Debug => log::Level::Debug,
            v2::log::Level::Info => log::Level::Info,
            v2::log::Level::Warn => log::Level::Warn,
            v2::log::Level::Error => log::Level::Error,
        };
        log::Host::log(self, level, message)
    }
}

impl v2::config::Host for Ctx {
    fn get(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        config::Host::get(self, name)
    }

    fn entries(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        config::Host::entries(self)
    }
}

impl v2::kv::Host for Ctx {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<KeyValue>> {
        kv::Host::get(self, key)
    }

    fn range(
        &mut self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        limit: u32,
    ) -> wasmtime::Result<Vec<KeyValue>> {
        kv::Host::range(self, key, range_end, limit)
    }
}

impl v2::binding::Host for Ctx {
    fn name(&mut self) -> wasmtime::Result<String> {
        self.budget.lend("the binding's name", self.plugin.len())?;
        Ok(self.plugin.clone())
    }

    fn prefix(&mut self) -> wasmtime::Result<Vec<u8>> {
        self.budget
            .lend("the binding's prefix", self.prefix.len())?;
        Ok(self.prefix.clone())
    }
}

/// A stored key-value as the worlds' record.
pub fn to_wit(kv: etch_proto::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}
