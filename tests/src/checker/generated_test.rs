//! Large simulated histories: several clients on a few keys, each operation taking effect
//! at a random instant inside its interval against a reference store, some answers lost
//! and some requests refused. They must check as linearizable within the default budget;
//! with one read's answer turned stale they must not.

use std::collections::BTreeMap;

use super::{Budget, Verdict, Violation, check};
use crate::history::{Entry, Op, OpResult, Outcome};

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A key's value (missing: `None`), its mod revision, and whether its writer was answered.
type Version = (Option<Vec<u8>>, i64, bool);

/// A simulated run, and for each read the version of its key before the one it saw.
struct Run {
    entries: Vec<Entry>,
    older: BTreeMap<usize, (Option<Vec<u8>>, i64)>,
}

fn simulate(seed: u64, clients: u64, keys: u64, ops: usize) -> Run {
    let mut rng = Rng(seed);
    // (client, op, invoked, effect, completed, fate): fate 0 answered, 1 lost, 2 refused.
    let mut planned = Vec::new();
    let mut clock = vec![0u64; clients as usize];
    for n in 0..ops {
        let c = rng.below(clients) as usize;
        let invoked = clock[c] + rng.below(20);
        let effect = invoked + 1 + rng.below(30);
        let completed = effect + 1 + rng.below(30);
        clock[c] = completed;
        let key = format!("k{}", rng.below(keys)).into_bytes();
        let value = format!("v{n}").into_bytes();
        let op = match rng.below(20) {
            0..8 => Op::Put { key, value },
            8..15 => Op::Get { key },
            15..17 => Op::Delete { key },
            _ => {
                let expected = match rng.below(3) {
                    0 => None,
                    _ => Some(format!("v{}", n.saturating_sub(rng.below(6) as usize)).into_bytes()),
                };
                Op::Cas {
                    key,
                    expected,
                    new: value,
                }
            }
        };
        let fate = match rng.below(100) {
            0 => 1,
            1 => 2,
            _ => 0,
        };
        planned.push((c, op, invoked, effect * 64 + c as u64, completed, fate));
    }
    planned.sort_by_key(|p| p.3);
    // Each key's versions: value, mod revision, and whether its writer was answered.
    let mut store: BTreeMap<Vec<u8>, Vec<Version>> = BTreeMap::new();
    let mut revision = 1;
    let mut entries = Vec::new();
    let mut older = BTreeMap::new();
    for (c, op, invoked, _, completed, fate) in planned {
        // A lost answer took effect half the time; a refused request never did.
        let applies = fate == 0 || (fate == 1 && rng.below(2) == 0);
        let versions = store
            .entry(op.key().to_vec())
            .or_insert_with(|| vec![(None, 0, true)]);
        let (current, mod_revision, answered) = versions.last().cloned().unwrap_or((None, 0, true));
        let mut write = |value: Option<Vec<u8>>| {
            if applies {
                revision += 1;
                versions.push((value, revision, fate == 0));
            }
            revision
        };
        let result = match &op {
            Op::Put { value, .. } => OpResult::Put {
                revision: write(Some(value.clone())),
            },
            Op::Get { .. } => OpResult::Get {
                value: current.clone(),
                mod_revision: if current.is_some() { mod_revision } else { 0 },
                revision,
            },
            Op::Delete { .. } if current.is_some() => OpResult::Delete {
                deleted: 1,
                revision: write(None),
            },
            Op::Delete { .. } => OpResult::Delete {
                deleted: 0,
                revision,
            },
            Op::Cas { expected, new, .. } if *expected == current => OpResult::Cas {
                succeeded: true,
                revision: write(Some(new.clone())),
            },
            Op::Cas { .. } => OpResult::Cas {
                succeeded: false,
                revision,
            },
        };
        if matches!(op, Op::Get { .. }) && fate == 0 && answered && versions.len() > 2 {
            let (value, m, _) = versions[versions.len() - 2].clone();
            older.insert(
                entries.len(),
                (value.clone(), if value.is_some() { m } else { 0 }),
            );
        }
        let (completed, outcome) = match fate {
            0 => (Some(completed), Outcome::Ok(result)),
            1 => (None, Outcome::Unknown),
            _ => (Some(completed), Outcome::Failed),
        };
        let id = entries.len();
        entries.push(Entry {
            id,
            client: c,
            op,
            invoked,
            completed,
            outcome,
        });
    }
    Run { entries, older }
}

#[test]
fn thousands_of_concurrent_operations_per_key_check_in_budget() {
    let run = simulate(0x5eed, 6, 3, 9000);
    let verdict = check(&run.entries, &Budget::default());
    assert_eq!(verdict, Verdict::Linearizable, "{verdict}");
}

#[test]
fn one_stale_read_in_thousands_is_found() {
    let mut run = simulate(0xfeed, 6, 3, 6000);
    let (&index, (value, mod_revision)) =
        run.older.iter().nth(run.older.len() / 2).expect("a read");
    let Outcome::Ok(OpResult::Get { revision, .. }) = run.entries[index].outcome else {
        panic!("reads were planted as answered gets");
    };
    run.entries[index].outcome = Outcome::Ok(OpResult::Get {
        value: value.clone(),
        mod_revision: *mod_revision,
        revision,
    });
    let verdict = check(&run.entries, &Budget::default());
    let violation = verdict.violation().unwrap_or_else(|| panic!("{verdict}"));
    assert!(
        matches!(
            violation,
            Violation::NotLinearizable(_) | Violation::NeverWritten { .. }
        ),
        "{violation}"
    );
}
