//! Revocation without restart (issue 13, part 7), against real etchd processes.
//!
//! - Hostile lists first: a malformed list, or one another CA signed, stops `etchd` at
//!   start-up with a clear error; at a reload (SIGHUP) the same lists, and a key that does
//!   not match its certificate, are logged at ERROR and the node keeps its old material.
//! - `etchctl certs revoke` on a running 3-node cluster started with `--client-crl-file`:
//!   the client's next command is refused by every node, its open connection is closed
//!   with the reason, other clients keep working, and no node restarts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use etch_proto::pki::{Authority, TlsFiles};
use etch_proto::{ALPN_CLIENT, Request, Response, StatusRequest, frame};
use etch_tests::{Certs, Cluster, bin, etchctl_with, quic_dial, raw_exchange, raw_tls, wait_for};

/// `etchctl certs revoke --dir DIR NAME`, which must succeed; returns its output.
fn revoke(dir: &Path, name: &str) -> String {
    let out = Command::new(bin("etchctl"))
        .args(["certs", "revoke", "--dir"])
        .arg(dir)
        .arg(name)
        .output()
        .expect("run etchctl");
    assert!(
        out.status.success(),
        "certs revoke {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A cluster of `n` nodes whose certificate directory has a revocation list (one spare
/// certificate revoked), every node started with `--client-crl-file` on it; client
/// certificates `root`, `alice` and `bob`.
fn cluster_with_crl(n: usize) -> Cluster {
    let mut cluster = Cluster::prepare(n, &[]);
    let dir = cluster.certs.dir.clone();
    Certs::new(&dir, &[], &["bob", "spare"]);
    let said = revoke(&dir, "spare");
    assert!(
        said.starts_with("revoked certificate spare (serial ")
            && said.contains("CRL number 1, 1 revoked"),
        "{said}"
    );
    let crl = dir.join("crl.pem");
    for node in &mut cluster.nodes {
        node.extra_args.push("--client-crl-file".into());
        node.extra_args.push(crl.display().to_string());
    }
    cluster.start();
    cluster
}

/// Whether a Status exchange over a fresh connection with `files` is answered.
async fn served(addr: &str, files: &TlsFiles) -> bool {
    let Ok(conn) = quic_dial(addr, raw_tls(files, ALPN_CLIENT)).await else {
        return false;
    };
    status(&conn).await
}

async fn status(conn: &quinn::Connection) -> bool {
    let status = frame::encode(&Request::Status(StatusRequest {}), usize::MAX).expect("encode");
    let exchange = tokio::time::timeout(Duration::from_secs(10), raw_exchange(conn, &status));
    matches!(exchange.await, Ok(Ok(Some(Ok(Response::Status(_))))))
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

/// A list signed by a CA of another cluster, in `dir`.
fn foreign_crl(dir: &Path) -> std::path::PathBuf {
    let other = tempfile::tempdir().expect("tempdir");
    Certs::new(other.path(), &[], &["x"]);
    revoke(other.path(), "x");
    let path = dir.join("foreign-crl.pem");
    std::fs::copy(other.path().join("crl.pem"), &path).expect("copy");
    path
}

#[test]
fn hostile_lists_stop_the_start() {
    let mut cluster = Cluster::prepare(1, &[]);
    let dir = cluster.certs.dir.clone();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("write");
    let cases = [
        (garbage, "does not parse"),
        (foreign_crl(&dir), "which is not a CA of the bundle"),
        (dir.join("missing.pem"), "cannot read"),
    ];
    let base = cluster.nodes[0].extra_args.clone();
    for (path, why) in cases {
        let node = &mut cluster.nodes[0];
        node.extra_args = base.clone();
        node.extra_args.push("--client-crl-file".into());
        node.extra_args.push(path.display().to_string());
        node.spawn();
        wait_for("etchd to refuse its list", Duration::from_secs(20), || {
            (!node.is_running()).then_some(())
        });
        node.kill();
        let log = node.log_text();
        assert!(
            log.contains(why) && log.contains(&path.display().to_string()),
            "{why}:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_reload_keeps_the_old_material() {
    let cluster = cluster_with_crl(1);
    let dir = cluster.certs.dir.clone();
    let node = &cluster.nodes[0];
    let addr = node.endpoint();
    revoke(&dir, "alice");
    let alice = cluster.client_tls("alice");
    // The poll picks the list up.
    for _ in 0..200 {
        if !served(&addr, &alice).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!served(&addr, &alice).await, "alice is refused");
    let crl = dir.join("crl.pem");
    let good = std::fs::read(&crl).expect("list");
    let hup = |log_errors: usize| {
        cluster.signal(0, "HUP");
        wait_for("the reload to be refused", Duration::from_secs(10), || {
            (count(&node.log_text(), "TLS material not reloaded") > log_errors).then_some(())
        });
    };
    let mut errors = count(&node.log_text(), "TLS material not reloaded");
    assert_eq!(errors, 0, "{}", node.log_text());

    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("write");
    hup(errors);
    errors += 1;
    std::fs::copy(foreign_crl(&dir), &crl).expect("copy");
    hup(errors);
    errors += 1;
    std::fs::write(&crl, &good).expect("restore");
    // A key that is not the certificate's.
    let n1_key = dir.join("n1.key");
    let key = std::fs::read(&n1_key).expect("key");
    std::fs::copy(dir.join("bob.key"), &n1_key).expect("copy");
    hup(errors);
    std::fs::write(&n1_key, key).expect("restore");

    let log = node.log_text();
    for why in ["does not parse", "not a CA of the bundle", "KeyMismatch"] {
        let line = log.lines().find(|l| l.contains(why)).unwrap_or_default();
        assert!(
            line.contains("ERROR") && line.contains("keeps its previous certificates"),
            "{why}:\n{log}"
        );
    }
    // Old material in force all along: alice still refused, root served, no restart.
    assert!(!served(&addr, &alice).await, "alice is still refused");
    assert!(served(&addr, &cluster.client_tls("root")).await);
    assert_eq!(count(&log, "etchd is serving"), 1, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_client_is_refused_with_no_restart() {
    let cluster = cluster_with_crl(3);
    let dir = cluster.certs.dir.clone();
    let alice = cluster.client_tls("alice");
    let pids: Vec<_> = cluster.nodes.iter().map(|n| n.pid()).collect();
    // Status needs no rights: alice's commands are served until her certificate goes.
    let ok = etchctl_with(&cluster.endpoints(), &alice, &["endpoint", "status"]);
    assert!(ok.status.success(), "{ok:?}");
    // Open connections as alice, one per node, each served once.
    let mut open = Vec::new();
    for node in &cluster.nodes {
        let conn = quic_dial(&node.endpoint(), raw_tls(&alice, ALPN_CLIENT))
            .await
            .expect("alice connects");
        assert!(status(&conn).await, "served before the revocation");
        open.push(conn);
    }
    let sdk = etch_client::Client::connect(cluster.client_options("alice"))
        .await
        .expect("SDK as alice");
    sdk.status()
        .await
        .expect("SDK status before the revocation");
    // And over the etcd gRPC front: a channel as alice, served once.
    let grpc = etch_tests::grpc::channel(&cluster.nodes[0].endpoint(), &alice).await;
    let mut maintenance =
        etch_etcd_api::etcdserverpb::maintenance_client::MaintenanceClient::new(grpc);
    maintenance
        .status(etch_etcd_api::etcdserverpb::StatusRequest {})
        .await
        .expect("gRPC status before the revocation");

    let said = revoke(&dir, "alice");
    assert!(said.contains("CRL number 2, 2 revoked"), "{said}");

    // Every node refuses alice's next command; nobody restarted anything.
    for node in &cluster.nodes {
        let out = wait_for("alice to be refused", Duration::from_secs(15), || {
            let out = etchctl_with(&node.endpoint(), &alice, &["endpoint", "status"]);
            (!out.status.success()).then_some(out)
        });
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("revoked"), "{}: {err}", node.name);
    }
    // Her open connections were closed, with the reason.
    for (conn, node) in open.iter().zip(&cluster.nodes) {
        let reason = wait_for(
            "the open connection to close",
            Duration::from_secs(15),
            || conn.close_reason(),
        );
        let text = reason.to_string();
        assert!(
            text.contains("revoked") && text.contains("refused since the connection was made"),
            "{}: {text}",
            node.name
        );
        assert!(
            node.log_text()
                .contains("closing a client connection: its certificate is refused now"),
            "{}",
            node.log_text()
        );
    }
    let err = sdk.status().await.expect_err("the SDK is refused");
    assert!(format!("{err:#}").contains("revoked"), "SDK error: {err:#}");
    // The gRPC connection was ended too, and a new one is refused in its handshake.
    wait_for(
        "the gRPC connection to close",
        Duration::from_secs(30),
        || {
            (cluster.nodes[0].log_text())
                .contains("closing a gRPC connection: its certificate is refused now")
                .then_some(())
        },
    );
    let refused = maintenance
        .status(etch_etcd_api::etcdserverpb::StatusRequest {})
        .await
        .expect_err("alice is refused over gRPC");
    assert!(
        !refused.message().is_empty(),
        "a refusal with a reason: {refused:?}"
    );
    // Others are served as before: root writes, bob's connections are served.
    let put = cluster.etchctl(&["put", "k", "v2"]);
    assert!(put.status.success(), "{put:?}");
    let bob = cluster.client_tls("bob");
    for node in &cluster.nodes {
        assert!(served(&node.endpoint(), &bob).await, "bob on {}", node.name);
    }
    let now: Vec<_> = cluster.nodes.iter().map(|n| n.pid()).collect();
    assert_eq!(pids, now, "no node restarted");
    for node in &cluster.nodes {
        assert_eq!(count(&node.log_text(), "etchd is serving"), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_node_is_cut_off_from_its_peers() {
    let cluster = cluster_with_crl(3);
    let dir = cluster.certs.dir.clone();
    revoke(&dir, "n3");
    // n1 and n2 close their connections with n3 (incoming, or dialled by them).
    for node in &cluster.nodes[..2] {
        wait_for(
            "peer connections with n3 to close",
            Duration::from_secs(15),
            || {
                node.log_text()
                    .contains("closing a peer connection: its certificate is refused now")
                    .then_some(())
            },
        );
    }
    // n3 cannot come back: a new handshake with its certificate is refused (with TLS 1.3
    // the refusal shows on the first stream). n1 and n2 are a quorum and serve writes.
    let tls = raw_tls(&cluster.certs.files("n3"), etch_proto::ALPN_PEER);
    let refused = match quic_dial(&cluster.nodes[0].peer_endpoint(), tls).await {
        Err(e) => e.to_string(),
        Ok(conn) => match conn.open_bi().await {
            Err(e) => e.to_string(),
            Ok((mut send, mut recv)) => {
                let _ = send.write_all(b"x").await;
                let _ = send.finish();
                let read = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(16));
                format!("{:?}", read.await)
            }
        },
    };
    assert!(refused.contains("Revoked"), "{refused}");
    let endpoints = format!(
        "{},{}",
        cluster.nodes[0].endpoint(),
        cluster.nodes[1].endpoint()
    );
    // If n3 led, n1 and n2 elect a leader once its lease runs out: writes resume then.
    let root = cluster.client_tls("root");
    wait_for("n1 and n2 to serve writes", Duration::from_secs(30), || {
        let put = etchctl_with(&endpoints, &root, &["put", "k", "v"]);
        put.status.success().then_some(())
    });
}

/// The certificate a fresh connection to `addr` is shown.
async fn served_cert(addr: &str, client: &TlsFiles) -> Vec<u8> {
    let conn = quic_dial(addr, raw_tls(client, ALPN_CLIENT))
        .await
        .expect("connect");
    let chain = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .expect("the node's chain");
    chain[0].to_vec()
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("pem")
        .to_vec()
}

/// Writes all of a node certificate's files at once; returns the new certificate's DER.
fn reissue_node(ca: &Authority, dir: &Path, name: &str) -> Vec<u8> {
    let hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
    let issued = ca.issue_node(name, &hosts).expect("issue");
    std::fs::write(dir.join(format!("{name}.crt")), &issued.cert_pem).expect("cert");
    std::fs::write(dir.join(format!("{name}.key")), &issued.key_pem).expect("key");
    pem_der(&issued.cert_pem)
}

/// Writes through the whole cluster and reads the value back from every node.
fn writes_replicate(cluster: &Cluster, value: &str) {
    let put = cluster.etchctl(&["put", "rot", value]);
    assert!(put.status.success(), "{put:?}");
    for node in &cluster.nodes {
        wait_for(
            "the write to reach every node",
            Duration::from_secs(15),
            || {
                let out = etchctl_with(
                    &node.endpoint(),
                    &cluster.client_tls("root"),
                    &["get", "rot", "--serializable", "--print-value-only"],
                );
                (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == value)
                    .then_some(())
            },
        );
    }
}

/// SIGHUP to node `i`, and waits until it logged one more reload than before.
fn reload(cluster: &Cluster, i: usize) {
    let before = count(&cluster.nodes[i].log_text(), "reloaded TLS material");
    cluster.signal(i, "HUP");
    wait_for("the reload", Duration::from_secs(10), || {
        (count(&cluster.nodes[i].log_text(), "reloaded TLS material") > before).then_some(())
    });
}

/// The certificate the HTTPS metrics listener at `addr` shows a client trusting `ca`.
fn metrics_cert(addr: &str, ca: &Path) -> Vec<u8> {
    let config = etch_tests::raw_tls_anonymous(ca, b"http/1.1");
    let server = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).expect("tls");
    let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("handshake");
    }
    conn.peer_certificates().expect("the node's chain")[0].to_vec()
}

/// The HTTPS metrics listener serves the certificate a reload put in force, as the client
/// and peer ports do, without a restart.
#[test]
fn the_metrics_listener_serves_a_reloaded_certificate() {
    let addr = format!("127.0.0.1:{}", etch_tests::free_port());
    let cluster = Cluster::single_with(&["--listen-metrics", &format!("https://{addr}")]);
    let dir = cluster.certs.dir.clone();
    let name = cluster.nodes[0].name.clone();
    let old = metrics_cert(&addr, &dir.join("ca.crt"));
    let ca = Authority::load(&dir.join("ca.crt"), &dir.join("ca.key")).expect("ca");
    let new = reissue_node(&ca, &dir, &name);
    assert_ne!(old, new);
    reload(&cluster, 0);
    assert_eq!(metrics_cert(&addr, &dir.join("ca.crt")), new);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_certificates_and_the_ca_rotate_with_the_cluster_serving() {
    let cluster = Cluster::new(3, &[]);
    let dir = cluster.certs.dir.clone();
    let root = cluster.client_tls("root");
    let pids: Vec<_> = cluster.nodes.iter().map(|n| n.pid()).collect();
    writes_replicate(&cluster, "start");

    // New keys and certificates from the same CA, one node at a time.
    let ca = Authority::load(&dir.join("ca.crt"), &dir.join("ca.key")).expect("ca");
    for i in 0..cluster.nodes.len() {
        let name = cluster.nodes[i].name.clone();
        let old = served_cert(&cluster.nodes[i].endpoint(), &root).await;
        let new = reissue_node(&ca, &dir, &name);
        assert_ne!(old, new);
        reload(&cluster, i);
        assert_eq!(served_cert(&cluster.nodes[i].endpoint(), &root).await, new);
        writes_replicate(&cluster, &format!("after {name}"));
    }

    // A new CA: first trusted beside the old one, then the nodes' certificates reissued
    // by it, then the old CA dropped. Every node reads the shared bundle.
    let old_ca_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca");
    let new_ca = Authority::generate("etch CA rotated").expect("new ca");
    std::fs::write(
        dir.join("ca.crt"),
        format!("{old_ca_pem}{}", new_ca.cert_pem()),
    )
    .expect("bundle");
    for i in 0..cluster.nodes.len() {
        reload(&cluster, i);
    }
    for i in 0..cluster.nodes.len() {
        let name = cluster.nodes[i].name.clone();
        let new = reissue_node(&new_ca, &dir, &name);
        reload(&cluster, i);
        assert_eq!(served_cert(&cluster.nodes[i].endpoint(), &root).await, new);
        writes_replicate(&cluster, &format!("new CA on {name}"));
    }
    // `root` of the new CA, written as `carol`.
    let carol = new_ca.issue_client("root").expect("carol");
    std::fs::write(dir.join("carol.crt"), &carol.cert_pem).expect("cert");
    std::fs::write(dir.join("carol.key"), &carol.key_pem).expect("key");
    let carol = TlsFiles::in_dir(&dir, "carol");
    let mut old_root_conns = Vec::new();
    for node in &cluster.nodes {
        assert!(
            served(&node.endpoint(), &carol).await,
            "carol on {}",
            node.name
        );
        let conn = quic_dial(&node.endpoint(), raw_tls(&root, ALPN_CLIENT))
            .await
            .expect("root");
        assert!(status(&conn).await);
        old_root_conns.push(conn);
    }
    // The old CA goes: its clients are refused and their connections closed.
    std::fs::write(dir.join("ca.crt"), new_ca.cert_pem()).expect("new CA only");
    for i in 0..cluster.nodes.len() {
        reload(&cluster, i);
    }
    for (conn, node) in old_root_conns.iter().zip(&cluster.nodes) {
        wait_for(
            "old-CA connections to close",
            Duration::from_secs(15),
            || conn.close_reason(),
        );
        assert!(
            !served(&node.endpoint(), &root).await,
            "old root on {}",
            node.name
        );
    }
    let put = etchctl_with(&cluster.endpoints(), &carol, &["put", "rot", "new CA only"]);
    assert!(put.status.success(), "{put:?}");
    for node in &cluster.nodes {
        wait_for("the write on every node", Duration::from_secs(15), || {
            let out = etchctl_with(
                &node.endpoint(),
                &carol,
                &["get", "rot", "--serializable", "--print-value-only"],
            );
            (String::from_utf8_lossy(&out.stdout).trim() == "new CA only").then_some(())
        });
    }
    let now: Vec<_> = cluster.nodes.iter().map(|n| n.pid()).collect();
    assert_eq!(pids, now, "no node restarted");
}
