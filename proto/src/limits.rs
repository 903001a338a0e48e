//! The limits every request is checked against before it reaches Raft.
//!
//! Two kinds of limit exist, and they are checked in different places:
//!
//! - **Shape limits** ([`check_shape`]) hold whatever a node's flags say: the longest key
//!   ([`MAX_KEY_BYTES`]), the longest lease TTL ([`MAX_LEASE_TTL`]), the longest name. They
//!   protect the storage engine (fjall refuses keys of 64 KiB and more, and a key is stored
//!   escaped, up to twice its length) and the arithmetic on deadlines. Because they are
//!   constants, the state machine can check them again when it applies an entry and fail the
//!   command the same way on every replica: a command that slipped past the entry checks
//!   (an entry written by an older release, a bug) is an error result, never a panic.
//! - **Size limits** ([`Limits::check`]): the request's bytes against the node's
//!   `--max-request-bytes` and a txn's operations against `--max-txn-ops`, as etcd checks
//!   them. They depend on flags, so only the node that admits a request checks them (client
//!   endpoint, forwarded request, reactor staging) — never apply.

use crate::error::Error;
use crate::lease::LeaseGrantRequest;
use crate::message::{
    Compare, CompareTarget, DeleteRangeRequest, MemberAddRequest, Mutation, PutRequest,
    RangeRequest, Request, RequestOp, TxnRequest,
};
use crate::plugin::PluginInstallRequest;
use crate::watch::WatchCreateRequest;

/// The longest key (and range end) accepted, in bytes. Well below fjall's limit of 64 KiB
/// even after escaping (a key full of zero bytes is stored at twice its length).
pub const MAX_KEY_BYTES: usize = 8 * 1024;

/// The longest lease TTL granted, in seconds: etcd's `MaxLeaseTTL` (about 285 years), far
/// inside what a deadline (`Instant + Duration`) can hold.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// The longest member, binding or configuration name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;

/// Operations in one txn branch (and compares), at most: etcd's `--max-txn-ops` default.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// How deep txns may nest (a txn in a branch of a txn is depth 2). etcd sets no bound but
/// its message size; etch sets one so that no request makes a reader, a checker or apply
/// recurse without bound.
pub const MAX_TXN_DEPTH: usize = 16;

/// The node's size limits for the requests it admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request, in bytes of keys, values and other payload (etcd's
    /// `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Largest number of compares, and of operations in each branch, of one txn (etcd's
    /// `--max-txn-ops`).
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: crate::DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
        }
    }
}

impl Limits {
    /// Checks `req` against every limit: its shape ([`check_shape`]), its payload bytes
    /// against `max_request_bytes` and a txn's compares and branches against `max_txn_ops`.
    ///
    /// # Errors
    ///
    /// `TooLarge` for a request over `max_request_bytes`, `InvalidArgument` naming the limit
    /// for anything else.
    pub fn check(&self, req: &Request) -> Result<(), Error> {
        check_shape(req)?;
        match req {
            Request::Txn(txn)
            | Request::Once(crate::OnceRequest {
                write: crate::OnceWrite::Txn(txn),
                ..
            }) => self.check_txn_ops(txn)?,
            _ => {}
        }
        let size = request_bytes(req);
        if size > self.max_request_bytes {
            return Err(Error::TooLarge {
                size: size as u64,
                limit: self.max_request_bytes as u64,
            });
        }
        Ok(())
    }

    /// Each txn of a nest against `max_txn_ops`, as etcd checks them.
    fn check_txn_ops(&self, txn: &TxnRequest) -> Result<(), Error> {
        let most = txn
            .compare
            .len()
            .max(txn.success.len())
            .max(txn.failure.len());
        if most > self.max_txn_ops {
            return Err(Error::InvalidArgument(format!(
                "too many operations in txn request: {most} exceeds --max-txn-ops {}",
                self.max_txn_ops
            )));
        }
        nested(txn).try_for_each(|t| self.check_txn_ops(t))
    }
}

/// The txns nested directly in `txn`'s branches.
fn nested(txn: &TxnRequest) -> impl Iterator<Item = &TxnRequest> {
    txn.success
        .iter()
        .chain(&txn.failure)
        .filter_map(|op| match op {
            RequestOp::Txn(t) => Some(t),
            _ => None,
        })
}

/// Checks the limits that hold whatever the node's flags (see the module doc). Apply calls
/// this too, so it must stay a pure function of the request.
///
/// # Errors
///
/// `InvalidArgument` naming the limit.
pub fn check_shape(req: &Request) -> Result<(), Error> {
    match req {
        Request::Range(r) => check_range(r),
        Request::Put(p) => check_put(p),
        Request::DeleteRange(d) => check_delete(d),
        Request::Txn(t) => check_txn(t, 1),
        Request::Watch(w) => check_watch(w),
        Request::LeaseGrant(g) => check_lease_grant(g),
        Request::MemberAdd(m) => check_member_add(m),
        Request::MemberUpdate(m) => check_name("peer address", &m.peer_addr),
        Request::PluginInstall(p) => check_plugin_install(p),
        Request::PluginRemove(r) => check_name("plugin name", &r.name),
        Request::PluginReset(r) => check_name("plugin name", &r.name),
        Request::Auth(a) => check_auth(a),
        Request::Compact(_)
        | Request::Status(_)
        | Request::MemberList(_)
        | Request::MemberPromote(_)
        | Request::MemberRemove(_)
        | Request::LeaseRevoke(_)
        | Request::LeaseKeepAlive(_)
        | Request::LeaseTimeToLive(_)
        | Request::LeaseLeases(_)
        | Request::PluginList(_)
        | Request::HashKv(_)
        | Request::Alarm(_)
        | Request::Defragment(_)
        | Request::Snapshot(_)
        | Request::MoveLeader(_) => Ok(()),
        Request::Once(once) => match &once.write {
            crate::OnceWrite::Txn(t) if t.is_read_only() => Err(Error::InvalidArgument(
                "a txn that only reads cannot be sent as a once request".into(),
            )),
            // The plain requests' checks.
            crate::OnceWrite::Put(p) => check_put(p),
            crate::OnceWrite::DeleteRange(d) => check_delete(d),
            crate::OnceWrite::Txn(t) => check_txn(t, 1),
        },
    }
}

/// [`check_shape`] of what a Raft entry carries: apply checks each mutation with it, so
/// that one no node should have admitted fails the same way everywhere.
///
/// # Errors
///
/// `InvalidArgument` naming the limit.
pub fn check_mutation(m: &Mutation) -> Result<(), Error> {
    match m {
        Mutation::Put(p) => check_put(p),
        Mutation::DeleteRange(d) => check_delete(d),
        Mutation::Txn(t) => check_txn(t, 1),
        Mutation::LeaseGrant(g) => check_lease_grant(g),
        Mutation::Auth(a) => check_auth(a),
        Mutation::Compact(_) | Mutation::LeaseRevoke(_) | Mutation::Alarm(_) => Ok(()),
    }
}

fn check_delete(d: &DeleteRangeRequest) -> Result<(), Error> {
    check_key("key", &d.key)?;
    check_key("range end", &d.range_end)
}

/// Refuses user and role names over [`MAX_NAME_BYTES`] and permission keys over
/// [`MAX_KEY_BYTES`].
fn check_auth(req: &crate::auth::AuthRequest) -> Result<(), Error> {
    use crate::auth::AuthRequest;
    for name in req.names() {
        check_name("user or role name", name)?;
    }
    match req {
        AuthRequest::RoleGrantPermission { permission: p, .. } => {
            check_key("permission key", &p.key)?;
            check_key("permission range end", &p.range_end)
        }
        AuthRequest::RoleRevokePermission { key, range_end, .. } => {
            check_key("permission key", key)?;
            check_key("permission range end", range_end)
        }
        _ => Ok(()),
    }
}

/// Refuses a key (or range end) longer than [`MAX_KEY_BYTES`]; `what` names it in the error.
///
/// # Errors
///
/// `InvalidArgument` with the key's length and the limit.
pub fn check_key(what: &str, key: &[u8]) -> Result<(), Error> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what} of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{what} of {} bytes exceeds the limit of {MAX_NAME_BYTES} bytes",
            name.len()
        )));
    }
    Ok(())
}

fn check_range(r: &RangeRequest) -> Result<(), Error> {
    check_key("key", &r.key)?;
    check_key("range end", &r.range_end)
}

fn check_compare(c: &Compare) -> Result<(), Error> {
    check_key("compare key", &c.key)?;
    check_key("compare range end", &c.range_end)
}

/// A put's key, and the fields `ignore_value`/`ignore_lease` leave empty (etcd's messages):
/// the shape check of a put.
///
/// # Errors
///
/// `InvalidArgument` naming what is wrong.
pub fn check_put(p: &PutRequest) -> Result<(), Error> {
    check_key("key", &p.key)?;
    if p.ignore_value && !p.value.is_empty() {
        return Err(Error::InvalidArgument("value is provided".into()));
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(Error::InvalidArgument("lease is provided".into()));
    }
    Ok(())
}

/// A txn at nesting `depth` (1 for the outermost).
fn check_txn(t: &TxnRequest, depth: usize) -> Result<(), Error> {
    if depth > MAX_TXN_DEPTH {
        return Err(Error::InvalidArgument(format!(
            "txns nested more than {MAX_TXN_DEPTH} deep"
        )));
    }
    t.compare.iter().try_for_each(check_compare)?;
    t.success
        .iter()
        .chain(&t.failure)
        .try_for_each(|op| match op {
            RequestOp::Range(r) => check_range(r),
            RequestOp::Put(p) => check_put(p),
            RequestOp::DeleteRange(d) => check_delete(d),
            RequestOp::Txn(t) => check_txn(t, depth + 1),
        })
}

/// Checks a watch's key and range end (a watch is served on its own stream, outside
/// [`Limits::check`]).
///
/// # Errors
///
/// `InvalidArgument` naming the limit.
pub fn check_watch(w: &WatchCreateRequest) -> Result<(), Error> {
    check_key("key", &w.key)?;
    check_key("range end", &w.range_end)
}

fn check_lease_grant(g: &LeaseGrantRequest) -> Result<(), Error> {
    if g.ttl > MAX_LEASE_TTL {
        return Err(Error::InvalidArgument(format!(
            "lease TTL of {} seconds exceeds the limit of {MAX_LEASE_TTL} seconds",
            g.ttl
        )));
    }
    Ok(())
}

fn check_member_add(m: &MemberAddRequest) -> Result<(), Error> {
    check_name("member name", &m.name)?;
    check_name("peer address", &m.peer_addr)
}

fn check_plugin_install(p: &PluginInstallRequest) -> Result<(), Error> {
    check_name("plugin name", &p.binding.name)?;
    check_key("plugin prefix", &p.binding.prefix)?;
    p.binding
        .config
        .iter()
        .try_for_each(|(name, _)| check_name("configuration name", name))
}

/// The payload bytes a request carries: keys, values, range ends, compare operands, a
/// plugin's component and configuration, and a fixed allowance per operation. This is what
/// `--max-request-bytes` bounds for requests that did not arrive as one frame (a reactor's
/// staged txn), and what bounds the size of a Raft entry.
pub fn request_bytes(req: &Request) -> usize {
    const PER_OP: usize = 16;
    match req {
        Request::Range(r) => PER_OP + r.key.len() + r.range_end.len(),
        Request::Put(p) => PER_OP + p.key.len() + p.value.len(),
        Request::DeleteRange(d) => PER_OP + d.key.len() + d.range_end.len(),
        Request::Txn(t) => txn_bytes(t),
        Request::Watch(w) => PER_OP + w.key.len() + w.range_end.len(),
        Request::MemberAdd(m) => PER_OP + m.name.len() + m.peer_addr.len(),
        Request::MemberUpdate(m) => PER_OP + m.peer_addr.len(),
        Request::PluginInstall(p) => {
            let config: usize = p
                .binding
                .config
                .iter()
                .map(|(k, v)| PER_OP + k.len() + v.len())
                .sum();
            PER_OP + p.wasm.len() + p.binding.name.len() + p.binding.prefix.len() + config
        }
        Request::PluginRemove(r) => PER_OP + r.name.len(),
        Request::PluginReset(r) => PER_OP + r.name.len(),
        Request::Auth(a) => auth_bytes(a),
        Request::Once(once) => match &once.write {
            crate::OnceWrite::Put(p) => PER_OP + p.key.len() + p.value.len(),
            crate::OnceWrite::DeleteRange(d) => PER_OP + d.key.len() + d.range_end.len(),
            crate::OnceWrite::Txn(t) => txn_bytes(t),
        },
        Request::Compact(_)
        | Request::Status(_)
        | Request::MemberList(_)
        | Request::MemberPromote(_)
        | Request::MemberRemove(_)
        | Request::LeaseGrant(_)
        | Request::LeaseRevoke(_)
        | Request::LeaseKeepAlive(_)
        | Request::LeaseTimeToLive(_)
        | Request::LeaseLeases(_)
        | Request::PluginList(_)
        | Request::HashKv(_)
        | Request::Alarm(_)
        | Request::Defragment(_)
        | Request::Snapshot(_)
        | Request::MoveLeader(_) => PER_OP,
    }
}

/// [`request_bytes`] of what a Raft entry carries.
pub fn mutation_bytes(m: &Mutation) -> usize {
    const PER_OP: usize = 16;
    match m {
        Mutation::Put(p) => PER_OP + p.key.len() + p.value.len(),
        Mutation::DeleteRange(d) => PER_OP + d.key.len() + d.range_end.len(),
        Mutation::Txn(t) => txn_bytes(t),
        Mutation::Auth(a) => auth_bytes(a),
        Mutation::Compact(_)
        | Mutation::LeaseGrant(_)
        | Mutation::LeaseRevoke(_)
        | Mutation::Alarm(_) => PER_OP,
    }
}

/// [`request_bytes`] of a change of users or roles.
fn auth_bytes(a: &crate::auth::AuthRequest) -> usize {
    const PER_OP: usize = 16;
    let names: usize = a.names().iter().map(|n| n.len()).sum();
    let keys = match a {
        crate::auth::AuthRequest::RoleGrantPermission { permission: p, .. } => {
            p.key.len() + p.range_end.len()
        }
        crate::auth::AuthRequest::RoleRevokePermission { key, range_end, .. } => {
            key.len() + range_end.len()
        }
        _ => 0,
    };
    PER_OP + names + keys
}

/// [`request_bytes`] of a txn.
fn txn_bytes(t: &TxnRequest) -> usize {
    const PER_OP: usize = 16;
    let compares: usize = t
        .compare
        .iter()
        .map(|c| {
            let operand = match &c.target {
                CompareTarget::Value(v) => v.len(),
                _ => 8,
            };
            PER_OP + c.key.len() + c.range_end.len() + operand
        })
        .sum();
    let ops: usize = t
        .success
        .iter()
        .chain(&t.failure)
        .map(|op| match op {
            RequestOp::Range(r) => PER_OP + r.key.len() + r.range_end.len(),
            RequestOp::Put(p) => PER_OP + p.key.len() + p.value.len(),
            RequestOp::DeleteRange(d) => PER_OP + d.key.len() + d.range_end.len(),
            RequestOp::Txn(t) => txn_bytes(t),
        })
        .sum();
    PER_OP + compares + ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{DeleteRangeRequest, PutRequest};

    fn put(key_len: usize, value_len: usize) -> Request {
        Request::Put(PutRequest {
            key: vec![0; key_len],
            value: vec![1; value_len],
            ..Default::default()
        })
    }

    #[test]
    fn a_key_at_the_limit_passes_and_one_byte_more_is_refused() {
        let limits = Limits::default();
        assert!(limits.check(&put(MAX_KEY_BYTES, 10)).is_ok());
        let err = limits
            .check(&put(MAX_KEY_BYTES + 1, 10))
            .expect_err("long key");
        assert_eq!(
            err.to_string(),
            "invalid argument: key of 8193 bytes exceeds the limit of 8192 bytes"
        );
        // The 70,000-byte key of the poison-pill report.
        assert!(check_shape(&put(70_000, 1)).is_err());
    }

    #[test]
    fn every_key_of_a_txn_is_checked() {
        let long = vec![b'k'; MAX_KEY_BYTES + 1];
        let txn = |op: RequestOp| {
            Request::Txn(TxnRequest {
                success: vec![op],
                ..Default::default()
            })
        };
        let delete = RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: long.clone(),
            prev_kv: false,
        });
        assert!(check_shape(&txn(delete)).is_err());
        let range = RequestOp::Range(RangeRequest {
            key: long.clone(),
            ..Default::default()
        });
        assert!(check_shape(&txn(range)).is_err());
        let compare = Request::Txn(TxnRequest {
            compare: vec![Compare {
                key: long,
                range_end: Vec::new(),
                result: crate::CompareResult::Equal,
                target: CompareTarget::Version(1),
            }],
            ..Default::default()
        });
        assert!(check_shape(&compare).is_err());
    }

    #[test]
    fn request_bytes_and_txn_ops_are_bounded() {
        let limits = Limits {
            max_request_bytes: 1000,
            max_txn_ops: 2,
        };
        assert!(matches!(
            limits.check(&put(10, 2000)),
            Err(Error::TooLarge { limit: 1000, .. })
        ));
        let op = RequestOp::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        let txn = Request::Txn(TxnRequest {
            success: vec![op.clone(); 3],
            ..Default::default()
        });
        let err = limits.check(&txn).expect_err("too many ops");
        assert!(
            err.to_string()
                .contains("too many operations in txn request")
        );
        let txn = Request::Txn(TxnRequest {
            success: vec![op.clone(); 2],
            failure: vec![op; 2],
            ..Default::default()
        });
        assert!(limits.check(&txn).is_ok());
    }

    /// A once request is held to its write's limits, and only a write can be one.
    #[test]
    fn a_once_request_meets_its_writes_limits() {
        use crate::{OnceRequest, OnceWrite};
        let limits = Limits {
            max_request_bytes: 1000,
            max_txn_ops: 2,
        };
        let once = |write| {
            Request::Once(OnceRequest {
                client: 1,
                seq: 1,
                write,
            })
        };
        let Request::Put(big) = put(10, 2000) else {
            panic!("put() makes a put");
        };
        match limits.check(&once(OnceWrite::Put(big))) {
            Err(Error::TooLarge { limit: 1000, .. }) => {}
            other => panic!("an oversized once put: {other:?}"),
        }
        let long_key = PutRequest {
            key: vec![b'k'; MAX_KEY_BYTES + 1],
            ..Default::default()
        };
        match check_shape(&once(OnceWrite::Put(long_key))) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("a once put with a long key: {other:?}"),
        }
        let op = RequestOp::Put(PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        let many = TxnRequest {
            success: vec![op; 3],
            ..Default::default()
        };
        match limits.check(&once(OnceWrite::Txn(many))) {
            Err(e) => assert!(e.to_string().contains("too many operations"), "{e}"),
            Ok(()) => panic!("a once txn over --max-txn-ops passed"),
        }
        match check_shape(&once(OnceWrite::Txn(TxnRequest::default()))) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("only reads"), "{why}"),
            other => panic!("a read-only once txn: {other:?}"),
        }
    }

    #[test]
    fn lease_ttl_and_names_are_bounded() {
        let grant = |ttl, id| Request::LeaseGrant(LeaseGrantRequest { ttl, id });
        assert!(check_shape(&grant(MAX_LEASE_TTL, 0)).is_ok());
        assert!(check_shape(&grant(i64::MAX, 0)).is_err());
        let add = Request::MemberAdd(MemberAddRequest {
            name: "n".repeat(MAX_NAME_BYTES + 1),
            ..Default::default()
        });
        assert!(check_shape(&add).is_err());
    }
}
