//! `guard`: three common rules for the keys under the binding's prefix, each switched on by
//! a config setting (an unset setting checks nothing):
//!
//! - `max-value-bytes=N`: a put's value may be at most N bytes (code `too-large`);
//! - `key-pattern=GLOB[,GLOB...]`: a put's key must match one of the patterns (code
//!   `bad-key`); see [`glob`] for the syntax;
//! - `create-only=GLOB[,GLOB...]`: keys matching a pattern may be created once and then
//!   never changed nor deleted (code `immutable`).
//!
//! ```text
//! etchctl plugin install guard guard.wasm --prefix /ids/ --hook validate \
//!   --config max-value-bytes=256 --config 'key-pattern=/ids/*' --config 'create-only=/ids/**'
//! ```
//!
//! A setting that does not parse refuses every write with code `config`.

pub mod glob;

use etch_plugin::{Host, Op, OpKind, Request, Validator, Verdict};

/// The validator.
pub struct Guard;

/// The settings, parsed.
struct Rules {
    max_value_bytes: Option<usize>,
    key_patterns: Vec<String>,
    create_only: Vec<String>,
}

impl Rules {
    fn load(host: &dyn Host) -> Result<Rules, String> {
        let max_value_bytes = match host.config("max-value-bytes") {
            None => None,
            Some(n) => Some(
                n.trim()
                    .parse()
                    .map_err(|_| format!("max-value-bytes={n:?} is not a number of bytes"))?,
            ),
        };
        let list = |name: &str| -> Vec<String> {
            host.config(name)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Rules {
            max_value_bytes,
            key_patterns: list("key-pattern"),
            create_only: list("create-only"),
        })
    }

    fn check(&self, op: &Op) -> Result<(), Verdict> {
        let key = op.key_str();
        if op.kind == OpKind::Put {
            if let Some(max) = self.max_value_bytes.filter(|&max| op.value.len() > max) {
                return Err(Verdict::deny(
                    "too-large",
                    format!(
                        "{key}: value of {} bytes is over the limit of {max}",
                        op.value.len()
                    ),
                ));
            }
            if !self.key_patterns.is_empty()
                && !self
                    .key_patterns
                    .iter()
                    .any(|p| glob::matches(p.as_bytes(), &op.key))
            {
                return Err(Verdict::deny(
                    "bad-key",
                    format!("{key} does not match {}", self.key_patterns.join(" or ")),
                ));
            }
        }
        let frozen = op.prev.is_some()
            && self
                .create_only
                .iter()
                .any(|p| glob::matches(p.as_bytes(), &op.key));
        if frozen {
            let what = match op.kind {
                OpKind::Put => "changed",
                OpKind::Delete => "deleted",
            };
            return Err(Verdict::deny(
                "immutable",
                format!("{key} is create-only and may not be {what}"),
            ));
        }
        Ok(())
    }
}

impl Validator for Guard {
    fn validate(host: &dyn Host, request: &Request) -> Verdict {
        let rules = match Rules::load(host) {
            Ok(rules) => rules,
            Err(e) => return Verdict::deny("config", e),
        };
        for op in request.ops_in_prefix() {
            if let Err(verdict) = rules.check(op) {
                return verdict;
            }
        }
        Verdict::Allow
    }
}

etch_plugin::export_validator!(Guard);

#[cfg(test)]
mod tests {
    use etch_plugin::testing::{Harness, Write};

    use super::*;

    fn code(v: &Verdict) -> &str {
        match v {
            Verdict::Allow => "allow",
            Verdict::Deny { code, .. } => code,
        }
    }

    #[test]
    fn no_settings_allow_everything() {
        let mut h = Harness::<Guard>::new("/g/");
        assert!(h.put("/g/a", vec![0; 10_000]).is_allow());
        assert!(h.delete("/g/a").is_allow());
    }

    #[test]
    fn values_over_the_limit_are_refused() {
        let mut h = Harness::<Guard>::new("/g/").config("max-value-bytes", "4");
        assert!(h.put("/g/a", "1234").is_allow());
        let v = h.put("/g/a", "12345");
        assert_eq!(
            v,
            Verdict::deny("too-large", "/g/a: value of 5 bytes is over the limit of 4")
        );
        // Outside the prefix the rule does not apply.
        assert!(h.put("/other", "123456789").is_allow());
    }

    #[test]
    fn keys_must_match_a_pattern() {
        let mut h =
            Harness::<Guard>::new("/svc/").config("key-pattern", "/svc/*/host, /svc/*/port");
        assert!(h.put("/svc/web/host", "a").is_allow());
        assert_eq!(code(&h.put("/svc/web/colour", "red")), "bad-key");
        assert_eq!(code(&h.put("/svc/a/b/host", "x")), "bad-key");
    }

    #[test]
    fn create_only_keys_never_change_nor_go() {
        let mut h = Harness::<Guard>::new("/ids/").config("create-only", "/ids/**");
        assert!(h.put("/ids/alice", "1").is_allow());
        assert_eq!(
            h.put("/ids/alice", "2"),
            Verdict::deny(
                "immutable",
                "/ids/alice is create-only and may not be changed"
            )
        );
        assert_eq!(code(&h.delete("/ids/alice")), "immutable");
        // A delete of the whole prefix is refused as a whole.
        assert!(h.put("/ids/bob", "1").is_allow());
        assert_eq!(code(&h.write([Write::delete_prefix("/ids/")])), "immutable");
        assert_eq!(h.get("/ids/alice").map(|kv| kv.value), Some(b"1".to_vec()));
    }

    #[test]
    fn a_bad_setting_fails_closed() {
        let mut h = Harness::<Guard>::new("/g/").config("max-value-bytes", "lots");
        assert_eq!(code(&h.put("/g/a", "1")), "config");
    }
}
