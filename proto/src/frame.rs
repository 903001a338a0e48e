//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! The reader checks the length against its limit *before* allocating, and then allocates
//! only as the body's bytes arrive, so an oversize frame costs nothing but an error and a
//! frame announced but never sent costs nothing at all. Any decoding failure is a [`FrameError`] for
//! that stream only; the caller answers or drops the stream and carries on.

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("stream closed before a complete frame")]
    Closed,
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame: {0}")]
    Malformed(#[source] postcard::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The frame started but its last byte did not arrive within the deadline.
    #[error("frame not received within {0:?} of its first byte")]
    TimedOut(Duration),
}

/// Encodes `msg` into a frame (length prefix included), refusing one over `max` bytes.
/// The size is measured first, so an oversize message allocates nothing and a large one
/// about its frame (no doubling growth, no copies).
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let measured = body_len(msg)?;
    if measured > max {
        return Err(FrameError::TooLarge { len: measured, max });
    }
    let mut buf = Vec::with_capacity(4 + measured);
    buf.extend_from_slice(&[0; 4]);
    let mut buf = postcard::to_extend(msg, buf).map_err(FrameError::Malformed)?;
    // The prefix is the encoded length, not the measured one (postcard calls its size
    // function experimental); they agree, and the limit is checked on what is sent.
    let len = buf.len() - 4;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Frames are bounded by `max`, which callers keep far below 4 GiB.
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// The length of `msg`'s frame body (without the 4-byte prefix), measured without
/// encoding it: lets a caller decide whether it can afford the frame before building it.
pub fn body_len<T: Serialize>(msg: &T) -> Result<usize, FrameError> {
    postcard::experimental::serialized_size(msg).map_err(FrameError::Malformed)
}

/// Writes one frame holding `msg`.
pub async fn write<W, T>(w: &mut W, msg: &T, max: usize) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode(msg, max)?;
    w.write_all(&buf).await?;
    Ok(())
}

/// Largest step by which a frame body grows while its bytes arrive. A length prefix is only
/// a claim: memory follows the bytes actually received, never the declared length.
const CHUNK: usize = 64 * 1024;

/// Reads one frame and decodes it. Returns `Ok(None)` when the stream ends cleanly before a
/// new frame starts.
pub async fn read<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let Some(len) = read_len(r, max).await? else {
        return Ok(None);
    };
    let body = read_body(r, len).await?;
    decode(&body).map(Some)
}

/// Reads one frame like [`read`], waiting as long as it takes for the frame to *start*, but
/// allowing only `within` from its first byte to its last: how a long-lived stream (watch
/// controls, lease keep-alives) reads its next frame without letting a trickling sender pin
/// a half-received frame.
///
/// # Errors
///
/// [`FrameError::TimedOut`] when the frame started but did not complete in time.
pub async fn read_started_within<R, T>(
    r: &mut R,
    max: usize,
    within: Duration,
) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let rest = async {
        let len = read_len_after(r, first[0], max).await?;
        let body = read_body(r, len).await?;
        decode(&body)
    };
    match tokio::time::timeout(within, rest).await {
        Ok(decoded) => decoded.map(Some),
        Err(_) => Err(FrameError::TimedOut(within)),
    }
}

/// Reads a frame's length prefix and checks it against `max`; `Ok(None)` when the stream
/// ends cleanly first. With [`read_body`] and [`decode`], lets a caller decide between the
/// prefix and the body (whether it has room for that many bytes).
pub async fn read_len<R>(r: &mut R, max: usize) -> Result<Option<usize>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    read_len_after(r, first[0], max).await.map(Some)
}

/// The rest of a length prefix whose first byte was `first`.
async fn read_len_after<R>(r: &mut R, first: u8, max: usize) -> Result<usize, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut prefix = [first, 0, 0, 0];
    let mut got = 1;
    while got < 4 {
        match r.read(&mut prefix[got..]).await? {
            0 => return Err(FrameError::Closed),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Reads a frame body of `len` bytes (already checked against the limit), growing the
/// buffer by at most [`CHUNK`] at a time as bytes arrive: a peer that announces a large
/// frame and sends little of it holds little memory.
pub async fn read_body<R>(r: &mut R, len: usize) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut body = Vec::with_capacity(len.min(CHUNK));
    while body.len() < len {
        let start = body.len();
        let step = (len - start).min(CHUNK);
        if body.capacity() < start + step {
            // Double, as `Vec` would, but never past the frame's length (no 2 MiB
            // allocation for a 1.5 MiB frame).
            let grow = body.capacity().max(step).min(len - start);
            body.reserve_exact(grow);
        }
        body.resize(start + step, 0);
        let n = r.read(&mut body[start..]).await?;
        body.truncate(start + n);
        if n == 0 {
            return Err(FrameError::Closed);
        }
    }
    Ok(body)
}

/// Decodes a frame body.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PutRequest, Request};

    fn put(n: usize) -> Request {
        Request::Put(PutRequest {
            key: b"k".to_vec(),
            value: vec![7; n],
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn round_trip() {
        let bytes = encode(&put(300), 1024).expect("encode");
        let back: Option<Request> = read(&mut &bytes[..], 1024).await.expect("read");
        assert_eq!(back, Some(put(300)));
    }

    #[tokio::test]
    async fn oversize_is_refused_before_allocation() {
        let mut hostile: &[u8] = &[0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let err = read::<_, Request>(&mut hostile, 1024)
            .await
            .expect_err("too large");
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        assert!(matches!(
            encode(&put(2000), 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn garbage_and_truncation_are_errors() {
        let mut garbage: &[u8] = &[0, 0, 0, 3, 0xee, 0xee, 0xee];
        assert!(matches!(
            read::<_, Request>(&mut garbage, 1024).await,
            Err(FrameError::Malformed(_))
        ));
        let mut truncated: &[u8] = &[0, 0, 0, 9, 1];
        assert!(matches!(
            read::<_, Request>(&mut truncated, 1024).await,
            Err(FrameError::Closed)
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read::<_, Request>(&mut empty, 1024).await,
            Ok(None)
        ));
    }

    #[test]
    fn measured_length_is_the_encoded_length() {
        for n in [0, 1, 127, 128, 300, 70_000] {
            let bytes = encode(&put(n), 1 << 20).expect("encode");
            assert_eq!(body_len(&put(n)).expect("measure"), bytes.len() - 4);
            assert_eq!(bytes.capacity(), bytes.len(), "allocated exactly once");
        }
    }

    #[tokio::test]
    async fn a_body_grows_with_its_bytes_up_to_its_length() {
        let bytes = encode(&put(300_000), 1 << 20).expect("encode");
        let len = bytes.len() - 4;
        // Delivered in 1000-byte pieces, as a slow network would.
        let (mut tx, mut rx) = tokio::io::duplex(1000);
        let writer = tokio::spawn(async move {
            for piece in bytes[4..].chunks(1000) {
                tx.write_all(piece).await.expect("write");
            }
        });
        let body = read_body(&mut rx, len).await.expect("body");
        writer.await.expect("writer");
        assert_eq!(body.len(), len);
        assert_eq!(
            body.capacity(),
            len,
            "no more than the frame's length is kept"
        );
        assert_eq!(decode::<Request>(&body).expect("decode"), put(300_000));
    }

    #[tokio::test]
    async fn a_frame_that_stalls_after_its_first_byte_times_out() {
        let (mut tx, mut rx) = tokio::io::duplex(64);
        // Nothing sent yet: an idle stream may wait (the deadline starts with the frame).
        let idle = tokio::time::timeout(
            Duration::from_millis(100),
            read_started_within::<_, Request>(&mut rx, 1024, Duration::from_millis(10)),
        )
        .await;
        assert!(idle.is_err(), "an idle stream is not timed out: {idle:?}");
        // Two bytes of a prefix, then nothing: the frame has started and must finish.
        tx.write_all(&[0, 0]).await.expect("write");
        let stalled =
            read_started_within::<_, Request>(&mut rx, 1024, Duration::from_millis(50)).await;
        assert!(
            matches!(stalled, Err(FrameError::TimedOut(_))),
            "{stalled:?}"
        );
        // A whole frame within the deadline is read as usual.
        let (mut tx, mut rx) = tokio::io::duplex(4096);
        tx.write_all(&encode(&put(10), 1024).expect("encode"))
            .await
            .expect("write");
        let whole = read_started_within::<_, Request>(&mut rx, 1024, Duration::from_secs(5)).await;
        assert_eq!(whole.expect("a frame"), Some(put(10)));
    }
}
