//! etch-plugin: write etch validator plugins in Rust.
//!
//! An etch *validator* is a WebAssembly component that the leader runs before it proposes a
//! write touching the key prefix the plugin is bound to. It sees the whole write — every key
//! changed, each with its previous version — and who asks, and answers allow or deny with a
//! reason the client sees. The contract is `wit/etch.wit` (world `validator`); this crate
//! hides the generated bindings behind three things:
//!
//! - [`Validator`]: the trait to implement, over plain Rust types ([`Request`], [`Op`],
//!   [`Verdict`]) and a [`Host`] for the binding's config, reads and logs;
//! - [`export_validator!`]: makes your type the component's `validate` export;
//! - [`testing`]: a native harness that runs your validator as ordinary Rust against an
//!   in-memory key space, so `cargo test` needs no WebAssembly and no cluster.
//!
//! # Writing, building, installing
//!
//! A plugin is a `cdylib` crate depending on `etch-plugin`:
//!
//! ```
//! use etch_plugin::{Host, OpKind, Request, Validator, Verdict};
//!
//! pub struct MaxSize;
//!
//! impl Validator for MaxSize {
//!     fn validate(host: &dyn Host, request: &Request) -> Verdict {
//!         let max: usize = host.config("max").and_then(|m| m.parse().ok()).unwrap_or(1024);
//!         for op in request.ops_in_prefix().filter(|op| op.kind == OpKind::Put) {
//!             if op.value.len() > max {
//!                 return Verdict::deny("too-large", format!("{} is over {max} bytes", op.key_str()));
//!             }
//!         }
//!         Verdict::Allow
//!     }
//! }
//!
//! etch_plugin::export_validator!(MaxSize);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-unknown-unknown`, turn the module
//! into a component with `etch-plugin-encode` (`scripts/build-plugins` does both for the
//! crates under `plugins/`), and install it:
//! `etchctl plugin install max-size max_size.wasm --prefix /cfg/ --hook validate --config max=512`.
//! `docs/plugins.md` walks through it.

mod host;
mod types;
mod validator;

#[doc(hidden)]
#[path = "guest.rs"]
pub mod __private;

pub mod testing;

pub use host::{Host, prefix_end};
pub use types::{KeyValue, Level, Op, OpKind, Request, Verdict};
pub use validator::Validator;
