//! One validator call: a fresh store and instance under the binding's limits (`ctx.rs` has
//! the state of the call and the shared imports), and the read set the call leaves behind.

use etch_proto::plugin::PluginLimits;

use super::ctx::{self, Ctx};
use super::error::PluginError;
use super::idle::Idle;
use super::runtime::{Cancel, Runtime, Slot};
use crate::mvcc::{BindingRecord, Read};

/// Bindings of `etch:plugin@0.1.0`'s validator world. Its `types` are the types of every
/// version (a version that changes them would need its own).
pub mod v1 {
    wasmtime::component::bindgen!({
        world: "validator",
        path: "../guest-sdk/wit-0.1.0",
        imports: { default: trappable },
    });
}

/// Bindings of `etch:plugin@0.2.0`'s `validator-core` world (`init` is looked up by name:
/// it is optional).
pub mod v2 {
    wasmtime::component::bindgen!({
        world: "validator-core",
        path: "../guest-sdk/wit",
        imports: { default: trappable },
        with: {
            "etch:plugin/types": super::v1::etch::plugin::types,
        },
    });
}

pub use v1::etch::plugin::types::{Op, OpKind, Request, Verdict};

/// A validator compiled against one version of the contract, its imports resolved.
#[derive(Clone)]
pub enum Pre {
    V1(v1::ValidatorPre<Ctx>),
    V2(v2::ValidatorCorePre<Ctx>),
}

/// A validator instance kept between calls of one binding ([`Idle`]).
pub struct Warm {
    /// The binding it was made for: only calls of this same binding may use it.
    record: BindingRecord,
    store: wasmtime::Store<Ctx>,
    world: World,
}

impl Warm {
    /// Whether this instance serves calls of `record`'s binding.
    pub(super) fn serves(&self, record: &BindingRecord) -> bool {
        self.record == *record
    }
}

/// An instance's exports, by contract version.
enum World {
    V1(v1::Validator),
    /// `init`: whether the component exports it (and so may serve many calls).
    V2 {
        world: v2::ValidatorCore,
        init: bool,
    },
}

impl World {
    /// Whether the instance may serve another call: the component exports `init`.
    fn reusable(&self) -> bool {
        match self {
            World::V1(_) => false,
            World::V2 { init, .. } => *init,
        }
    }
}

/// The most linear memory a kept instance may hold, in bytes: one past it is dropped after
/// its call, so a plugin that grows (or leaks) gets a fresh instance instead of holding
/// memory between calls or reaching its cap on a later call.
pub const MAX_KEPT_MEMORY: usize = 4 << 20;

/// Runs `pre`'s `validate` for binding `record` on `request` under `limits` (already clamped
/// to the node's maxima), holding `slot`, until done or `cancel`led. Returns the verdict and the reads the
/// plugin made.
///
/// The call runs in an instance of the same binding kept in `idle` if there is one, else in
/// a fresh one. A component that exports `init` (contract 0.2.0; the SDK's validators do)
/// is told its instance may serve many calls, so after a successful call its instance is
/// kept, unless it holds more than half its memory cap or [`MAX_KEPT_MEMORY`]; other
/// components get a fresh instance per call (0.1.0's, and hand-written ones such as
/// `c-no-empty`, whose bump allocator never frees). Fuel, deadline, budget, snapshot and
/// read set are every call's own; the instance's memory (where the plugin keeps what its
/// `init` derived) is what carries over.
#[allow(clippy::too_many_arguments)]
pub fn call(
    runtime: &Runtime,
    idle: &Idle<Warm>,
    pre: &Pre,
    record: &BindingRecord,
    ctx: Ctx,
    limits: &PluginLimits,
    cancel: &Cancel,
    slot: Slot,
    request: &Request,
) -> (Result<Verdict, PluginError>, Vec<Read>) {
    let kept = idle.take(|warm| warm.serves(record));
    let (mut store, world) = match kept {
        Some(mut warm) => match ctx::reuse(runtime, &mut warm.store, ctx, limits, cancel, slot) {
            Ok(()) => (warm.store, Ok(warm.world)),
            Err(e) => return (Err(PluginError::Host(format!("{e:#}"))), Vec::new()),
        },
        None => match ctx::store(runtime, ctx, limits, cancel, slot) {
            Ok(mut store) => {
                let mut world = instantiate(&mut store, pre);
                if let Err(e) = &world
                    && e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                        .is_some()
                    && idle.len() > 0
                {
                    // Kept instances fill the pool (a component may hold many core
                    // instances): free them and try once more.
                    idle.retain(|_| false);
                    world = instantiate(&mut store, pre);
                }
                (store, world)
            }
            Err(e) => return (Err(PluginError::Host(format!("{e:#}"))), Vec::new()),
        },
    };
    let result = world.and_then(|world| {
        let verdict = match &world {
            World::V1(world) => world.call_validate(&mut store, request),
            World::V2 { world, .. } => world.call_validate(&mut store, request),
        }?;
        Ok((verdict, world))
    });
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    crate::metrics::plugin_fuel(&store.data().plugin, fuel);
    match result {
        Ok((verdict, world)) => {
            let ctx = if world.reusable() {
                let ctx = ctx::park(&mut store);
                let memory = ctx::linear_bytes(&store);
                let cap = (limits.memory_mb as usize) << 20;
                if memory <= MAX_KEPT_MEMORY.min(cap / 2) {
                    idle.keep(Warm {
                        record: record.clone(),
                        store,
                        world,
                    });
                }
                ctx
            } else {
                store.into_data()
            };
            (Ok(ctx::bounded(verdict)), ctx.reads)
        }
        Err(e) => {
            let ctx = store.into_data();
            let failure = match cancel.reason() {
                Some(reason) => PluginError::Cancelled(reason),
                None => ctx::failure(&ctx, limits, &e),
            };
            (Err(failure), ctx.reads)
        }
    }
}

/// A fresh instance of `pre` in `store`, its `init` run.
fn instantiate(store: &mut wasmtime::Store<Ctx>, pre: &Pre) -> wasmtime::Result<World> {
    match pre {
        Pre::V1(pre) => pre.instantiate(&mut *store).map(World::V1),
        Pre::V2(pre) => {
            let instance = ctx::instantiate(store, pre.instance_pre())?;
            let init = (instance.get_export_index(&mut *store, None, "init")).is_some();
            let world = v2::ValidatorCore::new(&mut *store, &instance)?;
            Ok(World::V2 { world, init })
        }
    }
}
