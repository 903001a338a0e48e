//! etcd's services over the node: each RPC becomes one internal request for
//! [`Node::handle`] (the entry point the QUIC front uses too) on behalf of the connection's
//! principal, and its answer goes back as etcd's message. The watch stream is `watch.rs`.

use std::pin::Pin;
use std::sync::Arc;

use etch_etcd_api::etcdserverpb as pb;
use etch_proto::lease::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use etch_proto::{Error, Request, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{self, header, status};
use super::http2::ENVELOPE;
use super::{Held, Peer};
use crate::node::Node;

/// The node behind every service of the gRPC front.
#[derive(Clone)]
pub(crate) struct Etcd {
    pub(super) node: Node,
}

type Answer<T> = Result<tonic::Response<T>, Status>;
pub(super) type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// The peer a request came from.
pub(super) fn peer<T>(req: &tonic::Request<T>) -> Result<&Peer, Status> {
    (req.extensions().get::<Peer>())
        .ok_or_else(|| Status::unauthenticated("etcdserver: no client certificate"))
}

/// The principal of the connection a request came on (its certificate's common name).
pub(super) fn principal<T>(req: &tonic::Request<T>) -> Result<Arc<str>, Status> {
    peer(req).map(|p| p.principal.clone())
}

/// `message` as the answer to `req`, charged to its connection's budget until its body is
/// sent ([`Held`]); refused when the connection holds too many answers it has not read.
fn charged<T, U: prost::Message>(req: &tonic::Request<T>, message: U) -> Answer<U> {
    charged_to(peer(req)?, message)
}

/// [`charged`], to `peer`'s budget.
fn charged_to<U: prost::Message>(peer: &Peer, message: U) -> Answer<U> {
    let held = charge(peer, &message)?;
    Ok(held_response(message, held))
}

/// `message` as a response whose extensions carry its charge to the stream that sends it.
fn held_response<U>(message: U, held: Held) -> tonic::Response<U> {
    let mut response = tonic::Response::new(message);
    response.extensions_mut().insert(held);
    response
}

/// The charge of `message` on `peer`'s budget; refused when the connection holds too many
/// answers it has not read.
fn charge<U: prost::Message>(peer: &Peer, message: &U) -> Result<Held, Status> {
    let bytes = message.encoded_len() + ENVELOPE;
    let charge = peer.budget.try_reserve(bytes).ok_or_else(|| {
        Status::resource_exhausted(format!(
            "etcdserver: no room for an answer of {bytes} bytes: this connection holds too many answers it has not read"
        ))
    })?;
    Ok(Held {
        _charge: Arc::new(charge),
    })
}

/// The node answered a request with the answer of another kind (never expected).
fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: the node answered with {what}"))
}

impl Etcd {
    /// Runs `request` for the principal of `req` and hands the answer to `pick` (`None`:
    /// not the answer the request has).
    pub(super) async fn call<T, U: prost::Message>(
        &self,
        req: &tonic::Request<T>,
        request: Request,
        pick: impl FnOnce(Response) -> Option<U>,
    ) -> Answer<U> {
        let peer = peer(req)?.clone();
        self.call_as(&peer, request, pick).await
    }

    /// [`Etcd::call`] for `peer`, whose request has been taken apart already (its bytes
    /// moved into `request`, not copied).
    async fn call_as<U: prost::Message>(
        &self,
        peer: &Peer,
        request: Request,
        pick: impl FnOnce(Response) -> Option<U>,
    ) -> Answer<U> {
        let (message, held) = self.answer_as(peer, request, pick).await?;
        Ok(held_response(message, held))
    }

    /// [`Etcd::call_as`]'s answer and its charge on the connection's budget, apart.
    async fn answer_as<U: prost::Message>(
        &self,
        peer: &Peer,
        request: Request,
        pick: impl FnOnce(Response) -> Option<U>,
    ) -> Result<(U, Held), Status> {
        let response = (self.node.handle(&peer.principal, request).await).map_err(status)?;
        let message = pick(response).ok_or_else(|| unexpected("another kind"))?;
        let held = charge(peer, &message)?;
        Ok((message, held))
    }

    /// A `KV/Range` for `peer`, and its answer's charge on the connection's budget: what
    /// tonic's route and the front's own unary path (`unary.rs`) both answer.
    pub(super) async fn range_as(
        &self,
        peer: &Peer,
        req: pb::RangeRequest,
    ) -> Result<(pb::RangeResponse, Held), Status> {
        let range = convert::range_request(req)?;
        self.answer_as(peer, Request::Range(range), |r| match r {
            Response::Range(r) => Some(convert::range_response(r)),
            _ => None,
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Etcd {
    async fn range(&self, req: tonic::Request<pb::RangeRequest>) -> Answer<pb::RangeResponse> {
        let peer = peer(&req)?.clone();
        let (message, held) = self.range_as(&peer, req.into_inner()).await?;
        Ok(held_response(message, held))
    }

    async fn put(&self, req: tonic::Request<pb::PutRequest>) -> Answer<pb::PutResponse> {
        let peer = peer(&req)?.clone();
        let put = convert::put_request(req.into_inner());
        self.call_as(&peer, Request::Put(put), |r| match r {
            Response::Put(r) => Some(convert::put_response(r)),
            _ => None,
        })
        .await
    }

    async fn delete_range(
        &self,
        req: tonic::Request<pb::DeleteRangeRequest>,
    ) -> Answer<pb::DeleteRangeResponse> {
        let peer = peer(&req)?.clone();
        let delete = convert::delete_request(req.into_inner());
        self.call_as(&peer, Request::DeleteRange(delete), |r| match r {
            Response::DeleteRange(r) => Some(convert::delete_response(r)),
            _ => None,
        })
        .await
    }

    async fn txn(&self, req: tonic::Request<pb::TxnRequest>) -> Answer<pb::TxnResponse> {
        let peer = peer(&req)?.clone();
        let txn = convert::txn_request(req.into_inner())?;
        self.call_as(&peer, Request::Txn(txn), |r| match r {
            Response::Txn(r) => Some(convert::txn_response(r)),
            _ => None,
        })
        .await
    }

    async fn compact(
        &self,
        req: tonic::Request<pb::CompactionRequest>,
    ) -> Answer<pb::CompactionResponse> {
        let compact = etch_proto::CompactRequest {
            revision: req.get_ref().revision,
            physical: req.get_ref().physical,
        };
        self.call(&req, Request::Compact(compact), |r| match r {
            Response::Compact(r) => Some(pb::CompactionResponse {
                header: header(&r.header),
            }),
            _ => None,
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Etcd {
    type LeaseKeepAliveStream = Stream<pb::LeaseKeepAliveResponse>;

    async fn lease_grant(
        &self,
        req: tonic::Request<pb::LeaseGrantRequest>,
    ) -> Answer<pb::LeaseGrantResponse> {
        let grant = LeaseGrantRequest {
            ttl: req.get_ref().ttl,
            id: req.get_ref().id,
        };
        self.call(&req, Request::LeaseGrant(grant), |r| match r {
            Response::LeaseGrant(r) => Some(pb::LeaseGrantResponse {
                header: header(&r.header),
                id: r.id,
                ttl: r.ttl,
                error: String::new(),
            }),
            _ => None,
        })
        .await
    }

    async fn lease_revoke(
        &self,
        req: tonic::Request<pb::LeaseRevokeRequest>,
    ) -> Answer<pb::LeaseRevokeResponse> {
        let revoke = LeaseRevokeRequest {
            id: req.get_ref().id,
        };
        self.call(&req, Request::LeaseRevoke(revoke), |r| match r {
            Response::LeaseRevoke(r) => Some(pb::LeaseRevokeResponse {
                header: header(&r.header),
            }),
            _ => None,
        })
        .await
    }

    /// One answer per request, in order. A lease that no longer exists is answered with a
    /// TTL of 0, as etcd does (its clients take that as "expired").
    async fn lease_keep_alive(
        &self,
        req: tonic::Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        let principal = principal(&req)?;
        let node = self.node.clone();
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let mut stopping = node.stopping();
        tokio::spawn(async move {
            loop {
                // A stream ends with its node, as a watch does: shutdown waits for none.
                let next = tokio::select! {
                    next = inbound.message() => Some(next),
                    _ = stopping.wait_for(|stopping| *stopping) => None,
                };
                let next = match next {
                    Some(Ok(Some(next))) => next,
                    // The client ended its side.
                    Some(Ok(None)) => return,
                    // A request cut off (its read deadline), or a broken stream: said if
                    // the client has room for it (one that does not read is not waited on).
                    Some(Err(status)) => {
                        drop(inbound);
                        let _ = tx.try_send(Err(status));
                        return;
                    }
                    None => {
                        let _ = tx
                            .send(Err(Status::unavailable("etcdserver: server stopped")))
                            .await;
                        return;
                    }
                };
                let request = Request::LeaseKeepAlive(LeaseKeepAliveRequest { id: next.id });
                let answer = match node.handle(&principal, request).await {
                    Ok(Response::LeaseKeepAlive(r)) => Ok(pb::LeaseKeepAliveResponse {
                        header: header(&r.header),
                        id: r.id,
                        ttl: r.ttl,
                    }),
                    Err(Error::LeaseNotFound(id)) => Ok(pb::LeaseKeepAliveResponse {
                        header: super::own_header(&node),
                        id,
                        ttl: 0,
                    }),
                    Ok(_) => Err(unexpected("another kind")),
                    Err(e) => Err(status(e)),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: tonic::Request<pb::LeaseTimeToLiveRequest>,
    ) -> Answer<pb::LeaseTimeToLiveResponse> {
        let ttl = LeaseTimeToLiveRequest {
            id: req.get_ref().id,
            keys: req.get_ref().keys,
        };
        let id = ttl.id;
        let principal = principal(&req)?;
        match self
            .node
            .handle(&principal, Request::LeaseTimeToLive(ttl))
            .await
        {
            Ok(Response::LeaseTimeToLive(r)) => charged(
                &req,
                pb::LeaseTimeToLiveResponse {
                    header: header(&r.header),
                    id: r.id,
                    ttl: r.ttl,
                    granted_ttl: r.granted_ttl,
                    keys: (r.keys.into_iter())
                        .map(serde_bytes::ByteBuf::into_vec)
                        .collect(),
                },
            ),
            // etcd answers an unknown lease with TTL -1, not an error.
            Err(Error::LeaseNotFound(_)) => charged(
                &req,
                pb::LeaseTimeToLiveResponse {
                    header: super::own_header(&self.node),
                    id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                },
            ),
            Ok(_) => Err(unexpected("another kind")),
            Err(e) => Err(status(e)),
        }
    }

    async fn lease_leases(
        &self,
        req: tonic::Request<pb::LeaseLeasesRequest>,
    ) -> Answer<pb::LeaseLeasesResponse> {
        self.call(
            &req,
            Request::LeaseLeases(LeaseLeasesRequest {}),
            |r| match r {
                Response::LeaseLeases(r) => Some(pb::LeaseLeasesResponse {
                    header: header(&r.header),
                    leases: (r.leases.into_iter())
                        .map(|id| pb::LeaseStatus { id })
                        .collect(),
                }),
                _ => None,
            },
        )
        .await
    }
}

/// A member as etcd lists it: its addresses as `https://` URLs (clients reach the gRPC
/// front on the client port's number, over TCP).
fn member(m: etch_proto::Member) -> pb::Member {
    let url = |addr: &str| (!addr.is_empty()).then(|| format!("https://{addr}"));
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: url(&m.peer_addr).into_iter().collect(),
        client_ur_ls: url(&m.client_addr).into_iter().collect(),
        is_learner: m.is_learner,
    }
}

/// Hands the backup's pieces to the stream, each within `deadline`, and etcd's frame after
/// them ([`crate::backup::EtcdTrailer`], which etcd's clients look for); the last piece
/// says 0 bytes remain (the others an estimate from the database's size: the backup's
/// length is known only once written). Answers the bytes sent, or why it stopped.
async fn send_snapshot(
    mut chunks: mpsc::Receiver<Vec<u8>>,
    writer: tokio::task::JoinHandle<Result<u64, crate::backup::BackupError>>,
    tx: &mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
    estimate: u64,
    deadline: std::time::Duration,
) -> Result<u64, &'static str> {
    let send = |item| async move {
        match tokio::time::timeout(deadline, tx.send(item)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the client went away"),
            Err(_) => Err("the client did not read it within the write deadline"),
        }
    };
    let mut sent = 0u64;
    let mut pending: Option<Vec<u8>> = None;
    let mut trailer = crate::backup::EtcdTrailer::new();
    while let Some(chunk) = chunks.recv().await {
        trailer.update(&chunk);
        if let Some(blob) = pending.replace(chunk) {
            sent += blob.len() as u64;
            let remaining_bytes = estimate.saturating_sub(sent).max(1);
            send(Ok(pb::SnapshotResponse {
                remaining_bytes,
                blob,
                ..Default::default()
            }))
            .await?;
        }
    }
    match writer.await {
        Ok(Ok(_)) => {
            let mut blob = pending.unwrap_or_default();
            blob.extend_from_slice(&trailer.finish());
            sent += blob.len() as u64;
            send(Ok(pb::SnapshotResponse {
                remaining_bytes: 0,
                blob,
                ..Default::default()
            }))
            .await?;
            Ok(sent)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "snapshot failed");
            let _ = send(Err(Status::internal(format!(
                "etcdserver: snapshot failed: {e}"
            ))))
            .await;
            Err("the backup failed")
        }
        Err(e) => {
            tracing::error!(error = %e, "snapshot writer failed");
            let _ = send(Err(Status::internal("etcdserver: snapshot failed"))).await;
            Err("the backup writer failed")
        }
    }
}

/// The one peer URL of a member request: an etch member has exactly one peer address.
fn one_peer_url(urls: &[String]) -> Result<&String, Status> {
    match urls {
        [url] => Ok(url),
        _ => Err(Status::invalid_argument(format!(
            "etcdserver: an etch member has one peer URL, got {}",
            urls.len()
        ))),
    }
}

fn members(list: Vec<etch_proto::Member>) -> Vec<pb::Member> {
    list.into_iter().map(member).collect()
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Etcd {
    /// etcd names a new member only when it starts; etch derives the id from the name, so
    /// the node must be running at the URL already: its certificate names it.
    async fn member_add(
        &self,
        req: tonic::Request<pb::MemberAddRequest>,
    ) -> Answer<pb::MemberAddResponse> {
        let r = req.get_ref();
        let url = one_peer_url(&r.peer_ur_ls)?;
        let add = etch_proto::MemberAddRequest {
            name: String::new(),
            peer_addr: url.clone(),
            is_learner: r.is_learner,
        };
        self.call(&req, Request::MemberAdd(add), |r| match r {
            Response::MemberAdd(r) => Some(pb::MemberAddResponse {
                header: header(&r.header),
                member: Some(member(r.member)),
                members: members(r.members),
            }),
            _ => None,
        })
        .await
    }

    async fn member_remove(
        &self,
        req: tonic::Request<pb::MemberRemoveRequest>,
    ) -> Answer<pb::MemberRemoveResponse> {
        let remove = etch_proto::MemberRemoveRequest {
            id: req.get_ref().id,
        };
        self.call(&req, Request::MemberRemove(remove), |r| match r {
            Response::MemberRemove(r) => Some(pb::MemberRemoveResponse {
                header: header(&r.header),
                members: members(r.members),
            }),
            _ => None,
        })
        .await
    }

    /// An etch member has one peer address: the request must name one.
    async fn member_update(
        &self,
        req: tonic::Request<pb::MemberUpdateRequest>,
    ) -> Answer<pb::MemberUpdateResponse> {
        let r = req.get_ref();
        let url = one_peer_url(&r.peer_ur_ls)?;
        let update = etch_proto::MemberUpdateRequest {
            id: r.id,
            peer_addr: url.clone(),
        };
        self.call(&req, Request::MemberUpdate(update), |r| match r {
            Response::MemberUpdate(r) => Some(pb::MemberUpdateResponse {
                header: header(&r.header),
                members: members(r.members),
            }),
            _ => None,
        })
        .await
    }

    async fn member_list(
        &self,
        req: tonic::Request<pb::MemberListRequest>,
    ) -> Answer<pb::MemberListResponse> {
        let list = etch_proto::MemberListRequest {};
        self.call(&req, Request::MemberList(list), |r| match r {
            Response::MemberList(r) => Some(pb::MemberListResponse {
                header: header(&r.header),
                members: members(r.members),
            }),
            _ => None,
        })
        .await
    }

    async fn member_promote(
        &self,
        req: tonic::Request<pb::MemberPromoteRequest>,
    ) -> Answer<pb::MemberPromoteResponse> {
        let promote = etch_proto::MemberPromoteRequest {
            id: req.get_ref().id,
        };
        self.call(&req, Request::MemberPromote(promote), |r| match r {
            Response::MemberPromote(r) => Some(pb::MemberPromoteResponse {
                header: header(&r.header),
                members: members(r.members),
            }),
            _ => None,
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Etcd {
    type SnapshotStream = Stream<pb::SnapshotResponse>;

    async fn alarm(&self, req: tonic::Request<pb::AlarmRequest>) -> Answer<pb::AlarmResponse> {
        use etch_proto::alarm::{AlarmAction, AlarmType};
        let action = match pb::alarm_request::AlarmAction::try_from(req.get_ref().action) {
            Ok(pb::alarm_request::AlarmAction::Get) => AlarmAction::Get,
            Ok(pb::alarm_request::AlarmAction::Activate) => AlarmAction::Activate,
            Ok(pb::alarm_request::AlarmAction::Deactivate) => AlarmAction::Deactivate,
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        let alarm = match pb::AlarmType::try_from(req.get_ref().alarm) {
            Ok(pb::AlarmType::None) => AlarmType::None,
            Ok(pb::AlarmType::Nospace) => AlarmType::NoSpace,
            Ok(pb::AlarmType::Corrupt) => AlarmType::Corrupt,
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm type")),
        };
        let request = etch_proto::alarm::AlarmRequest {
            action,
            member_id: req.get_ref().member_id,
            alarm,
        };
        let kind = |a: AlarmType| match a {
            AlarmType::None => pb::AlarmType::None,
            AlarmType::NoSpace => pb::AlarmType::Nospace,
            AlarmType::Corrupt => pb::AlarmType::Corrupt,
        } as i32;
        self.call(&req, Request::Alarm(request), |r| match r {
            Response::Alarm(r) => Some(pb::AlarmResponse {
                header: header(&r.header),
                alarms: (r.alarms.into_iter())
                    .map(|a| pb::AlarmMember {
                        member_id: a.member_id,
                        alarm: kind(a.alarm),
                    })
                    .collect(),
            }),
            _ => None,
        })
        .await
    }

    async fn status(&self, req: tonic::Request<pb::StatusRequest>) -> Answer<pb::StatusResponse> {
        let request = Request::Status(etch_proto::StatusRequest {});
        self.call(&req, request, |r| match r {
            Response::Status(s) => Some(pb::StatusResponse {
                header: header(&s.header),
                version: s.version,
                db_size: s.db_size as i64,
                leader: s.leader.unwrap_or(0),
                raft_index: s.raft_index,
                raft_term: s.raft_term,
                raft_applied_index: s.raft_applied_index,
                errors: s.errors,
                db_size_in_use: s.db_size as i64,
                is_learner: s.is_learner,
            }),
            _ => None,
        })
        .await
    }

    async fn defragment(
        &self,
        req: tonic::Request<pb::DefragmentRequest>,
    ) -> Answer<pb::DefragmentResponse> {
        let request = Request::Defragment(etch_proto::alarm::DefragmentRequest {});
        self.call(&req, request, |r| match r {
            Response::Defragment(r) => Some(pb::DefragmentResponse {
                header: header(&r.header),
            }),
            _ => None,
        })
        .await
    }

    /// etch has no backend file to hash as etcd's `Hash` does: it answers the hash of the
    /// key history at the current revision (`HashKV` at 0), which members at the same
    /// revision agree on, as `Hash` is used.
    async fn hash(&self, req: tonic::Request<pb::HashRequest>) -> Answer<pb::HashResponse> {
        let request = Request::HashKv(etch_proto::HashKvRequest { revision: 0 });
        self.call(&req, request, |r| match r {
            Response::HashKv(r) => Some(pb::HashResponse {
                header: header(&r.header),
                hash: r.hash,
            }),
            _ => None,
        })
        .await
    }

    async fn hash_kv(&self, req: tonic::Request<pb::HashKvRequest>) -> Answer<pb::HashKvResponse> {
        let request = Request::HashKv(etch_proto::HashKvRequest {
            revision: req.get_ref().revision,
        });
        self.call(&req, request, |r| match r {
            Response::HashKv(r) => Some(pb::HashKvResponse {
                header: header(&r.header),
                hash: r.hash,
                compact_revision: r.compact_revision,
                hash_revision: r.hash_revision,
            }),
            _ => None,
        })
        .await
    }

    /// Streams a backup of this node's state in etch's format (`etchctl snapshot restore`
    /// reads it; etcd's tools do not), in pieces of 64 KiB, at most about a megabyte ahead
    /// of the client; a client that reads none for the write deadline is dropped and the
    /// backup stops.
    async fn snapshot(
        &self,
        req: tonic::Request<pb::SnapshotRequest>,
    ) -> Answer<Self::SnapshotStream> {
        let principal = principal(&req)?;
        let (backup, _) = (self.node.begin_backup(&principal).await).map_err(status)?;
        let revision = backup.revision();
        let (chunks, writer) = crate::server::snapshot_stream::write_chunks(backup);
        let (tx, rx) = mpsc::channel(1);
        let estimate = self.node.db_size();
        let deadline = self.node.options().client_limits.write_timeout;
        tokio::spawn(async move {
            let sent = send_snapshot(chunks, writer, &tx, estimate, deadline).await;
            match sent {
                Ok(bytes) => tracing::info!(?principal, revision, bytes, "snapshot sent"),
                Err(why) => tracing::info!(?principal, revision, why, "snapshot not sent"),
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn move_leader(
        &self,
        req: tonic::Request<pb::MoveLeaderRequest>,
    ) -> Answer<pb::MoveLeaderResponse> {
        let request = Request::MoveLeader(etch_proto::alarm::MoveLeaderRequest {
            target_id: req.get_ref().target_id,
        });
        self.call(&req, request, |r| match r {
            Response::MoveLeader(r) => Some(pb::MoveLeaderResponse {
                header: header(&r.header),
            }),
            _ => None,
        })
        .await
    }
}
