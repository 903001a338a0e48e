//! A gRPC client of etch's etcd front (etcd's API from `etch-etcd-api`) over the cluster's
//! mutual TLS, dialled through its own connector (tonic's TLS features are not used).

use std::sync::Arc;

use etch_proto::pki::{Identity, TlsFiles};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The TLS connection a gRPC client of `addr` holds as the owner of `tls`.
pub async fn dial_tls(
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
pub async fn channel(addr: &str, tls: &TlsFiles) -> Channel {
    channel_on(Endpoint::from_static("http://etch.invalid"), addr, tls).await
}

/// A gRPC channel with `endpoint`'s settings to `addr` as the owner of `tls`.
pub async fn channel_on(endpoint: Endpoint, addr: &str, tls: &TlsFiles) -> Channel {
    let (addr, tls) = (addr.to_owned(), tls.clone());
    endpoint
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
