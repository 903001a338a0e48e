//! Scenarios: a fresh cluster under load, faults injected one after another, then the
//! checks. [`run`] runs a chosen list of faults, [`random`] a seed-chosen one, [`soak`]
//! random ones until a deadline.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use etch_proto::watch::WatchCreateRequest;

use super::check;
use super::cluster::FaultCluster;
use super::seed::{Rng, SEED_VAR, seed};
use super::watcher::Recorder;
use super::workload::{PREFIX, Tally, Workload};
use crate::wait_for;

/// The load: this many keys, with this many clients each.
const SHAPE: (usize, usize) = (4, 3);
/// Nodes in every scenario's cluster.
const NODES: usize = 3;
/// Wait for anything that recovers by itself (an election, a catch-up, a watcher).
const RECOVERY: Duration = Duration::from_secs(30);

/// A fault, with what it does to the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Adds a member (learner, then promoted), then removes a follower.
    AddRemoveMember,
    /// Cuts the link between two members; each still reaches the third.
    CutLink,
    /// Delays all peer traffic of one member by tens of milliseconds each way.
    DelayNode,
    /// Cuts a follower off from every other member (a minority partition), then heals.
    IsolateFollower,
    /// Cuts the leader off from the majority until another leader is elected, then heals.
    IsolateLeader,
    /// `kill -9` a follower, restart it after a while.
    KillFollower,
    /// `kill -9` the leader, restart it once another leads.
    KillLeader,
    /// SIGSTOP a follower for longer than an election timeout, then SIGCONT.
    PauseFollower,
    /// SIGSTOP the leader until another is elected, then SIGCONT.
    PauseLeader,
    /// Installs a validator plugin (guard) on the workload's prefix, then checks that it
    /// refuses a write it must refuse; it stays bound for the rest of the scenario.
    InstallPlugin,
    /// Adds a member, then removes the leader.
    RemoveLeader,
    /// `kill -9` and restart every member in turn.
    RollingRestart,
    /// Never-reading, half-sending and idle-flooding clients against one member.
    HostileClients,
    /// Watchers with `prev_kv` that never read, on one member, under large writes.
    StalledWatchers,
    /// A validator that loops for ever, on a prefix of its own, under a crowd of writers;
    /// removed when the fault ends.
    SpinningPlugin,
    /// One member's disk fails (its log fsync or its apply, a failpoint): it must stop by
    /// itself; it is restarted once the disk is healed.
    FailDisk,
}

impl Fault {
    /// The faults random scenarios choose from.
    pub const ALL: [Fault; 16] = [
        Fault::AddRemoveMember,
        Fault::CutLink,
        Fault::DelayNode,
        Fault::HostileClients,
        Fault::SpinningPlugin,
        Fault::StalledWatchers,
        Fault::InstallPlugin,
        Fault::IsolateFollower,
        Fault::IsolateLeader,
        Fault::KillFollower,
        Fault::KillLeader,
        Fault::PauseFollower,
        Fault::PauseLeader,
        Fault::RemoveLeader,
        Fault::RollingRestart,
        Fault::FailDisk,
    ];
}

/// What scenarios did and checked.
#[derive(Debug, Default)]
pub struct Figures {
    pub histories: u64,
    /// Scenarios that failed (in a soak, which goes on after a failure).
    pub histories_failed: u64,
    pub answered: u64,
    pub failed: u64,
    pub unknown: u64,
    /// The workload's operations by class, and its unknown outcomes by class and cause.
    pub tally: Tally,
    pub acknowledged_writes: u64,
    pub watch_events: u64,
    pub faults: BTreeMap<String, u64>,
}

impl Figures {
    pub fn add(&mut self, other: &Figures) {
        self.histories += other.histories;
        self.histories_failed += other.histories_failed;
        self.answered += other.answered;
        self.failed += other.failed;
        self.unknown += other.unknown;
        self.tally.add(&other.tally);
        self.acknowledged_writes += other.acknowledged_writes;
        self.watch_events += other.watch_events;
        for (fault, n) in &other.faults {
            *self.faults.entry(fault.clone()).or_default() += n;
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ops = self.answered + self.failed + self.unknown;
        writeln!(
            f,
            "histories checked: {} passed, {} failed",
            self.histories, self.histories_failed
        )?;
        writeln!(
            f,
            "operations checked: {ops} (answered {}, failed {}, unknown {})",
            self.answered, self.failed, self.unknown
        )?;
        for (class, ops) in &self.tally.ops {
            let unknown: u64 = (self.tally.unknown.iter())
                .filter(|(cause, _)| cause.starts_with(&format!("{class}:")))
                .map(|(_, n)| n)
                .sum();
            let share = 100.0 * unknown as f64 / (*ops).max(1) as f64;
            writeln!(f, "  {class}s: {ops}, unknown {unknown} ({share:.3}%)")?;
        }
        for (cause, n) in &self.tally.unknown {
            writeln!(f, "    unknown, {cause}: {n}")?;
        }
        writeln!(
            f,
            "acknowledged writes found committed: {}",
            self.acknowledged_writes
        )?;
        writeln!(f, "watch events checked: {}", self.watch_events)?;
        let total: u64 = self.faults.values().sum();
        write!(f, "faults injected: {total}")?;
        for (fault, n) in &self.faults {
            write!(f, "\n  {fault}: {n}")?;
        }
        Ok(())
    }
}

/// Runs `faults` in turn against a fresh cluster under load, then checks everything.
///
/// # Panics
///
/// When a check fails or the cluster does not recover, naming the seed, the command that
/// replays it (`test` is the test's name) and where the node logs were kept.
pub fn run(test: &str, seed: u64, faults: &[Fault]) -> Figures {
    eprintln!("fault scenario {test}: seed {seed}, faults {faults:?}");
    let mut rng = Rng::new(seed);
    let snapshot_count = *rng.pick(&["64", "1000", "100000"]);
    // Few entries kept behind a snapshot send a lagging member a snapshot more often.
    let catchup = *rng.pick(&["64", "5000"]);
    // At its floor the byte limit snapshots and purges a busy scenario's log by bytes.
    let log_bytes = *rng.pick(&["1048576", "67108864"]);
    let mut fc = FaultCluster::start(
        NODES,
        &[
            "--snapshot-count",
            snapshot_count,
            "--snapshot-catchup-entries",
            catchup,
            "--snapshot-log-bytes",
            log_bytes,
        ],
    );
    let result = catch_unwind(AssertUnwindSafe(|| scenario(&mut fc, &mut rng, faults)));
    let why = match result {
        Ok(Ok(figures)) => return figures,
        Ok(Err(why)) => why,
        Err(panic) => panic_message(&*panic),
    };
    let logs = std::env::temp_dir().join(format!("etch-faults-{seed}"));
    let _ = std::fs::create_dir_all(&logs);
    for node in &fc.cluster.nodes {
        let _ = std::fs::write(logs.join(format!("{}.log", node.name)), node.log_text());
    }
    panic!(
        "fault scenario {test} failed: {why}\n seed {seed}, faults {faults:?}, --snapshot-count \
         {snapshot_count} --snapshot-catchup-entries {catchup} --snapshot-log-bytes {log_bytes}\n replay: {SEED_VAR}={seed} cargo nextest run -p etch-tests --test \
         faults {test}\n node logs: {}",
        logs.display()
    );
}

/// Runs two to four seed-chosen faults; `test` names the test that calls it.
pub fn random(test: &str, seed: u64) -> Figures {
    let mut rng = Rng::new(seed);
    let faults: Vec<Fault> = (0..2 + rng.below(3))
        .map(|_| *rng.pick(&Fault::ALL))
        .collect();
    run(test, seed, &faults)
}

/// Runs [`random`] scenarios for `duration`, each with a seed of its own, and returns the
/// figures; a failed scenario is recorded (with its seed) and the soak goes on.
pub fn soak(test: &str, duration: Duration) -> (Figures, Vec<String>) {
    let start = Instant::now();
    let mut rng = Rng::new(seed());
    let (mut total, mut failures) = (Figures::default(), Vec::new());
    while start.elapsed() < duration {
        let seed = rng.next_u64();
        match catch_unwind(|| random(test, seed)) {
            Ok(figures) => total.add(&figures),
            Err(panic) => {
                total.histories_failed += 1;
                failures.push(panic_message(&*panic));
            }
        }
        eprintln!(
            "soak: {} s elapsed, {} histories passed, {} failed",
            start.elapsed().as_secs(),
            total.histories,
            failures.len()
        );
    }
    (total, failures)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = (panic.downcast_ref::<String>().cloned())
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
    text.unwrap_or_else(|| "a panic without a message".into())
}

/// The scenario proper: load, faults, recovery, checks.
fn scenario(fc: &mut FaultCluster, rng: &mut Rng, faults: &[Fault]) -> Result<Figures, String> {
    let tls = fc.cluster.client_tls("root");
    let watch_all = WatchCreateRequest {
        key: PREFIX.into(),
        range_end: etch_proto::prefix_end(PREFIX.as_bytes()),
        start_revision: 1,
        ..WatchCreateRequest::default()
    };
    let watchers = [
        Recorder::start(
            &fc.rt,
            "prefix-from-1",
            fc.client(rng.below(NODES)),
            watch_all,
        )?,
        Recorder::start(
            &fc.rt,
            "k0-from-now",
            fc.client(rng.below(NODES)),
            watch_one(),
        )?,
    ];
    let known = fc.endpoints();
    let mut workload = Workload::start(&fc.rt, &known, &tls, SHAPE, rng);
    let mut figures = Figures::default();
    // Load runs for a while before the first fault and between faults: letting time pass
    // is the point. It is time, not a count of writes, because a membership fault can
    // retire every endpoint the workload's clients know (the SDK does not re-discover
    // members), and then only the final checks, which use the current members, see the
    // cluster (soak seed 6411818323917098182 waited for writes that could not come).
    let pause = |rng: &mut Rng| {
        std::thread::sleep(rng.between(Duration::from_millis(500), Duration::from_millis(1000)));
    };
    pause(rng);
    for &fault in faults {
        inject(fc, fault, rng)?;
        *figures.faults.entry(format!("{fault:?}")).or_default() += 1;
        // Writes go on, as long as the workload's clients know a member still (the SDK
        // does not re-discover members; after two leader removals they may know none).
        if fc.endpoints().iter().any(|e| known.contains(e)) {
            let acked = workload.acked_writes();
            wait_for(
                &format!("writes to go on after {fault:?}"),
                RECOVERY,
                || (workload.acked_writes() >= acked + 5).then_some(()),
            );
        }
        pause(rng);
    }
    workload.stop(&fc.rt);
    figures.tally = workload.tally();
    workload.final_reads(&fc.rt, &fc.client(0), RECOVERY)?;
    let (revision, data) = fc.converge();
    let members = fc.members();
    let committed = fc.committed(members[0], revision);
    for &i in &members[1..] {
        let other = fc.committed(i, revision);
        if let Some(r) = (1..=revision).find(|r| committed.get(r) != other.get(r)) {
            return Err(format!(
                "{} and {} committed different events at revision {r}: {:?} vs {:?}",
                fc.cluster.nodes[members[0]].name,
                fc.cluster.nodes[i].name,
                committed.get(&r),
                other.get(&r)
            ));
        }
    }
    // The same history byte for byte, as etcd's robustness tests compare HashKV.
    let hash = fc.hash_kv(members[0], revision)?;
    for &i in &members[1..] {
        let other = fc.hash_kv(i, revision)?;
        if other != hash {
            return Err(format!(
                "HashKV at revision {revision}: {} has {hash}, {} has {other}",
                fc.cluster.nodes[members[0]].name, fc.cluster.nodes[i].name
            ));
        }
    }
    let entries = workload.history.entries();
    if let Err(why) = check::linearizable(&entries) {
        // The whole history, for the post-mortem the replay (timing-dependent) may not allow.
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let path = std::env::temp_dir().join(format!("etch-history-{at}.txt"));
        let text: String = entries.iter().map(|e| format!("{e}\n")).collect();
        let kept = std::fs::write(&path, text).map_or_else(
            |e| format!("(not written: {e})"),
            |()| path.display().to_string(),
        );
        return Err(format!("{why}\n whole history: {kept}"));
    }
    let acknowledged = check::acknowledged_writes_committed(&entries, &committed)?;
    check::nothing_committed_that_failed(&entries, &committed, PREFIX.as_bytes())?;
    check::final_state_matches(&committed, &data, PREFIX.as_bytes())?;
    // The watchers' clients know the founding members only (the SDK does not re-discover
    // members): when membership faults retired them all, a watcher cannot follow the
    // cluster any further (soak seed 8460921660183694046: n1, n2 and n3 all removed), and
    // only what it received is checked.
    let reachable = fc.endpoints().iter().any(|e| known.contains(e));
    for watcher in &watchers {
        if reachable {
            watcher.catch_up(&fc.rt, revision, RECOVERY)?;
        }
        check::watch_stream(watcher, &committed)?;
        figures.watch_events += watcher.events() as u64;
    }
    let (answered, failed, unknown) = check::outcomes(&entries);
    figures.histories = 1;
    (figures.answered, figures.failed, figures.unknown) =
        (answered as u64, failed as u64, unknown as u64);
    figures.acknowledged_writes = acknowledged as u64;
    Ok(figures)
}

/// A watch of the first workload key, from now.
fn watch_one() -> WatchCreateRequest {
    WatchCreateRequest {
        key: format!("{PREFIX}k0").into_bytes(),
        ..WatchCreateRequest::default()
    }
}

/// A member other than `not`, chosen by `rng`.
fn other_member(fc: &FaultCluster, rng: &mut Rng, not: &[usize]) -> usize {
    let candidates: Vec<usize> = fc
        .members()
        .into_iter()
        .filter(|i| !not.contains(i))
        .collect();
    *rng.pick(&candidates)
}

/// Injects `fault` and undoes it; returns once the cluster has a leader again.
///
/// # Errors
///
/// A hostile fault found the attacked node past its memory bound, or served a write it
/// must refuse.
fn inject(fc: &mut FaultCluster, fault: Fault, rng: &mut Rng) -> Result<(), String> {
    // How long a fault lasts: letting time pass is the fault.
    let hold = rng.between(Duration::from_millis(1500), Duration::from_millis(2500));
    let pause = std::thread::sleep;
    match fault {
        Fault::AddRemoveMember | Fault::RemoveLeader => {
            let name = format!("n{}", fc.cluster.nodes.len() + 1);
            let added = fc.add_member(&name);
            let leader = fc.leader();
            let gone = match fault {
                Fault::RemoveLeader => leader,
                _ => other_member(fc, rng, &[added, leader]),
            };
            fc.remove_member(gone);
        }
        Fault::InstallPlugin => fc.install_guard(PREFIX),
        Fault::CutLink => {
            let a = other_member(fc, rng, &[]);
            let b = other_member(fc, rng, &[a]);
            // No assertion on dropped datagrams here: two followers may exchange nothing.
            fc.net.cut(a, b);
            pause(hold);
            fc.net.heal();
        }
        Fault::DelayNode => {
            let i = other_member(fc, rng, &[]);
            fc.net.delay(
                i,
                rng.between(Duration::from_millis(20), Duration::from_millis(150)),
            );
            pause(hold);
            fc.net.heal();
        }
        Fault::IsolateFollower | Fault::KillFollower | Fault::PauseFollower => {
            let leader = fc.leader();
            let f = other_member(fc, rng, &[leader]);
            match fault {
                Fault::IsolateFollower => fc.net.isolate(f),
                Fault::KillFollower => fc.kill(f),
                _ => fc.pause(f),
            }
            pause(hold);
            match fault {
                Fault::IsolateFollower => {
                    fc.net.heal();
                    assert!(fc.net.dropped() > 0, "the partition dropped nothing");
                }
                Fault::KillFollower => fc.restart(f),
                _ => fc.resume(f),
            }
        }
        Fault::IsolateLeader | Fault::KillLeader | Fault::PauseLeader => {
            let leader = fc.leader();
            match fault {
                Fault::IsolateLeader => fc.net.isolate(leader),
                Fault::KillLeader => fc.kill(leader),
                _ => fc.pause(leader),
            }
            // The fault has taken hold once the others have elected a new leader; then it
            // lasts a little longer, with the cluster serving without the old leader.
            fc.new_leader(leader);
            pause(hold / 2);
            match fault {
                Fault::IsolateLeader => {
                    fc.net.heal();
                    assert!(fc.net.dropped() > 0, "the partition dropped nothing");
                }
                Fault::KillLeader => fc.restart(leader),
                _ => fc.resume(leader),
            }
        }
        Fault::RollingRestart => {
            let mut order = fc.members();
            rng.shuffle(&mut order);
            for i in order {
                fc.kill(i);
                fc.restart(i);
            }
        }
        Fault::HostileClients => {
            let i = other_member(fc, rng, &[]);
            fc.hostile_clients(i, hold)?;
        }
        Fault::StalledWatchers => {
            let i = other_member(fc, rng, &[]);
            fc.stalled_watchers(i, hold)?;
        }
        Fault::SpinningPlugin => {
            fc.spinning_plugin(hold)?;
        }
        Fault::FailDisk => {
            let i = other_member(fc, rng, &[]);
            let point = *rng.pick(&["log-fsync", "apply-write"]);
            fc.fail_disk(i, point)?;
        }
    }
    fc.leader();
    Ok(())
}
