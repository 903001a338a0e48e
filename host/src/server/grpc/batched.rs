//! Coalesced writes under HTTP/2: a connection's answers leave in few TLS records and few
//! system calls.
//!
//! HTTP/2 flushes its connection each time it has written what it had, which under many
//! concurrent small answers is once or twice per answer (its headers and data, then its
//! trailers): a TLS record and a `writev` each. [`Batched`] keeps what is written in a
//! buffer of at most [`CAP`] bytes and, when asked to flush a small buffer, puts the
//! flush off to the next turn of the connection's task ([`Turns`]): the task is woken and
//! goes to the back of the run queue, so that every answer made in this turn (on the task
//! itself, or by the streams' own tasks meanwhile) goes out with it. A flush is put off by
//! one turn at most, so it costs at most one turn of the scheduler.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A write this large or larger goes straight to the stream when nothing is kept. One TLS
/// record's worth, and h2's default frame size.
pub(super) const LIMIT: usize = 16 * 1024;

/// The most bytes kept. What is kept and a large write that follows it are kept together up
/// to this: h2 copies the head of a large DATA frame (its header and up to 1 KiB) and
/// hands over the rest, and the frame then leaves in one write, not two.
pub(super) const CAP: usize = 2 * LIMIT;

/// How many times a connection's task has been polled: its turns on the scheduler.
#[derive(Debug, Default)]
pub(super) struct Turns(AtomicU64);

impl Turns {
    /// Runs `work`, counting each time it is polled as a turn.
    pub(super) async fn count<F: Future>(&self, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            self.0.fetch_add(1, Ordering::Relaxed);
            work.as_mut().poll(cx)
        })
        .await
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

pub(super) struct Batched<IO> {
    io: IO,
    buf: Vec<u8>,
    /// How much of `buf` has been written.
    sent: usize,
    /// The turns of the task that writes through it.
    turns: Arc<Turns>,
    /// The turn in which the pending flush was put off.
    held: Option<u64>,
}

impl<IO> Batched<IO> {
    pub(super) fn new(io: IO, turns: Arc<Turns>) -> Self {
        Batched {
            io,
            buf: Vec::new(),
            sent: 0,
            turns,
            held: None,
        }
    }
}

impl<IO: AsyncWrite + Unpin> Batched<IO> {
    /// Writes out what is kept.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Batched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Batched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buf.len() + total > CAP {
            ready!(self.poll_drain(cx))?;
        }
        if self.buf.is_empty() && total >= LIMIT {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    /// Not vectored, on purpose: h2 then copies DATA payloads up to 1 KiB into its own
    /// buffer, where with vectored writes it chains any payload over 256 bytes and flushes
    /// the connection before it encodes the next frame — a flush (a TLS record and a
    /// `writev`) for about every answer of a few hundred bytes.
    fn is_write_vectored(&self) -> bool {
        false
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.sent < self.buf.len() && self.buf.len() < LIMIT / 2 {
            let turn = self.turns.now();
            match self.held {
                None => {
                    self.held = Some(turn);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                // Already woken for the next turn.
                Some(held) if held == turn => return Poll::Pending,
                Some(_) => {}
            }
        }
        ready!(self.poll_drain(cx))?;
        self.held = None;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use futures::FutureExt;
    use tokio::io::AsyncWriteExt;

    /// A stream that counts the writes that reach it.
    struct Counted<IO> {
        io: IO,
        writes: Arc<AtomicUsize>,
    }

    impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, data))?;
            self.writes.fetch_add(1, Ordering::Relaxed);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    /// The server side of [`writes_for`]: takes `answers` requests, answers them all at
    /// once, and counts the writes from the first answer's headers on.
    async fn serve(
        io: Batched<Counted<tokio::io::DuplexStream>>,
        answers: usize,
        size: usize,
        writes: Arc<AtomicUsize>,
    ) -> usize {
        let mut conn = h2::server::handshake(io).await.expect("server handshake");
        let mut pending = Vec::new();
        while pending.len() < answers {
            let (_, respond) = conn
                .accept()
                .await
                .expect("a request")
                .expect("a valid request");
            pending.push(respond);
        }
        let before = writes.load(Ordering::Relaxed);
        for mut respond in pending {
            let response = http::Response::new(());
            let mut body = respond.send_response(response, false).expect("headers");
            body.reserve_capacity(size);
            body.send_data(bytes::Bytes::from(vec![7u8; size]), false)
                .expect("data");
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            body.send_trailers(trailers).expect("trailers");
        }
        // Drive the connection until the client has read every answer and gone.
        while conn.accept().await.is_some() {}
        writes.load(Ordering::Relaxed) - before
    }

    /// How many writes reach the socket for `answers` answers of `size` bytes each, made at
    /// once on one HTTP/2 connection through a [`Batched`] buffer (from the first answer's
    /// headers to the last answer's trailers).
    async fn writes_for(answers: usize, size: usize) -> usize {
        let (near, far) = tokio::io::duplex(1 << 20);
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = Counted {
            io: near,
            writes: writes.clone(),
        };
        let turns = Arc::new(Turns::default());
        let server = tokio::spawn(async move {
            let batched = Batched::new(counted, turns.clone());
            turns.count(serve(batched, answers, size, writes)).await
        });
        let (client, conn) = h2::client::Builder::new()
            .initial_window_size(1 << 20)
            .initial_connection_window_size(1 << 24)
            .handshake::<_, bytes::Bytes>(far)
            .await
            .expect("client handshake");
        let driver = tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        let mut pending = Vec::new();
        for _ in 0..answers {
            let request = http::Request::post("http://etch/x")
                .body(())
                .expect("request");
            let (answer, _) = client.send_request(request, true).expect("send");
            pending.push(answer);
        }
        for answer in pending {
            let mut body = answer.await.expect("answer").into_body();
            let mut got = 0;
            while let Some(chunk) = body.data().await {
                let chunk = chunk.expect("chunk");
                got += chunk.len();
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            assert_eq!(got, size);
            body.trailers()
                .await
                .expect("trailers")
                .expect("some trailers");
        }
        drop(client);
        driver.abort();
        server.await.expect("server")
    }

    /// Twenty answers of a few hundred bytes, made at once, reach the socket in a couple
    /// of writes. (With vectored writes h2 flushed before each DATA frame over 256 bytes:
    /// one write, one TLS record, per answer; 11 writes here.)
    #[tokio::test]
    async fn answers_made_together_leave_in_few_writes() {
        let writes = writes_for(20, 312).await;
        assert!(writes <= 3, "20 answers of 312 bytes took {writes} writes");
    }

    /// A large answer leaves a frame (16 KiB) a write. (With at most 16 KiB kept, the head
    /// of each frame that h2 copied went out in a write of its own: two per frame.)
    #[tokio::test]
    async fn a_large_answer_leaves_a_frame_a_write() {
        let frames = 4 * 3;
        let writes = writes_for(4, 3 * LIMIT).await;
        assert!(
            writes <= frames + 2,
            "4 answers of 48 KiB ({frames} frames) took {writes} writes"
        );
    }

    #[tokio::test]
    async fn small_writes_wait_for_the_flush_and_large_ones_go_through() {
        let (mut far, near) = tokio::io::duplex(4 * LIMIT);
        let turns = Arc::new(Turns::default());
        let mut batched = Batched::new(near, turns.clone());
        batched.write_all(b"abc").await.expect("write");
        batched.write_all(b"def").await.expect("write");
        // Nothing reached the other end before the flush.
        let mut got = vec![0u8; 6];
        let early = tokio::io::AsyncReadExt::read(&mut far, &mut got).now_or_never();
        assert!(early.is_none(), "bytes left before the flush: {early:?}");
        turns.count(batched.flush()).await.expect("flush");
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .expect("read");
        assert_eq!(&got, b"abcdef");
        // A write of LIMIT bytes or more with nothing kept goes straight through.
        let big = vec![7u8; LIMIT + 1];
        batched.write_all(&big).await.expect("write");
        let mut got = vec![0u8; LIMIT + 1];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .expect("read");
        assert!(got.iter().all(|b| *b == 7));
        // After kept bytes it is kept with them, up to CAP, and both leave at the flush.
        batched.write_all(b"x").await.expect("write");
        batched.write_all(&big).await.expect("write");
        let mut got = vec![0u8; LIMIT + 2];
        let early = tokio::io::AsyncReadExt::read(&mut far, &mut got).now_or_never();
        assert!(early.is_none(), "bytes left before the flush: {early:?}");
        turns.count(batched.flush()).await.expect("flush");
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .expect("read");
        assert_eq!(got[0], b'x');
        assert!(got[1..].iter().all(|b| *b == 7));
        // Past CAP, what was kept goes first.
        batched.write_all(b"y").await.expect("write");
        let bigger = vec![8u8; CAP];
        batched.write_all(&bigger).await.expect("write");
        let mut got = vec![0u8; CAP + 1];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut got)
            .await
            .expect("read");
        assert_eq!(got[0], b'y');
        assert!(got[1..].iter().all(|b| *b == 8));
    }
}
