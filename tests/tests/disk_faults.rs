//! Disk faults on real processes: a node whose disk fails stops (fail-stop), acknowledges
//! nothing it has not made durable, and rejoins once the disk is healthy.
//!
//! The faults come from failpoints compiled into debug builds (`etch_host::failpoint`),
//! armed through `ETCH_FAILPOINTS` with a trigger file per node that the test creates and
//! removes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// etchd on a data directory of its own, with the embedded certificates found there.
struct Embedded {
    data: PathBuf,
    client: String,
    peer: String,
    log: PathBuf,
}

impl Embedded {
    fn tls(&self) -> etch_proto::pki::TlsFiles {
        let certs = self.data.join("certs");
        etch_proto::pki::TlsFiles {
            ca: certs.join("ca.crt"),
            cert: certs.join("root.crt"),
            key: certs.join("root.key"),
        }
    }

    fn spawn(&self) -> std::process::Child {
        let log = std::fs::File::create(&self.log).expect("the node's log");
        std::process::Command::new(etch_tests::bin("etchd"))
            .args(["--name", "fixture", "--listen-client", &self.client])
            .args(["--listen-peer", &self.peer])
            .arg("--data-dir")
            .arg(&self.data)
            .env("RUST_BACKTRACE", "0")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etchd")
    }

    fn etchctl(&self, args: &[&str]) -> std::process::Output {
        etch_tests::etchctl_with(&self.client, &self.tls(), args)
    }

    /// Starts the node and waits until it serves `get fixture/ --prefix`; answers the JSON.
    fn start(&self) -> (std::process::Child, serde_json::Value) {
        let mut child = self.spawn();
        let out =
            etch_tests::wait_for("the fixture node to serve", Duration::from_secs(30), || {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!(
                        "etchd exited with {status}:\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                let out = self.etchctl(&["get", "fixture/", "--prefix", "-w", "json"]);
                out.status.success().then_some(out)
            });
        let json = serde_json::from_slice(&out.stdout).expect("get -w json");
        (child, json)
    }

    /// Starts the node and expects it to refuse: exits non-zero, with `expected` in its log.
    fn refused(&self, expected: &str) {
        let mut child = self.spawn();
        let status = etch_tests::wait_for("etchd to refuse", Duration::from_secs(30), || {
            child.try_wait().expect("try_wait")
        });
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(!status.success(), "etchd started:\n{log}");
        assert!(
            log.contains(expected),
            "the refusal does not say {expected:?}:\n{log}"
        );
    }
}

fn stop(mut child: std::process::Child) {
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = etch_tests::wait_for("etchd to stop", Duration::from_secs(30), || {
        child.try_wait().expect("try_wait")
    });
    assert!(status.success(), "etchd stopped with {status}");
}

/// `get fixture/ --prefix` as (key, value) pairs.
fn kvs(node: &Embedded) -> Vec<(String, String)> {
    let out = etch_tests::ok_stdout(&node.etchctl(&["get", "fixture/", "--prefix"]));
    let lines: Vec<&str> = out.lines().collect();
    (lines.chunks(2))
        .map(|kv| {
            (
                kv[0].to_owned(),
                kv.get(1).copied().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A data directory written by the release before data directories had a format record
/// (`tests/fixtures/data-dir-format1.tar.gz`, made by that release's etchd: a, b, a
/// deleted key, compaction at 3, c) opens, keeps its keys, history floor and revision, and
/// is given its record; a record of a newer format, or a damaged one, is refused with what
/// to do, and the directory serves again once its record is good.
#[test]
fn a_data_dir_of_the_previous_release_opens_and_a_newer_or_damaged_one_is_refused() {
    opens_and_is_migrated("data-dir-format1.tar.gz", false);
}

/// A data directory of format 2 (`tests/fixtures/data-dir-format2.tar.gz`: the same keys,
/// every version stored whole) opens and reads as it was, also at older revisions, and
/// writes on it keep the history right.
#[test]
fn a_data_dir_of_format_2_reads_as_it_was_and_writes_on() {
    opens_and_is_migrated("data-dir-format2.tar.gz", true);
}

fn opens_and_is_migrated(fixture: &str, has_record: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(fixture);
    let untar = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(untar.success(), "unpacking {}", fixture.display());
    let node = Embedded {
        data: dir.path().join("data"),
        client: format!("127.0.0.1:{}", etch_tests::free_port()),
        peer: format!("127.0.0.1:{}", etch_tests::free_port()),
        log: dir.path().join("etchd.log"),
    };
    let record = node.data.join(etch_host::data_dir::FORMAT_FILE);
    assert_eq!(record.exists(), has_record, "the fixture's format record");

    let (child, json) = node.start();
    assert_eq!(
        kvs(&node),
        [
            ("fixture/a".to_owned(), "a3".to_owned()),
            ("fixture/b".to_owned(), "b1".to_owned()),
            ("fixture/c".to_owned(), "c after compaction".to_owned()),
        ]
    );
    assert_eq!(json["header"]["revision"], 8);
    let old = node.etchctl(&["get", "fixture/a", "--rev", "2"]);
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("compacted"),
        "history below the compaction floor: {old:?}"
    );
    let put = node.etchctl(&["put", "fixture/d", "after the upgrade"]);
    assert!(put.status.success(), "{put:?}");
    // The key's history: its last version before the upgrade, at 7, and the newest.
    let put = node.etchctl(&["put", "fixture/a", "a4"]);
    assert!(put.status.success(), "{put:?}");
    let at = |rev: &str| {
        etch_tests::ok_stdout(&node.etchctl(&[
            "get",
            "fixture/a",
            "--rev",
            rev,
            "--print-value-only",
        ]))
    };
    assert_eq!(
        (at("7"), at("8"), at("10")),
        ("a3\n".into(), "a3\n".into(), "a4\n".into())
    );
    stop(child);
    let text = std::fs::read_to_string(&record).expect("the record was written");
    assert!(
        text.contains(&format!("format: {}", etch_host::data_dir::FORMAT)),
        "migrated to the current format: {text}"
    );

    std::fs::write(
        &record,
        etch_host::data_dir::render(etch_host::data_dir::FORMAT + 1),
    )
    .expect("a newer record");
    node.refused("newer than this etch reads");
    let mut damaged = text.clone().into_bytes();
    damaged[24] ^= 0x01;
    std::fs::write(&record, damaged).expect("a damaged record");
    node.refused("the format record is damaged");

    std::fs::write(&record, text).expect("the good record");
    let (child, json) = node.start();
    assert_eq!(json["count"], 4, "{json}");
    assert_eq!(json["header"]["revision"], 10);
    stop(child);
}

/// Starts node 0 of a stopped cluster and expects it to refuse to serve: a non-zero exit
/// whose log names `file` (by its whole path) and says it is damaged.
fn refuses_naming(cluster: &mut Cluster, file: &Path) {
    cluster.nodes[0].spawn();
    let status = cluster.nodes[0].wait_exit(Duration::from_secs(30));
    let log = cluster.nodes[0].log_text();
    assert!(
        !status.success(),
        "the node started on a damaged snapshot:\n{log}"
    );
    let name = file.to_string_lossy();
    assert!(
        log.contains(&*name) && log.contains("is damaged") && log.contains("rebuild"),
        "the refusal names neither the file nor what to do:\n{log}"
    );
}

/// The largest table file of node 0's state machine.
fn largest_table(cluster: &Cluster) -> PathBuf {
    let keyspaces = cluster.nodes[0].data_dir.join("db/keyspaces");
    let tables = (std::fs::read_dir(keyspaces).expect("keyspaces"))
        .filter_map(|ks| std::fs::read_dir(ks.ok()?.path().join("tables")).ok())
        .flatten()
        .filter_map(|t| t.ok().map(|t| t.path()));
    (tables.max_by_key(|t| std::fs::metadata(t).map_or(0, |m| m.len()))).expect("a table file")
}

/// A flipped bit in a table of a stopped node's state machine is found when the node
/// starts: it refuses to serve and names the file; with the file whole again it serves
/// every key. (A snapshot is the database itself: there is no snapshot file to damage.)
#[test]
fn a_damaged_table_is_found_at_start_and_named() {
    let mut cluster = Cluster::single_with(&["--snapshot-count", "20"]);
    let client_tls = cluster.client_tls("root");
    // 3.6 MB: past a 2 MiB memtable, so the state machine has tables on disk.
    let big = "t".repeat(60 << 10);
    for i in 0..40 {
        let value = if i < 30 { big.as_str() } else { "v" };
        etch_tests::ok_stdout(&cluster.etchctl(&["put", &format!("snap/{i:02}"), value]));
    }
    cluster.nodes[0].stop();

    let table = largest_table(&cluster);
    let good = std::fs::read(&table).expect("the table");
    let mut bad = good.clone();
    bad[good.len() / 3] ^= 0x02;
    std::fs::write(&table, &bad).expect("flip a bit");
    // fjall reads some blocks of a table when the database opens, and says only that a
    // checksum failed: the refusal then names the database; otherwise the node's own check
    // of every table names the table, whose path starts with the database's.
    let db = cluster.nodes[0].data_dir.join("db");
    refuses_naming(&mut cluster, &db);
    std::fs::write(&table, &good).expect("the whole table again");

    cluster.nodes[0].start(&client_tls);
    let out = etch_tests::ok_stdout(&cluster.etchctl(&[
        "get",
        "snap/",
        "--prefix",
        "--count-only",
        "-w",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["count"], 40, "{json}");
}

/// A node whose disk fills up with no free-space reserve (`--disk-free-reserve-bytes 0`, a
/// tmpfs of 192 MiB, 64 MiB of it ballast) meets ENOSPC mid-write: it stops by itself,
/// having lost nothing it acknowledged; with room again it starts on the same disk, serves
/// every acknowledged write and takes new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_mid_write_stops_the_node_and_it_serves_again_with_room() {
    let mut cluster = Cluster::prepare(1, &["--disk-free-reserve-bytes", "0"]);
    cluster.nodes[0].tmpfs = Some(etch_tests::Tmpfs {
        size_mib: 192,
        ballast_mib: 64,
    });
    cluster.start();
    let client = cluster.root_client();
    let value = vec![b'v'; 64 << 10];
    let mut acked = 0u32;
    let refusal = loop {
        assert!(acked < 4000, "192 MiB took {acked} puts of 64 KiB");
        match client.put(format!("full/{acked:05}"), value.clone()).await {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    let status = cluster.nodes[0].wait_exit(Duration::from_secs(30));
    let log = cluster.nodes[0].log_text();
    assert!(!status.success(), "exited with {status}:\n{log}");
    assert!(log.contains("storage failed"), "no reason given:\n{log}");
    let why = log
        .lines()
        .find(|l| l.contains("etchd: storage failed"))
        .unwrap_or_default();
    eprintln!("after {acked} puts of 64 KiB: {refusal}; the node exited with {status}: {why}");
    assert!(acked > 50, "the disk was full after only {acked} puts");

    cluster.nodes[0].remove_ballast();
    let tls = cluster.client_tls("root");
    cluster.nodes[0].start(&tls);
    let client = cluster.root_client();
    let all = client.get("full/").prefix().keys_only().await.expect("get");
    assert!(
        all.count == i64::from(acked) || all.count == i64::from(acked) + 1,
        "{acked} puts acknowledged, {} stored",
        all.count
    );
    let last = format!("full/{:05}", acked - 1);
    assert_eq!(
        client.get(last.as_str()).await.expect("get").kvs[0].value,
        value
    );
    client
        .put("after", "room")
        .await
        .expect("a put with room again");
}
