//! [`FaultCluster`]: a [`Cluster`] whose peer traffic runs through a [`Net`] of proxies,
//! with the faults a scenario injects and the convergence check it ends with.
//!
//! Helpers are synchronous, like the harness: they block the test thread on `rt`, the
//! runtime the SDK clients (workload, watchers, status probes) live on.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use etch_client::{Client, ClientOptions, Error};
use etch_proto::watch::WatchCreateRequest;
use etch_proto::{KeyValue, NodeId, Revision, StatusResponse};
use tokio::runtime::Runtime;

use super::proxy::Net;
use super::watcher::Recorder;
use super::workload::client_options;
use crate::Cluster;
use crate::checker::watch::{Committed, committed};

/// How long a status probe of one node may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

pub struct FaultCluster {
    pub cluster: Cluster,
    pub net: Net,
    pub rt: Runtime,
    /// Flags every node gets, founders and later additions.
    extra_args: Vec<String>,
    /// Per node: still a member (false once removed), and paused.
    member: Vec<bool>,
    paused: Vec<bool>,
    /// Per node: a client of that node alone.
    probes: Vec<Client>,
}

impl FaultCluster {
    /// Starts `n` nodes behind proxies, each with `extra_args`; returns once every node
    /// serves linearizable reads.
    pub fn start(n: usize, extra_args: &[&str]) -> FaultCluster {
        let mut cluster = Cluster::prepare(n, extra_args);
        let mut net = Net::new();
        let ports: Vec<u16> = cluster.nodes.iter().map(|n| net.add(n.peer_port)).collect();
        let initial = cluster
            .nodes
            .iter()
            .zip(&ports)
            .map(|(node, port)| format!("{}=127.0.0.1:{port}", node.name))
            .collect::<Vec<_>>()
            .join(",");
        let dir = cluster.dir.path().to_owned();
        for node in &mut cluster.nodes {
            assert_eq!(
                node.extra_args[0], "--initial-cluster",
                "Cluster::prepare's flags"
            );
            node.extra_args[1] = initial.clone();
            node.env.push(failpoints(&dir, &node.name));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the SDK runtime");
        let mut fc = FaultCluster {
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            member: vec![true; n],
            paused: vec![false; n],
            probes: Vec::new(),
            cluster,
            net,
            rt,
        };
        fc.probes = (0..n).map(|i| fc.probe(i)).collect();
        let tls = fc.cluster.client_tls("root");
        for node in &mut fc.cluster.nodes {
            node.spawn();
        }
        for node in &mut fc.cluster.nodes {
            node.await_ready(&tls);
        }
        fc
    }

    fn probe(&self, i: usize) -> Client {
        let endpoint = self.cluster.nodes[i].endpoint();
        let opts = ClientOptions::new([endpoint], self.cluster.client_tls("root"))
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(PROBE_TIMEOUT);
        Client::new(opts).expect("a probe client")
    }

    /// Indices of the current members.
    pub fn members(&self) -> Vec<usize> {
        (0..self.member.len()).filter(|&i| self.member[i]).collect()
    }

    /// Client endpoints of the current members.
    pub fn endpoints(&self) -> Vec<String> {
        let nodes = &self.cluster.nodes;
        self.members()
            .iter()
            .map(|&i| nodes[i].endpoint())
            .collect()
    }

    /// An SDK client of every member, trying them from `first` on.
    pub fn client(&self, first: usize) -> Client {
        let opts = client_options(&self.endpoints(), first, &self.cluster.client_tls("root"));
        Client::new(opts).expect("an SDK client")
    }

    /// The status of every member that is running and not paused, asked concurrently.
    pub fn statuses(&mut self) -> Vec<(usize, Option<StatusResponse>)> {
        let live: Vec<usize> = (self.members().into_iter())
            .filter(|&i| !self.paused[i] && self.cluster.nodes[i].is_running())
            .collect();
        let asks: Vec<_> = (live.iter())
            .map(|&i| {
                let probe = self.probes[i].clone();
                self.rt.spawn(async move { probe.status().await.ok() })
            })
            .collect();
        let answers = asks
            .into_iter()
            .map(|ask| self.rt.block_on(ask).ok().flatten());
        live.iter().copied().zip(answers).collect()
    }

    /// The node a majority of the members follows (and which says it leads), waiting up to
    /// 30 s for one. A leader cut off from the others may still think it leads; it is not
    /// the answer until a majority agrees.
    pub fn leader(&mut self) -> usize {
        let majority = self.members().len() / 2 + 1;
        let what = format!("a leader followed by {majority} members");
        let mut last = Vec::new();
        let found = wait_for_opt(Duration::from_secs(30), || {
            last = self.statuses();
            let known: Vec<(usize, &StatusResponse)> = last
                .iter()
                .filter_map(|(i, s)| Some((*i, s.as_ref()?)))
                .collect();
            known.iter().find_map(|&(i, s)| {
                let id = s.header.member_id;
                let followers = known.iter().filter(|(_, t)| t.leader == Some(id)).count();
                (s.leader == Some(id) && followers >= majority).then_some(i)
            })
        });
        found.unwrap_or_else(|| panic!("timed out waiting for {what}; statuses: {last:#?}"))
    }

    /// The leader, once it is not `old`.
    pub fn new_leader(&mut self, old: usize) -> usize {
        let found = wait_for_opt(Duration::from_secs(30), || {
            let leader = self.leader();
            (leader != old).then_some(leader)
        });
        found.unwrap_or_else(|| panic!("node {old} still leads after 30 s"))
    }

    pub fn kill(&mut self, i: usize) {
        self.cluster.nodes[i].kill();
        self.paused[i] = false;
    }

    /// Starts node `i` again and waits until it serves linearizable reads.
    pub fn restart(&mut self, i: usize) {
        let tls = self.cluster.client_tls("root");
        self.cluster.nodes[i].start(&tls);
    }

    /// Fails node `i`'s disk at failpoint `point` (`log-fsync` or `apply-write`, see
    /// `etch_host::failpoint`) until it exits by itself, as a node must after a storage
    /// failure (a write sent through it reaches the failpoint); heals the disk and
    /// restarts it.
    ///
    /// # Errors
    ///
    /// The node did not stop within 30 s, stopped cleanly, or did not say why.
    pub fn fail_disk(&mut self, i: usize, point: &str) -> Result<(), String> {
        let node = &mut self.cluster.nodes[i];
        let trigger = self
            .cluster
            .dir
            .path()
            .join(format!("{}.{point}", node.name));
        std::fs::write(&trigger, b"").map_err(|e| format!("arming {point}: {e}"))?;
        // A write through this member reaches both failpoints on any member.
        let probe = self.probes[i].clone();
        let _ = self
            .rt
            .block_on(async { probe.put("fault/disk", "x").await });
        let node = &mut self.cluster.nodes[i];
        let status = wait_for_opt(Duration::from_secs(30), || {
            (!node.is_running()).then_some(())
        });
        std::fs::remove_file(&trigger).map_err(|e| format!("healing {point}: {e}"))?;
        if status.is_none() {
            return Err(format!(
                "{} still runs 30 s after its {point} failed",
                node.name
            ));
        }
        let log = node.log_text();
        if !log.contains("storage failed") {
            return Err(format!(
                "{} stopped without saying its storage failed",
                node.name
            ));
        }
        eprintln!(
            "fault fail disk: {} stopped after its {point} failed",
            node.name
        );
        node.kill();
        self.restart(i);
        Ok(())
    }

    pub fn pause(&mut self, i: usize) {
        self.cluster.signal(i, "STOP");
        self.paused[i] = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.cluster.signal(i, "CONT");
        self.paused[i] = false;
    }

    /// Adds node `name` as a learner, starts it, and promotes it once it has caught up;
    /// returns its index.
    pub fn add_member(&mut self, name: &str) -> usize {
        let mut node = self.cluster.extra_node(name, &[]);
        node.env
            .push(failpoints(self.cluster.dir.path(), &node.name));
        let port = self.net.add(node.peer_port);
        let admin = self.client(0);
        let addr = format!("127.0.0.1:{port}");
        // An attempt that timed out may have been applied: then the retry finds the member
        // there, and that is success.
        let id = self.admin(&format!("member add {name}"), || async {
            match admin.member_add(name, addr.as_str()).learner().await {
                Ok(r) => Ok(r.member.id),
                Err(Error::Server(etch_proto::Error::InvalidArgument(why)))
                    if why.contains("already exists") =>
                {
                    let list = admin.member_list().await?;
                    let added = list.members.iter().find(|m| m.name == name);
                    added
                        .map(|m| m.id)
                        .ok_or(Error::Server(etch_proto::Error::InvalidArgument(why)))
                }
                Err(e) => Err(e),
            }
        });
        let mut initial: Vec<String> = (self.members().iter())
            .map(|&i| {
                format!(
                    "{}=127.0.0.1:{}",
                    self.cluster.nodes[i].name,
                    self.net.port(i)
                )
            })
            .collect();
        initial.push(format!("{name}={addr}"));
        node.extra_args = [
            "--initial-cluster",
            &initial.join(","),
            "--initial-cluster-state",
            "existing",
        ]
        .map(String::from)
        .to_vec();
        node.extra_args.extend(self.extra_args.iter().cloned());
        node.start_serving(&self.cluster.client_tls("root"));
        self.cluster.nodes.push(node);
        self.member.push(true);
        self.paused.push(false);
        let i = self.cluster.nodes.len() - 1;
        self.probes.push(self.probe(i));
        // Refused until the learner has caught up: retrying is waiting for that. A debug
        // build replicating the hostile faults' large values to a new learner on a busy
        // machine takes a while (about 160 ms per large entry, openraft's append timeout
        // being one heartbeat; issue 16's catch-up target).
        self.admin_within(
            &format!("member promote {name}"),
            Duration::from_secs(180),
            || async { admin.member_promote(id).await.map(|_| ()) },
        );
        i
    }

    /// Removes member `i` from the cluster, then kills it.
    ///
    /// # Panics
    ///
    /// When the removal is refused, or not done within 60 s. A retryable error is retried,
    /// and a timeout (outcome unknown) is settled by listing the members.
    pub fn remove_member(&mut self, i: usize) {
        let name = self.cluster.nodes[i].name.clone();
        let admin = self.client(0);
        let listed = |admin: &Client| {
            let list = self.rt.block_on(admin.member_list().into_future());
            list.map(|l| l.members.iter().find(|m| m.name == name).map(|m| m.id))
        };
        let id: NodeId = wait_for_opt(Duration::from_secs(60), || listed(&admin).ok().flatten())
            .unwrap_or_else(|| panic!("{name} not listed as a member within 60 s"));
        let mut errors = Vec::new();
        let done = wait_for_opt(Duration::from_secs(60), || {
            match self.rt.block_on(admin.member_remove(id).into_future()) {
                Ok(_) => Some(()),
                Err(e) if e.is_retryable() => {
                    errors.push(e);
                    None
                }
                Err(e @ Error::Timeout { .. }) => {
                    errors.push(e);
                    listed(&admin)
                        .ok()
                        .and_then(|id| id.is_none().then_some(()))
                }
                Err(e) => panic!(
                    "member remove {name} ({id:x}) answered {e:?} (earlier answers: {errors:?}); \
                     listed afterwards: {:?}",
                    listed(&admin)
                ),
            }
        });
        done.unwrap_or_else(|| panic!("member remove {name} not done in 60 s: {errors:?}"));
        self.member[i] = false;
        self.kill(i);
    }

    /// Runs an admin request (membership, plugin install) until it succeeds, for up to 60 s.
    pub(super) fn admin<T, F: Future<Output = Result<T, Error>>>(
        &self,
        what: &str,
        f: impl FnMut() -> F,
    ) -> T {
        self.admin_within(what, Duration::from_secs(60), f)
    }

    /// [`FaultCluster::admin`] with a deadline of its own.
    fn admin_within<T, F: Future<Output = Result<T, Error>>>(
        &self,
        what: &str,
        within: Duration,
        mut f: impl FnMut() -> F,
    ) -> T {
        let mut last = None;
        let done = wait_for_opt(within, || match self.rt.block_on(f()) {
            Ok(v) => Some(v),
            Err(e) => {
                last = Some(e);
                None
            }
        });
        done.unwrap_or_else(|| panic!("{what} did not succeed in {within:?}; last error: {last:?}"))
    }

    /// Waits until every member has applied the same log and holds the same data, and
    /// returns that revision and data (a serializable read of every key on every member,
    /// which must agree at the same revision).
    pub fn converge(&mut self) -> (Revision, Vec<KeyValue>) {
        let members = self.members();
        let mut last = String::new();
        let found = wait_for_opt(Duration::from_secs(60), || {
            let statuses = self.statuses();
            let applied: Vec<(u64, u64, Revision)> = (statuses.iter())
                .filter_map(|(_, s)| s.as_ref())
                .map(|s| (s.raft_index, s.raft_applied_index, s.header.revision))
                .collect();
            let shown = (statuses.iter()).map(|(i, s)| match s {
                Some(s) => format!(
                    "{} log {} applied {} rev {} {:?}",
                    s.name, s.raft_index, s.raft_applied_index, s.header.revision, s.errors
                ),
                None => format!("{} silent", self.cluster.nodes[*i].name),
            });
            let mut shown: Vec<String> = shown.collect();
            for &i in &members {
                if !self.cluster.nodes[i].is_running() {
                    shown.push(format!("{} not running", self.cluster.nodes[i].name));
                }
            }
            last = shown.join("; ");
            let settled = applied.len() == members.len()
                && applied.iter().all(|a| *a == applied[0] && a.0 == a.1);
            if !settled {
                return None;
            }
            let reads: Vec<_> = (members.iter())
                .map(|&i| {
                    let read = self.probes[i].get("").from_key().serializable();
                    self.rt.block_on(read.into_future())
                })
                .collect::<Result<_, _>>()
                .ok()?;
            let revision = reads[0].header.revision;
            if reads.iter().any(|r| r.header.revision != revision) {
                return None;
            }
            for (&i, read) in members.iter().zip(&reads) {
                assert_eq!(
                    read.kvs, reads[0].kvs,
                    "{} and {} hold different data at revision {revision}",
                    self.cluster.nodes[i].name, self.cluster.nodes[members[0]].name
                );
            }
            Some((revision, reads[0].kvs.clone()))
        });
        found.unwrap_or_else(|| panic!("the members did not converge in 60 s: {last}"))
    }

    /// Every event node `i` committed up to `revision`, replayed by a watch of all keys
    /// from revision 1 on that node alone.
    pub fn committed(&self, i: usize, revision: Revision) -> Committed {
        let req = WatchCreateRequest {
            key: vec![0],
            range_end: vec![0],
            start_revision: 1,
            ..WatchCreateRequest::default()
        };
        let name = format!("replay@{}", self.cluster.nodes[i].name);
        let replay = Recorder::start(&self.rt, &name, self.probes[i].clone(), req)
            .unwrap_or_else(|e| panic!("{e}"));
        let timeout = Duration::from_secs(30);
        if let Err(e) = replay.catch_up(&self.rt, revision, timeout) {
            panic!("{e}");
        }
        let events = replay.received().into_iter().flat_map(|r| r.events);
        committed(events.filter(|e| e.kv.mod_revision <= revision))
    }
}

impl FaultCluster {
    /// Binds the guard validator to `prefix` under load, allowing only keys of the form
    /// `<prefix><name>` (no further `/`), then checks that a write to a deeper key is refused
    /// with the plugin's reason. Writes that time out are retried (installing a binding
    /// again replaces it); a write the plugin let through fails the scenario, and would also
    /// show as a committed write no client made.
    pub fn install_guard(&self, prefix: &str) {
        let wasm = std::fs::read(crate::plugin_wasm("guard")).expect("guard.wasm");
        let client = self.client(0);
        let pattern = format!("{prefix}*");
        self.admin("plugin install fault-guard", || {
            client
                .plugin_install("fault-guard", wasm.clone(), prefix)
                .config("key-pattern", pattern.as_str())
                .timeout(Duration::from_millis(500))
                .into_future()
        });
        // Retried until the plugin answers it: a refusal passes, anything written fails.
        let key = format!("{prefix}deeper/key");
        self.admin(&format!("a put of {key} the guard refuses"), || async {
            match client.put(key.as_bytes(), "refused").await {
                Err(Error::Server(etch_proto::Error::PluginRejected { plugin, code, .. })) => {
                    assert_eq!((plugin.as_str(), code.as_str()), ("fault-guard", "bad-key"));
                    Ok(())
                }
                Ok(resp) => panic!(
                    "the guard plugin let {key} through at revision {}",
                    resp.header.revision
                ),
                Err(e) => Err(e),
            }
        });
    }

    /// Member `i`'s HashKV at `revision` (which it must have applied).
    pub fn hash_kv(&self, i: usize, revision: Revision) -> Result<u32, String> {
        let name = &self.cluster.nodes[i].name;
        match self.rt.block_on(self.probes[i].hash_kv(revision)) {
            Ok(h) if h.hash_revision == revision => Ok(h.hash),
            Ok(h) => Err(format!(
                "{name} hashed revision {} when asked for {revision}",
                h.hash_revision
            )),
            Err(e) => Err(format!("HashKV of {name} at revision {revision}: {e}")),
        }
    }
}

/// Like [`crate::wait_for`] but answers `None` on timeout, so the caller can say more.
fn wait_for_opt<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ETCH_FAILPOINTS` for node `name`: its log fsync and its apply fail while
/// `DIR/NAME.log-fsync` or `DIR/NAME.apply-write` exists.
fn failpoints(dir: &std::path::Path, name: &str) -> (String, String) {
    let spec = ["log-fsync", "apply-write"]
        .map(|point| format!("{point}={}", dir.join(format!("{name}.{point}")).display()))
        .join(",");
    ("ETCH_FAILPOINTS".to_owned(), spec)
}
