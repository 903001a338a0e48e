//! Accepting client connections and streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use etch_proto::frame::{self, FrameError};
use etch_proto::pki::{self, Identity};
use etch_proto::{ALPN_CLIENT, DEFAULT_MAX_RESPONSE_BYTES, Error, Request, Response};
use quinn::crypto::rustls::QuicServerConfig;

use crate::node::Node;

/// Stream-level error code sent when the server stops reading an oversize request.
const STOP_TOO_LARGE: u32 = 1;

/// The bound client endpoint.
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    pub endpoint: quinn::Endpoint,
}

impl ClientEndpoint {
    /// Binds the client endpoint on `addr`, demanding client certificates signed by the CA.
    pub fn bind(addr: SocketAddr, identity: &Identity) -> anyhow::Result<Self> {
        let tls = identity.server_config(None, ALPN_CLIENT)?;
        let crypto = QuicServerConfig::try_from(tls)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(1024u32.into())
            .max_concurrent_uni_streams(0u32.into())
            .max_idle_timeout(Some(Duration::from_secs(30).try_into()?))
            .keep_alive_interval(Some(Duration::from_secs(10)));
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, addr)?;
        Ok(ClientEndpoint { endpoint })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// Accepts connections until the endpoint is closed.
pub async fn serve_clients(endpoint: quinn::Endpoint, node: Node) {
    while let Some(incoming) = endpoint.accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, node).await,
                // Certificate refusals end here: rustls has already told the client why.
                Err(e) => tracing::debug!(%remote, error = %e, "client handshake failed"),
            }
        });
    }
}

/// The principal (certificate common name) of an established connection.
fn principal(conn: &quinn::Connection) -> Option<String> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let subject = pki::subject(certs.first()?).ok()?;
    Some(subject.common_name)
}

async fn serve_connection(conn: quinn::Connection, node: Node) {
    let remote = conn.remote_address();
    let Some(principal) = principal(&conn) else {
        // Unreachable with the mandatory client verifier, but never serve an anonymous peer.
        conn.close(1u32.into(), b"no client certificate");
        return;
    };
    tracing::debug!(%remote, %principal, "client connected");
    let principal: Arc<str> = principal.into();
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let node = node.clone();
                let principal = principal.clone();
                tokio::spawn(async move { serve_stream(send, recv, node, principal).await });
            }
            Err(e) => {
                tracing::debug!(%remote, reason = %e, "client connection ended");
                return;
            }
        }
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    node: Node,
    principal: Arc<str>,
) {
    let max_request = node.options().max_request_bytes;
    let answer: Result<Response, Error> = match frame::read::<_, Request>(&mut recv, max_request)
        .await
    {
        Ok(Some(Request::Watch(watch))) => match etch_proto::limits::check_watch(&watch) {
            Ok(()) => return super::watch_stream::serve_watch(node, watch, send, recv).await,
            Err(e) => Err(e),
        },
        Ok(Some(Request::LeaseKeepAlive(first))) => {
            return super::keep_alive::serve_keep_alive(node, principal, first, send, recv).await;
        }
        Ok(Some(request)) => node.handle(&principal, request).await,
        Ok(None) => return,
        Err(FrameError::TooLarge { len, max }) => {
            let _ = recv.stop(STOP_TOO_LARGE.into());
            Err(Error::TooLarge {
                size: len as u64,
                limit: max as u64,
            })
        }
        Err(FrameError::Malformed(e)) => {
            Err(Error::InvalidArgument(format!("malformed request: {e}")))
        }
        Err(e) => {
            tracing::debug!(error = %e, "client stream broke before a request");
            return;
        }
    };
    let bytes = match frame::encode(&answer, DEFAULT_MAX_RESPONSE_BYTES) {
        Ok(bytes) => bytes,
        Err(FrameError::TooLarge { len, max }) => {
            let refusal: Result<Response, Error> = Err(Error::TooLarge {
                size: len as u64,
                limit: max as u64,
            });
            match frame::encode(&refusal, DEFAULT_MAX_RESPONSE_BYTES) {
                Ok(bytes) => bytes,
                Err(_) => return,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a response");
            return;
        }
    };
    if let Err(e) = send.write_all(&bytes).await {
        tracing::debug!(error = %e, "client went away before its answer");
        return;
    }
    let _ = send.finish();
}
