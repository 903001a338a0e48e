//! `audit-log`: a reactor that writes one audit record per committed change under the
//! binding's prefix.
//!
//! Setting `audit-prefix=P` says where the records go; by default under `/audit` followed
//! by the binding's own prefix (`/audit/app/` for a binding on `/app/`; contract 0.2.0
//! tells a reactor its prefix). The record of the `i`-th change (counting from 0) of
//! revision `R` is the key
//!
//! ```text
//! P + R as 20 decimal digits + "/" + i as 6 decimal digits
//! ```
//!
//! so that the records sort in commit order, and its value is a JSON object:
//!
//! ```json
//! {"revision":42,"type":"put","key":"/app/a","value":"v1","version":2,"user":"alice"}
//! {"revision":43,"type":"delete","key":"/app/a","user":"bob"}
//! ```
//!
//! `user` is who made the change (the client certificate's common name, `reactor:NAME` for a
//! reactor's write), left out for etch's own changes (a lease expiring).
//!
//! (keys and values that are not UTF-8 are written lossily). A record's key depends only on
//! the change it describes, so a batch delivered twice (etch delivers at least once) writes
//! the same records again instead of new ones: every change has exactly one record. The
//! records may live under the binding's own prefix: etch never hands a reactor the changes
//! it wrote itself, so the log does not record its own records.
//!
//! ```text
//! etchctl plugin install audit audit-log.wasm --prefix /app/ --hook react \
//!   --config audit-prefix=/audit/app/
//! ```
//!
//! An empty `audit-prefix=` is refused by `init`: every call fails with "init failed:
//! audit-prefix may not be empty" (`etchctl plugin list` shows it) and the batch waits,
//! retried after a pause, until the binding is installed again with a usable setting.

use etch_plugin::{Event, Host, OpKind, Reactor, ReactorHost};

/// The reactor.
pub struct AuditLog;

/// Where the records of the binding `host` runs go.
fn audit_prefix(host: &dyn Host) -> String {
    host.config("audit-prefix").unwrap_or_else(|| {
        let own = host.binding_prefix();
        let own = String::from_utf8_lossy(&own);
        format!("/audit{}{own}", if own.starts_with('/') { "" } else { "/" })
    })
}

impl Reactor for AuditLog {
    fn init(_: &dyn Host, config: &[(String, String)]) -> Result<(), String> {
        match config.iter().find(|(name, _)| name == "audit-prefix") {
            Some((_, p)) if p.is_empty() => Err("audit-prefix may not be empty".into()),
            _ => Ok(()),
        }
    }

    fn on_events(host: &dyn ReactorHost, events: &[Event]) -> Result<(), String> {
        let prefix = audit_prefix(host);
        let mut index = 0;
        let mut revision = None;
        for event in events {
            if revision != Some(event.revision()) {
                revision = Some(event.revision());
                index = 0;
            }
            host.put(
                record_key(&prefix, event.revision(), index).as_bytes(),
                record(event).as_bytes(),
            )?;
            index += 1;
        }
        Ok(())
    }
}

/// The key of the `index`-th change of `revision`.
pub fn record_key(prefix: &str, revision: i64, index: usize) -> String {
    format!("{prefix}{revision:020}/{index:06}")
}

/// The record of one change, as JSON.
pub fn record(event: &Event) -> String {
    let mut record = serde_json::Map::new();
    record.insert("revision".into(), event.revision().into());
    let kind = match event.kind {
        OpKind::Put => "put",
        OpKind::Delete => "delete",
    };
    record.insert("type".into(), kind.into());
    record.insert("key".into(), event.key_str().into());
    if event.kind == OpKind::Put {
        record.insert(
            "value".into(),
            String::from_utf8_lossy(&event.kv.value).into(),
        );
        record.insert("version".into(), event.kv.version.into());
    }
    if !event.principal.is_empty() {
        record.insert("user".into(), event.principal.as_str().into());
    }
    serde_json::Value::Object(record).to_string()
}

etch_plugin::export_reactor!(AuditLog);

#[cfg(test)]
mod tests {
    use etch_plugin::testing::{ReactorHarness, Write};

    use super::*;

    fn harness() -> ReactorHarness<AuditLog> {
        ReactorHarness::new("/app/").config("audit-prefix", "/audit/")
    }

    fn records(h: &ReactorHarness<AuditLog>) -> Vec<(String, String)> {
        h.prefix("/audit/")
            .into_iter()
            .map(|kv| {
                (
                    String::from_utf8(kv.key).expect("utf-8"),
                    String::from_utf8(kv.value).expect("utf-8"),
                )
            })
            .collect()
    }

    #[test]
    fn one_record_per_change_in_commit_order() {
        let mut h = harness();
        let r1 = h.put("/app/a", "1");
        let r2 = h.principal("alice").put("/app/a", "2");
        h.put("/elsewhere", "x");
        let r3 = h
            .principal("bob")
            .write([Write::put("/app/b", "3"), Write::delete("/app/a")]);
        assert_eq!(h.run().expect("ok").len(), 4);
        let key = |rev, i| record_key("/audit/", rev, i);
        assert_eq!(
            records(&h),
            [
                (
                    key(r1, 0),
                    r#"{"key":"/app/a","revision":2,"type":"put","user":"root","value":"1","version":1}"#.into()
                ),
                (
                    key(r2, 0),
                    r#"{"key":"/app/a","revision":3,"type":"put","user":"alice","value":"2","version":2}"#.into()
                ),
                (
                    key(r3, 0),
                    r#"{"key":"/app/b","revision":5,"type":"put","user":"bob","value":"3","version":1}"#.into()
                ),
                (
                    key(r3, 1),
                    r#"{"key":"/app/a","revision":5,"type":"delete","user":"bob"}"#.into()
                ),
            ]
        );
        // Keys sort by revision whatever its number of digits.
        assert!(record_key("/a/", 9, 0) < record_key("/a/", 10, 0));
    }

    #[test]
    fn its_own_records_are_not_audited_even_under_its_prefix() {
        let mut h = ReactorHarness::<AuditLog>::new("/").config("audit-prefix", "/audit/");
        h.put("/x", "1");
        assert_eq!(h.run().expect("ok").len(), 1);
        assert!(h.pending().is_empty(), "{:?}", h.pending());
        assert_eq!(h.run(), Ok(vec![]));
        assert_eq!(h.calls(), 1);
        assert_eq!(records(&h).len(), 1);
    }

    #[test]
    fn a_redelivered_batch_rewrites_the_same_records() {
        let mut h = harness();
        let rev = h.put("/app/a", "1");
        let first = h.run().expect("ok");
        // What the node does after a lost checkpoint: the same events again.
        let events = [etch_plugin::Event {
            kind: OpKind::Put,
            kv: h.get("/app/a").expect("live"),
            prev: None,
            principal: "root".into(),
        }];
        assert_eq!(events[0].revision(), rev);
        let again = [Write::put(
            record_key("/audit/", rev, 0),
            record(&events[0]),
        )];
        assert_eq!(first, again);
    }

    #[test]
    fn without_a_setting_the_records_go_under_audit_and_the_bindings_prefix() {
        let mut h = ReactorHarness::<AuditLog>::new("/app/");
        let rev = h.put("/app/a", "1");
        assert_eq!(h.run().expect("ok").len(), 1);
        assert!(h.get(record_key("/audit/app/", rev, 0)).is_some());
        let mut bare = ReactorHarness::<AuditLog>::new("cfg.");
        let rev = bare.put("cfg.a", "1");
        assert_eq!(bare.run().expect("ok").len(), 1);
        assert!(bare.get(record_key("/audit/cfg.", rev, 0)).is_some());
    }

    #[test]
    fn an_empty_setting_fails_init_and_the_batch_stays_queued() {
        let mut h = ReactorHarness::<AuditLog>::new("/app/").config("audit-prefix", "");
        h.put("/app/a", "1");
        assert_eq!(
            h.run(),
            Err("init failed: audit-prefix may not be empty".into())
        );
        assert_eq!(h.pending().len(), 1);
        assert!(h.prefix("").iter().all(|kv| kv.key == b"/app/a"));
    }
}
