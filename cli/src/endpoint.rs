//! `endpoint status`, `endpoint health` and `endpoint hashkv`: each endpoint asked on its own
//! connection.
//!
//! `--cluster` asks the cluster for its members (`MemberList`) and checks each member's
//! client address instead of the endpoints given with `--endpoints`.

use std::io;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use etch_client::proto::Error as ServerError;
use etch_client::{Client, Error, Member};
use tokio::task::JoinSet;

use crate::context::{Context, error_line, with_hint};
use crate::duration;
use crate::print::{EndpointHash, EndpointHealth, EndpointStatus};

/// `endpoint ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum EndpointCommand {
    /// Print each endpoint's status: member ID, version, database size, whether it leads,
    /// Raft term and indexes, errors.
    Status(ClusterArgs),
    /// Check that each endpoint can serve a linearizable read of key "health" (a round of
    /// consensus); exits non-zero if any cannot.
    Health(ClusterArgs),
    /// Print each endpoint's hash of its key history (every key version up to a revision),
    /// as etcd's HashKV: members that applied the same log print the same hash at the same
    /// revision. Exits non-zero if an endpoint cannot answer.
    Hashkv(HashArgs),
}

#[derive(Args, Clone, Debug)]
pub struct HashArgs {
    /// Hash the history up to this revision; 0 means each endpoint's current revision
    /// (give one revision to compare members that are still applying).
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Check every member of the cluster (as listed by the cluster) instead of the
    /// endpoints given with --endpoints. Members not started yet (no client address) are
    /// skipped, with a note on standard error.
    #[arg(long)]
    pub cluster: bool,
}

pub async fn run(ctx: &Context, cmd: &EndpointCommand) -> Result<()> {
    match cmd {
        EndpointCommand::Status(args) => status(ctx, &endpoints(ctx, args).await?).await,
        EndpointCommand::Health(args) => health(ctx, &endpoints(ctx, args).await?).await,
        EndpointCommand::Hashkv(args) => {
            hash_kv(ctx, &endpoints(ctx, &args.cluster).await?, args.rev).await
        }
    }
}

/// The endpoints to check: the global ones, or with `--cluster` the members' client
/// addresses.
pub(crate) async fn endpoints(ctx: &Context, args: &ClusterArgs) -> Result<Vec<String>> {
    if !args.cluster {
        return Ok(ctx.global.endpoints.clone());
    }
    let list = ctx
        .client()?
        .member_list()
        .await
        .context("listing the cluster's members (for --cluster)")?;
    let (endpoints, unstarted) = client_addrs(&list.members);
    for m in unstarted {
        eprintln!(
            "Skipping member {:x} ({}): unstarted, no client address yet",
            m.id, m.name
        );
    }
    if endpoints.is_empty() {
        bail!("the cluster lists no member with a client address yet");
    }
    Ok(endpoints)
}

/// The members' client addresses, and the members that have none: added but not heard from
/// (etcdctl's `--cluster` skips those silently).
fn client_addrs(members: &[Member]) -> (Vec<String>, Vec<&Member>) {
    let (started, unstarted): (Vec<&Member>, Vec<&Member>) =
        members.iter().partition(|m| !m.client_addr.is_empty());
    let addrs = started.iter().map(|m| m.client_addr.clone()).collect();
    (addrs, unstarted)
}

/// Runs `f` against every endpoint at once, each with its own client (connecting within
/// the request's timeout); results in the order of the endpoints.
pub(crate) async fn each_endpoint<T, F, Fut>(
    ctx: &Context,
    endpoints: &[String],
    f: F,
) -> Result<Vec<(String, T)>>
where
    T: Send + 'static,
    F: Fn(Client) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    let budget = ctx.budget();
    for (i, endpoint) in endpoints.iter().enumerate() {
        // Only bad options fail here (a missing certificate file, an unparsable address):
        // fail the command once rather than report them per endpoint.
        let client =
            Client::new(ctx.options_within(vec![endpoint.clone()], budget)).map_err(with_hint)?;
        let f = f.clone();
        tasks.spawn(async move { (i, f(client).await) });
    }
    let mut results = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        results.push(joined?);
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results
        .into_iter()
        .map(|(i, t)| (endpoints[i].clone(), t))
        .collect())
}

async fn status(ctx: &Context, endpoints: &[String]) -> Result<()> {
    let results = each_endpoint(
        ctx,
        endpoints,
        |client| async move { client.status().await },
    )
    .await?;
    let (answers, failed) = answers(results, "status");
    let statuses: Vec<EndpointStatus> = (answers.into_iter())
        .map(|(endpoint, status)| EndpointStatus { endpoint, status })
        .collect();
    ctx.print(|p, w| p.status(w, &statuses))?;
    if failed > 0 {
        bail!("failed to get the status of {failed} endpoint(s)");
    }
    Ok(())
}

/// The endpoints that answered, and how many did not (each named on stderr, with `what`
/// was asked).
fn answers<T>(
    results: Vec<(String, etch_client::Result<T>)>,
    what: &str,
) -> (Vec<(String, T)>, usize) {
    let mut answered = Vec::new();
    let mut failed = 0;
    for (endpoint, result) in results {
        match result {
            Ok(answer) => answered.push((endpoint, answer)),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "Failed to get the {what} of endpoint {endpoint} ({})",
                    error_line(&e.into())
                );
            }
        }
    }
    (answered, failed)
}

async fn hash_kv(ctx: &Context, endpoints: &[String], rev: i64) -> Result<()> {
    let results = each_endpoint(ctx, endpoints, move |client| async move {
        client.hash_kv(rev).await
    })
    .await?;
    let (answers, failed) = answers(results, "hash");
    let hashes: Vec<EndpointHash> = (answers.into_iter())
        .map(|(endpoint, hash)| EndpointHash { endpoint, hash })
        .collect();
    ctx.print(|p, w| p.hash_kv(w, &hashes))?;
    if failed > 0 {
        bail!("failed to get the hash of {failed} endpoint(s)");
    }
    Ok(())
}

async fn health(ctx: &Context, endpoints: &[String]) -> Result<()> {
    let results = each_endpoint(ctx, endpoints, |client| async move {
        let start = Instant::now();
        let result = client.get("health").await.map(drop);
        (start.elapsed(), result)
    })
    .await?;
    let health: Vec<EndpointHealth> = results
        .into_iter()
        .map(|(endpoint, (took, result))| {
            // As in etcdctl: permission denied still means the proposal went through.
            let error = match result {
                Ok(()) | Err(Error::Server(ServerError::PermissionDenied(_))) => String::new(),
                Err(e) => error_line(&e.into()),
            };
            EndpointHealth {
                endpoint,
                healthy: error.is_empty(),
                took: duration::format(took),
                error,
            }
        })
        .collect();
    let mut err = io::stderr();
    ctx.print(|p, w| p.health(w, &mut err, &health))?;
    if health.iter().any(|h| !h.healthy) {
        bail!("unhealthy cluster");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_endpoints_skip_unstarted_members() {
        let member = |id, name: &str, client: &str| Member {
            id,
            name: name.into(),
            peer_addr: format!("{name}:7380"),
            client_addr: client.into(),
            is_learner: false,
        };
        let members = [
            member(1, "n1", "n1:7379"),
            member(2, "n2", ""),
            member(3, "n3", "n3:7379"),
        ];
        let (addrs, unstarted) = client_addrs(&members);
        assert_eq!(addrs, ["n1:7379", "n3:7379"]);
        assert_eq!(unstarted, [&members[1]]);
    }
}
