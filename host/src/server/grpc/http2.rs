//! The gRPC front's HTTP/2 server: h2, driven by one task per connection, and the one
//! dispatch that decides where each request on it runs.
//!
//! - `KV/Range`, the request etcd's clients send most, is answered by the front's own
//!   unary path (`unary.rs`): on the connection's task when it reads one key (bounded
//!   work, no task of its own, no hop between tasks), on a task of its own otherwise.
//! - Every other RPC, and a `KV/Range` whose message is compressed, goes to a task of its
//!   own through tonic's generated services (`services.rs`): its request body is the h2
//!   stream (`Incoming`), its response body is piped back with HTTP/2's flow control
//!   (`pipe`), as hyper would.
//!
//! The task also ends its connection: at once when its certificate is refused since it was
//! made or it has been idle for `--client-idle-timeout` (a GOAWAY; its streams are not
//! waited on), gracefully when the node stops, and when a keep-alive ping is not answered
//! within [`KEEPALIVE_TIMEOUT`].

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tonic::Status;
use tower::Service;

use super::services::Etcd;
use super::{Held, Peer, unary};

/// HTTP/2 settings, hyper's defaults (what the front ran on before it drove h2 itself):
/// 1 MiB windows, 16 KiB frames, a 16 KiB header list, 400 KiB buffered per stream.
const WINDOW: u32 = 1024 * 1024;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How often the node pings a connection, and how long it waits for the answer before it
/// ends the connection (a peer that vanished without a FIN).
pub(super) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub(super) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a connection the node ends at once has to take its GOAWAY.
const ENDING_GRACE: Duration = Duration::from_secs(1);

/// What every connection of the front shares: the node's services, tonic's routes to them,
/// and the limits of a request.
pub(super) struct Front {
    pub(super) etcd: Etcd,
    pub(super) routes: tonic::service::Routes,
    pub(super) max_streams: u32,
    /// The largest request message (`--max-request-bytes` and room for its envelope).
    pub(super) max_in: usize,
    /// The largest response message.
    pub(super) max_out: usize,
    /// How long a unary request has to arrive whole and be answered: the read deadline
    /// plus the node's request timeout, or the client's `grpc-timeout` if sooner.
    pub(super) unary_deadline: Duration,
}

/// Resolves when the node ends a connection at once (having said why in its log).
pub(super) type Ending = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Front {
    /// Serves one admitted connection until it ends: `ends` resolves when the node ends
    /// it at once, `stopping` says when the node stops.
    pub(super) async fn serve<T>(
        self: Arc<Self>,
        io: T,
        peer: Peer,
        ends: Ending,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = h2::server::Builder::new()
            .initial_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .max_frame_size(MAX_FRAME)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
            .max_concurrent_streams(self.max_streams)
            .handshake::<_, Bytes>(io);
        let mut conn = match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, principal = %peer.principal, "not an HTTP/2 connection");
                return;
            }
            Err(_) => {
                tracing::debug!(principal = %peer.principal, "HTTP/2 preface timed out");
                return;
            }
        };
        let mut ping = conn.ping_pong();
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + KEEPALIVE_INTERVAL, KEEPALIVE_INTERVAL);
        let mut unanswered: Option<Instant> = None;
        let mut inline = FuturesUnordered::new();
        let mut ends = ends;
        let (mut ended, mut draining) = (false, false);
        let mut grace = Instant::now();
        loop {
            // The answers made on this task first, then what the peer sent: a turn reads
            // what has come, answers it, and its answers leave together (`Batched`). (The
            // branches' futures are dropped before a branch's handler runs.)
            tokio::select! {
                biased;
                Some(()) = inline.next(), if !inline.is_empty() => {}
                accepted = conn.accept() => match accepted {
                    Some(Ok((request, respond))) => {
                        if let Some(answer) = self.dispatch(request, respond, &peer) {
                            inline.push(answer);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, principal = %peer.principal, "gRPC connection ended");
                        break;
                    }
                    None => break,
                },
                () = &mut ends, if !ended => {
                    // A GOAWAY, and the connection ends once it is sent, or after
                    // ENDING_GRACE if the peer does not read it.
                    conn.abrupt_shutdown(Reason::NO_ERROR);
                    ended = true;
                    grace = Instant::now() + ENDING_GRACE;
                }
                () = tokio::time::sleep_until(grace), if ended => break,
                _ = stopping.wait_for(|stopping| *stopping), if !draining => {
                    conn.graceful_shutdown();
                    draining = true;
                }
                _ = keepalive.tick() => match unanswered {
                    Some(sent) if sent.elapsed() >= KEEPALIVE_TIMEOUT => {
                        tracing::debug!(principal = %peer.principal, "keep-alive ping unanswered; closing a gRPC connection");
                        break;
                    }
                    Some(_) => {}
                    None => {
                        let sent = ping.as_mut().map(|p| p.send_ping(h2::Ping::opaque()));
                        if let Some(Ok(())) = sent {
                            unanswered = Some(Instant::now());
                        }
                    }
                },
                pong = poll_fn(|cx| poll_pong(ping.as_mut(), cx)), if unanswered.is_some() => match pong {
                    Ok(()) => unanswered = None,
                    Err(e) => {
                        tracing::debug!(error = %e, "keep-alive ping failed");
                        break;
                    }
                },
            }
        }
    }

    /// The one dispatch of a request: a future to run on the connection's task, or `None`
    /// when the request runs on a task of its own.
    fn dispatch(
        self: &Arc<Self>,
        request: http::Request<RecvStream>,
        respond: SendResponse<Bytes>,
        peer: &Peer,
    ) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        let open = peer.activity.open();
        let deadline = self.deadline(request.headers());
        if request.uri().path() == unary::RANGE && unary::uncompressed(request.headers()) {
            let answer = unary::range(self.clone(), peer.clone(), request, respond, deadline);
            return Some(Box::pin(async move {
                answer.await;
                drop(open);
            }));
        }
        let front = self.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            front.through_tonic(peer, request, respond, deadline).await;
            drop(open);
        });
        None
    }

    /// The deadline of a unary request: the node's, or the client's `grpc-timeout` if
    /// sooner (one it cannot read is not honoured, as tonic does).
    fn deadline(&self, headers: &HeaderMap) -> Instant {
        let asked = headers
            .get("grpc-timeout")
            .and_then(|value| grpc_timeout(value.as_bytes()));
        Instant::now() + asked.map_or(self.unary_deadline, |t| t.min(self.unary_deadline))
    }

    /// Runs `request` through tonic's services and sends their answer, on a task of its own.
    async fn through_tonic(
        &self,
        peer: Peer,
        request: http::Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        deadline: Instant,
    ) {
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(peer);
        let request = http::Request::from_parts(parts, tonic::body::Body::new(Incoming::new(body)));
        let mut routes = self.routes.clone();
        // A unary RPC is answered by this future, a streaming one returns its stream at once.
        let answer = tokio::time::timeout_at(deadline, async {
            let Ok(()) = poll_fn(|cx| Service::<http::Request<tonic::body::Body>>::poll_ready(&mut routes, cx)).await;
            routes.call(request).await
        });
        let response = match until_reset(&mut respond, answer).await {
            None => return,
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err::<_, Infallible>(never))) => match never {},
            Some(Err(_elapsed)) => return reply_status(respond, &timed_out()),
        };
        let (mut parts, body) = response.into_parts();
        // The answer's charge on the connection's budget lasts until its body is sent.
        let held: Option<Held> = parts.extensions.remove();
        let done = body.is_end_stream();
        let send = match respond.send_response(http::Response::from_parts(parts, ()), done) {
            Ok(send) => send,
            Err(e) => {
                tracing::debug!(error = %e, "sending a gRPC response head failed");
                return;
            }
        };
        if !done && let Err(e) = pipe(body, send).await {
            tracing::debug!(error = %e, "sending a gRPC response body failed");
        }
        drop(held);
    }
}

fn poll_pong(ping: Option<&mut h2::PingPong>, cx: &mut Context<'_>) -> Poll<Result<(), h2::Error>> {
    match ping {
        Some(ping) => ping.poll_pong(cx).map_ok(|_| ()),
        None => Poll::Pending,
    }
}

/// What tonic answers when a unary request outlives its deadline.
pub(super) fn timed_out() -> Status {
    Status::cancelled("Timeout expired")
}

/// Runs `work` until it ends, or `None` once the client resets the stream (its answer is
/// not wanted any more, and `work` is dropped).
pub(super) async fn until_reset<F: Future>(
    respond: &mut SendResponse<Bytes>,
    work: F,
) -> Option<F::Output> {
    let mut work = pin!(work);
    poll_fn(|cx| {
        if let Poll::Ready(output) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match respond.poll_reset(cx) {
            Poll::Ready(reason) => {
                tracing::debug!(?reason, "a gRPC stream was reset before its answer");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Answers with `status` alone, gRPC's trailers-only response.
pub(super) fn reply_status(mut respond: SendResponse<Bytes>, status: &Status) {
    let (parts, ()) = status.clone().into_http::<()>().into_parts();
    if let Err(e) = respond.send_response(http::Response::from_parts(parts, ()), true) {
        tracing::debug!(error = %e, "sending a gRPC status failed");
    }
}

/// Waits until `send` may send at least a byte (the peer's windows have room), or the
/// peer resets the stream.
pub(super) async fn capacity(send: &mut SendStream<Bytes>) -> Result<(), h2::Error> {
    send.reserve_capacity(1);
    poll_fn(|cx| {
        if let Poll::Ready(reason) = send.poll_reset(cx)? {
            return Poll::Ready(Err(h2::Error::from(reason)));
        }
        while send.capacity() == 0 {
            match ready!(send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => return Poll::Ready(Err(h2::Error::from(Reason::CANCEL))),
            }
        }
        Poll::Ready(Ok(()))
    })
    .await
}

/// Sends a response body through `send`: each piece once the peer has room for a byte of
/// it (h2 sends the rest as its windows open), and its trailers; a reset from the peer
/// ends it, and an error of the body resets the stream.
async fn pipe(body: tonic::body::Body, mut send: SendStream<Bytes>) -> Result<(), h2::Error> {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(reason) = send.poll_reset(cx)? {
                return Poll::Ready(Err(h2::Error::from(reason)));
            }
            body.as_mut().poll_frame(cx).map(Ok)
        })
        .await?;
        let frame = match frame {
            None => return send.send_data(Bytes::new(), true),
            Some(Err(status)) => {
                tracing::debug!(%status, "a gRPC response body failed");
                send.send_reset(Reason::INTERNAL_ERROR);
                return Ok(());
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if !data.is_empty() {
                    capacity(&mut send).await?;
                }
                send.send_data(data, end)?;
                if end {
                    return Ok(());
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.reserve_capacity(0);
                    return send.send_trailers(trailers);
                }
            }
        }
    }
}

/// A request's h2 stream as the body tonic reads: each piece given back to the peer's
/// window once read, then the trailers.
struct Incoming {
    recv: RecvStream,
    data_done: bool,
}

impl Incoming {
    fn new(recv: RecvStream) -> Self {
        Incoming {
            recv,
            data_done: false,
        }
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// A `grpc-timeout` header's value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`); `None` for anything else.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grpc_timeout_is_read_and_a_bad_one_is_not() {
        assert_eq!(grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout(b"99999999H"), Some(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(grpc_timeout(b"1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(grpc_timeout(b"0n"), Some(Duration::ZERO));
        assert_eq!(grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        for bad in [
            &b""[..],
            b"S",
            b"5",
            b"5s",
            b"123456789S",
            b"-5S",
            b"5 S",
            b"\xff5S",
            b"5SS",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
