//! The etcd v3 gRPC front: etcd's services (`etch-etcd-api`) over TCP with the same mutual
//! TLS, CA, identities and authorization as the QUIC client endpoint, so that etcdctl and
//! etcd's client libraries work against etch unchanged (docs/etcd-compat.md).
//!
//! It is a front and nothing more: every RPC becomes the internal request the QUIC front
//! would send and goes through [`Node::handle`] (`services.rs`, the Auth service in
//! `auth.rs`); a watch runs the QUIC front's driver (`watch.rs`), a snapshot the QUIC
//! front's backup writer. `convert.rs` translates messages and errors. `http2.rs` serves
//! HTTP/2 (h2, a task per connection) and decides where each request runs: `KV/Range` on
//! the front's own unary path (`unary.rs`), every other RPC through tonic's generated
//! services; `batched.rs` coalesces a connection's writes.
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
//! the QUIC front) before it is sent, and the charge is held until the last of it is
//! handed to h2, which is no faster than the client's windows open: a client that does not
//! read its answers is refused new ones (`ResourceExhausted`) once its budget is spent,
//! instead of pinning answers without end. A request message that does not arrive whole
//! at once is charged to the same budget before the rest of it is taken.

mod auth;
mod batched;
mod convert;
mod http2;
mod services;
mod unary;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use etch_etcd_api::etcdserverpb as pb;
use etch_proto::pki;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use super::activity::Activity;
use super::budget::{Budget, Charge};
use super::endpoint::ClientGate;
use crate::node::Node;
use http2::Front;
pub(crate) use services::Etcd;

/// How long a TCP connection has to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on a connection and what it may hold: its client certificate's common name, and
/// its byte budget for answers not yet taken. Each request's extensions carry it.
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

/// An answer's charge on its connection's budget, carried from the service to the HTTP/2
/// stream that sends it (in the response's extensions on tonic's path): held until the
/// answer is handed to h2, what bounds the answers a client that does not read can pin in
/// the node's memory.
#[derive(Clone)]
pub(crate) struct Held {
    pub(crate) _charge: Arc<Charge>,
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
    let etcd = Etcd { node: node.clone() };
    let mut routes = tonic::service::Routes::builder();
    routes
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
            pb::auth_server::AuthServer::new(etcd.clone())
                .max_decoding_message_size(max_in)
                .max_encoding_message_size(max_out),
        );
    let front = Arc::new(Front {
        etcd,
        routes: routes.routes().prepare(),
        max_streams: limits.max_streams,
        max_in,
        max_out,
        // A unary request must arrive whole and be answered within the read deadline plus
        // the node's own request timeout (a slow sender's body is not waited on for ever);
        // a stream's handler returns at once and is not bound by it.
        unary_deadline: limits.read_timeout + node.options().request_timeout,
        read_timeout: limits.read_timeout,
    });
    accept(listener, node, gate, front).await;
}

/// Accepts TCP connections, each handshaken, admitted and served in a task of its own,
/// until the node stops.
async fn accept(listener: TcpListener, node: Node, gate: Arc<ClientGate>, front: Arc<Front>) {
    let limits = node.options().client_limits.clone();
    let mut stopping = node.stopping();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.wait_for(|stopping| *stopping) => return,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "gRPC accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Small answers go out at once rather than wait for more (gRPC's usual setting).
        let _ = tcp.set_nodelay(true);
        let Some(handshake) = gate.admission.begin_handshake() else {
            tracing::debug!(%remote, "too many handshakes; gRPC connection refused");
            continue;
        };
        let (node, gate, front) = (node.clone(), gate.clone(), front.clone());
        let budget = Arc::new(Budget::new(
            limits.connection_buffer_bytes,
            gate.buffers.clone(),
            limits.buffer_bytes,
        ));
        let idle_timeout = limits.idle_timeout;
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
            let _slot = match gate.admission.admit(&principal) {
                Ok(slot) => slot,
                Err(refusal) => {
                    tracing::info!(%remote, ?principal, reason = refusal.reason, "gRPC connection refused");
                    return;
                }
            };
            // As on the QUIC front: a certificate refused later (revoked, a new CA) ends
            // the connection, and so does a connection idle for the idle timeout.
            let chain = (io.get_ref().1.peer_certificates())
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let tls = node.tls().subscribe();
            let activity = Activity::new();
            let watched = activity.clone();
            let ends: http2::Ending = Box::pin(async move {
                tokio::select! {
                    reason = crate::tls::refused_since(tls, pki::Role::Client, chain) => {
                        tracing::info!(%remote, %reason, "closing a gRPC connection: its certificate is refused now");
                    }
                    () = watched.idle(idle_timeout) => {
                        tracing::debug!(%remote, "closing an idle gRPC connection");
                    }
                }
            });
            let peer = Peer {
                principal,
                budget,
                watches: Arc::default(),
                watch_deliveries: crate::server::watch_stream::delivery_bytes(),
                activity,
            };
            let turns = Arc::new(batched::Turns::default());
            let io = batched::Batched::new(io, turns.clone());
            turns
                .count(front.serve(io, peer, ends, node.stopping()))
                .await;
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

/// An in-memory HTTP/2 connection for the front's unit tests: the server's side, and the
/// client's ready to send (its connection driven on a task of its own).
#[cfg(test)]
pub(super) async fn h2_pair(
    client: &h2::client::Builder,
) -> (
    h2::server::Connection<tokio::io::DuplexStream, bytes::Bytes>,
    h2::client::SendRequest<bytes::Bytes>,
) {
    let (near, far) = tokio::io::duplex(1 << 20);
    let server = tokio::spawn(h2::server::handshake(near));
    let (sender, conn) = client
        .handshake::<_, bytes::Bytes>(far)
        .await
        .expect("client handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let server = server.await.expect("the handshake task");
    let server = server.expect("server handshake");
    (server, sender.ready().await.expect("ready"))
}
