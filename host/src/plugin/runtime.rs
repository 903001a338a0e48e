//! [`Runtime`]: one wasmtime engine per node, and the components compiled on it.
//!
//! The engine is configured once for every plugin call the node will make:
//!
//! - **component model**, no WASI: the linker defines only the `validator` world's imports;
//! - **fuel** (`consume_fuel`): each call gets the binding's budget, and a loop stops
//!   deterministically when it runs out;
//! - **epoch interruption**: a dedicated OS thread advances the engine's epoch every
//!   [`TICK`]; a call's deadline is a number of ticks. (A tokio task would not do: on a busy
//!   runtime it never runs while the guest spins — STACK.md.) The thread holds only a weak
//!   reference and ends with the engine;
//! - the **pooling allocator**: instances, memories and tables come from preallocated slots,
//!   so a fresh instance per call costs microseconds. Its slots bound how many calls can run
//!   at once ([`POOL_SLOTS`]) and how large a memory can ever be ([`MAX_MEMORY_MB`]); each
//!   binding's own memory cap is enforced per store by a limiter (see `validator.rs`).
//!
//! Components are compiled lazily and cached by sha256 as `InstancePre`s (imports already
//! resolved), so that a call only instantiates. The cache forgets components no binding
//! uses any more ([`Runtime::retain`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::error::{PluginError, Result};
use super::validator::{Ctx, Validator, ValidatorPre};

/// How often the epoch advances: the granularity of call deadlines.
pub const TICK: Duration = Duration::from_millis(2);
/// Plugin calls (instances) that may run at once on a node.
pub const POOL_SLOTS: u32 = 32;
/// The largest memory cap a binding may ask for, in MiB.
pub const MAX_MEMORY_MB: u32 = 256;

/// The node's plugin engine and compiled components. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<Ctx>,
    /// Compiled components by sha256.
    cache: Mutex<HashMap<Vec<u8>, ValidatorPre<Ctx>>>,
}

impl Runtime {
    /// Makes the engine and starts its epoch thread.
    ///
    /// # Errors
    ///
    /// The engine configuration is refused (e.g. the pool cannot be reserved).
    pub fn new() -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_SLOTS)
            .total_core_instances(POOL_SLOTS * 2)
            .total_memories(POOL_SLOTS * 2)
            .total_tables(POOL_SLOTS * 2)
            .total_stacks(POOL_SLOTS)
            .max_memory_size((MAX_MEMORY_MB as usize) << 20);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .memory_reservation(u64::from(MAX_MEMORY_MB) << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("plugin engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        Validator::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |ctx| ctx)
            .map_err(|e| anyhow::anyhow!("plugin linker: {e}"))?;
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
                linker,
                cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The compiled component `sha256`, compiling `bytes()` on a miss. Compiling takes tens
    /// of milliseconds: call it off the async runtime.
    ///
    /// # Errors
    ///
    /// The bytes cannot be had, do not compile, or do not fit the `validator` world.
    pub fn prepare(
        &self,
        sha256: &[u8],
        bytes: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<ValidatorPre<Ctx>> {
        if let Some(pre) = self.cache().get(sha256) {
            return Ok(pre.clone());
        }
        let started = std::time::Instant::now();
        let bytes = bytes()?;
        let component = Component::new(&self.inner.engine, &bytes)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Invalid(format!("{e:#}")))?;
        let pre = ValidatorPre::new(instance_pre)
            .map_err(|e| PluginError::Invalid(format!("not a validator: {e:#}")))?;
        tracing::debug!(elapsed = ?started.elapsed(), size = bytes.len(), "compiled plugin");
        self.cache().insert(sha256.to_vec(), pre.clone());
        Ok(pre)
    }

    /// Forgets compiled components whose sha256 is not in `keep`.
    pub fn retain(&self, keep: &[&[u8]]) {
        self.cache().retain(|sha, _| keep.contains(&sha.as_slice()));
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, ValidatorPre<Ctx>>> {
        // The map holds only finished compilations: valid after a panic elsewhere.
        self.inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
