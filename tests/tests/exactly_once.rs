//! Exactly-once writes on real processes: a put whose leader dies after committing it but
//! before answering is sent again by the SDK under the same name, and applies once.

use std::path::PathBuf;
use std::time::Duration;

use etch_tests::Cluster;

fn trigger(cluster: &Cluster, i: usize) -> PathBuf {
    cluster
        .dir
        .path()
        .join(format!("{}.apply-write", cluster.nodes[i].name))
}

/// A running 3-node cluster whose members' apply fails once their [`trigger`] file exists.
fn armable_cluster() -> Cluster {
    let mut cluster = Cluster::prepare(3, &[]);
    for i in 0..3 {
        let spec = format!("apply-write={}", trigger(&cluster, i).display());
        cluster.nodes[i].env.push(("ETCH_FAILPOINTS".into(), spec));
    }
    cluster.start();
    cluster
}

/// The leader's apply fails (a failpoint) right after the entry of a put committed: the
/// leader exits without answering, the SDK sends the same named put to the new leader,
/// which answers what applying the first copy gave. The key's version, its mod revision,
/// the store's revision and the watch's events all show one put; the old leader rejoins
/// and every member's history hashes alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_retried_after_its_leader_died_mid_request_applies_once() {
    let mut cluster = armable_cluster();
    let client = cluster.root_client();
    let first = client.put("once/k", "v0").await.expect("first put");
    let start = first.header.revision;
    let mut watcher = client
        .watch("once/k")
        .start_revision(start + 1)
        .await
        .expect("watch");

    let leader = cluster.leader_index();
    std::fs::write(trigger(&cluster, leader), b"").expect("arm the leader's apply");
    let retried = client
        .put("once/k", "v1")
        .await
        .expect("the put, sent again after its leader died");
    let status = cluster.nodes[leader].wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the leader exited with {status}");
    let revision = retried.header.revision;
    assert_eq!(revision, start + 1, "the put applied at the next revision");

    let got = client.get("once/k").await.expect("get");
    let kv = &got.kvs[0];
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.version, 2, "v0 then v1, once: {kv:?}");
    assert_eq!(kv.mod_revision, revision);
    assert_eq!(got.header.revision, revision, "nothing else was written");

    let last = client.put("once/k", "v2").await.expect("a later put");
    let mut events = Vec::new();
    while events.last().map(|(_, rev)| *rev) != Some(last.header.revision) {
        let resp = tokio::time::timeout(Duration::from_secs(20), watcher.next())
            .await
            .expect("events within 20 s")
            .expect("the watch is open")
            .expect("a watch response");
        events.extend((resp.events.iter()).map(|e| {
            (
                String::from_utf8_lossy(&e.kv.value).into_owned(),
                e.kv.mod_revision,
            )
        }));
    }
    assert_eq!(
        events,
        [
            ("v1".to_owned(), revision),
            ("v2".to_owned(), last.header.revision)
        ]
    );

    std::fs::remove_file(trigger(&cluster, leader)).expect("heal");
    let tls = cluster.client_tls("root");
    cluster.nodes[leader].start(&tls);
    let end = last.header.revision;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let opts = etch_client::ClientOptions::new(
            [cluster.nodes[i].endpoint()],
            cluster.client_tls("root"),
        )
        .request_timeout(Duration::from_secs(5));
        let one = etch_client::Client::new(opts).expect("client");
        let hash = etch_tests::wait_for_async(
            &format!("{} at revision {end}", cluster.nodes[i].name),
            Duration::from_secs(30),
            || async { one.hash_kv(end).await.ok().map(|h| h.hash) },
        )
        .await;
        hashes.push(hash);
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

/// The same fault for a client that does not name its writes: the leader stops (its apply
/// failed) after the put committed, so openraft ends the proposal with a fatal error. That
/// error must say the outcome is unknown, never "unavailable" (which tells a client the
/// write did not happen and may be sent again): the SDK does not resend it, and the put
/// applies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unnamed_put_whose_leader_stopped_mid_request_is_of_unknown_outcome() {
    let mut cluster = armable_cluster();
    let opts = cluster
        .client_options("root")
        .request_timeout(Duration::from_secs(10))
        .exactly_once(false);
    let client = etch_client::Client::new(opts).expect("an unnamed client");
    let first = client.put("unnamed/k", "v0").await.expect("first put");

    let leader = cluster.leader_index();
    std::fs::write(trigger(&cluster, leader), b"").expect("arm the leader's apply");
    let err = client
        .put("unnamed/k", "v1")
        .await
        .expect_err("the leader stopped before answering");
    assert!(err.outcome_unknown(), "outcome unknown: {err:#}");
    assert!(!err.is_retryable(), "not to be sent again: {err:#}");
    let status = cluster.nodes[leader].wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "the leader exited with {status}");

    let got =
        etch_tests::wait_for_async("a get from the new leader", Duration::from_secs(20), || {
            let client = client.clone();
            async move { client.get("unnamed/k").await.ok() }
        })
        .await;
    let kv = &got.kvs[0];
    assert_eq!(
        kv.value, b"v1",
        "the put committed before its leader stopped"
    );
    assert_eq!(kv.version, 2, "v0 then v1, once: {kv:?}");
    assert_eq!(kv.mod_revision, first.header.revision + 1);
    assert_eq!(
        got.header.revision, kv.mod_revision,
        "nothing else was written"
    );
}
