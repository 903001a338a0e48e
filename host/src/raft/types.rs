//! The openraft type configuration and what the log carries.

use std::fmt;

use etch_proto::Mutation;
use etch_proto::limits::mutation_bytes;
use serde::{Deserialize, Serialize};

use super::snapshot::SnapshotData;
use crate::NodeId;

/// What a Raft log entry asks the state machine to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A change of the key space, the leases, the users and roles or the alarms.
    Kv(Mutation),
    /// The leader found lease `id` past its deadline: revoke it (delete its keys at one
    /// revision). Applied exactly like a revoke; a lease already gone is a no-op failure.
    LeaseExpire { id: etch_proto::LeaseId },
    /// A Put, DeleteRange or Txn judged by validator plugins on the leader: applied only if
    /// nothing `guard` records (bindings version, read set) changed since; otherwise it
    /// fails with `Conflict` and the leader validates it again (see `crate::mvcc::Guard`).
    Write {
        request: Mutation,
        guard: crate::mvcc::Guard,
    },
    /// Stores a plugin component (by sha256) and binds it, replacing a binding of that name.
    PluginInstall(etch_proto::plugin::PluginInstallRequest),
    /// Removes a plugin binding (and its component once unused).
    PluginRemove { name: String },
    /// Several [`Command::batchable`] commands that reached the leader together, applied in
    /// order as if each were its own entry: each gets its own revision and its own answer
    /// (see `crate::node::proposer`). Never nested.
    Batch(Vec<Command>),
    /// `command`, authorized on the leader at auth revision `auth_revision`: applied only
    /// if the auth revision is still that one, otherwise it fails with `Conflict` and the
    /// leader checks it again (see `crate::auth`). Wraps one command, never a batch or
    /// another `Authorized`.
    Authorized {
        auth_revision: u64,
        command: Box<Command>,
    },
    /// A Put, DeleteRange or Txn its client named `id`: applied at most once per id; a
    /// second time it answers what the first did (see `crate::mvcc` sessions). May be
    /// wrapped by `Authorized` or sit in a `Batch`; wraps no command (decoding never
    /// recurses through it).
    Once {
        id: crate::mvcc::RequestId,
        write: Named,
    },
    /// The leader's periodic clean-up: forget the clients last seen before `before_ms` (ms
    /// since the Unix epoch, the leader's clock), a bounded number per entry.
    SessionsExpire { before_ms: u64 },
}

/// The write a [`Command::Once`] names: as [`Command::Kv`] or as [`Command::Write`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Named {
    Kv(Mutation),
    Write {
        request: Mutation,
        guard: crate::mvcc::Guard,
    },
}

impl Named {
    /// The write's request.
    pub fn request(&self) -> &Mutation {
        match self {
            Named::Kv(request) | Named::Write { request, .. } => request,
        }
    }
}

impl Command {
    /// Whether this command may share an entry with others: the key-space writes. Plugin
    /// changes (which compile on apply) and batches themselves travel alone.
    pub fn batchable(&self) -> bool {
        match self {
            Command::Kv(_) | Command::LeaseExpire { .. } | Command::Write { .. } => true,
            Command::Authorized { command, .. } => command.batchable(),
            Command::Once { .. } | Command::SessionsExpire { .. } => true,
            Command::PluginInstall(_) | Command::PluginRemove { .. } | Command::Batch(_) => false,
        }
    }

    /// Roughly how many bytes this command takes in the log (keys and values; a fixed
    /// allowance for the rest), to bound the size of a batch.
    pub fn approx_size(&self) -> usize {
        const OVERHEAD: usize = 64;
        match self {
            Command::Kv(req) => OVERHEAD + mutation_bytes(req),
            Command::Write { request, guard } => OVERHEAD + mutation_bytes(request) + guard.bytes(),
            Command::LeaseExpire { .. }
            | Command::PluginRemove { .. }
            | Command::SessionsExpire { .. } => OVERHEAD,
            Command::PluginInstall(req) => OVERHEAD + req.wasm.len(),
            Command::Batch(commands) => commands.iter().map(Command::approx_size).sum(),
            Command::Authorized { command, .. } => OVERHEAD + command.approx_size(),
            Command::Once { write, .. } => match write {
                Named::Kv(req) => 2 * OVERHEAD + mutation_bytes(req),
                Named::Write { request, guard } => {
                    2 * OVERHEAD + mutation_bytes(request) + guard.bytes()
                }
            },
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Kv(req) => write!(f, "kv({})", req.kind()),
            Command::LeaseExpire { id } => write!(f, "lease-expire({id:x})"),
            Command::Write { request, guard } => write!(
                f,
                "write({}, bindings v{}, {} reads)",
                request.kind(),
                guard.bindings_version,
                guard.reads.len()
            ),
            Command::PluginInstall(req) => write!(f, "plugin-install({})", req.binding.name),
            Command::PluginRemove { name } => write!(f, "plugin-remove({name})"),
            Command::Batch(commands) => write!(f, "batch({} commands)", commands.len()),
            Command::Authorized {
                auth_revision,
                command,
            } => write!(f, "authorized(auth v{auth_revision}, {command})"),
            Command::Once { id, write } => write!(
                f,
                "once(client {:x} #{}, {})",
                id.client,
                id.seq,
                write.request().kind()
            ),
            Command::SessionsExpire { before_ms } => write!(f, "sessions-expire(<{before_ms})"),
        }
    }
}

/// The outcome of applying a [`Command`]: the client's answer, or its deterministic failure.
pub type CommandResult = Result<etch_proto::Response, etch_proto::Error>;

/// What applying one entry produced: nothing for a blank or membership entry, one answer for
/// a command, one per command (in order) for a [`Command::Batch`].
pub type Applied = Vec<CommandResult>;

/// A cluster member as Raft membership records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name (`--name`).
    pub name: String,
    /// Where its peer endpoint listens (host:port).
    pub peer_addr: String,
    /// Where its client endpoint listens (host:port), told to clients sent elsewhere.
    pub client_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}(peer {}, client {})",
            self.name, self.peer_addr, self.client_addr
        )
    }
}

openraft::declare_raft_types!(
    /// etch's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = SnapshotData,
);

/// The Raft handle of a node.
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Entry = openraft::Entry<TypeConfig>;
