//! `json-schema`: values written under the binding's prefix must be JSON documents that
//! match a schema given in the binding's config.
//!
//! ```text
//! etchctl plugin install json-schema json_schema.wasm --prefix /services/ --hook validate \
//!   --config 'schema={"type":"object","required":["host"],"properties":{"host":{"type":"string"},"port":{"type":"integer"}}}'
//! ```
//!
//! Puts under the prefix are parsed and checked; deletes are always allowed; keys outside
//! the prefix (in a txn that also touches it) are left alone. A missing or malformed
//! schema refuses every put with code `config`, so a typo never lets bad data in. The
//! schema subset is in [`schema`].
//!
//! The schema is parsed once per instance, in `init`: a node reuses an instance for many
//! calls, and parsing it on every call cost more than checking the value.

pub mod schema;

use std::cell::RefCell;
use std::rc::Rc;

use etch_plugin::{Host, Level, OpKind, Request, Validator, Verdict};

use crate::schema::Schema;

/// The validator.
pub struct JsonSchema;

/// The binding's schema as `init` parsed it, or why it is unusable. Thread-local rather than
/// a `OnceLock`: the native test harness runs `init` before every write and tests run on
/// their own threads; in the plugin there is one thread and `init` runs once.
type Parsed = Result<Rc<Schema>, String>;

thread_local! {
    static SCHEMA: RefCell<Option<Parsed>> = const { RefCell::new(None) };
}

/// The schema a setting gives, or the reason every put is refused.
fn parse(setting: Option<&str>) -> Parsed {
    match setting.map(Schema::parse) {
        Some(Ok(schema)) => Ok(Rc::new(schema)),
        Some(Err(e)) => Err(format!("the binding's schema is invalid: {e}")),
        None => Err("the binding has no `schema` setting".into()),
    }
}

impl Validator for JsonSchema {
    fn init(_host: &dyn Host, config: &[(String, String)]) -> Result<(), String> {
        let setting = config.iter().find(|(k, _)| k == "schema");
        let parsed = parse(setting.map(|(_, v)| v.as_str()));
        SCHEMA.with(|schema| *schema.borrow_mut() = Some(parsed));
        // A bad schema is not an `init` failure: deletes still pass, and puts are refused
        // with code `config`, which tells the client more than a failed call.
        Ok(())
    }

    fn validate(host: &dyn Host, request: &Request) -> Verdict {
        let mut puts = request
            .ops_in_prefix()
            .filter(|op| op.kind == OpKind::Put)
            .peekable();
        if puts.peek().is_none() {
            return Verdict::Allow;
        }
        let parsed = SCHEMA.with(|schema| schema.borrow().clone());
        let parsed = parsed.unwrap_or_else(|| parse(host.config("schema").as_deref()));
        let schema = match parsed {
            Ok(schema) => schema,
            Err(e) => return Verdict::deny("config", e),
        };
        for op in puts {
            let value: serde_json::Value = match serde_json::from_slice(&op.value) {
                Ok(v) => v,
                Err(e) => {
                    return Verdict::deny("not-json", format!("{} is not JSON: {e}", op.key_str()));
                }
            };
            if let Err(e) = schema.check(&value, "$") {
                host.log(Level::Debug, &format!("refused {}: {e}", op.key_str()));
                return Verdict::deny("schema", format!("{}: {e}", op.key_str()));
            }
        }
        Verdict::Allow
    }
}

etch_plugin::export_validator!(JsonSchema);

#[cfg(test)]
mod tests {
    use etch_plugin::testing::{Harness, Write};

    use super::*;

    const SCHEMA: &str = r#"{"type":"object","required":["host"],"properties":{"host":{"type":"string"},"port":{"type":"integer"}}}"#;

    fn harness() -> Harness<JsonSchema> {
        Harness::new("/svc/").config("schema", SCHEMA)
    }

    #[test]
    fn a_matching_document_passes() {
        let mut h = harness();
        assert_eq!(
            h.put("/svc/a", r#"{"host":"10.0.0.1","port":80}"#),
            Verdict::Allow
        );
        assert!(h.get("/svc/a").is_some());
    }

    #[test]
    fn a_document_missing_a_field_is_refused_with_the_path() {
        let mut h = harness();
        assert_eq!(
            h.put("/svc/a", r#"{"port":80}"#),
            Verdict::deny("schema", "/svc/a: $.host is required")
        );
        assert!(h.get("/svc/a").is_none());
        assert_eq!(h.logs().len(), 1);
    }

    #[test]
    fn non_json_is_refused() {
        let v = harness().put("/svc/a", "hello");
        assert!(
            matches!(v, Verdict::Deny { ref code, .. } if code == "not-json"),
            "{v:?}"
        );
    }

    #[test]
    fn keys_outside_the_prefix_and_deletes_pass() {
        let mut h = harness();
        assert!(h.put("/other", "not json").is_allow());
        h.seed("/svc/a", "legacy");
        assert!(h.delete("/svc/a").is_allow());
    }

    #[test]
    fn a_txn_is_judged_as_a_whole() {
        let mut h = harness();
        let v = h.write([
            Write::put("/svc/a", r#"{"host":"a"}"#),
            Write::put("/svc/b", r#"{"host":1}"#),
        ]);
        assert_eq!(
            v,
            Verdict::deny("schema", "/svc/b: $.host is an integer, expected string")
        );
        assert!(h.get("/svc/a").is_none());
    }

    #[test]
    fn a_missing_schema_fails_closed() {
        let mut h = Harness::<JsonSchema>::new("/svc/");
        let v = h.put("/svc/a", "{}");
        assert!(
            matches!(v, Verdict::Deny { ref code, .. } if code == "config"),
            "{v:?}"
        );
    }
}
