//! What the checker concludes, with an explanation a person can follow.

use std::fmt;
use std::time::Duration;

use etch_proto::Revision;

use crate::history::{Entry, show};

/// How much work a check may do before it answers [`Verdict::Unknown`].
#[derive(Clone, Debug)]
pub struct Budget {
    /// Search steps per key partition (one step tries one event). Default: 20 million,
    /// which a well-behaved history of a few thousand operations per key never nears.
    pub max_steps: u64,
    /// Wall-clock time for the whole check. Default: 20 seconds.
    pub time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_steps: 20_000_000,
            time: Duration::from_secs(20),
        }
    }
}

/// The answer of [`super::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some total order of the operations respects real time and the model.
    Linearizable,
    /// No such order exists; the violation says where it breaks.
    Violation(Box<Violation>),
    /// The budget ran out first; the string says where.
    Unknown(String),
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// The violation, if that is the verdict.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Verdict::Violation(v) => Some(v),
            Verdict::Linearizable | Verdict::Unknown(_) => None,
        }
    }
}

/// Why a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two writes reported the same new revision.
    DuplicateRevision {
        revision: Revision,
        first: Entry,
        second: Entry,
    },
    /// `later` began after `earlier` ended, yet reported an older revision (or, for a
    /// write, not a newer one).
    RevisionOrder { earlier: Entry, later: Entry },
    /// A read returned a value no operation in the history wrote.
    NeverWritten { read: Entry },
    /// No order of one key's operations fits the model.
    NotLinearizable(KeyViolation),
}

/// The deepest point the search for one key reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyViolation {
    pub key: Vec<u8>,
    /// The operation whose completion came with no linearization point for it.
    pub op: Entry,
    /// The key's candidate states when it came due, each with why it did not fit.
    pub states: Vec<String>,
    /// The operations linearized just before, oldest first.
    pub before: Vec<Entry>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::Violation(v) => write!(f, "not linearizable: {v}"),
            Verdict::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DuplicateRevision {
                revision,
                first,
                second,
            } => write!(
                f,
                "two writes created revision {revision}:\n  {first}\n  {second}"
            ),
            Violation::RevisionOrder { earlier, later } => write!(
                f,
                "revision went backwards in real time: this ended\n  {earlier}\n\
                 before this began\n  {later}"
            ),
            Violation::NeverWritten { read } => {
                write!(f, "a read saw a value nobody wrote:\n  {read}")
            }
            Violation::NotLinearizable(v) => {
                write!(f, "no linearization of key {} fits:", show(&v.key))?;
                if !v.before.is_empty() {
                    f.write_str("\n after")?;
                    for e in &v.before {
                        write!(f, "\n  {e}")?;
                    }
                }
                write!(f, "\n this operation had no place:\n  {}", v.op)?;
                for s in &v.states {
                    write!(f, "\n  - {s}")?;
                }
                Ok(())
            }
        }
    }
}
