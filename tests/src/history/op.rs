//! What a history records: the operations, their results and the entries that time them.

use std::fmt;

use etch_proto::Revision;

/// Index of an operation in its [`super::History`].
pub type OpId = usize;

/// Whoever issued an operation: a test's client task or thread. One client has at most one
/// operation outstanding at a time (the checker does not rely on it, but histories read
/// better that way).
pub type ClientId = usize;

/// An operation on one key, a small subset of etcd's KV API.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put(key, value)`.
    Put { key: Vec<u8>, value: Vec<u8> },
    /// A linearizable `range(key)`.
    Get { key: Vec<u8> },
    /// `delete_range(key)`.
    Delete { key: Vec<u8> },
    /// Compare-and-swap as one txn: if the key holds `expected` (`None`: the key is missing)
    /// then put `new`, else do nothing.
    Cas {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

impl Op {
    /// The one key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Get { key } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    /// Whether the operation may change the store.
    pub fn is_write(&self) -> bool {
        !matches!(self, Op::Get { .. })
    }
}

/// What a node answered to an [`Op`], with the revisions etcd reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// The store revision the put created.
    Put { revision: Revision },
    /// The key's value and `mod_revision` (`None` and 0 when missing), and the header
    /// revision the read was served at.
    Get {
        value: Option<Vec<u8>>,
        mod_revision: Revision,
        revision: Revision,
    },
    /// How many keys were deleted (0 or 1) and the header revision (the new revision when
    /// one was deleted).
    Delete { deleted: i64, revision: Revision },
    /// Whether the compare held and the header revision (the new revision when it held).
    Cas { succeeded: bool, revision: Revision },
}

impl OpResult {
    /// The header revision: where in the store's history the operation took effect.
    pub fn revision(&self) -> Revision {
        match self {
            OpResult::Put { revision }
            | OpResult::Get { revision, .. }
            | OpResult::Delete { revision, .. }
            | OpResult::Cas { revision, .. } => *revision,
        }
    }

    /// Whether this result says the store changed (and so `revision` is a new one).
    pub fn wrote(&self) -> bool {
        match self {
            OpResult::Put { .. } => true,
            OpResult::Get { .. } => false,
            OpResult::Delete { deleted, .. } => *deleted > 0,
            OpResult::Cas { succeeded, .. } => *succeeded,
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered.
    Ok(OpResult),
    /// Certainly did not take effect (a retryable error such as `NotLeader`, `Unavailable`,
    /// `Conflict`, or a refusal before anything was sent).
    Failed,
    /// May or may not have taken effect, at any time after the invocation (a timeout, a
    /// connection lost after sending). Also the outcome of an operation never completed.
    Unknown,
}

/// One operation of a history with its timing, in nanoseconds since the history began.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub id: OpId,
    pub client: ClientId,
    pub op: Op,
    pub invoked: u64,
    /// `None` while outstanding; ignored (taken as +∞) for an [`Outcome::Unknown`].
    pub completed: Option<u64>,
    pub outcome: Outcome,
}

impl Entry {
    /// The answer, when there was one.
    pub fn result(&self) -> Option<&OpResult> {
        match &self.outcome {
            Outcome::Ok(result) => Some(result),
            Outcome::Failed | Outcome::Unknown => None,
        }
    }
}

/// Bytes as text when they are UTF-8, for explanations.
pub(crate) fn show(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("{bytes:?}"),
    }
}

fn show_opt(value: &Option<Vec<u8>>) -> String {
    value.as_deref().map_or_else(|| "none".to_owned(), show)
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put({}, {})", show(key), show(value)),
            Op::Get { key } => write!(f, "get({})", show(key)),
            Op::Delete { key } => write!(f, "delete({})", show(key)),
            Op::Cas { key, expected, new } => write!(
                f,
                "cas({}, {} -> {})",
                show(key),
                show_opt(expected),
                show(new)
            ),
        }
    }
}

impl fmt::Display for OpResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpResult::Put { revision } => write!(f, "rev {revision}"),
            OpResult::Get {
                value,
                mod_revision,
                revision,
            } => write!(
                f,
                "{} (mod {mod_revision}) @ rev {revision}",
                show_opt(value)
            ),
            OpResult::Delete { deleted, revision } => {
                write!(f, "deleted {deleted} @ rev {revision}")
            }
            OpResult::Cas {
                succeeded,
                revision,
            } => {
                let what = if *succeeded { "swapped" } else { "kept" };
                write!(f, "{what} @ rev {revision}")
            }
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} c{} {} -> ", self.id, self.client, self.op)?;
        match &self.outcome {
            Outcome::Ok(result) => write!(f, "{result}")?,
            Outcome::Failed => f.write_str("failed")?,
            Outcome::Unknown => f.write_str("unknown")?,
        }
        let micros = |ns: u64| ns as f64 / 1000.0;
        match (self.completed, &self.outcome) {
            (Some(done), Outcome::Ok(_) | Outcome::Failed) => {
                write!(f, " [{:.1}µs, {:.1}µs]", micros(self.invoked), micros(done))
            }
            _ => write!(f, " [{:.1}µs, ∞)", micros(self.invoked)),
        }
    }
}
