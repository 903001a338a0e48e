//! Watches: [`Client::watch`] builds one, `.await` creates it, and the [`Watcher`] yields
//! [`WatchResponse`]s as a [`Stream`] (or with [`Watcher::next`]).
//!
//! A watch outlives the stream that carries it. When that stream or its connection breaks
//! (the node was killed, the leader changed, the network went away), a background task
//! reconnects, to any node since every node serves watches, and creates the watch again
//! from the revision after the last one it delivered. The caller sees each event once and
//! in order, as if nothing had happened; see `watch_resume.rs` for how.
//!
//! What ends a watch: [`Watcher::cancel`], dropping the [`Watcher`] (the node is told), or a
//! failure that retrying cannot mend, delivered as the last item: [`Error::WatchCompacted`]
//! when the revision to start or resume from has been compacted, [`Error::WatchCanceled`]
//! when the node canceled it, [`Error::Server`] for another refusal.

use std::future::IntoFuture;
use std::pin::Pin;
use std::task::{Context, Poll};

use etch_proto::watch::{WatchControl, WatchCreateRequest, WatchResponse};
use etch_proto::{Request, ResponseHeader, Revision};
use futures::Stream;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::error::{Attempts, Error, Result};
use crate::kv::{ResponseFuture, from_key, prefix};
use crate::watch_resume::{self, WatchState};

/// Responses waiting for the caller before the watch stops reading from the node.
const BUFFERED_RESPONSES: usize = 64;

impl Client {
    /// Watches `key` (or a range, with [`Watch::prefix`], [`Watch::from_key`],
    /// [`Watch::range_end`]) for changes after now, or from [`Watch::start_revision`].
    /// Awaiting the builder creates the watch and returns a [`Watcher`].
    ///
    /// # Errors
    ///
    /// Creating fails with [`Error::WatchCompacted`] when the start revision has been
    /// compacted, with [`Error::Timeout`] when no node answers within the request timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use etch_client::proto::watch::EventType;
    ///
    /// let mut watcher = client.watch("/svc/").prefix().prev_kv().await?;
    /// while let Some(resp) = watcher.next().await {
    ///     for event in resp?.events {
    ///         let key = String::from_utf8_lossy(&event.kv.key);
    ///         match event.kind {
    ///             EventType::Put => println!("{key} is now {:?}", event.kv.value),
    ///             EventType::Delete => println!("{key} is gone"),
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch(&self, key: impl Into<Vec<u8>>) -> Watch<'_> {
        self.watch_request(WatchCreateRequest {
            key: key.into(),
            ..Default::default()
        })
    }

    /// A watch from a wire request, as built elsewhere (etchctl maps its flags to one).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use etch_client::proto::watch::WatchCreateRequest;
    /// let req = WatchCreateRequest { key: b"k".to_vec(), start_revision: 5, ..Default::default() };
    /// let watcher = client.watch_request(req).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn watch_request(&self, req: WatchCreateRequest) -> Watch<'_> {
        Watch { client: self, req }
    }
}

/// A watch being built; see [`Client::watch`]. Await it to create the watch.
#[must_use = "a watch does nothing until you `.await` it"]
#[derive(Debug)]
pub struct Watch<'a> {
    client: &'a Client,
    req: WatchCreateRequest,
}

impl Watch<'_> {
    /// Watch every key that starts with the key (all keys if the key is empty).
    pub fn prefix(mut self) -> Self {
        prefix(&mut self.req.key, &mut self.req.range_end);
        self
    }

    /// Watch every key greater than or equal to the key.
    pub fn from_key(mut self) -> Self {
        from_key(&mut self.req.key, &mut self.req.range_end);
        self
    }

    /// Watch the keys in `[key, end)`.
    pub fn range_end(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.req.range_end = end.into();
        self
    }

    /// Replay the history from `revision` (inclusive) before the live changes. Default: `0`,
    /// changes after the watch is created.
    pub fn start_revision(mut self, revision: Revision) -> Self {
        self.req.start_revision = revision;
        self
    }

    /// Attach each event's previous version of the key. Default: off.
    pub fn prev_kv(mut self) -> Self {
        self.req.prev_kv = true;
        self
    }

    /// Leave out put events. Default: off.
    pub fn no_put(mut self) -> Self {
        self.req.no_put = true;
        self
    }

    /// Leave out delete events. Default: off.
    pub fn no_delete(mut self) -> Self {
        self.req.no_delete = true;
        self
    }

    /// Ask the node for periodic progress notifications while there are no events.
    /// Default: off.
    pub fn progress_notify(mut self) -> Self {
        self.req.progress_notify = true;
        self
    }

    /// The wire request this builder sends to create the watch.
    pub fn into_request(self) -> Request {
        Request::Watch(self.req)
    }
}

impl<'a> IntoFuture for Watch<'a> {
    type Output = Result<Watcher>;
    type IntoFuture = ResponseFuture<'a, Watcher>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let inner = self.client.inner().clone();
            let after = inner.opts.request_timeout;
            let mut attempts = Attempts::default();
            let created = watch_resume::create(&inner, self.req.clone(), &mut attempts);
            let (stream, resume, pending) = match tokio::time::timeout(after, created).await {
                Ok(created) => created?,
                Err(_) => return Err(attempts.timeout(after)),
            };
            let header = resume.created_header();
            let (out, responses) = mpsc::channel(BUFFERED_RESPONSES);
            let (control, controls) = mpsc::unbounded_channel();
            let live = WatchState::Live {
                endpoint: stream.endpoint(),
            };
            let (state, state_rx) = tokio::sync::watch::channel(live);
            tokio::spawn(watch_resume::run(
                inner, self.req, stream, pending, resume, out, controls, state,
            ));
            Ok(Watcher {
                responses,
                control,
                header,
                state: state_rx,
            })
        })
    }
}

/// A live watch: yields its responses (events and progress notifications) in revision
/// order, each event once, across reconnections. Ends (`None`) after [`Watcher::cancel`] or
/// after a final error. Dropping it cancels the watch on the node.
///
/// # Examples
///
/// With [`futures::StreamExt`]:
///
/// ```no_run
/// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
/// use futures::StreamExt;
/// let watcher = client.watch("k").start_revision(1).await?;
/// let first_ten: Vec<_> = watcher.take(10).collect().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Watcher {
    responses: mpsc::Receiver<Result<WatchResponse>>,
    control: mpsc::UnboundedSender<WatchControl>,
    header: ResponseHeader,
    state: tokio::sync::watch::Receiver<WatchState>,
}

impl Watcher {
    /// The next response: events (`events` non-empty) or a progress notification
    /// ([`WatchResponse::is_progress_notify`]: every event up to `header.revision` has been
    /// delivered). `None` once the watch has ended; an `Err` is always the last item.
    pub async fn next(&mut self) -> Option<Result<WatchResponse>> {
        self.responses.recv().await
    }

    /// Where the watch's connection stands: live on a node, resuming after a break (since
    /// when, from which revision, why), or ended. Events are never lost or repeated across
    /// a resumption; this tells an owner that they may be late.
    pub fn state(&self) -> WatchState {
        self.state.borrow().clone()
    }

    /// The watch's state as it changes: `changed().await` on the receiver wakes at each
    /// change, and it can be awaited alongside [`Watcher::next`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// use etch_client::WatchState;
    /// let mut watcher = client.watch("/config/").prefix().await?;
    /// let mut states = watcher.states();
    /// loop {
    ///     tokio::select! {
    ///         resp = watcher.next() => match resp {
    ///             Some(resp) => println!("{} events", resp?.events.len()),
    ///             None => break,
    ///         },
    ///         Ok(()) = states.changed() => {
    ///             if let WatchState::Resuming { error, .. } = &*states.borrow_and_update() {
    ///                 eprintln!("watch disconnected ({error}); resuming");
    ///             }
    ///         }
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn states(&self) -> tokio::sync::watch::Receiver<WatchState> {
        self.state.clone()
    }

    /// The header of the response that created the watch: `header.revision` is the store
    /// revision then.
    pub fn created_header(&self) -> &ResponseHeader {
        &self.header
    }

    /// Asks the node for a progress notification now; it arrives as a response without
    /// events. After a reconnection the request may be lost with the broken stream.
    ///
    /// # Errors
    ///
    /// [`Error::WatchEnded`] when the watch has ended.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let mut watcher = client.watch("k").await?;
    /// watcher.request_progress()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn request_progress(&self) -> Result<()> {
        self.control
            .send(WatchControl::Progress)
            .map_err(|_| Error::WatchEnded)
    }

    /// Cancels the watch: responses already on their way are still yielded, then the
    /// watcher ends. Does nothing when the watch has already ended.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let mut watcher = client.watch("k").await?;
    /// watcher.cancel();
    /// while let Some(resp) = watcher.next().await {
    ///     resp?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancel(&self) {
        let _ = self.control.send(WatchControl::Cancel);
    }
}

impl Stream for Watcher {
    type Item = Result<WatchResponse>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.responses.poll_recv(cx)
    }
}
