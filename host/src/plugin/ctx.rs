//! [`Ctx`]: the state of one plugin call, and the host side of the imports every world
//! shares (`log`, `config`, `kv`).
//!
//! A call's store holds a `Ctx`: the snapshot the plugin reads (for a validator the one
//! the write is judged against, shared by every plugin of that write), the binding's
//! config, the reads made so far, the memory cap and, for a reactor, the writes it staged.
//! `kv` reads are answered from the snapshot and recorded as [`Read`] fingerprints; `log`
//! goes to `tracing` under the plugin's name. A host failure (storage) traps the guest and
//! is reported as [`PluginError::Host`].

use std::sync::Arc;

use etch_proto::plugin::PluginLimits;
use etch_proto::{KeyRange, RequestOp};
use wasmtime::{ResourceLimiter, Store, Trap};

use super::error::PluginError;
use super::runtime::{Runtime, TICK};
use super::validator::etch::plugin::{config, kv, log, types};
use crate::mvcc::{Read, View};

pub use types::KeyValue;

/// The state of one call.
pub struct Ctx {
    pub(super) plugin: String,
    view: Arc<View>,
    config: Vec<(String, String)>,
    pub(super) reads: Vec<Read>,
    limiter: MemoryCap,
    host_error: Option<String>,
    /// A reactor's staged writes (always empty for a validator: its world cannot write).
    pub(super) staged: Vec<RequestOp>,
    /// Bytes of keys and values staged so far.
    pub(super) staged_bytes: usize,
    /// The call slot held while the call runs (see [`Runtime::slot`]).
    slot: Option<super::runtime::Slot>,
}

impl Ctx {
    pub(crate) fn new(
        plugin: &str,
        view: Arc<View>,
        config: Vec<(String, String)>,
        memory_mb: u32,
    ) -> Ctx {
        Ctx {
            plugin: plugin.to_owned(),
            view,
            config,
            reads: Vec::new(),
            limiter: MemoryCap {
                bytes: (memory_mb as usize) << 20,
                hit: false,
            },
            host_error: None,
            staged: Vec::new(),
            staged_bytes: 0,
            slot: None,
        }
    }

    /// Turns a storage failure into a trap, remembering why.
    fn host_failed(&mut self, e: impl std::fmt::Display) -> wasmtime::Error {
        let message = e.to_string();
        self.host_error = Some(message.clone());
        wasmtime::Error::msg(message)
    }
}

/// A fresh store for one call under `limits`: fuel, an epoch deadline, the memory cap.
pub(super) fn store(
    runtime: &Runtime,
    ctx: Ctx,
    limits: &PluginLimits,
) -> wasmtime::Result<Store<Ctx>> {
    let mut ctx = ctx;
    ctx.slot = Some(runtime.slot());
    let mut store = Store::new(runtime.engine(), ctx);
    store.limiter(|ctx| &mut ctx.limiter);
    let ticks = limits.timeout_ms.div_ceil(TICK.as_millis() as u64).max(1) + 1;
    store.set_epoch_deadline(ticks);
    store.set_fuel(limits.fuel)?;
    Ok(store)
}

/// Why a call failed, from the error it returned and what its context saw.
pub(super) fn failure(ctx: &Ctx, limits: &PluginLimits, e: &wasmtime::Error) -> PluginError {
    if ctx.limiter.hit {
        PluginError::Memory(limits.memory_mb)
    } else if let Some(message) = ctx.host_error.clone() {
        PluginError::Host(message)
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::OutOfFuel,
            Some(Trap::Interrupt) => PluginError::Deadline(limits.timeout_ms),
            Some(trap) => PluginError::Trap(trap.to_string()),
            None => PluginError::Trap(format!("{e:#}")),
        }
    }
}

/// Caps linear memory growth at the binding's limit; growing past it traps.
struct MemoryCap {
    bytes: usize,
    hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.bytes {
            self.hit = true;
            return Err(wasmtime::Error::msg("memory cap exceeded"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl types::Host for Ctx {}

impl log::Host for Ctx {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        use log::Level;
        let plugin = self.plugin.as_str();
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
        Ok(self
            .config
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone()))
    }

    fn entries(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.config.clone())
    }
}

impl kv::Host for Ctx {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<KeyValue>> {
        let kv = match self.view.get(&key) {
            Ok(kv) => kv,
            Err(e) => return Err(self.host_failed(e)),
        };
        let mut read = Read {
            key,
            ..Read::default()
        };
        if let Some(kv) = &kv {
            read.note(kv.mod_revision);
        }
        self.reads.push(read);
        Ok(kv.map(to_wit))
    }

    fn range(
        &mut self,
        key: Vec<u8>,
        range_end: Vec<u8>,
        limit: u32,
    ) -> wasmtime::Result<Vec<KeyValue>> {
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
        // The fingerprint covers the whole range, whatever the limit: the decision may rest
        // on what lies past it (e.g. "there are more than N keys").
        for kv in self.view.scan(&KeyRange::new(&read.key, &read.range_end)) {
            let kv = match kv {
                Ok(kv) => kv,
                Err(e) => return Err(self.host_failed(e)),
            };
            read.note(kv.mod_revision);
            if out.len() < limit {
                out.push(to_wit(kv));
            }
        }
        self.reads.push(read);
        Ok(out)
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
