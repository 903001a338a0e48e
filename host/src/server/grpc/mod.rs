//! The etcd v3 gRPC front: etcd's services (`etch-etcd-api`) over TCP with the same mutual
//! TLS, CA, identities and authorization as the QUIC client endpoint, so that etcdctl and
//! etcd's client libraries work against etch unchanged (docs/etcd-compat.md).
//!
//! It is a front and nothing more: every RPC becomes the internal request the QUIC front
//! would send and goes through [`Node::handle`] (`services.rs`, the Auth service in
//! `auth.rs`); a watch runs the QUIC front's driver (`watch.rs`), a snapshot the QUIC
//! front's backup writer. `convert.rs` translates messages and errors.
//!
//! A connection is admitted like a QUIC one: a TLS 1.3 handshake within
//! [`HANDSHAKE_TIMEOUT`] with a client certificate the node's verifier accepts (the
//! material in force, reloaded on SIGHUP, is read at each handshake), the certificate's
//! common name as the principal of every request on it, and the per-node and
//! per-principal connection limits of `--max-connections*`, shared with the QUIC
//! endpoint ([`ClientGate`]). HTTP/2 bounds
//! the rest: concurrent streams per connection (`--max-streams-per-connection`), message
//! sizes (`--max-request-bytes` in, the response limit out), keep-alive pings that drop a
//! dead peer; a unary request must arrive and be answered within the read deadline plus
//! the request timeout, and a connection with no request for `--client-idle-timeout` is
//! closed. An answer is charged to its connection's byte budget (and the node's, as on
//! the QUIC front) before it is sent, and the charge is held by its HTTP/2 body until the
//! body is done: a client that does not read its answers is refused new ones
//! (`ResourceExhausted`) once its budget is spent, instead of pinning answers without end.

mod auth;
mod batched;
mod convert;
mod services;
mod watch;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etch_etcd_api::etcdserverpb as pb;
use etch_proto::pki;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::activity::Activity;
use super::admission::Slot;
use super::budget::{Budget, Charge};
use super::endpoint::ClientGate;
use crate::node::Node;
pub(crate) use services::Etcd;

/// How long a TCP connection has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on a connection and what it may hold: its client certificate's common name, and
/// its byte budget for answers not yet taken. Each request's extensions carry it (tonic's
/// connect info).
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) principal: Arc<str>,
    pub(crate) budget: Arc<Budget>,
    /// The connection's live watches, over all its streams (`watch.rs`).
    pub(crate) watches: Arc<std::sync::atomic::AtomicUsize>,
    /// Bytes of watch responses it may have built and not sent, over all its streams
    /// (`watch_stream::DELIVERY_BYTES`).
    pub(crate) watch_deliveries: Arc<tokio::sync::Semaphore>,
    /// Its requests: how many are open, and when the last ended.
    activity: Arc<Activity>,
}

/// Counts each request open from its arrival until its response body is done.
#[derive(Clone)]
struct Track<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Track<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let open = (req.extensions().get::<Peer>()).map(|peer| peer.activity.open());
        let answer = self.inner.call(req);
        Box::pin(async move {
            let response = answer.await?;
            Ok(match open {
                Some(open) => {
                    response.map(|inner| tonic::body::Body::new(KeepBody { inner, _kept: open }))
                }
                None => response,
            })
        })
    }
}

/// An admitted connection: the TLS stream, its peer, its admission slot (given back when
/// the connection ends), and whether the node has ended it — its certificate refused since
/// it was made (a revocation, a new CA), or idle for `--client-idle-timeout`: then every
/// read and write fails, which ends the connection.
struct Conn {
    io: batched::Batched<TlsStream<TcpStream>>,
    peer: Peer,
    _slot: Slot,
    refused: Arc<std::sync::atomic::AtomicBool>,
    /// Dropped with the connection: ends the task that watches its certificate.
    _alive: tokio::sync::oneshot::Sender<()>,
}

impl Conn {
    fn check(&self) -> io::Result<()> {
        if self.refused.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the node ended the connection (its certificate is refused now, or it was idle)",
            ));
        }
        Ok(())
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// An answer's charge on its connection's budget, carried from the service to the HTTP/2
/// body in the response's extensions ([`hold_charges`]).
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) _charge: Arc<Charge>,
}

/// A response body that keeps `T` until the body is done with (sent, or dropped with its
/// stream): an answer's charge ([`Held`]), what bounds the answers a client that does not
/// read can pin in the node's memory; a request's place among its connection's open ones
/// ([`OpenStream`](super::activity::OpenStream)).
struct KeepBody<T> {
    inner: tonic::body::Body,
    _kept: T,
}

impl<T: Unpin> http_body::Body for KeepBody<T> {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Moves an answer's [`Held`] charge from the response's extensions into its body.
fn hold_charges(response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    let (mut parts, body) = response.into_parts();
    let body = match parts.extensions.remove::<Held>() {
        Some(held) => tonic::body::Body::new(KeepBody {
            inner: body,
            _kept: held,
        }),
        None => body,
    };
    http::Response::from_parts(parts, body)
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The header of an answer the front makes itself rather than the node: the node's, at its
/// applied revision (etcd's clients read the header of every answer).
pub(super) fn own_header(node: &Node) -> Option<pb::ResponseHeader> {
    let mut response =
        etch_proto::Response::LeaseRevoke(etch_proto::lease::LeaseRevokeResponse::default());
    response.header_mut().revision = node.store().revision();
    node.fill_header(&mut response);
    convert::header(response.header_mut())
}

/// Serves etcd's API on `listener` until the node stops.
pub async fn serve_grpc(listener: TcpListener, node: Node, gate: Arc<ClientGate>) {
    let limits = node.options().client_limits.clone();
    let max_in = node.options().max_request_bytes + 4096;
    let max_out = etch_proto::DEFAULT_MAX_RESPONSE_BYTES;
    let (conns, incoming) = mpsc::channel::<io::Result<Conn>>(16);
    tokio::spawn(accept(listener, node.clone(), gate, conns));
    let etcd = Etcd { node: node.clone() };
    let mut stopping = node.stopping();
    let served = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(hold_charges))
        .layer(tower::layer::layer_fn(|inner| Track { inner }))
        .max_concurrent_streams(Some(limits.max_streams))
        // A unary request must arrive whole and be answered within the read deadline plus
        // the node's own request timeout (a slow sender's body is not waited on for ever);
        // a stream's handler returns at once and is not bound by it.
        .timeout(limits.read_timeout + node.options().request_timeout)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(
            pb::kv_server::KvServer::new(etcd.clone())
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        )
        .add_service(
            pb::watch_server::WatchServer::new(etcd.clone())
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        )
        .add_service(
            pb::lease_server::LeaseServer::new(etcd.clone())
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        )
        .add_service(
            pb::cluster_server::ClusterServer::new(etcd.clone())
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        )
        .add_service(
            pb::maintenance_server::MaintenanceServer::new(etcd.clone())
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        )
        .add_service(
            pb::auth_server::AuthServer::new(etcd)
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the gRPC front stopped");
    }
}

/// Accepts TCP connections, each handshaken and admitted in a task of its own, and hands
/// the admitted ones to the server.
async fn accept(
    listener: TcpListener,
    node: Node,
    gate: Arc<ClientGate>,
    conns: mpsc::Sender<io::Result<Conn>>,
) {
    let limits = node.options().client_limits.clone();
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if conns.is_closed() {
            return;
        }
        // Small answers go out at once rather than wait for more (gRPC's usual setting).
        let _ = tcp.set_nodelay(true);
        let Some(handshake) = gate.admission.begin_handshake() else {
            tracing::debug!(%remote, "too many handshakes; gRPC connection refused");
            continue;
        };
        let (node, gate, conns) = (node.clone(), gate.clone(), conns.clone());
        let budget = Arc::new(Budget::new(
            limits.connection_buffer_bytes,
            gate.buffers.clone(),
            limits.buffer_bytes,
        ));
        tokio::spawn(async move {
            let admitted = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_tls(&node, tcp)).await;
            drop(handshake);
            let (io, principal) = match admitted {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "gRPC handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "gRPC handshake timed out");
                    return;
                }
            };
            let slot = match gate.admission.admit(&principal) {
                Ok(slot) => slot,
                Err(refusal) => {
                    tracing::info!(%remote, ?principal, reason = refusal.reason, "gRPC connection refused");
                    return;
                }
            };
            // As on the QUIC front: a certificate refused later (revoked, a new CA) ends
            // the connection, and so does a connection idle for the idle timeout; HTTP/2
            // keep-alive pings wake its reads at least every 10 s.
            let refused = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let chain = (io.get_ref().1.peer_certificates())
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let flag = refused.clone();
            let tls = node.tls().subscribe();
            let (alive, gone) = tokio::sync::oneshot::channel::<()>();
            let activity = Activity::new();
            let watched = activity.clone();
            let idle_timeout = limits.idle_timeout;
            tokio::spawn(async move {
                tokio::select! {
                    reason = crate::tls::refused_since(tls, pki::Role::Client, chain) => {
                        tracing::info!(%remote, %reason, "closing a gRPC connection: its certificate is refused now");
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    () = watched.idle(idle_timeout) => {
                        tracing::debug!(%remote, "closing an idle gRPC connection");
                        flag.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    _ = gone => {}
                }
            });
            let conn = Conn {
                refused,
                _alive: alive,
                io: batched::Batched::new(io),
                peer: Peer {
                    principal,
                    budget,
                    watches: Arc::default(),
                    watch_deliveries: crate::server::watch_stream::delivery_bytes(),
                    activity,
                },
                _slot: slot,
            };
            let _ = conns.send(Ok(conn)).await;
        });
    }
}

/// The TLS handshake, with the material in force now, and the principal it proves.
async fn handshake_tls(
    node: &Node,
    tcp: TcpStream,
) -> anyhow::Result<(TlsStream<TcpStream>, Arc<str>)> {
    let config = node.tls().current().grpc_server_config();
    let io = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
    let (_, session) = io.get_ref();
    let chain = session
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| anyhow::anyhow!("no client certificate"))?;
    let subject = pki::subject(chain)?;
    Ok((io, subject.common_name.into()))
}
