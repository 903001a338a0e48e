//! Fault injection with real etchd processes: a three-node cluster under concurrent SDK
//! load and two watchers, while nodes are killed, paused, partitioned, restarted, added and
//! removed; afterwards the recorded history must be linearizable, every acknowledged write
//! committed, every watcher's stream faithful and every node identical (see
//! `etch_tests::fault` for the checks).
//!
//! Each test prints its seed; `ETCH_FAULT_SEED=<seed>` replays its choices.
//! `ETCH_SOAK_SECS=<n>` makes `soak` run random scenarios for n seconds and print figures;
//! without it `soak` does nothing.

use std::time::Duration;

use etch_tests::fault::scenario::{self, Fault};
use etch_tests::fault::seed::seed;

fn run(test: &str, faults: &[Fault]) {
    let figures = scenario::run(test, seed(), faults);
    assert_eq!(figures.histories, 1);
    assert!(
        figures.acknowledged_writes > 0 && figures.watch_events > 0,
        "the scenario did some work:\n{figures}"
    );
    eprintln!("{figures}");
}

#[test]
fn leader_killed() {
    run("leader_killed", &[Fault::KillLeader]);
}

#[test]
fn follower_killed() {
    run("follower_killed", &[Fault::KillFollower]);
}

#[test]
fn leader_isolated_from_the_majority() {
    run("leader_isolated_from_the_majority", &[Fault::IsolateLeader]);
}

#[test]
fn minority_partition_healed() {
    run("minority_partition_healed", &[Fault::IsolateFollower]);
}

#[test]
fn leader_paused_past_an_election_timeout() {
    run(
        "leader_paused_past_an_election_timeout",
        &[Fault::PauseLeader],
    );
}

#[test]
fn rolling_restart_of_every_node() {
    run("rolling_restart_of_every_node", &[Fault::RollingRestart]);
}

#[test]
fn node_added_and_another_removed_under_load() {
    run(
        "node_added_and_another_removed_under_load",
        &[Fault::AddRemoveMember],
    );
}

#[test]
fn plugin_installed_under_load() {
    run(
        "plugin_installed_under_load",
        &[Fault::InstallPlugin, Fault::KillLeader],
    );
}

/// Hostile clients, stalled watchers and a looping plugin beside the workload, then a
/// leader kill: the cluster serves on and the history checks pass.
#[test]
fn hostile_clients_watchers_and_plugin_under_load() {
    run(
        "hostile_clients_watchers_and_plugin_under_load",
        &[
            Fault::HostileClients,
            Fault::StalledWatchers,
            Fault::SpinningPlugin,
            Fault::KillLeader,
        ],
    );
}

/// A member added, then the leader removed: etcd allows it, and the cluster should carry
/// on under a new leader.
#[test]
fn leader_removed_under_load() {
    run("leader_removed_under_load", &[Fault::RemoveLeader]);
}

/// Two members' disks fail in turn (a log fsync or an apply, by seed): each stops by
/// itself, the cluster serves on, each rejoins once healed, and the histories check.
#[test]
fn disks_failing_under_load() {
    run(
        "disks_failing_under_load",
        &[Fault::FailDisk, Fault::FailDisk],
    );
}

/// Two to four seed-chosen faults of any kind, link cuts, slow nodes and paused followers
/// included; the soak's failures replay through this test.
#[test]
fn random_faults() {
    let figures = scenario::random("random_faults", seed());
    assert_eq!(figures.histories, 1);
    eprintln!("{figures}");
}

/// The long run of random scenarios; not part of the suite (it runs as long as asked):
/// `ETCH_SOAK_SECS=1800 cargo nextest run -p etch-tests --test faults --run-ignored only soak`.
#[test]
#[ignore = "the soak runs for ETCH_SOAK_SECS (default 60 s): run it with --run-ignored only"]
fn soak() {
    let secs: u64 = std::env::var("ETCH_SOAK_SECS")
        .unwrap_or_else(|_| "60".into())
        .parse()
        .expect("ETCH_SOAK_SECS is a number of seconds");
    let (figures, failures) = scenario::soak("random_faults", Duration::from_secs(secs));
    println!("soak of {secs} s:\n{figures}");
    assert!(
        failures.is_empty(),
        "{} soak scenarios failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
