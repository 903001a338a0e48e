//! etcd's watch stream: one bidirectional stream carries many watches, each known by its
//! watch id. Every watch runs the driver the QUIC front uses (`watch_stream::drive`), with
//! a sink that tags its responses with the watch's id and feeds the stream.
//!
//! Bounds: at most [`MAX_WATCHES`] live watches per stream (a create past it is answered
//! canceled); responses wait in a small channel, so a client that does not read holds its
//! watchers up, and the hub sends them back to history once their queues are full, as for
//! a QUIC watch.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use etch_etcd_api::etcdserverpb as pb;
use etch_proto::Error;
use etch_proto::watch::{WatchControl, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{self, status};
use super::services::{Etcd, Stream, principal};
use crate::node::Node;
use crate::server::watch_stream::{WatchSink, drive};

/// Live watches one stream may hold.
pub(super) const MAX_WATCHES: usize = 1024;

type Responses = mpsc::Sender<Result<pb::WatchResponse, Status>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for Etcd {
    type WatchStream = Stream<pb::WatchResponse>;

    async fn watch(
        &self,
        req: tonic::Request<Streaming<pb::WatchRequest>>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let principal = principal(&req)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(serve(self.node.clone(), principal, req.into_inner(), tx));
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Reads the client's half of one watch stream until it ends; its watches end with it.
async fn serve(
    node: Node,
    principal: Arc<str>,
    mut inbound: Streaming<pb::WatchRequest>,
    tx: Responses,
) {
    use pb::watch_request::RequestUnion;
    let mut watches: HashMap<i64, mpsc::Sender<WatchControl>> = HashMap::new();
    let mut next_id: i64 = 0;
    while let Ok(Some(message)) = inbound.message().await {
        // Watches that ended on their own (compacted, permission lost) leave the map.
        watches.retain(|_, control| !control.is_closed());
        match message.request_union {
            Some(RequestUnion::CreateRequest(create)) => {
                let id = if create.watch_id != 0 {
                    create.watch_id
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                let refusal = if watches.contains_key(&id) {
                    Some("etcdserver: watch id already in use on this stream".to_owned())
                } else if watches.len() >= MAX_WATCHES {
                    Some(format!(
                        "etcdserver: a watch stream holds at most {MAX_WATCHES} watches"
                    ))
                } else {
                    None
                };
                let request = match (refusal, convert::watch_create(create)) {
                    (None, Ok(request)) => request,
                    (Some(reason), _) => {
                        let _ = tx.send(Ok(refused(id, reason))).await;
                        continue;
                    }
                    (None, Err(e)) => {
                        let _ = tx.send(Ok(refused(id, e.message().to_owned()))).await;
                        continue;
                    }
                };
                let (control, controls) = mpsc::channel(4);
                watches.insert(id, control);
                let mut sink = Sink {
                    id,
                    node: node.clone(),
                    tx: tx.clone(),
                };
                let (node, principal) = (node.clone(), principal.clone());
                tokio::spawn(async move {
                    drive(node, &principal, request, &mut sink, controls).await;
                });
            }
            Some(RequestUnion::CancelRequest(cancel)) => {
                if let Some(control) = watches.remove(&cancel.watch_id) {
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

/// A create answered at once with `canceled` (and `created`, as etcd does), `reason` why.
fn refused(id: i64, reason: String) -> pb::WatchResponse {
    pb::WatchResponse {
        watch_id: id,
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
}

impl WatchSink for Sink {
    fn send(
        &mut self,
        resp: WatchResponse,
    ) -> Pin<Box<dyn Future<Output = Result<(), ()>> + Send + '_>> {
        Box::pin(async move {
            let mut response = etch_proto::Response::Watch(resp);
            self.node.fill_header(&mut response);
            let etch_proto::Response::Watch(resp) = response else {
                return Err(());
            };
            let resp = convert::watch_response(resp, self.id);
            self.tx.send(Ok(resp)).await.map_err(|_| ())
        })
    }

    fn fail(&mut self, error: Error) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let reason = status(error).message().to_owned();
            let _ = self.tx.send(Ok(refused(self.id, reason))).await;
        })
    }
}
