//! The two QUIC endpoints of a node, and the etcd v3 gRPC front (`grpc/`, TCP), which
//! serves clients as the client endpoint does, through the same `Node::handle`.
//!
//! The client endpoint (`endpoint.rs`) admits a connection only with a client certificate
//! signed by the cluster CA (rustls refuses anything else during the handshake). The
//! certificate's common name becomes the principal of every request on the connection. Each
//! stream carries one request frame and gets one `Result<Response, Error>` frame back; a
//! malformed or oversize frame is answered with an error on that stream only. What one
//! client may cost is bounded (`limits.rs`: connections per node and per principal,
//! streams, buffered bytes, read and write deadlines, idle time). Three kinds of
//! stream live longer (`watch_stream.rs`): a watch (the node keeps writing responses and
//! reads control frames), a lease keep-alive (`keep_alive.rs`: one answer per frame) and
//! a snapshot (`snapshot_stream.rs`: one answer, then a backup file's bytes).
//!
//! The peer endpoint (`peer.rs`) admits node certificates only and serves Raft RPCs,
//! snapshot streams and requests forwarded by followers.

mod activity;
mod admission;
mod budget;
mod burst;
mod endpoint;
mod grpc;
mod keep_alive;
mod limits;
mod peer;
mod reset;
mod snapshot_stream;
mod watch_stream;

pub use endpoint::{ClientEndpoint, ClientGate, serve_clients};
pub use grpc::serve_grpc;
pub use limits::{ClientLimits, SMALL_ANSWER};
pub use peer::serve_peers;
pub use reset::{RESET_KEY_FILE, ResetKey};
