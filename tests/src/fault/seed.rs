//! The seed that drives a fault scenario's choices, and the small generator it feeds.
//!
//! A seed fixes which node is hit, which fault comes next, how long it lasts, the op mix
//! and the values each client writes. It does not fix the interleaving of requests with
//! faults (real processes, real time), so a replay reproduces the scenario, not the exact
//! history; a failure that depends on a race may need a few replays.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Environment variable that fixes the seed of every scenario in a run.
pub const SEED_VAR: &str = "ETCH_FAULT_SEED";

/// The seed from `ETCH_FAULT_SEED` (decimal or `0x` hex), else one from the clock and pid.
///
/// # Panics
///
/// When the variable is set but is not a number: a mistyped replay should not silently run
/// something else.
pub fn seed() -> u64 {
    match std::env::var(SEED_VAR) {
        Ok(text) => parse(&text).unwrap_or_else(|| panic!("{SEED_VAR}={text:?} is not a u64")),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            Rng::new(nanos ^ u64::from(std::process::id()).rotate_left(32)).next_u64()
        }
    }
}

fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// SplitMix64: tiny, fast and good enough to pick faults; not for cryptography.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// An independent generator for a sub-task (a client, a soak iteration).
    pub fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(self.next_u64() ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A duration in `[lo, hi]`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_millis() as usize;
        lo + Duration::from_millis(self.below(span + 1) as u64)
    }

    /// The slice shuffled (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_choices() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<usize> = (0..20).map(|_| a.below(7)).collect();
        let ys: Vec<usize> = (0..20).map(|_| b.below(7)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 7));
        assert_eq!(parse("0x10"), Some(16));
        assert_eq!(parse(" 17 "), Some(17));
        assert_eq!(parse("x"), None);
    }
}
