//! Dialling several endpoints at once: the first to complete a handshake wins.
//!
//! A dead node does not refuse a QUIC connection, it stays silent, so dialling it costs the
//! whole connect timeout. Trying the endpoints one after another therefore made a cluster
//! with two of three nodes down take two connect timeouts to reach the live one, and push a
//! request past its deadline before it was even sent. Instead the dials overlap, happy
//! eyeballs style (RFC 8305): the preferred endpoint starts first, each next one
//! [`STAGGER`] later or as soon as the previous one failed, and the first handshake to
//! complete is taken. The other dials are then cancelled, which closes their connections.
//!
//! When every dial fails, a certificate refusal is reported before any other failure: it is
//! the one a user can act on, and a silent node says nothing about the certificate.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::Transport;

/// Head start of each endpoint over the next. Short enough that a silent endpoint costs
/// little, long enough that a live preferred endpoint (a loopback or LAN handshake takes a
/// few milliseconds) usually wins alone, without a connection to every node.
pub(crate) const STAGGER: Duration = Duration::from_millis(100);

/// Dials `order` (most preferred first) with overlapping attempts and returns the first
/// endpoint that completes a handshake, with its connection. Each dial has `timeout`.
///
/// # Errors
///
/// When every dial fails: the first [`Error::CertificateRefused`] if any, else the failure
/// of the most preferred endpoint; [`Error::NoEndpoints`] when `order` is empty.
pub(crate) async fn first_to_answer(
    transport: &Arc<Transport>,
    order: Vec<Endpoint>,
    timeout: Duration,
) -> Result<(Endpoint, quinn::Connection)> {
    // Dropping the set (on return, or when the caller's deadline cancels us) aborts the
    // dials still running; a connection that completed but lost the race is dropped with
    // its task's output, and quinn closes a connection when its last handle goes.
    let mut dials = JoinSet::new();
    let mut queue = order.into_iter().enumerate();
    let mut failures: Vec<(usize, Error)> = Vec::new();
    let mut start_next = |dials: &mut JoinSet<_>| match queue.next() {
        Some((rank, endpoint)) => {
            let transport = transport.clone();
            dials.spawn(async move {
                let dialled = transport.dial(&endpoint, timeout).await;
                (rank, endpoint, dialled)
            });
            true
        }
        None => false,
    };
    let mut more = start_next(&mut dials);
    while !dials.is_empty() {
        tokio::select! {
            joined = dials.join_next() => {
                let Some(joined) = joined else { continue };
                let (rank, endpoint, dialled) = match joined {
                    Ok(done) => done,
                    // A dial task only ends early by panicking (we never abort while racing).
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                };
                match dialled {
                    Ok(conn) => {
                        tracing::debug!(%endpoint, "connected");
                        return Ok((endpoint, conn));
                    }
                    Err(e) => {
                        tracing::debug!(%endpoint, error = %e, "cannot connect");
                        failures.push((rank, e));
                        // Nothing to wait for on this one: give the next its turn now.
                        if more {
                            more = start_next(&mut dials);
                        }
                    }
                }
            }
            () = tokio::time::sleep(STAGGER), if more => {
                more = start_next(&mut dials);
            }
        }
    }
    Err(worst_first(failures))
}

/// The failure to report when every dial failed (see [`first_to_answer`]).
fn worst_first(mut failures: Vec<(usize, Error)>) -> Error {
    failures.sort_by_key(|(rank, _)| *rank);
    let refused = failures
        .iter()
        .position(|(_, e)| matches!(e, Error::CertificateRefused { .. }));
    match refused {
        Some(i) => failures.swap_remove(i).1,
        None => failures
            .into_iter()
            .next()
            .map_or(Error::NoEndpoints, |(_, e)| e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::DialError;

    fn timed_out(endpoint: &str) -> Error {
        Error::Connect {
            endpoint: endpoint.into(),
            source: DialError::TimedOut(Duration::from_secs(2)),
        }
    }

    #[test]
    fn a_refusal_is_reported_before_silence() {
        let refused = Error::CertificateRefused {
            endpoint: "c:3".into(),
            reason: "TLS alert UnknownCA".into(),
        };
        let err = worst_first(vec![
            (2, refused),
            (0, timed_out("a:1")),
            (1, timed_out("b:2")),
        ]);
        assert!(
            matches!(&err, Error::CertificateRefused { endpoint, .. } if endpoint == "c:3"),
            "{err}"
        );
    }

    #[test]
    fn otherwise_the_preferred_endpoint_is_reported() {
        let err = worst_first(vec![(1, timed_out("b:2")), (0, timed_out("a:1"))]);
        assert!(
            matches!(&err, Error::Connect { endpoint, .. } if endpoint == "a:1"),
            "{err}"
        );
        assert!(matches!(worst_first(Vec::new()), Error::NoEndpoints));
    }
}
