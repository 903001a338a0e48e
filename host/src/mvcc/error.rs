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
        use fjall::LsmError;
        match self {
            Error::Codec(_) | Error::Corrupt(_) => true,
            Error::Storage(e) => match e {
                fjall::Error::Storage(
                    LsmError::ChecksumMismatch { .. }
                    | LsmError::Decompress(_)
                    | LsmError::InvalidTag(_)
                    | LsmError::InvalidTrailer
                    | LsmError::InvalidHeader(_)
                    | LsmError::Utf8(_),
                )
                | fjall::Error::Decompress(_)
                | fjall::Error::InvalidTrailer
                | fjall::Error::InvalidTag(_) => true,
                _ => false,
            },
            Error::Io(_) => false,
        }
    }
}
