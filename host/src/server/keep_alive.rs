//! A lease keep-alive stream: the first frame was `Request::LeaseKeepAlive`, later frames are
//! bare [`LeaseKeepAliveRequest`]s, each answered with one `Result<Response, Error>`.
//! Keep-alives run on the leader; on a follower each frame is forwarded to it as a unary
//! request (through `Node::handle`), so a leader change mid-stream is invisible here.

use std::sync::Arc;

use etch_proto::frame;
use etch_proto::lease::LeaseKeepAliveRequest;
use etch_proto::{DEFAULT_MAX_RESPONSE_BYTES, Error, Request, Response};

use crate::node::Node;

/// Serves a keep-alive stream: `first`, then one answer per [`LeaseKeepAliveRequest`]
/// frame, until the client finishes its side. A follower forwards each one to the leader.
pub(super) async fn serve_keep_alive(
    node: Node,
    principal: Arc<str>,
    first: LeaseKeepAliveRequest,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max = node.options().max_request_bytes;
    let mut next = Some(first);
    while let Some(req) = next.take() {
        let answer = node.handle(&principal, Request::LeaseKeepAlive(req)).await;
        if let Err(e) = frame::write(&mut send, &answer, DEFAULT_MAX_RESPONSE_BYTES).await {
            tracing::debug!(error = %e, "keep-alive client went away");
            return;
        }
        next = match frame::read::<_, LeaseKeepAliveRequest>(&mut recv, max).await {
            Ok(next) => next,
            Err(e) => {
                let refusal: Result<Response, Error> =
                    Err(Error::InvalidArgument(format!("bad keep-alive frame: {e}")));
                let _ = frame::write(&mut send, &refusal, DEFAULT_MAX_RESPONSE_BYTES).await;
                None
            }
        };
    }
    let _ = send.finish();
}
