//! Backups of this node's state, as etcd's maintenance `Snapshot`: a consistent point of the
//! applied state, written out in `crate::backup`'s format while the node goes on serving.
//! The node asked answers from its own applied state (no Raft round), as etcd's does.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use etch_proto::alarm::{SnapshotRequest, SnapshotResponse};
use etch_proto::{Error, Request, Response};

use super::Node;
use crate::backup::{self, BackupError, BackupHeader};
use crate::mvcc::Export;

/// How many backups a node streams at once: each holds a storage snapshot open (old
/// versions are kept while it lives) and a blocking thread.
pub(super) const CONCURRENT_BACKUPS: usize = 2;

/// A backup begun: the point it holds, until it is written out.
pub struct Backup {
    export: Export,
    header: BackupHeader,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Backup {
    /// The revision the backup holds the state at.
    pub fn revision(&self) -> i64 {
        self.header.revision
    }

    /// Writes the whole backup file into `w` (blocking: run it off the async threads).
    ///
    /// # Errors
    ///
    /// A storage failure, or `w` failing.
    pub fn write(&self, w: &mut dyn Write) -> Result<[u8; 32], BackupError> {
        backup::write(&self.export, &self.header, w)
    }
}

impl Node {
    /// Begins a backup for `principal` (root only): fixes the point it holds and answers
    /// the frame that starts the stream.
    ///
    /// # Errors
    ///
    /// Not root, too many backups already streaming, or the storage failed.
    pub async fn begin_backup(&self, principal: &str) -> Result<(Backup, Response), Error> {
        let request = Request::Snapshot(SnapshotRequest {});
        self.authorize(principal, &request)?;
        let permit = self
            .inner
            .backups
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Unavailable {
                reason: format!(
                    "this node is already streaming {CONCURRENT_BACKUPS} snapshots; try again when one is done"
                ),
            })?;
        let store = self.store().clone();
        let (export, revision, compact_revision) = super::blocking(move || {
            let export = store.begin_export();
            let (revision, compact_revision) = export.counters()?;
            Ok((export, revision, compact_revision))
        })
        .await?;
        let saved_at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let header = BackupHeader {
            format: backup::FORMAT,
            revision,
            compact_revision,
            member_id: self.id(),
            cluster_id: self.inner.peers.cluster_id(),
            saved_at_unix_ms,
        };
        let mut response = Response::Snapshot(SnapshotResponse {
            revision,
            ..Default::default()
        });
        self.fill_header(&mut response);
        let backup = Backup {
            export,
            header,
            _permit: permit,
        };
        Ok((backup, response))
    }
}
