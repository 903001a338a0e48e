//! The metrics and health listener (`--listen-metrics`): Prometheus `/metrics` and etcd's
//! `/health`, `/livez` and `/readyz` on their own TCP port, over plain HTTP (meant for
//! loopback or a monitoring network; it serves no keys and takes no writes) or, with an
//! `https://` address, over TLS with the node's certificate (no client certificate asked:
//! scrapers and probes rarely have one).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use etch_host::Node;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How often the recorder's histograms are folded and idle entries swept.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process's Prometheus recorder: from here on, what the node records is kept.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in etch_host::metrics::buckets() {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_owned()), &buckets)
            .with_context(|| format!("buckets of {name}"))?;
    }
    let handle = builder
        .install_recorder()
        .context("installing the metrics recorder")?;
    etch_host::metrics::describe();
    Ok(handle)
}

/// Binds `addr` (before the node starts, so that a port in use stops the start).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener on {addr}"))
}

#[derive(Clone)]
struct Served {
    node: Node,
    metrics: PrometheusHandle,
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the listener until the process ends; over TLS when `https`, with the node's TLS
/// material in force at each handshake (a SIGHUP's new certificate included).
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: Node,
    metrics: PrometheusHandle,
    https: bool,
) {
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(Served {
            node: node.clone(),
            metrics,
        });
    if !https {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
        return;
    }
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor =
            tokio_rustls::TlsAcceptor::from(node.tls().current().metrics_server_config());
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn scrape(State(served): State<Served>) -> impl IntoResponse {
    served.node.refresh_gauges().await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        served.metrics.render(),
    )
}

/// etcd's `/health`: healthy only with a leader and no alarm raised.
async fn health(State(served): State<Served>) -> impl IntoResponse {
    let (status, body) = match served.node.unhealthy() {
        None => (
            StatusCode::OK,
            r#"{"health":"true","reason":""}"#.to_owned(),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"health": "false", "reason": reason}).to_string(),
        ),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// Alive: the process answers (a liveness probe restarts it when this stops answering).
async fn livez() -> &'static str {
    "ok"
}

/// Ready for clients: a leader is known (a readiness probe sends traffic only then).
async fn readyz(State(served): State<Served>) -> (StatusCode, &'static str) {
    match served.node.has_leader() {
        true => (StatusCode::OK, "ok"),
        false => (
            StatusCode::SERVICE_UNAVAILABLE,
            "[-]leader failed: no leader\n",
        ),
    }
}
