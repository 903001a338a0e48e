//! [`Validator`], the trait a plugin implements, and [`export_validator!`], which makes it
//! the plugin's `validate` export.

use crate::host::Host;
use crate::types::{Request, Verdict};

/// Decides whether a write may commit.
///
/// A validator is a type, not a value. A node runs its calls in instances it keeps between
/// calls of the same binding (a fresh one after a call fails or a binding changes), so what
/// [`init`](Self::init) derives from the configuration is parsed once, but nothing may be
/// carried from one call to the next: which instance serves a call is the node's choice.
/// Everything a call may know comes in the [`Request`] (the whole write, each key's previous
/// version, the principal) and through [`Host`] (the binding's config, read-only reads at
/// the request's revision, a log).
///
/// A validator must be a function of what it is given: the node records the reads it makes
/// and refuses the write with `Conflict` if they changed before it commits. It must also be
/// quick: each binding sets fuel, time and memory limits, and a validator that exceeds
/// them fails (the binding's failure policy then decides).
///
/// # Examples
///
/// ```
/// use etch_plugin::{Host, Request, Validator, Verdict};
///
/// /// Refuses empty values under the binding's prefix.
/// pub struct NoEmptyValues;
///
/// impl Validator for NoEmptyValues {
///     fn validate(_host: &dyn Host, request: &Request) -> Verdict {
///         match request.ops_in_prefix().find(|op| op.kind == etch_plugin::OpKind::Put && op.value.is_empty()) {
///             Some(op) => Verdict::deny("empty", format!("{} may not be empty", op.key_str())),
///             None => Verdict::Allow,
///         }
///     }
/// }
///
/// // In the plugin crate (built for wasm32-unknown-unknown):
/// // etch_plugin::export_validator!(NoEmptyValues);
/// ```
pub trait Validator {
    /// Decides on `request`.
    fn validate(host: &dyn Host, request: &Request) -> Verdict;

    /// Prepares an instance: called with the binding's configuration (`--config`) before
    /// the instance's first [`validate`](Self::validate). The default does nothing.
    ///
    /// An instance may serve one call or many: keep (in a `static`, e.g. a
    /// `std::sync::OnceLock`) only what you derive from `config` — a parsed schema, a
    /// compiled pattern — never anything from a call. `Err` fails the call as a trap would
    /// (the binding's `--on-error` policy decides) with the message as its cause: the
    /// place to refuse a configuration the plugin cannot use.
    ///
    /// # Errors
    ///
    /// A configuration the validator cannot work with.
    fn init(host: &dyn Host, config: &[(String, String)]) -> Result<(), String> {
        let _ = (host, config);
        Ok(())
    }
}

/// Makes a [`Validator`] the `validate` export of the plugin being built. Use it once, in
/// the plugin's `lib.rs` (a `cdylib` built for `wasm32-unknown-unknown`).
///
/// # Examples
///
/// ```
/// use etch_plugin::{Host, Request, Validator, Verdict};
///
/// pub struct AllowAll;
///
/// impl Validator for AllowAll {
///     fn validate(_: &dyn Host, _: &Request) -> Verdict {
///         Verdict::Allow
///     }
/// }
///
/// etch_plugin::export_validator!(AllowAll);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_validator {
    ($validator:ty) => {
        const _: () = {
            struct EtchValidatorExport;

            impl $crate::__private::Guest for EtchValidatorExport {
                fn validate(
                    request: $crate::__private::bindings::etch::plugin::types::Request,
                ) -> $crate::__private::bindings::etch::plugin::types::Verdict {
                    $crate::__private::validate::<$validator>(request)
                }

                fn init(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::validator_init::<$validator>(config)
                }
            }

            $crate::__private::export_validator_world!(
                EtchValidatorExport with_types_in $crate::__private::bindings
            );
        };
    };
}
