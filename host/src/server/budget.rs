//! Byte budgets: how much a connection, and all client connections together, may hold in
//! the node's memory at once.
//!
//! A budget is a pair of semaphores counting bytes, the connection's and the node's. A
//! request charges its declared length before its body is read, and waits for room (QUIC
//! flow control then holds the client back); an answer charges its encoded size before it
//! is written and never waits: holding an encoded answer while waiting is the very memory
//! the budget exists to bound, so an answer without room is dropped instead.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::limits::SMALL_ANSWER;

/// One connection's share of the node's client buffers.
#[derive(Debug)]
pub(super) struct Budget {
    conn: Arc<Semaphore>,
    conn_cap: usize,
    node: Arc<Semaphore>,
    node_cap: usize,
}

/// Bytes held against a [`Budget`] until dropped.
#[derive(Debug)]
pub(super) struct Charge {
    _conn: Option<OwnedSemaphorePermit>,
    _node: Option<OwnedSemaphorePermit>,
}

/// The node-wide budget, shared by every connection's [`Budget`].
pub(super) fn node_budget(bytes: usize) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS)))
}

/// Permits for `bytes` against a budget of `cap`: never more than the whole budget, so a
/// frame larger than it is admitted once it has the budget to itself.
fn permits(bytes: usize, cap: usize) -> u32 {
    u32::try_from(bytes.min(cap)).unwrap_or(u32::MAX)
}

impl Budget {
    pub(super) fn new(conn_bytes: usize, node: Arc<Semaphore>, node_bytes: usize) -> Self {
        let conn_cap = conn_bytes.min(u32::MAX as usize);
        Budget {
            conn: Arc::new(Semaphore::new(conn_cap)),
            conn_cap,
            node,
            node_cap: node_bytes.min(u32::MAX as usize),
        }
    }

    /// Charges a request of `bytes`, waiting for room.
    pub(super) async fn reserve(&self, bytes: usize) -> Charge {
        let n = permits(bytes, self.conn_cap);
        // The semaphores are never closed, so acquiring fails only if that changes; an
        // uncharged request is then still bounded by the stream cap.
        let conn = self.conn.clone().acquire_many_owned(n).await.ok();
        let n = permits(bytes, self.node_cap);
        let node = self.node.clone().acquire_many_owned(n).await.ok();
        Charge {
            _conn: conn,
            _node: node,
        }
    }

    /// Charges an answer of `bytes` if there is room now; `None` if there is not.
    pub(super) fn try_reserve(&self, bytes: usize) -> Option<Charge> {
        let conn = self
            .conn
            .clone()
            .try_acquire_many_owned(permits(bytes, self.conn_cap))
            .ok()?;
        let node = if bytes <= SMALL_ANSWER {
            None
        } else {
            let n = permits(bytes, self.node_cap);
            Some(self.node.clone().try_acquire_many_owned(n).ok()?)
        };
        Some(Charge {
            _conn: Some(conn),
            _node: node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_without_room_are_refused_and_room_returns_on_drop() {
        let node = node_budget(1 << 20);
        let budget = Budget::new(1000, node.clone(), 1 << 20);
        let held = budget.try_reserve(800).expect("room for 800");
        assert!(budget.try_reserve(300).is_none(), "800 + 300 > 1000");
        let small = budget.try_reserve(200).expect("room for 200 more");
        drop(held);
        // Larger than the whole budget: admitted once it has it to itself.
        assert!(budget.try_reserve(5000).is_none(), "200 still held");
        drop(small);
        let whole = budget.try_reserve(5000).expect("the budget to itself");
        drop(whole);
        // A request waits for room instead of failing.
        let held = budget.try_reserve(1000).expect("all of it");
        let waiting = tokio::spawn({
            let conn = budget.conn.clone();
            async move { conn.acquire_many_owned(10).await.is_ok() }
        });
        assert!(!waiting.is_finished());
        drop(held);
        assert!(waiting.await.expect("task"));
    }

    #[tokio::test]
    async fn the_node_budget_is_shared_but_small_answers_skip_it() {
        let node = node_budget(100_000);
        let a = Budget::new(1 << 20, node.clone(), 100_000);
        let b = Budget::new(1 << 20, node, 100_000);
        let big = a.try_reserve(90_000).expect("room");
        assert!(b.try_reserve(70_000).is_none(), "the node budget is spent");
        assert!(
            b.try_reserve(SMALL_ANSWER).is_some(),
            "a small answer always fits"
        );
        drop(big);
        assert!(b.try_reserve(70_000).is_some());
    }
}
