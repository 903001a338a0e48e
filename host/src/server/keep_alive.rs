//! A lease keep-alive stream: the first frame was `Request::LeaseKeepAlive`, later frames are
//! bare [`LeaseKeepAliveRequest`]s, each answered with one `Result<Response, Error>`.
//! Keep-alives run on the leader; on a follower each frame is forwarded to it as a unary
//! request (through `Node::handle`), so a leader change mid-stream is invisible here.

use std::sync::Arc;

use etch_proto::codes;
use etch_proto::frame::{self, FrameError};
use etch_proto::lease::LeaseKeepAliveRequest;
use etch_proto::{DEFAULT_MAX_RESPONSE_BYTES, Error, Request, Response};

use crate::node::Node;

/// Serves a keep-alive stream: `first`, then one answer per [`LeaseKeepAliveRequest`]
/// frame, until the client finishes its side. A follower forwards each one to the leader.
/// The stream may wait any time for its next frame, but a frame once started must arrive
/// within the read deadline, and each answer must be taken within the write deadline.
pub(super) async fn serve_keep_alive(
    node: Node,
    principal: Arc<str>,
    first: LeaseKeepAliveRequest,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let max = node.options().max_request_bytes;
    let limits = node.options().client_limits.clone();
    let mut next = Some(first);
    while let Some(req) = next.take() {
        let answer = node.handle(&principal, Request::LeaseKeepAlive(req)).await;
        let write = frame::write(&mut send, &answer, DEFAULT_MAX_RESPONSE_BYTES);
        match tokio::time::timeout(limits.write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "keep-alive client went away");
                return;
            }
            Err(_) => {
                // A client that stops reading its answers would pin this one for ever.
                let _ = send.reset(codes::stream::WRITE_TIMEOUT.into());
                return;
            }
        }
        let read = frame::read_started_within(&mut recv, max, limits.read_timeout);
        next = match read.await {
            Ok(next) => next,
            Err(FrameError::TimedOut(_)) => {
                let _ = recv.stop(codes::stream::READ_TIMEOUT.into());
                let _ = send.reset(codes::stream::READ_TIMEOUT.into());
                return;
            }
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
