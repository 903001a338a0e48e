//! What each request needs (etcd's rules, plus etch's own), checked against a user's roles.
//!
//! - Range and Watch: read on the whole range. Put and DeleteRange: write (and read when
//!   they return `prev_kv`). Txn: read on every compare's range, and what every op of both
//!   branches needs.
//! - Lease grant, keep-alive and listing: open. Revoke: write on every attached key.
//!   Time-to-live with keys: read on every attached key.
//! - Status, member list and auth status: open.
//! - Compaction, membership changes, plugin install, list and remove, HashKV, and every
//!   change or listing of users and roles: root only.

use etch_proto::auth::{AuthRequest, ROOT};
use etch_proto::{DeleteRangeRequest, Error, LeaseId, PutRequest, Request, RequestOp, TxnRequest};

use super::AuthState;
use super::range::{Interval, covers};

/// What a request needs on a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Checks that `user` may make `request` under `state`. `lease_keys` lists the keys
/// attached to a lease (for revoke and time-to-live).
///
/// # Errors
///
/// `PermissionDenied` naming the user and what it may not do; `lease_keys`'s failure.
pub fn authorize(
    state: &AuthState,
    user: &str,
    request: &Request,
    lease_keys: &dyn Fn(LeaseId) -> Result<Vec<Vec<u8>>, Error>,
) -> Result<(), Error> {
    if state.is_root(user) {
        return Ok(());
    }
    let may = |access, key: &[u8], end: &[u8]| permits(state, user, access, key, end);
    let need = |access, key: &[u8], end: &[u8]| {
        if may(access, key, end) {
            Ok(())
        } else {
            Err(denied(
                user,
                &format!("{} {}", verb(access), describe(key, end)),
            ))
        }
    };
    let root_only = |what: &str| Err(denied(user, &format!("{what} (root only)")));
    match request {
        Request::Range(r) => need(Access::Read, &r.key, &r.range_end),
        Request::Watch(w) => need(Access::Read, &w.key, &w.range_end),
        Request::Put(p) => put_needs(&need, p),
        Request::DeleteRange(d) => delete_needs(&need, d),
        Request::Txn(t) => txn_needs(&need, t),
        Request::LeaseRevoke(r) => {
            for key in lease_keys(r.id)? {
                if !may(Access::Write, &key, &[]) {
                    return Err(denied(
                        user,
                        &format!("revoke lease {:x}: it holds {}", r.id, describe(&key, &[])),
                    ));
                }
            }
            Ok(())
        }
        Request::LeaseTimeToLive(t) if t.keys => {
            for key in lease_keys(t.id)? {
                need(Access::Read, &key, &[])?;
            }
            Ok(())
        }
        Request::LeaseGrant(_)
        | Request::LeaseKeepAlive(_)
        | Request::LeaseTimeToLive(_)
        | Request::LeaseLeases(_)
        | Request::Status(_)
        | Request::MemberList(_)
        | Request::Auth(AuthRequest::Status) => Ok(()),
        Request::Compact(_) => root_only("compact"),
        Request::MemberAdd(_)
        | Request::MemberPromote(_)
        | Request::MemberRemove(_)
        | Request::MemberUpdate(_) => root_only("change the membership"),
        Request::PluginInstall(_) => root_only("install plugins"),
        Request::PluginList(_) => root_only("list plugins"),
        Request::PluginRemove(_) => root_only("remove plugins"),
        Request::PluginReset(_) => root_only("reset plugins"),
        Request::HashKv(_) => root_only("hash the key space"),
        Request::Alarm(_) => root_only("manage alarms"),
        Request::Defragment(_) => root_only("defragment"),
        Request::Snapshot(_) => root_only("save a snapshot"),
        Request::MoveLeader(_) => root_only("move the leadership"),
        Request::Once(once) => authorize(state, user, &once.write.to_request(), lease_keys),
        Request::Auth(AuthRequest::Disable) => root_only("disable authorization"),
        Request::Auth(_) => root_only("manage users and roles"),
    }
}

/// Whether `user`'s roles grant `access` on all of `[key, range_end)`.
/// What checks a key or range against the user's rights (`authorize`'s `need`).
type Need<'a> = dyn Fn(Access, &[u8], &[u8]) -> Result<(), Error> + 'a;

/// A put writes its key, and reads it with `prev_kv`.
fn put_needs(need: &Need<'_>, p: &PutRequest) -> Result<(), Error> {
    need(Access::Write, &p.key, &[])?;
    if p.prev_kv {
        need(Access::Read, &p.key, &[])?;
    }
    Ok(())
}

/// A delete writes its range, and reads it with `prev_kv`.
fn delete_needs(need: &Need<'_>, d: &DeleteRangeRequest) -> Result<(), Error> {
    need(Access::Write, &d.key, &d.range_end)?;
    if d.prev_kv {
        need(Access::Read, &d.key, &d.range_end)?;
    }
    Ok(())
}

/// A txn reads what it compares, and needs what every op of both branches needs, nested
/// txns included (checked in place, nothing copied).
fn txn_needs(need: &Need<'_>, t: &TxnRequest) -> Result<(), Error> {
    for c in &t.compare {
        need(Access::Read, &c.key, &c.range_end)?;
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => need(Access::Read, &r.key, &r.range_end)?,
            RequestOp::Put(p) => put_needs(need, p)?,
            RequestOp::DeleteRange(d) => delete_needs(need, d)?,
            RequestOp::Txn(inner) => txn_needs(need, inner)?,
        }
    }
    Ok(())
}

fn permits(state: &AuthState, user: &str, access: Access, key: &[u8], end: &[u8]) -> bool {
    let Some(wanted) = Interval::new(key, end) else {
        return true; // an empty range touches nothing
    };
    let granted = (state.permissions_of(user))
        .filter(|p| match access {
            Access::Read => p.perm_type.reads(),
            Access::Write => p.perm_type.writes(),
        })
        .filter_map(|p| Interval::new(&p.key, &p.range_end))
        .collect();
    covers(granted, &wanted)
}

/// `PermissionDenied`: "user NAME may not WHAT".
pub fn denied(user: &str, what: &str) -> Error {
    let user = if user.is_empty() { "(none)" } else { user };
    let who = if user == ROOT { "root" } else { user };
    Error::PermissionDenied(format!("user {} may not {what}", escape(who)))
}

/// A user name as written in messages: as it is when plain, else quoted and escaped.
fn escape(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

fn verb(access: Access) -> &'static str {
    match access {
        Access::Read => "read",
        Access::Write => "write",
    }
}

/// A key or range as messages show it: `"/k"`, `["/a", "/b")`, `["/a", end of keys)`.
pub(super) fn describe(key: &[u8], end: &[u8]) -> String {
    let show = |b: &[u8]| format!("{:?}", String::from_utf8_lossy(b));
    match end {
        [] => show(key),
        [0] if key == [0] => "every key".to_owned(),
        [0] => format!("[{}, end of keys)", show(key)),
        end => format!("[{}, {})", show(key), show(end)),
    }
}
