//! Global flags and what every command gets from them: a client and a printer.
//!
//! `--command-timeout` bounds a command's network work as a whole: it starts when the
//! command first needs a client (after any input was read) and every request gets what is
//! left of it. Clients connect lazily, inside the request's timeout, so a dead endpoint
//! cannot add its dial timeout on top.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use etch_client::proto::pki::PkiError;
use etch_client::{Client, ClientOptions, TlsFiles};

use crate::duration;
use crate::print::{Format, Printer};

/// Flags accepted by every command; each also reads an `ETCHCTL_*` environment variable.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Comma-separated node client addresses (host:port).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7379"
    )]
    pub endpoints: Vec<String>,
    /// The cluster CA certificate (PEM).
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_CACERT",
        default_value = "./etch-data/certs/ca.crt"
    )]
    pub cacert: PathBuf,
    /// This client's certificate (PEM); its common name is the principal.
    #[arg(
        long,
        global = true,
        env = "ETCHCTL_CERT",
        default_value = "./etch-data/certs/root.crt"
    )]
    pub cert: PathBuf,
    /// This client's private key (PEM).
    #[arg(
        long = "key",
        id = "key_file",
        value_name = "KEY",
        global = true,
        env = "ETCHCTL_KEY",
        default_value = "./etch-data/certs/root.key"
    )]
    pub key_file: PathBuf,
    /// Time allowed for a command, connecting and retries included (e.g. 5s, 500ms).
    #[arg(long, global = true, env = "ETCHCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = duration::parse)]
    pub command_timeout: Duration,
    /// Time allowed to connect to one endpoint.
    #[arg(long, global = true, env = "ETCHCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = duration::parse)]
    pub dial_timeout: Duration,
    /// Output format.
    #[arg(
        short = 'w',
        long,
        global = true,
        env = "ETCHCTL_WRITE_OUT",
        value_enum,
        default_value = "simple"
    )]
    pub write_out: Format,
    /// Print keys and values as hex-escaped bytes.
    #[arg(long, global = true, env = "ETCHCTL_HEX")]
    pub hex: bool,
    /// Largest request sent, in bytes: match the nodes' --max-request-bytes.
    #[arg(long, global = true, env = "ETCHCTL_MAX_REQUEST_BYTES", default_value_t = etch_client::proto::DEFAULT_MAX_REQUEST_BYTES)]
    pub max_request_bytes: usize,
}

/// What a command runs with.
#[derive(Debug)]
pub struct Context {
    pub global: GlobalArgs,
    pub printer: Printer,
    /// When the command's time is up: set by the first call to [`Context::options`].
    deadline: OnceLock<Instant>,
}

impl Context {
    pub fn new(global: GlobalArgs) -> Self {
        let printer = Printer {
            format: global.write_out,
            hex: global.hex,
            value_only: false,
        };
        Context {
            global,
            printer,
            deadline: OnceLock::new(),
        }
    }

    /// What is left of the command timeout, which starts running at the first call.
    pub fn budget(&self) -> Duration {
        let timeout = self.global.command_timeout;
        let now = Instant::now();
        let deadline = *self.deadline.get_or_init(|| now + timeout);
        // Whole milliseconds: the budget shows in timeout messages.
        let left = deadline.saturating_duration_since(now);
        Duration::from_millis(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))
    }

    /// Client options for `endpoints` with the global TLS files and timeouts; the request
    /// timeout is what is left of the command timeout.
    pub fn options(&self, endpoints: Vec<String>) -> ClientOptions {
        self.options_within(endpoints, self.budget())
    }

    /// [`Context::options`] with a request timeout of `budget`, for requests sent together.
    pub fn options_within(&self, endpoints: Vec<String>, budget: Duration) -> ClientOptions {
        let tls = TlsFiles {
            ca: self.global.cacert.clone(),
            cert: self.global.cert.clone(),
            key: self.global.key_file.clone(),
        };
        ClientOptions::new(endpoints, tls)
            .connect_timeout(self.global.dial_timeout.min(budget))
            .request_timeout(budget)
            .max_request_bytes(self.global.max_request_bytes)
    }

    /// A client for the global endpoints. It connects on its first request, within that
    /// request's timeout. Each request gets what was left of the command timeout when the
    /// client was made: long-running commands (watch, lease keep-alive) make their client
    /// first, so every step of theirs gets the whole timeout.
    pub fn client(&self) -> Result<Client> {
        Client::new(self.options(self.global.endpoints.clone())).map_err(with_hint)
    }

    /// Runs `f` on standard output.
    pub fn print(&self, f: impl FnOnce(&Printer, &mut dyn Write) -> io::Result<()>) -> Result<()> {
        let mut out = io::stdout().lock();
        f(&self.printer, &mut out)?;
        out.flush()?;
        Ok(())
    }
}

/// Adds what to do about a missing certificate file to the error.
pub fn with_hint(err: etch_client::Error) -> anyhow::Error {
    if let etch_client::Error::Tls(PkiError::Read { path, source }) = &err
        && source.kind() == io::ErrorKind::NotFound
        && path.starts_with("./etch-data/certs")
    {
        return anyhow::anyhow!(
            "cannot read {}: file not found (hint: `etchd` started with no flags creates \
                 ./etch-data/certs; run etchctl from the same directory, or pass --cacert, \
                 --cert and --key)",
            path.display()
        );
    }
    err.into()
}

/// The error and its causes on one line, each cause once: `a: b: c`.
///
/// A deadline that passed after the node had answered with an error is told by that error:
/// `unavailable: no leader: ...` says what is wrong, "context deadline exceeded" only that
/// the client gave up.
pub fn error_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    let mut unknown = false;
    for cause in err.chain() {
        if let Some(etch_client::Error::Timeout {
            last_error: Some(last),
            outcome_unknown,
            ..
        }) = cause.downcast_ref()
            && matches!(**last, etch_client::Error::Server(_))
        {
            // The chain goes on with `last` and its causes; that the write may have been
            // applied is said after them.
            unknown |= *outcome_unknown;
            continue;
        }
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    if unknown {
        line.push_str(
            " (outcome unknown: the write was sent and may have been applied; read the key to find out)",
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(command_timeout: Duration) -> Context {
        Context::new(GlobalArgs {
            endpoints: vec!["127.0.0.1:7379".into()],
            cacert: "ca.crt".into(),
            cert: "root.crt".into(),
            key_file: "root.key".into(),
            command_timeout,
            dial_timeout: Duration::from_secs(2),
            write_out: Format::Simple,
            hex: false,
            max_request_bytes: etch_client::proto::DEFAULT_MAX_REQUEST_BYTES,
        })
    }

    #[test]
    fn the_command_timeout_is_one_budget() {
        let ctx = context(Duration::from_secs(5));
        assert_eq!(
            ctx.budget(),
            Duration::from_secs(5),
            "starts at the first use"
        );
        assert!(ctx.budget() <= Duration::from_secs(5));
        assert_eq!(context(Duration::ZERO).budget(), Duration::ZERO);
    }

    fn timeout(last_error: Option<etch_client::Error>) -> anyhow::Error {
        etch_client::Error::Timeout {
            after: Duration::from_secs(5),
            tried: vec!["127.0.0.1:7379".into()],
            outcome_unknown: false,
            last_error: last_error.map(Box::new),
        }
        .into()
    }

    #[test]
    fn a_deadline_is_told_by_the_nodes_last_answer() {
        let no_leader = etch_client::proto::Error::Unavailable {
            reason: "no leader: the cluster cannot elect one (is a majority of members down?)"
                .into(),
        };
        assert_eq!(
            error_line(&timeout(Some(no_leader.into()))),
            "unavailable: no leader: the cluster cannot elect one (is a majority of members down?)"
        );
        let no_quorum = etch_client::proto::Error::Unavailable {
            reason: "no quorum: the leader has not heard from a majority".into(),
        };
        let listing = timeout(Some(no_quorum.into())).context("listing the cluster's members");
        assert_eq!(
            error_line(&listing),
            "listing the cluster's members: unavailable: no quorum: the leader has not heard \
             from a majority"
        );
    }

    #[test]
    fn a_write_of_unknown_outcome_says_so_after_the_nodes_reason() {
        let no_leader = etch_client::proto::Error::Unavailable {
            reason: "no leader".into(),
        };
        let err: anyhow::Error = etch_client::Error::Timeout {
            after: Duration::from_secs(5),
            tried: vec!["127.0.0.1:7379".into()],
            outcome_unknown: true,
            last_error: Some(Box::new(no_leader.into())),
        }
        .into();
        assert_eq!(
            error_line(&err),
            "unavailable: no leader (outcome unknown: the write was sent and may have been \
             applied; read the key to find out)"
        );
    }

    #[test]
    fn a_deadline_without_an_answer_says_so() {
        assert_eq!(
            error_line(&timeout(None)),
            "context deadline exceeded (request timeout 5s; tried 127.0.0.1:7379; no answer)"
        );
        let unreachable = etch_client::Error::Connect {
            endpoint: "127.0.0.1:7379".into(),
            source: etch_client::DialError::TimedOut(Duration::from_secs(2)),
        };
        assert_eq!(
            error_line(&timeout(Some(unreachable))),
            "context deadline exceeded (request timeout 5s; tried 127.0.0.1:7379): cannot \
             connect to 127.0.0.1:7379: timed out after 2s (dial timeout)"
        );
    }

    #[test]
    fn missing_cert_names_the_file_and_hints() {
        let err = etch_client::Error::Tls(PkiError::Read {
            path: "./etch-data/certs/ca.crt".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
        let line = error_line(&with_hint(err));
        assert!(
            line.starts_with("cannot read ./etch-data/certs/ca.crt"),
            "{line}"
        );
        assert!(line.contains("`etchd` started with no flags"), "{line}");
    }

    #[test]
    fn causes_are_printed_once() {
        let err = etch_client::Error::Tls(PkiError::Read {
            path: "x.key".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        });
        let line = error_line(&anyhow::Error::from(err));
        assert_eq!(line, "cannot read x.key: permission denied");
        let connect = etch_client::Error::Connect {
            endpoint: "127.0.0.1:7379".into(),
            source: etch_client::DialError::TimedOut(Duration::from_secs(2)),
        };
        assert_eq!(
            error_line(&anyhow::Error::from(connect)),
            "cannot connect to 127.0.0.1:7379: timed out after 2s (dial timeout)"
        );
    }
}
