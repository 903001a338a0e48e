//! The two things people run etcd for, end to end through the user-facing tools:
//! `etchctl watch` following configuration changes across a leader kill, and service
//! discovery with leases through the SDK (register, keep alive, list, watch, expire).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use etch_client::proto::watch::EventType;
use etch_client::{Client, ClientOptions, KeepAliveStatus};
use etch_tests::{Cluster, bin, ok_stdout, wait_for};

#[test]
fn etchctl_watch_shows_every_change_across_a_leader_kill() {
    let mut cluster = Cluster::new(3, &[]);
    let tls = cluster.client_tls("root");
    let mut watch = Command::new(bin("etchctl"))
        .args(["--endpoints", &cluster.endpoints()])
        .arg("--cacert")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.cert)
        .arg("--key")
        .arg(&tls.key)
        .args(["watch", "--prefix", "/config/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etchctl watch");
    // Lines of the watcher's output, as they come.
    let (lines_tx, lines) = mpsc::channel();
    let stdout = watch.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let expect = |seen: &mut Vec<String>, want: &[&str]| {
        for w in want {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("watch output stopped; expected {w:?} after {seen:?}"));
            assert_eq!(line, *w, "watch output so far: {seen:?}");
            seen.push(line);
        }
    };
    // The watcher is up once it reports a change made after it started.
    wait_for(
        "the watch to see a first change",
        Duration::from_secs(20),
        || {
            ok_stdout(&cluster.etchctl(&["put", "/config/probe", "1"]));
            lines.recv_timeout(Duration::from_millis(500)).ok()
        },
    );
    while lines.recv_timeout(Duration::from_millis(300)).is_ok() {}

    ok_stdout(&cluster.etchctl(&["put", "/config/a", "1"]));
    expect(&mut seen, &["PUT", "/config/a", "1"]);
    let leader = cluster.leader_index();
    cluster.nodes[leader].kill();
    // Writes through the survivors; the watch resumes by itself on another node.
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| cluster.nodes[i].endpoint())
        .collect();
    let write = |args: &[&str]| {
        wait_for(
            "a write after the leader kill",
            Duration::from_secs(30),
            || {
                let out = etch_tests::etchctl_with(&survivors.join(","), &tls, args);
                out.status.success().then_some(())
            },
        )
    };
    write(&["put", "/config/b", "2"]);
    write(&["del", "/config/a"]);
    write(&["put", "/other", "not watched"]);
    write(&["put", "/config/c", "3"]);
    expect(
        &mut seen,
        &[
            "PUT",
            "/config/b",
            "2",
            "DELETE",
            "/config/a",
            "",
            "PUT",
            "/config/c",
            "3",
        ],
    );
    let _ = watch.kill();
    let _ = watch.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_registers_with_a_lease_and_disappears_when_it_stops() {
    let cluster = Cluster::new(3, &[]);
    let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.endpoint()).collect();
    let client =
        Client::new(ClientOptions::new(endpoints, cluster.client_tls("root"))).expect("client");

    // A client watches the services prefix.
    let mut watcher = client
        .watch("/services/web/")
        .prefix()
        .await
        .expect("watch");

    // The service registers under /services/NAME/ID with a lease and keeps it alive.
    let lease = client.lease_grant(5).await.expect("grant");
    client
        .put("/services/web/1", "10.0.0.1:8080")
        .lease(lease.id)
        .await
        .expect("register");
    let mut keep_alive = client.keep_lease_alive(lease.id);
    let listed = client.get("/services/web/").prefix().await.expect("list");
    assert_eq!(listed.kvs.len(), 1);
    assert_eq!(listed.kvs[0].lease, lease.id);
    let registered = next_event(&mut watcher).await;
    assert_eq!(
        (registered.0, registered.1.as_str()),
        (EventType::Put, "/services/web/1")
    );

    // Alive well past its TTL while the keep-alive runs.
    let refreshed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let KeepAliveStatus::Alive { refreshes, .. } = keep_alive.changed().await
                && refreshes >= 4
            {
                return;
            }
        }
    })
    .await;
    assert!(refreshed.is_ok(), "the lease was refreshed");
    let ttl = client
        .lease_time_to_live(lease.id)
        .keys()
        .await
        .expect("ttl");
    assert!(ttl.ttl > 0, "still alive: {ttl:?}");
    assert_eq!(ttl.keys.len(), 1);

    // The service stops: its key disappears after the TTL, and the watcher is told.
    drop(keep_alive);
    let gone = tokio::time::timeout(Duration::from_secs(30), next_event(&mut watcher))
        .await
        .expect("expiry");
    assert_eq!(
        (gone.0, gone.1.as_str()),
        (EventType::Delete, "/services/web/1")
    );
    let listed = client.get("/services/web/").prefix().await.expect("list");
    assert!(listed.kvs.is_empty(), "deregistered: {listed:?}");
}

async fn next_event(watcher: &mut etch_client::Watcher) -> (EventType, String) {
    loop {
        let response = watcher
            .next()
            .await
            .expect("watch stream open")
            .expect("watch response");
        if let Some(event) = response.events.first() {
            return (
                event.kind,
                String::from_utf8_lossy(&event.kv.key).into_owned(),
            );
        }
    }
}

#[test]
fn an_idle_watch_asking_for_progress_gets_periodic_notifications() {
    let cluster = Cluster::new(1, &["--watch-progress-notify-interval", "300"]);
    ok_stdout(&cluster.etchctl(&["put", "/idle/a", "1"]));
    let tls = cluster.client_tls("root");
    let mut watch = Command::new(bin("etchctl"))
        .args(["--endpoints", &cluster.endpoints()])
        .arg("--cacert")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.cert)
        .arg("--key")
        .arg(&tls.key)
        .args(["watch", "--prefix", "/idle/", "--progress-notify"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn etchctl watch");
    let stdout = watch.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // Nothing changes under /idle/, yet notifications keep coming, at the current revision.
    for _ in 0..2 {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a progress notification");
        assert_eq!(
            line, "progress notify: 2",
            "only progress notifications are expected"
        );
    }
    let _ = watch.kill();
    let _ = watch.wait();
}

/// A client given one member's address learns the others — by asking (`Client::sync`,
/// etcd's `Sync`) or on its own (`auto_sync_interval`) — and goes on when that member is
/// gone. A client that never learned them has nothing else to dial and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_given_one_member_learns_the_others_and_outlives_it() {
    let mut cluster = Cluster::new(3, &[]);
    let tls = cluster.client_tls("root");
    let first = cluster.nodes[0].endpoint();
    let options = || {
        ClientOptions::new([first.clone()], tls.clone()).request_timeout(Duration::from_secs(10))
    };
    let by_hand = Client::connect(options())
        .await
        .expect("connect to one member");
    let on_its_own =
        Client::connect(options().auto_sync_interval(Some(Duration::from_millis(200))))
            .await
            .expect("connect to one member");
    let stuck = Client::connect(options().request_timeout(Duration::from_secs(3)))
        .await
        .expect("connect to one member");
    let mut members: Vec<etch_client::Endpoint> = (cluster.nodes.iter())
        .map(|n| n.endpoint().parse().expect("an endpoint"))
        .collect();
    members.sort_by_key(ToString::to_string);
    let sorted = |mut endpoints: Vec<etch_client::Endpoint>| {
        endpoints.sort_by_key(ToString::to_string);
        endpoints
    };

    // A member's client address is known once it has been heard from.
    let learned = etch_tests::wait_for_async(
        "every member's address",
        Duration::from_secs(20),
        || async {
            let learned = sorted(by_hand.sync().await.expect("sync"));
            (learned == members).then_some(learned)
        },
    )
    .await;
    assert_eq!(sorted(by_hand.known_endpoints().await), learned);
    assert_eq!(
        by_hand.endpoints().len(),
        1,
        "the configured endpoints stay as given"
    );
    etch_tests::wait_for_async(
        "the auto-sync to learn them",
        Duration::from_secs(20),
        || async { (sorted(on_its_own.known_endpoints().await) == members).then_some(()) },
    )
    .await;
    assert_eq!(stuck.known_endpoints().await.len(), 1);

    cluster.nodes[0].kill();
    by_hand
        .put("k", "by hand")
        .await
        .expect("another member serves the client that synced");
    on_its_own
        .put("k", "on its own")
        .await
        .expect("another member serves the auto-synced client");
    let got = by_hand.get("k").await.expect("get");
    assert_eq!(got.kvs[0].value, b"on its own");
    assert!(
        stuck.put("k", "stuck").await.is_err(),
        "a client that knows only the killed member has nothing to dial"
    );
}
