//! The front's own unary path, for `KV/Range`: the request message read straight off its
//! h2 stream, the same service code as tonic's route (`Etcd::range_as`), and the answer
//! encoded once and sent as one DATA frame and its trailers. It speaks what tonic would:
//! the same limits, deadlines and statuses (the tests of `grpc_front.rs` hold both paths to
//! them).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use etch_etcd_api::etcdserverpb as pb;
use h2::RecvStream;
use h2::server::SendResponse;
use http::HeaderMap;
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use super::Peer;
use super::http2::{Front, capacity, reply_status, timed_out, until_reset};

/// The path of the RPC this module answers.
pub(super) const RANGE: &str = "/etcdserverpb.KV/Range";

/// The gRPC envelope: a compressed flag and a 4-byte length.
const ENVELOPE: usize = 5;

/// Whether a request's messages are sent as they are (no `grpc-encoding`, or `identity`).
/// A compressed one is left to tonic, which refuses it as it refuses any.
pub(super) fn uncompressed(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_none_or(|encoding| encoding.as_bytes() == b"identity")
}

/// Answers a `KV/Range` request: on the calling task if it reads one key, on a task of its
/// own if it reads a range (whose answer may take long to build).
pub(super) async fn range(
    front: Arc<Front>,
    peer: Peer,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    deadline: Instant,
) {
    let read = tokio::time::timeout_at(deadline, message(request.into_body(), front.max_in));
    let message = match until_reset(&mut respond, read).await {
        None => return,
        Some(Ok(Ok(message))) => message,
        Some(Ok(Err(status))) => return reply_status(respond, &status),
        Some(Err(_elapsed)) => return reply_status(respond, &timed_out()),
    };
    let range = match pb::RangeRequest::decode(message) {
        Ok(range) => range,
        Err(e) => return reply_status(respond, &Status::internal(e.to_string())),
    };
    if range.range_end.is_empty() {
        answer(front, peer, range, respond, deadline).await;
    } else {
        tokio::spawn(answer(front, peer, range, respond, deadline));
    }
}

async fn answer(
    front: Arc<Front>,
    peer: Peer,
    range: pb::RangeRequest,
    mut respond: SendResponse<Bytes>,
    deadline: Instant,
) {
    let asked = tokio::time::timeout_at(deadline, front.etcd.range_as(&peer, range));
    let (message, held) = match until_reset(&mut respond, asked).await {
        None => return,
        Some(Ok(Ok(answered))) => answered,
        Some(Ok(Err(status))) => return reply_status(respond, &status),
        Some(Err(_elapsed)) => return reply_status(respond, &timed_out()),
    };
    let len = message.encoded_len();
    if len > front.max_out {
        let status = Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {} bytes",
            front.max_out
        ));
        return reply_status(respond, &status);
    }
    let mut data = BytesMut::with_capacity(ENVELOPE + len);
    data.put_u8(0);
    data.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut data);
    let head = http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .expect("a static response head");
    let mut send = match respond.send_response(head, false) {
        Ok(send) => send,
        Err(e) => return tracing::debug!(error = %e, "sending a gRPC response head failed"),
    };
    let sent = async {
        capacity(&mut send).await?;
        send.send_data(data.freeze(), false)?;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers)
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "sending a gRPC answer failed");
    }
    // The answer's charge on the connection's budget ends once h2 holds the answer.
    drop(held);
}

/// Reads one gRPC message off `body`, each piece given back to the peer's window once
/// read: refused when it says it is longer than `max`, compressed, or cut short.
async fn message(mut body: RecvStream, max: usize) -> Result<Bytes, Status> {
    let mut got = BytesMut::new();
    let mut first: Option<Bytes> = None;
    loop {
        let have = first.as_ref().map_or(got.len(), Bytes::len);
        if have >= ENVELOPE {
            let head = first.as_deref().unwrap_or(&got[..]);
            if head[0] != 0 {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ));
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > max {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {max} bytes"
                )));
            }
            if have >= ENVELOPE + len {
                // Most messages come in one DATA frame: slice it, do not copy it.
                return Ok(match first {
                    Some(mut whole) => whole.split_off(ENVELOPE).split_to(len),
                    None => {
                        got.advance(ENVELOPE);
                        got.split_to(len).freeze()
                    }
                });
            }
        }
        let Some(data) = body.data().await else {
            return Err(if have == 0 {
                Status::internal("Missing request message.")
            } else {
                Status::internal("Unexpected EOF decoding stream.")
            });
        };
        let data = data.map_err(|e| Status::internal(format!("h2 protocol error: {e}")))?;
        let _ = body.flow_control().release_capacity(data.len());
        match first.take() {
            None if got.is_empty() => first = Some(data),
            Some(earlier) => {
                got.extend_from_slice(&earlier);
                got.extend_from_slice(&data);
            }
            None => got.extend_from_slice(&data),
        }
    }
}
