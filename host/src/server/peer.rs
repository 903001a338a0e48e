//! The peer endpoint: Raft RPCs, snapshot streams and forwarded client requests.
//!
//! Only node certificates get through the handshake (see `etch_proto::pki`), and only a
//! node that is a member of this cluster (or a learner being added) is served: the sender
//! an envelope names must be the node its certificate names. Every stream starts with an
//! envelope naming the cluster and the receiver; a mismatch is refused with a reason, so a
//! node of another cluster, or one reached at a stale address, is told why.

use std::sync::Arc;

use etch_proto::frame::{self, FrameError};
use etch_proto::pki;
use openraft::Snapshot;
use rustls::pki_types::CertificateDer;

use crate::node::Node;
use crate::raft::snapshot::SnapshotData;
use crate::raft::wire::{Envelope, MAX_PEER_FRAME, PeerRequest, PeerResponse};
use crate::tls;
use crate::{NodeId, node_id};

/// Accepts peer connections until the endpoint is closed.
pub async fn serve_peers(endpoint: quinn::Endpoint, node: Node) {
    while let Some(incoming) = endpoint.accept().await {
        let node = node.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    let Some((chain, peer)) = peer_of(&conn) else {
                        tracing::info!(%remote, "refused a peer connection: the certificate names no node");
                        conn.close(1u32.into(), b"the certificate names no node");
                        return;
                    };
                    let refused =
                        tls::refused_since(node.tls().subscribe(), pki::Role::Node, chain);
                    tokio::pin!(refused);
                    loop {
                        tokio::select! {
                            accepted = conn.accept_bi() => match accepted {
                                Ok((send, recv)) => {
                                    let (node, peer) = (node.clone(), peer.clone());
                                    tokio::spawn(serve_stream(send, recv, node, peer));
                                }
                                Err(e) => {
                                    tracing::debug!(%remote, reason = %e, "peer connection ended");
                                    return;
                                }
                            },
                            reason = &mut refused => {
                                tracing::info!(%remote, peer = %peer.name.escape_debug(), %reason, "closing a peer connection: its certificate is refused now");
                                tls::close_revoked(&conn, &reason);
                                return;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(%remote, error = %e, "refused a peer connection"),
            }
        });
    }
}

/// Who is at the other end of a peer connection: the node its certificate was issued for.
#[derive(Clone, Debug)]
struct Peer {
    name: Arc<str>,
    id: NodeId,
}

fn peer_of(conn: &quinn::Connection) -> Option<(Vec<CertificateDer<'static>>, Peer)> {
    let chain = tls::peer_chain(conn)?;
    let name = pki::node_name(chain.first()?).ok()??;
    let peer = Peer {
        id: node_id(&name),
        name: name.into(),
    };
    Some((chain, peer))
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    node: Node,
    peer: Peer,
) {
    let envelope = match frame::read::<_, Envelope>(&mut recv, MAX_PEER_FRAME).await {
        Ok(Some(envelope)) => envelope,
        Ok(None) => return,
        Err(e @ (FrameError::TooLarge { .. } | FrameError::Malformed(_))) => {
            let _ = recv.stop(1u32.into());
            reply(&mut send, &PeerResponse::Refused(e.to_string())).await;
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "peer stream broke before a request");
            return;
        }
    };
    let response = match admit(&node, &peer, &envelope).await {
        Err(refusal) => {
            if let PeerResponse::Refused(reason) | PeerResponse::NotAMember(reason) = &refusal {
                tracing::warn!(peer = %peer.name.escape_debug(), from = format_args!("{:x}", envelope.from), %reason, "refused a peer request");
            }
            refusal
        }
        Ok(()) => answer(&node, envelope.from, envelope.body, &mut recv).await,
    };
    reply(&mut send, &response).await;
}

/// Checks that the envelope comes from the node its certificate names, that this node is a
/// member (or a learner being added) of our cluster, and that it is meant for this node of
/// this cluster. A CA-signed certificate of a node that is not a member — never was, or was
/// removed — can neither vote, append, forward nor read: it could otherwise depose the
/// leader with one vote or commit entries of its own.
/// The refusal is the answer to send: `NotAMember` when the sender is no member, which a
/// removed node counts to learn that it was removed (`Node::removed`).
async fn admit(node: &Node, peer: &Peer, envelope: &Envelope) -> Result<(), PeerResponse> {
    if envelope.from != peer.id {
        return Err(PeerResponse::Refused(format!(
            "the request names sender {:x}, but the certificate is node {:?} ({:x})",
            envelope.from, peer.name, peer.id
        )));
    }
    if envelope.to != node.id() {
        return Err(PeerResponse::Refused(format!(
            "this is node {:x} ({}), not {:x}",
            node.id(),
            node.options().name,
            envelope.to
        )));
    }
    let ours = node.peers().cluster_id();
    let theirs = envelope.cluster_id;
    if ours != 0 && theirs != 0 && ours != theirs {
        return Err(PeerResponse::Refused(format!(
            "cluster id mismatch: this node is in cluster {ours:x}, the request is from {theirs:x}"
        )));
    }
    if !node.admits_peer(peer.id).await {
        return Err(PeerResponse::NotAMember(format!(
            "node {:?} ({:x}) is not a member of this cluster",
            peer.name, peer.id
        )));
    }
    // A joining node learns the cluster id from the first member that reaches it.
    if ours == 0 && theirs != 0 {
        node.adopt_cluster_id(theirs)
            .await
            .map_err(|e| PeerResponse::Refused(format!("cannot record the cluster id: {e}")))?;
    }
    Ok(())
}

async fn answer(
    node: &Node,
    from: crate::NodeId,
    body: PeerRequest,
    recv: &mut quinn::RecvStream,
) -> PeerResponse {
    match body {
        PeerRequest::Append(rpc) => {
            if let Some(leader) = rpc
                .vote
                .leader_id()
                .voted_for()
                .filter(|_| rpc.vote.is_committed())
            {
                node.note_leader_contact(leader);
            }
            let (started, entries) = (std::time::Instant::now(), rpc.entries.len());
            let answer = node.raft().append_entries(rpc).await;
            tracing::trace!(
                entries,
                took_us = started.elapsed().as_micros() as u64,
                "appended"
            );
            PeerResponse::Append(answer)
        }
        PeerRequest::Vote(rpc) => PeerResponse::Vote(node.raft().vote(rpc).await),
        PeerRequest::Snapshot {
            vote,
            meta,
            body_len,
        } => {
            let file = match node.snapshots().receive(&meta, body_len, recv).await {
                Ok(file) => file,
                Err(e) => {
                    return PeerResponse::Refused(format!("cannot receive the snapshot: {e}"));
                }
            };
            let snapshot = Snapshot {
                meta,
                snapshot: Box::new(SnapshotData::File(file)),
            };
            PeerResponse::Snapshot(node.raft().install_full_snapshot(vote, snapshot).await)
        }
        PeerRequest::Forward { principal, request } => {
            PeerResponse::Forward(node.handle_forwarded(&principal, request).await)
        }
        PeerRequest::Hello => PeerResponse::Hello {
            name: node.options().name.clone(),
            client_addr: node.advertised_client_addr(),
        },
        PeerRequest::IsMember { id } => PeerResponse::IsMember(node.member(id).is_some()),
        PeerRequest::HoldElections { for_ms } => match node.hold_elections(from, for_ms) {
            Ok(()) => PeerResponse::Held,
            Err(reason) => PeerResponse::Refused(reason),
        },
        PeerRequest::Campaign { after_ms, for_ms } => {
            match node.campaign(from, after_ms, for_ms).await {
                Ok(leads) => PeerResponse::Campaigned(leads),
                Err(reason) => PeerResponse::Refused(reason),
            }
        }
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.read_index_for_follower().await),
        PeerRequest::HashKv { revision } => {
            let store = node.store().clone();
            PeerResponse::HashKv(
                crate::node::blocking(move || store.hash_kv(revision))
                    .await
                    .flatten(),
            )
        }
    }
}

async fn reply(send: &mut quinn::SendStream, response: &PeerResponse) {
    match frame::write(send, response, MAX_PEER_FRAME).await {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(e) => tracing::debug!(error = %e, "cannot answer a peer"),
    }
}
