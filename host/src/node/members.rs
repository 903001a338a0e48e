//! Membership changes (etcdctl's `member` verbs), run on the leader.
//!
//! A member is added as an openraft learner first; a voter is then made in the same request
//! (like `etcdctl member add`), a learner only by a later promote, which is refused until the
//! learner has caught up with the leader's log. Removing a member removes it from the voters
//! and from the node set in one joint-consensus change.

use std::collections::BTreeSet;

use etch_proto::{
    Error, MemberAddRequest, MemberAddResponse, MemberListResponse, MemberUpdateRequest, Response,
};
use openraft::ChangeMembers;

use super::Node;
use crate::raft::Member;
use crate::raft::network::PeerError;
use crate::raft::wire::PeerRequest;
use crate::{NodeId, node_id};

/// A learner may be promoted once it has acknowledged this share of the leader's log (in
/// percent), etcd's rule: under steady load a learner always trails by a few round trips of
/// entries, so an absolute bound could refuse it forever.
const PROMOTE_READY_PERCENT: u64 = 90;

/// The peer address `member <verb>` was given, as `host:port`: etcd's clients send URLs
/// (`https://host:port`), a member's peer address has no scheme.
fn peer_address(verb: &str, given: &str) -> Result<String, Error> {
    let addr = super::strip_scheme(given);
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(addr),
        _ => Err(Error::InvalidArgument(format!(
            "member {verb} needs a peer address as host:port, not {given:?}"
        ))),
    }
}

impl Node {
    /// The membership, with every member's client address (asked of members whose address
    /// the membership does not record; a member that does not answer shows none).
    pub(super) async fn member_list(&self) -> MemberListResponse {
        self.member_list_but(None).await
    }

    /// [`Node::member_list`], without asking member `unstarted` for its client address: a
    /// member just added by name is started after the add answers (etcd's order), so
    /// asking it only waited out the ask's timeout, a second added to every `member add`
    /// and to the time a new member takes to catch up.
    async fn member_list_but(&self, unstarted: Option<NodeId>) -> MemberListResponse {
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
        let nodes: Vec<(NodeId, Member)> =
            membership.nodes().map(|(id, m)| (*id, m.clone())).collect();
        let lookups = nodes.iter().map(|(id, _)| async move {
            if Some(*id) == unstarted {
                return None;
            }
            self.client_addr_of(*id).await
        });
        let client_addrs = futures::future::join_all(lookups).await;
        let members = nodes
            .into_iter()
            .zip(client_addrs)
            .map(|((id, m), client_addr)| etch_proto::Member {
                id,
                name: m.name,
                peer_addr: m.peer_addr,
                client_addr: client_addr.unwrap_or_default(),
                is_learner: learners.contains(&id),
            })
            .collect();
        MemberListResponse {
            header: Default::default(),
            members,
        }
    }

    pub(super) async fn member_add(&self, add: MemberAddRequest) -> Result<Response, Error> {
        let peer_addr = peer_address("add", &add.peer_addr)?;
        // Named, it is started after this answers; unnamed, it had to be running already.
        let (name, started) = if add.name.is_empty() {
            (self.name_at(&peer_addr).await?, true)
        } else {
            (add.name, false)
        };
        let id = node_id(&name);
        if self.member(id).is_some() {
            return Err(Error::InvalidArgument(format!(
                "member {name} ({id:x}) already exists"
            )));
        }
        let member = Member {
            name,
            peer_addr,
            client_addr: String::new(),
        };
        tracing::info!(%member, learner = add.is_learner, "adding member");
        let added = self.raft().add_learner(id, member, false);
        let added = tokio::time::timeout(self.options().request_timeout, added)
            .await
            .map_err(|_| Error::Timeout)?;
        if let Err(e) = added {
            return Err(self.write_error(e).await);
        }
        if !add.is_learner {
            let voters = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            self.change(voters).await?;
        }
        let members = (self.member_list_but((!started).then_some(id)).await).members;
        let member = members
            .iter()
            .find(|m| m.id == id)
            .cloned()
            .unwrap_or_default();
        Ok(Response::MemberAdd(MemberAddResponse {
            header: Default::default(),
            member,
            members,
        }))
    }

    /// The name of the node running at `peer_addr`, from its certificate: a member added
    /// by address alone (etcd's `MemberAdd`) must be started before it is added.
    async fn name_at(&self, peer_addr: &str) -> Result<String, Error> {
        let asked = self.peers().node_name_at(peer_addr);
        let answer = tokio::time::timeout(self.options().request_timeout, asked).await;
        let reason = match answer {
            Ok(Ok(name)) => return Ok(name),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no handshake with {peer_addr} in time"),
        };
        Err(Error::InvalidArgument(format!(
            "a member added without a name must be running: etch takes its name from its node certificate, and {reason}; start it first with --initial-cluster-state existing, or name it: etchctl member add NAME --peer-urls {peer_addr}"
        )))
    }

    /// Moves a member's peer endpoint: its entry in the membership is replaced with the new
    /// address (its name, id and certificate stay), through a joint membership change as
    /// any other. Peers connect to the new address from then on.
    pub(super) async fn member_update(
        &self,
        update: MemberUpdateRequest,
    ) -> Result<Response, Error> {
        let Some(old) = self.member(update.id) else {
            return Err(Error::InvalidArgument(format!(
                "member {:x} not found",
                update.id
            )));
        };
        let peer_addr = peer_address("update", &update.peer_addr)?;
        let member = Member { peer_addr, ..old };
        tracing::info!(%member, "updating member");
        let nodes = std::collections::BTreeMap::from([(update.id, member)]);
        self.change(ChangeMembers::SetNodes(nodes)).await?;
        Ok(Response::MemberUpdate(self.member_list().await))
    }

    pub(super) async fn member_promote(&self, id: NodeId) -> Result<Response, Error> {
        let metrics = self.raft().metrics().borrow().clone();
        if !metrics
            .membership_config
            .membership()
            .learner_ids()
            .any(|l| l == id)
        {
            return Err(Error::InvalidArgument(format!(
                "member {id:x} is not a learner"
            )));
        }
        let last = metrics.last_log_index.unwrap_or(0);
        let matched = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).cloned())
            .flatten()
            .map(|l| l.index);
        // A learner that has never acknowledged an entry is not running: promoting it would
        // add a voter that cannot vote.
        let in_sync = matched.is_some_and(|m| m * 100 >= last * PROMOTE_READY_PERCENT);
        if !in_sync {
            let at = matched.map_or_else(|| "nothing yet".to_owned(), |m| m.to_string());
            return Err(Error::InvalidArgument(format!(
                "can only promote a learner member which is in sync with leader (learner at {at}, leader at {last})"
            )));
        }
        tracing::info!(member = format_args!("{id:x}"), "promoting learner");
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await?;
        Ok(Response::MemberPromote(self.member_list().await))
    }

    pub(super) async fn member_remove(&self, id: NodeId) -> Result<Response, Error> {
        let Some(member) = self.member(id) else {
            return Err(Error::InvalidArgument(format!("member {id:x} not found")));
        };
        let metrics = self.raft().metrics().borrow().clone();
        let is_voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == id);
        tracing::info!(%member, "removing member");
        // One membership change: with `retain == false` a removed voter leaves the node set
        // too. (Two changes in a row broke when the member was this leader: the first makes
        // it step down, and the second then ran on a node that no longer leads.)
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change(change).await?;
        Ok(Response::MemberRemove(self.member_list().await))
    }

    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), Error> {
        let changing = self.raft().change_membership(change, false);
        match tokio::time::timeout(self.options().request_timeout, changing).await {
            Err(_) => Err(Error::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.write_error(e).await),
        }
    }
}

/// How often a node that may have been removed asks the voters it knows about itself.
const REMOVAL_CHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a majority of those voters must go on refusing it before it stops.
const REMOVED_AFTER: std::time::Duration = std::time::Duration::from_secs(4);

impl Node {
    /// Resolves, with the reason, once this node has been removed from its cluster: a
    /// majority of the other voters it knows refuse it as no member (`NotAMember`), and
    /// go on refusing it for [`REMOVED_AFTER`]. etcd's removed member stops itself; one
    /// left running campaigns for ever, refused by every member, and answers serializable
    /// reads from data that no longer changes.
    ///
    /// It asks only while in doubt: when its own membership no longer lists it (it applied
    /// its removal), or when it knows no leader (the removal never reached it, and the
    /// leader stopped sending). A member asking while an election runs, or a learner
    /// replaying an old membership, is admitted and answered; a peer that cannot be
    /// reached counts for nothing.
    pub async fn removed(&self) -> String {
        let mut tick = tokio::time::interval(REMOVAL_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refused_since = None;
        loop {
            tick.tick().await;
            let others: Vec<(NodeId, Member)> = {
                let metrics = self.raft().metrics();
                let m = metrics.borrow();
                let membership = m.membership_config.membership();
                let listed = membership.get_node(&self.id()).is_some();
                let in_doubt = !listed || m.current_leader.is_none();
                if !in_doubt {
                    refused_since = None;
                    continue;
                }
                membership
                    .voter_ids()
                    .filter(|v| *v != self.id())
                    .filter_map(|v| Some((v, membership.get_node(&v)?.clone())))
                    .collect()
            };
            if others.is_empty() {
                continue;
            }
            let asks = others.iter().map(|(voter, member)| {
                let request = PeerRequest::IsMember { id: self.id() };
                let timeout = std::time::Duration::from_secs(1);
                self.peers()
                    .call(*voter, &member.peer_addr, request, timeout)
            });
            let answers = futures::future::join_all(asks).await;
            let refusing: Vec<&str> = (others.iter().zip(&answers))
                .filter_map(|((_, member), answer)| match answer {
                    Err(PeerError::Refused {
                        not_a_member: true, ..
                    }) => Some(member.name.as_str()),
                    _ => None,
                })
                .collect();
            if refusing.len() <= others.len() / 2 {
                refused_since = None;
                continue;
            }
            let since = *refused_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= REMOVED_AFTER {
                return format!(
                    "{} of the {} other voters ({}) refuse it as no member of the cluster",
                    refusing.len(),
                    others.len(),
                    refusing.join(", ")
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_address_is_host_and_port_with_or_without_a_url_scheme() {
        for (given, addr) in [
            ("127.0.0.1:2380", "127.0.0.1:2380"),
            ("https://n4.example:2380/", "n4.example:2380"),
            ("[::1]:2380", "[::1]:2380"),
        ] {
            assert_eq!(peer_address("add", given).expect(given), addr);
        }
        for given in [
            "",
            "https://",
            "n4.example",
            "https://n4:",
            ":2380",
            "h:99999",
            "h:port",
        ] {
            let err = peer_address("add", given).expect_err(given);
            assert!(
                err.to_string()
                    .contains("member add needs a peer address as host:port"),
                "{given:?}: {err}"
            );
        }
    }
}
