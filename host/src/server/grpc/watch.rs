//! etcd's watch stream: one bidirectional stream carries many watches, each known by its
//! watch id. Every watch runs the driver the QUIC front uses (`watch_stream::drive`), with
//! a sink that tags its responses with the watch's id and feeds the stream, in the order
//! etcd's clients expect: a `created` response first, whatever follows.
//!
//! Bounds: a connection holds at most [`MAX_WATCHES`] live watches, over all its streams
//! (a create past it is answered canceled); a canceled watch counts until its task has
//! ended. A watch builds a response only holding a reservation of its connection's
//! `DELIVERY_BYTES`, given back when tonic takes the response off the stream's channel (as
//! a QUIC watch gives it back once QUIC has the response). Ids are never reused on a
//! stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use etch_etcd_api::etcdserverpb as pb;
use etch_proto::Error;
use etch_proto::watch::{WatchControl, WatchResponse};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{self, status};
use super::services::{Etcd, Stream, peer};
use super::{Peer, own_header as header};
use crate::node::Node;
use crate::server::watch_stream::{Gone, OpenStream, Room, WatchSink, drive};

/// Live watches one connection may hold.
pub(super) const MAX_WATCHES: usize = 1024;

/// etcd's watch id for a create refused before it became a watch.
const NO_WATCH: i64 = -1;

/// Responses waiting in one stream's channel for tonic to take them.
const RESPONSES: usize = 16;

/// A response, with the delivery reservation it was built under (none for the stream's own
/// refusals), released when tonic takes it.
type Responses = mpsc::Sender<(
    Result<pb::WatchResponse, Status>,
    Option<OwnedSemaphorePermit>,
)>;

#[tonic::async_trait]
impl pb::watch_server::Watch for Etcd {
    type WatchStream = Stream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: tonic::Request<Streaming<pb::WatchRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let peer = peer(&req)?.clone();
        let (tx, rx) = mpsc::channel(RESPONSES);
        tokio::spawn(serve(self.node.clone(), peer, req.into_inner(), tx));
        let responses = ReceiverStream::new(rx).map(|(response, _delivered)| response);
        Ok(tonic::Response::new(Box::pin(responses)))
    }
}

/// Reads the client's half of one watch stream until it ends; its watches end with it.
async fn serve(node: Node, peer: Peer, mut inbound: Streaming<pb::WatchRequest>, tx: Responses) {
    use pb::watch_request::RequestUnion;
    let _open = OpenStream::count();
    let mut watches: HashMap<i64, mpsc::Sender<WatchControl>> = HashMap::new();
    let mut next_id: i64 = 0;
    loop {
        let message = match inbound.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            // A request cut off (its read deadline) or a broken stream: the client is told
            // why, rather than shown a clean end, if it has room for it (one that does not
            // read is not waited on); its watches end first.
            Err(status) => {
                drop((inbound, watches));
                let _ = tx.try_send((Err(status), None));
                return;
            }
        };
        // Watches whose task has ended (canceled, compacted, permission lost) leave.
        watches.retain(|_, control| !control.is_closed());
        match message.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let id = if create.watch_id != 0 {
                    create.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id += 1;
                    next_id - 1
                };
                let refusal = if watches.contains_key(&id) {
                    Some("etcdserver: watch id already in use on this stream".to_owned())
                } else if peer.watches.load(Ordering::Relaxed) >= MAX_WATCHES {
                    Some(format!(
                        "etcdserver: a connection holds at most {MAX_WATCHES} watches"
                    ))
                } else {
                    None
                };
                let request = match (refusal, convert::watch_create(create)) {
                    (None, Ok(request)) => request,
                    (Some(reason), _) => {
                        let _ = tx.send((Ok(refused(&node, reason)), None)).await;
                        continue;
                    }
                    (None, Err(e)) => {
                        let _ = tx
                            .send((Ok(refused(&node, e.message().to_owned())), None))
                            .await;
                        continue;
                    }
                };
                let (control, controls) = mpsc::channel(4);
                watches.insert(id, control);
                let live = Live::count(&peer.watches);
                let mut sink = Sink {
                    id,
                    node: node.clone(),
                    tx: tx.clone(),
                    room: Room::new(peer.watch_deliveries.clone()),
                    controls: Some(controls),
                    created: false,
                };
                let (node, principal) = (node.clone(), peer.principal.clone());
                tokio::spawn(async move {
                    drive(node, &principal, request, &mut sink).await;
                    drop(live);
                });
            }
            // The entry stays until the watch's task has ended: it still counts.
            Some(RequestUnion::CancelRequest(cancel)) => {
                if let Some(control) = watches.get(&cancel.watch_id) {
                    let _ = control.send(WatchControl::Cancel).await;
                }
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                for control in watches.values() {
                    let _ = control.send(WatchControl::Progress).await;
                }
            }
            None => {}
        }
    }
    // Dropping the controls ends every watch of the stream.
}

/// One live watch of a connection, counted while it lives.
struct Live(Arc<AtomicUsize>);

impl Live {
    fn count(watches: &Arc<AtomicUsize>) -> Live {
        watches.fetch_add(1, Ordering::Relaxed);
        Live(watches.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A create refused before it became a watch: `created` and `canceled` at once, with
/// etcd's id for no watch, `reason` why.
fn refused(node: &Node, reason: String) -> pb::WatchResponse {
    pb::WatchResponse {
        header: header(node),
        watch_id: NO_WATCH,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    }
}

/// One watch's place on the shared stream.
struct Sink {
    id: i64,
    node: Node,
    tx: Responses,
    /// Its reservation of the connection's delivery bytes.
    room: Room,
    controls: Option<mpsc::Receiver<WatchControl>>,
    /// Whether the `created` response went out: etcd's clients pair every other response
    /// with a watch they saw created.
    created: bool,
}

impl Sink {
    async fn deliver(&mut self, resp: pb::WatchResponse) -> Result<(), Gone> {
        self.created |= resp.created;
        let room = self.room.take().await?;
        self.tx.send((Ok(resp), Some(room))).await.map_err(|_| Gone)
    }
}

impl WatchSink for Sink {
    async fn ready(&mut self, bytes: usize) {
        self.room.wait(bytes).await;
    }

    fn idle(&mut self) {
        self.room.release();
    }

    async fn send(&mut self, resp: WatchResponse) -> Result<(), Gone> {
        if !self.created && !resp.created {
            // A watch canceled at once (its start revision was compacted): created first,
            // as etcd answers, then the cancellation.
            let created = pb::WatchResponse {
                header: header(&self.node),
                watch_id: self.id,
                created: true,
                ..Default::default()
            };
            self.deliver(created).await?;
        }
        let mut response = etch_proto::Response::Watch(resp);
        self.node.fill_header(&mut response);
        let etch_proto::Response::Watch(resp) = response else {
            return Err(Gone);
        };
        let resp = convert::watch_response(resp, self.id);
        self.deliver(resp).await
    }

    async fn fail(&mut self, error: Error) {
        let reason = status(error).message().to_owned();
        let resp = if self.created {
            pb::WatchResponse {
                header: header(&self.node),
                watch_id: self.id,
                canceled: true,
                cancel_reason: reason,
                ..Default::default()
            }
        } else {
            refused(&self.node, reason)
        };
        let _ = self.deliver(resp).await;
    }

    fn controls(&mut self) -> mpsc::Receiver<WatchControl> {
        self.controls.take().unwrap_or_else(|| mpsc::channel(1).1)
    }
}
