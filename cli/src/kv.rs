//! `put`, `get`, `del` and `compact`: flags, the requests they make, and running them.
//!
//! The flag structs are shared with the txn parser, which reads etcdctl command lines such
//! as `get k --prefix`, so a flag means the same thing in both places.

use std::ffi::{OsStr, OsString};
use std::io::Read;

use anyhow::{Context, Result, bail};
use clap::Args;
use etch_client::TxnOp;
use etch_client::proto::{CompactRequest, Request, RequestOp, Response, SortOrder, SortTarget};

use crate::context::Context as Ctx;

/// A command line etcdctl refuses with a status of its own: the message is the `Error:`
/// line, `status` the exit status (etcdctl's `ExitBadArgs` 128, `ExitBadFeature` 4).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub status: u8,
    pub message: String,
}

impl Refused {
    /// Wrong arguments (etcdctl's `ExitBadArgs`).
    pub fn bad_args(message: impl Into<String>) -> anyhow::Error {
        Refused {
            status: 128,
            message: message.into(),
        }
        .into()
    }

    /// A valid flag with a value etcdctl does not know (its `ExitBadFeature`).
    pub fn bad_feature(message: impl Into<String>) -> anyhow::Error {
        Refused {
            status: 4,
            message: message.into(),
        }
        .into()
    }
}

/// A command-line argument's bytes, whatever they are: keys and values need not be UTF-8.
pub fn bytes(arg: &OsStr) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    arg.as_bytes().to_vec()
}

/// `put KEY [VALUE]`.
#[derive(Args, Clone, Debug)]
pub struct PutArgs {
    /// The key to set (any bytes the shell passes, as etcdctl takes them).
    pub key: OsString,
    /// The value; read from standard input when omitted.
    pub value: Option<OsString>,
    /// Also print the key's previous value.
    #[arg(long)]
    pub prev_kv: bool,
    /// Attach the key to this lease (ID in hex).
    #[arg(long)]
    pub lease: Option<String>,
    /// Keep the key's current value (give no VALUE): change only its lease.
    #[arg(long)]
    pub ignore_value: bool,
    /// Keep the key's current lease: change only its value.
    #[arg(long)]
    pub ignore_lease: bool,
}

impl PutArgs {
    pub fn op(&self, value: Vec<u8>) -> Result<RequestOp> {
        let mut op = TxnOp::put(bytes(&self.key), value);
        if self.prev_kv {
            op = op.prev_kv();
        }
        if self.ignore_value {
            op = op.ignore_value();
        }
        if self.ignore_lease {
            op = op.ignore_lease();
        }
        if let Some(lease) = &self.lease {
            let id = i64::from_str_radix(lease, 16)
                .with_context(|| format!("bad lease ID ({lease}), expecting ID in Hex"))?;
            op = op.lease(id);
        }
        Ok(op.into_inner())
    }
}

/// Which keys a get or del selects: the key, `[key, range_end)`, a prefix or `>= key`.
#[derive(Args, Clone, Debug)]
pub struct RangeArgs {
    /// The key (or the start of the range).
    pub key: OsString,
    /// The end of the range, exclusive.
    pub range_end: Option<OsString>,
    /// Every key starting with KEY ("" for all keys).
    #[arg(long)]
    pub prefix: bool,
    /// Every key greater than or equal to KEY.
    #[arg(long)]
    pub from_key: bool,
}

impl RangeArgs {
    fn apply(&self, op: TxnOp) -> Result<TxnOp> {
        match (self.prefix, self.from_key, &self.range_end) {
            (true, true, _) => {
                bail!("`--prefix` and `--from-key` cannot be set at the same time, choose one")
            }
            (true, _, Some(_)) => {
                bail!("too many arguments, only accept one argument when `--prefix` is set")
            }
            (_, true, Some(_)) => {
                bail!("too many arguments, only accept one argument when `--from-key` is set")
            }
            (true, false, None) => Ok(op.prefix()),
            (false, true, None) => Ok(op.from_key()),
            (false, false, Some(end)) => Ok(op.range_end(bytes(end))),
            (false, false, None) => Ok(op),
        }
    }
}

/// Read consistency (`--consistency`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Consistency {
    /// Linearizable: confirmed with the leader (default).
    #[default]
    L,
    /// Serializable: served from the node's local state, possibly stale.
    S,
}

/// `get KEY [RANGE_END]`.
#[derive(Args, Clone, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Read as of this revision (0: the current one).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Return at most this many keys (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Print keys without values.
    #[arg(long)]
    pub keys_only: bool,
    /// Print only the number of matching keys.
    #[arg(long)]
    pub count_only: bool,
    /// Linearizable (l) or serializable (s) read.
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Same as `--consistency s`.
    #[arg(long)]
    pub serializable: bool,
    /// Print values without keys.
    #[arg(long)]
    pub print_value_only: bool,
    /// Order of results: ASCEND or DESCEND (ASCEND by default).
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target: CREATE, KEY, MODIFY, VALUE or VERSION.
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Only keys last modified at or after this revision (0: no bound).
    #[arg(long, default_value_t = 0)]
    pub min_mod_revision: i64,
    /// Only keys last modified at or before this revision (0: no bound).
    #[arg(long, default_value_t = 0)]
    pub max_mod_revision: i64,
    /// Only keys created at or after this revision (0: no bound).
    #[arg(long, default_value_t = 0)]
    pub min_create_revision: i64,
    /// Only keys created at or before this revision (0: no bound).
    #[arg(long, default_value_t = 0)]
    pub max_create_revision: i64,
}

impl GetArgs {
    pub fn op(&self) -> Result<RequestOp> {
        let mut op = self.range.apply(TxnOp::get(bytes(&self.range.key)))?;
        op = op.revision(self.rev).limit(self.limit);
        if self.keys_only {
            op = op.keys_only();
        }
        if self.count_only {
            op = op.count_only();
        }
        if !self.order.is_empty() || !self.sort_by.is_empty() {
            op = op.sort(self.sort_target()?, self.sort_order()?);
        }
        op = op
            .mod_revisions(self.min_mod_revision, self.max_mod_revision)
            .create_revisions(self.min_create_revision, self.max_create_revision);
        let mut op = op.into_inner();
        if let RequestOp::Range(r) = &mut op {
            r.serializable = self.serializable || self.consistency == Consistency::S;
        }
        Ok(op)
    }

    /// `--order`, as etcdctl reads it (any case).
    fn sort_order(&self) -> Result<SortOrder> {
        Ok(match self.order.to_uppercase().as_str() {
            "" => SortOrder::None,
            "ASCEND" => SortOrder::Ascend,
            "DESCEND" => SortOrder::Descend,
            _ => {
                return Err(Refused::bad_feature(format!(
                    "bad sort order {}",
                    self.order
                )));
            }
        })
    }

    /// `--sort-by`, as etcdctl reads it (any case).
    fn sort_target(&self) -> Result<SortTarget> {
        Ok(match self.sort_by.to_uppercase().as_str() {
            "" | "KEY" => SortTarget::Key,
            "CREATE" => SortTarget::Create,
            "MODIFY" => SortTarget::Mod,
            "VALUE" => SortTarget::Value,
            "VERSION" => SortTarget::Version,
            _ => {
                return Err(Refused::bad_feature(format!(
                    "bad sort target {}",
                    self.sort_by
                )));
            }
        })
    }
}

/// `del KEY [RANGE_END]`.
#[derive(Args, Clone, Debug)]
pub struct DelArgs {
    #[command(flatten)]
    pub range: RangeArgs,
    /// Also print the deleted key-value pairs.
    #[arg(long)]
    pub prev_kv: bool,
}

impl DelArgs {
    pub fn op(&self) -> Result<RequestOp> {
        let mut op = self.range.apply(TxnOp::delete(bytes(&self.range.key)))?;
        if self.prev_kv {
            op = op.prev_kv();
        }
        Ok(op.into_inner())
    }
}

/// `compact REVISION`.
#[derive(Args, Clone, Debug)]
pub struct CompactArgs {
    /// Drop the history below this revision.
    pub revision: i64,
    /// Wait for the compaction to be physically applied (etch always does).
    #[arg(long)]
    pub physical: bool,
}

/// The single request an op line stands for.
fn request(op: RequestOp) -> Request {
    match op {
        RequestOp::Range(r) => Request::Range(r),
        RequestOp::Put(p) => Request::Put(p),
        RequestOp::DeleteRange(d) => Request::DeleteRange(d),
        RequestOp::Txn(t) => Request::Txn(t),
    }
}

pub async fn put(ctx: &Ctx, args: &PutArgs) -> Result<()> {
    let value = match &args.value {
        Some(_) if args.ignore_value => {
            return Err(Refused::bad_args(
                "put command needs only 1 argument when 'ignore-value' is set",
            ));
        }
        None if args.ignore_value => Vec::new(),
        Some(v) => bytes(v),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the value from standard input")?;
            // etcdctl's rule: no value argument and nothing on stdin is a usage error, not
            // a put of an empty value (`put k ""` is that).
            if buf.is_empty() {
                return Err(Refused::bad_args(
                    "put command needs 1 argument and input from stdin or 2 arguments",
                ));
            }
            buf
        }
    };
    let op = args.op(value)?;
    let client = ctx.client()?;
    match client.request(request(op)).await? {
        Response::Put(r) => ctx.print(|p, w| p.put(w, &r)),
        other => bail!("unexpected response {other:?}"),
    }
}

pub async fn get(ctx: &Ctx, args: &GetArgs) -> Result<()> {
    let op = args.op()?;
    let client = ctx.client()?;
    let printer = crate::print::Printer {
        value_only: args.print_value_only,
        ..ctx.printer
    };
    match client.request(request(op)).await? {
        Response::Range(r) => ctx.print(|_, w| printer.get(w, &r, args.count_only)),
        other => bail!("unexpected response {other:?}"),
    }
}

pub async fn del(ctx: &Ctx, args: &DelArgs) -> Result<()> {
    let op = args.op()?;
    let client = ctx.client()?;
    match client.request(request(op)).await? {
        Response::DeleteRange(r) => ctx.print(|p, w| p.del(w, &r)),
        other => bail!("unexpected response {other:?}"),
    }
}

pub async fn compact(ctx: &Ctx, args: &CompactArgs) -> Result<()> {
    let client = ctx.client()?;
    let req = Request::Compact(CompactRequest {
        revision: args.revision,
        physical: args.physical,
    });
    match client.request(req).await? {
        Response::Compact(_) => {
            ctx.print(|_, w| writeln!(w, "compacted revision {}", args.revision))
        }
        other => bail!("unexpected response {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use etch_client::proto::RangeRequest;

    use super::*;

    #[derive(Parser)]
    struct Get {
        #[command(flatten)]
        get: GetArgs,
    }

    fn get_op(args: &[&str]) -> Result<RequestOp> {
        Get::try_parse_from(std::iter::once("get").chain(args.iter().copied()))?
            .get
            .op()
    }

    #[test]
    fn get_flags_make_the_request() {
        let op = get_op(&[
            "/a",
            "--prefix",
            "--limit",
            "2",
            "--rev",
            "5",
            "--consistency",
            "s",
        ])
        .expect("op");
        assert_eq!(
            op,
            RequestOp::Range(RangeRequest {
                key: b"/a".to_vec(),
                range_end: b"/b".to_vec(),
                limit: 2,
                revision: 5,
                serializable: true,
                ..Default::default()
            })
        );
        let RequestOp::Range(r) = get_op(&["a", "c", "--keys-only"]).expect("op") else {
            panic!("not a range")
        };
        assert_eq!((r.range_end, r.keys_only), (b"c".to_vec(), true));
    }

    #[test]
    fn conflicting_range_flags_are_refused() {
        let err = get_op(&["a", "--prefix", "--from-key"]).expect_err("conflict");
        assert!(
            err.to_string().contains("cannot be set at the same time"),
            "{err}"
        );
        let err = get_op(&["a", "b", "--prefix"]).expect_err("two args");
        assert!(
            err.to_string().contains("only accept one argument"),
            "{err}"
        );
    }

    #[test]
    fn lease_is_hex() {
        let args = PutArgs {
            key: "k".into(),
            value: None,
            prev_kv: false,
            lease: Some("1f".into()),
            ignore_value: false,
            ignore_lease: false,
        };
        let RequestOp::Put(p) = args.op(b"v".to_vec()).expect("op") else {
            panic!("not a put")
        };
        assert_eq!(p.lease, 31);
        let bad = PutArgs {
            lease: Some("zz".into()),
            ..args
        };
        let err = bad.op(vec![]).expect_err("bad lease");
        assert!(err.to_string().contains("expecting ID in Hex"), "{err}");
    }

    #[test]
    fn sort_flags_read_as_etcdctl_reads_them() {
        let RequestOp::Range(r) =
            get_op(&["a", "--prefix", "--sort-by", "modify", "--order", "DESCEND"]).expect("op")
        else {
            panic!("not a range")
        };
        assert_eq!(
            (r.sort_target, r.sort_order),
            (SortTarget::Mod, SortOrder::Descend)
        );
        // A target alone sorts ascending on the node; ascending by key is key order.
        let RequestOp::Range(r) = get_op(&["a", "--sort-by", "VALUE"]).expect("op") else {
            panic!("not a range")
        };
        assert_eq!(
            (r.sort_target, r.sort_order),
            (SortTarget::Value, SortOrder::None)
        );
        let RequestOp::Range(r) = get_op(&["a", "--order", "ascend"]).expect("op") else {
            panic!("not a range")
        };
        assert!(r.is_first_layout(), "{r:?}");
        for (flag, value, message) in [
            ("--order", "UP", "bad sort order UP"),
            ("--sort-by", "SIZE", "bad sort target SIZE"),
        ] {
            let err = get_op(&["a", flag, value]).expect_err("a bad sort");
            let refused = err
                .downcast_ref::<Refused>()
                .expect("a refusal with a status");
            assert_eq!((refused.status, refused.message.as_str()), (4, message));
        }
    }
}
