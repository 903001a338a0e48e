//! The bounds of the client endpoint: what one client, one connection and all clients
//! together may cost a node in memory, streams and time.
//!
//! Every bound turns an input the node cannot afford into an error for that stream or that
//! connection, with a code the SDK puts into words (`etch_proto::codes`). None of them is
//! ever reached by a client that reads its answers and sends whole requests.

use std::time::Duration;

/// Client endpoint bounds (`etchd` flags in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Time a client has to send a whole request frame, counted from its stream's first
    /// bytes; on a watch or keep-alive stream, from each control frame's first byte (an
    /// idle long-lived stream may wait). Past it the stream is stopped with
    /// `codes::stream::READ_TIMEOUT` [`--client-read-timeout`, default 10 s].
    pub read_timeout: Duration,
    /// Time a client has to take an answer once it is ready; past it the answer is dropped
    /// and the stream reset with `codes::stream::WRITE_TIMEOUT`, so a stalled reader holds
    /// no memory [`--client-write-timeout`, default 10 s].
    pub write_timeout: Duration,
    /// A connection with no open stream and no request for this long is closed
    /// (`codes::close::IDLE`), even while QUIC keep-alives flow
    /// [`--client-idle-timeout`, default 5 minutes].
    pub idle_timeout: Duration,
    /// Client connections served at once by the node; one more is closed after its
    /// handshake with `codes::close::TOO_MANY_CONNECTIONS` [`--max-client-connections`,
    /// default 1024].
    pub max_connections: usize,
    /// Connections one principal (certificate CN) may hold at once; one more is closed with
    /// `codes::close::TOO_MANY_FOR_PRINCIPAL` [`--max-client-connections-per-principal`,
    /// default 256].
    pub max_connections_per_principal: usize,
    /// Streams (requests, watches, keep-alives) one connection may have open at once; QUIC
    /// flow control makes the client wait for a free one [`--max-client-streams`, default
    /// 256].
    pub max_streams: u32,
    /// Bytes one connection may have buffered in the node: requests being received and
    /// answers encoded but not yet taken by QUIC (the client has not read them). A request
    /// waits for room (within its read deadline); an answer that finds none is dropped and
    /// its stream reset with `codes::stream::UNREAD_RESPONSES`. An answer larger than the
    /// whole budget is sent when it has the budget to itself [`--max-connection-buffer-bytes`,
    /// default 64 MiB, the largest response].
    pub connection_buffer_bytes: usize,
    /// The same, for all client connections of the node together. Answers of at most
    /// [`SMALL_ANSWER`] bytes (every write's) do not count here, so one client's unread
    /// bytes never cost another client's write an unknown outcome
    /// [`--max-client-buffer-bytes`, default 1 GiB].
    pub buffer_bytes: usize,
}

/// Largest answer exempt from the node-wide buffer budget (see
/// [`ClientLimits::buffer_bytes`]).
pub const SMALL_ANSWER: usize = 64 * 1024;

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: 1024,
            max_connections_per_principal: 256,
            max_streams: 256,
            connection_buffer_bytes: etch_proto::DEFAULT_MAX_RESPONSE_BYTES,
            buffer_bytes: 1 << 30,
        }
    }
}
