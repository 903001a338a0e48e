//! How a plugin call can fail. Every failure is an error for that call only: the instance
//! is dropped and the node goes on serving.

/// Why a plugin call did not succeed.
#[derive(Debug, thiserror::Error)]
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
    /// The plugin ran past its wall-clock deadline.
    #[error("deadline of {0} ms exceeded")]
    Deadline(u64),
    /// The plugin tried to grow its memory past the binding's cap.
    #[error("memory cap of {0} MiB exceeded")]
    Memory(u32),
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    #[error("trapped: {0}")]
    Trap(String),
    /// The node failed to serve one of the plugin's reads.
    #[error("host failure: {0}")]
    Host(String),
    /// A reactor returned `err` for its batch.
    #[error("returned an error: {0}")]
    Refused(String),
}

pub type Result<T, E = PluginError> = std::result::Result<T, E>;
