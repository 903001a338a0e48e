//! Fault injection for integration tests: real `etchd` processes killed, paused and
//! partitioned while SDK clients work, and the recorded history checked afterwards.
//!
//! A scenario ([`scenario::run`]) starts a fresh three-node [`FaultCluster`] whose peer
//! traffic runs through UDP proxies ([`Net`]), so links between chosen nodes can be cut
//! or slowed without touching the host's network. A [`Workload`] of a dozen SDK clients
//! (three per key, four keys) runs put / get / delete / CAS, each operation recorded in a
//! [`crate::history::History`], while two SDK watchers ([`Recorder`]) record what they
//! receive. Faults come one after another ([`Fault`]): kill -9 and restart of the leader or
//! a follower, SIGSTOP past an election timeout, a leader or follower cut off from the
//! others, one link cut, a slow node, a rolling restart, a member added and another
//! removed, and hostile clients, stalled watchers and a looping plugin beside the workload
//! ([`hostile`]). After each, the test waits for writes to be acknowledged again.
//!
//! Then the clients stop, read every key once more, and the checks run:
//! - every member has applied the same log and holds the same data at the same revision
//!   ([`FaultCluster::converge`]), and replays the same events from revision 1;
//! - the history is linearizable (a checker that runs out of budget fails the test);
//! - every acknowledged write is committed where the client was told, nothing a client was
//!   told failed was committed, and the data is what the committed events add up to;
//! - both watchers' streams keep etcd's watch guarantees against the committed events.
//!
//! A seed ([`seed::seed`], `ETCH_FAULT_SEED` to replay) drives every choice; a failure
//! names it with the command that replays it, and keeps the node logs.

mod check;
mod cluster;
mod hostile;
mod proxy;
pub mod scenario;
pub mod seed;
mod watcher;
mod workload;

pub use cluster::FaultCluster;
pub use hostile::HOSTILE_PREFIX;
pub use proxy::Net;
pub use scenario::{Fault, Figures};
pub use watcher::Recorder;
pub use workload::Workload;
