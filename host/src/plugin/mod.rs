//! WebAssembly validator plugins: the node side.
//!
//! A *plugin* is a WebAssembly component (the `validator` world of
//! `guest-sdk/wit/etch.wit`) uploaded through the API and stored in Raft state by sha256; a
//! *binding* ties it to a key prefix, with config, limits, a failure policy and a mode (see
//! `etch_proto::plugin`). Both are replicated data (`mvcc::plugins`), never files on disk.
//!
//! The path of a write through here (`node/plugin.rs` calls it from `on_leader`):
//!
//! 1. [`Plugins::judge`] (`gate.rs`) picks the bindings whose prefix the write touches and,
//!    if any, previews the write at the leader's applied state and runs each validator on
//!    it. A refusal answers the client at once (`PluginRejected`); nothing is proposed.
//! 2. The write is proposed as `Command::Write` with a `Guard`: the bindings version and
//!    the read set the decision rested on. Apply refuses it with `Conflict` if either
//!    changed; the leader then judges it again (a bounded number of times).
//!
//! Each call runs in a fresh instance from a per-node engine (`runtime.rs`: pooling
//! allocator, fuel, epoch deadline from a dedicated thread, memory cap per store) with a
//! typed [`PluginError`] for every way it can fail (`validator.rs`); the node keeps
//! serving. Validation is never re-run on followers: the decision is fixed in the log, so
//! plugins may be stopped by wall-clock deadlines without breaking determinism.
//!
//! Not here yet: reactor plugins (the `reactor` world is defined but not run), an on-disk
//! cache of compiled components (each node compiles once per start, lazily or when it
//! notices a binding change).

mod error;
mod gate;
mod runtime;
mod validator;

pub use error::PluginError;
pub use gate::{Plugins, Stats, touches};
pub use runtime::{MAX_MEMORY_MB, Runtime};

#[cfg(test)]
mod limits_test;
