//! One validator call: a fresh store and instance under the binding's limits, the host side
//! of the `validator` world's imports, and the read set the call leaves behind.
//!
//! The store's data is a [`Ctx`]: the snapshot being validated against (shared by every
//! plugin of one write), the binding's config, the reads made so far, and the memory cap.
//! `kv` reads are answered from the snapshot and recorded as [`Read`] fingerprints; `log`
//! goes to `tracing` under the plugin's name. A host failure (storage) traps the guest and
//! is reported as [`PluginError::Host`].

use std::sync::Arc;

use etch_proto::KeyRange;
use etch_proto::plugin::PluginLimits;
use wasmtime::component::bindgen;
use wasmtime::{ResourceLimiter, Store, Trap};

use super::error::PluginError;
use super::runtime::{Runtime, TICK};
use crate::mvcc::{Read, View};

bindgen!({
    world: "validator",
    path: "../guest-sdk/wit",
    imports: { default: trappable },
});

pub use etch::plugin::types::{KeyValue, Op, OpKind};

/// The state of one call.
pub struct Ctx {
    plugin: String,
    view: Arc<View>,
    config: Vec<(String, String)>,
    reads: Vec<Read>,
    limiter: MemoryCap,
    host_error: Option<String>,
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
        }
    }

    /// Turns a storage failure into a trap, remembering why.
    fn host_failed(&mut self, e: impl std::fmt::Display) -> wasmtime::Error {
        let message = e.to_string();
        self.host_error = Some(message.clone());
        wasmtime::Error::msg(message)
    }
}

/// Runs `pre`'s `validate` on `request` in a fresh instance. Returns the verdict and the
/// reads the plugin made.
pub fn call(
    runtime: &Runtime,
    pre: &ValidatorPre<Ctx>,
    ctx: Ctx,
    limits: &PluginLimits,
    request: &Request,
) -> (Result<Verdict, PluginError>, Vec<Read>) {
    let mut store = Store::new(runtime.engine(), ctx);
    store.limiter(|ctx| &mut ctx.limiter);
    let ticks = limits.timeout_ms.div_ceil(TICK.as_millis() as u64).max(1) + 1;
    store.set_epoch_deadline(ticks);
    let result = store
        .set_fuel(limits.fuel)
        .and_then(|()| pre.instantiate(&mut store))
        .and_then(|instance| instance.call_validate(&mut store, request));
    let ctx = store.into_data();
    let result = result.map_err(|e| {
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
    });
    (result, ctx.reads)
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

impl etch::plugin::types::Host for Ctx {}

impl etch::plugin::log::Host for Ctx {
    fn log(&mut self, level: etch::plugin::log::Level, message: String) -> wasmtime::Result<()> {
        use etch::plugin::log::Level;
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

impl etch::plugin::config::Host for Ctx {
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

impl etch::plugin::kv::Host for Ctx {
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

/// A stored key-value as the world's record.
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
