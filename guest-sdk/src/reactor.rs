//! [`Reactor`], the trait a reactor plugin implements, [`ReactorHost`], what it may ask of
//! the node (the [`Host`] services plus writes), and [`export_reactor!`], which makes it the
//! plugin's `on-events` export.

use crate::host::Host;
use crate::types::Event;

/// The node's services, as a reactor sees them: everything a validator has (config, reads,
/// log) and writes.
///
/// Writes are *staged*: when [`Reactor::on_events`] returns `Ok`, the node proposes all the
/// writes of the call together with the reactor's checkpoint, as one transaction through
/// the normal write path (validators judge it like any write). They commit together or
/// not at all, and reads during the call do not see them. The revision they commit at is
/// the reactor's own: it is never delivered back to it. A write fails at once for an empty
/// key, a key under the reserved prefix `"\0etch/"`, or past the per-call limit of staged
/// bytes (4 MiB).
pub trait ReactorHost: Host {
    /// Stages a put of `key`.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String>;
    /// Stages a delete of `key`.
    fn delete(&self, key: &[u8]) -> Result<(), String>;
}

/// Reacts to committed changes.
///
/// The node calls a reactor on the leader, after the fact, with the changes of keys under
/// its binding's prefix in revision order (every change of one revision in the same call),
/// in a fresh WebAssembly instance per call under the binding's fuel, time and memory
/// limits. Delivery is **at least once**: a call that fails (`Err`, a trap, a limit) or
/// whose writes do not commit is made again with the same events after a pause, and a
/// leader change may deliver the batch in flight again. Make the effect of a batch
/// idempotent — e.g. write keys derived from the events' revisions — and it happens
/// exactly once.
///
/// # Examples
///
/// ```
/// use etch_plugin::{Event, OpKind, Reactor, ReactorHost};
///
/// /// Keeps a count of live keys under the prefix in `count-key`.
/// pub struct Counter;
///
/// impl Reactor for Counter {
///     fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String> {
///         let key = host.config("count-key").ok_or("count-key is not set")?;
///         let mut count: i64 = host
///             .get(key.as_bytes())
///             .and_then(|kv| String::from_utf8(kv.value).ok()?.parse().ok())
///             .unwrap_or(0);
///         for e in events {
///             match (e.kind, &e.prev) {
///                 (OpKind::Put, None) => count += 1,
///                 (OpKind::Delete, Some(_)) => count -= 1,
///                 _ => {}
///             }
///         }
///         host.put(key.as_bytes(), count.to_string().as_bytes())
///     }
/// }
///
/// // In the plugin crate (built for wasm32-unknown-unknown):
/// // etch_plugin::export_reactor!(Counter);
/// ```
pub trait Reactor {
    /// Handles one batch of committed changes. `Err` commits nothing (the staged writes
    /// are dropped) and the batch is delivered again after a pause.
    ///
    /// # Errors
    ///
    /// Whatever the reactor decides is a failure; the node logs it and counts it.
    fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String>;

    /// Prepares an instance: called with the binding's configuration before the
    /// instance's first [`on_events`](Self::on_events), as
    /// [`Validator::init`](crate::Validator::init). The default does nothing. `Err` fails
    /// the call; the batch is delivered again after a pause.
    ///
    /// # Errors
    ///
    /// A configuration the reactor cannot work with.
    fn init(host: &dyn Host, config: &[(String, String)]) -> Result<(), String> {
        let _ = (host, config);
        Ok(())
    }
}

/// Makes a [`Reactor`] the `on-events` export of the plugin being built. Use it once, in
/// the plugin's `lib.rs` (a `cdylib` built for `wasm32-unknown-unknown`), and install the
/// component with `--hook react`.
///
/// # Examples
///
/// ```
/// use etch_plugin::{Event, Level, Reactor, ReactorHost};
///
/// pub struct LogChanges;
///
/// impl Reactor for LogChanges {
///     fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String> {
///         for e in events {
///             host.log(Level::Info, &format!("{:?} {} at {}", e.kind, e.key_str(), e.revision()));
///         }
///         Ok(())
///     }
/// }
///
/// etch_plugin::export_reactor!(LogChanges);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_reactor {
    ($reactor:ty) => {
        const _: () = {
            struct EtchReactorExport;

            impl $crate::__private::reactor_bindings::Guest for EtchReactorExport {
                fn on_events(
                    events: ::std::vec::Vec<
                        $crate::__private::bindings::etch::plugin::types::Event,
                    >,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::on_events::<$reactor>(events)
                }

                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::reactor_init::<$reactor>(config)
                }
            }

            $crate::__private::reactor_bindings::export_reactor_world!(
                EtchReactorExport with_types_in $crate::__private::reactor_bindings
            );
        };
    };
}
