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
use crate::print::Printer;

/// `watch KEY [RANGE_END] [--prefix] [--rev N] [--prev-kv] [--progress-notify]`.
#[derive(Args, Clone, Debug)]
pub struct WatchArgs {
    /// The key to watch (or the start of the range).
    #[arg(required_unless_present = "interactive")]
    pub key: Option<std::ffi::OsString>,
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
    /// Read watch commands from standard input, one per line (`watch KEY [RANGE_END]
    /// [--prefix] [--rev N] [--prev-kv]`), and run them all; events print as they come.
    #[arg(short, long)]
    pub interactive: bool,
}

impl WatchArgs {
    /// The watch these flags ask for.
    pub fn request(&self) -> Result<WatchCreateRequest> {
        let Some(key) = &self.key else {
            bail!("watch needs a key");
        };
        if self.rev < 0 {
            bail!("--rev must not be negative, got {}", self.rev);
        }
        let op = match (self.prefix, &self.range_end) {
            (true, Some(_)) => {
                bail!("too many arguments, only accept one argument when `--prefix` is set")
            }
            (true, None) => TxnOp::get(bytes(key)).prefix(),
            (false, Some(end)) => TxnOp::get(bytes(key)).range_end(bytes(end)),
            (false, None) => TxnOp::get(bytes(key)),
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
    let client = ctx.client()?;
    let printer = ctx.printer;
    let watching = async {
        if args.interactive {
            interactive(client, printer).await
        } else {
            follow(client, printer, args.request()?).await
        }
    };
    tokio::select! {
        done = watching => done,
        // Ctrl-C is how a watch is meant to end.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// `watch -i`: a watch per line of standard input, all running at once. A line that is
/// not a watch command is reported and skipped; the end of input leaves the watches
/// running (until Ctrl-C), and the first watch that fails ends the command.
async fn interactive(client: etch_client::Client, printer: Printer) -> Result<()> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut watches = tokio::task::JoinSet::new();
    let mut reading = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if reading => match line? {
                Some(line) if line.trim().is_empty() => {}
                Some(line) => match parse_line(&line) {
                    Ok(req) => {
                        watches.spawn(follow(client.clone(), printer, req));
                    }
                    Err(e) => eprintln!("Invalid watch command {line:?}: {e:#}"),
                },
                None => reading = false,
            },
            Some(done) = watches.join_next() => done??,
            else => return Ok(()),
        }
    }
}

/// One line of `watch -i`: `watch` and the arguments of the command.
fn parse_line(line: &str) -> Result<WatchCreateRequest> {
    #[derive(clap::Parser)]
    #[command(no_binary_name = true)]
    struct Line {
        #[command(flatten)]
        watch: WatchArgs,
    }
    let words = crate::txn_parse::argify(line).map_err(|e| anyhow!("{e}"))?;
    let Some(("watch", rest)) = words.split_first().map(|(w, rest)| (w.as_str(), rest)) else {
        bail!("expected `watch KEY [RANGE_END] [flags]`");
    };
    let parsed = <Line as clap::Parser>::try_parse_from(rest).map_err(|e| {
        let text = e.to_string();
        anyhow!(
            "{}",
            text.lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
        )
    })?;
    if parsed.watch.interactive {
        bail!("-i is for the command line, not a watch line");
    }
    parsed.watch.request()
}

/// Runs one watch to its end, printing its events; says on stderr when its stream breaks
/// and when it resumes.
async fn follow(
    client: etch_client::Client,
    printer: Printer,
    req: WatchCreateRequest,
) -> Result<()> {
    let mut watcher = client.watch_request(req).await.map_err(canceled)?;
    let mut states = watcher.states();
    // Where the watch stood when its stream last broke: said on stderr, and in the error
    // if it cannot be resumed.
    let mut broken: Option<(Revision, String)> = None;
    loop {
        tokio::select! {
            resp = watcher.next() => {
                let Some(resp) = resp else { return Ok(()) };
                let resp = match (resp, &broken) {
                    (Ok(resp), _) => resp,
                    (Err(e), Some((from, why))) => bail!(
                        "the watch could not be resumed from revision {from} after its node was \
                         lost ({why}): {}",
                        crate::context::error_line(&canceled(e))
                    ),
                    (Err(e), None) => return Err(canceled(e)),
                };
                let mut out = std::io::stdout().lock();
                printer.watch(&mut out, &resp)?;
                std::io::Write::flush(&mut out)?;
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
        assert!(request(&["-i"]).is_err(), "a watch request needs a key");
        assert!(Watch::try_parse_from(["watch"]).is_err(), "a key, or -i");
    }

    #[test]
    fn interactive_lines_are_watch_commands() {
        let req = parse_line("watch /a --prefix --rev 4").expect("a watch line");
        assert_eq!(
            (req.key, req.range_end, req.start_revision),
            (b"/a".to_vec(), b"/b".to_vec(), 4)
        );
        let quoted = parse_line(r#"watch "a b""#).expect("a quoted key");
        assert_eq!(quoted.key, b"a b".to_vec());
        assert!(parse_line("get /a").is_err());
        assert!(parse_line("watch").is_err());
        assert!(parse_line("watch /a --bogus").is_err());
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
