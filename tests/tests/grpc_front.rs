//! The gRPC front as an attacker sees it, with a gRPC client of our own (etcd's API from
//! `etch-etcd-api`, over the cluster's mutual TLS): a flood of watches on one stream, bytes
//! that are not HTTP/2, a connection that never starts TLS. Each is bounded or refused, and
//! the node serves the next client.

use std::sync::Arc;
use std::time::Duration;

use etch_etcd_api::etcdserverpb as pb;
use etch_proto::pki::{Identity, TlsFiles};
use etch_tests::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The TLS connection a gRPC client of `addr` holds as the owner of `tls`.
async fn dial_tls(
    addr: &str,
    tls: &TlsFiles,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let identity = Identity::load(tls).map_err(std::io::Error::other)?;
    let config = identity
        .client_config(b"h2")
        .map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
        .map_err(std::io::Error::other)?
        .to_owned();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A gRPC channel to `addr` as the owner of `tls`.
async fn channel(addr: &str, tls: &TlsFiles) -> Channel {
    let (addr, tls) = (addr.to_owned(), tls.clone());
    Endpoint::from_static("http://etch.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let (addr, tls) = (addr.clone(), tls.clone());
            async move {
                let io = dial_tls(&addr, &tls).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(io))
            }
        }))
        .await
        .expect("a gRPC channel")
}

/// Whether the other side closes `io` within 20 s (whatever it says before: an alert, a
/// GOAWAY).
async fn hangs_up(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut buf = [0u8; 1024];
    let drained = async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), drained)
        .await
        .is_ok()
}

async fn put(channel: &Channel, key: &str, value: &str) -> pb::PutResponse {
    let mut kv = pb::kv_client::KvClient::new(channel.clone());
    kv.put(pb::PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_holds_a_bounded_number_of_watches_and_serves_on() {
    let cluster = Cluster::new(1, &[]);
    let root = cluster.client_tls("root");
    let channel = channel(&cluster.nodes[0].endpoint(), &root).await;
    let mut watch = pb::watch_client::WatchClient::new(channel.clone());
    let (requests, inbound) = tokio::sync::mpsc::channel(64);
    let mut responses = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(inbound))
        .await
        .expect("a watch stream")
        .into_inner();
    let create = |key: String| pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: key.into_bytes(),
                ..Default::default()
            },
        )),
    };
    let limit = 1024;
    let sender = tokio::spawn(async move {
        for i in 0..=limit {
            if requests.send(create(format!("w/{i}"))).await.is_err() {
                return None;
            }
        }
        Some(requests)
    });
    let mut created = 0;
    let mut refused = Vec::new();
    while created + refused.len() <= limit {
        let resp = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .expect("an answer to every create within 30 s")
            .expect("the stream is open")
            .expect("a response");
        if resp.canceled {
            refused.push(resp.cancel_reason);
        } else {
            assert!(resp.created, "{resp:?}");
            created += 1;
        }
    }
    assert_eq!(created, limit);
    assert_eq!(
        refused,
        [format!(
            "etcdserver: a watch stream holds at most {limit} watches"
        )]
    );
    let requests = sender
        .await
        .expect("sender")
        .expect("the stream took every create");

    // The watches live: a put under one of them is delivered, with the watch's own id.
    let rev = put(&channel, "w/7", "v")
        .await
        .header
        .expect("header")
        .revision;
    let event = loop {
        let resp = tokio::time::timeout(Duration::from_secs(30), responses.message())
            .await
            .expect("the event within 30 s")
            .expect("the stream is open")
            .expect("a response");
        if !resp.events.is_empty() {
            break resp;
        }
    };
    assert_eq!(event.watch_id, 7, "ids count from 0 in creation order");
    let kv = event.events[0].kv.as_ref().expect("kv");
    assert_eq!((kv.key.as_slice(), kv.mod_revision), (&b"w/7"[..], rev));
    drop(requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_grpc_end_that_connection_only() {
    let cluster = Cluster::new(1, &[]);
    let root = cluster.client_tls("root");
    let addr = cluster.nodes[0].endpoint();

    // TLS with a good certificate, then garbage instead of HTTP/2: the node hangs up.
    let mut tls = dial_tls(&addr, &root).await.expect("a TLS connection");
    tls.write_all(&[0x5a; 4096]).await.expect("write garbage");
    assert!(
        hangs_up(&mut tls).await,
        "the node closes a connection that speaks no HTTP/2 within 20 s"
    );

    // Plain text where TLS is expected: refused in the handshake.
    let mut plain = TcpStream::connect(&addr).await.expect("tcp");
    plain
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("write");
    assert!(
        hangs_up(&mut plain).await,
        "the node hangs up on plain text within 20 s"
    );

    // And serves the next client.
    let channel = channel(&addr, &root).await;
    let resp = put(&channel, "after", "ok").await;
    assert!(resp.header.expect("header").revision > 1);
}
