//! What nodes say to each other on the peer endpoint.
//!
//! Like the client protocol, one bidirectional stream carries one exchange: an [`Envelope`]
//! frame, then (for a snapshot only) the raw snapshot body until the stream ends, and one
//! [`PeerResponse`] frame back. The envelope names the cluster and the intended receiver, so
//! that nodes of different clusters, or a node reached at a stale address, refuse each other.

use openraft::Vote;
use openraft::error::{Fatal, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{SnapshotMeta, TypeConfig};
use crate::NodeId;

/// Largest peer frame. An AppendEntries is kept far below it by bytes (`network.rs` answers
/// openraft with `PayloadTooLarge` and openraft sends fewer entries), and no single entry
/// may exceed [`MAX_ENTRY_BYTES`], so no legal history produces a frame a peer refuses.
pub const MAX_PEER_FRAME: usize = 64 * 1024 * 1024;

/// Largest Raft entry the leader proposes, in approximate payload bytes
/// (`Command::approx_size`): a quarter of a peer frame leaves room for the envelope and
/// encoding overhead. `--max-request-bytes` is capped well below it.
pub const MAX_ENTRY_BYTES: usize = MAX_PEER_FRAME / 4;

/// One request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's cluster; `0` from a node that has not learned it yet (a joining node).
    pub cluster_id: u64,
    pub from: NodeId,
    /// The node the sender means to reach.
    pub to: NodeId,
    pub body: PeerRequest,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// Followed on the stream by the snapshot body (the MVCC export).
    Snapshot {
        vote: Vote<NodeId>,
        meta: SnapshotMeta,
        /// Length of the body that follows: a stream that ends early (a sender cancelled
        /// mid-way finishes its stream when dropped) is refused, never installed.
        body_len: u64,
    },
    /// A client request handed to the leader by a follower, with the client's principal.
    Forward {
        principal: String,
        request: etch_proto::Request,
    },
    /// Asks the receiver for its name and client address.
    Hello,
    /// Asks whether node `id` is a member (voter or learner) in the receiver's view: how a
    /// voter whose log is behind learns that a sender it does not know yet was added.
    IsMember {
        id: NodeId,
    },
    /// Asks for the receiver's HashKV at `revision` (the leader's corruption check).
    HashKv {
        revision: etch_proto::Revision,
    },
    /// From the leader handing over its leadership (`move-leader`): do not call elections
    /// of your own for `for_ms` milliseconds (0: from now on again).
    HoldElections {
        for_ms: u64,
    },
    /// From the leader handing over its leadership to the receiver: once `after_ms` have
    /// passed (the voters' leader leases run out), call elections until you lead, for at
    /// most `for_ms`.
    Campaign {
        after_ms: u64,
        for_ms: u64,
    },
    /// From a follower, for the linearizable reads waiting on it: confirm leadership with a
    /// quorum and answer the index the leader has applied (the follower reads once it has
    /// applied as far). Appended last: a leader of an earlier release refuses it as
    /// malformed, and the follower forwards its reads instead.
    ReadIndex,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<SnapshotResponse<NodeId>, Fatal<NodeId>>),
    Forward(Result<etch_proto::Response, etch_proto::Error>),
    Hello {
        name: String,
        client_addr: String,
    },
    /// The receiver will not take requests from this sender (another cluster, wrong target,
    /// a malformed request); the reason says which.
    Refused(String),
    IsMember(bool),
    HashKv(Result<etch_proto::HashKvResponse, etch_proto::Error>),
    /// Elections are held as asked.
    Held,
    /// Whether the receiver leads now.
    Campaigned(bool),
    /// The applied index a follower must reach before it reads (`PeerRequest::ReadIndex`).
    ReadIndex(Result<u64, etch_proto::Error>),
    /// The receiver does not count the sender a member of its cluster (it never was, or
    /// was removed); the reason names it. Appended last: a node of an earlier release
    /// cannot decode it, and treats the answer as a broken exchange.
    NotAMember(String),
}
