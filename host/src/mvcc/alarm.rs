//! The raised alarms in the store: one record in `kv_meta` ([`META_ALARMS`]), cached in
//! memory, changed by applying alarm requests from the Raft log, so every replica holds
//! the same list. While `NOSPACE` is raised, apply refuses what adds data
//! ([`adds_data`]) with [`Error::NoSpace`], the same way on every replica.

use std::collections::BTreeSet;
use std::sync::PoisonError;

use etch_proto::alarm::{AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use etch_proto::{Error, Mutation, Request, RequestOp, Response};

use super::error::Result;
use super::layout::{META_ALARMS, META_APPLIED, Spaces, decode, encode};
use super::store::{Outcome, Store};

impl Store {
    /// The raised alarms, in order.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        let alarms = self
            .alarm_cell()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        alarms.iter().copied().collect()
    }

    /// Whether a member raised `NOSPACE`. Asked for every command applied and every write
    /// the leader takes: reads the cached set in place, copying nothing.
    pub fn no_space(&self) -> bool {
        let alarms = self
            .alarm_cell()
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        alarms.iter().any(|a| a.alarm == AlarmType::NoSpace)
    }

    /// Applies an alarm change (from the Raft log) and records `applied` in the same batch.
    /// A `Get` lists the alarms. The answer holds the alarm raised or cleared, or nothing
    /// when it already was.
    ///
    /// # Errors
    ///
    /// A storage failure: the node must stop.
    pub fn apply_alarm(&self, req: &AlarmRequest, applied: &[u8]) -> Outcome<Response> {
        let _guard = self.lock();
        let spaces = self.spaces();
        let mut alarms: BTreeSet<AlarmMember> = self.alarms().into_iter().collect();
        let member = AlarmMember {
            member_id: req.member_id,
            alarm: req.alarm,
        };
        let changed = match req.action {
            AlarmAction::Get => false,
            AlarmAction::Activate if req.alarm == AlarmType::None => {
                let mut batch = spaces.db.batch();
                batch.insert(&spaces.meta, META_APPLIED, applied);
                super::gate::commit(batch)?;
                return Ok(Err(Error::InvalidArgument("raise which alarm?".into())));
            }
            AlarmAction::Activate => alarms.insert(member),
            AlarmAction::Deactivate => alarms.remove(&member),
        };
        let mut batch = spaces.db.batch();
        if changed {
            batch.insert(&spaces.meta, META_ALARMS, encode(&alarms)?);
        }
        batch.insert(&spaces.meta, META_APPLIED, applied);
        super::gate::commit(batch)?;
        let mut resp = AlarmResponse::default();
        resp.header.revision = self.revision();
        resp.alarms = match req.action {
            AlarmAction::Get => self.alarms_of(req.alarm),
            _ if changed => vec![member],
            _ => Vec::new(),
        };
        if changed {
            *self
                .alarm_cell()
                .write()
                .unwrap_or_else(PoisonError::into_inner) = alarms;
            tracing::warn!(
                member = format_args!("{:x}", req.member_id),
                alarm = req.alarm.name(),
                action = ?req.action,
                "alarm changed"
            );
        }
        Ok(Ok(Response::Alarm(resp)))
    }

    /// Compacts every keyspace's tables into one run (fjall's major compaction), dropping
    /// what compaction and deletes left behind: etcd's defragmentation, for this node.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn defragment(&self) -> Result<()> {
        let spaces = self.spaces();
        for space in [
            &spaces.current,
            &spaces.versions,
            &spaces.history,
            &spaces.meta,
            &spaces.leases,
            &spaces.lease_keys,
            &spaces.plugin_modules,
            &spaces.plugin_bindings,
        ] {
            // Flush the memtable first, so that the journal behind it can go too.
            space.rotate_memtable_and_wait()?;
            space.major_compact()?;
        }
        Ok(())
    }

    /// Clears every alarm, outside the Raft log: a restored backup founds a new cluster,
    /// whose members are not the ones that raised them.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn clear_alarms(&self) -> Result<()> {
        let _guard = self.lock();
        let spaces = self.spaces();
        let mut batch = spaces.db.batch();
        batch.remove(&spaces.meta, META_ALARMS);
        super::gate::commit(batch)?;
        self.alarm_cell()
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        Ok(())
    }

    /// The raised alarms of kind `alarm` (all with `AlarmType::None`).
    pub fn alarms_of(&self, alarm: AlarmType) -> Vec<AlarmMember> {
        let all = self.alarms();
        all.into_iter()
            .filter(|a| alarm == AlarmType::None || a.alarm == alarm)
            .collect()
    }

    /// Reloads the cached alarms from `spaces` (after an import).
    pub(super) fn reload_alarms(&self, spaces: &Spaces, snapshot: &fjall::Snapshot) -> Result<()> {
        let alarms = load(spaces, snapshot)?;
        *self
            .alarm_cell()
            .write()
            .unwrap_or_else(PoisonError::into_inner) = alarms;
        Ok(())
    }
}

/// The stored alarms of `spaces` (none when none was ever stored).
pub(super) fn load(spaces: &Spaces, snapshot: &fjall::Snapshot) -> Result<BTreeSet<AlarmMember>> {
    match fjall::Readable::get(snapshot, &spaces.meta, META_ALARMS)? {
        Some(raw) => decode(&raw),
        None => Ok(BTreeSet::new()),
    }
}

/// Whether `req` adds data to the store: what `NOSPACE` refuses (a put, a txn that may put,
/// a lease grant, a plugin install). Deletes, compaction and lease revokes free space and
/// go through.
pub fn adds_data(req: &Request) -> bool {
    match req {
        Request::Put(_) | Request::LeaseGrant(_) | Request::PluginInstall(_) => true,
        Request::Txn(t) => txn_puts(t),
        _ => false,
    }
}

/// [`adds_data`] of what a Raft entry carries.
pub fn mutation_adds_data(m: &Mutation) -> bool {
    match m {
        Mutation::Put(_) | Mutation::LeaseGrant(_) => true,
        Mutation::Txn(t) => txn_puts(t),
        Mutation::DeleteRange(_)
        | Mutation::Compact(_)
        | Mutation::LeaseRevoke(_)
        | Mutation::Auth(_)
        | Mutation::Alarm(_) => false,
    }
}

/// Whether a branch of `t`, or of a txn nested in it, puts.
fn txn_puts(t: &etch_proto::TxnRequest) -> bool {
    (t.success.iter().chain(&t.failure)).any(|op| match op {
        RequestOp::Put(_) => true,
        RequestOp::Txn(inner) => txn_puts(inner),
        RequestOp::Range(_) | RequestOp::DeleteRange(_) => false,
    })
}
