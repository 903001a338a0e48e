//! The etch wire protocol, shared by nodes (`etch-host`) and clients (`etch-client`).
//!
//! Start reading at [`message`]: every exchange is one [`Request`] sent on a fresh QUIC
//! bidirectional stream, answered by one `Result<Response, Error>`. Both travel as
//! length-prefixed postcard frames ([`frame`]) with a hard maximum size, so a peer can never
//! make the other side allocate without bound.
//!
//! The data model is etcd's: a key space of byte strings, versioned by a store-wide
//! [`Revision`] that advances by one per committed write, whatever the number of keys it
//! touched. [`KeyValue`] carries the same fields as etcd's `mvccpb.KeyValue`.
//!
//! [`Error`] is the stable error a client sees; [`Error::is_retryable`] says which ones a
//! client may safely retry. [`pki`] makes and reads the certificates: every connection is
//! mutual TLS, and a certificate says by itself whether it belongs to a node or a client.

pub mod alarm;
pub mod auth;
pub mod codes;
#[cfg(feature = "authority")]
pub mod crl;
pub mod error;
pub mod frame;
pub mod layout;
pub mod lease;
pub mod limits;
pub mod message;
pub mod pki;
pub mod plugin;
pub mod types;
pub mod watch;

pub use error::Error;
pub use message::*;
pub use types::*;

/// ALPN protocol name of the client endpoint (clients talking to nodes).
pub const ALPN_CLIENT: &[u8] = b"etch-client/1";
/// ALPN protocol name of the peer endpoint (nodes talking to nodes).
pub const ALPN_PEER: &[u8] = b"etch-peer/1";

/// Default maximum size of one request frame, in bytes: etcd's `--max-request-bytes`
/// default (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;

/// Default maximum size of one response frame, in bytes (64 MiB). Responses may be larger
/// than requests (a range returns many values); the client refuses anything bigger.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
