//! Deciding a client request: locally, on the leader, or forwarded to it.

use std::time::{Duration, Instant};

use etch_proto::alarm::AlarmAction;
use etch_proto::{
    Error, Mutation, RangeRequest, Request, Response, ResponseHeader, StatusResponse,
};
use openraft::error::{ClientWriteError, RaftError};

use super::proposer::{ProposeError, propose_error};
use super::read_index::{self, Confirmation};
use super::{Node, blocking, storage};
use crate::NodeId;
use crate::raft::network::PeerError;
use crate::raft::wire::{PeerRequest, PeerResponse};
use crate::raft::{Command, Member};

/// How a proposal was authorized (see `crate::auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Nothing for apply to confirm: the `root` user, whose rights never change, or etch
    /// itself (lease expiry).
    Unconditionally,
    /// Checked at this auth revision: apply confirms it is still the current one.
    At(u64),
}

/// How many times a request is checked and proposed while users or roles keep changing
/// under it.
const MAX_AUTH_ATTEMPTS: usize = 5;

/// How long a member a voter vouched for is admitted without asking again.
const VOUCHED_FOR: Duration = Duration::from_secs(30);
/// How long a node no voter vouched for is refused without asking again.
const REFUSED_FOR: Duration = Duration::from_secs(1);

/// The most bytes of answer a range is built with before it needs a large-range permit.
pub(super) const SMALL_RANGE_BYTES: usize = 1 << 20;
/// How many ranges with answers over [`SMALL_RANGE_BYTES`] a node builds at once.
pub(super) const LARGE_RANGES: usize = 2;
/// The most bytes of answer a one-key read is built with on the task that asked for it
/// (see [`Node::read`]); a larger one goes to the blocking pool as any range.
const INLINE_READ_BYTES: usize = 64 * 1024;

impl Node {
    /// Answers one client request on behalf of `principal`.
    pub async fn handle(&self, principal: &str, request: Request) -> Result<Response, Error> {
        crate::metrics::request_started(&request);
        let (labels, started) = (crate::metrics::labels(&request), std::time::Instant::now());
        let answer = self.answer(principal, request).await;
        crate::metrics::request_handled(labels, answer.as_ref().map(|_| ()), started.elapsed());
        answer
    }

    async fn answer(&self, principal: &str, request: Request) -> Result<Response, Error> {
        tracing::debug!(principal = ?principal, ?request, "request");
        self.limits().check(&request)?;
        let mut response = match place(&request) {
            // What this node serves itself is authorized here, with its own view; everything
            // else on the leader, with the leader's (a follower's view may lag a grant).
            Place::Here => {
                self.authorize(principal, &request)?;
                self.serve_here(request).await
            }
            Place::Leader => self.on_leader(principal, request, false).await,
            Place::ReadIndex => match self.read_on_follower(principal, &request).await {
                Some(answer) => answer,
                None => self.on_leader(principal, request, false).await,
            },
            Place::Stream => Err(Error::InvalidArgument(
                "a watch or a snapshot is served on its own stream, as its first frame".into(),
            )),
        }?;
        self.fill_header(&mut response);
        Ok(response)
    }

    /// Serves a request [`place`] keeps on the node asked.
    async fn serve_here(&self, request: Request) -> Result<Response, Error> {
        match request {
            Request::Status(_) => Ok(Response::Status(self.status())),
            Request::Defragment(_) => self.defragment().await,
            Request::Alarm(alarm) => Ok(self.alarm_list(&alarm)),
            Request::HashKv(hash) => {
                let store = self.inner.store.clone();
                blocking(move || store.hash_kv(hash.revision))
                    .await?
                    .map(Response::HashKv)
            }
            Request::Range(range) => self.read(range).await,
            other => Err(misplaced(&other)),
        }
    }

    /// Answers a request a follower forwarded; it is never forwarded again.
    pub(crate) async fn handle_forwarded(
        &self,
        principal: &str,
        request: Request,
    ) -> Result<Response, Error> {
        crate::metrics::forwarded(&request);
        // A follower checked it too, but a peer's word is not taken for it.
        self.limits().check(&request)?;
        let mut response = self.on_leader(principal, request, true).await?;
        self.fill_header(&mut response);
        Ok(response)
    }

    /// Runs `request` on the leader: here if this node leads, else forwarded to it.
    pub(super) async fn on_leader(
        &self,
        principal: &str,
        request: Request,
        forwarded: bool,
    ) -> Result<Response, Error> {
        let leader = self.await_leader().await?;
        if leader != self.id() {
            return if forwarded {
                Err(self.not_leader(Some(leader)).await)
            } else {
                self.forward(leader, principal, request).await
            };
        }
        self.check_quorum()?;
        // Checked again on every attempt: a write whose check a change of users or roles
        // overtook comes back from apply as `Conflict` (see `crate::auth`).
        let mut attempt = 1;
        loop {
            let checked = self.authorize(principal, &request)?;
            let request = match checked {
                Checked::At(_) if attempt < MAX_AUTH_ATTEMPTS => request.clone(),
                _ => return self.serve(principal, request, checked).await,
            };
            match self.serve(principal, request, checked).await {
                Err(Error::Conflict) if self.auth_moved(checked) => attempt += 1,
                answer => return answer,
            }
        }
    }

    /// Serves `request` on this node, the leader, authorized as `checked` says: every kind
    /// of request [`place`] sends to the leader has its arm.
    async fn serve(
        &self,
        principal: &str,
        request: Request,
        checked: Checked,
    ) -> Result<Response, Error> {
        match request {
            Request::Range(range) => self.linearizable_read(range).await,
            // Judged by the validators, named or not.
            Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_) | Request::Once(_) => {
                self.propose_write(principal, request, checked).await
            }
            Request::Compact(compact) => self.propose(Mutation::Compact(compact), checked).await,
            Request::MemberAdd(add) => self.member_add(add).await,
            Request::MemberPromote(promote) => self.member_promote(promote.id).await,
            Request::MemberRemove(remove) => self.member_remove(remove.id).await,
            Request::MemberUpdate(update) => self.member_update(update).await,
            // Linearizable, as etcd's: a removed or lagging member must not answer from its
            // stale view.
            Request::MemberList(_) => Ok(Response::MemberList(self.member_list().await)),
            Request::MoveLeader(m) => self.move_leader(m.target_id).await,
            // Alarms name members: one for a member that does not exist could never be
            // cleared by the member itself, and would let the stored list grow without end.
            Request::Alarm(alarm)
                if alarm.action == AlarmAction::Activate
                    && self.member(alarm.member_id).is_none() =>
            {
                Err(Error::InvalidArgument(format!(
                    "no member {:x} in this cluster to raise an alarm for",
                    alarm.member_id
                )))
            }
            Request::Alarm(alarm) => self.propose(Mutation::Alarm(alarm), checked).await,
            Request::LeaseGrant(grant) => self.lease_grant(grant, checked).await,
            Request::LeaseRevoke(revoke) => self.lease_revoke(revoke, checked).await,
            Request::LeaseKeepAlive(keep) => self.lease_keep_alive(keep.id),
            Request::LeaseTimeToLive(ttl) => self.lease_time_to_live(ttl).await,
            Request::LeaseLeases(_) => self.lease_leases().await,
            Request::Auth(auth) if !auth.is_write() => {
                self.confirm_leadership().await?;
                self.store().auth().answer(&auth).map(Response::Auth)
            }
            Request::Auth(auth) => self.propose(Mutation::Auth(auth), checked).await,
            Request::PluginInstall(install) => {
                self.check_quota(&Request::PluginInstall(install.clone()))
                    .await?;
                self.plugin_install(principal, install, checked).await
            }
            Request::PluginList(_) => self.plugin_list().await,
            Request::PluginRemove(remove) => {
                let command = Command::PluginRemove { name: remove.name };
                self.propose_command(command, checked).await
            }
            Request::PluginReset(reset) => self.plugin_reset(reset, checked).await,
            request @ (Request::Status(_)
            | Request::HashKv(_)
            | Request::Defragment(_)
            | Request::Watch(_)
            | Request::Snapshot(_)) => Err(misplaced(&request)),
        }
    }

    /// Checks that `principal` may make `request`, with this node's authorization state.
    ///
    /// # Errors
    ///
    /// `PermissionDenied` saying what the user may not do.
    pub(crate) fn authorize(&self, principal: &str, request: &Request) -> Result<Checked, Error> {
        let state = self.store().auth();
        let store = self.store().clone();
        let lease_keys = |id| store.lease_keys(id).map_err(storage);
        crate::auth::authorize(&state, principal, request, &lease_keys)?;
        Ok(if principal == etch_proto::auth::ROOT {
            Checked::Unconditionally
        } else {
            Checked::At(state.revision)
        })
    }

    /// Whether users or roles changed since a check.
    pub(super) fn auth_moved(&self, checked: Checked) -> bool {
        matches!(checked, Checked::At(revision) if revision != self.store().auth().revision)
    }

    /// The current leader, waiting up to the request timeout while there is none that is
    /// alive: a follower does not forward to a leader it has not heard from within an
    /// election timeout (it is probably dead, and a new one is on its way).
    async fn await_leader(&self) -> Result<NodeId, Error> {
        // Three election timeouts without a live leader means the cluster cannot elect one
        // now (no quorum): say so well before the client's own deadline.
        let patience = self
            .options()
            .request_timeout
            .min(self.options().election_timeout * 3);
        let deadline = tokio::time::Instant::now() + patience;
        let mut metrics = self.raft().metrics();
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            match leader {
                Some(leader) if leader == self.id() || self.leader_is_live(leader) => {
                    return Ok(leader);
                }
                _ => {}
            }
            // Wake on a metrics change, or re-check contact with the leader shortly.
            let tick = self.options().heartbeat_interval;
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return Err(Error::Unavailable { reason: "raft stopped".into() });
                    }
                }
                _ = tokio::time::sleep(tick) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(no_leader());
            }
        }
    }

    /// Refuses at once, without proposing, when this leader has not heard from a majority
    /// for longer than an election timeout: with a majority down a write could only hang.
    fn check_quorum(&self) -> Result<(), Error> {
        let limit = self
            .options()
            .election_timeout
            .max(self.options().heartbeat_interval * 3);
        let since = self.raft().metrics().borrow().millis_since_quorum_ack;
        match since {
            Some(ms) if Duration::from_millis(ms) <= limit => Ok(()),
            Some(ms) => Err(Error::Unavailable {
                reason: format!("no quorum: the leader has not heard from a majority for {ms} ms"),
            }),
            None => Err(Error::Unavailable {
                reason: "no quorum: the leader has not heard from a majority".into(),
            }),
        }
    }

    /// Proposes a mutation through Raft and returns what applying it produced.
    pub(super) async fn propose(
        &self,
        mutation: Mutation,
        checked: Checked,
    ) -> Result<Response, Error> {
        self.propose_command(Command::Kv(mutation), checked).await
    }

    /// Proposes any command through Raft (sharing an entry with the writes that arrive with
    /// it, see `proposer.rs`) and returns what applying it produced. A command checked at an
    /// auth revision goes as [`Command::Authorized`], which apply refuses if the revision
    /// moved.
    pub(crate) async fn propose_command(
        &self,
        command: Command,
        checked: Checked,
    ) -> Result<Response, Error> {
        let command = match checked {
            Checked::Unconditionally => command,
            Checked::At(auth_revision) => Command::Authorized {
                auth_revision,
                command: Box::new(command),
            },
        };
        self.await_no_handover().await;
        match self.inner.proposer.propose(command).await {
            Ok(answer) => answer,
            Err(e) => Err(self.proposal_error(e).await),
        }
    }

    /// What the client hears when openraft refused a write (or a membership change).
    pub(super) async fn write_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, Member>>,
    ) -> Error {
        self.proposal_error(propose_error(e)).await
    }

    async fn proposal_error(&self, e: ProposeError) -> Error {
        match e {
            ProposeError::NotLeader(leader) => self.not_leader(leader).await,
            ProposeError::Membership(reason) => Error::InvalidArgument(reason),
            ProposeError::Failed(e) => e,
        }
    }

    async fn linearizable_read(&self, range: RangeRequest) -> Result<Response, Error> {
        self.confirm_leadership().await?;
        self.read(range).await
    }

    /// A linearizable read served by a follower from its own state: the leader gives a read
    /// index (one request for every read waiting here, [`read_index`]), this node waits
    /// until it has applied as far, then authorizes and reads as for a serializable read —
    /// by then its view of users and roles is at least the leader's. `None` when the read
    /// is to be served on the leader instead: this node leads (or knows no leader), or the
    /// leader gave no read index.
    async fn read_on_follower(
        &self,
        principal: &str,
        request: &Request,
    ) -> Option<Result<Response, Error>> {
        let Request::Range(range) = request else {
            return None;
        };
        let leader = self.raft().metrics().borrow().current_leader;
        if leader.is_none_or(|leader| leader == self.id()) {
            return None;
        }
        match self.inner.follower_reads.confirm().await {
            Confirmation::Confirmed => {}
            Confirmation::Timeout => return Some(Err(Error::Timeout)),
            Confirmation::NotLeader(_) | Confirmation::Unavailable(_) | Confirmation::Forward => {
                return None;
            }
        }
        Some(match self.authorize(principal, request) {
            Ok(_) => self.read(range.clone()).await,
            Err(e) => Err(e),
        })
    }

    /// Answers a follower's `ReadIndex`: leadership confirmed with a quorum after the
    /// request arrived, the index this leader has applied (at least the read index).
    pub(crate) async fn read_index_for_follower(&self) -> Result<u64, Error> {
        self.confirm_leadership().await?;
        Ok((self.raft().metrics().borrow().last_applied).map_or(0, |applied| applied.index))
    }

    /// Confirms leadership with a quorum (read index) and waits until the local state
    /// machine has applied up to it: local reads after this are linearizable.
    pub(super) async fn confirm_leadership(&self) -> Result<(), Error> {
        self.await_no_handover().await;
        match self.inner.read_index.confirm().await {
            Confirmation::Confirmed => Ok(()),
            Confirmation::NotLeader(leader) => Err(self.not_leader(leader).await),
            Confirmation::Unavailable(reason) => Err(Error::Unavailable { reason }),
            Confirmation::Timeout => Err(Error::Timeout),
            // Only a follower's rounds answer this.
            Confirmation::Forward => Err(Error::Internal(
                "a leader's read-index round cannot forward".into(),
            )),
        }
    }

    /// Reads the local applied state.
    ///
    /// A range is first built with at most [`SMALL_RANGE_BYTES`] of answer. One that needs
    /// more is built again, up to an answer's limit, holding one of [`LARGE_RANGES`] permits:
    /// an answer is charged to its connection's budget only once it is built, so without the
    /// permits a hundred concurrent large ranges would be a hundred large answers in memory
    /// at once, whatever the budget says (issue 12's client that never reads).
    ///
    /// A one-key read (no range end) is answered on the task that asked for it, not handed
    /// to the blocking pool: it is one point lookup, nearly always in fjall's block cache or
    /// the page cache, and the two thread wake-ups of a hand-off cost more than the read
    /// (they were the largest item in a profile of serializable gets). A cold lookup holds
    /// a runtime worker for one disk read, as etcd's goroutines fault in bbolt's pages.
    pub(super) async fn read(&self, range: RangeRequest) -> Result<Response, Error> {
        let store = self.inner.store.clone();
        if range.range_end.is_empty() {
            match store.range_within(&range, INLINE_READ_BYTES) {
                Ok(Err(Error::TooLarge { .. })) => {}
                Ok(answer) => return answer.map(Response::Range),
                Err(e) => return Err(storage(e)),
            }
        }
        let small = {
            let (store, range) = (store.clone(), range.clone());
            blocking(move || store.range_within(&range, SMALL_RANGE_BYTES)).await?
        };
        let answer = match small {
            Err(Error::TooLarge { .. }) => {
                let _permit =
                    (self.inner.large_ranges.acquire().await).map_err(|_| Error::Unavailable {
                        reason: "the node is stopping".into(),
                    })?;
                blocking(move || store.range(&range)).await?
            }
            small => small,
        };
        answer.map(Response::Range)
    }

    /// Hands `request` to the leader over the peer connection.
    async fn forward(
        &self,
        leader: NodeId,
        principal: &str,
        request: Request,
    ) -> Result<Response, Error> {
        let Some(member) = self.member(leader) else {
            return Err(no_leader());
        };
        let body = PeerRequest::Forward {
            principal: principal.to_owned(),
            request,
        };
        // A little longer than the leader's own deadline, so that its answer wins.
        let timeout = self.options().request_timeout + Duration::from_secs(1);
        let poll = self.options().heartbeat_interval;
        let silent = || !self.leader_is_live(leader);
        let answer = self
            .peers()
            .call_once(leader, &member.peer_addr, body, timeout, poll, silent);
        match answer.await {
            Ok(PeerResponse::Forward(Ok(mut response))) => {
                // Tell the client where the leader is, so that it can go there next time.
                response.header_mut().leader_hint = self.client_addr_of(leader).await;
                Ok(response)
            }
            Ok(PeerResponse::Forward(Err(e))) => Err(e),
            Ok(_) => Err(Error::Internal(
                "leader answered a forwarded request with the wrong kind".into(),
            )),
            // Nothing reached the leader: safe to retry.
            Err(
                PeerError::Unreachable { reason, .. }
                | PeerError::Refused { reason, .. }
                | PeerError::NotDelivered { reason, .. },
            ) => Err(Error::Unavailable {
                reason: format!("cannot reach the leader: {reason}"),
            }),
            // The request may or may not have been applied.
            Err(PeerError::Timeout { .. } | PeerError::Broken { .. }) => Err(Error::Timeout),
        }
    }

    /// `NotLeader` with the leader's client address, when we can find it out.
    async fn not_leader(&self, leader: Option<NodeId>) -> Error {
        let Some(leader) = leader else {
            return no_leader();
        };
        Error::NotLeader {
            leader: self.client_addr_of(leader).await,
        }
    }

    /// A member's client address: from the membership, else asked of the member itself.
    pub(super) async fn client_addr_of(&self, id: NodeId) -> Option<String> {
        if id == self.id() {
            return Some(self.advertised_client_addr());
        }
        let member = self.member(id)?;
        if !member.client_addr.is_empty() {
            return Some(member.client_addr);
        }
        if let Some(addr) = self.inner.client_addrs.lock().ok()?.get(&id) {
            return Some(addr.clone());
        }
        let answer = self
            .peers()
            .call(
                id,
                &member.peer_addr,
                PeerRequest::Hello,
                Duration::from_secs(1),
            )
            .await;
        let Ok(PeerResponse::Hello { client_addr, .. }) = answer else {
            return None;
        };
        self.inner
            .client_addrs
            .lock()
            .ok()?
            .insert(id, client_addr.clone());
        Some(client_addr)
    }

    /// Whether node `id` may talk to this node on the peer endpoint: it is in the current
    /// membership (a voter, or a learner being added). A node that holds no membership yet
    /// (one joining with `--initial-cluster-state existing`, before the leader reached it),
    /// or is no voter in the membership it holds (a learner catching up from an old part of
    /// the log), cannot tell members from strangers and admits any node certificate of its
    /// CA: it decides nothing, and its log is overwritten by the real leader's.
    ///
    /// A voter whose log is behind may not know a member added since (the new leader, say):
    /// it asks the voters it knows whether `id` is a member in their view, and admits `id`
    /// if one of them says so (remembered for [`VOUCHED_FOR`]). A stranger or a removed
    /// member gets no such word, and is refused (and not asked about again for
    /// [`REFUSED_FOR`]).
    pub(crate) async fn admits_peer(&self, id: NodeId) -> bool {
        let voters: Vec<(NodeId, Member)> = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let voter = |n: &NodeId| membership.voter_ids().any(|v| v == *n);
            if membership.nodes().next().is_none()
                || membership.get_node(&id).is_some()
                || !voter(&self.id())
            {
                return true;
            }
            (membership.nodes())
                .filter(|(n, _)| voter(n) && **n != self.id() && **n != id)
                .map(|(n, m)| (*n, m.clone()))
                .collect()
        };
        let now = Instant::now();
        if let Ok(mut seen) = self.inner.vouched.lock() {
            seen.retain(|_, (_, at)| now.duration_since(*at) < VOUCHED_FOR.max(REFUSED_FOR));
            match seen.get(&id) {
                Some((true, at)) if now.duration_since(*at) < VOUCHED_FOR => return true,
                Some((false, at)) if now.duration_since(*at) < REFUSED_FOR => return false,
                _ => {}
            }
        }
        let asks = voters.iter().map(|(voter, member)| {
            let request = PeerRequest::IsMember { id };
            self.peers()
                .call(*voter, &member.peer_addr, request, Duration::from_secs(1))
        });
        let answers = futures::future::join_all(asks).await;
        let vouched = (answers.iter()).any(|a| matches!(a, Ok(PeerResponse::IsMember(true))));
        if vouched {
            tracing::info!(
                peer = format!("{id:x}"),
                "admitting a member added after this node's view; a voter vouched for it"
            );
        }
        if let Ok(mut seen) = self.inner.vouched.lock() {
            seen.insert(id, (vouched, now));
        }
        vouched
    }

    /// A member's record in the current membership.
    pub(crate) fn member(&self, id: NodeId) -> Option<Member> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        m.membership_config.membership().get_node(&id).cloned()
    }

    /// Bytes the key-value database takes on disk: the space allocated to its files
    /// (`<data-dir>/db`). Not their lengths: fjall makes a journal a 64 MiB sparse file
    /// that a restart truncates to what was written, so lengths (and fjall's own count)
    /// jumped by 64 MiB across a restart.
    pub fn db_size(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fn dir_size(dir: &std::path::Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.blocks() * 512),
                    _ => 0,
                })
                .sum()
        }
        dir_size(&self.options().data_dir.join("db"))
    }

    /// Sets the gauges that are read rather than kept current: database size, key count
    /// (a scan of the live keys) and resident memory. Called when metrics are scraped.
    pub async fn refresh_gauges(&self) {
        use crate::metrics::{DB_SIZE, KEYS, RSS};
        let (node, store) = (self.clone(), self.inner.store.clone());
        let sizes = tokio::task::spawn_blocking(move || (node.db_size(), store.key_count()));
        if let Ok((db, keys)) = sizes.await {
            metrics::gauge!(DB_SIZE).set(db as f64);
            if let Ok(keys) = keys {
                metrics::gauge!(KEYS).set(keys as f64);
            }
        }
        if let Some(rss) = crate::metrics::resident_bytes() {
            metrics::gauge!(RSS).set(rss as f64);
        }
    }

    /// Whether this node knows a leader (etcd's `/health` asks no more of a member
    /// without alarms).
    pub fn has_leader(&self) -> bool {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        m.running_state.is_ok() && m.current_leader.is_some()
    }

    /// Why etcd's `/health` would call this member unhealthy, in its words; `None` when
    /// healthy.
    pub fn unhealthy(&self) -> Option<String> {
        if let Some(alarm) = self.store().alarms().first() {
            return Some(format!("ALARM {}", alarm.alarm.name()));
        }
        (!self.has_leader()).then(|| "RAFT NO LEADER".to_owned())
    }

    fn status(&self) -> StatusResponse {
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut errors = Vec::new();
        if let Err(e) = &metrics.running_state {
            errors.push(format!("raft stopped: {e}"));
        }
        StatusResponse {
            header: ResponseHeader {
                revision: self.inner.store.revision(),
                ..Default::default()
            },
            name: self.options().name.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            db_size: self.db_size(),
            leader: metrics.current_leader,
            is_learner: membership.learner_ids().any(|id| id == self.id()),
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: metrics.current_term,
            raft_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            compact_revision: self.inner.store.compact_revision(),
            errors,
        }
    }
}

fn no_leader() -> Error {
    Error::Unavailable {
        reason: "no leader: the cluster cannot elect one (is a majority of members down?)".into(),
    }
}

/// Where a request is served: the one decision, made for every kind of request by
/// [`place`]; the node's serving code follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// On the node asked, from its own state: no leader, no Raft round.
    Here,
    /// On the leader (a follower forwards it there): linearizable reads, membership,
    /// leases, users and roles, plugins and every write.
    Leader,
    /// On the node asked once the leader has given it a read index (a linearizable read):
    /// on the leader itself when it is asked, or when it gives none.
    ReadIndex,
    /// On a stream of its own, opened by a front with the request as its first frame.
    Stream,
}

/// Where `request` is served (see [`Place`]).
pub(crate) fn place(request: &Request) -> Place {
    match request {
        Request::Status(_) | Request::HashKv(_) | Request::Defragment(_) => Place::Here,
        Request::Range(range) if range.serializable => Place::Here,
        Request::Range(_) => Place::ReadIndex,
        Request::Alarm(alarm) if alarm.action == AlarmAction::Get => Place::Here,
        Request::Watch(_) | Request::Snapshot(_) => Place::Stream,
        Request::Alarm(_)
        | Request::Put(_)
        | Request::DeleteRange(_)
        | Request::Txn(_)
        | Request::Once(_)
        | Request::Compact(_)
        | Request::MemberList(_)
        | Request::MemberAdd(_)
        | Request::MemberPromote(_)
        | Request::MemberRemove(_)
        | Request::MemberUpdate(_)
        | Request::MoveLeader(_)
        | Request::LeaseGrant(_)
        | Request::LeaseRevoke(_)
        | Request::LeaseKeepAlive(_)
        | Request::LeaseTimeToLive(_)
        | Request::LeaseLeases(_)
        | Request::Auth(_)
        | Request::PluginInstall(_)
        | Request::PluginList(_)
        | Request::PluginRemove(_)
        | Request::PluginReset(_) => Place::Leader,
    }
}

/// A request that reached a serving function [`place`] did not send it to: a bug.
fn misplaced(request: &Request) -> Error {
    Error::Internal(format!(
        "{} reached a node function that does not serve it",
        request.method().1
    ))
}

/// A follower's read-index round ([`read_index::ReadIndex::with_round`]) for the node `me`:
/// asks the leader for a read index and waits until this node has applied as far. Any
/// answer but an index (an earlier release's leader, a leader that stepped down, one that
/// cannot be reached) sends the round's reads to the leader, as before follower reads.
pub(super) fn follower_round(me: std::sync::Weak<super::Inner>) -> read_index::Round {
    Box::new(move || {
        let me = me.clone();
        Box::pin(async move {
            let Some(inner) = me.upgrade() else {
                return Confirmation::Unavailable("node shutting down".into());
            };
            Node { inner }.read_index_from_leader().await
        })
    })
}

impl Node {
    async fn read_index_from_leader(&self) -> Confirmation {
        let leader = self.raft().metrics().borrow().current_leader;
        let Some(leader) = leader.filter(|leader| *leader != self.id()) else {
            return Confirmation::Forward;
        };
        let Some(member) = self.member(leader) else {
            return Confirmation::Forward;
        };
        let timeout = self.options().request_timeout;
        let answer = (self.peers())
            .call(leader, &member.peer_addr, PeerRequest::ReadIndex, timeout)
            .await;
        let index = match answer {
            Ok(PeerResponse::ReadIndex(Ok(index))) => index,
            Err(PeerError::Timeout { .. }) => return Confirmation::Timeout,
            other => {
                tracing::debug!(?other, "no read index from the leader: its reads go to it");
                return Confirmation::Forward;
            }
        };
        let applied = (self.raft().wait(Some(timeout)))
            .applied_index_at_least(Some(index), "the leader's read index")
            .await;
        match applied {
            Ok(_) => Confirmation::Confirmed,
            Err(openraft::metrics::WaitError::Timeout(..)) => Confirmation::Timeout,
            Err(e) => Confirmation::Unavailable(e.to_string()),
        }
    }
}
