//! The membership requests (etcdctl's `member` verbs) as builders: `.await` them, or take the
//! wire [`Request`] with `into_request`.
//!
//! Adding, promoting and removing go through the Raft log on the leader; the client follows
//! `NotLeader` as for any write. Listing is answered by whichever node is asked.

use std::future::IntoFuture;

use etch_proto::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberRemoveRequest, MemberUpdateRequest, NodeId, Request, Response,
};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::{ResponseFuture, request_future};

impl Client {
    /// The cluster's members, learners included. A member whose `client_addr` is empty has
    /// been added but not heard from yet.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// for m in client.member_list().await?.members {
    ///     println!("{:x} {} {}", m.id, m.name, m.peer_addr);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_list(&self) -> MemberList<'_> {
        MemberList {
            client: self,
            req: MemberListRequest {},
        }
    }

    /// Adds a voting member `name` whose peer endpoint is `peer_addr` (host:port), or a
    /// learner with [`MemberAdd::learner`]. Start the new node afterwards with
    /// `--initial-cluster-state existing`.
    ///
    /// # Errors
    ///
    /// The node answers `InvalidArgument` when the name is taken or a field is empty.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let added = client.member_add("n4", "10.0.0.4:7380").learner().await?;
    /// println!("added {:x}", added.member.id);
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_add(
        &self,
        name: impl Into<String>,
        peer_addr: impl Into<String>,
    ) -> MemberAdd<'_> {
        MemberAdd {
            client: self,
            req: MemberAddRequest {
                name: name.into(),
                peer_addr: peer_addr.into(),
                is_learner: false,
            },
        }
    }

    /// Makes learner `id` a voter; refused until it has caught up with the leader.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let members = client.member_promote(0x8e9e05c52164694d).await?.members;
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_promote(&self, id: NodeId) -> MemberPromote<'_> {
        MemberPromote {
            client: self,
            req: MemberPromoteRequest { id },
        }
    }

    /// Removes member `id` (voter or learner) from the cluster.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// let left = client.member_remove(0x8e9e05c52164694d).await?.members.len();
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_remove(&self, id: NodeId) -> MemberRemove<'_> {
        MemberRemove {
            client: self,
            req: MemberRemoveRequest { id },
        }
    }
}

impl Client {
    /// Moves member `id`'s peer endpoint to `peer_addr` (host:port): start the member
    /// listening there. Its name, ID and certificate stay.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo(client: etch_client::Client) -> etch_client::Result<()> {
    /// client.member_update(0x8e9e05c52164694d, "10.0.0.7:2380").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn member_update(&self, id: NodeId, peer_addr: impl Into<String>) -> MemberUpdate<'_> {
        MemberUpdate {
            client: self,
            req: MemberUpdateRequest {
                id,
                peer_addr: peer_addr.into(),
            },
        }
    }
}

/// A member update being built; see [`Client::member_update`]. Answers with the members
/// after the change.
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct MemberUpdate<'a> {
    client: &'a Client,
    req: MemberUpdateRequest,
}

impl MemberUpdate<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::MemberUpdate(self.req)
    }
}
request_future!(MemberUpdate, MemberUpdate, MemberListResponse);

/// A member list being built; see [`Client::member_list`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct MemberList<'a> {
    client: &'a Client,
    req: MemberListRequest,
}

impl MemberList<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::MemberList(self.req)
    }
}
request_future!(MemberList, MemberList, MemberListResponse);

/// A member addition being built; see [`Client::member_add`].
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct MemberAdd<'a> {
    client: &'a Client,
    req: MemberAddRequest,
}

impl MemberAdd<'_> {
    /// Add the member as a learner, which receives the log but does not vote until
    /// promoted. Default: a voter.
    pub fn learner(mut self) -> Self {
        self.req.is_learner = true;
        self
    }

    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::MemberAdd(self.req)
    }
}
request_future!(MemberAdd, MemberAdd, MemberAddResponse);

/// A learner promotion being built; see [`Client::member_promote`]. Answers with the
/// members after the change.
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct MemberPromote<'a> {
    client: &'a Client,
    req: MemberPromoteRequest,
}

impl MemberPromote<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::MemberPromote(self.req)
    }
}
request_future!(MemberPromote, MemberPromote, MemberListResponse);

/// A member removal being built; see [`Client::member_remove`]. Answers with the members
/// after the change.
#[must_use = "a request does nothing until you `.await` it"]
#[derive(Debug)]
pub struct MemberRemove<'a> {
    client: &'a Client,
    req: MemberRemoveRequest,
}

impl MemberRemove<'_> {
    /// The wire request this builder sends.
    pub fn into_request(self) -> Request {
        Request::MemberRemove(self.req)
    }
}
request_future!(MemberRemove, MemberRemove, MemberListResponse);
