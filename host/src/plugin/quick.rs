//! Judging a write on the task that asked ([`super::Plugins::judge_on_executor`]), without
//! the hop to a plugin thread, when its validators are quick.
//!
//! A judgement handed to the plugin threads costs two thread wake-ups and waits for a CPU
//! the node's own threads leave idle (`executor.rs`): with a json-schema validator bound,
//! 2–3 ms p50 of queueing for a call that runs for about 10 µs, the largest part of what a
//! validated put cost (BENCHMARKS.md). So a judgement is first tried where the request is,
//! under caps that keep it quick: at most [`QUICK_TIMEOUT_MS`] of CPU and [`QUICK_FUEL`]
//! per call, and only with a call slot free now. A call that outgrows a cap (where its own
//! limits would have let it go on) is abandoned — uncounted, its reads dropped — and the
//! whole judgement runs again on the plugin threads under the binding's own limits; its
//! lane is then judged there only for [`BACKOFF`], so a validator that loops costs the
//! asking task at most one capped call per lane every [`BACKOFF`]. No free slot, or a
//! component not compiled yet (compiling takes tens of milliseconds), means the plugin
//! threads as well, without backing off. Validators are functions of their input
//! (`guest-sdk`), so judging again gives the answer the first try would have.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use etch_proto::plugin::PluginLimits;

use super::error::PluginError;

/// CPU time a call judged on the asking task may take, in milliseconds (one epoch tick:
/// `runtime::TICK`).
pub const QUICK_TIMEOUT_MS: u64 = 2;
/// Fuel a call judged on the asking task may burn (about a millisecond of WebAssembly).
pub const QUICK_FUEL: u64 = 2_000_000;
/// How long a lane whose call outgrew the caps is judged on the plugin threads only.
pub const BACKOFF: Duration = Duration::from_secs(10);

/// Why a judgement on the asking task stopped: it must run on the plugin threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// A call outgrew the quick caps: back off the lane.
    Overran,
    /// No call slot was free, or the component is not compiled yet.
    Busy,
}

/// The lanes whose calls outgrew the caps lately, and until when they are not tried quick.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    slow: Mutex<HashMap<String, Instant>>,
}

impl Lanes {
    /// Whether `lane` may be judged on the asking task now.
    pub(super) fn allows(&self, lane: &str, now: Instant) -> bool {
        let mut slow = self.lock();
        match slow.get(lane) {
            Some(&until) if now < until => false,
            Some(_) => {
                slow.remove(lane);
                true
            }
            None => true,
        }
    }

    /// A call of `lane` outgrew the caps at `now`.
    pub(super) fn overran(&self, lane: &str, now: Instant) {
        let mut slow = self.lock();
        // Lanes are the bound validators' names: few, but drop the expired ones anyway.
        slow.retain(|_, until| now < *until);
        slow.insert(lane.to_owned(), now + BACKOFF);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // Plain deadlines: valid after a panic elsewhere.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `limits` within the quick caps.
pub(super) fn capped(limits: &PluginLimits) -> PluginLimits {
    PluginLimits {
        fuel: limits.fuel.min(QUICK_FUEL),
        timeout_ms: limits.timeout_ms.min(QUICK_TIMEOUT_MS),
        ..*limits
    }
}

/// Whether a call under `capped(own)` failed with `error` only because of the caps: its
/// own limits were larger where it ran out.
pub(super) fn outgrew(own: &PluginLimits, error: &PluginError) -> bool {
    match error {
        PluginError::OutOfFuel => own.fuel > QUICK_FUEL,
        PluginError::Deadline(_) | PluginError::Starved { .. } => own.timeout_ms > QUICK_TIMEOUT_MS,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_that_overran_waits_its_backoff_and_only_the_caps_count() {
        let lanes = Lanes::default();
        let t0 = Instant::now();
        assert!(lanes.allows("a", t0));
        lanes.overran("a", t0);
        assert!(!lanes.allows("a", t0 + BACKOFF / 2));
        assert!(lanes.allows("b", t0));
        assert!(lanes.allows("a", t0 + BACKOFF));

        let own = PluginLimits {
            fuel: 50_000_000,
            timeout_ms: 200,
            ..PluginLimits::default()
        };
        let quick = capped(&own);
        assert_eq!(
            (quick.fuel, quick.timeout_ms),
            (QUICK_FUEL, QUICK_TIMEOUT_MS)
        );
        assert!(outgrew(&own, &PluginError::OutOfFuel));
        assert!(outgrew(&own, &PluginError::Deadline(QUICK_TIMEOUT_MS)));
        assert!(!outgrew(&own, &PluginError::Trap("unreachable".into())));
        // A binding whose own fuel is under the cap failed on its own terms.
        let small = PluginLimits { fuel: 1000, ..own };
        assert!(!outgrew(&small, &PluginError::OutOfFuel));
    }
}
