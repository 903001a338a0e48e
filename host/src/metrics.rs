//! The node's metrics, under etcd's names where the meaning is the same (so that etcd's
//! dashboards and alerts work), and etch's own (`etch_*`) for plugins.
//!
//! Code records through the `metrics` facade: without a recorder (a library user, the
//! in-process tests) every call is a no-op. `etchd --listen-metrics` installs the
//! Prometheus recorder and serves it ([`crate::http`]); gauges that are cheap to read but
//! costly to keep current (database size, key count, resident memory) are set when a
//! scrape asks ([`crate::Node::refresh_gauges`]).

use std::time::Duration;

use etch_proto::{Error, Request};

pub const HAS_LEADER: &str = "etcd_server_has_leader";
pub const IS_LEADER: &str = "etcd_server_is_leader";
pub const LEADER_CHANGES: &str = "etcd_server_leader_changes_seen_total";
pub const PROPOSALS_COMMITTED: &str = "etcd_server_proposals_committed_total";
pub const PROPOSALS_APPLIED: &str = "etcd_server_proposals_applied_total";
pub const PROPOSALS_PENDING: &str = "etcd_server_proposals_pending";
pub const PROPOSALS_FAILED: &str = "etcd_server_proposals_failed_total";
pub const WAL_FSYNC: &str = "etcd_disk_wal_fsync_duration_seconds";
pub const DB_SIZE: &str = "etcd_mvcc_db_total_size_in_bytes";
pub const QUOTA: &str = "etcd_server_quota_backend_bytes";
pub const KEYS: &str = "etcd_debugging_mvcc_keys_total";
pub const PEER_RTT: &str = "etcd_network_peer_round_trip_time_seconds";
pub const WATCH_STREAMS: &str = "etcd_debugging_mvcc_watch_stream_total";
pub const WATCHERS: &str = "etcd_debugging_mvcc_watcher_total";
pub const LEASES_GRANTED: &str = "etcd_debugging_lease_granted_total";
pub const LEASES_REVOKED: &str = "etcd_debugging_lease_revoked_total";
pub const LEASES_RENEWED: &str = "etcd_debugging_lease_renewed_total";
pub const REQUESTS_STARTED: &str = "grpc_server_started_total";
pub const REQUESTS_HANDLED: &str = "grpc_server_handled_total";
pub const REQUEST_SECONDS: &str = "grpc_server_handling_seconds";
pub const RSS: &str = "process_resident_memory_bytes";
pub const DISK_FREE: &str = "etch_disk_free_bytes";
pub const FORWARDED: &str = "etch_server_forwarded_requests_total";
pub const PLUGIN_CALLS: &str = "etch_plugin_calls_total";
pub const PLUGIN_FAILURES: &str = "etch_plugin_failures_total";
pub const PLUGIN_FUEL: &str = "etch_plugin_fuel_consumed_total";
pub const PLUGIN_SECONDS: &str = "etch_plugin_call_duration_seconds";

/// Histogram buckets, in seconds, by metric (etcd's where it has them).
pub fn buckets() -> [(&'static str, Vec<f64>); 4] {
    let exponential = |start: f64, factor: f64, n: i32| -> Vec<f64> {
        (0..n).map(|i| start * factor.powi(i)).collect()
    };
    [
        // etcd: prometheus.ExponentialBuckets(0.001, 2, 14)
        (WAL_FSYNC, exponential(0.001, 2.0, 14)),
        // etcd: prometheus.ExponentialBuckets(0.0001, 2, 16)
        (PEER_RTT, exponential(0.0001, 2.0, 16)),
        // go-grpc-prometheus's defaults
        (
            REQUEST_SECONDS,
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        ),
        (PLUGIN_SECONDS, exponential(0.0001, 4.0, 10)),
    ]
}

/// Describes every metric once the recorder is installed (the `# HELP` lines).
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        HAS_LEADER,
        "Whether or not a leader exists. 1 is existence, 0 is not."
    );
    describe_gauge!(
        IS_LEADER,
        "Whether or not this member is a leader. 1 if is, 0 otherwise."
    );
    describe_counter!(LEADER_CHANGES, "The number of leader changes seen.");
    describe_gauge!(
        PROPOSALS_COMMITTED,
        "The index of the last committed Raft entry."
    );
    describe_gauge!(
        PROPOSALS_APPLIED,
        "The index of the last applied Raft entry."
    );
    describe_gauge!(
        PROPOSALS_PENDING,
        "The number of pending proposals to commit."
    );
    describe_counter!(
        PROPOSALS_FAILED,
        "The total number of failed proposals seen."
    );
    describe_histogram!(
        WAL_FSYNC,
        Unit::Seconds,
        "The latency distributions of fsync called by the Raft log."
    );
    describe_gauge!(
        DB_SIZE,
        Unit::Bytes,
        "Total size of the underlying database physically allocated in bytes."
    );
    describe_gauge!(KEYS, "Total number of keys.");
    describe_gauge!(
        DISK_FREE,
        Unit::Bytes,
        "Bytes still free for etchd on the filesystem of its data dir."
    );
    describe_gauge!(
        QUOTA,
        Unit::Bytes,
        "Current backend storage quota size in bytes."
    );
    describe_histogram!(
        PEER_RTT,
        Unit::Seconds,
        "Round-trip-time histogram between peers (heartbeats)."
    );
    describe_gauge!(WATCH_STREAMS, "Total number of watch streams.");
    describe_gauge!(WATCHERS, "Total number of watchers.");
    describe_counter!(
        LEASES_GRANTED,
        "The total number of granted leases (through this member)."
    );
    describe_counter!(
        LEASES_REVOKED,
        "The total number of revoked leases (through this member)."
    );
    describe_counter!(
        LEASES_RENEWED,
        "The number of renewed leases seen by this member."
    );
    describe_counter!(
        REQUESTS_STARTED,
        "Total number of requests started on the server."
    );
    describe_counter!(
        REQUESTS_HANDLED,
        "Total number of requests completed on the server, regardless of success or failure."
    );
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Histogram of response latency of requests handled by the server."
    );
    describe_gauge!(RSS, Unit::Bytes, "Resident memory size in bytes.");
    describe_counter!(
        PLUGIN_CALLS,
        "Plugin calls, by binding, hook and outcome (allowed, denied, failed)."
    );
    describe_counter!(
        PLUGIN_FAILURES,
        "Failed plugin calls, by binding and cause (trap, fuel, deadline, memory, ...)."
    );
    describe_counter!(PLUGIN_FUEL, "Fuel consumed by plugin calls, by binding.");
    describe_counter!(
        FORWARDED,
        "Requests followers handed to this node, the leader, by gRPC service and method."
    );
    describe_histogram!(
        PLUGIN_SECONDS,
        Unit::Seconds,
        "Duration of plugin calls, by binding."
    );
}

/// Counts a client request received (before it is handled).
pub fn request_started(request: &Request) {
    let (service, method) = request.method();
    metrics::counter!(REQUESTS_STARTED, "grpc_type" => kind(request), "grpc_service" => service, "grpc_method" => method)
        .increment(1);
}

/// Counts a client request answered, with its outcome and how long it took.
pub fn request_handled(
    request: (&'static str, &'static str, &'static str),
    result: Result<(), &Error>,
    took: Duration,
) {
    let (kind, service, method) = request;
    let code = result.map_or_else(Error::grpc_code, |()| "OK");
    metrics::counter!(REQUESTS_HANDLED, "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method, "grpc_code" => code)
        .increment(1);
    metrics::histogram!(REQUEST_SECONDS, "grpc_type" => kind, "grpc_service" => service, "grpc_method" => method)
        .record(took.as_secs_f64());
    if result.is_ok() {
        match method {
            "LeaseGrant" => metrics::counter!(LEASES_GRANTED).increment(1),
            "LeaseRevoke" => metrics::counter!(LEASES_REVOKED).increment(1),
            "LeaseKeepAlive" => metrics::counter!(LEASES_RENEWED).increment(1),
            _ => {}
        }
    }
}

/// go-grpc-prometheus's `grpc_type` of a request: streams for watches and keep-alives.
pub fn kind(request: &Request) -> &'static str {
    match request {
        Request::Watch(_) | Request::LeaseKeepAlive(_) => "bidi_stream",
        _ => "unary",
    }
}

/// The labels [`request_handled`] takes, read before the request is consumed.
pub fn labels(request: &Request) -> (&'static str, &'static str, &'static str) {
    let (service, method) = request.method();
    (kind(request), service, method)
}

/// Counts a request a follower forwarded to this node.
pub fn forwarded(request: &Request) {
    let (service, method) = request.method();
    metrics::counter!(FORWARDED, "grpc_service" => service, "grpc_method" => method).increment(1);
}

/// Records one plugin call: `outcome` is allowed, denied or failed (with its cause).
pub fn plugin_call(
    binding: &str,
    hook: &'static str,
    outcome: &'static str,
    cause: Option<&'static str>,
    took: Duration,
) {
    let binding = binding.to_owned();
    metrics::counter!(PLUGIN_CALLS, "binding" => binding.clone(), "hook" => hook, "outcome" => outcome)
        .increment(1);
    if let Some(cause) = cause {
        metrics::counter!(PLUGIN_FAILURES, "binding" => binding.clone(), "cause" => cause)
            .increment(1);
    }
    metrics::histogram!(PLUGIN_SECONDS, "binding" => binding).record(took.as_secs_f64());
}

/// Records the fuel one plugin call consumed.
pub fn plugin_fuel(binding: &str, fuel: u64) {
    metrics::counter!(PLUGIN_FUEL, "binding" => binding.to_owned()).increment(fuel);
}

/// The process's resident memory in bytes (Linux: `/proc/self/statm`), if known.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
