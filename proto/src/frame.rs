//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes of postcard.
//!
//! The reader checks the length against its limit *before* allocating, so an oversize or
//! hostile frame costs nothing but an error. Any decoding failure is a [`FrameError`] for
//! that stream only; the caller answers or drops the stream and carries on.

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
}

/// Encodes `msg` into a frame (length prefix included), refusing one over `max` bytes.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    let mut buf =
        postcard::to_extend(msg, std::mem::take(&mut buf)).map_err(FrameError::Malformed)?;
    let len = buf.len() - 4;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    // Frames are bounded by `max`, which callers keep far below 4 GiB.
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    buf[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
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

/// Reads one frame and decodes it. Returns `Ok(None)` when the stream ends cleanly before a
/// new frame starts.
pub async fn read<R, T>(r: &mut R, max: usize) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(FrameError::Closed),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    })?;
    postcard::from_bytes(&body)
        .map_err(FrameError::Malformed)
        .map(Some)
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
}
