//! Keeping leases alive: [`LeaseKeepAlive`], one refresh per call on a long-lived stream,
//! and [`KeepAliveHandle`], a background task that refreshes every TTL/3 until dropped.
//!
//! On the wire a keep-alive is a stream: the first frame is `Request::LeaseKeepAlive`,
//! later frames are bare `LeaseKeepAliveRequest`s, one answer each. A refresh is idempotent,
//! so when the stream breaks the client opens a new one (on any node, following
//! `NotLeader`) and sends the refresh again. `LeaseNotFound` (expired or revoked) ends it.

use std::fmt;
use std::time::{Duration, Instant};

use etch_proto::lease::{LeaseKeepAliveRequest, LeaseKeepAliveResponse};
use etch_proto::{LeaseId, Request, Response};
use tokio::sync::watch;

use crate::client::{Client, Live};
use crate::error::{Attempts, Error, Result};
use crate::kv::response_name;
use crate::transport::{read_answer, write_frame};

/// Delay before retrying a refresh that failed for another reason than the lease being
/// gone, doubled up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

impl Client {
    /// A keep-alive stream for lease `id`: each [`LeaseKeepAlive::keep_alive`] refreshes the
    /// lease once. Nothing is sent before the first call. For refreshes in the background,
    /// see [`Client::keep_lease_alive`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let mut stream = client.lease_keep_alive(0x694d77aa9e38260f);
    /// let resp = stream.keep_alive().await?;
    /// println!("lease {:016x} keepalived with TTL({})", resp.id, resp.ttl);
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_keep_alive(&self, id: LeaseId) -> LeaseKeepAlive {
        LeaseKeepAlive {
            client: self.clone(),
            id,
            stream: None,
        }
    }

    /// Keeps lease `id` alive in the background until the returned handle is dropped or the
    /// lease is gone: refreshes it every third of its TTL, reconnecting (to any node) when
    /// a node fails. Must be called within a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let lease = client.lease_grant(10).await?;
    /// client.put("/svc/me", "10.0.0.1").lease(lease.id).await?;
    /// let mut alive = client.keep_lease_alive(lease.id);
    /// // ... serve; the key stays while `alive` does ...
    /// alive.gone().await; // the lease expired or was revoked
    /// # Ok(())
    /// # }
    /// ```
    pub fn keep_lease_alive(&self, id: LeaseId) -> KeepAliveHandle {
        let (tx, status) = watch::channel(KeepAliveStatus::Starting);
        let task = tokio::spawn(keep_alive_loop(self.lease_keep_alive(id), tx));
        KeepAliveHandle { id, status, task }
    }
}

/// A keep-alive stream for one lease; see [`Client::lease_keep_alive`].
#[derive(Debug)]
pub struct LeaseKeepAlive {
    client: Client,
    id: LeaseId,
    stream: Option<Stream>,
}

#[derive(Debug)]
struct Stream {
    live: Live,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl LeaseKeepAlive {
    /// The lease this stream refreshes.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Refreshes the lease once and returns its new TTL, within the request timeout,
    /// reopening the stream when it broke.
    ///
    /// # Errors
    ///
    /// [`Error::Server`] with `LeaseNotFound` when the lease has expired or was revoked;
    /// [`Error::Timeout`] when no node answered in time.
    pub async fn keep_alive(&mut self) -> Result<LeaseKeepAliveResponse> {
        let after = self.client.inner().opts.request_timeout;
        let mut attempts = Attempts::default();
        match tokio::time::timeout(after, self.refresh(&mut attempts)).await {
            Ok(result) => result,
            Err(_) => Err(attempts.timeout(after)),
        }
    }

    async fn refresh(&mut self, attempts: &mut Attempts) -> Result<LeaseKeepAliveResponse> {
        let inner = self.client.inner().clone();
        let max = inner.opts.max_response_bytes;
        if let Some(s) = &mut self.stream {
            attempts.reached(&s.live.endpoint);
            let frame = inner.encode(&LeaseKeepAliveRequest { id: self.id })?;
            let answer = match write_frame(&mut s.send, &s.live.endpoint, &frame).await {
                Ok(()) => read_answer(&s.live.conn, &s.live.endpoint, &mut s.recv, max).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok(Some(Ok(resp))) => return self.answer(resp),
                Ok(Some(Err(e))) if !e.is_retryable() => {
                    self.stream = None;
                    return Err(Error::Server(e));
                }
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "keep-alive refused; reopening");
                    inner.rotate(&s.live).await;
                }
                Ok(None) => tracing::debug!("keep-alive stream finished; reopening"),
                Err(e) => {
                    tracing::debug!(error = %e, "keep-alive stream broken; reopening");
                    if matches!(e, Error::ConnectionLost { .. }) {
                        inner.forget(&s.live).await;
                    }
                    attempts.failed(e, false);
                }
            }
            self.stream = None;
        }
        let first = inner.encode(&Request::LeaseKeepAlive(LeaseKeepAliveRequest {
            id: self.id,
        }))?;
        let opened = inner.open_stream(&first, attempts).await?;
        self.stream = Some(Stream {
            live: opened.live,
            send: opened.send,
            recv: opened.recv,
        });
        self.answer(opened.first)
    }

    fn answer(&mut self, resp: Response) -> Result<LeaseKeepAliveResponse> {
        match resp {
            Response::LeaseKeepAlive(r) if r.ttl > 0 => Ok(r),
            // etcd's way of saying the lease is gone: a TTL of zero.
            Response::LeaseKeepAlive(_) => {
                self.stream = None;
                Err(Error::Server(etch_proto::Error::LeaseNotFound(self.id)))
            }
            other => {
                self.stream = None;
                Err(Error::UnexpectedResponse {
                    expected: "LeaseKeepAlive",
                    got: response_name(&other),
                })
            }
        }
    }
}

/// Where a background keep-alive stands; see [`KeepAliveHandle::status`]. Its `Display`
/// says it in a line ("retrying since 3.2s (last refresh 6.0s ago): ...").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepAliveStatus {
    /// No refresh has been answered yet.
    Starting,
    /// The last refresh succeeded at `refreshed_at`: the lease lives `ttl` seconds from
    /// then; `refreshes` counts them.
    Alive {
        ttl: i64,
        refreshes: u64,
        refreshed_at: Instant,
    },
    /// Refreshes have failed since `since` (the cluster is unreachable, or has no leader)
    /// and are being retried; `last_refresh` is the last one that succeeded, with the TTL
    /// it gave. Once `ttl` seconds have passed since it, the lease may have expired.
    Retrying {
        since: Instant,
        last_refresh: Option<(Instant, i64)>,
        error: String,
    },
    /// The lease has expired or was revoked; the keep-alive has stopped.
    Gone,
}

impl fmt::Display for KeepAliveStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ago = |at: &Instant| Duration::from_millis(at.elapsed().as_millis() as u64);
        match self {
            KeepAliveStatus::Starting => f.write_str("starting"),
            KeepAliveStatus::Alive {
                ttl,
                refreshes,
                refreshed_at,
            } => write!(
                f,
                "alive: TTL {ttl}s, refreshed {:?} ago ({refreshes} refreshes)",
                ago(refreshed_at)
            ),
            KeepAliveStatus::Retrying {
                since,
                last_refresh,
                error,
            } => {
                write!(f, "retrying since {:?}", ago(since))?;
                match last_refresh {
                    Some((at, ttl)) => write!(f, " (last refresh {:?} ago, TTL {ttl}s)", ago(at))?,
                    None => f.write_str(" (never refreshed)")?,
                }
                write!(f, ": {error}")
            }
            KeepAliveStatus::Gone => f.write_str("gone: the lease expired or was revoked"),
        }
    }
}

/// Keeps a lease alive in the background while it lives; see [`Client::keep_lease_alive`].
/// Dropping it stops the refreshes (the lease then expires after its TTL, unless revoked).
#[derive(Debug)]
pub struct KeepAliveHandle {
    id: LeaseId,
    status: watch::Receiver<KeepAliveStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAliveHandle {
    /// The lease kept alive.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// The latest status.
    pub fn status(&self) -> KeepAliveStatus {
        self.status.borrow().clone()
    }

    /// Waits for the next change (a refresh, a failed refresh, the end) and returns the
    /// status after it.
    pub async fn changed(&mut self) -> KeepAliveStatus {
        // The sender lives in the task, which ends only after reporting `Gone`.
        let _ = self.status.changed().await;
        self.status()
    }

    /// Waits until the lease is gone (expired or revoked).
    pub async fn gone(&mut self) {
        let _ = self.status.wait_for(|s| *s == KeepAliveStatus::Gone).await;
    }
}

impl Drop for KeepAliveHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive_loop(mut stream: LeaseKeepAlive, status: watch::Sender<KeepAliveStatus>) {
    let mut refreshes = 0;
    let mut retry = FIRST_RETRY_DELAY;
    let mut last_refresh = None;
    let mut failing_since = None;
    loop {
        let wait = match stream.keep_alive().await {
            Ok(resp) => {
                refreshes += 1;
                retry = FIRST_RETRY_DELAY;
                let now = Instant::now();
                last_refresh = Some((now, resp.ttl));
                failing_since = None;
                status.send_replace(KeepAliveStatus::Alive {
                    ttl: resp.ttl,
                    refreshes,
                    refreshed_at: now,
                });
                // etcd's rhythm: a third of the TTL, so two refreshes may fail in a row.
                Duration::from_millis(u64::try_from(resp.ttl).unwrap_or(1).saturating_mul(1000) / 3)
            }
            Err(Error::Server(etch_proto::Error::LeaseNotFound(_))) => {
                tracing::debug!(lease = stream.id(), "lease gone; keep-alive stops");
                status.send_replace(KeepAliveStatus::Gone);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = stream.id(), error = %e, "lease keep-alive failed; retrying");
                let since = *failing_since.get_or_insert_with(Instant::now);
                status.send_replace(KeepAliveStatus::Retrying {
                    since,
                    last_refresh,
                    error: e.to_string(),
                });
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY_DELAY);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
