//! The client endpoint: QUIC with mutual TLS, one bidirectional stream per request.
//!
//! A connection is admitted only with a client certificate signed by the cluster CA (rustls
//! refuses anything else during the handshake). The certificate's common name becomes the
//! principal of every request on the connection. Each stream carries one request frame and
//! gets one `Result<Response, Error>` frame back; a malformed or oversize frame is answered
//! with an error on that stream only.

mod endpoint;

pub use endpoint::{ClientEndpoint, serve_clients};
