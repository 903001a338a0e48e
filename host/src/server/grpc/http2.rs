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
use crate::server::budget::{Budget, Charge};

/// HTTP/2 settings. A stream's window, frames and header list are hyper's defaults (what
/// the front ran on before it drove h2 itself): 1 MiB, 16 KiB, 16 KiB. The connection's
/// window is 16 times a stream's (QUIC's ratio on the QUIC front): a stream whose request
/// waits for room in the budget holds its window shut, and must not shut the others'.
const WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 16 * WINDOW;
const MAX_FRAME: u32 = 16 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// What h2 may hold of a stream's answer beyond what the answer's charge covers (it grants
/// no more capacity than this, whatever the peer's windows): 256 streams hold at most
/// 16 MiB so, against hyper's 400 KiB a stream.
const MAX_SEND_BUFFER: usize = 64 * 1024;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How often the node pings a connection, and how long it waits for the answer before it
/// ends the connection (a peer that vanished without a FIN).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The gRPC envelope of a message: a compressed flag and a 4-byte length.
pub(super) const ENVELOPE: usize = 5;

/// The length a message's envelope declares (`envelope` holds at least [`ENVELOPE`] bytes).
pub(super) fn declared_len(envelope: &[u8]) -> usize {
    u32::from_be_bytes([envelope[1], envelope[2], envelope[3], envelope[4]]) as usize
}

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
    /// How long a message of a stream has to arrive whole once it has begun, waiting for
    /// its charge included (`--client-read-timeout`).
    pub(super) read_timeout: Duration,
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
            .initial_connection_window_size(CONNECTION_WINDOW)
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
        // Ticks missed while a ping was in flight are not made up in a burst.
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the ping in flight, if any, is given up on.
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
                _ = keepalive.tick(), if unanswered.is_none() => {
                    let sent = ping.as_mut().map(|p| p.send_ping(h2::Ping::opaque()));
                    if let Some(Ok(())) = sent {
                        unanswered = Some(Instant::now() + KEEPALIVE_TIMEOUT);
                    }
                }
                () = tokio::time::sleep_until(unanswered.unwrap_or(grace)), if unanswered.is_some() => {
                    tracing::debug!(principal = %peer.principal, "keep-alive ping unanswered; closing a gRPC connection");
                    break;
                }
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
            let answer = unary::range(self.clone(), peer.clone(), request, respond, deadline, open);
            return Some(Box::pin(answer));
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
        let peer_budget = peer.budget.clone();
        parts.extensions.insert(peer);
        let incoming = Incoming::new(body, peer_budget, self.max_in, self.read_timeout);
        let request = http::Request::from_parts(parts, tonic::body::Body::new(incoming));
        let mut routes = self.routes.clone();
        // A unary RPC is answered by this future, a streaming one returns its stream at once.
        let answer = async {
            let Ok(()) = poll_fn(|cx| {
                Service::<http::Request<tonic::body::Body>>::poll_ready(&mut routes, cx)
            })
            .await;
            let Ok(response) = routes.call(request).await;
            Ok(response)
        };
        let Some(response) = within(&mut respond, deadline, answer).await else {
            return;
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

/// Runs `work` for the answer on `respond` until `deadline`: its value, or `None` once the
/// stream has been answered otherwise — with `work`'s error, with tonic's "Timeout expired"
/// (`Cancelled`) past the deadline — or reset by the client (its answer is not wanted any
/// more, and `work` is dropped).
pub(super) async fn within<T>(
    respond: &mut SendResponse<Bytes>,
    deadline: Instant,
    work: impl Future<Output = Result<T, Status>>,
) -> Option<T> {
    let mut work = pin!(tokio::time::timeout_at(deadline, work));
    let done = poll_fn(|cx| {
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
    .await;
    match done? {
        Ok(Ok(value)) => Some(value),
        Ok(Err(status)) => {
            reply_status(respond, &status);
            None
        }
        Err(_elapsed) => {
            reply_status(respond, &Status::cancelled("Timeout expired"));
            None
        }
    }
}

/// Answers with `status` alone, gRPC's trailers-only response.
fn reply_status(respond: &mut SendResponse<Bytes>, status: &Status) {
    let (parts, ()) = status.clone().into_http::<()>().into_parts();
    if let Err(e) = respond.send_response(http::Response::from_parts(parts, ()), true) {
        tracing::debug!(error = %e, "sending a gRPC status failed");
    }
}

/// Hands `data` to h2 no faster than the peer's windows let it leave, ending the stream
/// with it if `end`. h2 queues whatever it is given, so each piece is at most the capacity
/// h2 has granted the stream: a client that opens its windows a byte at a time gets its
/// answer a byte at a time, and the rest stays with the caller (charged to its budget), not
/// in h2's queue. A reset from the peer ends it.
pub(super) async fn send_all(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
) -> Result<(), h2::Error> {
    if data.is_empty() {
        return send.send_data(data, end);
    }
    send.reserve_capacity(data.len());
    while !data.is_empty() {
        let granted = poll_fn(|cx| {
            peer_reset(send, cx)?;
            loop {
                let granted = send.capacity();
                if granted > 0 {
                    return Poll::Ready(Ok(granted));
                }
                match ready!(send.poll_capacity(cx)) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Poll::Ready(Err(e)),
                    None => return Poll::Ready(Err(h2::Error::from(Reason::CANCEL))),
                }
            }
        })
        .await?;
        let piece = data.split_to(granted.min(data.len()));
        send.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// An error once the peer has reset the stream `send` sends on (and a wake-up when it
/// does).
fn peer_reset(send: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Result<(), h2::Error> {
    match send.poll_reset(cx) {
        Poll::Ready(reason) => Err(h2::Error::from(reason?)),
        Poll::Pending => Ok(()),
    }
}

/// Sends a response body through `send` ([`send_all`]), and its trailers; a reset from the
/// peer ends it, and an error of the body resets the stream.
async fn pipe(body: tonic::body::Body, mut send: SendStream<Bytes>) -> Result<(), h2::Error> {
    let mut body = pin!(body);
    loop {
        let frame = poll_fn(|cx| {
            peer_reset(&mut send, cx)?;
            body.as_mut().poll_frame(cx).map(Ok::<_, h2::Error>)
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
                send_all(&mut send, data, end).await?;
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

/// A request's h2 stream as the body tonic reads. A gRPC message that does not arrive
/// whole at once is charged to the connection's budget at its declared length before more
/// of its bytes are taken (and given back to the peer's window), and must arrive whole
/// within the read deadline, its wait for room included (as a request frame on the QUIC
/// front): what requests being received hold in the node is bounded by the budget, for a
/// bounded time, and HTTP/2 flow control holds the client back meanwhile. The charge ends
/// once the message is whole (tonic decodes it as it completes).
struct Incoming {
    recv: RecvStream,
    budget: Arc<Budget>,
    /// The largest message: a longer one is tonic's to refuse, not to charge.
    max: usize,
    read_timeout: Duration,
    /// Bytes taken off the stream and not yet handed on: held back until charged.
    held: Option<Bytes>,
    /// The charge being waited for, before `held` may go on.
    charging: Option<Pin<Box<dyn Future<Output = Charge> + Send>>>,
    /// The message being received's charge.
    charge: Option<Charge>,
    /// When the message being received must be whole.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the next poll starts the deadline: a message's clock starts when tonic asks
    /// for its bytes, not while the handler is still busy with the message before it.
    arm: bool,
    messages: Splitter,
    data_done: bool,
}

impl Incoming {
    fn new(recv: RecvStream, budget: Arc<Budget>, max: usize, read_timeout: Duration) -> Self {
        Incoming {
            recv,
            budget,
            max,
            read_timeout,
            held: None,
            charging: None,
            charge: None,
            deadline: None,
            arm: false,
            messages: Splitter::default(),
            data_done: false,
        }
    }
}

/// Where the gRPC messages of a byte stream begin.
#[derive(Debug, Default)]
struct Splitter {
    /// The current message's envelope, while incomplete.
    envelope: Vec<u8>,
    /// The bytes of the current message's body not yet seen.
    left: usize,
}

impl Splitter {
    /// Whether the bytes seen so far end with a whole message (or none).
    #[cfg(test)]
    fn between(&self) -> bool {
        self.left == 0 && self.envelope.is_empty()
    }

    /// Splits `data` where a message that needs charging begins (after its envelope):
    /// what may go on now, and that message's declared length with the bytes after it.
    fn split(&mut self, mut data: Bytes) -> (Bytes, Option<(usize, Bytes)>) {
        let mut at = 0;
        while at < data.len() {
            if self.left > 0 {
                let take = self.left.min(data.len() - at);
                at += take;
                self.left -= take;
                continue;
            }
            let take = (ENVELOPE - self.envelope.len()).min(data.len() - at);
            self.envelope.extend_from_slice(&data[at..at + take]);
            at += take;
            if self.envelope.len() == ENVELOPE {
                let len = declared_len(&self.envelope);
                self.envelope.clear();
                self.left = len;
                if len > 0 {
                    let rest = data.split_off(at);
                    return (data, Some((len, rest)));
                }
            }
        }
        (data, None)
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if std::mem::take(&mut self.arm) {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.read_timeout)));
        }
        loop {
            if let Some(deadline) = self.deadline.as_mut()
                && deadline.as_mut().poll(cx).is_ready()
            {
                tracing::debug!("a gRPC request message did not arrive within the read deadline");
                // Nothing is held past this: tonic keeps the body (and whatever it holds)
                // for as long as its handler keeps the request stream.
                self.charge = None;
                self.charging = None;
                self.deadline = None;
                self.held = None;
                // Not `Cancelled`: tonic reads that as the request's clean end.
                let status = Status::deadline_exceeded(
                    "etcdserver: a request message did not arrive whole within the node's read deadline (--client-read-timeout)",
                );
                return Poll::Ready(Some(Err(Box::new(status))));
            }
            if let Some(charging) = self.charging.as_mut() {
                let charge = ready!(charging.as_mut().poll(cx));
                self.charge = Some(charge);
                self.charging = None;
            }
            if let Some(data) = self.held.take() {
                let (now, next) = self.messages.split(data);
                if next.is_some() || self.messages.left == 0 {
                    // `now` ends the message being received: tonic decodes it as it takes
                    // `now`, and its charge and deadline end here.
                    self.charge = None;
                    self.deadline = None;
                }
                if let Some((len, rest)) = next {
                    // One that is here whole needs no charge: its bytes are within
                    // HTTP/2's window. One longer than the limit is tonic's to refuse.
                    if rest.len() < len {
                        self.arm = true;
                        if len <= self.max {
                            let budget = self.budget.clone();
                            self.charging =
                                Some(Box::pin(async move { budget.reserve(len).await }));
                        }
                    }
                    self.held = (!rest.is_empty()).then_some(rest);
                }
                if now.is_empty() {
                    continue;
                }
                let _ = self.recv.flow_control().release_capacity(now.len());
                return Poll::Ready(Some(Ok(Frame::data(now))));
            }
            if self.data_done {
                break;
            }
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => self.held = Some(data),
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => self.data_done = true,
            }
        }
        self.charge = None;
        self.deadline = None;
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.recv.is_end_stream()
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
    use crate::server::budget::node_budget;

    #[test]
    fn a_grpc_timeout_is_read_and_a_bad_one_is_not() {
        assert_eq!(grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
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

    fn envelope(len: u32) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&len.to_be_bytes());
        out
    }

    fn budget(conn: usize) -> Arc<Budget> {
        Arc::new(Budget::new(conn, node_budget(1 << 30), 1 << 30))
    }

    /// An h2 connection whose one request body is read through [`Incoming`] with `budget`;
    /// returns the body and the client's stream to send on.
    async fn pair(budget: Arc<Budget>) -> (Incoming, SendStream<Bytes>) {
        let (mut conn, mut client) = super::super::h2_pair(&h2::client::Builder::new()).await;
        let request = http::Request::post("http://etch/x")
            .body(())
            .expect("request");
        let (_answer, send) = client.send_request(request, false).expect("send");
        let (request, _respond) = conn
            .accept()
            .await
            .expect("a request")
            .expect("a valid request");
        // Drive both ends for as long as the test runs.
        tokio::spawn(async move {
            let _client = client;
            while conn.accept().await.is_some() {}
        });
        let timeout = Duration::from_secs(60);
        (
            Incoming::new(request.into_body(), budget, 1 << 20, timeout),
            send,
        )
    }

    async fn next(body: &mut Incoming) -> Option<Bytes> {
        let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
        frame.expect("a frame").into_data().ok()
    }

    #[test]
    fn messages_are_split_where_each_needs_its_charge() {
        let mut body = Vec::new();
        body.extend(envelope(3));
        body.extend(b"abc");
        body.extend(envelope(0));
        body.extend(envelope(2));
        body.extend(b"de");
        // Cut anywhere, the envelopes are found and each non-empty message waits for its
        // charge right after its envelope.
        for cut in 0..body.len() {
            let mut state = Splitter::default();
            let mut needs = Vec::new();
            let mut passed = Vec::new();
            for piece in [&body[..cut], &body[cut..]] {
                let mut data = Bytes::copy_from_slice(piece);
                loop {
                    let (now, next) = state.split(data);
                    passed.extend_from_slice(&now);
                    let Some((len, rest)) = next else { break };
                    needs.push(len);
                    data = rest;
                }
            }
            assert_eq!(needs, vec![3, 2], "cut at {cut}");
            assert_eq!(
                passed, body,
                "every byte passed on once, in order (cut at {cut})"
            );
            assert!(state.between(), "the last message is whole");
        }
    }

    #[tokio::test]
    async fn a_message_waits_for_room_in_the_budget_before_it_is_taken() {
        let budget = budget(100);
        let (mut body, mut send) = pair(budget.clone()).await;
        let held = budget.try_reserve(90).expect("room for 90");
        // A message that does not come whole: its envelope, then its bytes.
        send.send_data(Bytes::from(envelope(50)), false)
            .expect("send");
        send.send_data(Bytes::from(vec![7u8; 50]), true)
            .expect("send");
        // The envelope goes on; the 50 bytes wait while 90 of the 100 are held elsewhere.
        let head = next(&mut body).await.expect("the envelope");
        assert_eq!(head.len(), ENVELOPE);
        let early = tokio::time::timeout(Duration::from_millis(200), next(&mut body)).await;
        assert!(early.is_err(), "the message was taken without room for it");
        drop(held);
        let rest = next(&mut body)
            .await
            .expect("the message, once there is room");
        assert_eq!(rest.len(), 50);
        // Whole, it is tonic's: its charge ends with the poll that handed over its last
        // byte, not at the next one (which a busy handler may not make for long).
        assert!(
            budget.try_reserve(100).is_some(),
            "the charge ends once the message is whole"
        );
        assert!(next(&mut body).await.is_none(), "the end");
    }

    /// A message that came whole behind one that came in pieces is not cut off by the
    /// read deadline while the handler is busy with the first: its clock starts when
    /// tonic asks for it, and the first's ended with it.
    #[tokio::test]
    async fn a_whole_message_is_not_cut_off_while_the_handler_is_busy() {
        let budget = budget(1000);
        let (mut body, mut send) = pair(budget.clone()).await;
        body.read_timeout = Duration::from_millis(200);
        let mut first = envelope(10);
        first.extend([1u8; 5]);
        send.send_data(Bytes::from(first), false).expect("send");
        let mut rest = vec![1u8; 5];
        rest.extend(envelope(3));
        rest.extend([2u8; 3]);
        send.send_data(Bytes::from(rest), false).expect("send");
        let mut got = Vec::new();
        while got.len() < ENVELOPE + 10 {
            got.extend_from_slice(&next(&mut body).await.expect("the first message"));
        }
        // The handler is busy with the first message for twice the read deadline.
        tokio::time::sleep(Duration::from_millis(400)).await;
        while got.len() < 2 * ENVELOPE + 13 {
            got.extend_from_slice(&next(&mut body).await.expect("the second message"));
        }
        assert_eq!(&got[2 * ENVELOPE + 10..], &[2, 2, 2]);
        assert!(budget.try_reserve(1000).is_some(), "nothing is held");
    }

    /// A message that begins and does not end within the read deadline fails the body
    /// (tonic ends the RPC), and its charge ends with the error.
    #[tokio::test]
    async fn a_message_that_stops_coming_is_cut_off_at_the_read_deadline() {
        let budget = budget(100);
        let (near_body, mut send) = pair(budget.clone()).await;
        let mut body = near_body;
        body.read_timeout = Duration::from_millis(300);
        send.send_data(Bytes::from(envelope(50)), false)
            .expect("send");
        send.send_data(Bytes::from(vec![7u8; 10]), false)
            .expect("send");
        let head = next(&mut body).await.expect("the envelope");
        assert_eq!(head.len(), ENVELOPE);
        let some = next(&mut body).await.expect("what came of the message");
        assert_eq!(some.len(), 10);
        assert!(
            budget.try_reserve(60).is_none(),
            "the message's 50 bytes are held"
        );
        let cut = tokio::time::timeout(
            Duration::from_secs(10),
            poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        .expect("cut off within 10 s, not left waiting");
        let Some(Err(_)) = cut else {
            panic!("an error, not more data: {cut:?}");
        };
        // Released with the error, though the body lives on (tonic keeps it while its
        // handler keeps the request stream).
        assert!(
            budget.try_reserve(100).is_some(),
            "the charge ends with the error"
        );
        drop(body);
    }

    /// A request from a client whose windows are one byte, accepted: the server's
    /// connection and its stream to answer on, the client and the answer to come.
    async fn asked_through_a_byte_window() -> (
        h2::server::Connection<tokio::io::DuplexStream, Bytes>,
        SendStream<Bytes>,
        h2::client::SendRequest<Bytes>,
        h2::client::ResponseFuture,
    ) {
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(1);
        let (mut conn, mut client) = super::super::h2_pair(&builder).await;
        let request = http::Request::post("http://etch/x")
            .body(())
            .expect("request");
        let (answer, _) = client.send_request(request, true).expect("send");
        let (_, mut respond) = conn
            .accept()
            .await
            .expect("a request")
            .expect("a valid request");
        let send = respond
            .send_response(http::Response::new(()), false)
            .expect("head");
        (conn, send, client, answer)
    }

    /// A client that leaves while its answer waits for its window: `send_all` ends with an
    /// error rather than waiting for ever.
    #[tokio::test]
    async fn an_answer_whose_peer_leaves_ends() {
        let (mut conn, mut send, client, answer) = asked_through_a_byte_window().await;
        let server = tokio::spawn(async move {
            let sent = send_all(&mut send, Bytes::from(vec![7u8; 10_000]), true);
            let mut sent = pin!(sent);
            loop {
                tokio::select! {
                    sent = &mut sent => return sent,
                    _ = conn.accept() => {}
                }
            }
        });
        let mut body = answer.await.expect("an answer").into_body();
        let first = body.data().await.expect("a byte").expect("data");
        assert_eq!(first.len(), 1);
        drop((body, client));
        let sent = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("send_all ends once its peer has left")
            .expect("the server task");
        assert!(sent.is_err(), "the answer was sent to no one: {sent:?}");
    }

    /// A client that opens its window a byte at a time: the answer is handed to h2 no
    /// faster than that (it does not sit in h2's queue, uncharged), and all of it arrives
    /// once the client reads.
    #[tokio::test]
    async fn an_answer_goes_to_h2_no_faster_than_the_peer_takes_it() {
        let (mut conn, mut send, client, answer) = asked_through_a_byte_window().await;
        let server = tokio::spawn(async move {
            let answer = send_all(&mut send, Bytes::from(vec![7u8; 10_000]), true);
            let mut answer = pin!(answer);
            // Drive the connection while the answer is handed over.
            let mut stalled = false;
            let sent = loop {
                tokio::select! {
                    sent = &mut answer => break sent,
                    _ = conn.accept() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)), if !stalled => stalled = true,
                }
            };
            // Until the client has read it all and gone.
            while conn.accept().await.is_some() {}
            (sent, stalled)
        });
        let mut body = answer.await.expect("an answer").into_body();
        // Take the first byte, and wait before opening the window any further.
        let first = body.data().await.expect("a byte").expect("data");
        assert_eq!(first.len(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut got = first.len();
        let _ = body.flow_control().release_capacity(first.len());
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("data");
            got += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        assert_eq!(got, 10_000);
        drop((body, client));
        let (sent, stalled) = server.await.expect("server");
        sent.expect("sent");
        assert!(
            stalled,
            "the whole answer was handed to h2 while the peer's window held one byte"
        );
    }
}
