//! One validator call: a fresh store and instance under the binding's limits (`ctx.rs` has
//! the state of the call and the shared imports), and the read set the call leaves behind.

use etch_proto::plugin::PluginLimits;

use super::ctx::{self, Ctx};
use super::error::PluginError;
use super::runtime::{Cancel, Runtime};
use crate::mvcc::Read;

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

/// Runs `pre`'s `validate` on `request` in a fresh instance under `limits` (already clamped
/// to the node's maxima) until done or `cancel`led. Returns the verdict and the reads the
/// plugin made.
pub fn call(
    runtime: &Runtime,
    pre: &Pre,
    ctx: Ctx,
    limits: &PluginLimits,
    cancel: &Cancel,
    request: &Request,
) -> (Result<Verdict, PluginError>, Vec<Read>) {
    let mut store = match ctx::store(runtime, ctx, limits, cancel) {
        Ok(store) => store,
        Err(e) => return (Err(PluginError::Host(format!("{e:#}"))), Vec::new()),
    };
    let result = match pre {
        Pre::V1(pre) => pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_validate(&mut store, request)),
        Pre::V2(pre) => ctx::instantiate(&mut store, pre.instance_pre())
            .and_then(|instance| v2::ValidatorCore::new(&mut store, &instance))
            .and_then(|world| world.call_validate(&mut store, request)),
    };
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    crate::metrics::plugin_fuel(&store.data().plugin, fuel);
    let ctx = store.into_data();
    let result = (result.map(ctx::bounded)).map_err(|e| match cancel.reason() {
        Some(reason) => PluginError::Cancelled(reason),
        None => ctx::failure(&ctx, limits, &e),
    });
    (result, ctx.reads)
}
