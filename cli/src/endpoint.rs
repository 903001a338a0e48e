//! `endpoint status` and `endpoint health`: each endpoint asked on its own connection.
//!
//! `--cluster` asks the cluster for its members (`MemberList`) and checks each member's
//! client address instead of the endpoints given with `--endpoints`.

use std::io;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use etch_client::proto::{Error as ServerError, Request, Response};
use etch_client::{Client, Error};
use tokio::task::JoinSet;

use crate::context::{Context, error_line, with_hint};
use crate::duration;
use crate::print::{EndpointHealth, EndpointStatus};

/// `endpoint ...`.
#[derive(Subcommand, Clone, Debug)]
pub enum EndpointCommand {
    /// Print each endpoint's status: member ID, version, database size, whether it leads,
    /// Raft term and indexes, errors.
    Status(ClusterArgs),
    /// Check that each endpoint can serve a linearizable read of key "health" (a round of
    /// consensus); exits non-zero if any cannot.
    Health(ClusterArgs),
}

#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Check every member of the cluster (as listed by the cluster) instead of the
    /// endpoints given with --endpoints.
    #[arg(long)]
    pub cluster: bool,
}

pub async fn run(ctx: &Context, cmd: &EndpointCommand) -> Result<()> {
    match cmd {
        EndpointCommand::Status(args) => status(ctx, &endpoints(ctx, args).await?).await,
        EndpointCommand::Health(args) => health(ctx, &endpoints(ctx, args).await?).await,
    }
}

/// The endpoints to check: the global ones, or with `--cluster` the members' client
/// addresses.
async fn endpoints(ctx: &Context, args: &ClusterArgs) -> Result<Vec<String>> {
    if !args.cluster {
        return Ok(ctx.global.endpoints.clone());
    }
    let client = ctx.client().await?;
    let answer = client
        .request(Request::MemberList(Default::default()))
        .await
        .context("listing the cluster's members (for --cluster)")?;
    match answer {
        Response::MemberList(list) => {
            let endpoints: Vec<String> = list
                .members
                .into_iter()
                .map(|m| m.client_addr)
                .filter(|a| !a.is_empty())
                .collect();
            if endpoints.is_empty() {
                bail!("the cluster lists no member with a client address yet");
            }
            Ok(endpoints)
        }
        other => bail!("unexpected response to a member list: {other:?}"),
    }
}

/// Runs `f` against every endpoint at once, each with its own client (connected within the
/// dial timeout); results in the order of the endpoints.
async fn each_endpoint<T, F, Fut>(
    ctx: &Context,
    endpoints: &[String],
    f: F,
) -> Result<Vec<(String, T)>>
where
    T: Send + 'static,
    F: Fn(Result<Client, Error>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let opts = ctx.options(vec![endpoint.clone()]);
        // Bad options (a missing certificate file) are the same for every endpoint: fail once.
        if let Err(e @ (Error::Tls(_) | Error::InvalidEndpoint { .. })) = Client::new(opts.clone())
        {
            return Err(with_hint(e));
        }
        let f = f.clone();
        tasks.spawn(async move { (i, f(Client::connect(opts).await).await) });
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
        |client| async move { client?.status().await },
    )
    .await?;
    let mut statuses = Vec::new();
    let mut failed = 0;
    for (endpoint, result) in results {
        match result {
            Ok(status) => statuses.push(EndpointStatus { endpoint, status }),
            Err(e) => {
                failed += 1;
                eprintln!(
                    "Failed to get the status of endpoint {endpoint} ({})",
                    error_line(&e.into())
                );
            }
        }
    }
    ctx.print(|p, w| p.status(w, &statuses))?;
    if failed > 0 {
        bail!("failed to get the status of {failed} endpoint(s)");
    }
    Ok(())
}

async fn health(ctx: &Context, endpoints: &[String]) -> Result<()> {
    let results = each_endpoint(ctx, endpoints, |client| async move {
        let start = Instant::now();
        let result = match client {
            Ok(client) => client.get("health").await.map(drop),
            Err(e) => Err(e),
        };
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
