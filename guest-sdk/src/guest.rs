//! The WebAssembly side: bindings generated from `wit/etch.wit` (`etch:plugin@0.2.0`) and the glue that
//! [`export_validator!`](crate::export_validator) and
//! [`export_reactor!`](crate::export_reactor) expand to.
//!
//! Nothing here is meant to be named by plugin authors; it is public only because the macro
//! expands inside their crate. Natively (tests, docs) the imports exist but must not be
//! called: the native harness implements [`Host`] itself.

use crate::host::Host;
use crate::reactor::{Reactor, ReactorHost};
use crate::types::{Event, KeyValue, Level, Op, OpKind, Request, Verdict};
use crate::validator::Validator;

/// Bindings of the `validator` world.
pub mod bindings {
    wit_bindgen::generate!({
        world: "validator",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_validator_world",
        default_bindings_module: "etch_plugin::__private::bindings",
    });
}

/// Bindings of the `reactor` world; the interfaces it shares with the validator world are
/// the validator bindings' (one set of types, one [`Host`] implementation). Only the
/// imports a plugin calls end up in its component.
pub mod reactor_bindings {
    wit_bindgen::generate!({
        world: "reactor",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_reactor_world",
        default_bindings_module: "etch_plugin::__private::reactor_bindings",
        with: {
            "etch:plugin/types@0.2.0": etch_plugin::__private::bindings::etch::plugin::types,
            "etch:plugin/log@0.2.0": etch_plugin::__private::bindings::etch::plugin::log,
            "etch:plugin/config@0.2.0": etch_plugin::__private::bindings::etch::plugin::config,
            "etch:plugin/kv@0.2.0": etch_plugin::__private::bindings::etch::plugin::kv,
            "etch:plugin/binding@0.2.0": etch_plugin::__private::bindings::etch::plugin::binding,
        },
    });
}

use bindings::etch::plugin::{binding, config, kv, log, types as wit};
use reactor_bindings::etch::plugin::kv_write;

pub use bindings::Guest;
pub use bindings::export_validator_world;

/// [`Host`] over the world's imports.
pub struct WasmHost;

impl Host for WasmHost {
    fn config(&self, name: &str) -> Option<String> {
        config::get(name)
    }

    fn config_entries(&self) -> Vec<(String, String)> {
        config::entries()
    }

    fn get(&self, key: &[u8]) -> Option<KeyValue> {
        kv::get(key).map(from_wit_kv)
    }

    fn range(&self, key: &[u8], range_end: &[u8], limit: u32) -> Vec<KeyValue> {
        kv::range(key, range_end, limit)
            .into_iter()
            .map(from_wit_kv)
            .collect()
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => log::Level::Debug,
            Level::Info => log::Level::Info,
            Level::Warn => log::Level::Warn,
            Level::Error => log::Level::Error,
        };
        log::log(level, message);
    }

    fn binding_name(&self) -> String {
        binding::name()
    }

    fn binding_prefix(&self) -> Vec<u8> {
        binding::prefix()
    }
}

impl ReactorHost for WasmHost {
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        kv_write::put(key, value)
    }

    fn delete(&self, key: &[u8]) -> Result<(), String> {
        kv_write::delete(key)
    }
}

/// Runs `V`'s [`Validator::init`] as the world hands the configuration over.
pub fn validator_init<V: Validator>(config: Vec<(String, String)>) -> Result<(), String> {
    V::init(&WasmHost, &config)
}

/// Runs `R`'s [`Reactor::init`] as the world hands the configuration over.
pub fn reactor_init<R: Reactor>(config: Vec<(String, String)>) -> Result<(), String> {
    R::init(&WasmHost, &config)
}

/// Runs `R` on a batch as the world hands it over.
pub fn on_events<R: Reactor>(events: Vec<wit::Event>) -> Result<(), String> {
    let events: Vec<Event> = events
        .into_iter()
        .map(|e| Event {
            kind: from_wit_kind(e.kind),
            kv: from_wit_kv(e.kv),
            prev: e.prev.map(from_wit_kv),
            principal: e.principal,
        })
        .collect();
    R::on_events(&WasmHost, &events)
}

fn from_wit_kind(kind: wit::OpKind) -> OpKind {
    match kind {
        wit::OpKind::Put => OpKind::Put,
        wit::OpKind::Delete => OpKind::Delete,
    }
}

/// Runs `V` on a request as the world hands it over.
pub fn validate<V: Validator>(request: wit::Request) -> wit::Verdict {
    let request = Request {
        principal: request.principal,
        prefix: request.prefix,
        revision: request.revision,
        ops: request
            .ops
            .into_iter()
            .map(|op| Op {
                kind: from_wit_kind(op.kind),
                key: op.key,
                value: op.value,
                prev: op.prev.map(from_wit_kv),
            })
            .collect(),
    };
    match V::validate(&WasmHost, &request) {
        Verdict::Allow => wit::Verdict::Allow,
        Verdict::Deny { code, reason } => wit::Verdict::Deny(wit::Denial { code, reason }),
    }
}

fn from_wit_kv(kv: wit::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}
