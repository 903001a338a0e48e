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
//! asking task at most one capped call per lane every [`BACKOFF`]. So do judgements that
//! stay within the caps but take more than [`SLOW_CPU`] (or [`SLOW_WALL`]), past the
//! [`SLOW_FORGIVEN`] first ones: a validator that spends a millisecond on every call would
//! otherwise hold the request tasks, at the node's priority, for as long as writes come. No free slot, or a
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
/// How long a lane whose call outgrew the caps, or whose judgement was [`too_slow`], is
/// judged on the plugin threads only.
pub const BACKOFF: Duration = Duration::from_secs(10);
/// CPU time past which a judgement on the asking task, though within the caps, sends its
/// lane to the plugin threads: a json-schema judgement takes about 10 µs.
pub const SLOW_CPU: Duration = Duration::from_micros(500);
/// Wall time past which the same happens (its reads waited on the disk, say).
pub const SLOW_WALL: Duration = Duration::from_millis(20);

/// Whether a judgement that took `cpu` of the asking thread's CPU and `wall` in all was too
/// slow to run there again soon.
pub(super) fn too_slow(cpu: Duration, wall: Duration) -> bool {
    cpu > SLOW_CPU || wall > SLOW_WALL
}

/// Why a judgement on the asking task stopped: it must run on the plugin threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stop {
    /// A call outgrew the quick caps: back off the lane.
    Overran,
    /// No call slot was free, or the component is not compiled yet.
    Busy,
}

/// Slow quick judgements a lane is forgiven within [`BACKOFF`] before it goes to the plugin
/// threads: as many as instances may be made at once (each instance's first call pays for
/// making it and touching its memory: 0.6–0.8 ms for json-schema, then ~10 µs a call).
pub const SLOW_FORGIVEN: usize = super::runtime::CALL_SLOTS;

/// The lanes whose calls outgrew the caps lately, and until when they are not tried quick;
/// and when each lane's recent slow judgements happened.
#[derive(Debug, Default)]
pub(super) struct Lanes {
    slow: Mutex<HashMap<String, Instant>>,
    strikes: Mutex<HashMap<String, Vec<Instant>>>,
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

    /// A quick judgement of `lane` was [`too_slow`] at `now`; `true` when that was one more
    /// than [`SLOW_FORGIVEN`] within [`BACKOFF`], and the lane now goes to the plugin threads.
    pub(super) fn slow(&self, lane: &str, now: Instant) -> bool {
        let mut strikes = (self.strikes.lock()).unwrap_or_else(PoisonError::into_inner);
        strikes.retain(|_, at| {
            at.retain(|&t| now.duration_since(t) < BACKOFF);
            !at.is_empty()
        });
        let at = strikes.entry(lane.to_owned()).or_default();
        at.push(now);
        if at.len() <= SLOW_FORGIVEN {
            return false;
        }
        strikes.remove(lane);
        drop(strikes);
        self.overran(lane, now);
        true
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

        for i in 0..=SLOW_FORGIVEN {
            let sent = lanes.slow("c", t0 + Duration::from_millis(i as u64));
            assert_eq!(sent, i == SLOW_FORGIVEN, "strike {i}");
        }
        assert!(!lanes.allows("c", t0 + BACKOFF / 2));
        // Strikes older than the backoff are forgotten.
        lanes.slow("d", t0);
        for i in 0..SLOW_FORGIVEN {
            assert!(!lanes.slow("d", t0 + BACKOFF + Duration::from_millis(i as u64)));
        }

        let us = Duration::from_micros;
        assert!(!too_slow(us(10), us(300)));
        assert!(too_slow(SLOW_CPU + us(1), us(600)));
        assert!(too_slow(us(10), SLOW_WALL + us(1)));
    }
}
