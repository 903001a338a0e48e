//! Parsing of golden-script arguments into mvcc requests (see `script_test` for the
//! command language).

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::str::FromStr;

use etch_proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};

pub(crate) type Res<T> = std::result::Result<T, Box<dyn StdError>>;

/// Command arguments, from a goldenscript command or from a txn op string.
pub(crate) struct Args {
    pub(crate) pos: VecDeque<String>,
    keys: Vec<(String, String)>,
}

impl Args {
    pub(crate) fn from_command(cmd: &goldenscript::Command) -> Self {
        let mut args = Args {
            pos: VecDeque::new(),
            keys: Vec::new(),
        };
        for arg in &cmd.args {
            match arg {
                goldenscript::Argument::Positional(v) => args.pos.push_back(v.clone()),
                goldenscript::Argument::KeyValue(k, v) => args.keys.push((k.clone(), v.clone())),
                _ => {}
            }
        }
        args
    }

    /// Splits a txn op on whitespace; `name=value` tokens with a lowercase name are options,
    /// and `""` is an empty argument.
    pub(crate) fn from_op(op: &str) -> Self {
        let mut args = Args {
            pos: VecDeque::new(),
            keys: Vec::new(),
        };
        for token in op.split_whitespace() {
            match token.split_once('=') {
                Some((k, v))
                    if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
                {
                    args.keys.push((k.into(), v.into()))
                }
                _ if token == "\"\"" => args.pos.push_back(String::new()),
                _ => args.pos.push_back(token.into()),
            }
        }
        args
    }

    pub(crate) fn next(&mut self, what: &str) -> Res<Vec<u8>> {
        self.pos
            .pop_front()
            .map(|s| bytes(&s))
            .ok_or_else(|| format!("{what} not given").into())
    }

    pub(crate) fn next_opt(&mut self) -> Vec<u8> {
        self.pos.pop_front().map(|s| bytes(&s)).unwrap_or_default()
    }

    pub(crate) fn take_all(&mut self, name: &str) -> Vec<String> {
        let (taken, rest) = std::mem::take(&mut self.keys)
            .into_iter()
            .partition(|(k, _)| k == name);
        self.keys = rest;
        taken.into_iter().map(|(_, v)| v).collect()
    }

    pub(crate) fn opt<T>(&mut self, name: &str) -> Res<T>
    where
        T: FromStr + Default,
        T::Err: StdError + 'static,
    {
        match self.take_all(name).pop() {
            Some(v) => Ok(v.parse()?),
            None => Ok(T::default()),
        }
    }

    pub(crate) fn done(self) -> Res<()> {
        if let Some(p) = self.pos.front() {
            return Err(format!("unexpected argument {p:?}").into());
        }
        if let Some((k, _)) = self.keys.first() {
            return Err(format!("unexpected option {k:?}").into());
        }
        Ok(())
    }
}

/// A goldenscript string as bytes: chars below U+0100 are single bytes (so `\xff` is 0xff).
pub(crate) fn bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for c in s.chars() {
        match u8::try_from(u32::from(c)) {
            Ok(b) => out.push(b),
            Err(_) => out.extend_from_slice(c.to_string().as_bytes()),
        }
    }
    out
}

/// A range: `KEY [END] [limit=N] [rev=N] [keys_only=true] [count_only=true]
/// [sort=TARGET:ORDER] [min_mod=N] [max_mod=N] [min_create=N] [max_create=N]`, TARGET one
/// of key, version, create, mod, value and ORDER one of none, ascend, descend.
pub(crate) fn range_req(args: &mut Args) -> Res<RangeRequest> {
    let mut req = RangeRequest {
        key: args.next("key")?,
        range_end: args.next_opt(),
        limit: args.opt("limit")?,
        revision: args.opt("rev")?,
        keys_only: args.opt("keys_only")?,
        count_only: args.opt("count_only")?,
        min_mod_revision: args.opt("min_mod")?,
        max_mod_revision: args.opt("max_mod")?,
        min_create_revision: args.opt("min_create")?,
        max_create_revision: args.opt("max_create")?,
        ..RangeRequest::default()
    };
    if let Some(sort) = args.take_all("sort").pop() {
        let (target, order) = sort.split_once(':').ok_or("sort is TARGET:ORDER")?;
        req.sort_target = match target {
            "key" => SortTarget::Key,
            "version" => SortTarget::Version,
            "create" => SortTarget::Create,
            "mod" => SortTarget::Mod,
            "value" => SortTarget::Value,
            other => return Err(format!("unknown sort target {other:?}").into()),
        };
        req.sort_order = match order {
            "none" => SortOrder::None,
            "ascend" => SortOrder::Ascend,
            "descend" => SortOrder::Descend,
            other => return Err(format!("unknown sort order {other:?}").into()),
        };
    }
    Ok(req)
}

/// A put: `KEY VALUE [lease=N] [prev_kv=true] [ignore_value=true] [ignore_lease=true]`.
pub(crate) fn put_req(args: &mut Args) -> Res<PutRequest> {
    Ok(PutRequest {
        key: args.next("key")?,
        value: args.next("value")?,
        lease: args.opt("lease")?,
        prev_kv: args.opt("prev_kv")?,
        ignore_value: args.opt("ignore_value")?,
        ignore_lease: args.opt("ignore_lease")?,
    })
}

pub(crate) fn delete_req(args: &mut Args) -> Res<DeleteRangeRequest> {
    Ok(DeleteRangeRequest {
        key: args.next("key")?,
        range_end: args.next_opt(),
        prev_kv: args.opt("prev_kv")?,
    })
}

/// A txn op: `put ...`, `range ...`, `delete ...`, or a nested txn (one level in scripts)
/// `txn if COMPARE | then OP | else OP ...`.
pub(crate) fn op(s: &str) -> Res<RequestOp> {
    if let Some(rest) = s.strip_prefix("txn ") {
        let mut txn = TxnRequest::default();
        for part in rest.split(" | ") {
            let part = part.trim();
            if let Some(c) = part.strip_prefix("if ") {
                txn.compare.push(compare(c)?);
            } else if let Some(o) = part.strip_prefix("then ") {
                txn.success.push(op(o)?);
            } else if let Some(o) = part.strip_prefix("else ") {
                txn.failure.push(op(o)?);
            } else {
                return Err(format!("nested txn part {part:?} is not if/then/else").into());
            }
        }
        return Ok(RequestOp::Txn(txn));
    }
    let mut args = Args::from_op(s);
    let name = args.pos.pop_front().ok_or("empty txn op")?;
    let op = match name.as_str() {
        "put" => RequestOp::Put(put_req(&mut args)?),
        "range" => RequestOp::Range(range_req(&mut args)?),
        "delete" => RequestOp::DeleteRange(delete_req(&mut args)?),
        other => return Err(format!("unknown txn op {other:?}").into()),
    };
    args.done()?;
    Ok(op)
}

pub(crate) fn compare(s: &str) -> Res<Compare> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [lhs, result, operand] = parts[..] else {
        return Err(format!("compare {s:?} is not `TARGET(KEY) OP OPERAND`").into());
    };
    let (target, keys) = lhs
        .strip_suffix(')')
        .and_then(|l| l.split_once('('))
        .ok_or_else(|| format!("bad compare target {lhs:?}"))?;
    let (key, range_end) = keys.split_once("..").unwrap_or((keys, ""));
    let target = match target {
        "value" => CompareTarget::Value(bytes(operand)),
        "version" => CompareTarget::Version(operand.parse()?),
        "create" => CompareTarget::CreateRevision(operand.parse()?),
        "mod" => CompareTarget::ModRevision(operand.parse()?),
        "lease" => CompareTarget::Lease(operand.parse()?),
        other => return Err(format!("unknown compare target {other:?}").into()),
    };
    let result = match result {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        other => return Err(format!("unknown compare operator {other:?}").into()),
    };
    Ok(Compare {
        key: bytes(key),
        range_end: bytes(range_end),
        result,
        target,
    })
}
