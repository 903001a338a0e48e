//! Identifiers and the versioned key-value record.

use serde::{Deserialize, Serialize};

/// A store-wide revision. Starts at 1 for an empty store and advances by one per committed
/// write (a put, a delete that deleted something, a txn with writes). `0` in a request means
/// "the current revision".
pub type Revision = i64;

/// A lease id; `0` means "no lease".
pub type LeaseId = i64;

/// A Raft node id (the `member_id` of etcd).
pub type NodeId = u64;

/// One version of a key, with etcd's `mvccpb.KeyValue` fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Revision of the last creation of this key.
    pub create_revision: Revision,
    /// Revision of the last modification of this key.
    pub mod_revision: Revision,
    /// Number of modifications since creation: 1 on creation, reset by a delete.
    pub version: i64,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Lease attached to this key, `0` for none.
    pub lease: LeaseId,
}

impl KeyValue {
    /// The key as text; bytes that are not UTF-8 show as U+FFFD.
    ///
    /// ```
    /// let kv = etch_proto::KeyValue { key: b"/config/a".to_vec(), ..Default::default() };
    /// assert_eq!(kv.key_str(), "/config/a");
    /// ```
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// The value as text; bytes that are not UTF-8 show as U+FFFD.
    ///
    /// ```
    /// let kv = etch_proto::KeyValue { value: b"on".to_vec(), ..Default::default() };
    /// assert_eq!(kv.value_str(), "on");
    /// ```
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// The end of the range that holds exactly the keys starting with `prefix`, as etcd computes
/// it: the prefix with its last byte below 0xff incremented and the rest dropped. A prefix of
/// only 0xff bytes (or an empty one) has no upper bound, written `[0]` ("to the end").
///
/// ```
/// assert_eq!(etch_proto::prefix_end(b"/a/"), b"/a0".to_vec());
/// assert_eq!(etch_proto::prefix_end(b"a\xff"), b"b".to_vec());
/// assert_eq!(etch_proto::prefix_end(b""), vec![0]);
/// ```
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// How a `(key, range_end)` pair selects keys, with etcd's conventions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: just `key`.
    Single(&'a [u8]),
    /// `range_end == [0]`: every key `>= key` (all keys when `key` is also `[0]` or empty).
    From(&'a [u8]),
    /// Every key in `[key, range_end)`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Interprets a request's `key` and `range_end` fields.
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        if range_end.is_empty() {
            KeyRange::Single(key)
        } else if range_end == [0] {
            KeyRange::From(if key == [0] { &[] } else { key })
        } else {
            KeyRange::Between(key, range_end)
        }
    }

    /// Whether `k` falls inside this range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Single(key) => k == key,
            KeyRange::From(start) => k >= start,
            KeyRange::Between(start, end) => k >= start && k < end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_range_conventions() {
        assert_eq!(KeyRange::new(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::new(b"a", &[0]), KeyRange::From(b"a"));
        assert_eq!(KeyRange::new(&[0], &[0]), KeyRange::From(b""));
        assert!(KeyRange::new(b"a", b"c").contains(b"b"));
        assert!(!KeyRange::new(b"a", b"c").contains(b"c"));
        assert!(KeyRange::new(b"", &[0]).contains(b""));
    }

    #[test]
    fn prefix_end_of_all_ff_is_open() {
        assert_eq!(prefix_end(&[0xff, 0xff]), vec![0]);
    }
}
