//! One validator call: a fresh store and instance under the binding's limits (`ctx.rs` has
//! the state of the call and the shared imports), and the read set the call leaves behind.

use etch_proto::plugin::PluginLimits;
use wasmtime::component::bindgen;

use super::ctx::{self, Ctx};
use super::error::PluginError;
use super::runtime::{self, Cancel, Runtime};
use crate::mvcc::Read;

bindgen!({
    world: "validator",
    path: "../guest-sdk/wit",
    imports: { default: trappable },
});

pub use etch::plugin::types::{Op, OpKind};

/// Runs `pre`'s `validate` on `request` in a fresh instance under `limits` (already clamped
/// to the node's maxima) until done or `cancel`led. Returns the verdict and the reads the
/// plugin made.
pub fn call(
    runtime: &Runtime,
    pre: &ValidatorPre<Ctx>,
    ctx: Ctx,
    limits: &PluginLimits,
    cancel: &Cancel,
    request: &Request,
) -> (Result<Verdict, PluginError>, Vec<Read>) {
    let mut store = match ctx::store(runtime, ctx, limits) {
        Ok(store) => store,
        Err(e) => return (Err(PluginError::Host(format!("{e:#}"))), Vec::new()),
    };
    runtime::arm(&mut store, limits.timeout_ms, cancel.clone());
    let result = pre
        .instantiate(&mut store)
        .and_then(|instance| instance.call_validate(&mut store, request));
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    crate::metrics::plugin_fuel(&store.data().plugin, fuel);
    let ctx = store.into_data();
    let result = (result.map(ctx::bounded)).map_err(|e| match cancel.reason() {
        Some(reason) => PluginError::Cancelled(reason),
        None => ctx::failure(&ctx, limits, &e),
    });
    (result, ctx.reads)
}
