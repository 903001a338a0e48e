//! The error a client sees, stable on the wire.

use serde::{Deserialize, Serialize};

use crate::types::{LeaseId, Revision};

/// Why a request failed. Serialized as part of every response frame; new variants are only
/// appended. [`Error::is_retryable`] tells which failures leave the store untouched and may
/// be retried as they are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// This node is not the leader; `leader` is the leader's client address when known.
    #[error("not the leader{}", leader.as_ref().map(|l| format!(" (leader is {l})")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    /// The cluster cannot serve the request now (no leader, no quorum).
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    /// The request took longer than its deadline; a write may or may not have been applied.
    #[error(
        "request timed out: the leader was lost or did not answer after the request was sent (a write's outcome is unknown)"
    )]
    Timeout,
    /// The requested revision has been compacted.
    #[error("required revision has been compacted (compact revision {compact_revision})")]
    Compacted { compact_revision: Revision },
    /// The requested revision is newer than the store's.
    #[error("required revision is a future revision (current revision {current_revision})")]
    FutureRevision { current_revision: Revision },
    /// State read during validation changed before the write committed.
    #[error("conflict: state changed while the request was being validated")]
    Conflict,
    /// The client presented no acceptable identity.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The client's identity may not perform this request.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A validator plugin rejected the write.
    #[error("rejected by plugin {plugin}: {reason} (code {code})")]
    PluginRejected {
        plugin: String,
        code: String,
        reason: String,
    },
    /// A plugin failed (trap, fuel, deadline, memory) and its binding fails closed.
    #[error("plugin {plugin} failed: {cause}")]
    PluginFailed { plugin: String, cause: String },
    /// The request is malformed or contradicts itself.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The request (or a response to it) exceeds a size limit.
    #[error("too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    /// The request names a lease that does not exist.
    #[error("lease {0:x} not found")]
    LeaseNotFound(LeaseId),
    /// A fault inside the node; the message says what.
    #[error("internal error: {0}")]
    Internal(String),
    /// The NOSPACE alarm is raised: writes that add data are refused until space is freed
    /// (compact, defrag) and the alarm disarmed. Reads, deletes, compaction and lease
    /// revokes still work.
    #[error(
        "database space exceeded (NOSPACE alarm: free space with compact and defrag, then `etchctl alarm disarm`; see docs/operations.md)"
    )]
    NoSpace,
    /// The node stopped (its disk failed, or it was shutting down) after the write was
    /// proposed and before it was answered: the write may have committed. Like
    /// [`Error::Timeout`], not to be sent again unchanged; read the key to find out.
    #[error("{reason}: the node stopped after the write was proposed (its outcome is unknown)")]
    OutcomeUnknown { reason: String },
}

impl Error {
    /// Whether the request certainly did not take effect and may be sent again unchanged
    /// (possibly to another node). `Timeout` is not retryable: the write may have committed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. } | Error::Unavailable { .. } | Error::Conflict
        )
    }

    /// Whether a write that failed this way may have been applied: the node lost track of
    /// it after proposing it.
    #[allow(clippy::match_like_matches_macro)] // spelled out: one arm per kind
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Timeout | Error::OutcomeUnknown { .. } => true,
            _ => false,
        }
    }

    /// The gRPC status code etcd answers this failure with (the `grpc_code` label of the
    /// node's request metrics).
    pub fn grpc_code(&self) -> &'static str {
        match self {
            Error::NotLeader { .. } | Error::Unavailable { .. } => "Unavailable",
            Error::Timeout => "DeadlineExceeded",
            Error::Compacted { .. } | Error::FutureRevision { .. } => "OutOfRange",
            Error::Conflict | Error::PluginRejected { .. } => "FailedPrecondition",
            Error::Unauthenticated(_) => "Unauthenticated",
            Error::PermissionDenied(_) => "PermissionDenied",
            Error::PluginFailed { .. } => "Aborted",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::TooLarge { .. } => "ResourceExhausted",
            Error::LeaseNotFound(_) => "NotFound",
            Error::Internal(_) => "Internal",
            Error::NoSpace => "ResourceExhausted",
            Error::OutcomeUnknown { .. } => "Unavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_like_etcds() {
        let e = Error::Compacted {
            compact_revision: 7,
        };
        assert_eq!(
            e.to_string(),
            "required revision has been compacted (compact revision 7)"
        );
        let e = Error::NotLeader {
            leader: Some("127.0.0.1:7379".into()),
        };
        assert_eq!(e.to_string(), "not the leader (leader is 127.0.0.1:7379)");
        assert!(e.is_retryable());
        assert!(!Error::Timeout.is_retryable());
    }

    #[test]
    fn a_node_that_stopped_after_proposing_leaves_the_outcome_unknown() {
        let e = Error::OutcomeUnknown {
            reason: "raft stopped: storage error".into(),
        };
        assert!(!e.is_retryable(), "a resend could apply the write twice");
        assert!(e.outcome_unknown());
        assert!(Error::Timeout.outcome_unknown());
        let unavailable = Error::Unavailable {
            reason: "no leader".into(),
        };
        assert!(!unavailable.outcome_unknown());
        assert_eq!(
            e.to_string(),
            "raft stopped: storage error: the node stopped after the write was proposed (its outcome is unknown)"
        );
    }
}
