//! [`Recorder`]: an SDK watch that records every response it yields, for
//! [`crate::checker::watch::check_watch`].
//!
//! The SDK resumes a broken watch by itself; the recorder sees only what a user of the SDK
//! would see, which is what the guarantees are about. At the end of a scenario the test asks
//! it to catch up with a revision: it asks the node for progress notifications until one
//! (or an event) covers that revision.

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etch_client::{Client, Watcher};
use etch_proto::Revision;
use etch_proto::watch::{WatchCreateRequest, WatchResponse};
use tokio::runtime::Runtime;

use crate::checker::watch::WatchSpec;

/// How often a catching-up recorder asks for a progress notification.
const PROGRESS_EVERY: Duration = Duration::from_millis(300);

/// What a recorder has seen, shared with its task.
#[derive(Debug)]
struct Seen {
    responses: Mutex<Vec<WatchResponse>>,
    /// Every revision up to here has been delivered, by the stream's own account;
    /// `Revision::MAX` once the watch has ended.
    through: tokio::sync::watch::Sender<Revision>,
    /// Set while the test waits for the recorder to catch up.
    want_progress: AtomicBool,
    /// The error that ended the watch, if any.
    ended: Mutex<Option<String>>,
}

/// A running watch and what it received.
pub struct Recorder {
    pub name: String,
    pub spec: WatchSpec,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Creates the watch `req` through `client` (within the client's request timeout), then
    /// records it on `rt` until dropped.
    pub fn start(
        rt: &Runtime,
        name: &str,
        client: Client,
        req: WatchCreateRequest,
    ) -> Result<Recorder, String> {
        let watcher = rt
            .block_on(client.watch_request(req.clone()).into_future())
            .map_err(|e| format!("creating watcher {name}: {e}"))?;
        let start_revision = match req.start_revision {
            0 => watcher.created_header().revision + 1,
            start => start,
        };
        let spec = WatchSpec {
            key: req.key,
            range_end: req.range_end,
            start_revision,
        };
        let seen = Arc::new(Seen {
            responses: Mutex::default(),
            through: tokio::sync::watch::Sender::new(start_revision - 1),
            want_progress: AtomicBool::new(false),
            ended: Mutex::default(),
        });
        let task = rt.spawn(record(watcher, seen.clone()));
        Ok(Recorder {
            name: name.to_owned(),
            spec,
            seen,
            task,
        })
    }

    /// Waits (up to `timeout`) until the stream has delivered everything up to `revision`.
    ///
    /// # Errors
    ///
    /// When the watch ended with an error, or did not get there in time.
    pub fn catch_up(
        &self,
        rt: &Runtime,
        revision: Revision,
        timeout: Duration,
    ) -> Result<(), String> {
        self.seen.want_progress.store(true, Ordering::SeqCst);
        let mut through = self.seen.through.subscribe();
        let reached = rt.block_on(async move {
            let caught_up = through.wait_for(|&r| r >= revision);
            tokio::time::timeout(timeout, caught_up).await.map(|_| ())
        });
        self.seen.want_progress.store(false, Ordering::SeqCst);
        if let Some(e) = self.seen.ended.lock().expect("lock").clone() {
            return Err(format!("watcher {} ended: {e}", self.name));
        }
        reached.map_err(|_| {
            format!(
                "watcher {} did not reach revision {revision} within {timeout:?} (through {})",
                self.name,
                *self.seen.through.borrow()
            )
        })
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<WatchResponse> {
        self.seen.responses.lock().expect("lock").clone()
    }

    /// Events received so far (progress notifications not counted).
    pub fn events(&self) -> usize {
        let responses = self.seen.responses.lock().expect("lock");
        responses.iter().map(|r| r.events.len()).sum()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(mut watcher: Watcher, seen: Arc<Seen>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        let next = tokio::select! {
            next = watcher.next() => next,
            _ = tick.tick() => {
                if seen.want_progress.load(Ordering::SeqCst) {
                    // Lost with a broken stream at worst; the next tick asks again.
                    let _ = watcher.request_progress();
                }
                continue;
            }
        };
        let response = match next {
            Some(Ok(response)) => response,
            Some(Err(e)) => return end(&seen, e.to_string()),
            None => return end(&seen, "the watch ended".into()),
        };
        let last = response.events.iter().map(|e| e.kv.mod_revision).max();
        let covered = last.unwrap_or(response.header.revision);
        seen.responses.lock().expect("lock").push(response);
        seen.through.send_if_modified(|through| {
            let newer = covered > *through;
            *through = (*through).max(covered);
            newer
        });
    }
}

fn end(seen: &Seen, why: String) {
    *seen.ended.lock().expect("lock") = Some(why);
    seen.through.send_replace(Revision::MAX);
}
