//! The lease requests as builders: grant, revoke, time-to-live and list. Keeping a lease
//! alive is a stream: see `lease_keep_alive.rs`.
//!
//! A lease's keys ([`Put::lease`](crate::Put::lease)) are deleted when it is revoked or
//! expires. Granting and revoking go through the Raft log; the client follows `NotLeader`
//! as for any write.

use std::future::IntoFuture;

use etch_proto::lease::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use etch_proto::{LeaseId, Request, Response};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{ResponseFuture, request_future};

impl Client {
    /// Grants a lease of `ttl` seconds (raised to
    /// [`MIN_LEASE_TTL`](etch_proto::lease::MIN_LEASE_TTL) by the node). The node picks the
    /// id unless [`LeaseGrant::id`] sets one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let lease = client.lease_grant(60).await?;
    /// client.put("/svc/a", "10.0.0.1").lease(lease.id).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_grant(&self, ttl: i64) -> LeaseGrant<'_> {
        LeaseGrant {
            client: self,
            req: LeaseGrantRequest { ttl, id: 0 },
        }
    }

    /// Revokes lease `id`, deleting its keys in one revision.
    ///
    /// # Errors
    ///
    /// `LeaseNotFound` when there is no such lease.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// client.lease_revoke(0x694d77aa9e38260f).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_revoke(&self, id: LeaseId) -> LeaseRevoke<'_> {
        LeaseRevoke {
            client: self,
            req: LeaseRevokeRequest { id },
        }
    }

    /// How long lease `id` has left (`ttl == -1` when it has expired or never existed),
    /// with its keys when [`LeaseTimeToLive::keys`] is set.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let left = client.lease_time_to_live(0x694d77aa9e38260f).keys().await?;
    /// println!("{}s left, {} keys", left.ttl, left.keys.len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_time_to_live(&self, id: LeaseId) -> LeaseTimeToLive<'_> {
        LeaseTimeToLive {
            client: self,
            req: LeaseTimeToLiveRequest { id, keys: false },
        }
    }

    /// Every live lease's id.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// for id in client.lease_leases().await?.leases {
    ///     println!("{id:016x}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_leases(&self) -> LeaseLeases<'_> {
        LeaseLeases {
            client: self,
            req: LeaseLeasesRequest {},
        }
    }
}

/// A lease grant being built; see [`Client::lease_grant`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct LeaseGrant<'a> {
    client: &'a Client,
    req: LeaseGrantRequest,
}

impl LeaseGrant<'_> {
    /// Grant the lease under this id. Default: `0`, the node chooses.
    pub fn id(mut self, id: LeaseId) -> Self {
        self.req.id = id;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::LeaseGrant(self.req)
    }
}
request_future!(LeaseGrant, LeaseGrant, LeaseGrantResponse);

/// A lease revocation being built; see [`Client::lease_revoke`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct LeaseRevoke<'a> {
    client: &'a Client,
    req: LeaseRevokeRequest,
}

impl LeaseRevoke<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::LeaseRevoke(self.req)
    }
}
request_future!(LeaseRevoke, LeaseRevoke, LeaseRevokeResponse);

/// A lease time-to-live query being built; see [`Client::lease_time_to_live`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct LeaseTimeToLive<'a> {
    client: &'a Client,
    req: LeaseTimeToLiveRequest,
}

impl LeaseTimeToLive<'_> {
    /// Also list the keys attached to the lease. Default: off.
    pub fn keys(mut self) -> Self {
        self.req.keys = true;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::LeaseTimeToLive(self.req)
    }
}
request_future!(LeaseTimeToLive, LeaseTimeToLive, LeaseTimeToLiveResponse);

/// A lease listing being built; see [`Client::lease_leases`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct LeaseLeases<'a> {
    client: &'a Client,
    req: LeaseLeasesRequest,
}

impl LeaseLeases<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::LeaseLeases(self.req)
    }
}
request_future!(LeaseLeases, LeaseLeases, LeaseLeasesResponse);
