//! The replicated half of leases: which leases exist, the TTL each was granted with, and the
//! keys attached to each. Deadlines are not here (they are the leader's, see `crate::lease`),
//! so applying a grant or a revoke is as deterministic as a put.
//!
//! Attaching and detaching happen in [`super::write::WriteTx::write`], which compares each
//! written key's lease before and after the entry; this file grants and revokes.

use etch_proto::lease::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse, MIN_LEASE_TTL,
};
use etch_proto::limits::MAX_LEASE_TTL;
use etch_proto::{DeleteRangeRequest, Error as ProtoError, LeaseId, Response};
use fjall::{OwnedWriteBatch, Readable};

use super::error::Result;
use super::keycode::{decode_rev, encode_rev};
use super::layout::{Lease, decode, encode, lease_key};
use super::store::{Outcome, Store};
use super::view::View;
use super::write::WriteTx;

impl View {
    /// The lease `id`, if granted and not yet revoked.
    pub fn lease(&self, id: LeaseId) -> Result<Option<Lease>> {
        match self.snapshot().get(&self.spaces().leases, encode_rev(id))? {
            Some(raw) => Ok(Some(decode(&raw)?)),
            None => Ok(None),
        }
    }

    /// The keys attached to lease `id`, in key order.
    pub fn lease_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        let prefix = encode_rev(id);
        let mut keys = Vec::new();
        for item in self.snapshot().prefix(&self.spaces().lease_keys, prefix) {
            let key = item.key()?;
            keys.push(key[prefix.len()..].to_vec());
        }
        Ok(keys)
    }

    /// Every lease, in id order, with its granted TTL.
    pub fn leases(&self) -> Result<Vec<(LeaseId, i64)>> {
        let mut out = Vec::new();
        for item in self.snapshot().iter(&self.spaces().leases) {
            let (id, raw) = item.into_inner()?;
            out.push((decode_rev(&id)?, decode::<Lease>(&raw)?.ttl));
        }
        Ok(out)
    }
}

/// Grants `req.id` (chosen by the leader before proposing: never 0 here) with its TTL raised
/// to [`MIN_LEASE_TTL`]. The revision does not move.
pub(crate) fn grant(
    view: &View,
    batch: &mut OwnedWriteBatch,
    req: &LeaseGrantRequest,
) -> Outcome<Response> {
    if req.id <= 0 {
        return Ok(Err(ProtoError::InvalidArgument(format!(
            "lease id {} is not positive",
            req.id
        ))));
    }
    if req.ttl > MAX_LEASE_TTL {
        return Ok(Err(ProtoError::InvalidArgument(format!(
            "lease TTL {} exceeds the maximum of {MAX_LEASE_TTL} seconds",
            req.ttl
        ))));
    }
    if view.lease(req.id)?.is_some() {
        return Ok(Err(ProtoError::InvalidArgument(format!(
            "lease {:x} already exists",
            req.id
        ))));
    }
    let ttl = req.ttl.max(MIN_LEASE_TTL);
    batch.insert(
        &view.spaces().leases,
        encode_rev(req.id),
        encode(&Lease { ttl })?,
    );
    let mut resp = LeaseGrantResponse {
        id: req.id,
        ttl,
        ..Default::default()
    };
    resp.header.revision = view.revision;
    Ok(Ok(Response::LeaseGrant(resp)))
}

/// Revokes lease `id`: every attached key is deleted at one new revision (none if no key is
/// attached), and the lease is forgotten.
pub(crate) fn revoke(view: &View, batch: &mut OwnedWriteBatch, id: LeaseId) -> Outcome<Response> {
    if view.lease(id)?.is_none() {
        return Ok(Err(ProtoError::LeaseNotFound(id)));
    }
    let keys = view.lease_keys(id)?;
    let mut tx = WriteTx::new(view);
    for key in &keys {
        tx.delete_range(&DeleteRangeRequest {
            key: key.clone(),
            ..Default::default()
        })?;
    }
    let revision = tx.write(batch)?;
    let spaces = view.spaces();
    for key in &keys {
        batch.remove(&spaces.lease_keys, lease_key(id, key));
    }
    batch.remove(&spaces.leases, encode_rev(id));
    let mut resp = LeaseRevokeResponse::default();
    resp.header.revision = revision;
    Ok(Ok(Response::LeaseRevoke(resp)))
}

impl Store {
    /// The TTL lease `id` was granted with, or `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn lease(&self, id: LeaseId) -> Result<Option<i64>> {
        Ok(View::open(&self.spaces())?.lease(id)?.map(|l| l.ttl))
    }

    /// The keys attached to lease `id`, in key order.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn lease_keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>> {
        View::open(&self.spaces())?.lease_keys(id)
    }

    /// Every lease with its granted TTL, in id order.
    ///
    /// # Errors
    ///
    /// A storage failure.
    pub fn leases(&self) -> Result<Vec<(LeaseId, i64)>> {
        View::open(&self.spaces())?.leases()
    }
}

/// Whether lease `id` exists in `view` (0, "no lease", always does).
pub(crate) fn check_lease(view: &View, id: LeaseId) -> Outcome<()> {
    if id == 0 || view.lease(id)?.is_some() {
        Ok(Ok(()))
    } else {
        Ok(Err(ProtoError::LeaseNotFound(id)))
    }
}
