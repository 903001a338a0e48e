//! [`Burst`]: the watch responses of one QUIC connection written together, so that they
//! leave in a few packets instead of one each.
//!
//! A put to a key that 100 watches of one connection follow makes 100 responses, one per
//! watch stream, each written by its own task. quinn's connection driver is woken by the
//! first write and, being the task that write woke last, tokio runs it next: it sends that
//! one response in its own packet, then the next write wakes it again. watch1000 sent
//! nearly a packet per event, and UDP sends were the largest part of the serving node's
//! profile (BENCHMARKS.md). Here a watch hands its encoded response to its connection's
//! burst task instead; that task yields once, so the connection's other watches woken by
//! the same put queue theirs meanwhile, then writes every queued response in one go: the
//! driver, woken once, finds them all and packs them together.
//!
//! A write is only *tried* there: QUIC flow control may leave no room on a stream (its
//! client is not reading). The response, or what is left of it, then goes back to its
//! watch, which waits for room on its own, so one stalled stream never holds the others.
//! Each watch has at most one response with the burst task at a time (it waits for the
//! answer), so the queue holds at most one per watch stream of the connection.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

/// A stream and the bytes to write on it, handed to the burst task.
struct Job {
    send: quinn::SendStream,
    bytes: Bytes,
    done: oneshot::Sender<Tried>,
}

/// A stream back from the burst task, with what could not be written yet.
pub(crate) struct Tried {
    pub(crate) send: quinn::SendStream,
    /// The bytes not written (no room on the stream), if any.
    pub(crate) rest: Option<Bytes>,
    /// The stream failed (its client is gone).
    pub(crate) failed: bool,
}

/// One connection's burst task. Cheap to clone; the task ends when every clone is gone.
#[derive(Clone)]
pub(crate) struct Burst {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Burst {
    /// Starts the burst task of a connection.
    pub(crate) fn start() -> Burst {
        let (jobs, queued) = mpsc::unbounded_channel();
        tokio::spawn(run(queued));
        Burst { jobs }
    }

    /// Tries to write `bytes` on `send` with the connection's other waiting responses.
    /// `None` when the burst task is gone (the connection is closing): the stream is gone
    /// with it.
    pub(crate) async fn write(&self, send: quinn::SendStream, bytes: Bytes) -> Option<Tried> {
        let (done, tried) = oneshot::channel();
        self.jobs.send(Job { send, bytes, done }).ok()?;
        tried.await.ok()
    }
}

/// The burst task: waits for a response, lets the other woken watches queue theirs, then
/// tries every queued write.
async fn run(mut queued: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::new();
    while let Some(first) = queued.recv().await {
        jobs.push(first);
        // Runs again once this thread's queued tasks have run: the watches woken by the same
        // event have queued their responses by then.
        tokio::task::yield_now().await;
        while let Ok(job) = queued.try_recv() {
            jobs.push(job);
        }
        for job in jobs.drain(..) {
            let _ = job.done.send(try_write(job.send, job.bytes));
        }
    }
}

/// Writes as much of `bytes` on `send` as the stream takes now, without waiting.
fn try_write(mut send: quinn::SendStream, bytes: Bytes) -> Tried {
    let mut chunks = [bytes];
    let polled = {
        let mut write = pin!(send.write_chunks(&mut chunks));
        write.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    };
    let [left] = chunks;
    let (rest, failed) = match polled {
        Poll::Ready(Ok(_)) => ((!left.is_empty()).then_some(left), false),
        Poll::Ready(Err(_)) => (None, true),
        Poll::Pending => (Some(left), false),
    };
    Tried { send, rest, failed }
}
