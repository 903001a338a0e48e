//! QUIC plumbing: dialling one endpoint, and one request/response exchange on a fresh
//! bidirectional stream.
//!
//! The exchange marks the point past which a write's outcome is unknown: once the whole
//! request frame has been handed to QUIC, the node may apply it even if the answer is lost.
//! Before that point (stream refused, write failed) the node cannot hold a complete frame.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use etch_proto::frame::{self, FrameError};
use etch_proto::{Response, pki::Identity};

use crate::endpoint::Endpoint;
use crate::error::{DialError, Error, Result, limit_refusal, tls_refusal};

/// What a node answers: its response, or the error it reports.
pub(crate) type Answer = std::result::Result<Response, etch_proto::Error>;

/// Local QUIC endpoints (one per address family, opened on first use) and the TLS config.
pub(crate) struct Transport {
    config: quinn::ClientConfig,
    /// `[IPv4, IPv6]`; each created inside the runtime on first dial.
    sockets: Mutex<[Option<quinn::Endpoint>; 2]>,
}

impl Transport {
    pub(crate) fn new(identity: &Identity, keep_alive: Option<Duration>) -> Result<Self> {
        let tls = identity.client_config(etch_proto::ALPN_CLIENT)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| {
            Error::Tls(etch_proto::pki::PkiError::Parse(format!(
                "TLS config unusable for QUIC: {e}"
            )))
        })?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(keep_alive);
        // With keep-alives flowing, a connection silent for this long has a dead node at the
        // other end: fail its requests (and re-dial) instead of waiting out the deadline.
        if let Some(interval) = keep_alive {
            let idle = (interval * 3).max(Duration::from_secs(2));
            if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
                transport.max_idle_timeout(Some(idle));
            }
        }
        config.transport_config(Arc::new(transport));
        Ok(Transport {
            config,
            sockets: Mutex::new([None, None]),
        })
    }

    fn socket(&self, ipv6: bool) -> Result<quinn::Endpoint> {
        // A poisoned lock only means another thread panicked between two plain assignments.
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut sockets[usize::from(ipv6)];
        if let Some(socket) = slot {
            return Ok(socket.clone());
        }
        let bind: SocketAddr = if ipv6 {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut socket = quinn::Endpoint::client(bind).map_err(Error::Bind)?;
        socket.set_default_client_config(self.config.clone());
        *slot = Some(socket.clone());
        Ok(socket)
    }

    /// Resolves `endpoint` and completes a handshake with the first address that answers,
    /// all within `timeout`.
    pub(crate) async fn dial(
        &self,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<quinn::Connection> {
        let failed = |source| Error::Connect {
            endpoint: endpoint.to_string(),
            source,
        };
        let attempt = async {
            let mut addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((endpoint.host(), endpoint.port()))
                    .await
                    .map_err(|e| failed(DialError::Resolve(e)))?
                    .collect();
            // Nodes usually listen on IPv4; try those addresses first.
            addrs.sort_by_key(SocketAddr::is_ipv6);
            let mut last = failed(DialError::NoAddress);
            for addr in addrs {
                let connecting = self
                    .socket(addr.is_ipv6())?
                    .connect(addr, endpoint.host())
                    .map_err(|e| failed(DialError::Start(e)))?;
                match connecting.await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => {
                        tracing::debug!(%endpoint, %addr, error = %e, "handshake failed");
                        last = if let Some(reason) = tls_refusal(&e) {
                            Error::CertificateRefused {
                                endpoint: endpoint.to_string(),
                                reason,
                            }
                        } else if let Some(reason) = limit_refusal(&e) {
                            Error::Refused {
                                endpoint: endpoint.to_string(),
                                reason,
                            }
                        } else {
                            failed(handshake_failure(e))
                        };
                    }
                }
            }
            Err(last)
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .map_err(|_| failed(DialError::TimedOut(timeout)))?
    }
}

/// A local TLS failure (QUIC carries those as codes 0x100..=0x1ff) means we refused the
/// node's certificate; anything else is a plain handshake failure.
fn handshake_failure(e: quinn::ConnectionError) -> DialError {
    match &e {
        quinn::ConnectionError::TransportError(t)
            if (0x100..0x200).contains(&u64::from(t.code)) =>
        {
            DialError::UntrustedNode(t.reason.clone())
        }
        _ => DialError::Handshake(e),
    }
}

/// Sends one request frame on a new stream of `conn` and reads the answer.
pub(crate) async fn exchange(
    conn: &quinn::Connection,
    endpoint: &Endpoint,
    request: &[u8],
    max_response: usize,
) -> Result<Answer> {
    let (mut send, mut recv) = open(conn, endpoint, request).await?;
    // The node may now hold the whole request, and act on it even if it dies before
    // acknowledging it: from here on a lost connection means "outcome unknown". `finish`
    // fails only on a stream already reset or stopped, which the read below reports.
    let _ = send.finish();
    match read_answer(conn, endpoint, &mut recv, max_response).await? {
        Some(answer) => Ok(answer),
        None => Err(read_failure(conn, endpoint, FrameError::Closed)),
    }
}

/// Opens a bidirectional stream on `conn` and writes `first` (a whole frame) on it, leaving
/// the send side open for more frames: how watches and keep-alives start.
pub(crate) async fn open(
    conn: &quinn::Connection,
    endpoint: &Endpoint,
    first: &[u8],
) -> Result<(quinn::SendStream, quinn::RecvStream)> {
    let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(endpoint, e, false))?;
    write_frame(&mut send, endpoint, first).await?;
    Ok((send, recv))
}

/// Writes one more frame on an open stream.
pub(crate) async fn write_frame(
    send: &mut quinn::SendStream,
    endpoint: &Endpoint,
    frame: &[u8],
) -> Result<()> {
    send.write_all(frame)
        .await
        .map_err(|e| write_failure(endpoint, e))
}

/// Reads the next answer on an open stream; `None` when the node finished the stream.
pub(crate) async fn read_answer(
    conn: &quinn::Connection,
    endpoint: &Endpoint,
    recv: &mut quinn::RecvStream,
    max_response: usize,
) -> Result<Option<Answer>> {
    frame::read::<_, Answer>(recv, max_response)
        .await
        .map_err(|e| read_failure(conn, endpoint, e))
}

/// A lost connection, unless the node's close carries a TLS alert or a limit's code: then
/// it refused us (a connection turned away for a limit never served a stream, so `sent`
/// does not matter).
fn lost(endpoint: &Endpoint, source: quinn::ConnectionError, sent: bool) -> Error {
    if let Some(reason) = limit_refusal(&source) {
        return Error::Refused {
            endpoint: endpoint.to_string(),
            reason,
        };
    }
    match tls_refusal(&source) {
        Some(reason) => Error::CertificateRefused {
            endpoint: endpoint.to_string(),
            reason,
        },
        None => Error::ConnectionLost {
            endpoint: endpoint.to_string(),
            sent,
            source,
        },
    }
}

fn write_failure(endpoint: &Endpoint, e: quinn::WriteError) -> Error {
    match e {
        quinn::WriteError::ConnectionLost(source) => lost(endpoint, source, false),
        quinn::WriteError::Stopped(code) => Error::StreamReset {
            endpoint: endpoint.to_string(),
            what: "stopped",
            code: code.into_inner(),
            sent: false,
        },
        quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => {
            Error::StreamReset {
                endpoint: endpoint.to_string(),
                what: "closed",
                code: 0,
                sent: false,
            }
        }
    }
}

pub(crate) fn read_failure(conn: &quinn::Connection, endpoint: &Endpoint, e: FrameError) -> Error {
    let quic = match &e {
        FrameError::Io(io) => io
            .get_ref()
            .and_then(|i| i.downcast_ref::<quinn::ReadError>()),
        _ => None,
    };
    match quic {
        Some(quinn::ReadError::ConnectionLost(source)) => lost(endpoint, source.clone(), true),
        Some(quinn::ReadError::Reset(code)) => Error::StreamReset {
            endpoint: endpoint.to_string(),
            what: "reset",
            code: code.into_inner(),
            sent: true,
        },
        _ => match conn.close_reason() {
            Some(source) => lost(endpoint, source, true),
            None => Error::Protocol {
                endpoint: endpoint.to_string(),
                source: e,
            },
        },
    }
}
