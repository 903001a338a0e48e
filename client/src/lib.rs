//! etch-client: the async client SDK for etch, over QUIC with mutual TLS.
//!
//! Start reading at [`Client`] (`client.rs`): it owns one QUIC connection and the retry
//! rules. The request builders live in `kv.rs` ([`Client::put`], [`Client::get`],
//! [`Client::delete`], [`Client::compact`], [`Client::status`]), `txn.rs`
//! ([`Client::txn`], [`Compare`], [`TxnOp`]) and `member.rs` ([`Client::member_list`],
//! [`Client::member_add`], [`Client::member_promote`], [`Client::member_remove`]), `watch.rs`
//! ([`Client::watch`] and the resumable [`Watcher`], kept going by `watch_resume.rs`),
//! `lease.rs` ([`Client::lease_grant`] and the other lease verbs) and `lease_keep_alive.rs`
//! ([`Client::lease_keep_alive`], [`Client::keep_lease_alive`]);
//! `plugin.rs` ([`Client::plugin_install`], [`Client::plugin_list`], [`Client::plugin_remove`]);
//! `dial.rs` races the endpoints when the client (re)connects; `transport.rs` is the QUIC
//! plumbing (one bidirectional stream per request, one [`etch_proto::frame`] each way);
//! `error.rs` says what can fail and what may be retried.
//!
//! Requests and responses are the wire types of [`etch_proto`], re-exported as [`proto`];
//! the common ones are also re-exported at the crate root.
//!
//! # Examples
//!
//! ```no_run
//! use etch_client::{Client, ClientOptions, Compare, CompareResult, TlsFiles, TxnOp};
//!
//! # async fn demo() -> etch_client::Result<()> {
//! // The files `etchd` creates on its first start with no certificate flags.
//! let tls = TlsFiles::in_dir("./etch-data/certs", "root");
//! let client = Client::connect(ClientOptions::new(["127.0.0.1:7379"], tls)).await?;
//!
//! client.put("/svc/a", "10.0.0.1").await?;
//! let all = client.get("/svc/").prefix().await?;
//! println!("{} services at revision {}", all.count, all.header.revision);
//!
//! let swapped = client
//!     .txn()
//!     .when([Compare::value("/svc/a", CompareResult::Equal, "10.0.0.1")])
//!     .and_then([TxnOp::put("/svc/a", "10.0.0.2")])
//!     .await?
//!     .succeeded;
//! # let _ = swapped;
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod dial;
mod endpoint;
mod error;
mod kv;
mod lease;
mod lease_keep_alive;
mod maintenance;
mod member;
mod options;
mod plugin;
mod transport;
mod txn;
mod watch;
mod watch_resume;

#[cfg(test)]
mod request_test;

/// The README's Rust snippets, compiled as doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use etch_proto as proto;
pub use etch_proto::lease::{
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse,
};
pub use etch_proto::pki::TlsFiles;
pub use etch_proto::watch::{Event, EventType, WatchResponse};
pub use etch_proto::{
    CompactResponse, CompareResult, DeleteRangeResponse, KeyValue, LeaseId, Member,
    MemberAddResponse, MemberListResponse, NodeId, PutResponse, RangeResponse, Request, Response,
    ResponseHeader, ResponseOp, Revision, StatusResponse, TxnResponse,
};

pub use auth::Auth;
pub use client::Client;
pub use endpoint::Endpoint;
pub use error::{DialError, Error, Result};
pub use kv::{Compact, Delete, Get, Put, ResponseFuture};
pub use lease::{LeaseGrant, LeaseLeases, LeaseRevoke, LeaseTimeToLive};
pub use lease_keep_alive::{KeepAliveHandle, KeepAliveStatus, LeaseKeepAlive};
pub use maintenance::SnapshotSaved;
pub use member::{MemberAdd, MemberList, MemberPromote, MemberRemove, MemberUpdate};
pub use options::ClientOptions;
pub use plugin::{PluginInstall, PluginList, PluginRemove, PluginReset};
pub use txn::{Compare, Txn, TxnOp};
pub use watch::{Watch, Watcher};
pub use watch_resume::WatchState;
