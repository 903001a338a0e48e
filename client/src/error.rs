//! The one error type of the SDK.
//!
//! Messages do not repeat their source: walk [`std::error::Error::source`] (or print with
//! anyhow's `{:#}`) for the whole story. [`Error::is_retryable`] says which failures left the
//! store certainly untouched; the client already retried those within its request timeout.

use std::time::Duration;

use etch_proto::frame::FrameError;
use etch_proto::pki::PkiError;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node answered with an error (see [`etch_proto::Error`] for each case).
    #[error(transparent)]
    Server(#[from] etch_proto::Error),
    /// The node refused this client's certificate during the TLS handshake: it is signed by
    /// another CA, or none was presented. Nothing was applied.
    #[error("certificate refused by {endpoint}: {reason}")]
    CertificateRefused { endpoint: String, reason: String },
    /// The node turned the connection away after the handshake because of a limit (too many
    /// connections to it, or for this certificate's principal); `reason` is the node's.
    /// Nothing was sent.
    #[error("connection refused by {endpoint}: {reason}")]
    Refused { endpoint: String, reason: String },
    /// No connection could be made to `endpoint`. Nothing was sent.
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: DialError,
    },
    /// An established connection failed. With `sent == false` the request had not been fully
    /// written and was not applied; with `sent == true` its outcome is unknown.
    #[error("{}", lost_message(endpoint, *sent))]
    ConnectionLost {
        endpoint: String,
        sent: bool,
        #[source]
        source: quinn::ConnectionError,
    },
    /// The node stopped or reset the request's stream (with a QUIC error code; the message
    /// says what the code means, see [`etch_proto::codes::stream`]).
    #[error("stream to {endpoint} was {what} by the node (code {code}{})", code_reason(*code))]
    StreamReset {
        endpoint: String,
        what: &'static str,
        code: u64,
        sent: bool,
    },
    /// The request did not complete within the request timeout. `tried` names the
    /// endpoints it reached (or tried to reach), in order; `last_error` is the failure of
    /// the last attempt (`None`: the last attempt was still waiting for its answer).
    /// `outcome_unknown` is set for a write that was sent whole at least once and not
    /// named (see [`ClientOptions::exactly_once`](crate::ClientOptions::exactly_once)) or
    /// whose retries ran out of time: it may have been applied.
    #[error("{}", timeout_message(*after, tried, last_error.is_none(), *outcome_unknown))]
    Timeout {
        after: Duration,
        tried: Vec<String>,
        outcome_unknown: bool,
        #[source]
        last_error: Option<Box<Error>>,
    },
    /// The node's answer could not be read (malformed, truncated or over the size limit).
    #[error("protocol error talking to {endpoint}")]
    Protocol {
        endpoint: String,
        #[source]
        source: FrameError,
    },
    /// The request is larger than a node accepts; it was not sent.
    #[error("request of {size} bytes exceeds the limit of {limit} bytes")]
    RequestTooLarge { size: usize, limit: usize },
    /// The node answered with a response of another kind than the request's.
    #[error("unexpected response from the node: expected {expected}, got {got}")]
    UnexpectedResponse { expected: &'static str, got: String },
    /// The CA, certificate or key could not be loaded or used.
    #[error(transparent)]
    Tls(#[from] PkiError),
    /// An endpoint is not of the form `host:port`.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        endpoint: String,
        reason: &'static str,
    },
    /// The options name no endpoint.
    #[error("no endpoints given")]
    NoEndpoints,
    /// The watch's start revision (or the revision it was resuming from) has been compacted:
    /// the events from there on are gone. Start again from a read at `compact_revision` or
    /// later; the watch has ended.
    #[error(
        "watch canceled: required revision has been compacted (compact revision {compact_revision})"
    )]
    WatchCompacted {
        compact_revision: etch_proto::Revision,
    },
    /// The node canceled the watch for `reason` (not at this client's request); the watch
    /// has ended.
    #[error("watch canceled by the node: {reason}")]
    WatchCanceled { reason: String },
    /// The watch has ended (canceled, failed or dropped); controls can no longer be sent.
    #[error("the watch has ended")]
    WatchEnded,
    /// The local UDP socket could not be opened.
    #[error("cannot open a local UDP socket")]
    Bind(#[source] std::io::Error),
    /// Writing what the node streamed (a snapshot) to its destination failed.
    #[error("cannot write the snapshot")]
    Output(#[source] std::io::Error),
}

fn code_reason(code: u64) -> String {
    etch_proto::codes::stream_reason(code)
        .map(|reason| format!(": {reason}"))
        .unwrap_or_default()
}

fn timeout_message(after: Duration, tried: &[String], no_answer: bool, unknown: bool) -> String {
    let mut text = format!("context deadline exceeded (request timeout {after:?}");
    if tried.is_empty() {
        text.push_str("; no endpoint reached");
    } else {
        text.push_str("; tried ");
        text.push_str(&tried.join(", "));
    }
    if no_answer && !tried.is_empty() {
        text.push_str("; no answer");
    }
    text.push(')');
    if unknown {
        text.push_str(
            "; outcome unknown: the write was sent and may have been applied (read the key to find out)",
        );
    }
    text
}

fn lost_message(endpoint: &str, sent: bool) -> String {
    if sent {
        format!("connection to {endpoint} lost after the request was sent (outcome unknown)")
    } else {
        format!("connection to {endpoint} lost before the request was sent")
    }
}

/// Why one endpoint could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("cannot resolve the host name")]
    Resolve(#[source] std::io::Error),
    #[error("the host name resolves to no address")]
    NoAddress,
    #[error("cannot start the connection")]
    Start(#[source] quinn::ConnectError),
    #[error("handshake failed")]
    Handshake(#[source] quinn::ConnectionError),
    /// This client does not trust the node's certificate (not signed by the CA it was
    /// given, or not valid for the endpoint's host name).
    #[error("the node's certificate is not trusted (is the CA file the cluster's?): {0}")]
    UntrustedNode(String),
    #[error("timed out after {0:?} (dial timeout)")]
    TimedOut(Duration),
}

/// What the attempts of one request went through, for the error that ends it.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// The failure of the latest attempt.
    pub(crate) last_error: Option<Error>,
    /// Endpoints reached or dialled, in order, each once.
    tried: Vec<String>,
    /// A write was sent whole at least once and its answer lost.
    sent_write: bool,
    /// The attempt under way is a write being sent or awaiting its answer.
    pub(crate) write_in_flight: bool,
}

impl Attempts {
    /// An attempt on `endpoint` begins.
    pub(crate) fn reached(&mut self, endpoint: &impl std::fmt::Display) {
        let endpoint = endpoint.to_string();
        if !self.tried.contains(&endpoint) {
            self.tried.push(endpoint);
        }
    }

    /// A write was sent whole and its answer lost, in some attempt.
    pub(crate) fn sent_write(&self) -> bool {
        self.sent_write
    }

    /// An attempt failed with `err` (for a write: `write`).
    pub(crate) fn failed(&mut self, err: Error, write: bool) {
        self.write_in_flight = false;
        if let Error::Connect { endpoint, .. } | Error::CertificateRefused { endpoint, .. } = &err {
            self.reached(endpoint);
        }
        if write && err.outcome_unknown() {
            self.sent_write = true;
        }
        self.last_error = Some(err);
    }

    /// The error of a request whose `after` ran out.
    pub(crate) fn timeout(self, after: Duration) -> Error {
        Error::Timeout {
            after,
            tried: self.tried,
            outcome_unknown: self.sent_write || self.write_in_flight,
            last_error: self.last_error.map(Box::new),
        }
    }
}

/// `Result` with the SDK's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the failed request certainly did not take effect and may be sent again as it
    /// is: retryable server errors (`NotLeader`, `Unavailable`, `Conflict`) and failures to
    /// connect or to send before the request was complete. A timeout or a connection lost
    /// after sending is not retryable: a write may have been applied.
    ///
    /// # Examples
    ///
    /// ```
    /// use etch_client::Error;
    /// let e = Error::Server(etch_proto::Error::NotLeader { leader: None });
    /// assert!(e.is_retryable());
    /// let timeout = Error::Timeout {
    ///     after: std::time::Duration::from_secs(5),
    ///     tried: vec!["127.0.0.1:7379".into()],
    ///     outcome_unknown: false,
    ///     last_error: None,
    /// };
    /// assert!(!timeout.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Server(e) => e.is_retryable(),
            // A node whose certificate this client does not trust is a configuration error
            // (the wrong CA file, or a host name the certificate does not name).
            Error::Connect {
                source: DialError::UntrustedNode(_),
                ..
            } => false,
            Error::Connect { .. } | Error::Refused { .. } => true,
            Error::ConnectionLost { sent, .. } | Error::StreamReset { sent, .. } => !sent,
            Error::CertificateRefused { .. }
            | Error::Timeout { .. }
            | Error::Protocol { .. }
            | Error::RequestTooLarge { .. }
            | Error::UnexpectedResponse { .. }
            | Error::Tls(_)
            | Error::InvalidEndpoint { .. }
            | Error::NoEndpoints
            | Error::Bind(_)
            | Error::Output(_)
            | Error::WatchCompacted { .. }
            | Error::WatchCanceled { .. }
            | Error::WatchEnded => false,
        }
    }

    /// Whether a write that failed this way may have been applied: it was sent whole and
    /// its answer was lost (the connection or stream broke, the node's own deadline passed,
    /// or the request timeout ran out after sending it). Read the key to find out; an SDK
    /// write is only left in this state when its retries ran out of time, or when
    /// [`ClientOptions::exactly_once`](crate::ClientOptions::exactly_once) is off.
    ///
    /// # Examples
    ///
    /// ```
    /// use etch_client::Error;
    /// assert!(Error::Server(etch_proto::Error::Timeout).outcome_unknown());
    /// assert!(!Error::Server(etch_proto::Error::NotLeader { leader: None }).outcome_unknown());
    /// ```
    pub fn outcome_unknown(&self) -> bool {
        match self {
            Error::Timeout {
                outcome_unknown, ..
            } => *outcome_unknown,
            Error::Server(e) => e.outcome_unknown(),
            other => other.is_transient_after_send(),
        }
    }

    /// Whether the failure came from the transport after the request was sent: a read may
    /// be repeated, a write may not.
    pub(crate) fn is_transient_after_send(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLost { sent: true, .. } | Error::StreamReset { sent: true, .. }
        )
    }
}

/// The reason a node gave for turning a connection away because of a limit, when the
/// close says so: an application close with a refusal code (its reason text is the
/// node's), or QUIC's `CONNECTION_REFUSED` (too many handshakes at once).
pub(crate) fn limit_refusal(err: &quinn::ConnectionError) -> Option<String> {
    match err {
        quinn::ConnectionError::ApplicationClosed(close)
            if etch_proto::codes::is_refusal(close.error_code.into_inner()) =>
        {
            let code = close.error_code.into_inner();
            let reason = String::from_utf8_lossy(&close.reason);
            Some(if reason.is_empty() {
                etch_proto::codes::close_reason(code)
                    .unwrap_or("refused")
                    .to_owned()
            } else {
                reason.into_owned()
            })
        }
        quinn::ConnectionError::ConnectionClosed(close)
            if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED =>
        {
            Some("the node refused the connection (too many connections being set up)".into())
        }
        _ => None,
    }
}

/// The reason a node gave for refusing the handshake, when the close carries a TLS alert.
pub(crate) fn tls_refusal(err: &quinn::ConnectionError) -> Option<String> {
    let (code, reason) = match err {
        quinn::ConnectionError::ConnectionClosed(close) => {
            (u64::from(close.error_code), close.reason.to_vec())
        }
        _ => return None,
    };
    // QUIC carries TLS alerts as the transport error codes 0x100..=0x1ff.
    if !(0x100..0x200).contains(&code) {
        return None;
    }
    let alert = rustls::AlertDescription::from((code & 0xff) as u8);
    let reason = String::from_utf8_lossy(&reason);
    let hint = match alert {
        rustls::AlertDescription::CertificateRevoked => " (the certificate has been revoked)",
        _ if reason.contains("Revoked") => " (the certificate has been revoked)",
        _ if reason.contains("invalid peer certificate") => {
            " (the client certificate is not signed by the cluster's CA)"
        }
        rustls::AlertDescription::CertificateRequired => " (no client certificate was presented)",
        rustls::AlertDescription::UnknownCA | rustls::AlertDescription::BadCertificate => {
            " (the client certificate is not signed by the cluster's CA)"
        }
        rustls::AlertDescription::CertificateExpired => " (the client certificate has expired)",
        _ => "",
    };
    let detail = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    Some(format!("TLS alert {alert:?}{hint}{detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(code: u64) -> quinn::ConnectionError {
        quinn::ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto((code & 0xff) as u8),
            frame_type: None,
            reason: Default::default(),
        })
    }

    #[test]
    fn tls_alerts_become_refusals() {
        let unknown_ca = tls_refusal(&closed(48)).expect("alert 48");
        assert!(unknown_ca.contains("UnknownCA"), "{unknown_ca}");
        assert!(unknown_ca.contains("cluster's CA"), "{unknown_ca}");
        let missing = tls_refusal(&closed(116)).expect("alert 116");
        assert!(missing.contains("no client certificate"), "{missing}");
        assert_eq!(tls_refusal(&quinn::ConnectionError::TimedOut), None);
        assert_eq!(tls_refusal(&quinn::ConnectionError::Reset), None);
    }

    #[test]
    fn limit_closes_become_refusals_with_the_nodes_reason() {
        let app = |code: u32, reason: &'static [u8]| {
            quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
                error_code: code.into(),
                reason: reason.into(),
            })
        };
        let per_principal = app(
            etch_proto::codes::close::TOO_MANY_FOR_PRINCIPAL,
            b"too many connections for principal alice (limit 2)",
        );
        assert_eq!(
            limit_refusal(&per_principal).as_deref(),
            Some("too many connections for principal alice (limit 2)")
        );
        let bare = limit_refusal(&app(etch_proto::codes::close::TOO_MANY_CONNECTIONS, b""));
        assert!(bare.expect("a refusal").contains("connection limit"));
        assert_eq!(
            limit_refusal(&app(etch_proto::codes::close::IDLE, b"idle")),
            None
        );
        assert_eq!(limit_refusal(&quinn::ConnectionError::TimedOut), None);
        let refused = Error::Refused {
            endpoint: "a:1".into(),
            reason: "too many".into(),
        };
        assert!(refused.is_retryable());
        assert_eq!(refused.to_string(), "connection refused by a:1: too many");
        let reset = Error::StreamReset {
            endpoint: "a:1".into(),
            what: "reset",
            code: etch_proto::codes::stream::UNREAD_RESPONSES.into(),
            sent: true,
        };
        assert!(
            reset
                .to_string()
                .contains("(code 3: too many bytes of answers"),
            "{reset}"
        );
    }

    #[test]
    fn retryability_follows_what_was_sent() {
        let lost = |sent| Error::ConnectionLost {
            endpoint: "a:1".into(),
            sent,
            source: quinn::ConnectionError::Reset,
        };
        assert!(lost(false).is_retryable());
        assert!(!lost(true).is_retryable());
        assert!(lost(true).is_transient_after_send());
        assert!(
            Error::Server(etch_proto::Error::Unavailable {
                reason: "no leader".into()
            })
            .is_retryable()
        );
        assert!(!Error::Server(etch_proto::Error::Timeout).is_retryable());
        let refused = Error::CertificateRefused {
            endpoint: "127.0.0.1:7379".into(),
            reason: "TLS alert UnknownCA".into(),
        };
        assert!(!refused.is_retryable());
        assert_eq!(
            refused.to_string(),
            "certificate refused by 127.0.0.1:7379: TLS alert UnknownCA"
        );
        assert_eq!(
            lost(true).to_string(),
            "connection to a:1 lost after the request was sent (outcome unknown)"
        );
        let untrusted = Error::Connect {
            endpoint: "a:1".into(),
            source: DialError::UntrustedNode("UnknownIssuer".into()),
        };
        assert!(!untrusted.is_retryable(), "a configuration error");
    }

    #[test]
    fn a_timeout_names_what_was_tried_and_whether_a_write_may_have_applied() {
        let timeout = |tried: &[&str], unknown, last: Option<Error>| Error::Timeout {
            after: Duration::from_secs(5),
            tried: tried.iter().map(|t| t.to_string()).collect(),
            outcome_unknown: unknown,
            last_error: last.map(Box::new),
        };
        assert_eq!(
            timeout(&["a:1", "b:2"], false, None).to_string(),
            "context deadline exceeded (request timeout 5s; tried a:1, b:2; no answer)"
        );
        assert_eq!(
            timeout(&[], false, Some(Error::NoEndpoints)).to_string(),
            "context deadline exceeded (request timeout 5s; no endpoint reached)"
        );
        let unknown = timeout(&["a:1"], true, None);
        assert!(unknown.outcome_unknown());
        assert!(
            unknown
                .to_string()
                .ends_with("; outcome unknown: the write was sent and may have been applied (read the key to find out)"),
            "{unknown}"
        );
        assert!(!timeout(&["a:1"], false, None).outcome_unknown());
    }
}
