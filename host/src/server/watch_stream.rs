//! A watch and its QUIC stream: [`drive`] runs one watch into a [`WatchSink`] (this
//! stream, or the gRPC front's shared watch stream); [`serve_watch`] is the QUIC front.
//!
//! A watch stream's first frame was `Request::Watch`; from then on the node writes
//! `Result<Response::Watch, Error>` frames and reads [`WatchControl`] frames. The reading
//! half runs in its own task (a frame read is not cancel-safe), feeding a small channel.
//! Catching up from history reads storage, so those steps run on a blocking thread.
//!
//! **What a stream that is not read costs.** One response at a time: it is encoded, the
//! response dropped, and the frame written; QUIC flow control holds the write back while the
//! client does not read (quinn buffers no more than the client's stream window). Meanwhile
//! the watcher's live queue fills up to its byte budget, and the hub then empties it and
//! sends the watcher back to history (`crate::watch`), so a stalled stream holds its budget
//! at most, plus the one frame being written. That frame is built and written holding a
//! reservation of the connection's [`DELIVERY_BYTES`], so a connection's many stalled
//! streams hold at most that much between them.

use std::sync::Arc;

use etch_proto::frame;
use etch_proto::watch::{WatchControl, WatchCreateRequest, WatchResponse};
use etch_proto::{DEFAULT_MAX_RESPONSE_BYTES, Error, Request, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::burst::Burst;
use crate::node::Node;
use crate::watch::{Step, Watcher};

/// Where a watch's responses go: the QUIC stream of the watch, or one gRPC watch stream
/// shared by many watches (`grpc/watch.rs`). A send that fails ends the watch.
pub(crate) trait WatchSink: Send {
    /// Waits for room to build a response of about `bytes`, before the watch takes its next
    /// events (and copies them): a front whose client does not read holds the watch here,
    /// and the hub sends it back to history once its queue is full.
    fn ready(&mut self, bytes: usize) -> impl std::future::Future<Output = ()> + Send {
        let _ = bytes;
        async {}
    }
    /// Nothing was built after [`WatchSink::ready`]: the room it took goes back.
    fn idle(&mut self) {}
    /// Sends one response; `Err` when the client is gone.
    fn send(
        &mut self,
        resp: WatchResponse,
    ) -> impl std::future::Future<Output = Result<(), Gone>> + Send;
    /// Sends a failure that ends the watch (a permission lost, storage), as well as the
    /// front can say it.
    fn fail(&mut self, error: Error) -> impl std::future::Future<Output = ()> + Send;
    /// The client's controls of the watch (progress, cancel), asked for once the watch is
    /// created: a watch refused before that never starts reading them.
    fn controls(&mut self) -> mpsc::Receiver<WatchControl>;
}

/// A watch stream of either front, counted in the watch-stream gauge while it lives.
pub(crate) struct OpenStream;

impl OpenStream {
    pub(crate) fn count() -> OpenStream {
        metrics::gauge!(crate::metrics::WATCH_STREAMS).increment(1.0);
        OpenStream
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::WATCH_STREAMS).decrement(1.0);
    }
}

/// Bytes of watch responses the watches of one client connection may have built and not
/// yet handed to the transport (QUIC's send buffer, HTTP/2's stream), over both fronts. A
/// watch reserves the size of its next events before it copies them out of the hub and
/// gives the reservation back once the response is handed over, so a client that stops
/// reading holds its watches before they copy anything once this much is waiting, and the
/// hub sends them back to history when their queues fill. Sized in bytes, not responses,
/// so that watches of small values never wait on each other: a connection's streams stall
/// one another only when what they hold reaches this. Without it each watch of a stalled
/// connection held one built response: 500 gRPC watches with `prev_kv` pinned 507 MiB
/// under 30 puts of 1 MB, 200 QUIC watch streams 228 MiB.
pub(crate) const DELIVERY_BYTES: usize = 16 * 1024 * 1024;

/// A connection's [`DELIVERY_BYTES`], shared by its watches.
pub(crate) fn delivery_bytes() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(DELIVERY_BYTES))
}

/// One watch's reservation of its connection's [`DELIVERY_BYTES`].
pub(crate) struct Room {
    deliveries: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
}

impl Room {
    pub(crate) fn new(deliveries: Arc<Semaphore>) -> Self {
        Room {
            deliveries,
            held: None,
        }
    }

    /// Waits to reserve `bytes` (at least one, at most all of it), unless a reservation is
    /// held already.
    pub(crate) async fn wait(&mut self, bytes: usize) {
        if self.held.is_none() {
            let n = bytes.clamp(1, DELIVERY_BYTES) as u32;
            // The semaphore is never closed.
            self.held = self.deliveries.clone().acquire_many_owned(n).await.ok();
        }
    }

    /// Gives the reservation back.
    pub(crate) fn release(&mut self) {
        self.held = None;
    }

    /// The reservation held, or a small one for a response built without one (created,
    /// canceled); to be dropped when the transport has the response.
    pub(crate) async fn take(&mut self) -> Result<OwnedSemaphorePermit, Gone> {
        self.wait(1).await;
        self.held.take().ok_or(Gone)
    }
}

/// The client of a watch is gone (its stream or connection closed).
#[derive(Debug)]
pub(crate) struct Gone;

/// Serves one watch on its own QUIC stream for `principal` until it is canceled, its
/// stream closes, the node stops, or the principal loses the right to read its range.
pub(super) async fn serve_watch(
    node: Node,
    principal: std::sync::Arc<str>,
    req: WatchCreateRequest,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    deliveries: Arc<Semaphore>,
    burst: Burst,
) {
    let _open = OpenStream::count();
    let mut sink = QuicSink {
        room: Room::new(deliveries),
        node: node.clone(),
        send: Some(send),
        recv: Some(recv),
        burst,
    };
    drive(node, &principal, req, &mut sink).await;
    if let Some(mut send) = sink.send.take() {
        let _ = send.finish();
    }
}

/// Runs one watch for `principal` into `sink` until it is canceled (by a control or by
/// `controls` closing), the sink fails, the node stops, or the principal loses the right
/// to read its range (then it is canceled with the permission error as its reason; etcd
/// leaves such a watch running, etch does not). Both fronts serve watches with it.
pub(crate) async fn drive(
    node: Node,
    principal: &str,
    req: WatchCreateRequest,
    sink: &mut impl WatchSink,
) {
    let may_read = || node.authorize(principal, &Request::Watch(req.clone()));
    if let Err(e) = may_read() {
        sink.fail(e).await;
        return;
    }
    /// Counts the watch as open until this function returns.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            metrics::gauge!(crate::metrics::WATCHERS).decrement(1.0);
        }
    }
    metrics::gauge!(crate::metrics::WATCHERS).increment(1.0);
    let _open = Open;
    let mut auth = node.store().subscribe_auth();
    let mut stopping = node.stopping();
    let (mut watcher, created) = match Watcher::open(node.hub(), &req) {
        Ok(opened) => opened,
        Err(canceled) => {
            let _ = sink.send(canceled).await;
            return;
        }
    };
    if sink.send(created).await.is_err() {
        return;
    }
    let mut controls = sink.controls();
    let period = node.options().watch_progress_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut sent_since_tick = false;
    loop {
        loop {
            sink.ready(watcher.next_bytes()).await;
            let step = if watcher.is_live() {
                watcher.step()
            } else {
                match tokio::task::spawn_blocking(move || {
                    let step = watcher.step();
                    (watcher, step)
                })
                .await
                {
                    Ok((w, step)) => {
                        watcher = w;
                        step
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "watch catch-up failed");
                        return;
                    }
                }
            };
            match step {
                Ok(Step::Idle) => {
                    sink.idle();
                    break;
                }
                Ok(Step::Send(resp)) => {
                    let canceled = resp.canceled;
                    if sink.send(resp).await.is_err() || canceled {
                        return;
                    }
                    sent_since_tick = true;
                }
                Err(e) => {
                    tracing::error!(error = %e, "watch cannot read history");
                    sink.fail(Error::Internal(format!("storage: {e}"))).await;
                    return;
                }
            }
        }
        tokio::select! {
            () = watcher.ready() => {}
            // The node is stopping: the watch ends with it (its stream closes).
            Ok(()) = stopping.changed() => {
                if *stopping.borrow() {
                    return;
                }
            }
            Ok(()) = auth.changed() => {
                if let Err(e) = may_read() {
                    let mut canceled = watcher.cancel();
                    canceled.cancel_reason = e.to_string();
                    let _ = sink.send(canceled).await;
                    return;
                }
            }
            control = controls.recv() => match control {
                Some(WatchControl::Progress) => watcher.request_progress(),
                Some(WatchControl::Cancel) => {
                    let canceled = watcher.cancel();
                    let _ = sink.send(canceled).await;
                    return;
                }
                // The client closed its side (or broke it): that cancels too.
                None => return,
            },
            _ = ticker.tick(), if req.progress_notify => {
                if !sent_since_tick {
                    watcher.request_progress();
                }
                sent_since_tick = false;
            }
        }
    }
}

/// A watch's own QUIC stream: `Result<Response::Watch, Error>` frames out, control frames
/// in (read once the watch is created).
struct QuicSink {
    room: Room,
    node: Node,
    /// The stream; away while the connection's burst task tries a write on it.
    send: Option<quinn::SendStream>,
    recv: Option<quinn::RecvStream>,
    burst: Burst,
}

impl WatchSink for QuicSink {
    async fn ready(&mut self, bytes: usize) {
        self.room.wait(bytes).await;
    }

    fn idle(&mut self) {
        self.room.release();
    }

    async fn send(&mut self, resp: WatchResponse) -> Result<(), Gone> {
        let room = self.room.take().await?;
        let bytes = encode(&self.node, resp).map_err(|_| Gone)?;
        // Tried with the connection's other responses (`burst.rs`); what the stream had no
        // room for is written here, waiting for the client to read.
        let stream = self.send.take().ok_or(Gone)?;
        let tried = self.burst.write(stream, bytes).await.ok_or(Gone)?;
        let send = self.send.insert(tried.send);
        if tried.failed {
            return Err(Gone);
        }
        if let Some(rest) = tried.rest {
            send.write_chunk(rest).await.map_err(|_| Gone)?;
        }
        // Handed to QUIC's send buffer (bounded by the connection's window): room again.
        drop(room);
        Ok(())
    }

    async fn fail(&mut self, error: Error) {
        let failure: Result<Response, Error> = Err(error);
        if let Some(send) = self.send.as_mut() {
            let _ = frame::write(send, &failure, DEFAULT_MAX_RESPONSE_BYTES).await;
        }
    }

    fn controls(&mut self) -> mpsc::Receiver<WatchControl> {
        match self.recv.take() {
            Some(recv) => read_controls(
                recv,
                self.node.options().max_request_bytes,
                self.node.options().client_limits.read_timeout,
            ),
            // Asked twice: a closed channel, which cancels.
            None => mpsc::channel(1).1,
        }
    }
}

/// Reads control frames into a channel until the client's side ends; a malformed frame
/// ends it too, and so does one that does not arrive whole within `within` of its first
/// byte (the stream is then stopped with `codes::stream::READ_TIMEOUT`).
fn read_controls(
    mut recv: quinn::RecvStream,
    max: usize,
    within: std::time::Duration,
) -> mpsc::Receiver<WatchControl> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            match frame::read_started_within::<_, WatchControl>(&mut recv, max, within).await {
                Ok(Some(control)) => {
                    if tx.send(control).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(frame::FrameError::TimedOut(_)) => {
                    tracing::debug!("watch control frame not received in time");
                    let _ = recv.stop(etch_proto::codes::stream::READ_TIMEOUT.into());
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch control stream ended");
                    return;
                }
            }
        }
    });
    rx
}

/// One response as a frame. The response is dropped once encoded, so while the client
/// holds the write back the stream keeps one copy of it (the frame), not two.
fn encode(node: &Node, resp: WatchResponse) -> Result<bytes::Bytes, frame::FrameError> {
    let mut response = Response::Watch(resp);
    node.fill_header(&mut response);
    let answer: Result<Response, Error> = Ok(response);
    Ok(frame::encode(&answer, DEFAULT_MAX_RESPONSE_BYTES)?.into())
}
