//! Lease messages: time-to-live for keys (service discovery).
//!
//! A lease is granted with a TTL in seconds; keys put with the lease are deleted, all in one
//! revision, when the lease is revoked or expires. Expiry is decided by the leader and
//! applied through Raft; a keep-alive refreshes the TTL. A keep-alive is a stream: the first
//! frame is [`crate::Request::LeaseKeepAlive`], later frames are bare
//! [`LeaseKeepAliveRequest`]s, and each gets one `Result<Response::LeaseKeepAlive, Error>`.

use serde::{Deserialize, Serialize};

use crate::message::ResponseHeader;
use crate::types::LeaseId;

/// The shortest TTL granted, in seconds (etcd's minimum: a lease must outlive an election).
pub const MIN_LEASE_TTL: i64 = 5;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantRequest {
    /// Seconds; raised to [`MIN_LEASE_TTL`] when lower.
    pub ttl: i64,
    /// The id to use; `0` lets the node choose.
    pub id: LeaseId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// The TTL granted, in seconds.
    pub ttl: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeRequest {
    pub id: LeaseId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    pub header: ResponseHeader,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveRequest {
    pub id: LeaseId,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseKeepAliveResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// The refreshed TTL in seconds.
    pub ttl: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLiveRequest {
    pub id: LeaseId,
    /// List the keys attached to the lease.
    pub keys: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTimeToLiveResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// Seconds left; `-1` when the lease has expired or does not exist.
    pub ttl: i64,
    /// The TTL the lease was granted with.
    pub granted_ttl: i64,
    pub keys: Vec<serde_bytes::ByteBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLeasesRequest {}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseLeasesResponse {
    pub header: ResponseHeader,
    pub leases: Vec<LeaseId>,
}
