//! Plugin management: install, list and remove WebAssembly plugins and their bindings.
//!
//! A [`PluginBinding`] ties one uploaded component (stored once, by sha256) to a key prefix
//! and a hook, with the settings the plugin reads (`config`), its [`PluginLimits`], what a
//! plugin failure does ([`FailurePolicy`]) and whether a refusal is enforced or only
//! recorded ([`PluginMode`]). Installing under an existing name replaces that binding.
//! Bindings are replicated state: every change goes through the Raft log.

use serde::{Deserialize, Serialize};

use crate::message::ResponseHeader;
use crate::types::Revision;

/// When a plugin runs. New hooks are only appended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PluginHook {
    /// Before a write touching the prefix is proposed (world `validator`).
    #[default]
    Validate,
    /// After changes under the prefix commit, on the leader, in batches (world `reactor`).
    React,
}

impl PluginHook {
    /// The hook's name as `etchctl` spells it.
    pub fn name(self) -> &'static str {
        match self {
            PluginHook::Validate => "validate",
            PluginHook::React => "react",
        }
    }
}

/// Whether a refusal rejects the write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginMode {
    /// A refusal (or a failure under `FailClosed`) rejects the write.
    #[default]
    Enforce,
    /// Refusals and failures are logged and counted, and the write goes ahead.
    Audit,
}

/// What a plugin failure (trap, fuel, deadline, memory, `err`) does: for a validator, to
/// the write it judged; for a reactor, to the batch it failed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailurePolicy {
    /// A validator's write is rejected with `PluginFailed`; a reactor's batch is retried
    /// with a backoff until it succeeds (or the binding is reset or removed).
    #[default]
    FailClosed,
    /// Validators only: the failure is logged and counted, and the write goes ahead.
    FailOpen,
    /// Reactors only: after `after` failures of one batch in a row the reactor is parked
    /// (`plugin list` shows `parked` and the last error) and not called again until
    /// `plugin reset` moves its checkpoint (or the binding is installed again).
    Park { after: u32 },
}

/// Per-call limits of a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLimits {
    /// WebAssembly fuel (about one unit per instruction) [default: 50,000,000].
    pub fuel: u64,
    /// Deadline of one call, in milliseconds of its CPU time [default: 200] (a call starved
    /// of CPU also ends after ten times as long in wall time, at most 2.5 s or the deadline).
    pub timeout_ms: u64,
    /// Largest linear memory, in MiB [default: 32].
    pub memory_mb: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            fuel: 50_000_000,
            timeout_ms: 200,
            memory_mb: 32,
        }
    }
}

/// One binding of a plugin to a key prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginBinding {
    /// Unique name of the binding; the plugin is known by it in errors and listings.
    pub name: String,
    /// The binding applies to writes touching a key that starts with this prefix (an empty
    /// prefix: every key).
    #[serde(with = "serde_bytes")]
    pub prefix: Vec<u8>,
    pub hook: PluginHook,
    /// Settings the plugin reads through its `config` import, in name order.
    pub config: Vec<(String, String)>,
    pub limits: PluginLimits,
    pub mode: PluginMode,
    pub on_error: FailurePolicy,
}

/// Uploads a component and binds it (replacing a binding of the same name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInstallRequest {
    pub binding: PluginBinding,
    /// The component's bytes.
    #[serde(with = "serde_bytes")]
    pub wasm: Vec<u8>,
    /// The user installing it: set by the leader to the principal that asked (what a
    /// client sends here is replaced). A reactor's writes have this user's rights.
    pub installed_by: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInstallResponse {
    pub header: ResponseHeader,
    /// The component's sha256, in hex.
    pub sha256: String,
    /// Whether a binding of that name was replaced.
    pub replaced: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginListRequest {}

/// One installed binding, as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub binding: PluginBinding,
    /// The component's sha256, in hex.
    pub sha256: String,
    /// The component's size in bytes.
    pub size: u64,
    /// Calls on the answering node (the leader) since it started leading.
    pub calls: u64,
    /// Refusals on that node, enforced or (in audit mode) only recorded.
    pub denials: u64,
    /// Failures (trap, fuel, deadline, memory; for a reactor also an `err` result or a write
    /// that did not commit) on that node.
    pub failures: u64,
    /// For a reactor: the last revision it has processed, as its checkpoint key records it
    /// (0 before its first batch). 0 for a validator.
    pub checkpoint: Revision,
    /// For a reactor: why its last batch failed, empty if it did not.
    pub last_error: String,
    /// How the binding stands on the answering node.
    pub status: PluginStatus,
}

/// How a binding stands, as `plugin list` shows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PluginStatus {
    /// Serving: its last call (if any) succeeded, or it is a validator.
    #[default]
    Ok,
    /// A reactor whose last batch failed (`last_error` says why); it is retried with a
    /// backoff.
    Retrying,
    /// A reactor that cannot go on: its next revision holds more than one call can take
    /// (`last_error` says how much). Removing and installing the binding again resumes it
    /// after the new install.
    Stalled,
    /// A reactor parked by its `Park` policy after its batch failed too often in a row
    /// (`last_error` says why); `plugin reset` moves it on.
    Parked,
}

impl PluginStatus {
    /// The status as `etchctl` spells it.
    pub fn name(self) -> &'static str {
        match self {
            PluginStatus::Ok => "ok",
            PluginStatus::Retrying => "retrying",
            PluginStatus::Stalled => "stalled",
            PluginStatus::Parked => "parked",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginListResponse {
    pub header: ResponseHeader,
    pub plugins: Vec<PluginInfo>,
    /// Advances with every binding change.
    pub bindings_version: u64,
}

/// Moves reactor `name`'s checkpoint to `revision` (root only): it goes on with the
/// changes after it, skipping (or, backwards, repeating) what lies between. A parked
/// reactor is unparked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginResetRequest {
    pub name: String,
    pub revision: Revision,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginResetResponse {
    pub header: ResponseHeader,
    /// The checkpoint before the reset.
    pub previous: Revision,
}

/// Removes a binding; its component goes too once no binding uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRemoveRequest {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRemoveResponse {
    pub header: ResponseHeader,
}
