//! QUIC application error codes of the client endpoint, and what each means.
//!
//! A node that gives up on a stream (stops reading it or resets its answer) or closes a
//! whole connection says why with one of these codes; the SDK turns them back into words
//! ([`stream_reason`], [`close_reason`]) so that `etchctl` can show them. Codes are part of
//! the wire protocol: never renumber one.

/// Codes on a stream (`STOP_SENDING` / `RESET_STREAM`).
pub mod stream {
    /// The request frame is larger than the node accepts.
    pub const TOO_LARGE: u32 = 1;
    /// The request frame did not arrive whole within the node's read deadline.
    pub const READ_TIMEOUT: u32 = 2;
    /// The connection already holds too many bytes of answers its client has not read.
    pub const UNREAD_RESPONSES: u32 = 3;
    /// The client did not read the answer within the node's write deadline.
    pub const WRITE_TIMEOUT: u32 = 4;
    /// The node could not finish the backup it was streaming (its log says why).
    pub const SNAPSHOT_FAILED: u32 = 5;
}

/// Codes on a connection (`CONNECTION_CLOSE`, application level).
pub mod close {
    /// The client presented no certificate.
    pub const NO_CERTIFICATE: u32 = 1;
    /// The node serves as many client connections as it allows.
    pub const TOO_MANY_CONNECTIONS: u32 = 2;
    /// The certificate's principal already has as many connections as one may have.
    pub const TOO_MANY_FOR_PRINCIPAL: u32 = 3;
    /// No stream was open and no request came for the node's idle timeout.
    pub const IDLE: u32 = 4;
    /// The node reloaded its CA bundle or revocation list, and the connection's certificate
    /// no longer passes (revoked, or its CA is no longer trusted).
    pub const CERTIFICATE_REVOKED: u32 = 5;
}

/// What a stream error code from a node means, when it is one of ours.
pub fn stream_reason(code: u64) -> Option<&'static str> {
    Some(match u32::try_from(code).ok()? {
        stream::TOO_LARGE => "the request is larger than the node accepts",
        stream::READ_TIMEOUT => "the request did not arrive whole within the node's read deadline",
        stream::UNREAD_RESPONSES => {
            "too many bytes of answers on this connection are unread; read them before asking for more"
        }
        stream::WRITE_TIMEOUT => "the answer was not read within the node's write deadline",
        stream::SNAPSHOT_FAILED => "the node could not finish the snapshot (its log says why)",
        _ => return None,
    })
}

/// What a connection close code from a node means, when it is one of ours.
pub fn close_reason(code: u64) -> Option<&'static str> {
    Some(match u32::try_from(code).ok()? {
        close::NO_CERTIFICATE => "no client certificate",
        close::TOO_MANY_CONNECTIONS => "the node is at its client connection limit",
        close::TOO_MANY_FOR_PRINCIPAL => {
            "this certificate's principal is at its connection limit on the node"
        }
        close::IDLE => "the connection was idle for the node's idle timeout",
        close::CERTIFICATE_REVOKED => {
            "the certificate was revoked, or is no longer trusted, since the connection was made"
        }
        _ => return None,
    })
}

/// Whether a node closed the connection to turn it away (a limit), not because of
/// anything the request did: nothing was served on it, so another node may be tried.
pub fn is_refusal(code: u64) -> bool {
    code == u64::from(close::TOO_MANY_CONNECTIONS)
        || code == u64::from(close::TOO_MANY_FOR_PRINCIPAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_words_and_unknown_codes_none() {
        for code in 1..=5u64 {
            assert!(stream_reason(code).is_some(), "stream code {code}");
        }
        for code in 1..=5u64 {
            assert!(close_reason(code).is_some(), "close code {code}");
        }
        assert_eq!(stream_reason(0), None);
        assert_eq!(close_reason(99), None);
        assert_eq!(stream_reason(u64::MAX), None);
        assert!(is_refusal(2) && is_refusal(3) && !is_refusal(4));
    }
}
