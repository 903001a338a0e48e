//! `watch` output, as etcdctl's `printWatchCh` and printers write it.
//!
//! Simple: each event's type (`PUT` or `DELETE`), then the previous key-value when asked for
//! with `--prev-kv`, then the key-value, each key and value on its own line (a delete has
//! an empty value). A progress notification prints `progress notify: REV` in every format,
//! as etcdctl does before handing the response to the printer. JSON: one line per
//! response, Go's encoding of `clientv3.WatchResponse`, whose fields have no JSON tags
//! (hence `Header`, `Events`, ... and no `omitempty` at that level; `Events` is `null`
//! when empty); an event's `type` is the enum's number, left out for `PUT` (0).

use std::io::{self, Write};

use etch_proto::watch::{Event, EventType, WatchResponse};
use serde::Serialize;

use super::json::{Header, Kv, print, zero};
use super::{Printer, simple};

fn event_type(kind: EventType) -> &'static str {
    match kind {
        EventType::Put => "PUT",
        EventType::Delete => "DELETE",
    }
}

pub(super) fn progress(w: &mut dyn Write, resp: &WatchResponse) -> io::Result<()> {
    if resp.is_progress_notify() {
        writeln!(w, "progress notify: {}", resp.header.revision)?;
    }
    Ok(())
}

pub(super) fn simple(w: &mut dyn Write, p: &Printer, resp: &WatchResponse) -> io::Result<()> {
    for e in &resp.events {
        writeln!(w, "{}", event_type(e.kind))?;
        if let Some(prev) = &e.prev_kv {
            simple::kv(w, p, prev)?;
        }
        simple::kv(w, p, &e.kv)?;
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Response {
    header: Header,
    events: Option<Vec<EventJson>>,
    compact_revision: i64,
    canceled: bool,
    created: bool,
}

/// `mvccpb.Event`.
#[derive(Serialize)]
struct EventJson {
    #[serde(rename = "type", skip_serializing_if = "zero")]
    kind: i32,
    kv: Kv,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<Kv>,
}

impl From<&Event> for EventJson {
    fn from(e: &Event) -> Self {
        EventJson {
            kind: match e.kind {
                EventType::Put => 0,
                EventType::Delete => 1,
            },
            kv: (&e.kv).into(),
            prev_kv: e.prev_kv.as_ref().map(Kv::from),
        }
    }
}

pub(super) fn json(w: &mut dyn Write, resp: &WatchResponse) -> io::Result<()> {
    let events =
        (!resp.events.is_empty()).then(|| resp.events.iter().map(EventJson::from).collect());
    print(
        w,
        &Response {
            header: (&resp.header).into(),
            events,
            compact_revision: resp.compact_revision,
            canceled: resp.canceled,
            created: resp.created,
        },
    )
}

#[cfg(test)]
mod tests {
    use etch_proto::{KeyValue, ResponseHeader};

    use super::super::Format;
    use super::*;

    fn printed(p: Printer, resp: &WatchResponse) -> String {
        let mut out = Vec::new();
        p.watch(&mut out, resp).expect("print");
        String::from_utf8(out).expect("utf-8")
    }

    fn printer(format: Format) -> Printer {
        Printer {
            format,
            ..Default::default()
        }
    }

    fn kv(key: &str, value: &str, create: i64, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: rev,
            version: rev - create + 1,
            lease: 0,
        }
    }

    fn put_and_delete(prev: bool) -> WatchResponse {
        WatchResponse {
            header: ResponseHeader {
                revision: 4,
                ..Default::default()
            },
            events: vec![
                Event {
                    kind: EventType::Put,
                    kv: kv("foo", "bar", 2, 3),
                    prev_kv: prev.then(|| kv("foo", "old", 2, 2)),
                },
                Event {
                    kind: EventType::Delete,
                    kv: KeyValue {
                        key: b"foo".to_vec(),
                        mod_revision: 4,
                        ..Default::default()
                    },
                    prev_kv: prev.then(|| kv("foo", "bar", 2, 3)),
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn simple_prints_type_then_key_and_value() {
        assert_eq!(
            printed(printer(Format::Simple), &put_and_delete(false)),
            "PUT\nfoo\nbar\nDELETE\nfoo\n\n"
        );
        assert_eq!(
            printed(printer(Format::Simple), &put_and_delete(true)),
            "PUT\nfoo\nold\nfoo\nbar\nDELETE\nfoo\nbar\nfoo\n\n"
        );
        let hex = Printer {
            hex: true,
            ..printer(Format::Table)
        };
        let resp = WatchResponse {
            events: vec![put_and_delete(false).events.remove(0)],
            ..Default::default()
        };
        assert_eq!(
            printed(hex, &resp),
            "PUT\n\\x66\\x6f\\x6f\n\\x62\\x61\\x72\n"
        );
    }

    #[test]
    fn progress_notifications_are_announced_in_every_format() {
        let resp = WatchResponse {
            header: ResponseHeader {
                revision: 9,
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            printed(printer(Format::Simple), &resp),
            "progress notify: 9\n"
        );
        assert_eq!(
            printed(printer(Format::Json), &resp),
            concat!(
                "progress notify: 9\n",
                r#"{"Header":{"revision":9},"Events":null,"CompactRevision":0,"Canceled":false,"Created":false}"#,
                "\n"
            )
        );
    }

    #[test]
    fn json_is_one_line_per_response() {
        assert_eq!(
            printed(printer(Format::Json), &put_and_delete(true)),
            concat!(
                r#"{"Header":{"revision":4},"Events":["#,
                r#"{"kv":{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFy"},"#,
                r#""prev_kv":{"key":"Zm9v","create_revision":2,"mod_revision":2,"version":1,"value":"b2xk"}},"#,
                r#"{"type":1,"kv":{"key":"Zm9v","mod_revision":4},"#,
                r#""prev_kv":{"key":"Zm9v","create_revision":2,"mod_revision":3,"version":2,"value":"YmFy"}}],"#,
                r#""CompactRevision":0,"Canceled":false,"Created":false}"#,
                "\n"
            )
        );
    }
}
