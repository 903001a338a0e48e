//! What a [`Client`](crate::Client) needs to know: where the nodes are, which certificates
//! to present, and how long to wait.

use std::time::Duration;

use etch_proto::pki::TlsFiles;

/// Options for [`Client::connect`](crate::Client::connect), built with setters that document
/// their defaults.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use etch_client::ClientOptions;
/// use etch_proto::pki::TlsFiles;
///
/// let tls = TlsFiles::in_dir("./etch-data/certs", "root");
/// let opts = ClientOptions::new(["127.0.0.1:7379", "127.0.0.1:7381"], tls)
///     .connect_timeout(Duration::from_secs(1))
///     .request_timeout(Duration::from_secs(10));
/// assert_eq!(opts.endpoints().len(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub(crate) endpoints: Vec<String>,
    pub(crate) tls: TlsFiles,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) exactly_once: bool,
    pub(crate) max_attempts: u32,
    pub(crate) auto_sync_interval: Option<Duration>,
}

impl ClientOptions {
    /// Default time to establish a connection to one endpoint (etcdctl's `--dial-timeout`).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default time for one request, retries included (etcdctl's `--command-timeout`).
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default number of attempts per request.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

    /// Default interval of QUIC keep-alives on an idle connection.
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(1);

    /// Options for the given endpoints (`host:port`, see [`Endpoint`](crate::Endpoint)) and
    /// TLS files (the cluster CA, this client's certificate and key).
    pub fn new<I, S>(endpoints: I, tls: TlsFiles) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_request_bytes: etch_proto::DEFAULT_MAX_REQUEST_BYTES,
            max_response_bytes: etch_proto::DEFAULT_MAX_RESPONSE_BYTES,
            keep_alive: Some(Self::DEFAULT_KEEP_ALIVE),
            exactly_once: true,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            auto_sync_interval: None,
        }
    }

    /// Time allowed to resolve and handshake with one endpoint. Default: 2 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for one request from start to answer, connection and retries included;
    /// past it the call fails with [`Error::Timeout`](crate::Error::Timeout). Default: 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Largest request sent, in bytes: a larger one fails with
    /// [`Error::RequestTooLarge`](crate::Error::RequestTooLarge) without being sent. Set it to
    /// the nodes' `--max-request-bytes`. Default:
    /// [`DEFAULT_MAX_REQUEST_BYTES`](etch_proto::DEFAULT_MAX_REQUEST_BYTES) (1.5 MiB).
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Largest response accepted, in bytes. Default:
    /// [`DEFAULT_MAX_RESPONSE_BYTES`](etch_proto::DEFAULT_MAX_RESPONSE_BYTES) (64 MiB).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Interval of QUIC keep-alives that hold an idle connection open; `None` lets it time
    /// out when idle (it is then re-established on the next request). With keep-alives, a
    /// connection silent for three intervals (at least 2 s) is taken for dead. Default: 1 s.
    pub fn keep_alive(mut self, interval: Option<Duration>) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Whether puts, deletes and writing txns carry this client's name and a sequence
    /// number, so that the cluster applies each at most once and the client may send one
    /// again when its answer is lost (a leader killed mid-request): the call then returns
    /// the real outcome instead of an unknown one. Each named client costs the cluster a
    /// record of its recent outcomes until it has been idle for 10 minutes. Without it, a
    /// write whose answer is lost fails with an error that says its outcome is unknown.
    /// Default: on.
    pub fn exactly_once(mut self, on: bool) -> Self {
        self.exactly_once = on;
        self
    }

    /// At most this many attempts per request, redirects to the leader included, within
    /// the request timeout (at least 1). A named write whose answer was lost is the
    /// exception: it is sent again until its outcome is known or the time runs out, since
    /// giving up earlier would leave it unknown. Default: 10.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How often the client learns the cluster's members again ([`Client::sync`]), so that
    /// it reaches members added since and stops trying removed ones; `None` keeps the
    /// endpoints as given (etcd's `AutoSyncInterval`, off by default there too). The task
    /// runs on the tokio runtime the client is made in, and ends when the client is
    /// dropped; a client made outside a runtime warns and does not sync on its own.
    /// Default: `None`.
    ///
    /// [`Client::sync`]: crate::Client::sync
    pub fn auto_sync_interval(mut self, interval: Option<Duration>) -> Self {
        self.auto_sync_interval = interval;
        self
    }

    /// The endpoints, as given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The TLS files.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_override_defaults() {
        let tls = TlsFiles::in_dir("d", "root");
        let opts = ClientOptions::new(vec!["a:1".to_string()], tls.clone());
        assert_eq!(opts.connect_timeout, ClientOptions::DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(opts.request_timeout, Duration::from_secs(5));
        assert_eq!(
            opts.max_response_bytes,
            etch_proto::DEFAULT_MAX_RESPONSE_BYTES
        );
        assert_eq!(
            opts.max_request_bytes,
            etch_proto::DEFAULT_MAX_REQUEST_BYTES
        );
        let opts = opts
            .connect_timeout(Duration::from_millis(10))
            .request_timeout(Duration::from_millis(20))
            .max_response_bytes(99)
            .max_request_bytes(3 << 20)
            .keep_alive(None);
        assert_eq!(opts.connect_timeout, Duration::from_millis(10));
        assert_eq!(opts.request_timeout, Duration::from_millis(20));
        assert_eq!(opts.max_response_bytes, 99);
        assert_eq!(opts.max_request_bytes, 3 << 20);
        assert_eq!(opts.keep_alive, None);
        assert_eq!(opts.tls(), &tls);
        assert_eq!(opts.endpoints(), ["a:1"]);
    }
}
