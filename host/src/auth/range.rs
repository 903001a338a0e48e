//! Key ranges as intervals, and whether a set of permitted ranges covers a requested one.
//!
//! etcd's conventions: an empty `range_end` is the key alone, `range_end` `"\0"` is every
//! key from `key` on, and key `"\0"` with range end `"\0"` is every key.

use std::cmp::Ordering;

/// `[start, end)`; `end` `None` is unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    /// The interval of `key` with `range_end`, etcd's way; `None` for an empty one.
    pub(super) fn new(key: &[u8], range_end: &[u8]) -> Option<Interval> {
        let interval = match range_end {
            [] => {
                let mut end = key.to_vec();
                end.push(0);
                Interval {
                    start: key.to_vec(),
                    end: Some(end),
                }
            }
            [0] => Interval {
                start: key.to_vec(),
                end: None,
            },
            end => Interval {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        };
        let empty = interval
            .end
            .as_deref()
            .is_some_and(|end| end <= interval.start.as_slice());
        (!empty).then_some(interval)
    }
}

/// Whether the union of `permitted` covers all of `wanted`.
pub(super) fn covers(mut permitted: Vec<Interval>, wanted: &Interval) -> bool {
    permitted.sort_by(|a, b| a.start.cmp(&b.start));
    // `reached`: everything from wanted.start up to here is covered (None: to the end).
    let mut reached: Option<Vec<u8>> = Some(wanted.start.clone());
    for p in &permitted {
        let Some(point) = &reached else {
            return true;
        };
        if p.start.as_slice() > point.as_slice() {
            break; // a gap before this interval
        }
        match (&p.end, point) {
            (None, _) => reached = None,
            (Some(end), point) if end.as_slice() > point.as_slice() => reached = Some(end.clone()),
            _ => {}
        }
        if done(&reached, wanted) {
            return true;
        }
    }
    done(&reached, wanted)
}

fn done(reached: &Option<Vec<u8>>, wanted: &Interval) -> bool {
    match (reached, &wanted.end) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(r), Some(end)) => r.as_slice().cmp(end.as_slice()) != Ordering::Less,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn i(key: &str, end: &str) -> Interval {
        Interval::new(key.as_bytes(), end.as_bytes()).expect("not empty")
    }

    #[test]
    fn coverage_follows_etcds_range_conventions() {
        let prefix = i("/a/", "/a0");
        assert!(covers(vec![prefix.clone()], &i("/a/x", "")));
        assert!(covers(vec![prefix.clone()], &i("/a/", "/a0")));
        assert!(covers(vec![prefix.clone()], &i("/a/b", "/a/c")));
        assert!(!covers(vec![prefix.clone()], &i("/a", "")));
        assert!(!covers(vec![prefix.clone()], &i("/a/", "/b")));
        assert!(!covers(vec![prefix.clone()], &i("/a/", "\0")));
        // Adjacent and overlapping permissions together.
        let parts = vec![i("a", "c"), i("c", "e"), i("b", "d")];
        assert!(covers(parts.clone(), &i("a", "e")));
        assert!(!covers(parts.clone(), &i("a", "f")));
        assert!(!covers(vec![i("a", "b"), i("c", "d")], &i("a", "d")));
        // From a key on, and everything.
        assert!(covers(vec![i("m", "\0")], &i("z", "\0")));
        assert!(covers(vec![i("m", "\0")], &i("zz", "")));
        assert!(!covers(vec![i("m", "\0")], &i("a", "n")));
        assert!(covers(vec![i("\0", "\0")], &i("\0", "\0")));
        assert!(covers(vec![i("\0", "\0")], &i("anything", "")));
        // A single key is exactly that key.
        assert!(covers(vec![i("k", "")], &i("k", "")));
        assert!(!covers(vec![i("k", "")], &i("k", "l")));
        assert!(!covers(Vec::new(), &i("k", "")));
        assert_eq!(Interval::new(b"b", b"a"), None);
    }
}
