//! WebAssembly plugins: the node side.
//!
//! A *plugin* is a WebAssembly component (a world of `guest-sdk/wit/etch.wit`, or of an
//! older version of it still served, `guest-sdk/wit-0.1.0/`) uploaded
//! through the API and stored in Raft state by sha256; a *binding* ties it to a key prefix
//! and a hook, with config, limits, a failure policy and a mode (see `etch_proto::plugin`).
//! Both are replicated data (`mvcc::plugins`), never files on disk. There are two hooks:
//!
//! **Validators** (`validate`, world `validator`) judge writes before they are proposed
//! (`node/plugin.rs` calls them from `on_leader`):
//!
//! 1. [`Plugins::judge`] (`gate.rs`) picks the bindings whose prefix the write touches and,
//!    if any, previews the write at the leader's applied state and runs each validator on
//!    it. A refusal answers the client at once (`PluginRejected`); nothing is proposed.
//! 2. The write is proposed as `Command::Write` with a `Guard`: the bindings version and
//!    the read set the decision rested on. Apply refuses it with `Conflict` if either
//!    changed; the leader then judges it again (a bounded number of times).
//!
//! **Reactors** (`react`, world `reactor`) receive committed changes after the fact, on the
//! leader only: [`Plugins::react`] (`react.rs`) reads the history after a reactor's cursor
//! and calls it with one batch; `node/reactor.rs` drives every reactor while the node
//! leads, proposing each batch's staged writes together with the reactor's checkpoint
//! ([`checkpoint_key`]) as one conditional transaction.
//!
//! Each call runs in an instance from a per-node engine (a reactor's always fresh; a
//! validator's kept between calls of its binding when the component exports `init`:
//! `validator.rs`, `idle.rs`) (`runtime.rs`: pooling
//! allocator, fuel, epoch deadline from a dedicated thread, memory cap per store;
//! `ctx.rs`: the call's state and shared imports; `budget.rs`: one memory cap for the
//! guest's memory and what the host holds for it; `log_gate.rs`: plugin log lines cut and
//! rate-limited) with a typed [`PluginError`] for every way it can fail; the node keeps
//! serving. Calls run on the plugin threads (`executor.rs`), never on the pool that storage
//! reads use, under limits clamped to the node's [`Maxima`] (`maxima.rs`), and are
//! interrupted when their binding goes or the node stops. Plugins never run on followers or
//! in apply:
//! decisions are fixed in the log, so wall-clock deadlines do not break determinism.
//! Components are compiled ahead of use, cached by sha256 and hook (`runtime.rs`).

mod budget;
mod ctx;
mod error;
mod executor;
mod gate;
mod idle;
mod log_gate;
mod maxima;
mod quick;
mod react;
mod reactor;
mod runtime;
mod validator;

pub use ctx::{MAX_CODE, MAX_MESSAGE};
pub use error::PluginError;
pub use executor::Refused;
pub use gate::{Plugins, Stats, touches};
pub use log_gate::{LOG_BURST, LOG_LINES_PER_SECOND, MAX_LOG_LINE, truncate};
pub use maxima::Maxima;
pub use react::{Checkpoint, MAX_EVENTS, Step, checkpoint_key, read_checkpoint};
pub use reactor::{Outcome, RESERVED_PREFIX};
pub use runtime::{MAX_MEMORY_MB, Runtime};

#[cfg(test)]
mod containment_test;
#[cfg(test)]
mod contract_test;
#[cfg(test)]
mod hostmem_test;
#[cfg(test)]
mod limits_test;
#[cfg(test)]
mod quick_test;
#[cfg(test)]
mod reactor_test;
#[cfg(test)]
mod reuse_test;
