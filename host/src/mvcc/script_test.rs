//! Golden-script tests of the mvcc store: `testscripts/*.txt` hold commands and the output
//! they produce, so each file reads as a specification. Regenerate the expected output after
//! a deliberate change with `UPDATE_GOLDENFILES=1 cargo test -p etch-host --lib mvcc` and
//! review the diff.
//!
//! Commands (keys and values are goldenscript strings; `\x00`-style escapes give any byte):
//!
//! ```text
//! put KEY VALUE [lease=N] [prev_kv=true]
//! range KEY [END] [limit=N] [rev=N] [keys_only=true] [count_only=true]
//! delete KEY [END] [prev_kv=true]
//! txn [if=CMP]... [then=OP]... [else=OP]... [readonly=true]
//!     CMP: "TARGET(KEY) OP OPERAND" or "TARGET(KEY..END) ...", TARGET one of value, version,
//!          create, mod, lease; OP one of = != < >
//!     OP:  "put KEY VALUE ...", "range KEY [END] ...", "delete KEY [END] ..." (options as above)
//! compact REV          events REV          status          dump
//! reopen               (drop and reopen the fjall database)
//! snapshot             (export, import into a fresh database, compare, continue there)
//! ```
//!
//! Every write goes through [`Store::apply`] with `applied = "entry N"`, N counting entries.

use std::fmt::Write as _;

use etch_proto::{
    CompactRequest, KeyValue, RangeRequest, RangeResponse, Request, Response, ResponseOp,
    TxnRequest, TxnResponse,
};
use fjall::{Database, Readable};
use tempfile::TempDir;

use super::keycode::{decode_rev, decode_version_key};
use super::layout::{History, Version, decode, read_version};
use super::script_parse::{Args, Res, compare, delete_req, op, put_req, range_req};
use super::store::Store;

macro_rules! scripts {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() -> std::io::Result<()> {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/mvcc/testscripts/", stringify!($name), ".txt");
            goldenscript::run(&mut Runner::new(), path)
        }
    )*};
}

scripts!(
    put,
    range,
    delete,
    txn_compare,
    txn,
    compact,
    snapshot,
    reopen,
    history,
    binary_keys,
    etcd_options
);

/// Bytes for output: plain when printable, else quoted with `\xNN` escapes.
pub(crate) fn show(b: &[u8]) -> String {
    if !b.is_empty()
        && b.iter()
            .all(|&c| c.is_ascii_graphic() && !b"\"\\=".contains(&c))
    {
        return String::from_utf8_lossy(b).into_owned();
    }
    let mut s = String::from("\"");
    for &c in b {
        if c.is_ascii_graphic() && c != b'"' && c != b'\\' || c == b' ' {
            s.push(char::from(c));
        } else {
            let _ = write!(s, "\\x{c:02x}");
        }
    }
    s + "\""
}

pub(crate) fn show_kv(kv: &KeyValue) -> String {
    let mut s = format!(
        "{}={} create={} mod={} ver={}",
        show(&kv.key),
        show(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if kv.lease != 0 {
        let _ = write!(s, " lease={}", kv.lease);
    }
    s
}

pub(crate) fn show_range(out: &mut String, indent: &str, resp: &RangeResponse) -> Res<()> {
    for kv in &resp.kvs {
        writeln!(out, "{indent}{}", show_kv(kv))?;
    }
    writeln!(
        out,
        "{indent}count={} more={} rev={}",
        resp.count, resp.more, resp.header.revision
    )?;
    Ok(())
}

pub(crate) fn show_response(out: &mut String, indent: &str, resp: &Response) -> Res<()> {
    match resp {
        Response::Range(r) => show_range(out, indent, r)?,
        Response::Put(r) => show_op(out, indent, &ResponseOp::Put(r.clone()))?,
        Response::DeleteRange(r) => show_op(out, indent, &ResponseOp::DeleteRange(r.clone()))?,
        Response::Txn(r) => show_txn(out, r)?,
        Response::Compact(r) => writeln!(out, "{indent}rev={}", r.header.revision)?,
        other => writeln!(out, "{indent}{other:?}")?,
    }
    Ok(())
}

pub(crate) fn show_op(out: &mut String, indent: &str, resp: &ResponseOp) -> Res<()> {
    match resp {
        ResponseOp::Range(r) => show_range(out, indent, r)?,
        ResponseOp::Put(r) => {
            writeln!(out, "{indent}rev={}", r.header.revision)?;
            if let Some(prev) = &r.prev_kv {
                writeln!(out, "{indent}prev_kv: {}", show_kv(prev))?;
            }
        }
        ResponseOp::DeleteRange(r) => {
            writeln!(
                out,
                "{indent}deleted={} rev={}",
                r.deleted, r.header.revision
            )?;
            for prev in &r.prev_kvs {
                writeln!(out, "{indent}prev_kv: {}", show_kv(prev))?;
            }
        }
        ResponseOp::Txn(t) => {
            writeln!(
                out,
                "{indent}succeeded={} rev={}",
                t.succeeded, t.header.revision
            )?;
            for r in &t.responses {
                writeln!(out, "{indent}  {}:", op_name(r))?;
                show_op(out, &format!("{indent}    "), r)?;
            }
        }
    }
    Ok(())
}

fn op_name(r: &ResponseOp) -> &'static str {
    match r {
        ResponseOp::Range(_) => "range",
        ResponseOp::Put(_) => "put",
        ResponseOp::DeleteRange(_) => "delete",
        ResponseOp::Txn(_) => "txn",
    }
}

pub(crate) fn show_txn(out: &mut String, resp: &TxnResponse) -> Res<()> {
    writeln!(
        out,
        "succeeded={} rev={}",
        resp.succeeded, resp.header.revision
    )?;
    for r in &resp.responses {
        writeln!(out, "  {}:", op_name(r))?;
        show_op(out, "    ", r)?;
    }
    Ok(())
}

/// Every stored record except `applied`, decoded, one per line.
fn dump(store: &Store) -> Res<String> {
    let spaces = store.spaces();
    let snap = spaces.db.snapshot();
    let mut out = String::new();
    for item in snap.iter(&spaces.current) {
        let (key, raw) = item.into_inner()?;
        let kv = decode::<Version>(&raw)?.into_kv(key.to_vec());
        writeln!(out, "current {}", show_kv(&kv))?;
    }
    for item in snap.iter(&spaces.versions) {
        let (raw_key, raw) = item.into_inner()?;
        let (key, rev) = decode_version_key(&raw_key)?;
        match read_version(&snap, &spaces.current, &key, rev, &raw)? {
            Some(v) => writeln!(
                out,
                "version {}@{rev} {}",
                show(&key),
                show_kv(&v.into_kv(key.clone()))
            )?,
            None => writeln!(out, "version {}@{rev} deleted", show(&key))?,
        }
    }
    for item in snap.iter(&spaces.history) {
        let (raw_rev, raw) = item.into_inner()?;
        let touches: Vec<String> = decode::<History>(&raw)?
            .touches
            .into_iter()
            .map(|t| {
                format!(
                    "{} {}",
                    if t.deleted { "delete" } else { "put" },
                    show(&t.key)
                )
            })
            .collect();
        writeln!(
            out,
            "history {} {}",
            decode_rev(&raw_rev)?,
            touches.join(", ")
        )?;
    }
    let (rev, compact) = spaces.counters(&snap)?;
    writeln!(out, "meta revision={rev} compact_revision={compact}")?;
    Ok(out)
}

struct Runner {
    dir: TempDir,
    store: Option<Store>,
    entries: u64,
    /// The stream `export` saved, for `import`.
    saved: Vec<u8>,
}

impl Runner {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Self::open(&dir).expect("open store");
        Runner {
            dir,
            store: Some(store),
            entries: 0,
            saved: Vec::new(),
        }
    }

    fn open(dir: &TempDir) -> Res<Store> {
        let db = Database::builder(dir.path()).open()?;
        Ok(Store::open(&db)?)
    }

    fn store(&self) -> Res<&Store> {
        self.store.as_ref().ok_or_else(|| "no store".into())
    }

    fn apply(&mut self, req: Request) -> Res<Response> {
        self.entries += 1;
        let applied = format!("entry {}", self.entries);
        Ok(self.store()?.apply_request(&req, applied.as_bytes())??)
    }
}

impl goldenscript::Runner for Runner {
    type Command = goldenscript::Command;

    fn run(&mut self, cmd: &goldenscript::Command, _: &goldenscript::Context) -> Res<String> {
        let mut out = String::new();
        let mut args = Args::from_command(cmd);
        match cmd.name.as_str() {
            "put" => {
                let req = put_req(&mut args)?;
                args.done()?;
                show_response(&mut out, "", &self.apply(Request::Put(req))?)?;
            }
            "range" => {
                let req = range_req(&mut args)?;
                args.done()?;
                show_range(&mut out, "", &self.store()?.range(&req)??)?;
            }
            "delete" => {
                let req = delete_req(&mut args)?;
                args.done()?;
                show_response(&mut out, "", &self.apply(Request::DeleteRange(req))?)?;
            }
            "txn" => {
                let req = TxnRequest {
                    compare: args
                        .take_all("if")
                        .iter()
                        .map(|c| compare(c))
                        .collect::<Res<_>>()?,
                    success: args
                        .take_all("then")
                        .iter()
                        .map(|o| op(o))
                        .collect::<Res<_>>()?,
                    failure: args
                        .take_all("else")
                        .iter()
                        .map(|o| op(o))
                        .collect::<Res<_>>()?,
                };
                let readonly: bool = args.opt("readonly")?;
                args.done()?;
                if readonly {
                    show_txn(&mut out, &self.store()?.txn(&req)??)?;
                } else {
                    show_response(&mut out, "", &self.apply(Request::Txn(req))?)?;
                }
            }
            "compact" => {
                let revision = args.pos.pop_front().ok_or("revision not given")?.parse()?;
                args.done()?;
                let req = CompactRequest {
                    revision,
                    physical: false,
                };
                show_response(&mut out, "", &self.apply(Request::Compact(req))?)?;
            }
            "events" => {
                let rev = args.pos.pop_front().ok_or("revision not given")?.parse()?;
                args.done()?;
                let events = self.store()?.events_at(rev)??;
                if events.is_empty() {
                    writeln!(out, "no events")?;
                }
                for event in events {
                    if event.is_delete {
                        writeln!(
                            out,
                            "delete {} mod={}",
                            show(&event.kv.key),
                            event.kv.mod_revision
                        )?;
                    } else {
                        writeln!(out, "put {}", show_kv(&event.kv))?;
                    }
                }
            }
            "status" => {
                args.done()?;
                let store = self.store()?;
                let applied = store
                    .applied()?
                    .map(|a| String::from_utf8_lossy(&a).into_owned());
                writeln!(
                    out,
                    "revision={} compact_revision={} applied={applied:?}",
                    store.revision(),
                    store.compact_revision()
                )?;
            }
            "dump" => {
                args.done()?;
                out = dump(self.store()?)?;
            }
            "reopen" => {
                args.done()?;
                // Dropping the last Store drops its Database handle, closing the database.
                self.store = None;
                self.store = Some(Self::open(&self.dir)?);
                writeln!(out, "reopened")?;
            }
            "snapshot" => {
                args.done()?;
                let mut stream = Vec::new();
                self.store()?.export(&mut stream)?;
                let dir = tempfile::tempdir()?;
                let fresh = Self::open(&dir)?;
                fresh.import(&mut stream.as_slice(), b"snapshot")?;
                let (before, after) = (dump(self.store()?)?, dump(&fresh)?);
                if before != after {
                    return Err(format!("import differs:\n{before}\nvs\n{after}").into());
                }
                writeln!(
                    out,
                    "exported and imported into a fresh database: state identical"
                )?;
                self.store = Some(fresh);
                self.dir = dir;
            }
            "export" => {
                args.done()?;
                let mut saved = Vec::new();
                self.store()?.export(&mut saved)?;
                self.saved = saved;
                writeln!(out, "exported {} bytes", self.saved.len())?;
            }
            "import" => {
                // Imports the saved export over the current store, cut to `truncate` bytes
                // if given; a view opened before the import is read again after it.
                let truncate: usize = args.opt("truncate")?;
                args.done()?;
                let store = self.store()?;
                let before = store.view()?;
                let len = if truncate > 0 {
                    truncate
                } else {
                    self.saved.len()
                };
                let stream = &self.saved[..len.min(self.saved.len())];
                match store.import(&mut &stream[..], b"imported") {
                    Ok(()) => writeln!(out, "imported")?,
                    Err(e) => writeln!(out, "import failed: {e}")?,
                }
                let all = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                };
                let old = before.range(&all, super::view::MAX_RANGE_BYTES)??;
                writeln!(
                    out,
                    "view opened before: rev={} keys={}",
                    old.header.revision, old.count
                )?;
            }
            name => return Err(format!("unknown command {name:?}").into()),
        }
        Ok(out)
    }
}
