//! [`Budget`]: one call's memory cap, covering the guest's linear memory *and* what the
//! host holds or builds for the call.
//!
//! A binding's `memory_mb` used to cap only linear memory, so a plugin could make the host
//! spend for it without limit: a validator looping on `kv.get` of large keys grew its read
//! set to 4 GB in one call under a 32 MiB cap (issue 12, finding 6). Now every byte the
//! host keeps for the call (its read set, a reactor's staged writes) is *held* against the
//! same cap as the guest's memory, and every result or string the host builds to cross the
//! boundary (a range result, a value, config, a log line) is *lent*: it must fit beside
//! what is held, and is forgotten once handed over (the guest's memory then holds it, and
//! the linear-memory side of the budget counts it).
//!
//! Going over fails the call: a growth of linear memory traps as `PluginError::Memory`, a
//! host charge traps as `PluginError::HostMemory` naming what was charged.

use wasmtime::ResourceLimiter;

/// Bytes the host counts for each record it holds or builds (a `Read`, a staged write, a
/// key-value), beside its keys and values: the `Vec` headers and fixed fields.
pub(super) const RECORD_OVERHEAD: usize = 64;

/// Which side of the budget ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// The guest tried to grow its linear memory past the cap.
    Linear,
    /// A host call would have held or built more than the cap allows; says what.
    Host(String),
}

/// One call's memory budget (see the module doc).
#[derive(Debug)]
pub(super) struct Budget {
    cap: usize,
    /// Bytes of linear memory granted so far (every memory's initial size and growths).
    linear: usize,
    /// Bytes the host holds for the call.
    held: usize,
    exceeded: Option<Exceeded>,
}

impl Budget {
    pub(super) fn new(cap: usize) -> Budget {
        Budget {
            cap,
            linear: 0,
            held: 0,
            exceeded: None,
        }
    }

    /// The budget of the next call on the same instance: its linear memory stays granted
    /// (a kept instance keeps its memory), nothing is held, nothing exceeded.
    pub(super) fn next_call(&self) -> Budget {
        Budget {
            linear: self.linear,
            ..Budget::new(self.cap)
        }
    }

    /// Bytes of linear memory granted so far.
    pub(super) fn linear(&self) -> usize {
        self.linear
    }

    /// Why the call went over its cap, if it did.
    pub(super) fn exceeded(&self) -> Option<&Exceeded> {
        self.exceeded.as_ref()
    }

    /// Bytes the host holds for the call now.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.held
    }

    /// Keeps `bytes` more for the rest of the call (`what` names them in the error).
    ///
    /// # Errors
    ///
    /// The cap would be exceeded: the call must trap.
    pub(super) fn hold(&mut self, what: &str, bytes: usize) -> wasmtime::Result<()> {
        self.check(what, bytes)?;
        self.held += bytes;
        Ok(())
    }

    /// Checks that `bytes` built to hand to the guest fit beside what is held and the
    /// guest's memory; nothing stays charged.
    ///
    /// # Errors
    ///
    /// The cap would be exceeded: the call must trap.
    pub(super) fn lend(&mut self, what: &str, bytes: usize) -> wasmtime::Result<()> {
        self.check(what, bytes)
    }

    fn check(&mut self, what: &str, bytes: usize) -> wasmtime::Result<()> {
        let total = self.linear.saturating_add(self.held).saturating_add(bytes);
        if total > self.cap {
            let message = format!(
                "{what} would bring the call to {total} bytes (linear memory {} + host-side {} + {bytes})",
                self.linear, self.held
            );
            self.exceeded = Some(Exceeded::Host(message.clone()));
            return Err(wasmtime::Error::msg(message));
        }
        Ok(())
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        if self.linear.saturating_add(growth).saturating_add(self.held) > self.cap {
            self.exceeded = Some(Exceeded::Linear);
            return Err(wasmtime::Error::msg("memory cap exceeded"));
        }
        // A growth past the memory's own maximum fails after this returns: not granted.
        if maximum.is_none_or(|max| desired <= max) {
            self.linear += growth;
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_memory_and_host_bytes_share_one_cap() {
        let mut b = Budget::new(1 << 20);
        assert!(b.memory_growing(0, 512 << 10, None).expect("fits"));
        b.hold("reads", 256 << 10).expect("fits beside");
        // A lend that fits is forgotten at once.
        b.lend("a value", 256 << 10).expect("fits");
        assert_eq!(b.held(), 256 << 10);
        let err = b.lend("a range result", (256 << 10) + 1).expect_err("over");
        assert!(err.to_string().contains("a range result"), "{err}");
        assert!(matches!(b.exceeded(), Some(Exceeded::Host(m)) if m.contains("range")));
        // Growing linear memory into what the host holds is refused too.
        let mut b = Budget::new(1 << 20);
        b.hold("staged writes", 600 << 10).expect("fits");
        assert!(b.memory_growing(0, 512 << 10, None).is_err());
        assert_eq!(b.exceeded(), Some(&Exceeded::Linear));
    }
}
