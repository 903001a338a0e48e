//! A snapshot stream: the first frame was `Request::Snapshot`; the node answers one
//! `Result<Response, Error>` frame, then, if it began a backup, the backup file's bytes to
//! the end of the stream (see `etch_proto::alarm::SnapshotRequest`).
//!
//! The file is written on a blocking thread into a channel of [`CHUNK`]-byte chunks, at most
//! [`CHUNKS_IN_FLIGHT`] ahead of the client: a node holds about a megabyte per stream
//! whatever the store's size. Each chunk must be taken within the write deadline; a client
//! that stops reading is reset, and the writer stops at its next chunk.

use std::io::{self, Write};
use std::sync::Arc;

use etch_proto::codes;
use etch_proto::frame;
use etch_proto::{DEFAULT_MAX_RESPONSE_BYTES, Error, Response};
use tokio::sync::mpsc;

use crate::backup::BackupError;
use crate::node::{Backup, Node};

/// Bytes of backup per chunk handed to the stream.
const CHUNK: usize = 64 * 1024;
/// Chunks the writer may be ahead of the client.
const CHUNKS_IN_FLIGHT: usize = 16;

pub(super) async fn serve_snapshot(node: Node, principal: Arc<str>, mut send: quinn::SendStream) {
    let limits = node.options().client_limits.clone();
    let (backup, answer): (_, Result<Response, Error>) = match node.begin_backup(&principal).await {
        Ok((backup, first)) => (Some(backup), Ok(first)),
        Err(e) => (None, Err(e)),
    };
    let write = frame::write(&mut send, &answer, DEFAULT_MAX_RESPONSE_BYTES);
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "snapshot client went away");
            return;
        }
        Err(_) => {
            let _ = send.reset(codes::stream::WRITE_TIMEOUT.into());
            return;
        }
    }
    let Some(backup) = backup else {
        let _ = send.finish();
        return;
    };
    let revision = backup.revision();
    let (mut rx, writer) = write_chunks(backup);
    while let Some(chunk) = rx.recv().await {
        let chunk: Vec<u8> = chunk;
        match tokio::time::timeout(limits.write_timeout, send.write_all(&chunk)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::info!(?principal, revision, error = %e, "snapshot client went away");
                return;
            }
            Err(_) => {
                tracing::info!(
                    ?principal,
                    revision,
                    "snapshot not read in time; stream reset"
                );
                let _ = send.reset(codes::stream::WRITE_TIMEOUT.into());
                return;
            }
        }
    }
    match writer.await {
        Ok(Ok(bytes)) => {
            let _ = send.finish();
            tracing::info!(?principal, revision, bytes, "snapshot sent");
        }
        Ok(Err(e)) => {
            tracing::error!(?principal, revision, error = %e, "snapshot failed");
            let _ = send.reset(codes::stream::SNAPSHOT_FAILED.into());
        }
        Err(e) => {
            tracing::error!(?principal, revision, error = %e, "snapshot writer failed");
            let _ = send.reset(codes::stream::SNAPSHOT_FAILED.into());
        }
    }
}

/// Writes `backup` on a blocking thread into a channel of [`CHUNK`]-byte pieces, at most
/// [`CHUNKS_IN_FLIGHT`] ahead of the reader; the writer stops at its next chunk once the
/// receiver is dropped. The task answers how many bytes it wrote. Both fronts stream
/// backups this way.
pub(super) fn write_chunks(
    backup: Backup,
) -> (
    mpsc::Receiver<Vec<u8>>,
    tokio::task::JoinHandle<Result<u64, BackupError>>,
) {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || {
        let mut chunks = Chunks {
            tx,
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
        };
        // `backup::write` flushes its writer at the end: the last piece is sent.
        backup.write(&mut chunks).map(|_| chunks.sent)
    });
    (rx, writer)
}

/// A writer handing [`CHUNK`]-byte pieces to the stream, waiting while it is
/// [`CHUNKS_IN_FLIGHT`] ahead; broken once the stream is gone.
struct Chunks {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
    sent: u64,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the snapshot stream is gone"))
    }
}

impl Write for Chunks {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
