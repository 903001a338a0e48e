//! The wire layouts of the requests that grew fields since the first release.
//!
//! Frames (and Raft log entries) are postcard, which is not self-describing: a struct is
//! its fields in order, an enum its variant's index then its fields. A field added to
//! [`RangeRequest`] or [`PutRequest`] would make every frame of an older peer or client
//! unreadable, and every log entry an older release wrote. So the first release's layouts
//! stay as they were, and a request that needs the new fields travels as a variant appended
//! to its enum:
//!
//! - a range with no sort and no revision filter, and a put with neither `ignore_value` nor
//!   `ignore_lease`, are written in the first layout (an older peer reads them);
//! - one that uses them is written as `Range2`/`Put2` (an older peer refuses the frame as
//!   malformed, rather than misreading it);
//! - both layouts are read.
//!
//! [`Request`], [`RequestOp`] and [`OnceWrite`] therefore implement serde by hand, through
//! the mirror enums below; every variant keeps its index. Nested txns are bounded in depth
//! while they are read ([`MAX_TXN_DEPTH`]), so that no frame makes a reader recurse without
//! bound.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::{ByteBuf, Bytes};

use crate::limits::MAX_TXN_DEPTH;
use crate::message::*;

/// A range in the first layout: key, range end, limit, revision, keys only, count only,
/// serializable.
type RangeFirst = (ByteBuf, ByteBuf, i64, i64, bool, bool, bool);
type RangeFirstRef<'a> = (&'a Bytes, &'a Bytes, i64, i64, bool, bool, bool);
/// A put in the first layout: key, value, lease, prev kv.
type PutFirst = (ByteBuf, ByteBuf, i64, bool);
type PutFirstRef<'a> = (&'a Bytes, &'a Bytes, i64, bool);

fn range_first(r: &RangeRequest) -> RangeFirstRef<'_> {
    (
        Bytes::new(&r.key),
        Bytes::new(&r.range_end),
        r.limit,
        r.revision,
        r.keys_only,
        r.count_only,
        r.serializable,
    )
}

fn range_from_first(r: RangeFirst) -> RangeRequest {
    let (key, range_end, limit, revision, keys_only, count_only, serializable) = r;
    RangeRequest {
        key: key.into_vec(),
        range_end: range_end.into_vec(),
        limit,
        revision,
        keys_only,
        count_only,
        serializable,
        ..RangeRequest::default()
    }
}

fn put_first(p: &PutRequest) -> PutFirstRef<'_> {
    (Bytes::new(&p.key), Bytes::new(&p.value), p.lease, p.prev_kv)
}

fn put_from_first(p: PutFirst) -> PutRequest {
    let (key, value, lease, prev_kv) = p;
    PutRequest {
        key: key.into_vec(),
        value: value.into_vec(),
        lease,
        prev_kv,
        ..PutRequest::default()
    }
}

/// [`Request`] as written: variant for variant, then the appended layouts.
#[derive(Serialize)]
enum RequestOut<'a> {
    Range(RangeFirstRef<'a>),
    Put(PutFirstRef<'a>),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Compact(&'a CompactRequest),
    Status(&'a StatusRequest),
    MemberList(&'a MemberListRequest),
    MemberAdd(&'a MemberAddRequest),
    MemberPromote(&'a MemberPromoteRequest),
    MemberRemove(&'a MemberRemoveRequest),
    Watch(&'a crate::watch::WatchCreateRequest),
    LeaseGrant(&'a crate::lease::LeaseGrantRequest),
    LeaseRevoke(&'a crate::lease::LeaseRevokeRequest),
    LeaseKeepAlive(&'a crate::lease::LeaseKeepAliveRequest),
    LeaseTimeToLive(&'a crate::lease::LeaseTimeToLiveRequest),
    LeaseLeases(&'a crate::lease::LeaseLeasesRequest),
    PluginInstall(&'a crate::plugin::PluginInstallRequest),
    PluginList(&'a crate::plugin::PluginListRequest),
    PluginRemove(&'a crate::plugin::PluginRemoveRequest),
    HashKv(&'a HashKvRequest),
    Auth(&'a crate::auth::AuthRequest),
    Alarm(&'a crate::alarm::AlarmRequest),
    Defragment(&'a crate::alarm::DefragmentRequest),
    Snapshot(&'a crate::alarm::SnapshotRequest),
    MoveLeader(&'a crate::alarm::MoveLeaderRequest),
    Once(&'a OnceRequest),
    PluginReset(&'a crate::plugin::PluginResetRequest),
    Range2(&'a RangeRequest),
    Put2(&'a PutRequest),
    MemberUpdate(&'a MemberUpdateRequest),
}

/// [`Request`] as read (see [`RequestOut`]).
#[derive(Deserialize)]
enum RequestIn {
    Range(RangeFirst),
    Put(PutFirst),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
    Status(StatusRequest),
    MemberList(MemberListRequest),
    MemberAdd(MemberAddRequest),
    MemberPromote(MemberPromoteRequest),
    MemberRemove(MemberRemoveRequest),
    Watch(crate::watch::WatchCreateRequest),
    LeaseGrant(crate::lease::LeaseGrantRequest),
    LeaseRevoke(crate::lease::LeaseRevokeRequest),
    LeaseKeepAlive(crate::lease::LeaseKeepAliveRequest),
    LeaseTimeToLive(crate::lease::LeaseTimeToLiveRequest),
    LeaseLeases(crate::lease::LeaseLeasesRequest),
    PluginInstall(crate::plugin::PluginInstallRequest),
    PluginList(crate::plugin::PluginListRequest),
    PluginRemove(crate::plugin::PluginRemoveRequest),
    HashKv(HashKvRequest),
    Auth(crate::auth::AuthRequest),
    Alarm(crate::alarm::AlarmRequest),
    Defragment(crate::alarm::DefragmentRequest),
    Snapshot(crate::alarm::SnapshotRequest),
    MoveLeader(crate::alarm::MoveLeaderRequest),
    Once(OnceRequest),
    PluginReset(crate::plugin::PluginResetRequest),
    Range2(RangeRequest),
    Put2(PutRequest),
    MemberUpdate(MemberUpdateRequest),
}

impl Serialize for Request {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let out = match self {
            Request::Range(r) if r.is_first_layout() => RequestOut::Range(range_first(r)),
            Request::Range(r) => RequestOut::Range2(r),
            Request::Put(p) if p.is_first_layout() => RequestOut::Put(put_first(p)),
            Request::Put(p) => RequestOut::Put2(p),
            Request::DeleteRange(r) => RequestOut::DeleteRange(r),
            Request::Txn(r) => RequestOut::Txn(r),
            Request::Compact(r) => RequestOut::Compact(r),
            Request::Status(r) => RequestOut::Status(r),
            Request::MemberList(r) => RequestOut::MemberList(r),
            Request::MemberAdd(r) => RequestOut::MemberAdd(r),
            Request::MemberPromote(r) => RequestOut::MemberPromote(r),
            Request::MemberRemove(r) => RequestOut::MemberRemove(r),
            Request::Watch(r) => RequestOut::Watch(r),
            Request::LeaseGrant(r) => RequestOut::LeaseGrant(r),
            Request::LeaseRevoke(r) => RequestOut::LeaseRevoke(r),
            Request::LeaseKeepAlive(r) => RequestOut::LeaseKeepAlive(r),
            Request::LeaseTimeToLive(r) => RequestOut::LeaseTimeToLive(r),
            Request::LeaseLeases(r) => RequestOut::LeaseLeases(r),
            Request::PluginInstall(r) => RequestOut::PluginInstall(r),
            Request::PluginList(r) => RequestOut::PluginList(r),
            Request::PluginRemove(r) => RequestOut::PluginRemove(r),
            Request::HashKv(r) => RequestOut::HashKv(r),
            Request::Auth(r) => RequestOut::Auth(r),
            Request::Alarm(r) => RequestOut::Alarm(r),
            Request::Defragment(r) => RequestOut::Defragment(r),
            Request::Snapshot(r) => RequestOut::Snapshot(r),
            Request::MoveLeader(r) => RequestOut::MoveLeader(r),
            Request::Once(r) => RequestOut::Once(r),
            Request::PluginReset(r) => RequestOut::PluginReset(r),
            Request::MemberUpdate(r) => RequestOut::MemberUpdate(r),
        };
        out.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match RequestIn::deserialize(deserializer)? {
            RequestIn::Range(r) => Request::Range(range_from_first(r)),
            RequestIn::Range2(r) => Request::Range(r),
            RequestIn::Put(p) => Request::Put(put_from_first(p)),
            RequestIn::Put2(p) => Request::Put(p),
            RequestIn::DeleteRange(r) => Request::DeleteRange(r),
            RequestIn::Txn(r) => Request::Txn(r),
            RequestIn::Compact(r) => Request::Compact(r),
            RequestIn::Status(r) => Request::Status(r),
            RequestIn::MemberList(r) => Request::MemberList(r),
            RequestIn::MemberAdd(r) => Request::MemberAdd(r),
            RequestIn::MemberPromote(r) => Request::MemberPromote(r),
            RequestIn::MemberRemove(r) => Request::MemberRemove(r),
            RequestIn::Watch(r) => Request::Watch(r),
            RequestIn::LeaseGrant(r) => Request::LeaseGrant(r),
            RequestIn::LeaseRevoke(r) => Request::LeaseRevoke(r),
            RequestIn::LeaseKeepAlive(r) => Request::LeaseKeepAlive(r),
            RequestIn::LeaseTimeToLive(r) => Request::LeaseTimeToLive(r),
            RequestIn::LeaseLeases(r) => Request::LeaseLeases(r),
            RequestIn::PluginInstall(r) => Request::PluginInstall(r),
            RequestIn::PluginList(r) => Request::PluginList(r),
            RequestIn::PluginRemove(r) => Request::PluginRemove(r),
            RequestIn::HashKv(r) => Request::HashKv(r),
            RequestIn::Auth(r) => Request::Auth(r),
            RequestIn::Alarm(r) => Request::Alarm(r),
            RequestIn::Defragment(r) => Request::Defragment(r),
            RequestIn::Snapshot(r) => Request::Snapshot(r),
            RequestIn::MoveLeader(r) => Request::MoveLeader(r),
            RequestIn::Once(r) => Request::Once(r),
            RequestIn::PluginReset(r) => Request::PluginReset(r),
            RequestIn::MemberUpdate(r) => Request::MemberUpdate(r),
        })
    }
}

/// [`RequestOp`] as written: the first three variants, then the appended ones.
#[derive(Serialize)]
enum OpOut<'a> {
    Range(RangeFirstRef<'a>),
    Put(PutFirstRef<'a>),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Range2(&'a RangeRequest),
    Put2(&'a PutRequest),
}

#[derive(Deserialize)]
enum OpIn {
    Range(RangeFirst),
    Put(PutFirst),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Range2(RangeRequest),
    Put2(PutRequest),
}

impl Serialize for RequestOp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestOp::Range(r) if r.is_first_layout() => OpOut::Range(range_first(r)),
            RequestOp::Range(r) => OpOut::Range2(r),
            RequestOp::Put(p) if p.is_first_layout() => OpOut::Put(put_first(p)),
            RequestOp::Put(p) => OpOut::Put2(p),
            RequestOp::DeleteRange(d) => OpOut::DeleteRange(d),
            RequestOp::Txn(t) => OpOut::Txn(t),
        }
        .serialize(serializer)
    }
}

thread_local! {
    /// How many [`RequestOp`]s are being read on this thread, one inside the other.
    static OP_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Counts one level of [`RequestOp`] nesting while it is read.
struct Nesting;

impl Nesting {
    fn enter<E: serde::de::Error>() -> Result<Nesting, E> {
        let depth = OP_DEPTH.with(|d| {
            let depth = d.get() + 1;
            d.set(depth);
            depth
        });
        let nesting = Nesting;
        if depth > MAX_TXN_DEPTH {
            return Err(E::custom(format_args!(
                "txns nested more than {MAX_TXN_DEPTH} deep"
            )));
        }
        Ok(nesting)
    }
}

impl Drop for Nesting {
    fn drop(&mut self) {
        OP_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

impl<'de> Deserialize<'de> for RequestOp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let _nesting = Nesting::enter()?;
        Ok(match OpIn::deserialize(deserializer)? {
            OpIn::Range(r) => RequestOp::Range(range_from_first(r)),
            OpIn::Range2(r) => RequestOp::Range(r),
            OpIn::Put(p) => RequestOp::Put(put_from_first(p)),
            OpIn::Put2(p) => RequestOp::Put(p),
            OpIn::DeleteRange(d) => RequestOp::DeleteRange(d),
            OpIn::Txn(t) => RequestOp::Txn(t),
        })
    }
}

impl Serialize for Mutation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Mutation::Put(p) if p.is_first_layout() => RequestOut::Put(put_first(p)),
            Mutation::Put(p) => RequestOut::Put2(p),
            Mutation::DeleteRange(d) => RequestOut::DeleteRange(d),
            Mutation::Txn(t) => RequestOut::Txn(t),
            Mutation::Compact(c) => RequestOut::Compact(c),
            Mutation::LeaseGrant(g) => RequestOut::LeaseGrant(g),
            Mutation::LeaseRevoke(r) => RequestOut::LeaseRevoke(r),
            Mutation::Auth(a) => RequestOut::Auth(a),
            Mutation::Alarm(a) => RequestOut::Alarm(a),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Mutation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Mutation::from_request(Request::deserialize(deserializer)?).map_err(|request| {
            serde::de::Error::custom(format_args!(
                "a log entry holds a {} request, which is not applied through the log",
                request.method().1
            ))
        })
    }
}

#[derive(Serialize)]
enum OnceOut<'a> {
    Put(PutFirstRef<'a>),
    DeleteRange(&'a DeleteRangeRequest),
    Txn(&'a TxnRequest),
    Put2(&'a PutRequest),
}

#[derive(Deserialize)]
enum OnceIn {
    Put(PutFirst),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Put2(PutRequest),
}

impl Serialize for OnceWrite {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OnceWrite::Put(p) if p.is_first_layout() => OnceOut::Put(put_first(p)),
            OnceWrite::Put(p) => OnceOut::Put2(p),
            OnceWrite::DeleteRange(d) => OnceOut::DeleteRange(d),
            OnceWrite::Txn(t) => OnceOut::Txn(t),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for OnceWrite {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match OnceIn::deserialize(deserializer)? {
            OnceIn::Put(p) => OnceWrite::Put(put_from_first(p)),
            OnceIn::Put2(p) => OnceWrite::Put(p),
            OnceIn::DeleteRange(d) => OnceWrite::DeleteRange(d),
            OnceIn::Txn(t) => OnceWrite::Txn(t),
        })
    }
}

#[cfg(test)]
#[path = "layout_test.rs"]
mod tests;
