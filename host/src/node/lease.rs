//! Lease requests on the leader: grant (choosing the id), revoke, keep-alive, time-to-live,
//! list. Keep-alive and time-to-live read the leader's deadlines, so they run on the leader
//! like writes (a follower forwards them).

use std::hash::{BuildHasher, Hasher};
use std::time::{Instant, SystemTime};

use etch_proto::lease::{
    LeaseGrantRequest, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etch_proto::{Error, LeaseId, Mutation, Response};

use super::route::Checked;
use super::{Node, blocking, storage};
use crate::lease::seconds_left;

impl Node {
    /// Grants a lease; an id of 0 is replaced by a fresh one *before* proposing, so that
    /// applying the entry needs no randomness.
    pub(super) async fn lease_grant(
        &self,
        mut grant: LeaseGrantRequest,
        checked: Checked,
    ) -> Result<Response, Error> {
        if grant.id == 0 {
            grant.id = self.fresh_lease_id().await?;
        }
        let response = self.propose(Mutation::LeaseGrant(grant), checked).await?;
        if let Response::LeaseGrant(granted) = &response {
            self.lessor().grant(granted.id, granted.ttl, Instant::now());
        }
        Ok(response)
    }

    pub(super) async fn lease_revoke(
        &self,
        revoke: LeaseRevokeRequest,
        checked: Checked,
    ) -> Result<Response, Error> {
        let id = revoke.id;
        let response = self.propose(Mutation::LeaseRevoke(revoke), checked).await?;
        self.lessor().revoked(id);
        Ok(response)
    }

    /// Refreshes a lease's deadline to now + its TTL. Nothing is logged.
    pub(super) fn lease_keep_alive(&self, id: LeaseId) -> Result<Response, Error> {
        let ttl = self.store().lease(id).map_err(storage)?;
        let Some(ttl) = ttl else {
            return Err(Error::LeaseNotFound(id));
        };
        // Leading, but the expiry loop has not taken over the deadlines yet: the takeover,
        // still to come, gives every lease a full TTL from then, which is at least what this
        // keep-alive asks for.
        let taking_over = self.lessor().term().is_none();
        if !taking_over && !self.lessor().keep_alive(id, ttl, Instant::now()) {
            return Err(Error::LeaseNotFound(id));
        }
        Ok(Response::LeaseKeepAlive(LeaseKeepAliveResponse {
            id,
            ttl,
            ..Default::default()
        }))
    }

    pub(super) async fn lease_time_to_live(
        &self,
        req: LeaseTimeToLiveRequest,
    ) -> Result<Response, Error> {
        self.confirm_leadership().await?;
        let store = self.store().clone();
        let id = req.id;
        let (granted, keys) = blocking(move || {
            let granted = store.lease(id)?;
            let keys = match granted {
                Some(_) if req.keys => store.lease_keys(id)?,
                _ => Vec::new(),
            };
            Ok((granted, keys))
        })
        .await?;
        let mut resp = LeaseTimeToLiveResponse {
            id,
            ttl: -1,
            ..Default::default()
        };
        if let Some(granted) = granted {
            resp.granted_ttl = granted;
            resp.ttl = match self.lessor().remaining(id, Instant::now()) {
                Some(left) => seconds_left(left),
                // Granted after the last expiry check: the whole TTL is left.
                None => granted,
            };
            resp.keys = keys.into_iter().map(serde_bytes::ByteBuf::from).collect();
        }
        resp.header.revision = self.store().revision();
        Ok(Response::LeaseTimeToLive(resp))
    }

    pub(super) async fn lease_leases(&self) -> Result<Response, Error> {
        self.confirm_leadership().await?;
        let store = self.store().clone();
        let leases = blocking(move || store.leases()).await?;
        let mut resp = LeaseLeasesResponse {
            leases: leases.into_iter().map(|(id, _)| id).collect(),
            ..Default::default()
        };
        resp.header.revision = self.store().revision();
        Ok(Response::LeaseLeases(resp))
    }

    /// A positive id not in use: random bits from std's randomly seeded hasher, mixed with
    /// the clock and the node id. Apply refuses a duplicate, so a collision between two
    /// grants in flight fails one of them instead of merging them.
    async fn fresh_lease_id(&self) -> Result<LeaseId, Error> {
        loop {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.id());
            let nanos = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            h.write_u128(nanos);
            // Positive and non-zero: clear the sign bit, and skip 0.
            let id = (h.finish() >> 1) as LeaseId;
            if id == 0 {
                continue;
            }
            let store = self.store().clone();
            if blocking(move || store.lease(id)).await?.is_none() {
                return Ok(id);
            }
        }
    }
}
