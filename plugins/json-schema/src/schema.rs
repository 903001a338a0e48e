//! The schema subset: `type`, `required`, `properties` (nested), `items` and
//! `additionalProperties: false`. Enough to say "an object with a string `host` and an
//! integer `port`" without pulling a full JSON Schema engine into a 100 KB component.

use serde_json::{Map, Value};

/// A parsed schema.
#[derive(Debug, Default, PartialEq)]
pub struct Schema {
    /// Allowed JSON types (`"integer"` also accepts numbers without a fraction); empty = any.
    types: Vec<String>,
    required: Vec<String>,
    properties: Vec<(String, Schema)>,
    items: Option<Box<Schema>>,
    additional: bool,
}

const TYPES: [&str; 7] = [
    "object", "array", "string", "integer", "number", "boolean", "null",
];

impl Schema {
    /// Parses a schema document.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong: not JSON, an unknown type, a malformed keyword.
    pub fn parse(text: &str) -> Result<Schema, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        Schema::from_value(&value, "$")
    }

    fn from_value(value: &Value, at: &str) -> Result<Schema, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| format!("{at}: a schema is an object"))?;
        let mut schema = Schema {
            additional: true,
            ..Schema::default()
        };
        match obj.get("type") {
            None => {}
            Some(Value::String(t)) => schema.types.push(t.clone()),
            Some(Value::Array(ts)) => {
                for t in ts {
                    let t = t
                        .as_str()
                        .ok_or_else(|| format!("{at}.type: not a string"))?;
                    schema.types.push(t.to_owned());
                }
            }
            Some(_) => return Err(format!("{at}.type: a string or a list of strings")),
        }
        if let Some(bad) = schema.types.iter().find(|t| !TYPES.contains(&t.as_str())) {
            return Err(format!("{at}.type: unknown type {bad:?}"));
        }
        if let Some(req) = obj.get("required") {
            let list = req
                .as_array()
                .ok_or_else(|| format!("{at}.required: a list of names"))?;
            for name in list {
                let name = name
                    .as_str()
                    .ok_or_else(|| format!("{at}.required: a list of names"))?;
                schema.required.push(name.to_owned());
            }
        }
        if let Some(props) = obj.get("properties") {
            let props = props
                .as_object()
                .ok_or_else(|| format!("{at}.properties: an object"))?;
            for (name, sub) in props {
                let sub = Schema::from_value(sub, &format!("{at}.{name}"))?;
                schema.properties.push((name.clone(), sub));
            }
        }
        if let Some(items) = obj.get("items") {
            schema.items = Some(Box::new(Schema::from_value(items, &format!("{at}[]"))?));
        }
        match obj.get("additionalProperties") {
            None | Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => schema.additional = false,
            Some(_) => return Err(format!("{at}.additionalProperties: true or false")),
        }
        Ok(schema)
    }

    /// Checks `value`; the error says where it fails, as a JSON path.
    ///
    /// # Errors
    ///
    /// The first place where `value` does not match.
    pub fn check(&self, value: &Value, at: &str) -> Result<(), String> {
        if !self.types.is_empty() && !self.types.iter().any(|t| has_type(value, t)) {
            return Err(format!(
                "{at} is {}, expected {}",
                type_of(value),
                self.types.join(" or ")
            ));
        }
        if let Value::Object(obj) = value {
            self.check_object(obj, at)?;
        }
        if let (Value::Array(list), Some(items)) = (value, &self.items) {
            for (i, item) in list.iter().enumerate() {
                items.check(item, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    fn check_object(&self, obj: &Map<String, Value>, at: &str) -> Result<(), String> {
        if let Some(missing) = self.required.iter().find(|r| !obj.contains_key(*r)) {
            return Err(format!("{at}.{missing} is required"));
        }
        for (name, sub) in &self.properties {
            if let Some(v) = obj.get(name) {
                sub.check(v, &format!("{at}.{name}"))?;
            }
        }
        if !self.additional
            && let Some(extra) = obj
                .keys()
                .find(|k| !self.properties.iter().any(|(n, _)| n == *k))
        {
            return Err(format!("{at}.{extra} is not allowed"));
        }
        Ok(())
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(schema: &str, value: &str) -> Result<(), String> {
        let schema = Schema::parse(schema).expect("schema");
        schema.check(&serde_json::from_str(value).expect("json"), "$")
    }

    #[test]
    fn types_required_and_properties() {
        let s = r#"{"type":"object","required":["host"],"properties":{"host":{"type":"string"},"port":{"type":"integer"}}}"#;
        assert_eq!(check(s, r#"{"host":"a","port":80}"#), Ok(()));
        assert_eq!(check(s, r#"{"port":80}"#), Err("$.host is required".into()));
        assert_eq!(
            check(s, r#"{"host":"a","port":"80"}"#),
            Err("$.port is a string, expected integer".into())
        );
        assert_eq!(check(s, "[]"), Err("$ is an array, expected object".into()));
    }

    #[test]
    fn items_and_closed_objects() {
        let s = r#"{"type":"array","items":{"type":"object","additionalProperties":false,"properties":{"a":{}}}}"#;
        assert_eq!(check(s, r#"[{"a":1},{}]"#), Ok(()));
        assert_eq!(
            check(s, r#"[{"a":1},{"b":2}]"#),
            Err("$[1].b is not allowed".into())
        );
    }

    #[test]
    fn bad_schemas_are_refused() {
        assert!(Schema::parse("{").is_err());
        assert!(Schema::parse(r#"{"type":"text"}"#).is_err());
        assert!(Schema::parse(r#"{"required":"a"}"#).is_err());
    }
}
