//! `watch KEY [RANGE_END]`: prints each change as it arrives, until Ctrl-C.
//!
//! The SDK resumes the watch across node failures by itself, so the command only prints.
//! A compacted start revision (or one compacted while the client was reconnecting) ends it
//! with an error, as etcdctl's `watch was canceled (...)`.

use anyhow::{Result, anyhow, bail};
use clap::Args;
use etch_client::proto::watch::WatchCreateRequest;
use etch_client::proto::{RequestOp, Revision};
use etch_client::{TxnOp, WatchState};

use crate::context::Context;
use crate::kv::bytes;

/// `watch KEY [RANGE_END] [--prefix] [--rev N] [--prev-kv] [--progress-notify]`.
#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// The key to watch (or the start of the range).
    pub key: std::ffi::OsString,
    /// The end of the range, exclusive.
    pub range_end: Option<std::ffi::OsString>,
    /// Watch every key starting with KEY ("" for all keys).
    #[arg(long)]
    pub prefix: bool,
    /// Replay the changes from this revision on (0: only changes from now).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Print each event's previous key-value before it.
    #[arg(long)]
    pub prev_kv: bool,
    /// Ask for periodic progress notifications (`progress notify: REV`).
    #[arg(long)]
    pub progress_notify: bool,
}

impl WatchArgs {
    /// The watch these flags ask for.
    pub fn request(&self) -> Result<WatchCreateRequest> {
        if self.rev < 0 {
            bail!("--rev must not be negative, got {}", self.rev);
        }
        let op = match (self.prefix, &self.range_end) {
            (true, Some(_)) => {
                bail!("too many arguments, only accept one argument when `--prefix` is set")
            }
            (true, None) => TxnOp::get(bytes(&self.key)).prefix(),
            (false, Some(end)) => TxnOp::get(bytes(&self.key)).range_end(bytes(end)),
            (false, None) => TxnOp::get(bytes(&self.key)),
        };
        let RequestOp::Range(range) = op.into_inner() else {
            bail!("internal error: a get op is not a range");
        };
        Ok(WatchCreateRequest {
            key: range.key,
            range_end: range.range_end,
            start_revision: self.rev,
            progress_notify: self.progress_notify,
            prev_kv: self.prev_kv,
            ..Default::default()
        })
    }
}

/// A watch that ended by the node's doing, in etcdctl's words.
fn canceled(err: etch_client::Error) -> anyhow::Error {
    match err {
        etch_client::Error::WatchCompacted { compact_revision } => anyhow!(
            "watch was canceled (mvcc: required revision has been compacted; compact revision \
             {compact_revision})"
        ),
        etch_client::Error::WatchCanceled { reason } => anyhow!("watch was canceled ({reason})"),
        other => other.into(),
    }
}

pub async fn run(ctx: &Context, args: &WatchArgs) -> Result<()> {
    let req = args.request()?;
    let client = ctx.client()?;
    let printing = async {
        let mut watcher = client.watch_request(req).await.map_err(canceled)?;
        let mut states = watcher.states();
        // Where the watch stood when its stream last broke: said on stderr, and in the
        // error if it cannot be resumed.
        let mut broken: Option<(Revision, String)> = None;
        loop {
            tokio::select! {
                resp = watcher.next() => {
                    let Some(resp) = resp else { return Ok(()) };
                    let resp = match (resp, &broken) {
                        (Ok(resp), _) => resp,
                        (Err(e), Some((from, why))) => bail!(
                            "the watch could not be resumed from revision {from} after its node \
                             was lost ({why}): {}",
                            crate::context::error_line(&canceled(e))
                        ),
                        (Err(e), None) => return Err(canceled(e)),
                    };
                    ctx.print(|p, w| p.watch(w, &resp))?;
                }
                Ok(()) = states.changed() => {
                    let state = states.borrow_and_update().clone();
                    match state {
                        WatchState::Resuming { from_revision, error, .. } => {
                            eprintln!(
                                "watch: the stream broke ({error}); resuming from revision \
                                 {from_revision}"
                            );
                            broken = Some((from_revision, error));
                        }
                        WatchState::Live { endpoint } if broken.take().is_some() => {
                            eprintln!("watch: resumed on {endpoint}");
                        }
                        _ => {}
                    }
                }
            }
        }
    };
    tokio::select! {
        done = printing => done,
        // Ctrl-C is how a watch is meant to end.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Watch {
        #[command(flatten)]
        watch: WatchArgs,
    }

    fn request(args: &[&str]) -> Result<WatchCreateRequest> {
        Watch::try_parse_from(std::iter::once("watch").chain(args.iter().copied()))?
            .watch
            .request()
    }

    #[test]
    fn flags_make_the_watch() {
        assert_eq!(
            request(&[
                "/a",
                "--prefix",
                "--rev",
                "5",
                "--prev-kv",
                "--progress-notify"
            ])
            .expect("request"),
            WatchCreateRequest {
                key: b"/a".to_vec(),
                range_end: b"/b".to_vec(),
                start_revision: 5,
                progress_notify: true,
                prev_kv: true,
                ..Default::default()
            }
        );
        let range = request(&["a", "c"]).expect("range");
        assert_eq!((range.key, range.range_end), (b"a".to_vec(), b"c".to_vec()));
        let all = request(&["", "--prefix"]).expect("all keys");
        assert_eq!((all.key, all.range_end), (vec![0], vec![0]));
        let one = request(&["k"]).expect("one key");
        assert_eq!((one.range_end, one.start_revision), (vec![], 0));
    }

    #[test]
    fn contradictions_are_refused() {
        let err = request(&["a", "b", "--prefix"]).expect_err("two args");
        assert!(
            err.to_string().contains("only accept one argument"),
            "{err}"
        );
        assert!(request(&["a", "--rev", "-1"]).is_err());
    }

    #[test]
    fn compaction_reads_like_etcdctl() {
        let err = canceled(etch_client::Error::WatchCompacted {
            compact_revision: 7,
        });
        assert_eq!(
            err.to_string(),
            "watch was canceled (mvcc: required revision has been compacted; compact revision 7)"
        );
    }
}
