//! Requests and responses, modelled on etcd's `etcdserverpb` KV service.
//!
//! A client opens one QUIC bidirectional stream per request, writes one [`Request`] frame
//! and finishes its side; the node answers with one `Result<Response, Error>` frame.
//! New variants are only ever appended, so postcard's variant indices stay stable.

use serde::{Deserialize, Serialize};

use crate::types::{KeyValue, LeaseId, NodeId, Revision};

/// Everything a client can ask of a node.
///
/// Its wire layout is written out in [`crate::layout`]: a range or a put that uses none of
/// the fields added since the first release travels in that release's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactRequest),
    Status(StatusRequest),
    MemberList(MemberListRequest),
    MemberAdd(MemberAddRequest),
    MemberPromote(MemberPromoteRequest),
    MemberRemove(MemberRemoveRequest),
    /// Opens a watch: the stream stays open and carries [`WatchResponse`]s; see [`crate::watch`].
    Watch(crate::watch::WatchCreateRequest),
    LeaseGrant(crate::lease::LeaseGrantRequest),
    LeaseRevoke(crate::lease::LeaseRevokeRequest),
    /// Opens a keep-alive stream: the client sends more [`crate::lease::LeaseKeepAliveRequest`]
    /// frames on it and gets one [`crate::lease::LeaseKeepAliveResponse`] for each.
    LeaseKeepAlive(crate::lease::LeaseKeepAliveRequest),
    LeaseTimeToLive(crate::lease::LeaseTimeToLiveRequest),
    LeaseLeases(crate::lease::LeaseLeasesRequest),
    PluginInstall(crate::plugin::PluginInstallRequest),
    PluginList(crate::plugin::PluginListRequest),
    PluginRemove(crate::plugin::PluginRemoveRequest),
    /// A hash of the node's key history, answered by the node asked (no Raft round), as
    /// etcd's maintenance `HashKV`: members at the same revision must agree.
    HashKv(HashKvRequest),
    /// Users, roles, permissions and the enabled flag (see [`crate::auth`]).
    Auth(crate::auth::AuthRequest),
    /// Lists, raises or clears alarms (see [`crate::alarm`]).
    Alarm(crate::alarm::AlarmRequest),
    /// Compacts the storage files of the node asked (not replicated).
    Defragment(crate::alarm::DefragmentRequest),
    /// Opens a backup stream: see [`crate::alarm::SnapshotRequest`].
    Snapshot(crate::alarm::SnapshotRequest),
    MoveLeader(crate::alarm::MoveLeaderRequest),
    /// A put, delete or writing txn that its client may send again after losing the
    /// answer: applied at most once per `(client, seq)`, a second time answered with what
    /// the first got. The answer is the inner request's.
    Once(OnceRequest),
    /// Moves a reactor's checkpoint (root only): see [`crate::plugin::PluginResetRequest`].
    PluginReset(crate::plugin::PluginResetRequest),
    /// Changes where a member's peer endpoint listens (etcd's `MemberUpdate`).
    MemberUpdate(MemberUpdateRequest),
}

/// A change to the replicated state, as a Raft log entry carries it: the requests that are
/// applied through the log, and only those. A range, a watch or a status cannot be put in
/// the log: there is no variant for them.
///
/// Its wire layout is these requests' own as a [`Request`] (same variant indices, see
/// [`crate::layout`]), so that the entries of releases that logged whole requests read as
/// mutations; an entry holding any other request is refused as malformed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    /// A txn; one that only reads goes through the log too, to be linearizable.
    Txn(TxnRequest),
    Compact(CompactRequest),
    /// A grant, with the id the leader chose.
    LeaseGrant(crate::lease::LeaseGrantRequest),
    LeaseRevoke(crate::lease::LeaseRevokeRequest),
    /// A change of users, roles or the enabled flag (never a read).
    Auth(crate::auth::AuthRequest),
    /// Raises or clears an alarm (never a list).
    Alarm(crate::alarm::AlarmRequest),
}

impl Mutation {
    /// `request` as a mutation, or `request` back when it is not applied through the log.
    ///
    /// # Errors
    ///
    /// `request` is a read, a stream, a membership or plugin request, or a once request.
    #[expect(
        clippy::result_large_err,
        reason = "the error hands the request back whole, to be served another way"
    )]
    pub fn from_request(request: Request) -> Result<Mutation, Request> {
        match request {
            Request::Put(p) => Ok(Mutation::Put(p)),
            Request::DeleteRange(d) => Ok(Mutation::DeleteRange(d)),
            Request::Txn(t) => Ok(Mutation::Txn(t)),
            Request::Compact(c) => Ok(Mutation::Compact(c)),
            Request::LeaseGrant(g) => Ok(Mutation::LeaseGrant(g)),
            Request::LeaseRevoke(r) => Ok(Mutation::LeaseRevoke(r)),
            Request::Auth(a) if a.is_write() => Ok(Mutation::Auth(a)),
            Request::Alarm(a) if a.action != crate::alarm::AlarmAction::Get => {
                Ok(Mutation::Alarm(a))
            }
            other => Err(other),
        }
    }

    /// The mutation as the request a client would send.
    pub fn into_request(self) -> Request {
        match self {
            Mutation::Put(p) => Request::Put(p),
            Mutation::DeleteRange(d) => Request::DeleteRange(d),
            Mutation::Txn(t) => Request::Txn(t),
            Mutation::Compact(c) => Request::Compact(c),
            Mutation::LeaseGrant(g) => Request::LeaseGrant(g),
            Mutation::LeaseRevoke(r) => Request::LeaseRevoke(r),
            Mutation::Auth(a) => Request::Auth(a),
            Mutation::Alarm(a) => Request::Alarm(a),
        }
    }

    /// A short name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Mutation::Put(_) => "put",
            Mutation::DeleteRange(_) => "delete-range",
            Mutation::Txn(_) => "txn",
            Mutation::Compact(_) => "compact",
            Mutation::LeaseGrant(_) => "lease-grant",
            Mutation::LeaseRevoke(_) => "lease-revoke",
            Mutation::Auth(_) => "auth",
            Mutation::Alarm(_) => "alarm",
        }
    }
}

/// A write named by its client (see [`Request::Once`]). An SDK client picks a random
/// `client` and numbers its writes from 1; the node keeps the outcomes of each client's
/// newest 1024 writes, and forgets a client not seen for a while. The write is a type of
/// its own, not a [`Request`], so that a once request cannot nest (a decoder never recurses
/// on what a client sends).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnceRequest {
    pub client: u64,
    pub seq: u64,
    pub write: OnceWrite,
}

/// The writes a client can name (wire layout in [`crate::layout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnceWrite {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    /// A txn; one that only reads is refused.
    Txn(TxnRequest),
}

impl OnceWrite {
    /// The write as a plain request.
    pub fn into_request(self) -> Request {
        match self {
            OnceWrite::Put(p) => Request::Put(p),
            OnceWrite::DeleteRange(d) => Request::DeleteRange(d),
            OnceWrite::Txn(t) => Request::Txn(t),
        }
    }

    /// The write as a plain request, copied.
    pub fn to_request(&self) -> Request {
        self.clone().into_request()
    }

    /// `request` as a write a client can name, or `request` back.
    ///
    /// # Errors
    ///
    /// `request` is not a put, a delete or a txn that writes.
    #[expect(
        clippy::result_large_err,
        reason = "the error hands the request back whole, to be sent as it is"
    )]
    pub fn from_request(request: Request) -> Result<OnceWrite, Request> {
        match request {
            Request::Put(p) => Ok(OnceWrite::Put(p)),
            Request::DeleteRange(d) => Ok(OnceWrite::DeleteRange(d)),
            Request::Txn(t) if !t.is_read_only() => Ok(OnceWrite::Txn(t)),
            other => Err(other),
        }
    }
}

impl Request {
    /// Whether this request changes state and so must go through the Raft log.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Range(_)
            | Request::Status(_)
            | Request::MemberList(_)
            | Request::Watch(_)
            | Request::LeaseTimeToLive(_)
            | Request::LeaseLeases(_)
            | Request::PluginList(_)
            | Request::HashKv(_)
            | Request::Defragment(_)
            | Request::Snapshot(_) => false,
            Request::Alarm(alarm) => alarm.action != crate::alarm::AlarmAction::Get,
            Request::LeaseGrant(_) | Request::LeaseRevoke(_) | Request::LeaseKeepAlive(_) => true,
            Request::PluginInstall(_) | Request::PluginRemove(_) | Request::PluginReset(_) => true,
            // Not a Raft write, but it must not be sent twice blindly either.
            Request::MoveLeader(_) => true,
            Request::Put(_)
            | Request::DeleteRange(_)
            | Request::Compact(_)
            | Request::MemberAdd(_)
            | Request::MemberPromote(_)
            | Request::MemberRemove(_)
            | Request::MemberUpdate(_) => true,
            Request::Txn(txn) => !txn.is_read_only(),
            Request::Auth(auth) => auth.is_write(),
            Request::Once(_) => true,
        }
    }

    /// The gRPC service and method of etcd's v3 API that this request is (etch's own
    /// `etchserverpb.Plugin` for plugins): the labels of the node's request metrics, as
    /// etcd's dashboards know them.
    pub fn method(&self) -> (&'static str, &'static str) {
        const KV: &str = "etcdserverpb.KV";
        const CLUSTER: &str = "etcdserverpb.Cluster";
        const LEASE: &str = "etcdserverpb.Lease";
        const MAINTENANCE: &str = "etcdserverpb.Maintenance";
        const PLUGIN: &str = "etchserverpb.Plugin";
        match self {
            Request::Range(_) => (KV, "Range"),
            Request::Put(_) => (KV, "Put"),
            Request::DeleteRange(_) => (KV, "DeleteRange"),
            Request::Txn(_) => (KV, "Txn"),
            Request::Compact(_) => (KV, "Compact"),
            Request::Status(_) => (MAINTENANCE, "Status"),
            Request::HashKv(_) => (MAINTENANCE, "HashKV"),
            Request::MemberList(_) => (CLUSTER, "MemberList"),
            Request::MemberAdd(_) => (CLUSTER, "MemberAdd"),
            Request::MemberPromote(_) => (CLUSTER, "MemberPromote"),
            Request::MemberRemove(_) => (CLUSTER, "MemberRemove"),
            Request::MemberUpdate(_) => (CLUSTER, "MemberUpdate"),
            Request::Watch(_) => ("etcdserverpb.Watch", "Watch"),
            Request::LeaseGrant(_) => (LEASE, "LeaseGrant"),
            Request::LeaseRevoke(_) => (LEASE, "LeaseRevoke"),
            Request::LeaseKeepAlive(_) => (LEASE, "LeaseKeepAlive"),
            Request::LeaseTimeToLive(_) => (LEASE, "LeaseTimeToLive"),
            Request::LeaseLeases(_) => (LEASE, "LeaseLeases"),
            Request::PluginInstall(_) => (PLUGIN, "Install"),
            Request::PluginList(_) => (PLUGIN, "List"),
            Request::PluginRemove(_) => (PLUGIN, "Remove"),
            Request::PluginReset(_) => (PLUGIN, "Reset"),
            Request::Auth(auth) => ("etcdserverpb.Auth", auth.method()),
            Request::Alarm(_) => (MAINTENANCE, "Alarm"),
            Request::Defragment(_) => (MAINTENANCE, "Defragment"),
            Request::Snapshot(_) => (MAINTENANCE, "Snapshot"),
            Request::MoveLeader(_) => (MAINTENANCE, "MoveLeader"),
            Request::Once(once) => match &once.write {
                OnceWrite::Put(_) => (KV, "Put"),
                OnceWrite::DeleteRange(_) => (KV, "DeleteRange"),
                OnceWrite::Txn(_) => (KV, "Txn"),
            },
        }
    }
}

/// The answer to a [`Request`], variant for variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactResponse),
    Status(StatusResponse),
    MemberList(MemberListResponse),
    MemberAdd(MemberAddResponse),
    MemberPromote(MemberListResponse),
    MemberRemove(MemberListResponse),
    Watch(crate::watch::WatchResponse),
    LeaseGrant(crate::lease::LeaseGrantResponse),
    LeaseRevoke(crate::lease::LeaseRevokeResponse),
    LeaseKeepAlive(crate::lease::LeaseKeepAliveResponse),
    LeaseTimeToLive(crate::lease::LeaseTimeToLiveResponse),
    LeaseLeases(crate::lease::LeaseLeasesResponse),
    PluginInstall(crate::plugin::PluginInstallResponse),
    PluginList(crate::plugin::PluginListResponse),
    PluginRemove(crate::plugin::PluginRemoveResponse),
    HashKv(HashKvResponse),
    Auth(crate::auth::AuthResponse),
    Alarm(crate::alarm::AlarmResponse),
    Defragment(crate::alarm::DefragmentResponse),
    Snapshot(crate::alarm::SnapshotResponse),
    MoveLeader(crate::alarm::MoveLeaderResponse),
    PluginReset(crate::plugin::PluginResetResponse),
    MemberUpdate(MemberListResponse),
}

impl Response {
    /// The header of whichever response this is.
    pub fn header_mut(&mut self) -> &mut ResponseHeader {
        match self {
            Response::Range(r) => &mut r.header,
            Response::Put(r) => &mut r.header,
            Response::DeleteRange(r) => &mut r.header,
            Response::Txn(r) => &mut r.header,
            Response::Compact(r) => &mut r.header,
            Response::Status(r) => &mut r.header,
            Response::MemberList(r)
            | Response::MemberPromote(r)
            | Response::MemberRemove(r)
            | Response::MemberUpdate(r) => &mut r.header,
            Response::MemberAdd(r) => &mut r.header,
            Response::Watch(r) => &mut r.header,
            Response::LeaseGrant(r) => &mut r.header,
            Response::LeaseRevoke(r) => &mut r.header,
            Response::LeaseKeepAlive(r) => &mut r.header,
            Response::LeaseTimeToLive(r) => &mut r.header,
            Response::LeaseLeases(r) => &mut r.header,
            Response::PluginInstall(r) => &mut r.header,
            Response::PluginList(r) => &mut r.header,
            Response::PluginRemove(r) => &mut r.header,
            Response::HashKv(r) => &mut r.header,
            Response::Auth(r) => &mut r.header,
            Response::Alarm(r) => &mut r.header,
            Response::Defragment(r) => &mut r.header,
            Response::Snapshot(r) => &mut r.header,
            Response::MoveLeader(r) => &mut r.header,
            Response::PluginReset(r) => &mut r.header,
        }
    }
}

/// Sent with every response: where and at which revision it was answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    /// The node that answered.
    pub member_id: NodeId,
    /// The store revision when the request was answered (after it, for a write).
    pub revision: Revision,
    pub raft_term: u64,
    /// The leader's client address, set when a follower forwarded the request to it: a client
    /// may send its next requests there directly.
    pub leader_hint: Option<String>,
}

/// Reads the keys selected by `key` and `range_end` (see [`crate::KeyRange`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Maximum number of keys returned; `0` means no limit.
    pub limit: i64,
    /// Point-in-time read at this revision; `0` means the current one.
    pub revision: Revision,
    /// Return keys and their metadata without values.
    pub keys_only: bool,
    /// Return only the number of matching keys.
    pub count_only: bool,
    /// Answer from the local applied state (possibly stale) instead of a linearizable read.
    pub serializable: bool,
    /// The order of the keys returned; [`SortOrder::None`] is ascending by key, unless
    /// `sort_target` is not the key, which sorts ascending (as etcd).
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Leave out keys last modified before this revision; `0` for no bound.
    pub min_mod_revision: Revision,
    /// Leave out keys last modified after this revision; `0` for no bound.
    pub max_mod_revision: Revision,
    /// Leave out keys created before this revision; `0` for no bound.
    pub min_create_revision: Revision,
    /// Leave out keys created after this revision; `0` for no bound.
    pub max_create_revision: Revision,
}

impl RangeRequest {
    /// Whether the request uses none of the fields added since the first release (sort and
    /// revision filters), so that it travels in that release's layout.
    pub fn is_first_layout(&self) -> bool {
        self.sort_order == SortOrder::None && self.sort_target == SortTarget::Key && !self.filters()
    }

    /// Whether any revision filter is set.
    pub fn filters(&self) -> bool {
        self.min_mod_revision != 0
            || self.max_mod_revision != 0
            || self.min_create_revision != 0
            || self.max_create_revision != 0
    }

    /// Whether the keys come in another order than ascending by key.
    #[allow(clippy::match_like_matches_macro)] // one arm per way of asking for key order
    pub fn sorts(&self) -> bool {
        match (self.effective_order(), self.sort_target) {
            (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => false,
            _ => true,
        }
    }

    /// The order the keys are returned in: `sort_order`, or ascending when a target other
    /// than the key is given with no order (as etcd); [`SortOrder::None`] only for key order.
    pub fn effective_order(&self) -> SortOrder {
        match (self.sort_order, self.sort_target) {
            (SortOrder::None, SortTarget::Key) => SortOrder::None,
            (SortOrder::None, _) => SortOrder::Ascend,
            (order, _) => order,
        }
    }

    /// Whether `kv` passes the revision filters.
    pub fn admits(&self, kv: &KeyValue) -> bool {
        let above = |value: Revision, min: Revision| min == 0 || value >= min;
        let below = |value: Revision, max: Revision| max == 0 || value <= max;
        above(kv.mod_revision, self.min_mod_revision)
            && below(kv.mod_revision, self.max_mod_revision)
            && above(kv.create_revision, self.min_create_revision)
            && below(kv.create_revision, self.max_create_revision)
    }
}

/// etcd's `RangeRequest.SortOrder`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order (ascending by key).
    #[default]
    None,
    Ascend,
    Descend,
}

/// etcd's `RangeRequest.SortTarget`: what the keys are sorted by. Keys that tie stay in
/// ascending key order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub header: ResponseHeader,
    pub kvs: Vec<KeyValue>,
    /// More keys matched than `limit` allowed to return.
    pub more: bool,
    /// Number of keys that matched, whatever the limit.
    pub count: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease to attach the key to; `0` for none.
    pub lease: LeaseId,
    /// Return the key's previous version.
    pub prev_kv: bool,
    /// Keep the key's current value (`value` must be empty; the key must exist).
    pub ignore_value: bool,
    /// Keep the key's current lease (`lease` must be 0; the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// Whether the put uses none of the fields added since the first release.
    pub fn is_first_layout(&self) -> bool {
        !self.ignore_value && !self.ignore_lease
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    pub header: ResponseHeader,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-value pairs.
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at, with the operand to compare against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    CreateRevision(Revision),
    ModRevision(Revision),
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    Lease(LeaseId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One condition of a transaction. A missing key has version, create and mod revision and
/// lease 0, and compares with a value target as false whatever the operator (as in etcd).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Compare every key in `[key, range_end)`; empty for just `key`.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

/// One operation of a txn branch (wire layout in [`crate::layout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    /// A txn nested in a branch, run at the same revision as the rest of its txn; at most
    /// [`crate::limits::MAX_TXN_DEPTH`] levels deep.
    Txn(TxnRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

/// If every compare holds, run `success`, else `failure`; all of it at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// True when neither branch writes, nested txns included.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| match op {
            RequestOp::Range(_) => true,
            RequestOp::Txn(txn) => txn.is_read_only(),
            RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

/// Drops the history below `revision`: reads and watches below it fail with `Compacted`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactRequest {
    pub revision: Revision,
    /// Wait until the compaction is physically applied (accepted for etcd compatibility;
    /// etch always answers after the compaction is applied).
    pub physical: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactResponse {
    pub header: ResponseHeader,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {}

/// Asks for the hash of the key history up to `revision` (0: the current revision).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashKvRequest {
    pub revision: Revision,
}

/// The CRC-32 (IEEE) of every stored key version at or below `hash_revision` (from the
/// compaction floor up, in key order), as etcd's `HashKV`: two members that applied the
/// same log agree at any revision both still hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashKvResponse {
    pub header: ResponseHeader,
    pub hash: u32,
    /// The compaction floor when the hash was taken.
    pub compact_revision: Revision,
    /// The revision the hash covers.
    pub hash_revision: Revision,
}

/// A node's view of itself, as `etcdctl endpoint status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub header: ResponseHeader,
    pub name: String,
    pub version: String,
    /// Bytes on disk used by the node's database.
    pub db_size: u64,
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
    pub is_learner: bool,
    pub raft_index: u64,
    pub raft_term: u64,
    pub raft_applied_index: u64,
    /// Lowest revision still readable.
    pub compact_revision: Revision,
    /// Alarms and other conditions an operator should know of.
    pub errors: Vec<String>,
}

/// One cluster member, as `etcdctl member list` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// Peer address (host:port).
    pub peer_addr: String,
    /// Client address (host:port); empty until the member has been heard from.
    pub client_addr: String,
    pub is_learner: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberListRequest {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberListResponse {
    pub header: ResponseHeader,
    pub members: Vec<Member>,
}

/// Adds a member (a voter, or a learner that does not vote until promoted). The new node is
/// then started with `--initial-cluster-state existing`. With no `name` (etcd's `MemberAdd`
/// carries none), the new node must be running already: the leader learns its name from
/// the certificate of the node that answers at `peer_addr`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddRequest {
    pub name: String,
    pub peer_addr: String,
    pub is_learner: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddResponse {
    pub header: ResponseHeader,
    pub member: Member,
    pub members: Vec<Member>,
}

/// Makes a learner a voter, once it has caught up with the leader.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPromoteRequest {
    pub id: NodeId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoveRequest {
    pub id: NodeId,
}

/// Moves member `id`'s peer endpoint to `peer_addr` (host:port). The member keeps its name,
/// id and certificate; it must be started listening there.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUpdateRequest {
    pub id: NodeId,
    pub peer_addr: String,
}
