//! The task behind a [`Watcher`](crate::Watcher): it reads the watch stream, forwards
//! controls, and re-creates the watch when the stream breaks.
//!
//! Exactly-once delivery rests on one number, the resume point [`Resume::next`]: the lowest
//! revision whose events the caller has not seen. It starts at the requested start revision
//! (or, for "from now", one past the revision the node created the watch at); each delivered
//! response moves it past its last event, and a progress notification at `R` (every event up
//! to `R` delivered) moves it to `R + 1`. A new stream is created with
//! `start_revision = next`, and any event below `next` that a node sends anyway is dropped.
//! Since the node puts every event of a revision in one response, a revision is delivered
//! whole or not at all, so filtering by revision cannot split one.

use std::sync::Arc;

use etch_proto::watch::{WatchControl, WatchCreateRequest, WatchResponse};
use etch_proto::{Request, Response, ResponseHeader, Revision};
use tokio::sync::mpsc;

use crate::client::{Inner, Live};
use crate::error::{Attempts, Error, Result};
use crate::kv::response_name;
use crate::transport::{Answer, read_answer, write_frame};

/// Where the watch stands: the revision to resume from, and how it was created.
#[derive(Debug)]
pub(crate) struct Resume {
    /// The lowest revision not yet delivered; `0` until the node created a "from now"
    /// watch.
    next: Revision,
    /// The header of the first creation.
    created: Option<ResponseHeader>,
}

impl Resume {
    pub(crate) fn new(start_revision: Revision) -> Self {
        Resume {
            next: start_revision.max(0),
            created: None,
        }
    }

    pub(crate) fn next(&self) -> Revision {
        self.next
    }

    pub(crate) fn created_header(&self) -> ResponseHeader {
        self.created.clone().unwrap_or_default()
    }

    /// Takes the first answer on a new stream: the `created` message (whose revision fixes
    /// the resume point of a "from now" watch), possibly with events.
    fn first(&mut self, resp: WatchResponse) -> Option<WatchResponse> {
        if resp.created {
            if self.next == 0 {
                self.next = resp.header.revision.saturating_add(1);
            }
            if self.created.is_none() {
                self.created = Some(resp.header.clone());
            }
            if resp.events.is_empty() {
                return None;
            }
        }
        self.accept(resp)
    }

    /// What of `resp` to deliver, moving the resume point past it: events below the resume
    /// point are dropped (and the response with them when none is left).
    pub(crate) fn accept(&mut self, mut resp: WatchResponse) -> Option<WatchResponse> {
        if resp.is_progress_notify() {
            self.next = self.next.max(resp.header.revision.saturating_add(1));
            return Some(resp);
        }
        let next = self.next;
        resp.events.retain(|e| e.kv.mod_revision >= next);
        let last = resp.events.iter().map(|e| e.kv.mod_revision).max()?;
        self.next = last.saturating_add(1);
        Some(resp)
    }
}

/// A watch stream the node has created.
pub(crate) struct Open {
    live: Live,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Open {
    /// The endpoint of the node serving the stream.
    pub(crate) fn endpoint(&self) -> String {
        self.live.endpoint.to_string()
    }
}

/// Creates the watch the first time: from `req.start_revision`.
pub(crate) async fn create(
    inner: &Arc<Inner>,
    req: WatchCreateRequest,
    attempts: &mut Attempts,
) -> Result<(Open, Resume, Option<WatchResponse>)> {
    let mut resume = Resume::new(req.start_revision);
    let (open, pending) = open(inner, &req, &mut resume, attempts).await?;
    Ok((open, resume, pending))
}

/// Opens a stream that creates the watch from the resume point. Returns the stream and
/// what of the first answer is to be delivered.
async fn open(
    inner: &Arc<Inner>,
    req: &WatchCreateRequest,
    resume: &mut Resume,
    attempts: &mut Attempts,
) -> Result<(Open, Option<WatchResponse>)> {
    let req = WatchCreateRequest {
        start_revision: resume.next(),
        ..req.clone()
    };
    let frame = inner.encode(&Request::Watch(req))?;
    let opened = inner
        .open_stream(&frame, attempts)
        .await
        .map_err(compaction)?;
    match opened.first {
        Response::Watch(w) if w.canceled => Err(canceled(w)),
        Response::Watch(w) => {
            let pending = resume.first(w);
            let open = Open {
                live: opened.live,
                send: opened.send,
                recv: opened.recv,
            };
            Ok((open, pending))
        }
        other => Err(Error::UnexpectedResponse {
            expected: "Watch",
            got: response_name(&other),
        }),
    }
}

/// The error that ends a watch the node canceled.
fn canceled(resp: WatchResponse) -> Error {
    if resp.compact_revision > 0 {
        Error::WatchCompacted {
            compact_revision: resp.compact_revision,
        }
    } else {
        Error::WatchCanceled {
            reason: resp.cancel_reason,
        }
    }
}

/// A `Compacted` refusal of a watch is a [`Error::WatchCompacted`].
fn compaction(err: Error) -> Error {
    match err {
        Error::Server(etch_proto::Error::Compacted { compact_revision }) => {
            Error::WatchCompacted { compact_revision }
        }
        other => other,
    }
}

/// Where a watch's connection stands; see [`Watcher::state`](crate::Watcher::state).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchState {
    /// The watch is served by the node at `endpoint`.
    Live { endpoint: String },
    /// The stream broke at `since` (with `error`); the watch is being created again on
    /// some node, from `from_revision` on, so that no event is lost or repeated.
    Resuming {
        since: std::time::Instant,
        from_revision: Revision,
        error: String,
    },
    /// The watch has ended (canceled, dropped, or failed: its last item says why).
    Ended,
}

/// Runs a created watch until it ends: delivers to `out`, forwards `controls`, resumes
/// after breaks, and tells `state` where it stands.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    inner: Arc<Inner>,
    req: WatchCreateRequest,
    open: Open,
    pending: Option<WatchResponse>,
    mut resume: Resume,
    out: mpsc::Sender<Result<WatchResponse>>,
    mut controls: mpsc::UnboundedReceiver<WatchControl>,
    state: tokio::sync::watch::Sender<WatchState>,
) {
    let mut stream = Some((open, pending));
    loop {
        let (open, pending) = match stream.take() {
            Some(s) => s,
            None => match reopen(&inner, &req, &mut resume, &out, &mut controls).await {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    state.send_replace(WatchState::Ended);
                    let _ = out.send(Err(e)).await;
                    return;
                }
                None => {
                    state.send_replace(WatchState::Ended);
                    return;
                }
            },
        };
        state.send_replace(WatchState::Live {
            endpoint: open.endpoint(),
        });
        if let Some(p) = pending
            && out.send(Ok(p)).await.is_err()
        {
            state.send_replace(WatchState::Ended);
            return;
        }
        match serve(&inner, open, &mut resume, &out, &mut controls).await {
            Served::Ended => {
                state.send_replace(WatchState::Ended);
                return;
            }
            Served::Broken(e) => {
                tracing::debug!(error = %e, next = resume.next(), "watch stream broken; resuming");
                state.send_replace(WatchState::Resuming {
                    since: std::time::Instant::now(),
                    from_revision: resume.next(),
                    error: e.to_string(),
                });
            }
        }
    }
}

/// Creates the watch again after a break, for as long as the watcher wants it: `None` when
/// it was dropped or canceled meanwhile.
async fn reopen(
    inner: &Arc<Inner>,
    req: &WatchCreateRequest,
    resume: &mut Resume,
    out: &mpsc::Sender<Result<WatchResponse>>,
    controls: &mut mpsc::UnboundedReceiver<WatchControl>,
) -> Option<Result<(Open, Option<WatchResponse>)>> {
    let mut attempts = Attempts::default();
    let opening = open(inner, req, resume, &mut attempts);
    tokio::pin!(opening);
    loop {
        tokio::select! {
            opened = &mut opening => return Some(opened),
            () = out.closed() => return None,
            ctl = controls.recv() => match ctl {
                None | Some(WatchControl::Cancel) => return None,
                // No stream to ask on; the reconnection will bring the watch up to date.
                Some(WatchControl::Progress) => {}
            },
        }
    }
}

enum Served {
    /// The watch is over (canceled, dropped, or failed for good: the error was delivered).
    Ended,
    /// The stream broke; the watch goes on from the resume point.
    Broken(Error),
}

/// What woke the serve loop. Lives for one turn of it, on the stack, so its size is moot.
#[expect(clippy::large_enum_variant, reason = "short-lived, never moved around")]
enum Step {
    Read(quinn::RecvStream, Result<Option<Answer>>),
    Control(Option<WatchControl>),
}

async fn next_answer(
    live: Live,
    mut recv: quinn::RecvStream,
    max: usize,
) -> (quinn::RecvStream, Result<Option<Answer>>) {
    let answer = read_answer(&live.conn, &live.endpoint, &mut recv, max).await;
    (recv, answer)
}

/// Serves one stream until it breaks or the watch ends.
async fn serve(
    inner: &Arc<Inner>,
    open: Open,
    resume: &mut Resume,
    out: &mpsc::Sender<Result<WatchResponse>>,
    controls: &mut mpsc::UnboundedReceiver<WatchControl>,
) -> Served {
    let Open {
        live,
        mut send,
        recv,
    } = open;
    let max = inner.opts.max_response_bytes;
    let mut canceling = false;
    // Reading a frame is not cancel-safe, so the read is one future kept across the select
    // loop and replaced only once it completes.
    let mut reading = Box::pin(next_answer(live.clone(), recv, max));
    loop {
        let step = tokio::select! {
            (recv, answer) = &mut reading => Step::Read(recv, answer),
            ctl = controls.recv(), if !canceling => Step::Control(ctl),
            () = out.closed() => Step::Control(None),
        };
        let (recv, answer) = match step {
            Step::Control(None) => {
                // The watcher is gone: tell the node, best effort.
                let _ = control(inner, &live, &mut send, WatchControl::Cancel).await;
                let _ = send.finish();
                return Served::Ended;
            }
            Step::Control(Some(ctl)) => {
                canceling |= ctl == WatchControl::Cancel;
                if let Err(e) = control(inner, &live, &mut send, ctl).await {
                    // The read side reports the break.
                    tracing::debug!(error = %e, "cannot send a watch control");
                    if canceling {
                        return Served::Ended;
                    }
                }
                continue;
            }
            Step::Read(recv, answer) => (recv, answer),
        };
        match answer {
            Ok(Some(Ok(Response::Watch(w)))) => {
                if w.canceled {
                    if !canceling {
                        let _ = out.send(Err(canceled(w))).await;
                    }
                    return Served::Ended;
                }
                if let Some(resp) = resume.accept(w)
                    && out.send(Ok(resp)).await.is_err()
                {
                    return Served::Ended;
                }
            }
            Ok(Some(Ok(other))) => {
                let _ = out
                    .send(Err(Error::UnexpectedResponse {
                        expected: "Watch",
                        got: response_name(&other),
                    }))
                    .await;
                return Served::Ended;
            }
            _ if canceling => return Served::Ended,
            Ok(Some(Err(e))) if e.is_retryable() => {
                inner.rotate(&live).await;
                return Served::Broken(Error::Server(e));
            }
            Ok(Some(Err(e))) => {
                let _ = out.send(Err(compaction(Error::Server(e)))).await;
                return Served::Ended;
            }
            Ok(None) => {
                return Served::Broken(Error::StreamReset {
                    endpoint: live.endpoint.to_string(),
                    what: "finished",
                    code: 0,
                    sent: true,
                });
            }
            Err(e) => {
                if matches!(e, Error::ConnectionLost { .. }) {
                    inner.forget(&live).await;
                }
                return Served::Broken(e);
            }
        }
        reading = Box::pin(next_answer(live.clone(), recv, max));
    }
}

async fn control(
    inner: &Inner,
    live: &Live,
    send: &mut quinn::SendStream,
    ctl: WatchControl,
) -> Result<()> {
    let frame = inner.encode(&ctl)?;
    write_frame(send, &live.endpoint, &frame).await
}

#[cfg(test)]
mod tests {
    use etch_proto::KeyValue;
    use etch_proto::watch::{Event, EventType};

    use super::*;

    fn events(revs: &[Revision]) -> WatchResponse {
        WatchResponse {
            events: revs
                .iter()
                .map(|&r| Event {
                    kind: EventType::Put,
                    kv: KeyValue {
                        key: b"k".to_vec(),
                        mod_revision: r,
                        ..Default::default()
                    },
                    prev_kv: None,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn revs(resp: &WatchResponse) -> Vec<Revision> {
        resp.events.iter().map(|e| e.kv.mod_revision).collect()
    }

    fn header(revision: Revision) -> ResponseHeader {
        ResponseHeader {
            revision,
            ..Default::default()
        }
    }

    #[test]
    fn a_watch_from_now_resumes_after_its_creation() {
        let mut r = Resume::new(0);
        let created = WatchResponse {
            created: true,
            header: header(9),
            ..Default::default()
        };
        assert_eq!(r.first(created), None);
        assert_eq!(r.next(), 10);
        assert_eq!(r.created_header().revision, 9);
        let delivered = r.accept(events(&[10, 10, 11])).expect("delivered");
        assert_eq!(revs(&delivered), [10, 10, 11]);
        assert_eq!(r.next(), 12);
    }

    #[test]
    fn replayed_events_are_dropped_and_progress_advances() {
        let mut r = Resume::new(5);
        let created = WatchResponse {
            created: true,
            header: header(50),
            ..Default::default()
        };
        assert_eq!(r.first(created), None);
        assert_eq!(r.next(), 5, "a start revision is kept");
        assert_eq!(revs(&r.accept(events(&[5, 6])).expect("first")), [5, 6]);
        // A node that replays from too far back: only the new revision gets through.
        assert_eq!(revs(&r.accept(events(&[6, 7])).expect("second")), [7]);
        assert_eq!(r.accept(events(&[6, 7])), None);
        let progress = WatchResponse {
            header: header(20),
            ..Default::default()
        };
        assert!(r.accept(progress).is_some());
        assert_eq!(r.next(), 21);
        let stale = WatchResponse {
            header: header(3),
            ..Default::default()
        };
        assert!(r.accept(stale).is_some());
        assert_eq!(r.next(), 21, "never moves back");
    }

    #[test]
    fn cancellations_become_typed_errors() {
        let compacted = WatchResponse {
            canceled: true,
            compact_revision: 4,
            ..Default::default()
        };
        assert!(matches!(
            canceled(compacted),
            Error::WatchCompacted {
                compact_revision: 4
            }
        ));
        let other = WatchResponse {
            canceled: true,
            cancel_reason: "shutting down".into(),
            ..Default::default()
        };
        assert!(
            matches!(canceled(other), Error::WatchCanceled { reason } if reason == "shutting down")
        );
        let refused = Error::Server(etch_proto::Error::Compacted {
            compact_revision: 8,
        });
        assert!(matches!(
            compaction(refused),
            Error::WatchCompacted {
                compact_revision: 8
            }
        ));
    }
}
