//! One reactor step on the leader: read the committed history after the reactor's cursor,
//! pick the events its binding wants, and hand them to the plugin as one batch.
//!
//! A step reads one snapshot of the applied state and scans revisions `from..` in order,
//! at most [`MAX_SCAN`] of them, until it has [`MAX_EVENTS`] events or the next revision's
//! would take the batch past half the binding's memory cap (a revision is never split:
//! its events go in one batch). The other half is for the guest's copy of the batch and
//! its own work: the host's batch and the guest's copy of it must both fit the cap. A
//! revision whose events alone are over that can never be handed over: the step fails
//! with [`PluginError::RevisionTooLarge`], which `plugin list` shows as a stalled reactor
//! (issue 12: a reactor behind a 599,191-event revision was stuck for ever, silently). From each revision it keeps the events under the
//! binding's prefix, leaving out keys under [`RESERVED_PREFIX`]; a revision that put the
//! reactor's own checkpoint key is the reactor's own write (see `crate::node::reactor`) and
//! is skipped whole. The plugin's `kv` reads see the same snapshot. What to do with the
//! outcome (propose the staged writes with the new checkpoint, or back off) is the
//! caller's business; this file only reads and calls.

use std::sync::Arc;

use etch_proto::Revision;
use etch_proto::limits::Limits;
use etch_proto::watch::EventType;

use super::budget::RECORD_OVERHEAD;
use super::ctx::{self, Ctx};
use super::error::PluginError;
use super::gate::Plugins;
use super::reactor::{self, Event, Outcome, RESERVED_PREFIX};
use super::runtime::Compiled;
use super::validator::OpKind;
use crate::mvcc::{self, BindingRecord, Store};

/// Most events in one batch (unless one revision alone has more).
pub const MAX_EVENTS: usize = 256;
/// Most revisions one step scans.
pub const MAX_SCAN: i64 = 4096;

/// The key holding reactor `name`'s checkpoint: the last revision it has processed, in
/// decimal.
pub fn checkpoint_key(name: &str) -> Vec<u8> {
    let mut key = RESERVED_PREFIX.to_vec();
    key.extend_from_slice(b"reactor/");
    key.extend_from_slice(name.as_bytes());
    key.extend_from_slice(b"/checkpoint");
    key
}

/// A reactor's checkpoint as stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every revision up to this one has been processed (0: none yet).
    pub revision: Revision,
    /// The checkpoint key's `mod_revision` (0: no key): the next checkpoint write is
    /// conditional on it, so that two leaders can never both advance it from here.
    pub mod_revision: Revision,
}

/// What one step found.
#[derive(Debug)]
pub enum Step {
    /// Revisions up to `through` hold nothing for the reactor.
    Idle { through: Revision },
    /// The reactor took the events of revisions up to `through` and returned `ok`.
    Batch {
        through: Revision,
        events: usize,
        outcome: Outcome,
    },
    /// The history the reactor needs next was compacted: nothing below `floor` is left.
    Compacted { floor: Revision },
}

/// Reads reactor `name`'s checkpoint.
///
/// # Errors
///
/// A storage failure, or a checkpoint value that is not a revision.
pub fn read_checkpoint(store: &Store, name: &str) -> mvcc::Result<Checkpoint> {
    let view = store.view()?;
    let Some(kv) = view.get(&checkpoint_key(name))? else {
        return Ok(Checkpoint::default());
    };
    let revision = std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            mvcc::Error::Corrupt(format!("reactor {name}: bad checkpoint {:?}", kv.value))
        })?;
    Ok(Checkpoint {
        revision,
        mod_revision: kv.mod_revision,
    })
}

impl Plugins {
    /// Runs one step of reactor `record` from revision `from` (see the module doc); what it
    /// stages must fit one transaction under `limits`. Blocking: call it off the async
    /// runtime.
    ///
    /// # Errors
    ///
    /// The plugin failed (trap, fuel, deadline, memory, `err`, staged too much), the next
    /// revision is too large for it, or storage failed.
    pub fn react(
        &self,
        store: &Store,
        record: &BindingRecord,
        from: Revision,
        limits: &Limits,
    ) -> Result<Step, PluginError> {
        let host = |e: mvcc::Error| PluginError::Host(e.to_string());
        let view = store.view().map_err(host)?;
        let binding = &record.binding;
        let own = checkpoint_key(&binding.name);
        let last = view.revision.min(from.saturating_add(MAX_SCAN - 1));
        let max_bytes = ((binding.limits.memory_mb as usize) << 20) / 2;
        let mut events = Vec::new();
        let mut bytes = 0;
        let mut through = from - 1;
        let is_own = |key: &[u8]| key == own.as_slice();
        let wanted_key =
            |key: &[u8]| key.starts_with(&binding.prefix) && !key.starts_with(RESERVED_PREFIX);
        for rev in from..=last {
            // The reactor's own write first (its checkpoint is the last key of it): read
            // whole, a large batch of its writes would otherwise look too large to take.
            let (own_write, changes) = match view
                .watch_events_where(rev, is_own, usize::MAX)
                .and_then(|own_write| {
                    // Read no more of a revision than a call can take: a huge one (a delete
                    // of a whole prefix, say) is never held in full.
                    let changes = view.watch_events_where(rev, wanted_key, max_bytes)?;
                    Ok(own_write.and_then(|own_write| Ok((own_write, changes?))))
                })
                .map_err(host)?
            {
                Ok(read) => read,
                Err(etch_proto::Error::Compacted { compact_revision }) => {
                    return Ok(Step::Compacted {
                        floor: compact_revision,
                    });
                }
                Err(e) => return Err(PluginError::Host(e.to_string())),
            };
            if (own_write.events.iter()).any(|c| c.kind == EventType::Put) {
                through = rev;
                continue;
            }
            let cut = changes.cut;
            let principal = changes.principal;
            let wanted: Vec<Event> = (changes.events.into_iter())
                .map(|c| Event {
                    kind: match c.kind {
                        EventType::Put => OpKind::Put,
                        EventType::Delete => OpKind::Delete,
                    },
                    kv: ctx::to_wit(c.kv),
                    prev: c.prev_kv.map(ctx::to_wit),
                    principal: principal.clone(),
                })
                .collect();
            if wanted.is_empty() {
                through = rev;
                continue;
            }
            let rev_bytes: usize = wanted.iter().map(event_bytes).sum();
            if cut || bytes + rev_bytes > max_bytes {
                if events.is_empty() {
                    // When the read was cut, these are the events read before it stopped.
                    let e = PluginError::RevisionTooLarge {
                        revision: rev,
                        events: wanted.len(),
                        bytes: rev_bytes,
                        max_bytes,
                    };
                    self.count(&binding.name, Some(&e));
                    return Err(e);
                }
                // Hand over what came before; this revision starts the next batch.
                break;
            }
            through = rev;
            bytes += rev_bytes;
            events.extend(wanted);
            if events.len() >= MAX_EVENTS {
                break;
            }
        }
        if events.is_empty() {
            return Ok(Step::Idle { through });
        }
        let started = std::time::Instant::now();
        let result = self.compiled(store, record).and_then(|compiled| {
            let Compiled::Reactor(pre) = compiled else {
                return Err(PluginError::Invalid("not a reactor".into()));
            };
            let call_limits = self.limits_of(record);
            let mut ctx = Ctx::new(binding, Arc::new(view), call_limits.memory_mb);
            ctx.stage_limits = *limits;
            let cancel = self.cancel_of(record);
            reactor::call(self.runtime(), &pre, ctx, &call_limits, &cancel, &events)
        });
        self.count(&binding.name, result.as_ref().err());
        let (outcome, cause) = match &result {
            Ok(_) => ("allowed", None),
            Err(e) => ("failed", Some(e.cause())),
        };
        crate::metrics::plugin_call(&binding.name, "react", outcome, cause, started.elapsed());
        tracing::debug!(plugin = %binding.name, from, through, events = events.len(), elapsed = ?started.elapsed(), ok = result.is_ok(), "reactor batch");
        Ok(Step::Batch {
            through,
            events: events.len(),
            outcome: result?,
        })
    }
}

/// The bytes one event takes on the host (and, about, in the guest once lowered).
fn event_bytes(event: &Event) -> usize {
    let kv = |kv: &ctx::KeyValue| kv.key.len() + kv.value.len() + RECORD_OVERHEAD;
    kv(&event.kv) + event.prev.as_ref().map_or(0, kv) + event.principal.len()
}
