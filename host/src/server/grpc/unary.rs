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
use super::http2::{ENVELOPE, Front, declared_len, send_all, within};
use crate::server::activity::OpenStream;
use crate::server::budget::{Budget, Charge};

/// The path of the RPC this module answers.
pub(super) const RANGE: &str = "/etcdserverpb.KV/Range";

/// Whether a request's messages are sent as they are (no `grpc-encoding`, or `identity`).
/// A compressed one is left to tonic, which refuses it as it refuses any.
pub(super) fn uncompressed(headers: &HeaderMap) -> bool {
    headers
        .get("grpc-encoding")
        .is_none_or(|encoding| encoding.as_bytes() == b"identity")
}

/// Answers a `KV/Range` request: on the calling task if it reads one key, on a task of its
/// own if it reads a range (whose answer may take long to build). The request counts as
/// open on its connection (`open`) until its answer is sent.
pub(super) async fn range(
    front: Arc<Front>,
    peer: Peer,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    deadline: Instant,
    open: OpenStream,
) {
    let read = async {
        // The message's charge, if it had one, lasts until it is decoded.
        let (message, _charge) = message(request.into_body(), front.max_in, &peer.budget).await?;
        pb::RangeRequest::decode(message).map_err(|e| Status::internal(e.to_string()))
    };
    let Some(range) = within(&mut respond, deadline, read).await else {
        return;
    };
    if range.range_end.is_empty() {
        answer(front, peer, range, respond, deadline).await;
        drop(open);
    } else {
        tokio::spawn(async move {
            answer(front, peer, range, respond, deadline).await;
            drop(open);
        });
    }
}

async fn answer(
    front: Arc<Front>,
    peer: Peer,
    range: pb::RangeRequest,
    mut respond: SendResponse<Bytes>,
    deadline: Instant,
) {
    let asked = async {
        let (message, held) = front.etcd.range_as(&peer, range).await?;
        let len = message.encoded_len();
        if len > front.max_out {
            return Err(Status::out_of_range(format!(
                "Error, encoded message length too large: found {len} bytes, the limit is: {} bytes",
                front.max_out
            )));
        }
        Ok((message, held, len))
    };
    let Some((message, held, len)) = within(&mut respond, deadline, asked).await else {
        return;
    };
    let mut data = BytesMut::with_capacity(ENVELOPE + len);
    data.put_u8(0);
    data.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    message.encode_raw(&mut data);
    // While the answer waits for the client's windows, only its encoded bytes are kept.
    drop(message);
    let head = http::Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(())
        .expect("a static response head");
    let mut send = match respond.send_response(head, false) {
        Ok(send) => send,
        Err(e) => return tracing::debug!(error = %e, "sending a gRPC response head failed"),
    };
    let sent = async {
        send_all(&mut send, data.freeze(), false).await?;
        let mut trailers = HeaderMap::with_capacity(1);
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        send.send_trailers(trailers)
    };
    if let Err(e) = sent.await {
        tracing::debug!(error = %e, "sending a gRPC answer failed");
    }
    // The answer's charge on the connection's budget ends once h2 holds the last of it.
    drop(held);
}

/// Reads one gRPC message off `body`; one that does not come whole at once is charged to
/// `budget` at its declared length before more of its bytes are taken (and given back to
/// the peer's window). Refused when it says it is longer than `max`, compressed, or cut
/// short. The charge is the caller's to hold until the message is decoded.
async fn message(
    mut body: RecvStream,
    max: usize,
    budget: &Budget,
) -> Result<(Bytes, Option<Charge>), Status> {
    let mut got = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let mut charge = None;
    loop {
        let have = first.as_ref().map_or(got.len(), Bytes::len);
        if have >= ENVELOPE {
            let head = first.as_deref().unwrap_or(&got[..]);
            match head[0] {
                0 => {}
                1 => {
                    return Err(Status::internal(
                        "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                    ));
                }
                flag => {
                    return Err(Status::internal(format!(
                        "protocol error: received message with invalid compression flag: {flag} (valid flags are 0 and 1), while sending request"
                    )));
                }
            }
            let len = declared_len(head);
            if len > max {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {max} bytes"
                )));
            }
            if have >= ENVELOPE + len {
                // Most messages come in one DATA frame: slice it, do not copy it. (One that
                // came whole is not charged: its bytes are here already, within HTTP/2's
                // window, and are decoded at once.)
                let message = match first {
                    Some(mut whole) => whole.split_off(ENVELOPE).split_to(len),
                    None => {
                        got.advance(ENVELOPE);
                        got.split_to(len).freeze()
                    }
                };
                return Ok((message, charge));
            }
            if charge.is_none() {
                charge = Some(budget.reserve(len).await);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What [`message`] reads, with a limit of `max`, from a request whose body is `pieces`,
    /// each its own DATA frame, sent over a real HTTP/2 connection.
    async fn read(pieces: Vec<Vec<u8>>, max: usize) -> Result<Bytes, Status> {
        let node = crate::server::budget::node_budget(1 << 30);
        read_charged(pieces, max, Arc::new(Budget::new(64 << 20, node, 1 << 30))).await
    }

    /// [`read`], charged to `budget`.
    async fn read_charged(
        pieces: Vec<Vec<u8>>,
        max: usize,
        budget: Arc<Budget>,
    ) -> Result<Bytes, Status> {
        let (mut conn, mut client) = super::super::h2_pair(&h2::client::Builder::new()).await;
        let request = http::Request::post("http://etch/etcdserverpb.KV/Range")
            .body(())
            .expect("request");
        let (_answer, mut body) = client.send_request(request, false).expect("send");
        let server = tokio::spawn(async move {
            let (request, _respond) = conn
                .accept()
                .await
                .expect("a request")
                .expect("a valid request");
            let read = message(request.into_body(), max, &budget);
            let mut read = std::pin::pin!(read);
            // Drive the connection while the message is read.
            loop {
                tokio::select! {
                    got = &mut read => return got.map(|(message, _charge)| message),
                    _ = conn.accept() => {}
                }
            }
        });
        for piece in pieces {
            body.send_data(Bytes::from(piece), false).expect("data");
        }
        body.send_data(Bytes::new(), true).expect("end");
        let got = server.await.expect("server");
        drop(client);
        got
    }

    fn enveloped(flag: u8, len: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn a_message_is_read_whole_however_it_is_cut() {
        let payload = b"0123456789".to_vec();
        let whole = enveloped(0, 10, &payload);
        let got = read(vec![whole.clone()], 10).await.expect("one frame");
        assert_eq!(&got[..], &payload[..]);
        // The envelope itself cut in two, the payload in three, an empty frame between.
        let pieces = vec![
            whole[..2].to_vec(),
            Vec::new(),
            whole[2..7].to_vec(),
            whole[7..9].to_vec(),
            whole[9..].to_vec(),
        ];
        let got = read(pieces, 10).await.expect("five frames");
        assert_eq!(&got[..], &payload[..]);
        // Bytes after the message are not part of it.
        let mut more = whole.clone();
        more.extend_from_slice(b"trailing");
        let got = read(vec![more], 10).await.expect("one message");
        assert_eq!(&got[..], &payload[..]);
        // An empty message.
        let got = read(vec![enveloped(0, 0, b"")], 0).await.expect("empty");
        assert!(got.is_empty());
    }

    #[tokio::test]
    async fn a_bad_message_is_refused_as_tonic_refuses_it() {
        // Longer than the limit, by one byte and by 4 GiB: refused from the envelope, before
        // its bytes are waited for.
        for len in [11, u32::MAX] {
            let status = read(vec![enveloped(0, len, b"")], 10)
                .await
                .expect_err("too long");
            assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
            assert!(
                status
                    .message()
                    .contains("decoded message length too large"),
                "{status:?}"
            );
        }
        let status = read(vec![enveloped(1, 3, b"abc")], 10)
            .await
            .expect_err("compressed");
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert!(status.message().contains("compressed-flag"), "{status:?}");
        let status = read(vec![enveloped(2, 3, b"abc")], 10)
            .await
            .expect_err("a flag that means nothing");
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
        assert!(
            status.message().contains("invalid compression flag: 2"),
            "{status:?}"
        );
        let status = read(Vec::new(), 10).await.expect_err("no message");
        assert_eq!(status.message(), "Missing request message.");
        for cut in [vec![vec![0, 0]], vec![enveloped(0, 10, b"01234")]] {
            let status = read(cut, 10).await.expect_err("cut short");
            assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
            assert_eq!(status.message(), "Unexpected EOF decoding stream.");
        }
    }

    /// A message that does not come whole waits for room in its connection's budget before
    /// more of it is taken; one that comes whole is not charged.
    #[tokio::test]
    async fn a_message_cut_in_pieces_waits_for_room_in_the_budget() {
        let node = crate::server::budget::node_budget(1 << 30);
        let budget = Arc::new(Budget::new(100, node, 1 << 30));
        let held = budget.try_reserve(90).expect("room for 90");
        let whole = read_charged(vec![enveloped(0, 50, &[7; 50])], 100, budget.clone());
        let whole = tokio::time::timeout(std::time::Duration::from_secs(10), whole)
            .await
            .expect("a whole message is read without waiting for room");
        assert_eq!(whole.expect("a whole message").len(), 50);
        let reading = tokio::spawn(read_charged(
            vec![enveloped(0, 50, &[7; 10]), vec![7; 40]],
            100,
            budget.clone(),
        ));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!reading.is_finished(), "read without room for it");
        drop(held);
        let got = reading.await.expect("the read").expect("the message");
        assert_eq!(got.len(), 50);
    }

    #[test]
    fn only_identity_is_uncompressed() {
        let mut headers = HeaderMap::new();
        assert!(uncompressed(&headers));
        headers.insert("grpc-encoding", http::HeaderValue::from_static("identity"));
        assert!(uncompressed(&headers));
        headers.insert("grpc-encoding", http::HeaderValue::from_static("gzip"));
        assert!(!uncompressed(&headers));
    }
}
