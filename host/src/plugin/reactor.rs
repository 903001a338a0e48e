//! One reactor call: a batch of committed events into a fresh instance under the binding's
//! limits, and the writes it staged out.
//!
//! The `reactor` world shares `types`, `log`, `config` and `kv` with the validator world
//! (the bindings below reuse the validator's through `with`, so one [`Ctx`] serves both);
//! its own import is `kv-write`, which only *stages* writes: the node proposes them, with
//! the reactor's checkpoint, as one transaction after the call returns `ok`
//! (`crate::node::reactor`). Staging keeps Raft out of the call (so its deadline measures
//! the plugin, not the cluster) and makes a batch's writes commit all together or not at all.
//!
//! What is staged must fit one transaction as a client may send it (issue 12 saw 599,191
//! puts staged into one revision): at most `--max-txn-ops` less one writes (the checkpoint
//! takes the last op) and `--max-request-bytes` less [`TXN_RESERVE`] bytes. A write past
//! either is refused to the plugin *and* fails the call, whatever it returns, with
//! [`PluginError::TooManyWrites`]: committing the batch without it would lose a write the
//! plugin meant to make. Staged writes are also held against the call's memory cap.

use etch_proto::limits::check_key;
use etch_proto::plugin::PluginLimits;
use etch_proto::{DeleteRangeRequest, PutRequest, RequestOp};

use super::budget::RECORD_OVERHEAD;
use super::ctx::{self, Ctx, MAX_MESSAGE};
use super::error::PluginError;
use super::log_gate::truncate;
use super::runtime::{Cancel, Runtime};
use crate::mvcc::Read;

/// Bindings of `etch:plugin@0.1.0`'s reactor world.
pub mod v1 {
    wasmtime::component::bindgen!({
        world: "reactor",
        path: "../guest-sdk/wit-0.1.0",
        imports: { default: trappable },
        with: {
            "etch:plugin/types": crate::plugin::validator::v1::etch::plugin::types,
            "etch:plugin/log": crate::plugin::validator::v1::etch::plugin::log,
            "etch:plugin/config": crate::plugin::validator::v1::etch::plugin::config,
            "etch:plugin/kv": crate::plugin::validator::v1::etch::plugin::kv,
        },
    });
}

/// Bindings of `etch:plugin@0.2.0`'s `reactor-core` world (`init` is optional, looked up
/// by name).
pub mod v2 {
    wasmtime::component::bindgen!({
        world: "reactor-core",
        path: "../guest-sdk/wit",
        imports: { default: trappable },
        with: {
            "etch:plugin/types": crate::plugin::validator::v1::etch::plugin::types,
            "etch:plugin/log": crate::plugin::validator::v2::etch::plugin::log,
            "etch:plugin/config": crate::plugin::validator::v2::etch::plugin::config,
            "etch:plugin/kv": crate::plugin::validator::v2::etch::plugin::kv,
            "etch:plugin/binding": crate::plugin::validator::v2::etch::plugin::binding,
        },
    });
}

pub use v1::etch::plugin::types::Event;

/// A reactor compiled against one version of the contract, its imports resolved.
#[derive(Clone)]
pub enum Pre {
    V1(v1::ReactorPre<Ctx>),
    V2(v2::ReactorCorePre<Ctx>),
}

/// Keys under this prefix belong to etch itself (reactor checkpoints): clients and reactors
/// may not write them, and reactors are never told of changes to them.
pub use crate::mvcc::RESERVED_PREFIX;

/// Bytes of a staged transaction kept for what is not staged: the compare on the
/// checkpoint and the checkpoint's put (keys of at most ~300 bytes, a decimal revision).
pub const TXN_RESERVE: usize = 1024;
/// Bytes counted per staged write beside its key and value, as
/// `etch_proto::limits::request_bytes` counts an operation.
const PER_OP: usize = 16;

/// What a reactor call left behind.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The writes the call staged, in order.
    pub writes: Vec<RequestOp>,
    /// The reads it made (fingerprints, as a validator's).
    pub reads: Vec<Read>,
}

/// Runs `pre`'s `on-events` on `events` in a fresh instance under `limits` (clamped to the
/// node's maxima) until done or `cancel`led. `Ok` with the staged writes and reads if the
/// plugin returned `ok`; an `err` result is [`PluginError::Refused`].
pub fn call(
    runtime: &Runtime,
    pre: &Pre,
    ctx: Ctx,
    limits: &PluginLimits,
    cancel: &Cancel,
    events: &[Event],
) -> Result<Outcome, PluginError> {
    let mut store = ctx::store(runtime, ctx, limits, cancel, runtime.slot())
        .map_err(|e| PluginError::Host(format!("{e:#}")))?;
    let result = match pre {
        Pre::V1(pre) => pre
            .instantiate(&mut store)
            .and_then(|instance| instance.call_on_events(&mut store, events)),
        Pre::V2(pre) => ctx::instantiate(&mut store, pre.instance_pre())
            .and_then(|instance| v2::ReactorCore::new(&mut store, &instance))
            .and_then(|world| world.call_on_events(&mut store, events)),
    };
    let fuel = limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0));
    crate::metrics::plugin_fuel(&store.data().plugin, fuel);
    let ctx = store.into_data();
    if let Some(refused) = ctx.refused {
        return Err(refused);
    }
    match result {
        Ok(Ok(())) => Ok(Outcome {
            writes: ctx.staged,
            reads: ctx.reads,
        }),
        Ok(Err(message)) => Err(PluginError::Refused(truncate(message, MAX_MESSAGE))),
        Err(e) => Err(match cancel.reason() {
            Some(reason) => PluginError::Cancelled(reason),
            None => ctx::failure(&ctx, limits, &e),
        }),
    }
}

impl Ctx {
    /// Stages one write: refuses (to the plugin) an empty, reserved or over-long key;
    /// refuses and fails the call past one transaction's limits (see the module doc);
    /// traps past the memory cap.
    fn stage(
        &mut self,
        key: &[u8],
        value_len: usize,
        op: RequestOp,
    ) -> wasmtime::Result<Result<(), String>> {
        if key.is_empty() {
            return Ok(Err("a key may not be empty".into()));
        }
        if key.starts_with(RESERVED_PREFIX) {
            return Ok(Err("keys under \"\\0etch/\" are reserved for etch".into()));
        }
        if let Err(e) = check_key("key", key) {
            return Ok(Err(e.to_string()));
        }
        let max_ops = self.stage_limits.max_txn_ops.saturating_sub(1);
        if self.staged.len() >= max_ops {
            return Ok(self.refuse(format!(
                "a batch may stage at most {max_ops} writes (--max-txn-ops {}, less the checkpoint)",
                self.stage_limits.max_txn_ops
            )));
        }
        let op_bytes = PER_OP + key.len() + value_len;
        let max_bytes = self
            .stage_limits
            .max_request_bytes
            .saturating_sub(TXN_RESERVE);
        if self.staged_bytes + op_bytes > max_bytes {
            return Ok(self.refuse(format!(
                "a batch may stage at most {max_bytes} bytes of writes (--max-request-bytes {}, less {TXN_RESERVE})",
                self.stage_limits.max_request_bytes
            )));
        }
        self.budget
            .hold("staged writes", op_bytes + RECORD_OVERHEAD)?;
        self.staged_bytes += op_bytes;
        self.staged.push(op);
        Ok(Ok(()))
    }

    /// Refuses a write to the plugin and fails its call (the first refusal says why).
    fn refuse(&mut self, message: String) -> Result<(), String> {
        if self.refused.is_none() {
            self.refused = Some(PluginError::TooManyWrites(message.clone()));
        }
        Err(message)
    }
}

impl v1::etch::plugin::kv_write::Host for Ctx {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let (k, len) = (key.clone(), value.len());
        self.stage(
            &k,
            len,
            RequestOp::Put(PutRequest {
                key,
                value,
                ..Default::default()
            }),
        )
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let k = key.clone();
        self.stage(
            &k,
            0,
            RequestOp::DeleteRange(DeleteRangeRequest {
                key,
                range_end: Vec::new(),
                prev_kv: false,
            }),
        )
    }
}

impl v2::etch::plugin::kv_write::Host for Ctx {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        v1::etch::plugin::kv_write::Host::put(self, key, value)
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        v1::etch::plugin::kv_write::Host::delete(self, key)
    }
}
