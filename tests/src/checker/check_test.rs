//! Known-good and known-bad histories, each with the anomaly it plants said on top.

use super::{Budget, Verdict, Violation, check};
use crate::history::{Entry, Op, OpResult, Outcome};

/// A history written by hand: times are plain numbers, `None` completes at infinity.
#[derive(Default)]
struct Script(Vec<Entry>);

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl Script {
    fn add(&mut self, client: usize, op: Op, at: (u64, Option<u64>), outcome: Outcome) -> usize {
        let id = self.0.len();
        self.0.push(Entry {
            id,
            client,
            op,
            invoked: at.0,
            completed: at.1,
            outcome,
        });
        id
    }

    fn put(&mut self, c: usize, key: &str, value: &str, at: (u64, u64), revision: i64) {
        let op = Op::Put {
            key: b(key),
            value: b(value),
        };
        let result = OpResult::Put { revision };
        self.add(c, op, (at.0, Some(at.1)), Outcome::Ok(result));
    }

    /// A get that saw `seen` as (value, mod_revision), at header revision `revision`.
    fn get(
        &mut self,
        c: usize,
        key: &str,
        seen: Option<(&str, i64)>,
        at: (u64, u64),
        revision: i64,
    ) {
        let result = OpResult::Get {
            value: seen.map(|(v, _)| b(v)),
            mod_revision: seen.map_or(0, |(_, m)| m),
            revision,
        };
        self.add(
            c,
            Op::Get { key: b(key) },
            (at.0, Some(at.1)),
            Outcome::Ok(result),
        );
    }

    fn delete(&mut self, c: usize, key: &str, deleted: i64, at: (u64, u64), revision: i64) {
        let result = OpResult::Delete { deleted, revision };
        self.add(
            c,
            Op::Delete { key: b(key) },
            (at.0, Some(at.1)),
            Outcome::Ok(result),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        &mut self,
        c: usize,
        key: &str,
        from: Option<&str>,
        to: &str,
        at: (u64, u64),
        ok: bool,
        revision: i64,
    ) {
        let op = Op::Cas {
            key: b(key),
            expected: from.map(b),
            new: b(to),
        };
        let result = OpResult::Cas {
            succeeded: ok,
            revision,
        };
        self.add(c, op, (at.0, Some(at.1)), Outcome::Ok(result));
    }

    /// A put whose answer was lost.
    fn put_unknown(&mut self, c: usize, key: &str, value: &str, invoked: u64) {
        let op = Op::Put {
            key: b(key),
            value: b(value),
        };
        self.add(c, op, (invoked, None), Outcome::Unknown);
    }

    fn put_failed(&mut self, c: usize, key: &str, value: &str, at: (u64, u64)) {
        let op = Op::Put {
            key: b(key),
            value: b(value),
        };
        self.add(c, op, (at.0, Some(at.1)), Outcome::Failed);
    }

    fn check(&self) -> Verdict {
        check(&self.0, &Budget::default())
    }
}

fn assert_ok(script: &Script) {
    let verdict = script.check();
    assert!(verdict.is_linearizable(), "{verdict}");
}

fn violation(script: &Script) -> Violation {
    match script.check() {
        Verdict::Violation(v) => *v,
        other => panic!("expected a violation, got {other}"),
    }
}

fn assert_not_linearizable(script: &Script, op: usize) {
    match violation(script) {
        Violation::NotLinearizable(v) => assert_eq!(v.op.id, op, "{v:?}"),
        other => panic!("expected a per-key violation, got {other}"),
    }
}

// Store revision 1 is the empty store; the first write makes revision 2.

#[test]
fn sequential_put_get_delete() {
    let mut s = Script::default();
    s.get(0, "k", None, (0, 1), 1);
    s.put(0, "k", "v1", (2, 3), 2);
    s.get(0, "k", Some(("v1", 2)), (4, 5), 2);
    s.delete(0, "k", 1, (6, 7), 3);
    s.delete(0, "k", 0, (8, 9), 3);
    s.get(0, "k", None, (10, 11), 3);
    assert_ok(&s);
}

#[test]
fn a_read_overlapping_a_write_may_see_it_or_not() {
    for seen in [None, Some(("v1", 2))] {
        let mut s = Script::default();
        s.put(0, "k", "v1", (0, 10), 2);
        s.get(1, "k", seen, (1, 9), if seen.is_some() { 2 } else { 1 });
        assert_ok(&s);
    }
}

#[test]
fn overlapping_writes_in_either_order() {
    let mut s = Script::default();
    s.put(0, "k", "a", (0, 10), 3);
    s.put(1, "k", "b", (0, 10), 2);
    s.get(2, "k", Some(("a", 3)), (11, 12), 3);
    assert_ok(&s);
    // Same history, but the read sees the write the revisions order first.
    let mut s = Script::default();
    s.put(0, "k", "a", (0, 10), 3);
    s.put(1, "k", "b", (0, 10), 2);
    s.get(2, "k", Some(("b", 2)), (11, 12), 3);
    assert_not_linearizable(&s, 2);
}

#[test]
fn stale_read_at_the_current_revision() {
    let mut s = Script::default();
    s.put(0, "k", "v1", (0, 1), 2);
    s.put(0, "k", "v2", (2, 3), 3);
    s.get(1, "k", Some(("v1", 2)), (4, 5), 3);
    assert_not_linearizable(&s, 2);
    let text = Verdict::Violation(Box::new(violation(&s))).to_string();
    assert!(text.contains("get(\"k\")"), "{text}");
    assert!(
        text.contains("it read \"v1\", but the key holds \"v2\""),
        "{text}"
    );
}

#[test]
fn stale_read_at_an_old_revision() {
    let mut s = Script::default();
    s.put(0, "k", "v1", (0, 1), 2);
    s.put(0, "k", "v2", (2, 3), 3);
    s.get(1, "k", Some(("v1", 2)), (4, 5), 2);
    assert!(matches!(
        violation(&s),
        Violation::RevisionOrder { earlier, later } if earlier.id == 1 && later.id == 2
    ));
}

#[test]
fn lost_write() {
    // v2 was acknowledged at revision 3, yet a later read at revision 4 sees v1.
    let mut s = Script::default();
    s.put(0, "k", "v1", (0, 1), 2);
    s.put(0, "k", "v2", (2, 3), 3);
    s.put(1, "other", "x", (2, 3), 4);
    s.get(2, "k", Some(("v1", 2)), (4, 5), 4);
    assert_not_linearizable(&s, 3);
}

#[test]
fn read_of_a_value_never_written() {
    let mut s = Script::default();
    s.put(0, "k", "v1", (0, 1), 2);
    s.get(1, "k", Some(("ghost", 2)), (2, 3), 2);
    assert!(matches!(violation(&s), Violation::NeverWritten { read } if read.id == 1));
}

#[test]
fn revisions_out_of_real_time_order() {
    let mut s = Script::default();
    s.put(0, "a", "v1", (0, 1), 5);
    s.put(1, "b", "v2", (2, 3), 4);
    assert!(matches!(violation(&s), Violation::RevisionOrder { .. }));
}

#[test]
fn duplicated_revision() {
    let mut s = Script::default();
    s.put(0, "a", "v1", (0, 5), 2);
    s.put(1, "b", "v2", (0, 5), 2);
    assert!(matches!(
        violation(&s),
        Violation::DuplicateRevision { revision: 2, .. }
    ));
}

#[test]
fn unknown_write_that_took_effect() {
    let mut s = Script::default();
    s.put_unknown(0, "k", "v1", 0);
    s.get(1, "k", None, (1, 2), 1);
    s.get(1, "k", Some(("v1", 2)), (3, 4), 2);
    s.get(1, "k", Some(("v1", 2)), (5, 6), 2);
    assert_ok(&s);
}

#[test]
fn unknown_write_that_did_not_take_effect() {
    let mut s = Script::default();
    s.put_unknown(0, "k", "v1", 0);
    s.put(1, "k", "v2", (1, 2), 2);
    s.get(1, "k", Some(("v2", 2)), (3, 4), 2);
    assert_ok(&s);
}

#[test]
fn unknown_write_seen_at_an_impossible_revision() {
    // Had v1 been written at revision 2, v2 (revision 3) would overwrite it before the read.
    let mut s = Script::default();
    s.put_unknown(0, "k", "v1", 0);
    s.put(1, "k", "v2", (1, 2), 3);
    s.get(1, "k", Some(("v1", 2)), (3, 4), 3);
    assert_not_linearizable(&s, 2);
}

#[test]
fn failed_write_never_happened() {
    let mut s = Script::default();
    s.put_failed(0, "k", "v1", (0, 1));
    s.get(1, "k", None, (2, 3), 1);
    assert_ok(&s);
    s.get(1, "k", Some(("v1", 2)), (4, 5), 2);
    assert!(matches!(violation(&s), Violation::NeverWritten { .. }));
}

#[test]
fn compare_and_swap_race() {
    // Two clients race to create the key; one wins, the loser sees the key taken.
    let mut s = Script::default();
    s.cas(0, "k", None, "a", (0, 10), true, 2);
    s.cas(1, "k", None, "b", (0, 10), false, 2);
    s.cas(0, "k", Some("a"), "c", (11, 12), true, 3);
    s.cas(1, "k", Some("a"), "d", (13, 14), false, 3);
    s.get(1, "k", Some(("c", 3)), (15, 16), 3);
    assert_ok(&s);
    // Both winning is not linearizable: whichever goes second finds the key present.
    let mut s = Script::default();
    s.cas(0, "k", None, "a", (0, 10), true, 2);
    s.cas(1, "k", None, "b", (0, 10), true, 3);
    assert!(matches!(violation(&s), Violation::NotLinearizable(_)));
}

#[test]
fn a_small_budget_answers_unknown() {
    let mut s = Script::default();
    for i in 0..200u64 {
        s.put(0, "k", &format!("v{i}"), (2 * i, 2 * i + 1), i as i64 + 2);
    }
    let budget = Budget {
        max_steps: 100,
        ..Budget::default()
    };
    assert!(matches!(check(&s.0, &budget), Verdict::Unknown(_)));
    assert_ok(&s);
}
