//! Admission of client connections: at most so many per node and per principal.
//!
//! The node-wide count is checked when a connection arrives, the principal's once the
//! handshake has shown its certificate. A connection over either cap is closed right after
//! its handshake with a code and a reason the client can show, instead of being dropped
//! silently. Handshakes themselves are bounded too: past that bound a new attempt is
//! refused at once, before any cryptography, with QUIC's `CONNECTION_REFUSED`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use etch_proto::codes;

use super::limits::ClientLimits;

/// The connections a node serves, by principal.
#[derive(Debug)]
pub(super) struct Admission {
    max_total: usize,
    max_per_principal: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    handshaking: usize,
    total: usize,
    by_principal: HashMap<Arc<str>, usize>,
}

/// Why a connection was turned away: the close code and the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) code: u32,
    pub(super) reason: String,
}

/// A handshake in progress; ends when dropped.
#[derive(Debug)]
pub(super) struct Handshake {
    state: Arc<Mutex<State>>,
}

/// An admitted connection's place; given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    state: Arc<Mutex<State>>,
    principal: Arc<str>,
}

impl Admission {
    pub(super) fn new(limits: &ClientLimits) -> Self {
        Admission {
            max_total: limits.max_connections,
            max_per_principal: limits.max_connections_per_principal,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few counters, consistent after every statement.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a handshake, unless as many are running as connections may be served (then
    /// the attempt is refused before any work is done for it).
    pub(super) fn begin_handshake(&self) -> Option<Handshake> {
        let mut state = self.lock();
        if state.handshaking >= self.max_total.max(64) {
            return None;
        }
        state.handshaking += 1;
        Some(Handshake {
            state: self.state.clone(),
        })
    }

    /// Admits an established connection of `principal`, or says why not.
    pub(super) fn admit(&self, principal: &Arc<str>) -> Result<Slot, Refusal> {
        let mut state = self.lock();
        if state.total >= self.max_total {
            return Err(Refusal {
                code: codes::close::TOO_MANY_CONNECTIONS,
                reason: format!(
                    "too many client connections to this node (limit {})",
                    self.max_total
                ),
            });
        }
        let mine = state.by_principal.get(principal).copied().unwrap_or(0);
        if mine >= self.max_per_principal {
            return Err(Refusal {
                code: codes::close::TOO_MANY_FOR_PRINCIPAL,
                reason: format!(
                    "too many connections for principal {principal} (limit {})",
                    self.max_per_principal
                ),
            });
        }
        state.total += 1;
        *state.by_principal.entry(principal.clone()).or_default() += 1;
        Ok(Slot {
            state: self.state.clone(),
            principal: principal.clone(),
        })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.handshaking = state.handshaking.saturating_sub(1);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.total = state.total.saturating_sub(1);
        if let Some(n) = state.by_principal.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                state.by_principal.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_node_and_per_principal_free_up_on_drop() {
        let limits = ClientLimits {
            max_connections: 3,
            max_connections_per_principal: 2,
            ..ClientLimits::default()
        };
        let admission = Admission::new(&limits);
        let (alice, bob): (Arc<str>, Arc<str>) = ("alice".into(), "bob".into());
        let a1 = admission.admit(&alice).expect("alice 1");
        let _a2 = admission.admit(&alice).expect("alice 2");
        let refused = admission.admit(&alice).expect_err("alice 3");
        assert_eq!(refused.code, codes::close::TOO_MANY_FOR_PRINCIPAL);
        assert!(
            refused.reason.contains("principal alice (limit 2)"),
            "{refused:?}"
        );
        let _b1 = admission.admit(&bob).expect("bob 1");
        let full = admission.admit(&bob).expect_err("node full");
        assert_eq!(full.code, codes::close::TOO_MANY_CONNECTIONS);
        drop(a1);
        let _b2 = admission.admit(&bob).expect("room again");
        assert_eq!(admission.lock().by_principal.get("alice"), Some(&1));
    }

    #[test]
    fn handshakes_are_bounded() {
        let admission = Admission::new(&ClientLimits::default());
        let running: Vec<_> = (0..1024).map(|_| admission.begin_handshake()).collect();
        assert!(running.iter().all(Option::is_some));
        assert!(admission.begin_handshake().is_none());
        drop(running);
        assert!(admission.begin_handshake().is_some());
    }
}
