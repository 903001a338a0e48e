//! The sequential specification of one key, with what it can know of the global revision.
//!
//! A key's state is its value with that value's `mod_revision`, plus a *floor*: a lower
//! bound on the store revision at this point of the linearization, raised by every
//! revision an operation on this key reported. The store revision only grows, and a write
//! makes it grow, so a write must report a revision above the floor and a read a header
//! revision at or above it. That is what lets a per-key check catch a read that misses a
//! write: a write of revision `r` linearized before a read at header `h >= r` changes the
//! value the read must see, and one linearized after needs `r > h`.
//!
//! An operation with an unknown outcome, if it took effect, wrote at some revision above
//! the key's last known write: its value gets a [`ModRev::AtLeast`] bound that the first
//! read of it refines to the revision that read reports.

use std::fmt;

use etch_proto::Revision;

/// A value interned per partition.
pub(super) type ValueId = u32;

/// What is known of the current value's `mod_revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum ModRev {
    Known(Revision),
    /// Written by an operation whose answer was lost, at this revision or later.
    AtLeast(Revision),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct KeyState {
    pub value: Option<(ValueId, ModRev)>,
    pub floor: Revision,
    /// The newest known revision that wrote this key: a lost write lands above it.
    pub last_write: Revision,
}

/// An operation with its values interned.
#[derive(Clone, Copy, Debug)]
pub(super) enum Call {
    Put(ValueId),
    Get,
    Delete,
    Cas {
        expected: Option<ValueId>,
        new: ValueId,
    },
}

/// A result with its values interned.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ret {
    Put {
        revision: Revision,
    },
    Get {
        value: Option<ValueId>,
        mod_revision: Revision,
        revision: Revision,
    },
    Delete {
        deleted: i64,
        revision: Revision,
    },
    Cas {
        succeeded: bool,
        revision: Revision,
    },
}

/// Why an operation cannot take effect in a state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
    /// The result is of another kind than the call.
    WrongKind,
    /// A write reported a revision at or below the floor.
    RevisionNotNew { floor: Revision, got: Revision },
    /// A read reported a header revision below the floor.
    RevisionBehind { floor: Revision, got: Revision },
    /// A read saw another value (`None`: missing) than the state holds.
    Value {
        holds: Option<ValueId>,
        got: Option<ValueId>,
    },
    /// A read saw the right value with another `mod_revision`.
    ModRevision { holds: ModRev, got: Revision },
    /// A delete or CAS reported the other branch than the state implies.
    Branch,
}

impl Ret {
    /// Whether the result says the key was written.
    pub fn writes(&self) -> bool {
        match *self {
            Ret::Put { .. } => true,
            Ret::Get { .. } => false,
            Ret::Delete { deleted, .. } => deleted > 0,
            Ret::Cas { succeeded, .. } => succeeded,
        }
    }
}

impl KeyState {
    /// Applies `call` with result `ret` (`None`: unknown, assumed to have taken effect).
    pub fn step(&self, call: Call, ret: Option<Ret>) -> Result<KeyState, Why> {
        let holds = self.value.map(|(v, _)| v);
        let Some(ret) = ret else {
            return Ok(self.step_unknown(call, holds));
        };
        let wrote = |value: Option<(ValueId, ModRev)>, revision: Revision| {
            if revision <= self.floor {
                return Err(Why::RevisionNotNew {
                    floor: self.floor,
                    got: revision,
                });
            }
            Ok(KeyState {
                value,
                floor: revision,
                last_write: revision,
            })
        };
        let read = |value: Option<(ValueId, ModRev)>, revision: Revision| {
            if revision < self.floor {
                return Err(Why::RevisionBehind {
                    floor: self.floor,
                    got: revision,
                });
            }
            let last_write = match value {
                Some((_, ModRev::Known(m))) => self.last_write.max(m),
                _ => self.last_write,
            };
            Ok(KeyState {
                value,
                floor: revision,
                last_write,
            })
        };
        match (call, ret) {
            (Call::Put(v), Ret::Put { revision }) => {
                wrote(Some((v, ModRev::Known(revision))), revision)
            }
            (
                Call::Get,
                Ret::Get {
                    value,
                    mod_revision,
                    revision,
                },
            ) => {
                if value != holds {
                    return Err(Why::Value { holds, got: value });
                }
                let seen = match self.value {
                    None => None,
                    Some((v, m)) => {
                        let fits = match m {
                            ModRev::Known(known) => known == mod_revision,
                            ModRev::AtLeast(low) => low <= mod_revision,
                        };
                        if !fits || mod_revision > revision {
                            return Err(Why::ModRevision {
                                holds: m,
                                got: mod_revision,
                            });
                        }
                        Some((v, ModRev::Known(mod_revision)))
                    }
                };
                read(seen, revision)
            }
            (Call::Delete, Ret::Delete { deleted, revision }) => match (holds, deleted) {
                (Some(_), 1) => wrote(None, revision),
                (None, 0) => read(None, revision),
                _ => Err(Why::Branch),
            },
            (
                Call::Cas { expected, new },
                Ret::Cas {
                    succeeded,
                    revision,
                },
            ) => match (expected == holds, succeeded) {
                (true, true) => wrote(Some((new, ModRev::Known(revision))), revision),
                (false, false) => read(self.value, revision),
                _ => Err(Why::Branch),
            },
            _ => Err(Why::WrongKind),
        }
    }

    /// An operation whose answer was lost takes effect: a write lands above the last
    /// known write of the key.
    ///
    /// Neither the floor nor the last write moves. Raising them would be sound, but the
    /// search's pruning (see `search`) relies on a lost write commuting with reads (which
    /// raise the floor) and on the state after a lost write not depending on how many
    /// came before it.
    fn step_unknown(&self, call: Call, holds: Option<ValueId>) -> KeyState {
        let above = ModRev::AtLeast(self.last_write + 1);
        let written = |value| KeyState { value, ..*self };
        match call {
            Call::Put(v) => written(Some((v, above))),
            Call::Cas { expected, new } if expected == holds => written(Some((new, above))),
            Call::Delete if holds.is_some() => written(None),
            Call::Get | Call::Delete | Call::Cas { .. } => *self,
        }
    }
}

impl fmt::Display for ModRev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModRev::Known(r) => write!(f, "{r}"),
            ModRev::AtLeast(r) => write!(f, ">={r}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: KeyState = KeyState {
        value: None,
        floor: 0,
        last_write: 0,
    };

    #[test]
    fn a_put_must_advance_the_revision() {
        let s = EMPTY
            .step(Call::Put(1), Some(Ret::Put { revision: 3 }))
            .expect("first put");
        assert_eq!(s.value, Some((1, ModRev::Known(3))));
        let again = s.step(Call::Put(2), Some(Ret::Put { revision: 3 }));
        assert_eq!(again, Err(Why::RevisionNotNew { floor: 3, got: 3 }));
    }

    #[test]
    fn an_unknown_put_is_refined_by_the_first_read() {
        let s = EMPTY.step(Call::Put(1), None).expect("unknown put");
        assert_eq!(s.value, Some((1, ModRev::AtLeast(1))));
        let get = |mod_revision| Ret::Get {
            value: Some(1),
            mod_revision,
            revision: 5,
        };
        let s = s.step(Call::Get, Some(get(4))).expect("read refines");
        assert_eq!(s.value, Some((1, ModRev::Known(4))));
        assert!(s.step(Call::Get, Some(get(5))).is_err());
    }

    #[test]
    fn a_failed_compare_reads_without_writing() {
        let cas = Call::Cas {
            expected: Some(7),
            new: 8,
        };
        let ret = |succeeded| {
            Some(Ret::Cas {
                succeeded,
                revision: 1,
            })
        };
        assert_eq!(
            EMPTY.step(cas, ret(false)),
            Ok(KeyState { floor: 1, ..EMPTY })
        );
        assert_eq!(EMPTY.step(cas, ret(true)), Err(Why::Branch));
    }
}
