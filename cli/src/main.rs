//! etchctl: the command-line client for etch, with etcdctl's verbs, flags and output.
//!
//! Start reading at [`Command`]: one variant per verb, each run by a function in the module
//! of its family (`kv`, `txn`, `watch`, `lease`, `endpoint`, `member`, `plugin`, `auth`, `alarm`,
//! `snapshot`, `certs`). `context` turns the global
//! flags into a client and a printer; `print` holds the three output formats; `txn_parse` the
//! txn syntax.

mod alarm;
mod auth;
mod certs;
mod context;
mod duration;
mod endpoint;
mod kv;
mod lease;
mod member;
mod plugin;
mod print;
mod snapshot;
mod txn;
mod txn_parse;
mod watch;

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use crate::context::{Context, GlobalArgs, error_line};

/// A command-line client for etch, the Raft-replicated key-value store.
///
/// Talks QUIC with mutual TLS to the nodes in --endpoints. By default it presents the
/// certificates that `etchd` creates under ./etch-data/certs on its first start.
/// Every failure prints one line `Error: ...` on standard error and exits non-zero.
/// Set RUST_LOG (e.g. RUST_LOG=debug) to see what the client does.
#[derive(Parser, Debug)]
#[command(name = "etchctl", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Put the given key into the store: prints OK (and the previous key-value with
    /// --prev-kv). The value is read from standard input when omitted.
    Put(kv::PutArgs),
    /// Get the key or a range of keys: prints each key and value on their own lines.
    Get(kv::GetArgs),
    /// Remove the key or a range of keys: prints the number deleted (then the deleted
    /// key-values with --prev-kv).
    Del(kv::DelArgs),
    /// Run a transaction read from standard input: compares (e.g. value("k") = "v",
    /// mod("k") > "3", create("k") < "2", version("k") != "1", lease("k") = "1f"), a blank
    /// line, the success requests (put/get/del command lines), a blank line, the failure
    /// requests. Prints SUCCESS or FAILURE, then each response.
    Txn(txn::TxnArgs),
    /// Compact the history below the given revision: prints "compacted revision REV".
    Compact(kv::CompactArgs),
    /// Watch a key or a range for changes: prints each event (PUT or DELETE, then the key
    /// and the value) as it arrives, until interrupted with Ctrl-C. Survives node failures.
    Watch(watch::WatchArgs),
    /// Leases: grant, revoke, keep alive, inspect and list.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Endpoint status and health.
    #[command(subcommand)]
    Endpoint(endpoint::EndpointCommand),
    /// Cluster membership: list, add, promote and remove members.
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// WebAssembly validator plugins: install, list and remove.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Authorization: enable, disable, status.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Users (client certificate common names): add, delete, get, list, grant and revoke
    /// roles.
    #[command(subcommand)]
    User(auth::UserCommand),
    /// Roles: add, delete, get, list, grant and revoke permissions on keys, ranges and
    /// prefixes.
    #[command(subcommand)]
    Role(auth::RoleCommand),
    /// Alarms: list the raised ones, disarm them.
    #[command(subcommand)]
    Alarm(alarm::AlarmCommand),
    /// Defragment each endpoint's storage (or every member's with --cluster): drops what
    /// compaction and deletes left on disk. Prints one line per member.
    Defrag(endpoint::ClusterArgs),
    /// Hand the leadership to another voting member, by its ID in hex (as `member list`
    /// prints it). Writes pause for about two election timeouts while it moves.
    MoveLeader(member::IdArgs),
    /// Backups: save one from a node, check one, restore one into a new cluster.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Certificates for a cluster.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print the version of etchctl.
    Version,
}

/// etcdctl's exit status for a command given the wrong arguments (cobra's `ExitBadArgs`).
const EXIT_BAD_ARGS: u8 = 128;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", error_line(&e));
            match e.downcast_ref::<kv::Refused>() {
                Some(refused) => ExitCode::from(refused.status),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// A command line clap refused, as etcdctl reports one: help and version as asked, else
/// one `Error:` line (the usage follows only with `--help`) and etcdctl's exit status: 1
/// for an unknown command, [`EXIT_BAD_ARGS`] for wrong arguments.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    eprintln!("Error: {}", usage_line(e));
    match e.kind() {
        ErrorKind::InvalidSubcommand => ExitCode::FAILURE,
        _ => ExitCode::from(EXIT_BAD_ARGS),
    }
}

/// The first line of clap's message, without its `error: ` and with its spacing folded.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "the following required arguments were not provided:" names them on the next line.
    match (first.ends_with(':'), lines.next()) {
        (true, Some(what)) if !what.starts_with("Usage:") => format!("{first} {what}"),
        _ => first.to_owned(),
    }
}

fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(cli.global);
    match &cli.command {
        Command::Certs(cmd) => return certs::run(cmd),
        Command::Version => {
            println!("etchctl version: {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match &cli.command {
            Command::Put(args) => kv::put(&ctx, args).await,
            Command::Get(args) => kv::get(&ctx, args).await,
            Command::Del(args) => kv::del(&ctx, args).await,
            Command::Txn(args) => txn::run(&ctx, args).await,
            Command::Compact(args) => kv::compact(&ctx, args).await,
            Command::Watch(args) => watch::run(&ctx, args).await,
            Command::Lease(cmd) => lease::run(&ctx, cmd).await,
            Command::Endpoint(cmd) => endpoint::run(&ctx, cmd).await,
            Command::Member(cmd) => member::run(&ctx, cmd).await,
            Command::Plugin(cmd) => plugin::run(&ctx, cmd).await,
            Command::Auth(cmd) => auth::auth(&ctx, cmd).await,
            Command::User(cmd) => auth::user(&ctx, cmd).await,
            Command::Role(cmd) => auth::role(&ctx, cmd).await,
            Command::Alarm(cmd) => alarm::run(&ctx, cmd).await,
            Command::Defrag(args) => alarm::defrag(&ctx, args).await,
            Command::Snapshot(cmd) => snapshot::run(&ctx, cmd).await,
            Command::MoveLeader(args) => member::move_leader(&ctx, args).await,
            Command::Certs(_) | Command::Version => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn member_verbs_have_help() {
        let mut cli = Cli::command();
        cli.build();
        let member = cli.find_subcommand_mut("member").expect("member");
        let mut help = |verb: &str| {
            member
                .find_subcommand_mut(verb)
                .unwrap_or_else(|| panic!("no member {verb}"))
                .render_long_help()
                .to_string()
        };
        let add = help("add");
        assert!(
            add.contains("Usage: etchctl member add [OPTIONS] <NAME>"),
            "{add}"
        );
        assert!(add.contains("--peer-urls <HOST:PORT>"), "{add}");
        assert!(add.contains("--learner"), "{add}");
        assert!(help("list").contains("unstarted until the member"));
        assert!(help("promote").contains("<ID>"));
        assert!(help("remove").contains("in hex as `member list` prints it"));
    }

    #[test]
    fn a_usage_error_is_one_line() {
        let Err(missing) = Cli::try_parse_from(["etchctl", "get"]) else {
            panic!("get needs a key");
        };
        assert_eq!(
            usage_line(&missing),
            "the following required arguments were not provided: <KEY>"
        );
        let Err(unknown) = Cli::try_parse_from(["etchctl", "nosuch"]) else {
            panic!("no such command");
        };
        assert_eq!(usage_line(&unknown), "unrecognized subcommand 'nosuch'");
    }

    #[test]
    fn watch_and_lease_verbs_parse() {
        let cli = Cli::try_parse_from(["etchctl", "watch", "/a", "--prefix", "--rev", "3"])
            .expect("watch");
        assert!(matches!(cli.command, Command::Watch(ref w) if w.prefix && w.rev == 3));
        let cli = Cli::try_parse_from(["etchctl", "lease", "keep-alive", "--once", "1f"])
            .expect("keep-alive");
        assert!(matches!(
            cli.command,
            Command::Lease(lease::LeaseCommand::KeepAlive(ref k)) if k.once && k.lease.id == "1f"
        ));
        let cli = Cli::try_parse_from(["etchctl", "lease", "timetolive", "1f", "--keys"])
            .expect("timetolive");
        assert!(matches!(
            cli.command,
            Command::Lease(lease::LeaseCommand::Timetolive(ref t)) if t.keys
        ));
        for verb in [
            &["lease", "grant", "60"][..],
            &["lease", "revoke", "1f"],
            &["lease", "list"],
        ] {
            let args = std::iter::once("etchctl").chain(verb.iter().copied());
            assert!(Cli::try_parse_from(args).is_ok(), "{verb:?}");
        }
    }

    #[test]
    fn global_flags_parse_anywhere() {
        let cli = Cli::try_parse_from([
            "etchctl",
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "-w",
            "json",
            "--command-timeout",
            "1.5s",
        ])
        .expect("parse");
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.global.write_out, print::Format::Json);
        assert_eq!(
            cli.global.command_timeout,
            std::time::Duration::from_millis(1500)
        );
        assert!(Cli::try_parse_from(["etchctl", "--dial-timeout", "5", "get", "k"]).is_err());
        let cli = Cli::try_parse_from(["etchctl", "--max-request-bytes", "4194304", "get", "k"])
            .expect("parse");
        assert_eq!(cli.global.max_request_bytes, 4 << 20);
        // The global --key (a file) and a command's KEY argument do not clash.
        let cli =
            Cli::try_parse_from(["etchctl", "put", "k", "v", "--key", "me.key"]).expect("parse");
        assert_eq!(cli.global.key_file, std::path::PathBuf::from("me.key"));
        assert!(matches!(cli.command, Command::Put(ref p) if p.key == "k"));
    }
}
