//! [`Client`]: one long-lived QUIC connection to a cluster, and the retry rules.
//!
//! The client keeps one connection and opens a stream per request. When the connection is
//! gone it dials again lazily, all candidates at once with a short head start for the
//! preferred ones (see `dial.rs`): the leader it last heard of, then the configured
//! endpoints starting after the one that failed. The first handshake wins, so a dead node
//! costs a stagger step, not a connect timeout. A `NotLeader { leader }` answer sends it to
//! that leader at once; it remembers the leader for later requests. An answer that a
//! follower forwarded carries the leader's address (`ResponseHeader::leader_hint`): the
//! client then dials the leader in the background and moves new requests there once the
//! handshake is done, so nothing waits on that dial and a leader that cannot be reached
//! costs nothing.
//!
//! The endpoints dialled are the configured ones until [`Client::sync`] (etcd's `Sync`, or
//! every `auto_sync_interval`) replaces them with the voting members' client addresses, so
//! that a long-lived client follows membership changes instead of trying removed members
//! for ever.
//!
//! Watches and keep-alives hold a stream open; `open_stream` starts one with the same
//! retry rules as a read, and the stream keeps its connection alive after the client has
//! moved to another.
//!
//! Retries are bounded by the request timeout and a number of attempts, and are limited to
//! what is safe: connection failures before the request was sent, the node's retryable
//! errors (`NotLeader`, `Unavailable`, `Conflict`: nothing was applied), and — for reads
//! only — a connection lost while waiting for the answer. A write whose outcome is unknown
//! is never sent again; its error says so.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etch_proto::frame::FrameError;
use etch_proto::pki::Identity;
use etch_proto::{Request, Response};

use crate::dial::first_to_answer;
use crate::endpoint::Endpoint;
use crate::error::{Attempts, Error, Result};
use crate::options::ClientOptions;
use crate::transport::{Transport, exchange, open, read_answer};

const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// A handle to an etch cluster. Cheap to clone; clones share the connection.
///
/// Start with [`Client::connect`], then use the request builders: [`Client::put`],
/// [`Client::get`], [`Client::delete`], [`Client::txn`], [`Client::compact`],
/// [`Client::status`], the `member_*` verbs ([`Client::member_list`] and others), or
/// [`Client::request`] for a raw [`Request`].
///
/// # Examples
///
/// ```no_run
/// use etch_client::{Client, ClientOptions, TlsFiles};
///
/// # async fn demo() -> etch_client::Result<()> {
/// let tls = TlsFiles::in_dir("./etch-data/certs", "root");
/// let client = Client::connect(ClientOptions::new(["127.0.0.1:7379"], tls)).await?;
/// client.put("greeting", "hello").await?;
/// let resp = client.get("greeting").await?;
/// assert_eq!(resp.kvs[0].value, b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// A request timeout of its own ([`Client::with_timeout`]).
    timeout: Option<Duration>,
}

pub(crate) struct Inner {
    endpoints: Vec<Endpoint>,
    pub(crate) opts: ClientOptions,
    transport: Arc<Transport>,
    state: tokio::sync::Mutex<State>,
    session: Session,
}

/// How this client names its writes, so that a node applies each at most once however
/// often it is sent: a random client id and the writes numbered from 1.
struct Session {
    client: u64,
    next: std::sync::atomic::AtomicU64,
}

impl Session {
    fn new() -> Session {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is seeded from the OS's randomness; time and pid mixed in for
        // good measure. A clash between two live clients would need the same 64 bits.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        Session {
            client: h.finish(),
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// `request` named, if it is a write a node can apply once (a put, a delete, a txn
    /// that writes): then it may be sent again when its answer is lost.
    fn name(&self, request: Request) -> Request {
        match etch_proto::OnceWrite::from_request(request) {
            Ok(write) => Request::Once(etch_proto::OnceRequest {
                client: self.client,
                seq: self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                write,
            }),
            Err(request) => request,
        }
    }
}

#[derive(Default)]
struct State {
    live: Option<Live>,
    leader: Option<Endpoint>,
    /// The endpoints dialled: those configured, until [`Client::sync`] learns the members.
    known: Vec<Endpoint>,
    /// Index into `known` of the next endpoint to try first.
    next: usize,
    /// A leader hint being dialled in the background.
    dialling: Option<Endpoint>,
    /// A hinted leader whose dial failed: not dialled again until another is hinted.
    unreachable: Option<Endpoint>,
}

/// A connection and the endpoint it goes to.
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) endpoint: Endpoint,
    pub(crate) conn: quinn::Connection,
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A stream opened by [`Inner::open_stream`], with the node's first answer.
pub(crate) struct Opened {
    pub(crate) live: Live,
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    pub(crate) first: Response,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Loads the TLS material and dials the cluster: the call fails if no endpoint answers
    /// within the connect timeout. The endpoints are dialled together (each a moment after
    /// the one before), so a dead one does not hold up the others; the whole call takes at
    /// most the connect timeout plus 100 ms per endpoint. Must be called within a tokio
    /// runtime.
    ///
    /// To bound connecting and the first request by one deadline, use [`Client::new`]: a
    /// request's timeout covers the dial.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when a certificate file cannot be read, [`Error::InvalidEndpoint`] or
    /// [`Error::NoEndpoints`] for bad options, [`Error::Connect`] or
    /// [`Error::CertificateRefused`] when no endpoint could be reached.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> etch_client::Result<()> {
    /// use etch_client::{Client, ClientOptions, TlsFiles};
    /// let tls = TlsFiles::in_dir("./etch-data/certs", "root");
    /// let client = Client::connect(ClientOptions::new(["127.0.0.1:7379"], tls)).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(opts: ClientOptions) -> Result<Client> {
        let client = Client::new(opts)?;
        client.inner.live().await?;
        Ok(client)
    }

    /// Like [`Client::connect`] but without dialling: the first request connects. Useful
    /// when the cluster may still be starting.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use etch_client::{Client, ClientOptions, TlsFiles};
    /// let tls = TlsFiles::in_dir("./etch-data/certs", "root");
    /// let client = Client::new(ClientOptions::new(["127.0.0.1:7379"], tls))?;
    /// # Ok::<(), etch_client::Error>(())
    /// ```
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let endpoints = opts
            .endpoints
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<Endpoint>>>()?;
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let identity = Identity::load(&opts.tls)?;
        let transport = Arc::new(Transport::new(&identity, opts.keep_alive)?);
        let state = State {
            known: endpoints.clone(),
            ..State::default()
        };
        let client = Client {
            inner: Arc::new(Inner {
                endpoints,
                opts,
                transport,
                state: tokio::sync::Mutex::new(state),
                session: Session::new(),
            }),
            timeout: None,
        };
        if let Some(interval) = client.inner.opts.auto_sync_interval {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(auto_sync(Arc::downgrade(&client.inner), interval));
                }
                Err(_) => tracing::warn!(
                    "auto_sync_interval is set but the client was made outside a tokio \
                     runtime: it will not learn the members on its own (make it inside \
                     the runtime, or call Client::sync)"
                ),
            }
        }
        Ok(client)
    }

    /// The configured endpoints.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.inner.endpoints
    }

    /// The endpoints this client dials: the configured ones, or the members' client
    /// addresses once [`Client::sync`] has learned them.
    pub async fn known_endpoints(&self) -> Vec<Endpoint> {
        self.inner.state.lock().await.known.clone()
    }

    /// Learns the cluster's voting members and dials their client addresses from now on
    /// (etcd's `Sync`): members added since the client was made are reached, and removed
    /// ones are no longer tried. Members not heard from yet (no client address) and
    /// learners are left out; if that leaves none, the endpoints stay as they were. Runs
    /// every [`ClientOptions::auto_sync_interval`] when that is set.
    ///
    /// # Errors
    ///
    /// As [`Client::member_list`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let endpoints = client.sync().await?;
    /// println!("dialling {} members", endpoints.len());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sync(&self) -> Result<Vec<Endpoint>> {
        let learned = to_dial(&self.member_list().await?.members);
        let mut state = self.inner.state.lock().await;
        if !learned.is_empty() && learned != state.known {
            tracing::debug!(endpoints = ?learned, "learned the cluster's members");
            state.known = learned;
            state.next = 0;
        }
        Ok(state.known.clone())
    }

    /// The leader this client was last redirected to, if any.
    pub async fn leader(&self) -> Option<Endpoint> {
        self.inner.state.lock().await.leader.clone()
    }

    /// Sends a raw request and returns the node's response, retrying what is safe within
    /// the request timeout. Server errors come back as [`Error::Server`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use etch_client::proto::{Request, Response, StatusRequest};
    /// if let Response::Status(s) = client.request(Request::Status(StatusRequest {})).await? {
    ///     println!("{} runs {}", s.name, s.version);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(&self, request: Request) -> Result<Response> {
        let request = if self.inner.opts.exactly_once {
            self.inner.session.name(request)
        } else {
            request
        };
        let frame = self.inner.encode(&request)?;
        let after = self.timeout.unwrap_or(self.inner.opts.request_timeout);
        let mut attempts = Attempts::default();
        let answer = self.inner.with_retries(&request, &frame, &mut attempts);
        match tokio::time::timeout(after, answer).await {
            Ok(result) => result,
            Err(_) => Err(attempts.timeout(after)),
        }
    }

    /// This client with another request timeout for the requests made through it (it shares
    /// the connection, the leader it knows and its name for exactly-once writes).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use std::time::Duration;
    /// let quick = client.with_timeout(Duration::from_millis(500));
    /// let v = quick.get("/config/flag").await?;
    /// # let _ = v;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout: Some(timeout),
        }
    }

    /// The request timeout of this client's requests.
    pub fn request_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.inner.opts.request_timeout)
    }
}

impl Client {
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    /// `msg` as a frame, refused when over the request size limit.
    pub(crate) fn encode(&self, msg: &impl serde::Serialize) -> Result<Vec<u8>> {
        etch_proto::frame::encode(msg, self.opts.max_request_bytes).map_err(|e| match e {
            FrameError::TooLarge { len, max } => Error::RequestTooLarge {
                size: len,
                limit: max,
            },
            other => Error::Protocol {
                endpoint: String::new(),
                source: other,
            },
        })
    }

    async fn with_retries(
        self: &Arc<Self>,
        request: &Request,
        frame: &[u8],
        attempts: &mut Attempts,
    ) -> Result<Response> {
        let mut backoff = FIRST_BACKOFF;
        let named = matches!(request, Request::Once(_));
        for attempt in 1.. {
            if attempt > self.opts.max_attempts && !(named && attempts.sent_write()) {
                break;
            }
            let (err, live) = match self.live().await {
                Err(e) => (e, None),
                Ok(live) => {
                    attempts.reached(&live.endpoint);
                    attempts.write_in_flight = request.is_write();
                    let answer = exchange(
                        &live.conn,
                        &live.endpoint,
                        frame,
                        self.opts.max_response_bytes,
                    )
                    .await;
                    match answer {
                        Ok(Ok(mut response)) => {
                            self.note_hint(&mut response, &live).await;
                            return Ok(response);
                        }
                        Ok(Err(etch_proto::Error::NotLeader {
                            leader: Some(leader),
                        })) if self.follow(&leader, &live).await => {
                            let leader = Some(leader);
                            let redirect = Error::Server(etch_proto::Error::NotLeader { leader });
                            attempts.failed(redirect, request.is_write());
                            continue;
                        }
                        Ok(Err(e)) => (Error::Server(e), Some(live)),
                        Err(e) => {
                            self.forget(&live).await;
                            (e, Some(live))
                        }
                    }
                }
            };
            attempts.write_in_flight = false;
            // A named write is applied at most once, so one whose answer was lost (the
            // connection dropped, the node timed out waiting for the commit) is sent again
            // until its outcome is known: only the request timeout stops it then, since
            // giving up with a retryable error would hide that it may have been applied.
            let unknown = err.outcome_unknown();
            let retry = err.is_retryable() || ((!request.is_write() || named) && unknown);
            if !retry {
                return Err(err);
            }
            attempts.failed(err, request.is_write());
            tracing::debug!(attempt, error = ?attempts.last_error, "retrying request");
            if let (Some(Error::Server(_)), Some(live)) = (&attempts.last_error, &live) {
                self.rotate(live).await;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        Err(attempts.last_error.take().unwrap_or(Error::NoEndpoints))
    }

    /// The current connection, dialling one if there is none or it has closed. Holding the
    /// state lock across the dial makes concurrent requests share one connection attempt.
    pub(crate) async fn live(&self) -> Result<Live> {
        let mut state = self.state.lock().await;
        if let Some(live) = &state.live {
            if live.conn.close_reason().is_none() {
                return Ok(live.clone());
            }
            tracing::debug!(endpoint = %live.endpoint, "connection closed; reconnecting");
        }
        state.live = None;
        let n = state.known.len();
        let mut order: Vec<Endpoint> = state.leader.iter().cloned().collect();
        for i in 0..n {
            let endpoint = &state.known[(state.next + i) % n];
            if !order.contains(endpoint) {
                order.push(endpoint.clone());
            }
        }
        let dialled = first_to_answer(&self.transport, order, self.opts.connect_timeout).await;
        match dialled {
            Ok((endpoint, conn)) => {
                // A remembered leader that did not answer first is probably gone; a
                // `NotLeader` answer will name the new one.
                if state.leader.as_ref().is_some_and(|l| *l != endpoint) {
                    state.leader = None;
                }
                let live = Live { endpoint, conn };
                state.live = Some(live.clone());
                state.unreachable = None;
                Ok(live)
            }
            Err(e) => {
                state.leader = None;
                Err(e)
            }
        }
    }

    /// Opens a long-lived stream whose first frame is `first` and reads the node's first
    /// answer, retrying as for a read: transport failures and retryable server errors
    /// (`NotLeader` followed at once) lead to another attempt after a backoff, for as long as
    /// the caller waits. A non-retryable server error in the first answer is returned as
    /// [`Error::Server`]. `attempts` records the endpoints tried and the latest failure.
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        first: &[u8],
        attempts: &mut Attempts,
    ) -> Result<Opened> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let (err, live) = match self.live().await {
                Err(e) => (e, None),
                Ok(live) => {
                    attempts.reached(&live.endpoint);
                    match self.try_open(&live, first).await {
                        Ok(Ok(opened)) => return Ok(opened),
                        Ok(Err(etch_proto::Error::NotLeader {
                            leader: Some(leader),
                        })) if self.follow(&leader, &live).await => continue,
                        Ok(Err(e)) => (Error::Server(e), Some(live)),
                        Err(e) => {
                            self.forget(&live).await;
                            (e, Some(live))
                        }
                    }
                }
            };
            if !(err.is_retryable() || err.is_transient_after_send()) {
                return Err(err);
            }
            tracing::debug!(error = %err, "retrying to open a stream");
            if let (Error::Server(_), Some(live)) = (&err, &live) {
                self.rotate(live).await;
            }
            attempts.failed(err, false);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn try_open(
        self: &Arc<Self>,
        live: &Live,
        first: &[u8],
    ) -> Result<std::result::Result<Opened, etch_proto::Error>> {
        let (send, mut recv) = open(&live.conn, &live.endpoint, first).await?;
        let answer = read_answer(
            &live.conn,
            &live.endpoint,
            &mut recv,
            self.opts.max_response_bytes,
        )
        .await?;
        match answer {
            None => Err(Error::StreamReset {
                endpoint: live.endpoint.to_string(),
                what: "finished",
                code: 0,
                sent: true,
            }),
            Some(Err(e)) => Ok(Err(e)),
            Some(Ok(mut first)) => {
                self.note_hint(&mut first, live).await;
                Ok(Ok(Opened {
                    live: live.clone(),
                    send,
                    recv,
                    first,
                }))
            }
        }
    }

    /// Follows the leader hint of an answer that came from `from`: remembers the leader and
    /// dials it in the background; new requests go there once it answers, and meanwhile
    /// keep using `from`.
    pub(crate) async fn note_hint(self: &Arc<Self>, response: &mut Response, from: &Live) {
        let Some(hint) = response.header_mut().leader_hint.clone() else {
            return;
        };
        let Ok(leader) = hint.parse::<Endpoint>() else {
            tracing::warn!(leader = hint, "unusable leader hint");
            return;
        };
        let mut state = self.state.lock().await;
        let connected = state.live.as_ref().map(|l| &l.endpoint);
        if leader == from.endpoint
            || connected == Some(&leader)
            || state.dialling.as_ref() == Some(&leader)
            || state.unreachable.as_ref() == Some(&leader)
        {
            return;
        }
        tracing::debug!(%leader, from = %from.endpoint, "leader hinted; dialling it");
        state.leader = Some(leader.clone());
        state.dialling = Some(leader.clone());
        drop(state);
        let inner = self.clone();
        tokio::spawn(async move {
            let dialled = inner
                .transport
                .dial(&leader, inner.opts.connect_timeout)
                .await;
            let mut state = inner.state.lock().await;
            if state.dialling.as_ref() == Some(&leader) {
                state.dialling = None;
            }
            match dialled {
                Ok(conn) if state.leader.as_ref() == Some(&leader) => {
                    tracing::debug!(%leader, "moved to the hinted leader");
                    state.live = Some(Live {
                        endpoint: leader,
                        conn,
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(%leader, error = %e, "cannot reach the hinted leader");
                    if state.leader.as_ref() == Some(&leader) {
                        state.leader = None;
                    }
                    state.unreachable = Some(leader);
                }
            }
        });
    }

    /// Remembers `leader` and drops the connection to `from` so that the next attempt goes
    /// there. Returns false when the hint cannot be followed (unparsable, or `from` itself).
    async fn follow(&self, leader: &str, from: &Live) -> bool {
        let Ok(leader) = leader.parse::<Endpoint>() else {
            tracing::warn!(leader, "unusable leader address in NotLeader");
            return false;
        };
        if leader == from.endpoint {
            return false;
        }
        tracing::debug!(%leader, from = %from.endpoint, "following the leader");
        let mut state = self.state.lock().await;
        state.leader = Some(leader);
        if state.live.as_ref().map(|l| l.conn.stable_id()) == Some(from.conn.stable_id()) {
            state.live = None;
        }
        true
    }

    /// Drops `live` as the current connection after a transport failure.
    pub(crate) async fn forget(&self, live: &Live) {
        let mut state = self.state.lock().await;
        if state.live.as_ref().map(|l| l.conn.stable_id()) == Some(live.conn.stable_id()) {
            state.live = None;
        }
    }

    /// After a retryable server error, moves on to the next endpoint (when there are others):
    /// the node may be cut off from the majority.
    pub(crate) async fn rotate(&self, live: &Live) {
        let mut state = self.state.lock().await;
        if state.known.len() < 2 {
            return;
        }
        if state.leader.as_ref() == Some(&live.endpoint) {
            state.leader = None;
        }
        if let Some(i) = state.known.iter().position(|e| *e == live.endpoint) {
            state.next = (i + 1) % state.known.len();
        }
        if state.live.as_ref().map(|l| l.conn.stable_id()) == Some(live.conn.stable_id()) {
            state.live = None;
        }
    }
}

/// The client addresses of the voting members, each once, in the order listed: members
/// not heard from yet (no address), learners and addresses that do not parse are left out.
fn to_dial(members: &[etch_proto::Member]) -> Vec<Endpoint> {
    let mut seen = std::collections::HashSet::new();
    (members.iter())
        .filter(|m| !m.is_learner)
        .filter_map(|m| m.client_addr.parse::<Endpoint>().ok())
        .filter(|endpoint| seen.insert(endpoint.clone()))
        .collect()
}

/// Learns the members every `interval` while the client lives ([`Client::sync`]).
async fn auto_sync(inner: std::sync::Weak<Inner>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client {
            inner,
            timeout: None,
        };
        if let Err(e) = client.sync().await {
            tracing::debug!(error = %e, "could not learn the cluster's members");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etch_proto::pki::{InitOptions, TlsFiles, init_dir};

    pub(crate) fn certs() -> (tempfile::TempDir, TlsFiles) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = InitOptions {
            nodes: vec![],
            clients: vec!["root".into()],
            hosts: vec![],
        };
        init_dir(dir.path(), &opts).expect("init");
        let files = TlsFiles::in_dir(dir.path(), "root");
        (dir, files)
    }

    #[test]
    fn a_sync_dials_voting_members_once_each_and_skips_what_it_cannot_dial() {
        let member = |name: &str, client_addr: &str, is_learner: bool| etch_proto::Member {
            id: 1,
            name: name.into(),
            peer_addr: "10.0.0.1:7380".into(),
            client_addr: client_addr.into(),
            is_learner,
        };
        let members = [
            member("n1", "10.0.0.1:7379", false),
            member("n2", "", false),
            member("n3", "10.0.0.3:7379", true),
            member("n4", "not an address", false),
            member("n5", "10.0.0.5:99999", false),
            member("n6", &"x".repeat(100_000), false),
            member("n7", "10.0.0.1:7379", false),
            member("n8", "[::1]:7379", false),
        ];
        assert_eq!(
            to_dial(&members),
            [Endpoint::new("10.0.0.1", 7379), Endpoint::new("::1", 7379)]
        );
        assert!(to_dial(&[]).is_empty());
        // Ten thousand members naming the same address are one endpoint.
        let many = vec![member("n", "10.0.0.9:7379", false); 10_000];
        assert_eq!(to_dial(&many), [Endpoint::new("10.0.0.9", 7379)]);
    }

    #[test]
    fn new_checks_options_without_dialling() {
        let (_dir, tls) = certs();
        let client =
            Client::new(ClientOptions::new(["a:1", "[::1]:2"], tls.clone())).expect("client");
        assert_eq!(
            client.endpoints(),
            [Endpoint::new("a", 1), Endpoint::new("::1", 2)]
        );
        let none: [&str; 0] = [];
        assert!(matches!(
            Client::new(ClientOptions::new(none, tls.clone())),
            Err(Error::NoEndpoints)
        ));
        assert!(matches!(
            Client::new(ClientOptions::new(["nope"], tls.clone())),
            Err(Error::InvalidEndpoint { .. })
        ));
        let missing = TlsFiles {
            cert: "/nonexistent/root.crt".into(),
            ..tls
        };
        let err = Client::new(ClientOptions::new(["a:1"], missing)).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/root.crt"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_endpoint_fails_to_connect() {
        let (_dir, tls) = certs();
        // Port 9 on loopback: nothing answers QUIC there, so the dial times out.
        let opts = ClientOptions::new(["127.0.0.1:9"], tls)
            .connect_timeout(Duration::from_millis(200))
            .request_timeout(Duration::from_millis(700));
        let err = Client::connect(opts.clone()).await.expect_err("no server");
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert!(err.is_retryable());
        let client = Client::new(opts).expect("lazy");
        let err = client
            .request(Request::Status(Default::default()))
            .await
            .expect_err("no server");
        match err {
            Error::Timeout { last_error, .. } => assert!(
                matches!(last_error.as_deref(), Some(Error::Connect { .. })),
                "{last_error:?}"
            ),
            other => panic!("expected a timeout, got {other}"),
        }
    }
}
