//! Failures of the MVCC store itself, as opposed to a request's deterministic failure (which
//! is an [`etch_proto::Error`] returned inside `Ok`).

/// A storage-level failure: the node cannot trust its state machine any more and must stop
/// (applying the entry on another attempt could diverge from the other replicas).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// fjall failed (I/O, corruption, a poisoned database after a failed write).
    #[error("mvcc storage failed: {0}")]
    Storage(#[from] fjall::Error),
    /// A stored record or an imported snapshot record did not decode.
    #[error("mvcc record did not decode: {0}")]
    Codec(#[from] postcard::Error),
    /// Reading or writing a snapshot stream failed.
    #[error("mvcc snapshot i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// Stored data breaks an invariant of the layout (e.g. a malformed version key).
    #[error("mvcc data is corrupt: {0}")]
    Corrupt(String),
}

/// The result of a storage operation of the MVCC store.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether this is damaged data (a checksum that does not match, a block or record that
    /// does not decode), not I/O, a lock or a poisoned database: what makes a member's data
    /// untrustworthy, to be rebuilt from its peers.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Codec(_) | Error::Corrupt(_) => true,
            Error::Storage(e) => fjall_damage(e),
            Error::Io(_) => false,
        }
    }
}

/// Whether a fjall failure is damaged data; every failure fjall 3.1 has is listed.
fn fjall_damage(e: &fjall::Error) -> bool {
    match e {
        fjall::Error::Storage(e) => lsm_damage(e),
        fjall::Error::Decompress(_)
        | fjall::Error::InvalidTrailer
        | fjall::Error::InvalidTag(_)
        | fjall::Error::JournalRecovery(_)
        | fjall::Error::Unrecoverable => true,
        fjall::Error::Io(_)
        | fjall::Error::InvalidVersion(_)
        | fjall::Error::Poisoned
        | fjall::Error::KeyspaceDeleted
        | fjall::Error::Locked => false,
        // fjall may add failures; not known to be damage.
        _ => false,
    }
}

fn lsm_damage(e: &fjall::LsmError) -> bool {
    use fjall::LsmError;
    match e {
        LsmError::ChecksumMismatch { .. }
        | LsmError::Decompress(_)
        | LsmError::InvalidTag(_)
        | LsmError::InvalidTrailer
        | LsmError::InvalidHeader(_)
        | LsmError::Utf8(_)
        | LsmError::Unrecoverable => true,
        LsmError::Io(_) | LsmError::InvalidVersion(_) => false,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Damage is told from the failures a rebuild would not mend (a lock, I/O, a poisoned
    /// database): the message at start says which.
    #[test]
    fn damaged_data_is_told_from_other_failures() {
        let damaged = [
            Error::Storage(fjall::Error::Unrecoverable),
            Error::Storage(fjall::Error::InvalidTrailer),
            Error::Storage(fjall::Error::Storage(fjall::LsmError::Unrecoverable)),
            Error::Storage(fjall::Error::Storage(fjall::LsmError::InvalidTrailer)),
            Error::Corrupt("a version key".into()),
        ];
        for e in damaged {
            assert!(e.is_damage(), "{e}");
        }
        let not = [
            Error::Storage(fjall::Error::Locked),
            Error::Storage(fjall::Error::Poisoned),
            Error::Storage(fjall::Error::Io(std::io::Error::other("EIO"))),
            Error::Io(std::io::Error::other("EIO")),
        ];
        for e in not {
            assert!(!e.is_damage(), "{e}");
        }
    }
}
