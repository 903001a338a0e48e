//! One reactor call: a batch of committed events into a fresh instance under the binding's
//! limits, and the writes it staged out.
//!
//! The `reactor` world shares `types`, `log`, `config` and `kv` with the validator world
//! (the bindings below reuse the validator's through `with`, so one [`Ctx`] serves both);
//! its own import is `kv-write`, which only *stages* writes: the node proposes them, with
//! the reactor's checkpoint, as one transaction after the call returns `ok`
//! (`crate::node::reactor`). Staging keeps Raft out of the call (so its deadline measures
//! the plugin, not the cluster) and makes a batch's writes commit all together or not at all.

use etch_proto::plugin::PluginLimits;
use etch_proto::{DeleteRangeRequest, PutRequest, RequestOp};
use wasmtime::component::bindgen;

use super::ctx::{self, Ctx};
use super::error::PluginError;
use super::runtime::Runtime;
use crate::mvcc::Read;

bindgen!({
    world: "reactor",
    path: "../guest-sdk/wit",
    imports: { default: trappable },
    with: {
        "etch:plugin/types": super::validator::etch::plugin::types,
        "etch:plugin/log": super::validator::etch::plugin::log,
        "etch:plugin/config": super::validator::etch::plugin::config,
        "etch:plugin/kv": super::validator::etch::plugin::kv,
    },
});

/// Keys under this prefix belong to etch itself (reactor checkpoints): clients and reactors
/// may not write them, and reactors are never told of changes to them.
pub const RESERVED_PREFIX: &[u8] = b"\0etch/";

/// Most bytes of keys and values one call may stage.
pub const MAX_STAGED_BYTES: usize = 4 << 20;

/// What a reactor call left behind.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The writes the call staged, in order.
    pub writes: Vec<RequestOp>,
    /// The reads it made (fingerprints, as a validator's).
    pub reads: Vec<Read>,
}

/// Runs `pre`'s `on-events` on `events` in a fresh instance. `Ok` with the staged writes
/// and reads if the plugin returned `ok`; an `err` result is [`PluginError::Refused`].
pub fn call(
    runtime: &Runtime,
    pre: &ReactorPre<Ctx>,
    ctx: Ctx,
    limits: &PluginLimits,
    events: &[Event],
) -> Result<Outcome, PluginError> {
    let mut store =
        ctx::store(runtime, ctx, limits).map_err(|e| PluginError::Host(format!("{e:#}")))?;
    let result = pre
        .instantiate(&mut store)
        .and_then(|instance| instance.call_on_events(&mut store, events));
    let ctx = store.into_data();
    match result {
        Ok(Ok(())) => Ok(Outcome {
            writes: ctx.staged,
            reads: ctx.reads,
        }),
        Ok(Err(message)) => Err(PluginError::Refused(message)),
        Err(e) => Err(ctx::failure(&ctx, limits, &e)),
    }
}

impl Ctx {
    /// Stages one write, refusing reserved keys and writes past the byte limit.
    fn stage(&mut self, key: &[u8], value_len: usize, op: RequestOp) -> Result<(), String> {
        if key.is_empty() {
            return Err("a key may not be empty".into());
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Err("keys under \"\\0etch/\" are reserved for etch".into());
        }
        let bytes = self.staged_bytes + key.len() + value_len;
        if bytes > MAX_STAGED_BYTES {
            return Err(format!(
                "a batch may stage at most {MAX_STAGED_BYTES} bytes of writes"
            ));
        }
        self.staged_bytes = bytes;
        self.staged.push(op);
        Ok(())
    }
}

impl etch::plugin::kv_write::Host for Ctx {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let (k, len) = (key.clone(), value.len());
        Ok(self.stage(
            &k,
            len,
            RequestOp::Put(PutRequest {
                key,
                value,
                ..Default::default()
            }),
        ))
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let k = key.clone();
        Ok(self.stage(
            &k,
            0,
            RequestOp::DeleteRange(DeleteRangeRequest {
                key,
                range_end: Vec::new(),
                prev_kv: false,
            }),
        ))
    }
}
