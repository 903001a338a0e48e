//! etch-plugin: write etch plugins in Rust — validators and reactors.
//!
//! An etch plugin is a WebAssembly component bound to a key prefix with a hook. The
//! contract is `wit/etch.wit`; this crate hides the generated bindings behind plain Rust
//! types and two traits:
//!
//! - a **validator** (`--hook validate`, world `validator`) runs on the leader before a write
//!   touching its prefix is proposed. It sees the whole write — every key changed, each with
//!   its previous version — and who asks, and answers allow or deny with a reason the client
//!   sees. Implement [`Validator`] and export it with [`export_validator!`];
//! - a **reactor** (`--hook react`, world `reactor`) runs on the leader after changes under
//!   its prefix commit: it gets them in batches, in revision order, at least once, and may
//!   write keys in turn (never triggering itself). Implement [`Reactor`] and export it with
//!   [`export_reactor!`].
//!
//! Both get a [`Host`] for the binding's config, name and prefix, reads and logs (a
//! reactor's [`ReactorHost`] adds writes), and may override `init`, which receives the
//! binding's settings before an instance's first call (an `Err` fails the call: the place to
//! refuse settings the plugin cannot use). [`testing`] runs either natively against an
//! in-memory key space, so `cargo test` needs no WebAssembly and no cluster.
//!
//! The crate targets the newest contract, `etch:plugin@0.2.0` (`wit/etch.wit`); nodes
//! also serve components built against 0.1.0 (`wit-0.1.0/etch.wit`).
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
//! A reactor is the same shape:
//!
//! ```
//! use etch_plugin::{Event, Reactor, ReactorHost};
//!
//! /// Mirrors every change under the prefix to `mirror/` + the key.
//! pub struct Mirror;
//!
//! impl Reactor for Mirror {
//!     fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String> {
//!         for e in events {
//!             let to = [b"mirror/".as_slice(), &e.kv.key].concat();
//!             match e.kind {
//!                 etch_plugin::OpKind::Put => host.put(&to, &e.kv.value)?,
//!                 etch_plugin::OpKind::Delete => host.delete(&to)?,
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! etch_plugin::export_reactor!(Mirror);
//! # fn main() {}
//! ```
//!
//! Start a crate with `etch-plugin new NAME --validator` (or `--reactor`), build the
//! component with `etch-plugin build` (the `etch-plugin` tool is `guest-sdk/encode`:
//! `cargo install --path guest-sdk/encode`), and install it with the command it prints:
//! `etchctl plugin install max-size target/etch-plugin/max-size.wasm --prefix /cfg/ --hook
//! validate --config max=512` (`--hook react` for a reactor). A plain `cargo build` makes a
//! core module with rustc's 1 MiB stack, which the node refuses to install as it is: the
//! tool adds the small stack and the component wrapping. `docs/plugins.md` walks through
//! it.

// The reactor bindings name the validator bindings' shared interfaces by an absolute path
// that must resolve both here and inside `export_reactor!` in a plugin crate.
extern crate self as etch_plugin;

mod host;
mod reactor;
mod types;
mod validator;

#[doc(hidden)]
#[path = "guest.rs"]
pub mod __private;

pub mod testing;

pub use host::{Host, prefix_end};
pub use reactor::{Reactor, ReactorHost};
pub use types::{Event, KeyValue, Level, Op, OpKind, Request, Verdict};
pub use validator::Validator;
