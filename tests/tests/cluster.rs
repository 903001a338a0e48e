//! Replicated cluster behaviour with real etchd processes: election, replication, leader
//! failure, forwarding, quorum loss and recovery, snapshot catch-up and membership changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etch_tests::{Cluster, etchctl_with, ok_stdout, wait_for};

/// `get KEY --serializable --print-value-only` on node `i`, if it answers.
fn local_value(cluster: &Cluster, i: usize, key: &str) -> Option<String> {
    let out = etchctl_with(
        &cluster.nodes[i].endpoint(),
        &cluster.client_tls("root"),
        &["get", key, "--serializable", "--print-value-only"],
    );
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
}

/// Waits until node `i` has applied `key = value`.
fn await_value(cluster: &Cluster, i: usize, key: &str, value: &str) {
    wait_for(
        &format!("{key}={value} on {}", cluster.nodes[i].name),
        Duration::from_secs(30),
        || (local_value(cluster, i, key).as_deref() == Some(value)).then_some(()),
    );
}

#[test]
fn three_nodes_elect_a_leader_and_replicate() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let out = cluster.etchctl(&["member", "list"]);
    assert_eq!(ok_stdout(&out).lines().count(), 3, "three members");
    assert_eq!(
        ok_stdout(&cluster.etchctl(&["put", "greeting", "hello"])),
        "OK\n"
    );
    for i in 0..3 {
        await_value(&cluster, i, "greeting", "hello");
    }
    // Exactly one leader, and every node agrees on it.
    let statuses = ok_stdout(&cluster.etchctl(&["endpoint", "status"]));
    assert_eq!(
        statuses.matches(", true, false,").count(),
        1,
        "one leader in:\n{statuses}"
    );
    assert_eq!(cluster.leader_index(), leader);

    // Every member holds the same history: one hash at the revision of the put, shown per
    // member, as `etcdctl endpoint hashkv --cluster` does.
    let hashes = ok_stdout(&cluster.etchctl(&["endpoint", "hashkv", "--cluster", "--rev", "2"]));
    let rows: Vec<Vec<&str>> = hashes.lines().map(|l| l.split(", ").collect()).collect();
    assert_eq!(rows.len(), 3, "one hash per member:\n{hashes}");
    assert!(
        rows.iter()
            .all(|r| r.len() == 3 && r[1] == rows[0][1] && r[2] == "2"),
        "members agree at revision 2:\n{hashes}"
    );
    // A later write changes the history's hash, and not the hash at revision 2.
    ok_stdout(&cluster.etchctl(&["put", "greeting", "again"]));
    for i in 0..3 {
        await_value(&cluster, i, "greeting", "again");
    }
    let at = |rev: &str| {
        let out = ok_stdout(&cluster.etchctl(&["endpoint", "hashkv", "--rev", rev, "-w", "json"]));
        let json: serde_json::Value = serde_json::from_str(&out).expect("hashkv json");
        json[0]["HashKV"]["hash"].as_u64().expect("a hash")
    };
    assert_eq!(at("2").to_string(), rows[0][1]);
    assert_ne!(at("3"), at("2"));
}

#[test]
fn writes_sent_to_a_follower_succeed() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let follower = (leader + 1) % 3;
    let tls = cluster.client_tls("root");
    let endpoint = cluster.nodes[follower].endpoint();
    assert_eq!(
        ok_stdout(&etchctl_with(
            &endpoint,
            &tls,
            &["put", "via-follower", "yes"]
        )),
        "OK\n"
    );
    // A linearizable read through the follower sees it at once.
    let got = ok_stdout(&etchctl_with(
        &endpoint,
        &tls,
        &["get", "via-follower", "--print-value-only"],
    ));
    assert_eq!(got, "yes\n");
    await_value(&cluster, leader, "via-follower", "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_loses_no_acknowledged_write() {
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let client = cluster.root_client();
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let (key, value) = (format!("w{w}/{i:03}"), format!("v{w}-{i}"));
                    // Failures during the failover are expected; only acknowledged writes count.
                    if client.put(key.as_bytes(), value.as_bytes()).await.is_ok() {
                        acked.lock().expect("lock").insert(key, value);
                    }
                }
            })
        })
        .collect();
    wait_for(
        "some writes before the kill",
        Duration::from_secs(30),
        || (acked.lock().expect("lock").len() >= 20).then_some(()),
    );
    cluster.nodes[leader].kill();
    for writer in writers {
        writer.await.expect("writer");
    }
    let new_leader = cluster.leader_index();
    assert_ne!(new_leader, leader);
    // The new leader serves writes.
    client
        .put("after-failover", "ok")
        .await
        .expect("write after failover");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 20,
        "writes went on after the kill: {}",
        acked.len()
    );
    let all = client.get("w").prefix().await.expect("read back");
    let stored: BTreeMap<String, String> = all
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    for (key, value) in &acked {
        assert_eq!(
            stored.get(key),
            Some(value),
            "acknowledged write {key} lost"
        );
    }
    // The old leader comes back as a follower and catches up.
    cluster.restart(leader);
    await_value(&cluster, leader, "after-failover", "ok");
}

#[test]
fn five_nodes_losing_three_refuse_writes_then_recover() {
    let mut cluster = Cluster::new(5, &[]);
    // Five fresh nodes on a loaded machine: a forwarded write may time out while the leader
    // settles (an unknown outcome, and this put is idempotent), so it is retried until OK.
    wait_for("a first write", Duration::from_secs(30), || {
        let out = cluster.etchctl(&["put", "before", "1"]);
        (out.status.success() && out.stdout == b"OK\n").then_some(())
    });
    let leader = cluster.leader_index();
    // Kill the leader and two followers: two nodes remain, no majority.
    let doomed: Vec<usize> = std::iter::once(leader)
        .chain((0..5).filter(|&i| i != leader).take(2))
        .collect();
    for &i in &doomed {
        cluster.nodes[i].kill();
    }
    let survivor = (0..5).find(|i| !doomed.contains(i)).expect("a survivor");
    let tls = cluster.client_tls("root");
    let endpoint = cluster.nodes[survivor].endpoint();
    // Right after the kill a survivor may still forward to the dead leader, and such a write
    // ends with an unknown outcome ("request timed out: the leader was lost ..."); once the survivors have noticed,
    // every write fails with a clear "no leader" / "no quorum" (the write still in flight
    // when the command timeout ran out is said to be of unknown outcome, after the node's
    // reason). None may succeed.
    let stderr = wait_for(
        "writes to be refused clearly",
        Duration::from_secs(30),
        || {
            let out = etchctl_with(&endpoint, &tls, &["put", "during", "x"]);
            assert!(!out.status.success(), "a write without quorum must fail");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (stderr.contains("no leader") || stderr.contains("no quorum")).then_some(stderr)
        },
    );
    assert!(
        stderr.starts_with("Error: unavailable: "),
        "one clear line: {stderr}"
    );
    // Serializable reads still answer from local state.
    assert_eq!(
        ok_stdout(&etchctl_with(
            &endpoint,
            &tls,
            &["get", "before", "--serializable", "--print-value-only"]
        )),
        "1\n"
    );
    // One node back: three of five, a majority again; service resumes by itself.
    let back = doomed[1];
    cluster.nodes[back].spawn();
    wait_for("writes to resume", Duration::from_secs(30), || {
        etchctl_with(&endpoint, &tls, &["put", "after", "2"])
            .status
            .success()
            .then_some(())
    });
    let got = ok_stdout(&etchctl_with(
        &endpoint,
        &tls,
        &["get", "before", "--print-value-only"],
    ));
    assert_eq!(got, "1\n", "earlier data survives");
    await_value(&cluster, back, "after", "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_a_purged_log_catches_up_by_snapshot() {
    let mut cluster = Cluster::new(
        3,
        &["--snapshot-count", "20", "--snapshot-catchup-entries", "20"],
    );
    let leader = cluster.leader_index();
    let lagging = (leader + 1) % 3;
    cluster.nodes[lagging].kill();
    let client = cluster.root_client();
    for i in 0..120 {
        client
            .put(format!("k{i:03}"), format!("v{i}"))
            .await
            .expect("put while a follower is down");
    }
    cluster.restart_serving(lagging);
    await_value(&cluster, lagging, "k119", "v119");
    assert_eq!(
        local_value(&cluster, lagging, "k000").as_deref(),
        Some("v0")
    );
    assert_caught_up_by_snapshot(&cluster, lagging);
}

/// Node `lagging` caught up by installing a snapshot, as its log says.
fn assert_caught_up_by_snapshot(cluster: &Cluster, lagging: usize) {
    let log = cluster.nodes[lagging].log_text();
    assert!(
        log.contains("installing snapshot"),
        "the lagging node caught up by snapshot; its log:\n{log}"
    );
}

/// The log is snapshotted and purged by bytes as well as entries: with the entry counts
/// far off, 4 MB of writes past a 1 MiB limit leave a follower that was down behind a
/// purged log, and it catches up by snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_past_its_byte_limit_is_snapshotted_and_purged() {
    let mut cluster = Cluster::new(3, &["--snapshot-log-bytes", "1048576"]);
    let leader = cluster.leader_index();
    let lagging = (leader + 1) % 3;
    cluster.nodes[lagging].kill();
    let client = cluster.root_client();
    let value = "v".repeat(100 * 1024);
    for i in 0..40 {
        client
            .put(format!("k{i:03}"), value.clone())
            .await
            .expect("put while a follower is down");
    }
    wait_for(
        "the leader to snapshot and purge by bytes",
        Duration::from_secs(30),
        || {
            let log = cluster.nodes[leader].log_text();
            (log.contains("built snapshot") && log.contains("purging the Raft log")).then_some(())
        },
    );
    cluster.restart_serving(lagging);
    await_value(&cluster, lagging, "k039", &value);
    assert_caught_up_by_snapshot(&cluster, lagging);
}

#[test]
fn a_learner_joins_is_promoted_and_a_member_is_removed() {
    let mut cluster = Cluster::new(3, &[]);
    ok_stdout(&cluster.etchctl(&["put", "seed", "1"]));
    let added = cluster.add_learner("n4");
    assert!(added.contains("added as learner to cluster"), "{added}");
    await_value(&cluster, 3, "seed", "1");
    let list = ok_stdout(&cluster.etchctl(&["member", "list"]));
    let n4_line = list
        .lines()
        .find(|l| l.contains(", n4,"))
        .unwrap_or_else(|| panic!("n4 listed:\n{list}"));
    assert!(n4_line.ends_with(", true"), "n4 is a learner: {n4_line}");
    let n4_id = n4_line.split(',').next().expect("id").trim().to_owned();
    wait_for(
        "the learner to be promoted",
        Duration::from_secs(30),
        || {
            cluster
                .etchctl(&["member", "promote", &n4_id])
                .status
                .success()
                .then_some(())
        },
    );
    let list = ok_stdout(&cluster.etchctl(&["member", "list"]));
    assert_eq!(
        list.lines().filter(|l| l.ends_with(", false")).count(),
        4,
        "four voters:\n{list}"
    );

    // Remove a member that is not the leader; the other three carry on.
    let leader = cluster.leader_index();
    let gone = (0..3).find(|&i| i != leader).expect("a follower");
    let gone_line = list
        .lines()
        .find(|l| l.contains(&format!(", {},", cluster.nodes[gone].name)))
        .expect("listed");
    let gone_id = gone_line.split(',').next().expect("id").trim().to_owned();
    ok_stdout(&cluster.etchctl(&["member", "remove", &gone_id]));
    let list = ok_stdout(&cluster.etchctl(&["member", "list"]));
    assert_eq!(list.lines().count(), 3, "three members left:\n{list}");
    // The removed member learns it from the others and stops by itself, as etcd's does.
    let status = cluster.nodes[gone].wait_exit(Duration::from_secs(60));
    assert!(status.success(), "the removed member exited with {status}");
    let log = cluster.nodes[gone].log_text();
    assert!(
        log.contains("this member was removed from the cluster"),
        "{log}"
    );
    let endpoint = cluster.nodes[leader].endpoint();
    let tls = cluster.client_tls("root");
    assert_eq!(
        ok_stdout(&etchctl_with(
            &endpoint,
            &tls,
            &["put", "after-remove", "ok"]
        )),
        "OK\n"
    );
    await_value(&cluster, 3, "after-remove", "ok");
}

#[test]
fn nodes_of_different_clusters_refuse_each_other() {
    let mut a = Cluster::new(3, &[]);
    // Cluster B shares A's CA, but was founded separately (another token), and its
    // --initial-cluster names A's n1 as its own first member by mistake.
    let mut m2 = a.extra_node("m2", &[]);
    let mut m3 = a.extra_node("m3", &[]);
    let initial = format!(
        "n1={},m2={},m3={}",
        a.nodes[0].peer_endpoint(),
        m2.peer_endpoint(),
        m3.peer_endpoint()
    );
    for node in [&mut m2, &mut m3] {
        node.extra_args = [
            "--initial-cluster",
            &initial,
            "--initial-cluster-token",
            "other",
        ]
        .map(String::from)
        .to_vec();
    }
    let tls = a.client_tls("root");
    m2.spawn();
    m3.spawn();
    // m2 and m3 are a majority of B and elect a leader among themselves.
    m2.await_ready(&tls);
    m3.await_ready(&tls);
    wait_for(
        "A's n1 to refuse B's requests",
        Duration::from_secs(20),
        || {
            a.nodes[0]
                .log_text()
                .contains("cluster id mismatch")
                .then_some(())
        },
    );
    // A is untouched: three members, and it takes writes.
    assert_eq!(
        ok_stdout(&a.etchctl(&["member", "list"])).lines().count(),
        3
    );
    assert_eq!(ok_stdout(&a.etchctl(&["put", "still", "fine"])), "OK\n");
    // B's data is its own.
    let b_value = etchctl_with(
        &m2.endpoint(),
        &tls,
        &["get", "still", "--print-value-only"],
    );
    assert_eq!(ok_stdout(&b_value), "");
    let _ = a.leader_index();
}

/// Writes that reach the leader together share Raft entries (`Command::Batch`), yet each
/// gets its own revision and every member applies them alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_raft_entries_and_keep_their_own_revisions() {
    const WRITES: usize = 400;
    let mut cluster = Cluster::new(3, &[]);
    let leader = cluster.leader_index();
    let client = cluster.root_client();
    client.put("warm-up", "1").await.expect("first write");
    // Ask the leader: it is where the client now writes, and its log is the longest.
    let leader_client = etch_client::Client::new(etch_client::ClientOptions::new(
        [cluster.nodes[leader].endpoint()],
        cluster.client_tls("root"),
    ))
    .expect("a client of the leader");
    let before = leader_client.status().await.expect("status").raft_index;
    let start_revision = client.get("warm-up").await.expect("read").header.revision;
    let writes = (0..WRITES).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.put(format!("batch/{i:03}"), format!("v{i}")).await })
    });
    let mut revisions = Vec::with_capacity(WRITES);
    for write in writes.collect::<Vec<_>>() {
        let put = write.await.expect("writer").expect("put");
        revisions.push(put.header.revision);
    }
    let after = leader_client.status().await.expect("status").raft_index;
    revisions.sort_unstable();
    let expected: Vec<i64> = (start_revision + 1..=start_revision + WRITES as i64).collect();
    assert_eq!(
        revisions, expected,
        "one revision per write, none shared, none skipped"
    );
    let entries = after - before;
    assert!(
        entries <= (WRITES / 2) as u64,
        "{WRITES} concurrent writes took {entries} Raft entries: they were not batched"
    );
    // Every member applied the batches to the same history.
    let last = start_revision + WRITES as i64;
    for i in 0..3 {
        await_value(&cluster, i, "batch/399", "v399");
    }
    let hashes = ok_stdout(&cluster.etchctl(&[
        "endpoint",
        "hashkv",
        "--cluster",
        "--rev",
        &last.to_string(),
    ]));
    let hashes: Vec<&str> = hashes
        .lines()
        .map(|l| l.split(", ").nth(1).expect("a hash column"))
        .collect();
    assert_eq!(hashes.len(), 3);
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
}

/// A node restarted on its ports resets the connections the process before it held, at
/// their first packet: its stateless reset key is kept in the data directory. Without it,
/// a read on an old connection without keep-alives went unanswered until the 30 s idle
/// timeout, far past the request timeout (with keep-alives, the SDK takes a connection
/// silent for 2 s for dead; the peers' own connections, 3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_resets_its_old_connections_at_once() {
    let mut cluster = Cluster::new(1, &[]);
    let opts = cluster
        .client_options("root")
        .request_timeout(Duration::from_secs(5))
        .keep_alive(None);
    let client = etch_client::Client::connect(opts).await.expect("connect");
    client.put("k", "v").await.expect("put");
    cluster.restart_serving(0);
    let read = client
        .get("k")
        .await
        .expect("a read on the old connection is retried");
    assert_eq!(read.kvs[0].value, b"v");
    let key = std::fs::read(cluster.nodes[0].data_dir.join("reset-key")).expect("reset key");
    assert_eq!(key.len(), 32);
}
