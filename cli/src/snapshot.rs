//! `snapshot save | status | restore`, as etcdctl's and etcdutl's.
//!
//! `save` streams a backup from the one endpoint given into `FILE.part`, verifies it whole
//! and renames it to `FILE`; `status` verifies a file and prints what it holds; `restore`
//! verifies it and creates the data directory of a member of a new cluster from it
//! (`etch_host::backup`). `status` and `restore` work offline, on the file alone.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use etch_host::backup::{self, BackupStatus, RestoreTarget};

use crate::context::Context;
use crate::print::Format;
use crate::print::table::{Align, render};

/// `snapshot ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum SnapshotCommand {
    /// Stream a backup of the whole state (keys with their history, leases, plugins, users
    /// and roles) from one endpoint into FILE, while the cluster serves (root only). The
    /// file is written as FILE.part, verified (it ends in a SHA-256 of its content) and
    /// renamed: FILE is always whole.
    Save(SaveArgs),
    /// Verify a backup file (every record and its SHA-256) and print its hash, revision,
    /// total keys and total size.
    Status(StatusArgs),
    /// Create the data directory of a member of a new cluster from a backup (offline, as
    /// etcdutl). Run it once per member with the same --initial-cluster and token, then
    /// start each etchd on its --data-dir with that --name, --initial-cluster and
    /// --initial-cluster-token: they found a new cluster (new cluster id, fresh membership)
    /// holding the backup's keys at its revision.
    Restore(RestoreArgs),
}

#[derive(Args, Clone, Debug)]
pub struct SaveArgs {
    /// Where to write the backup.
    pub file: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct StatusArgs {
    /// The backup file.
    pub file: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    pub file: PathBuf,
    /// The data directory to create; it must not exist or be empty [default: NAME.etch].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This member's name in the new cluster.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The new cluster's founding members, NAME=HOST:PORT of their peer endpoints,
    /// comma-separated [default: NAME=the --initial-advertise-peer-urls address].
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// This member's peer address (host:port); must match its --initial-cluster entry.
    #[arg(long, default_value = "127.0.0.1:7380")]
    pub initial_advertise_peer_urls: String,
    /// The new cluster's token: with the members, it makes the new cluster id.
    #[arg(long, default_value = "etch-cluster")]
    pub initial_cluster_token: String,
}

pub async fn run(ctx: &Context, cmd: &SnapshotCommand) -> Result<()> {
    match cmd {
        SnapshotCommand::Save(args) => save(ctx, args).await,
        SnapshotCommand::Status(args) => {
            let status = backup::verify_file(&args.file)?;
            ctx.print(|p, w| print_status(p.format, w, &status))
        }
        SnapshotCommand::Restore(args) => restore(ctx, args),
    }
}

async fn save(ctx: &Context, args: &SaveArgs) -> Result<()> {
    if ctx.global.endpoints.len() != 1 {
        bail!(
            "snapshot must be requested from one endpoint, not {} (give --endpoints HOST:PORT)",
            ctx.global.endpoints.len()
        );
    }
    let client = ctx.client()?;
    let part = with_suffix(&args.file, ".part");
    let mut file = tokio::fs::File::create(&part)
        .await
        .with_context(|| format!("creating {}", part.display()))?;
    let saved = match client.snapshot(&mut file).await {
        Ok(saved) => saved,
        Err(e) => {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Err(crate::context::with_hint(e));
        }
    };
    file.sync_all()
        .await
        .with_context(|| format!("syncing {}", part.display()))?;
    drop(file);
    let status = match backup::verify_file(&part) {
        Ok(status) => status,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(anyhow::Error::new(e).context("the snapshot received does not verify"));
        }
    };
    std::fs::rename(&part, &args.file)
        .with_context(|| format!("renaming {} to {}", part.display(), args.file.display()))?;
    tracing::debug!(
        revision = saved.revision,
        bytes = saved.bytes,
        "snapshot saved"
    );
    ctx.print(|_, w| {
        writeln!(
            w,
            "Snapshot saved at {} (revision {}, {} keys, {} bytes, from member {:x})",
            args.file.display(),
            status.header.revision,
            status.total_keys,
            status.total_size,
            saved.member_id,
        )
    })
}

fn restore(ctx: &Context, args: &RestoreArgs) -> Result<()> {
    let peer = etch_host::node::strip_scheme(&args.initial_advertise_peer_urls);
    let initial_cluster = match args.initial_cluster.as_deref() {
        Some(text) => etch_host::node::parse_initial_cluster(Some(text))?,
        None => vec![(args.name.clone(), peer.clone())],
    };
    match initial_cluster.iter().find(|(n, _)| *n == args.name) {
        None => bail!(
            "--initial-cluster does not name this member ({})",
            args.name
        ),
        Some((_, addr)) if *addr != peer => bail!(
            "--initial-advertise-peer-urls {peer} is not {}'s --initial-cluster entry ({addr})",
            args.name
        ),
        Some(_) => {}
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etch", args.name)));
    let target = RestoreTarget {
        name: args.name.clone(),
        initial_cluster,
        initial_cluster_token: args.initial_cluster_token.clone(),
    };
    let status = backup::restore(&args.file, &data_dir, &target)?;
    ctx.print(|_, w| {
        writeln!(
            w,
            "Restored revision {} ({} keys) into {} as member {} of a new cluster",
            status.header.revision,
            status.total_keys,
            data_dir.display(),
            args.name,
        )
    })
}

/// etcdctl's three shapes of `snapshot status`.
fn print_status(format: Format, w: &mut dyn Write, s: &BackupStatus) -> std::io::Result<()> {
    match format {
        Format::Simple => writeln!(
            w,
            "{:x}, {}, {}, {}",
            s.short_hash(),
            s.header.revision,
            s.total_keys,
            s.total_size
        ),
        Format::Json => {
            let json = serde_json::json!({
                "hash": s.short_hash(),
                "revision": s.header.revision,
                "totalKey": s.total_keys,
                "totalSize": s.total_size,
                "sha256": s.hex_hash(),
                "memberID": s.header.member_id,
                "clusterID": s.header.cluster_id,
            });
            writeln!(w, "{json}")
        }
        Format::Table => {
            let row = vec![
                format!("{:x}", s.short_hash()),
                s.header.revision.to_string(),
                s.total_keys.to_string(),
                s.total_size.to_string(),
            ];
            let table = render(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &[row],
                Align::Left,
            );
            write!(w, "{table}")
        }
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
