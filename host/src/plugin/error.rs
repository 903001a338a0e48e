//! How a plugin call can fail. Every failure is an error for that call only: the instance
//! is dropped and the node goes on serving.

/// Why a plugin call did not succeed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum PluginError {
    /// The component does not compile, or does not fit its hook's world.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component's bytes are not stored (a binding naming a missing sha256).
    #[error("component {0} is missing from storage")]
    Missing(String),
    /// The plugin used up its fuel (it computes too much, or loops).
    #[error("out of fuel")]
    OutOfFuel,
    /// The plugin used up its deadline: CPU time of its call.
    #[error("deadline of {0} ms exceeded")]
    Deadline(u64),
    /// The call had not used up its deadline when its wall-clock ceiling (a multiple of the
    /// deadline) passed: the node left plugin calls too little CPU, or the plugin's reads
    /// waited on a slow disk ([`starved_cause`]).
    #[error(
        "deadline of {timeout_ms} ms not reached in {wall_ms} ms (the call had {cpu_ms} ms of CPU and spent {storage_ms} ms in storage reads): {}",
        starved_cause(*.storage_ms, *.wall_ms)
    )]
    Starved {
        timeout_ms: u64,
        cpu_ms: u128,
        wall_ms: u128,
        /// Wall time the call spent in its `kv` reads.
        storage_ms: u128,
    },
    /// The plugin tried to grow its memory past the binding's cap.
    #[error("memory cap of {0} MiB exceeded")]
    Memory(u32),
    /// What the host held or built for the call (its read set, a range result, staged
    /// writes, a string crossing the boundary) would have gone past the call's memory cap,
    /// or its read set past the guard cap (`crate::mvcc::MAX_GUARD_BYTES`).
    #[error("host-side memory cap exceeded: {0}")]
    HostMemory(String),
    /// The plugin passed a host call an argument no call accepts (a key over the limit).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A reactor staged more than one transaction may hold (the node's `--max-txn-ops` and
    /// `--max-request-bytes`): the call fails whatever it returns.
    #[error("staged writes exceed one transaction: {0}")]
    TooManyWrites(String),
    /// The next revision holds more events for a reactor than one call can take within its
    /// memory cap. The reactor stays at it (`plugin list` shows it stalled) until its
    /// binding is removed and installed again, which resumes after the new install.
    #[error(
        "revision {revision} holds {events} events ({bytes} bytes) for this reactor, more than one call can take ({max_bytes} bytes, half its memory cap): the reactor is stalled there"
    )]
    RevisionTooLarge {
        revision: i64,
        events: usize,
        bytes: usize,
        max_bytes: usize,
    },
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The node failed to serve one of the plugin's reads.
    #[error("host failure: {0}")]
    Host(String),
    /// The call was interrupted: its binding was removed or replaced, or the node stops.
    #[error("interrupted: {0}")]
    Cancelled(&'static str),
    /// The call never ran: the plugin threads were too busy, or the node stops.
    #[error("not run: {0}")]
    NotRun(#[from] super::executor::Refused),
    /// A reactor returned `err` for its batch.
    #[error("returned an error: {0}")]
    Refused(String),
    /// The plugin's `init` (contract 0.2.0) returned `err`: typically a configuration it
    /// cannot use.
    #[error("init failed: {0}")]
    Init(String),
}

impl PluginError {
    /// A short name for the kind of failure (the `cause` label of the plugin metrics).
    pub fn cause(&self) -> &'static str {
        match self {
            PluginError::Invalid(_) => "invalid",
            PluginError::Missing(_) => "missing",
            PluginError::OutOfFuel => "fuel",
            PluginError::Deadline(_) | PluginError::Starved { .. } => "deadline",
            PluginError::Memory(_) => "memory",
            PluginError::HostMemory(_) => "host_memory",
            PluginError::InvalidArgument(_) => "invalid_argument",
            PluginError::TooManyWrites(_) => "too_many_writes",
            PluginError::RevisionTooLarge { .. } => "revision_too_large",
            PluginError::Trap(_) => "trap",
            PluginError::Host(_) => "host",
            PluginError::Cancelled(_) => "cancelled",
            PluginError::NotRun(_) => "not_run",
            PluginError::Refused(_) => "refused",
            PluginError::Init(_) => "init",
        }
    }
}

/// Why a call reached its wall-clock ceiling before its CPU deadline: its storage reads,
/// when they took half of that time or more (a slow or saturated disk: a thread waiting on
/// the disk uses no CPU), else a node too busy to give plugin calls the CPU.
pub fn starved_cause(storage_ms: u128, wall_ms: u128) -> &'static str {
    if storage_ms > 0 && storage_ms.saturating_mul(2) >= wall_ms {
        "the node's storage is too slow for this plugin's reads"
    } else {
        "the node is too busy to run plugins"
    }
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_starved_call_blames_storage_only_when_its_reads_took_half_its_time() {
        let starved = |storage_ms| PluginError::Starved {
            timeout_ms: 200,
            cpu_ms: 3,
            wall_ms: 2000,
            storage_ms,
        };
        assert_eq!(
            starved(1200).to_string(),
            "deadline of 200 ms not reached in 2000 ms (the call had 3 ms of CPU and spent \
             1200 ms in storage reads): the node's storage is too slow for this plugin's reads"
        );
        assert!(
            starved(999)
                .to_string()
                .ends_with("the node is too busy to run plugins")
        );
        assert!(starved(0).to_string().ends_with("too busy to run plugins"));
    }
}
