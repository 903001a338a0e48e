//! [`check`]: the global pass, then one search per key.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::model::{Call, KeyState, Ret, ValueId, Why};
use super::revision;
use super::search::{self, Found, Meter, PartOp, Stuck};
use super::verdict::{Budget, KeyViolation, Verdict, Violation};
use crate::history::{Entry, Op, OpResult, Outcome, show};

/// Checks that `entries` (as [`crate::history::History::entries`] returns them) are
/// linearizable against etcd's KV model, every key starting missing.
///
/// # Examples
///
/// ```
/// use etch_tests::checker::{Budget, check};
/// use etch_tests::history::{Entry, Op, OpResult, Outcome};
///
/// let put = Entry {
///     id: 0,
///     client: 0,
///     op: Op::Put { key: b"k".to_vec(), value: b"v".to_vec() },
///     invoked: 0,
///     completed: Some(10),
///     outcome: Outcome::Ok(OpResult::Put { revision: 2 }),
/// };
/// assert!(check(&[put], &Budget::default()).is_linearizable());
/// ```
pub fn check(entries: &[Entry], budget: &Budget) -> Verdict {
    let global = revision::duplicates(entries)
        .or_else(|| revision::real_time(entries))
        .or_else(|| revision::never_written(entries));
    if let Some(violation) = global {
        return Verdict::Violation(Box::new(violation));
    }
    let mut keys: BTreeMap<&[u8], Vec<&Entry>> = BTreeMap::new();
    for e in entries.iter().filter(|e| matters(e)) {
        keys.entry(e.op.key()).or_default().push(e);
    }
    let deadline = Instant::now() + budget.time;
    let mut exhausted = Vec::new();
    for (key, part) in keys {
        let mut values = Values::default();
        let ops: Vec<PartOp> = part.iter().map(|e| values.part_op(e)).collect();
        let mut meter = Meter {
            steps_left: budget.max_steps,
            deadline,
        };
        match search::linearize(&ops, KeyState::default(), &mut meter) {
            Found::Linearizable => {}
            Found::Stuck(stuck) => {
                let explained = explain(key, &part, &ops, &stuck, &values);
                return Verdict::Violation(Box::new(Violation::NotLinearizable(explained)));
            }
            Found::OutOfBudget => exhausted.push(format!("{} ({} ops)", show(key), ops.len())),
        }
    }
    if exhausted.is_empty() {
        Verdict::Linearizable
    } else {
        Verdict::Unknown(format!(
            "the search budget ran out on key {}",
            exhausted.join(", ")
        ))
    }
}

/// Whether an entry constrains anything: failed operations never happened, and a read
/// whose answer was lost says nothing.
fn matters(e: &Entry) -> bool {
    match e.outcome {
        Outcome::Ok(_) => true,
        Outcome::Failed => false,
        Outcome::Unknown => e.op.is_write(),
    }
}

/// The values of one key, interned.
#[derive(Default)]
struct Values<'a> {
    ids: HashMap<&'a [u8], ValueId>,
    bytes: Vec<&'a [u8]>,
}

impl<'a> Values<'a> {
    fn id(&mut self, value: &'a [u8]) -> ValueId {
        // Saturates past 2^32 distinct values of one key, far beyond any test's history.
        let next = ValueId::try_from(self.bytes.len()).unwrap_or(ValueId::MAX);
        *self.ids.entry(value).or_insert_with(|| {
            self.bytes.push(value);
            next
        })
    }

    fn show(&self, value: Option<ValueId>) -> String {
        let bytes = value.and_then(|v| self.bytes.get(v as usize));
        bytes.map_or_else(|| "nothing".to_owned(), |b| show(b))
    }

    fn part_op(&mut self, e: &'a Entry) -> PartOp {
        let call = match &e.op {
            Op::Put { value, .. } => Call::Put(self.id(value)),
            Op::Get { .. } => Call::Get,
            Op::Delete { .. } => Call::Delete,
            Op::Cas { expected, new, .. } => Call::Cas {
                expected: expected.as_deref().map(|v| self.id(v)),
                new: self.id(new),
            },
        };
        let ret = e.result().map(|r| match r {
            OpResult::Put { revision } => Ret::Put {
                revision: *revision,
            },
            OpResult::Get {
                value,
                mod_revision,
                revision,
            } => Ret::Get {
                value: value.as_deref().map(|v| self.id(v)),
                mod_revision: *mod_revision,
                revision: *revision,
            },
            OpResult::Delete { deleted, revision } => Ret::Delete {
                deleted: *deleted,
                revision: *revision,
            },
            OpResult::Cas {
                succeeded,
                revision,
            } => Ret::Cas {
                succeeded: *succeeded,
                revision: *revision,
            },
        });
        PartOp {
            invoked: e.invoked,
            // An answered entry without a completion time ended at some unknown point:
            // it must still take effect, so it completes at the end of time.
            completed: ret.map(|_| e.completed.unwrap_or(u64::MAX)),
            call,
            ret,
        }
    }
}

fn explain(
    key: &[u8],
    part: &[&Entry],
    ops: &[PartOp],
    stuck: &Stuck,
    values: &Values<'_>,
) -> KeyViolation {
    let states = stuck
        .states
        .iter()
        .map(|(state, why)| {
            let held = match state.value {
                None => "missing".to_owned(),
                Some((v, m)) => format!("{} (mod {m})", values.show(Some(v))),
            };
            let why = why.map_or_else(
                || "it fits here, but then the operations after it do not".to_owned(),
                |why| because(why, values),
            );
            format!(
                "key holds {held}, store at revision >= {}: {why}",
                state.floor
            )
        })
        .collect();
    debug_assert!(stuck.op < ops.len());
    KeyViolation {
        key: key.to_vec(),
        op: part[stuck.op].clone(),
        states,
        before: stuck.before.iter().map(|&i| part[i].clone()).collect(),
    }
}

fn because(why: Why, values: &Values<'_>) -> String {
    match why {
        Why::WrongKind => "its result is of another kind than the operation".to_owned(),
        Why::RevisionNotNew { floor, got } => {
            format!("it wrote revision {got}, not above {floor}")
        }
        Why::RevisionBehind { floor, got } => format!("it read at revision {got}, below {floor}"),
        Why::Value { holds, got } => format!(
            "it read {}, but the key holds {}",
            values.show(got),
            values.show(holds)
        ),
        Why::ModRevision { holds, got } => {
            format!("it read mod revision {got}, but the value's is {holds}")
        }
        Why::Branch => "it took the other branch than the key's value implies".to_owned(),
    }
}
