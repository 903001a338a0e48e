//! Who may speak on the client port (issue 13, part 2), against a real etchd: certificates
//! the CA signed but that are not fit to be a client are refused at the handshake, and the
//! node logs each refusal at INFO with its reason, the name escaped.
//!
//! - a node certificate (clients use client certificates);
//! - a certificate with no extended key usage, or without clientAuth;
//! - an empty common name (no user to speak for);
//! - a common name reserved for etch's own principals (`reactor:...`);
//! - a name with a newline, which must not forge a log line.

use std::path::Path;
use std::time::Duration;

use etch_proto::pki::{Authority, NODE_URI_PREFIX, TlsFiles};
use etch_proto::{ALPN_CLIENT, Request, Response, StatusRequest, frame};
use etch_tests::{Cluster, etchctl_with, quic_dial, raw_exchange, raw_tls};
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, SanType};

/// Writes a certificate from the cluster's CA with `params` as `DIR/NAME.{crt,key}`.
fn issue(certs: &Path, file: &str, cn: &str, params: CertificateParams) -> TlsFiles {
    let ca = Authority::load(&certs.join("ca.crt"), &certs.join("ca.key")).expect("the CA");
    let issued = ca.issue(cn, params).expect("issue");
    let files = TlsFiles {
        ca: certs.join("ca.crt"),
        cert: certs.join(format!("{file}.crt")),
        key: certs.join(format!("{file}.key")),
    };
    std::fs::write(&files.cert, issued.cert_pem).expect("write cert");
    std::fs::write(&files.key, issued.key_pem).expect("write key");
    files
}

fn params(eku: Vec<ExtendedKeyUsagePurpose>, node: Option<&str>) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.extended_key_usages = eku;
    if let Some(node) = node {
        params.subject_alt_names.push(SanType::URI(
            format!("{NODE_URI_PREFIX}{node}").try_into().expect("uri"),
        ));
    }
    params
}

/// Whether a Status exchange over a fresh connection with `files` is answered.
async fn served(addr: &str, files: &TlsFiles) -> bool {
    let Ok(conn) = quic_dial(addr, raw_tls(files, ALPN_CLIENT)).await else {
        return false;
    };
    let status = frame::encode(&Request::Status(StatusRequest {}), usize::MAX).expect("encode");
    let exchange = tokio::time::timeout(Duration::from_secs(10), raw_exchange(&conn, &status));
    matches!(exchange.await, Ok(Ok(Some(Ok(Response::Status(_))))))
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_unfit_for_a_client_are_refused_and_logged() {
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let cluster = Cluster::single();
    let certs = cluster.certs.dir.clone();
    let addr = cluster.nodes[0].endpoint();
    // A client certificate of the same CA is served: the refusals below are about fitness.
    let fit = issue(&certs, "fit", "fit", params(vec![ClientAuth], None));
    assert!(served(&addr, &fit).await, "a client certificate is served");

    let node_cert = TlsFiles::in_dir(&certs, "n1");
    let cases = [
        (
            node_cert,
            "node certificate \"n1\" refused on the client port",
        ),
        (
            issue(&certs, "bare", "bare", params(vec![], None)),
            "no extended key usage",
        ),
        (
            issue(&certs, "server", "server", params(vec![ServerAuth], None)),
            // webpki's own check, before etch's
            "does not allow extended key usage for client authentication",
        ),
        (
            issue(&certs, "nameless", "", params(vec![ClientAuth], None)),
            "no common name",
        ),
        (
            issue(
                &certs,
                "reactor",
                "reactor:audit",
                params(vec![ClientAuth], None),
            ),
            "common name \"reactor:audit\" is reserved",
        ),
        (
            issue(
                &certs,
                "forger",
                "eve\nINFO forged",
                params(vec![ClientAuth], Some("x")),
            ),
            "node certificate \"eve\\nINFO forged\" refused",
        ),
    ];
    for (files, reason) in &cases {
        assert!(!served(&addr, files).await, "{reason}: served");
        let log = etch_tests::wait_for_async(
            &format!("the refusal logged: {reason}"),
            Duration::from_secs(10),
            || async {
                let log = cluster.nodes[0].log_text();
                log.contains(reason).then_some(log)
            },
        )
        .await;
        let line = (log.lines())
            .find(|l| l.contains(reason))
            .expect("the line");
        assert!(
            line.contains("INFO") && line.contains("client handshake refused"),
            "{line}"
        );
    }
    assert!(
        !cluster.nodes[0]
            .log_text()
            .lines()
            .any(|l| l.starts_with("INFO forged")),
        "a name cannot start a log line"
    );
    // etchctl with a node certificate gets an error, not an answer.
    let out = etchctl_with(
        &cluster.endpoints(),
        &TlsFiles::in_dir(&certs, "n1"),
        &["get", "k"],
    );
    assert!(!out.status.success(), "{out:?}");
    // The node serves on.
    assert!(served(&addr, &fit).await, "still serving");
}
