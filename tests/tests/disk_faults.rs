//! Disk faults on real processes: a node whose disk fails stops (fail-stop), acknowledges
//! nothing it has not made durable, and rejoins once the disk is healthy.
//!
//! The faults come from failpoints compiled into debug builds (`etch_host::failpoint`),
//! armed through `ETCH_FAILPOINTS` with a trigger file per node that the test creates and
//! removes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etch_tests::{Cluster, wait_for_async};

/// Puts unique keys one after another through an SDK client of every member; records the
/// ones acknowledged (a failed put's outcome is unknown and not recorded).
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<String, String>>>,
    task: tokio::task::JoinHandle<u64>,
}

impl Writer {
    fn start(client: etch_client::Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let (flag, record) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut failed = 0;
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let (key, value) = (format!("disk/{n:06}"), format!("value-{n}"));
                n += 1;
                match client.put(key.as_str(), value.as_str()).await {
                    Ok(_) => {
                        record.lock().expect("acked").insert(key, value);
                    }
                    Err(_) => failed += 1,
                }
            }
            failed
        });
        Writer { stop, acked, task }
    }

    fn acked(&self) -> usize {
        self.acked.lock().expect("acked").len()
    }

    /// Waits until `more` puts beyond the present count are acknowledged.
    async fn await_more(&self, more: usize, what: &str) {
        let target = self.acked() + more;
        wait_for_async(what, Duration::from_secs(60), || async {
            (self.acked() >= target).then_some(())
        })
        .await;
    }

    /// Stops; answers the acknowledged puts and how many failed.
    async fn stop(self) -> (BTreeMap<String, String>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let failed = self.task.await.expect("the writer");
        let acked = self.acked.lock().expect("acked").clone();
        (acked, failed)
    }
}

fn trigger(cluster: &Cluster, i: usize, point: &str) -> PathBuf {
    cluster
        .dir
        .path()
        .join(format!("{}.{point}", cluster.nodes[i].name))
}

/// The hash of node `i`'s history up to `rev`, asked of that node alone.
async fn hash_at(cluster: &Cluster, i: usize, rev: i64) -> Option<u32> {
    let opts =
        etch_client::ClientOptions::new([cluster.nodes[i].endpoint()], cluster.client_tls("root"))
            .request_timeout(Duration::from_secs(5));
    let client = etch_client::Client::new(opts).ok()?;
    client.hash_kv(rev).await.ok().map(|h| h.hash)
}

/// Makes node `i`'s failpoint `point` fail while the writer runs; the node must exit on its
/// own with a non-zero status and say why, while the others go on taking writes.
async fn fail_and_heal(cluster: &mut Cluster, writer: &Writer, i: usize, point: &str) {
    let trigger = trigger(cluster, i, point);
    std::fs::write(&trigger, b"").expect("create the trigger");
    let status = cluster.nodes[i].wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "{} exited with {status} after its disk failed",
        cluster.nodes[i].name
    );
    let log = cluster.nodes[i].log_text();
    assert!(
        log.contains("storage failed") && log.contains(&format!("failpoint {point}")),
        "the log says neither that storage failed nor where:\n{log}"
    );
    writer
        .await_more(
            20,
            &format!("writes to go on without {}", cluster.nodes[i].name),
        )
        .await;
    std::fs::remove_file(&trigger).expect("heal the disk");
    let tls = cluster.client_tls("root");
    cluster.nodes[i].start(&tls);
    writer
        .await_more(20, &format!("writes with {} back", cluster.nodes[i].name))
        .await;
}

/// A failed fsync of the leader's log, then a failed apply on a follower: each node stops
/// by itself with a clear error, the cluster keeps taking writes, the node restarts on the
/// healed disk and catches up, and every acknowledged write is there with its value on
/// every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_stops_its_node_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::prepare(3, &[]);
    for i in 0..3 {
        let spec = format!(
            "log-fsync={},apply-write={}",
            trigger(&cluster, i, "log-fsync").display(),
            trigger(&cluster, i, "apply-write").display()
        );
        cluster.nodes[i].env.push(("ETCH_FAILPOINTS".into(), spec));
    }
    cluster.start();
    let writer = Writer::start(cluster.root_client());
    writer.await_more(20, "the first writes").await;

    let leader = cluster.leader_index();
    fail_and_heal(&mut cluster, &writer, leader, "log-fsync").await;
    let follower = (cluster.leader_index() + 1) % 3;
    fail_and_heal(&mut cluster, &writer, follower, "apply-write").await;

    let (acked, failed) = writer.stop().await;
    let client = cluster.root_client();
    let revision = client.get("disk/").await.expect("a read").header.revision;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let hash = wait_for_async(
            &format!("{} to reach revision {revision}", cluster.nodes[i].name),
            Duration::from_secs(30),
            || hash_at(&cluster, i, revision),
        )
        .await;
        hashes.push(hash);
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "members' histories differ at {revision}: {hashes:?}"
    );
    let stored = client.get("disk/").prefix().await.expect("read back");
    let stored: BTreeMap<String, String> = (stored.kvs.iter())
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
            "acknowledged {key} is lost or changed"
        );
    }
    eprintln!(
        "{} puts acknowledged, {failed} failed (outcome unknown), {} keys stored, revision {revision}",
        acked.len(),
        stored.len()
    );
}
