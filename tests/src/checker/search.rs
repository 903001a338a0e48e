//! The search for a linearization of one partition (one key's operations).
//!
//! Operations become call and return events sorted by time (a call before a return at the
//! same instant, so touching operations count as concurrent). The events sit in a doubly
//! linked list that only holds what is not yet linearized. The calls before the first
//! return are the candidates: if the model accepts one in the current state, and the
//! resulting configuration has not been explored, it is linearized — both its events are
//! unlinked — and the search goes on from there. Reaching a return with no candidate left
//! means that operation should have been linearized already: undo the last choice and try
//! the next candidate after it. The search succeeds when every operation with a return
//! has been linearized; operations of unknown outcome have no return event, so they may
//! be linearized anywhere after their call, or never.
//!
//! This is Wing & Gong's backtracking search with Lowe's memoization of configurations
//! (linearized set, model state, whether the last operation was of unknown outcome), as
//! porcupine runs it. The memo is what keeps a history
//! with little concurrency close to linear time. Two refinements keep lost answers from
//! making it exponential:
//!
//! - Candidates of known outcome are tried first, and those of unknown outcome only once
//!   they all failed, newest first: a lost write is linearized only when nothing else
//!   explains what comes next, and the one that explains it is usually the latest.
//! - Normal form: a lost write followed at once by a blind put (a known or lost `Put`)
//!   can be dropped from the linearization without changing any result — the put
//!   overwrites all it did, and lost writes do not raise the floor. A lost write followed
//!   at once by a read (a get, a failed CAS, a delete of nothing) that would answer the
//!   same without it can move after that read, again without changing any result or
//!   state (the model bounds a lost write's revision by the key's last write, which reads
//!   do not move). So the search only builds linearizations where a lost
//!   write is followed by something that needs it; any linearization can be put in that
//!   form, so nothing is missed, and a dead end tries far fewer subsets of the pending
//!   lost writes.
//! - Dominance: an unknown operation is optional, so a configuration that has linearized
//!   a superset of the unknown operations of an explored one, with the same known ones
//!   and the same state, can do nothing the explored one could not. It is skipped.

use std::collections::HashMap;
use std::time::Instant;

use super::model::{Call, KeyState, Ret, Why};

/// One operation of a partition.
#[derive(Clone, Copy, Debug)]
pub(super) struct PartOp {
    pub invoked: u64,
    /// Completion of an operation with a known outcome; `None` for an unknown one.
    pub completed: Option<u64>,
    pub call: Call,
    pub ret: Option<Ret>,
}

/// Steps and wall-clock time a search may still use.
#[derive(Debug)]
pub(super) struct Meter {
    pub steps_left: u64,
    pub deadline: Instant,
}

/// Where the search got stuck: the operation that could not be linearized in time, at the
/// deepest point reached.
#[derive(Debug)]
pub(super) struct Stuck {
    pub op: usize,
    /// How many operations were linearized at that point.
    pub depth: usize,
    /// States in which `op` was due, with why it could not take effect there (`None`: it
    /// could, but nothing linearized the rest afterwards).
    pub states: Vec<(KeyState, Option<Why>)>,
    /// The last operations linearized before it, oldest first.
    pub before: Vec<usize>,
}

#[derive(Debug)]
pub(super) enum Found {
    Linearizable,
    Stuck(Stuck),
    OutOfBudget,
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;
/// Candidate states and preceding operations kept for an explanation.
const EXPLAIN: usize = 6;

/// The event list: node 0 is the head; node `i > 0` is event `i - 1`.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each node: its operation and whether it is the call.
    what: Vec<(usize, bool)>,
    call_node: Vec<usize>,
    return_node: Vec<Option<usize>>,
}

impl Events {
    fn new(ops: &[PartOp]) -> Self {
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoked, false, i));
            if let (Some(done), Some(_)) = (op.completed, op.ret) {
                events.push((done, true, i));
            }
        }
        // `false < true`: calls sort before returns at the same time.
        events.sort_unstable();
        let n = events.len() + 1;
        let mut list = Events {
            next: (1..=n).map(|i| if i == n { NIL } else { i }).collect(),
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            what: vec![(NIL, false); n],
            call_node: vec![NIL; ops.len()],
            return_node: vec![None; ops.len()],
        };
        list.prev[HEAD] = NIL;
        for (k, &(_, is_return, op)) in events.iter().enumerate() {
            let node = k + 1;
            list.what[node] = (op, !is_return);
            if is_return {
                list.return_node[op] = Some(node);
            } else {
                list.call_node[op] = node;
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(r) = self.return_node[op] {
            self.unlink(r);
        }
    }

    /// Undoes [`Events::lift`]; lifts must be undone in reverse order.
    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_node[op] {
            self.relink(r);
        }
        self.relink(self.call_node[op]);
    }
}

/// Searches for a linearization of `ops` from `initial`.
pub(super) fn linearize(ops: &[PartOp], initial: KeyState, meter: &mut Meter) -> Found {
    let mut events = Events::new(ops);
    let mut unreturned = events.return_node.iter().flatten().count();
    let mut memo = Memo::new(ops);
    // Each choice made: the operation, the state before it, and the pass that chose it.
    let mut stack: Vec<(usize, KeyState, bool)> = Vec::new();
    let mut state = initial;
    let mut stuck: Option<Stuck> = None;
    // The known pass walks forward from the head; the unknown pass walks back from the
    // first return.
    let mut cursor = events.next[HEAD];
    let mut unknown_pass = false;
    while unreturned > 0 {
        if meter.steps_left == 0
            || (meter.steps_left.is_multiple_of(4096) && Instant::now() > meter.deadline)
        {
            return Found::OutOfBudget;
        }
        meter.steps_left -= 1;
        // The walk never runs off the end while a return is listed, as the return stops
        // it; should it, backtracking is still a safe move.
        let (op, is_call) = match cursor {
            NIL | HEAD => (NIL, false),
            _ => events.what[cursor],
        };
        if is_call {
            let unknown = ops[op].ret.is_none();
            let candidate = unknown == unknown_pass && !after_lost_write_in_vain(&stack, op, ops);
            if candidate && let Ok(next) = state.step(ops[op].call, ops[op].ret) {
                memo.flip(op);
                if memo.insert(next, unknown) {
                    stack.push((op, state, unknown_pass));
                    state = next;
                    events.lift(op);
                    unreturned -= usize::from(events.return_node[op].is_some());
                    cursor = events.next[HEAD];
                    unknown_pass = false;
                    continue;
                }
                memo.flip(op);
            }
            cursor = if unknown_pass {
                events.prev[cursor]
            } else {
                events.next[cursor]
            };
            continue;
        }
        if !unknown_pass && op != NIL {
            note_stuck(&mut stuck, &stack, op, state, ops);
            unknown_pass = true;
            cursor = events.prev[cursor];
            continue;
        }
        let Some((top, before, pass)) = stack.pop() else {
            return match stuck {
                Some(stuck) => Found::Stuck(stuck),
                // Only reachable with a return but no call, which `Events::new` never builds.
                None => Found::OutOfBudget,
            };
        };
        state = before;
        memo.flip(top);
        events.unlift(top);
        unreturned += usize::from(events.return_node[top].is_some());
        unknown_pass = pass;
        let node = events.call_node[top];
        cursor = if pass {
            events.prev[node]
        } else {
            events.next[node]
        };
    }
    Found::Linearizable
}

/// Whether linearizing `op` right after the lost write on top of the stack would leave a
/// linearization not in normal form (see the module essay): `op` is a blind put, or a
/// read that would answer the same without the lost write.
fn after_lost_write_in_vain(stack: &[(usize, KeyState, bool)], op: usize, ops: &[PartOp]) -> bool {
    let Some(&(top, before, _)) = stack.last() else {
        return false;
    };
    if ops[top].ret.is_some() {
        return false;
    }
    match (ops[op].call, ops[op].ret) {
        (Call::Put(_), _) => true,
        (_, None) => false,
        (_, Some(ret)) if ret.writes() => false,
        (call, ret) => before.step(call, ret).is_ok(),
    }
}

/// Explored configurations: for each (known operations linearized, state), the sets of
/// unknown operations linearized with them.
struct Memo {
    /// Each operation's bit: whether it is unknown, and its index among its kind.
    slot: Vec<(bool, usize)>,
    known: Vec<u64>,
    unknown: Vec<u64>,
    explored: HashMap<(Vec<u64>, KeyState, bool), Vec<Vec<u64>>>,
}

impl Memo {
    fn new(ops: &[PartOp]) -> Self {
        let mut counts = [0usize; 2];
        let slot = ops
            .iter()
            .map(|op| {
                let unknown = op.ret.is_none();
                let index = counts[usize::from(unknown)];
                counts[usize::from(unknown)] += 1;
                (unknown, index)
            })
            .collect();
        Memo {
            slot,
            known: vec![0; counts[0].div_ceil(64)],
            unknown: vec![0; counts[1].div_ceil(64)],
            explored: HashMap::new(),
        }
    }

    /// Adds or removes `op` from the current linearized set.
    fn flip(&mut self, op: usize) {
        let (unknown, i) = self.slot[op];
        let bits = if unknown {
            &mut self.unknown
        } else {
            &mut self.known
        };
        bits[i / 64] ^= 1 << (i % 64);
    }

    /// Records the current set with `state`, reached by an unknown operation or not;
    /// false when an explored configuration dominates it.
    fn insert(&mut self, state: KeyState, after_unknown: bool) -> bool {
        let sets = self
            .explored
            .entry((self.known.clone(), state, after_unknown))
            .or_default();
        let covered = |seen: &Vec<u64>| seen.iter().zip(&self.unknown).all(|(s, u)| s & !u == 0);
        if sets.iter().any(covered) {
            return false;
        }
        sets.push(self.unknown.clone());
        true
    }
}

/// Remembers the deepest point where an operation came due unlinearized.
fn note_stuck(
    stuck: &mut Option<Stuck>,
    stack: &[(usize, KeyState, bool)],
    op: usize,
    state: KeyState,
    ops: &[PartOp],
) {
    let depth = stack.len();
    let why = state.step(ops[op].call, ops[op].ret).err();
    match stuck {
        Some(s) if s.depth > depth => {}
        Some(s) if s.depth == depth => {
            if s.op == op && s.states.len() < EXPLAIN && !s.states.iter().any(|(k, _)| *k == state)
            {
                s.states.push((state, why));
            }
        }
        _ => {
            *stuck = Some(Stuck {
                op,
                depth,
                states: vec![(state, why)],
                before: stack[depth.saturating_sub(EXPLAIN)..]
                    .iter()
                    .map(|&(o, _, _)| o)
                    .collect(),
            });
        }
    }
}
