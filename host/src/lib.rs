//! etch-host: one etch node as a library, and the `etchd` binary around it.
//!
//! Start reading at [`node`]: [`node::Node::start`] opens the fjall database, starts Raft
//! and the client endpoint, and [`node::Node::handle`] is where every client request is
//! decided: writes go through Raft, reads are served from the local MVCC state after a
//! read-index round (linearizable) or at once (serializable).
//!
//! - [`mvcc`]: the revisioned key space (put / range / delete / txn / compact, history).
//! - [`plugin`]: WebAssembly validator plugins: the engine, limits, and the gate before
//!   `propose`.
//! - [`raft`]: openraft glue: the fjall log store, the state machine, snapshots, the network.
//! - [`server`]: the QUIC client endpoint: mutual TLS, framing, dispatch.
//!
//! The library never reads flags, the environment or files of its own accord: the binary
//! (`src/bin/etchd`) turns those into [`node::NodeOptions`] and installs the log subscriber.

pub mod auth;
pub mod backup;
pub mod data_dir;
pub mod failpoint;
pub mod lease;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod plugin;
pub mod raft;
pub mod server;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod verify;
pub mod watch;

/// A Raft node id (etcd's member id), derived from the node's name.
pub type NodeId = u64;

pub use node::{Node, NodeOptions};

/// Background threads (memtable flushes and compactions) per fjall database. One, because
/// with two or more fjall's first worker re-queues every compaction request for the others
/// and takes it straight back while they work: it spins a core for as long as a compaction
/// runs (measured: a fifth of all CPU during put100, `fjall::worker_pool::worker_tick` and
/// `flume::Shared::send` at the top of the profile).
pub(crate) const FJALL_WORKERS: usize = 1;

/// How every fjall keyspace of a node is created (the log's and the state machine's).
///
/// - 2 MiB memtables instead of fjall's 64 MiB: etch keeps modest state, and a node's memory
///   should stay small (BENCHMARKS.md, RSS).
/// - Leveled compaction starts merging level 0 at 8 tables instead of 4: with small
///   memtables every merge into level 1 rewrites most of it, so waiting for twice as much
///   halves that work. put100 at twice the suite's length (`etch-bench suite --workloads
///   put100 --scale 2`): 17.1-18.3 k req/s at 4, 18.4-19.3 k at 8, 18.7-19.8 k at 16; gets
///   did not move. fjall records the strategy when it creates a keyspace, so this applies to
///   keyspaces created from now on.
pub(crate) fn keyspace_options() -> fjall::KeyspaceCreateOptions {
    fjall::KeyspaceCreateOptions::default()
        .max_memtable_size(2 * 1024 * 1024)
        .compaction_strategy(std::sync::Arc::new(
            fjall::compaction::Leveled::default().with_l0_threshold(8),
        ))
}

/// Derives a node id from a node name (FNV-1a, never 0), so that every member computes the
/// same ids from the same `--initial-cluster`.
pub fn node_id(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}
