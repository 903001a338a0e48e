//! [`Host`]: what a plugin may ask of the node that runs it.
//!
//! In WebAssembly every method is an import shared by both worlds (`log`, `config`,
//! read-only `kv`); under [`crate::testing`] an in-memory key space answers instead. A
//! validator's reads see the store at the request's revision; the node records them, and
//! the write is refused with `Conflict` (and validated again) if what was read changed
//! before it commits, so a decision based on a read stays true. A reactor's reads see the
//! applied state when its batch was read, and guard its writes the same way.

use crate::types::{KeyValue, Level};

/// The node's services, as a validator sees them (a reactor gets a [`crate::ReactorHost`]).
pub trait Host {
    /// The binding's setting `name` (`etchctl plugin install --config name=value`).
    fn config(&self, name: &str) -> Option<String>;
    /// Every setting of the binding, in name order.
    fn config_entries(&self) -> Vec<(String, String)>;
    /// The live version of `key` at the request's revision.
    fn get(&self, key: &[u8]) -> Option<KeyValue>;
    /// The live keys of `[key, range_end)` in key order, at most `limit` (0 = all), with
    /// etcd's conventions: an empty `range_end` selects just `key`, `b"\0"` means "to the
    /// end".
    fn range(&self, key: &[u8], range_end: &[u8], limit: u32) -> Vec<KeyValue>;
    /// Writes a message to the node's log, tagged with the plugin's name.
    fn log(&self, level: Level, message: &str);
    /// The binding's name (`etchctl plugin install NAME ...`).
    fn binding_name(&self) -> String;
    /// The key prefix the binding is bound to (`--prefix`): a validator is asked about the
    /// writes touching it, a reactor told of the changes under it.
    fn binding_prefix(&self) -> Vec<u8>;

    /// The live keys starting with `prefix`, at most `limit` (0 = all).
    fn prefix(&self, prefix: &[u8], limit: u32) -> Vec<KeyValue> {
        self.range(prefix, &prefix_end(prefix), limit)
    }
}

/// The end of the range holding exactly the keys that start with `prefix`, as etcd
/// computes it.
///
/// # Examples
///
/// ```
/// assert_eq!(etch_plugin::prefix_end(b"/a/"), b"/a0".to_vec());
/// assert_eq!(etch_plugin::prefix_end(b""), vec![0]);
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

/// Whether `key` falls in `[start, end)` with etcd's range conventions.
pub(crate) fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}
