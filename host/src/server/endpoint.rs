//! Accepting client connections and streams, within the bounds of [`ClientLimits`].
//!
//! A connection is admitted by [`Admission`] (per node, per principal), gets a byte
//! [`Budget`] and an [`Activity`] record, and is closed when idle. Each stream must deliver
//! its request frame within the read deadline, charged to the budget before its body is
//! read; its answer is charged before it is written and must be taken within the write
//! deadline. What breaks a bound is reset with a code from `etch_proto::codes`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use etch_proto::codes::{close, stream};
use etch_proto::frame::{self, FrameError};
use etch_proto::pki;
use etch_proto::{DEFAULT_MAX_RESPONSE_BYTES, Error, Request, Response};
use rustls::pki_types::CertificateDer;
use tokio::sync::Semaphore;

use super::activity::{Activity, OpenStream};
use super::admission::Admission;
use super::budget::{self, Budget, Charge};
use super::limits::ClientLimits;
use super::reset::ResetKey;
use crate::node::Node;
use crate::tls::{self, Tls};

/// Bytes a client may have in flight towards the node on one connection before QUIC flow
/// control holds it back. quinn's default is unlimited (per stream 1.25 MB), which let
/// partial frames on many streams pile up in the node's receive buffers.
const CONNECTION_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

/// The bound client endpoint.
#[derive(Debug, Clone)]
pub struct ClientEndpoint {
    pub endpoint: quinn::Endpoint,
    /// The endpoint's transport settings, kept for the server configs of TLS reloads.
    pub transport: Arc<quinn::TransportConfig>,
}

impl ClientEndpoint {
    /// Binds the client endpoint on `addr`, demanding client certificates signed by the CA
    /// (and not revoked) of the material in force in `tls`.
    /// Its stateless resets use `reset_key`, so that a restart resets the connections
    /// clients held with the process before.
    pub fn bind(
        addr: SocketAddr,
        tls: &Tls,
        limits: &ClientLimits,
        reset_key: &ResetKey,
    ) -> anyhow::Result<Self> {
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(limits.max_streams.into())
            .max_concurrent_uni_streams(0u32.into())
            .receive_window(CONNECTION_RECEIVE_WINDOW.into())
            .max_idle_timeout(Some(Duration::from_secs(30).try_into()?))
            .keep_alive_interval(Some(Duration::from_secs(10)));
        let transport = Arc::new(transport);
        let config = tls.server_config(pki::Role::Client, &transport)?;
        let endpoint = reset_key.bind(addr, config)?;
        Ok(ClientEndpoint {
            endpoint,
            transport,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// What every client connection of a node shares, whichever front it came in by (the QUIC
/// endpoint or the gRPC front): the connection limits, and the node's budget of bytes held
/// for clients. Made once per node, so that the two fronts do not double either.
pub struct ClientGate {
    pub(super) admission: Admission,
    pub(super) buffers: Arc<Semaphore>,
}

impl ClientGate {
    pub fn new(limits: &super::ClientLimits) -> Arc<ClientGate> {
        Arc::new(ClientGate {
            admission: Admission::new(limits),
            buffers: budget::node_budget(limits.buffer_bytes),
        })
    }
}

/// Accepts connections until the endpoint is closed.
pub async fn serve_clients(endpoint: quinn::Endpoint, node: Node, shared: Arc<ClientGate>) {
    while let Some(incoming) = endpoint.accept().await {
        let Some(handshake) = shared.admission.begin_handshake() else {
            tracing::debug!(remote = %incoming.remote_address(), "too many handshakes; refused");
            incoming.refuse();
            continue;
        };
        let node = node.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let accepted = incoming.await;
            drop(handshake);
            match accepted {
                Ok(conn) => serve_connection(conn, node, shared).await,
                // Certificate refusals end here: rustls has already told the client why
                // (the reason travels in the close frame). Other failures (a client that
                // went away mid-handshake) are no refusal.
                Err(e @ quinn::ConnectionError::TransportError(_)) => {
                    tracing::info!(%remote, error = %e, "client handshake refused");
                }
                Err(e) => tracing::debug!(%remote, error = %e, "client handshake failed"),
            }
        });
    }
}

/// The certificate chain and principal (the certificate's common name) of an established
/// connection.
fn principal(conn: &quinn::Connection) -> Option<(Vec<CertificateDer<'static>>, String)> {
    let chain = tls::peer_chain(conn)?;
    let subject = pki::subject(chain.first()?).ok()?;
    Some((chain, subject.common_name))
}

async fn serve_connection(conn: quinn::Connection, node: Node, shared: Arc<ClientGate>) {
    let remote = conn.remote_address();
    let Some((chain, principal)) = principal(&conn) else {
        // Unreachable with the mandatory client verifier, but never serve an anonymous peer.
        conn.close(close::NO_CERTIFICATE.into(), b"no client certificate");
        return;
    };
    let principal: Arc<str> = principal.into();
    let _slot = match shared.admission.admit(&principal) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::info!(%remote, ?principal, reason = refusal.reason, "client connection refused");
            conn.close(refusal.code.into(), refusal.reason.as_bytes());
            return;
        }
    };
    tracing::debug!(%remote, ?principal, "client connected");
    let limits = &node.options().client_limits;
    let idle = limits.idle_timeout;
    let budget = Arc::new(Budget::new(
        limits.connection_buffer_bytes,
        shared.buffers.clone(),
        limits.buffer_bytes,
    ));
    let deliveries = super::watch_stream::delivery_bytes();
    let burst = super::burst::Burst::start();
    let activity = Activity::new();
    let refused = tls::refused_since(node.tls().subscribe(), pki::Role::Client, chain);
    tokio::pin!(refused);
    loop {
        // While a stream is open the connection is not idle; look again a timeout later.
        let wake = activity
            .idle_at(idle)
            .unwrap_or_else(|| tokio::time::Instant::now() + idle);
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let stream = Stream {
                        send,
                        recv,
                        node: node.clone(),
                        principal: principal.clone(),
                        budget: budget.clone(),
                        deliveries: deliveries.clone(),
                        burst: burst.clone(),
                        _open: activity.open(),
                    };
                    tokio::spawn(stream.serve());
                }
                Err(e) => {
                    tracing::debug!(%remote, reason = %e, "client connection ended");
                    return;
                }
            },
            reason = &mut refused => {
                tracing::info!(%remote, ?principal, %reason, "closing a client connection: its certificate is refused now");
                tls::close_revoked(&conn, &reason);
                return;
            }
            () = tokio::time::sleep_until(wake) => {
                if activity.idle_at(idle).is_some_and(|at| at <= tokio::time::Instant::now()) {
                    tracing::debug!(%remote, ?principal, "closing an idle client connection");
                    let reason = format!("idle for {} ms", idle.as_millis());
                    conn.close(close::IDLE.into(), reason.as_bytes());
                    return;
                }
            }
        }
    }
}

/// One client stream and what it may spend.
struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    node: Node,
    principal: Arc<str>,
    budget: Arc<Budget>,
    /// The connection's watch delivery bytes (`watch_stream::DELIVERY_BYTES`).
    deliveries: Arc<tokio::sync::Semaphore>,
    /// The connection's watch writes, made together (`burst.rs`).
    burst: super::burst::Burst,
    /// Keeps the connection from counting as idle while the stream lives.
    _open: OpenStream,
}

impl Stream {
    async fn serve(mut self) {
        let limits = self.node.options().client_limits.clone();
        let max_request = self.node.options().max_request_bytes;
        let read = read_request(&mut self.recv, max_request, &self.budget);
        let (request, charge) = match tokio::time::timeout(limits.read_timeout, read).await {
            Ok(read) => match read {
                Ok(Some(read)) => read,
                Ok(None) => return,
                Err(refusal) => match refusal {
                    Refusal::Answer(e) => {
                        self.answer(Err(e), &limits).await;
                        return;
                    }
                    Refusal::Drop => return,
                },
            },
            Err(_) => {
                tracing::debug!(principal = ?self.principal, "request not received in time");
                let _ = self.recv.stop(stream::READ_TIMEOUT.into());
                let _ = self.send.reset(stream::READ_TIMEOUT.into());
                return;
            }
        };
        let answer = match request {
            Request::Watch(watch) => {
                drop(charge);
                if let Err(e) = etch_proto::limits::check_watch(&watch) {
                    self.answer(Err(e), &limits).await;
                    return;
                }
                let Stream {
                    send,
                    recv,
                    node,
                    principal,
                    deliveries,
                    burst,
                    _open,
                    ..
                } = self;
                super::watch_stream::serve_watch(
                    node, principal, watch, send, recv, deliveries, burst,
                )
                .await;
                return;
            }
            Request::Snapshot(_) => {
                drop(charge);
                let Stream {
                    send,
                    node,
                    principal,
                    _open,
                    ..
                } = self;
                super::snapshot_stream::serve_snapshot(node, principal, send).await;
                return;
            }
            Request::LeaseKeepAlive(first) => {
                drop(charge);
                let Stream {
                    send,
                    recv,
                    node,
                    principal,
                    _open,
                    ..
                } = self;
                super::keep_alive::serve_keep_alive(node, principal, first, send, recv).await;
                return;
            }
            request => {
                let answer = self.node.handle(&self.principal, request).await;
                drop(charge);
                answer
            }
        };
        self.answer(answer, &limits).await;
    }

    /// Charges `answer` to the budget, encodes it and writes it within the write deadline.
    /// Its size is measured before it is encoded, so an answer without room costs no
    /// encoding at all.
    async fn answer(mut self, answer: Result<Response, Error>, limits: &ClientLimits) {
        let answer = within_response_limit(answer);
        let Ok(len) = frame::body_len(&answer) else {
            return;
        };
        let Some(_charge) = self.budget.try_reserve(4 + len) else {
            tracing::debug!(principal = ?self.principal, bytes = len, "too many unread answers; stream reset");
            let _ = self.send.reset(stream::UNREAD_RESPONSES.into());
            return;
        };
        let encoded = frame::encode(&answer, DEFAULT_MAX_RESPONSE_BYTES);
        // The response is as large as its frame: free it before anything waits.
        drop(answer);
        let bytes = match encoded {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a response");
                return;
            }
        };
        // Handed to QUIC as it is (`write_chunk`), not copied into its send buffer; quinn
        // still takes it only as fast as the client's flow control allows.
        let write = self.send.write_chunk(bytes::Bytes::from(bytes));
        match tokio::time::timeout(limits.write_timeout, write).await {
            Ok(Ok(())) => {
                let _ = self.send.finish();
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "client went away before its answer"),
            Err(_) => {
                tracing::debug!(principal = ?self.principal, "answer not read in time; stream reset");
                let _ = self.send.reset(stream::WRITE_TIMEOUT.into());
            }
        }
    }
}

/// What to do with a stream whose request could not be read.
enum Refusal {
    /// Answer it with this error.
    Answer(Error),
    /// Drop it: the client broke it.
    Drop,
}

/// Reads the request frame, charging its declared length to `budget` before its body.
async fn read_request(
    recv: &mut quinn::RecvStream,
    max: usize,
    budget: &Budget,
) -> Result<Option<(Request, Charge)>, Refusal> {
    let read = async {
        let Some(len) = frame::read_len(recv, max).await? else {
            return Ok(None);
        };
        let charge = budget.reserve(len).await;
        let body = frame::read_body(recv, len).await?;
        Ok::<_, FrameError>(Some((frame::decode::<Request>(&body)?, charge)))
    };
    read.await.map_err(|e| match e {
        FrameError::TooLarge { len, max } => {
            let _ = recv.stop(stream::TOO_LARGE.into());
            Refusal::Answer(Error::TooLarge {
                size: len as u64,
                limit: max as u64,
            })
        }
        FrameError::Malformed(e) => {
            Refusal::Answer(Error::InvalidArgument(format!("malformed request: {e}")))
        }
        e => {
            tracing::debug!(error = %e, "client stream broke before a request");
            Refusal::Drop
        }
    })
}

/// The answer itself, or a `TooLarge` refusal if its frame would exceed the response limit.
fn within_response_limit(answer: Result<Response, Error>) -> Result<Response, Error> {
    match frame::body_len(&answer) {
        Ok(len) if len > DEFAULT_MAX_RESPONSE_BYTES => Err(Error::TooLarge {
            size: len as u64,
            limit: DEFAULT_MAX_RESPONSE_BYTES as u64,
        }),
        _ => answer,
    }
}
