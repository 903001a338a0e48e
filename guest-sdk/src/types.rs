//! The plain Rust types plugins work with: a validator gets a [`Request`] and answers a
//! [`Verdict`]; a reactor gets [`Event`]s.
//!
//! They mirror the records of `wit/etch.wit` but are the SDK's own, so that a validator (and
//! its tests) never touch generated bindings, and the same code runs in WebAssembly and
//! natively under [`crate::testing`].

/// One version of a key, with etcd's `KeyValue` fields.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Revision of the put that created this incarnation of the key.
    pub create_revision: i64,
    /// Revision of the key's last put.
    pub mod_revision: i64,
    /// 1 on creation, +1 per put; a delete resets it.
    pub version: i64,
    /// Lease attached to the key, 0 for none.
    pub lease: i64,
}

/// What a write does to one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Delete,
}

/// One key a write changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: Vec<u8>,
    /// The new value; empty for a delete.
    pub value: Vec<u8>,
    /// The key's live version before the write; `None` if it does not exist.
    pub prev: Option<KeyValue>,
}

impl Op {
    /// The key as text (lossy for keys that are not UTF-8), for messages.
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }

    /// Whether this op creates the key (a put of a key that does not exist).
    pub fn creates(&self) -> bool {
        self.kind == OpKind::Put && self.prev.is_none()
    }
}

/// A write to validate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Who asks: the common name of the client's certificate.
    pub principal: String,
    /// The key prefix of the binding that runs this plugin.
    pub prefix: Vec<u8>,
    /// The store revision the write is validated against.
    pub revision: i64,
    /// Every key the write changes, in order (see `wit/etch.wit`).
    pub ops: Vec<Op>,
}

impl Request {
    /// The ops whose key starts with the binding's prefix: usually the ones to judge.
    pub fn ops_in_prefix(&self) -> impl Iterator<Item = &Op> {
        self.ops
            .iter()
            .filter(|op| op.key.starts_with(&self.prefix))
    }
}

/// A validator's decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse the write: `code` is short and machine-readable, `reason` a sentence the
    /// client sees.
    Deny {
        code: String,
        reason: String,
    },
}

impl Verdict {
    /// A refusal.
    ///
    /// # Examples
    ///
    /// ```
    /// use etch_plugin::Verdict;
    /// let v = Verdict::deny("too-large", "values are at most 1 KiB");
    /// assert!(!v.is_allow());
    /// ```
    pub fn deny(code: impl Into<String>, reason: impl Into<String>) -> Verdict {
        Verdict::Deny {
            code: code.into(),
            reason: reason.into(),
        }
    }

    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }
}

/// A committed change, as a reactor gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: OpKind,
    /// The key's version after the change; for a delete only `key` and `mod_revision`.
    pub kv: KeyValue,
    /// The key's live version before the change, if there was one.
    pub prev: Option<KeyValue>,
    /// Who made the change: the user (client certificate common name) whose write it was,
    /// `reactor:NAME` for a reactor's, empty for etch's own (a lease expiry).
    pub principal: String,
}

impl Event {
    /// The revision at which the change committed.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    /// The key as text (lossy for keys that are not UTF-8), for messages.
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.kv.key)
    }
}

/// Severity of a log message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}
