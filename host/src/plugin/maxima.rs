//! [`Maxima`]: the node's ceiling on every binding's limits.
//!
//! A binding's limits (fuel, deadline, memory cap) are chosen by whoever installs it and are
//! replicated with it. Without a ceiling, one install could ask for a call of an hour with
//! unbounded fuel, and a few writes into a looping validator would then hold the node's
//! plugin threads for that hour. The maxima are node settings (etchd's
//! `--plugin-max-fuel`, `--plugin-max-timeout-ms`, `--plugin-max-memory-mb`), so they are
//! enforced in two places that never touch apply (apply must not depend on a node's flags):
//!
//! - **at entry**: the leader refuses an install above them with `InvalidArgument`, naming
//!   the limit and the flag ([`Maxima::check`]);
//! - **at call time**: every call runs under its binding's limits clamped to this node's
//!   maxima ([`Maxima::clamp`]), so a binding stored before (or accepted by a leader with
//!   higher maxima) still obeys them.

use std::time::Duration;

use etch_proto::plugin::PluginLimits;

use super::runtime::MAX_MEMORY_MB;

/// The largest limits a binding may have on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Maxima {
    /// Most fuel per call [default: 1,000,000,000, about a second of WebAssembly].
    pub fuel: u64,
    /// Longest deadline per call [default: 5 s, room for a reactor that writes].
    pub timeout: Duration,
    /// Largest memory cap, in MiB [default: 256, the pool's slot size, [`MAX_MEMORY_MB`]].
    pub memory_mb: u32,
}

impl Default for Maxima {
    fn default() -> Self {
        Maxima {
            fuel: 1_000_000_000,
            timeout: Duration::from_secs(5),
            memory_mb: MAX_MEMORY_MB,
        }
    }
}

impl Maxima {
    /// The longest deadline in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX)
    }

    /// Why `limits` may not be installed on this node, if they may not: each limit must be
    /// above 0 and at most its maximum.
    pub fn check(&self, limits: &PluginLimits) -> Result<(), String> {
        if limits.fuel == 0 || limits.timeout_ms == 0 || limits.memory_mb == 0 {
            return Err("a plugin's fuel, timeout and memory cap must be above 0".into());
        }
        let above = |what: &str, got: u64, max: u64, flag: &str| {
            Err(format!(
                "{what} {got} is above this node's maximum of {max} (etchd {flag})"
            ))
        };
        if limits.fuel > self.fuel {
            return above("fuel", limits.fuel, self.fuel, "--plugin-max-fuel");
        }
        if limits.timeout_ms > self.timeout_ms() {
            return above(
                "timeout-ms",
                limits.timeout_ms,
                self.timeout_ms(),
                "--plugin-max-timeout-ms",
            );
        }
        if limits.memory_mb > self.memory_mb {
            return above(
                "memory-mb",
                limits.memory_mb.into(),
                self.memory_mb.into(),
                "--plugin-max-memory-mb",
            );
        }
        Ok(())
    }

    /// `limits` with each limit at most its maximum: what a call actually runs under.
    pub fn clamp(&self, limits: &PluginLimits) -> PluginLimits {
        PluginLimits {
            fuel: limits.fuel.min(self.fuel),
            timeout_ms: limits.timeout_ms.min(self.timeout_ms()),
            memory_mb: limits.memory_mb.min(self.memory_mb),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_above_a_maximum_are_refused_naming_the_flag() {
        let max = Maxima::default();
        assert_eq!(max.check(&PluginLimits::default()), Ok(()));
        let hour = PluginLimits {
            timeout_ms: 3_600_000,
            ..PluginLimits::default()
        };
        let err = max.check(&hour).expect_err("an hour");
        assert!(err.contains("--plugin-max-timeout-ms"), "{err}");
        assert!(err.contains("3600000"), "{err}");
        let fuel = PluginLimits {
            fuel: u64::MAX,
            ..PluginLimits::default()
        };
        let err = max.check(&fuel).expect_err("endless fuel");
        assert!(err.contains("--plugin-max-fuel"), "{err}");
        let zero = PluginLimits {
            fuel: 0,
            ..PluginLimits::default()
        };
        assert!(max.check(&zero).is_err());
    }

    #[test]
    fn clamp_keeps_a_stored_binding_within_the_maxima() {
        let max = Maxima {
            fuel: 10,
            timeout: Duration::from_millis(20),
            memory_mb: 4,
        };
        let stored = PluginLimits {
            fuel: u64::MAX,
            timeout_ms: 3_600_000,
            memory_mb: 256,
        };
        assert_eq!(
            max.clamp(&stored),
            PluginLimits {
                fuel: 10,
                timeout_ms: 20,
                memory_mb: 4,
            }
        );
        let small = PluginLimits {
            fuel: 5,
            timeout_ms: 1,
            memory_mb: 1,
        };
        assert_eq!(max.clamp(&small), small);
    }
}
