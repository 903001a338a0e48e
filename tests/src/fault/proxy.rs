//! [`Net`]: a UDP relay in front of every node's peer port, which can cut links and add
//! delay.
//!
//! Node X listens on its real peer port `P_x`; the cluster knows it by its proxy's port
//! `Q_x` (`--initial-cluster` names the proxies, and a node advertises its own entry). So
//! every datagram a peer sends to X reaches X's proxy first. The proxy keeps one upstream
//! socket per source address, connected to `P_x`, so X's replies come back on that socket
//! and are relayed to the right source.
//!
//! The sender is known by its source port: quinn sends everything of an endpoint from its
//! one socket, and a node dials peers from its peer endpoint, so datagrams from Y come from
//! `P_y`. Cutting the link X–Y makes X's proxy drop everything from and to `P_y`, and Y's
//! proxy everything from and to `P_x`: both connections between them (X dials Y, Y dials
//! X) go silent in both directions. Client traffic does not pass through the proxies.
//!
//! The relays run on a runtime of their own, so a test thread that blocks (or a busy
//! workload) never holds up the cluster's heartbeats.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::runtime::Runtime;

/// The largest datagram relayed; QUIC stays far below it.
const MAX_DATAGRAM: usize = 65_535;

/// What one proxy does to the datagrams it relays.
#[derive(Debug, Default)]
struct Rules {
    /// Source ports (peer ports of other nodes) whose datagrams are dropped both ways.
    blocked: HashSet<u16>,
    /// Added to every datagram, both ways.
    delay: Duration,
}

#[derive(Debug, Default)]
struct Shared {
    rules: Mutex<Rules>,
    dropped: AtomicU64,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        // The rules are replaced field by field; a panic elsewhere leaves them whole.
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The delay to apply to a datagram from or to `peer`, or `None` to drop it.
    fn verdict(&self, peer: SocketAddr) -> Option<Duration> {
        let rules = self.rules();
        if rules.blocked.contains(&peer.port()) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(rules.delay)
    }
}

/// One node's proxy.
#[derive(Debug)]
struct Proxy {
    /// Where peers reach the node: the address in `--initial-cluster`.
    port: u16,
    /// The node's real peer port, also the source port of everything it sends.
    target: u16,
    shared: Arc<Shared>,
}

/// The proxies of a cluster, indexed like its nodes.
pub struct Net {
    runtime: Option<Runtime>,
    proxies: Vec<Proxy>,
}

impl Default for Net {
    fn default() -> Self {
        Self::new()
    }
}

impl Net {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fault-proxy")
            .enable_all()
            .build()
            .expect("the proxies' runtime");
        Net {
            runtime: Some(runtime),
            proxies: Vec::new(),
        }
    }

    /// Starts a proxy for a node whose real peer port is `target`; returns the port peers
    /// must use. Proxies are numbered in the order they were added.
    pub fn add(&mut self, target: u16) -> u16 {
        let runtime = self.runtime.as_ref().expect("running");
        let listen =
            std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a proxy port");
        listen.set_nonblocking(true).expect("non-blocking proxy");
        let port = listen.local_addr().expect("proxy address").port();
        let listen = {
            let _entered = runtime.enter();
            Arc::new(UdpSocket::from_std(listen).expect("register the proxy socket"))
        };
        let shared = Arc::new(Shared::default());
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, target));
        runtime.spawn(relay(listen, to, shared.clone()));
        self.proxies.push(Proxy {
            port,
            target,
            shared,
        });
        port
    }

    /// The port peers use to reach node `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.proxies[i].port
    }

    /// Cuts the link between nodes `a` and `b`, both ways.
    pub fn cut(&self, a: usize, b: usize) {
        let (pa, pb) = (&self.proxies[a], &self.proxies[b]);
        pa.shared.rules().blocked.insert(pb.target);
        pb.shared.rules().blocked.insert(pa.target);
    }

    /// Cuts node `i` off from every other node.
    pub fn isolate(&self, i: usize) {
        for j in (0..self.proxies.len()).filter(|&j| j != i) {
            self.cut(i, j);
        }
    }

    /// Delays every datagram to and from node `i` by `delay` (each way).
    pub fn delay(&self, i: usize, delay: Duration) {
        self.proxies[i].shared.rules().delay = delay;
    }

    /// Restores every link and removes every delay.
    pub fn heal(&self) {
        for proxy in &self.proxies {
            *proxy.shared.rules() = Rules::default();
        }
    }

    /// Datagrams dropped so far by all proxies.
    pub fn dropped(&self) -> u64 {
        let count = |p: &Proxy| p.shared.dropped.load(Ordering::Relaxed);
        self.proxies.iter().map(count).sum()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Dropped from a test that may itself run inside a runtime: never block here.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Relays datagrams arriving at `listen` to `to`, one upstream socket per source.
async fn relay(listen: Arc<UdpSocket>, to: SocketAddr, shared: Arc<Shared>) {
    let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // An error here is an ICMP report about an earlier send; the socket still works.
        let Ok((n, from)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let Some(delay) = shared.verdict(from) else {
            continue;
        };
        let upstream = match upstreams.get(&from) {
            Some(upstream) => upstream.clone(),
            None => {
                let Ok(upstream) = open_upstream(to).await else {
                    continue;
                };
                let back = relay_back(upstream.clone(), listen.clone(), from, shared.clone());
                tokio::spawn(back);
                upstreams.insert(from, upstream.clone());
                upstream
            }
        };
        let datagram = buf[..n].to_vec();
        send_after(delay, async move {
            // A refused send (the node is down) is a lost datagram, as on a real network.
            let _ = upstream.send(&datagram).await;
        });
    }
}

async fn open_upstream(to: SocketAddr) -> std::io::Result<Arc<UdpSocket>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    socket.connect(to).await?;
    Ok(Arc::new(socket))
}

/// Relays the node's answers on `upstream` back to `peer` through `listen`.
async fn relay_back(
    upstream: Arc<UdpSocket>,
    listen: Arc<UdpSocket>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // `ECONNREFUSED` while the node is down: keep the socket for when it is back.
        let Ok(n) = upstream.recv(&mut buf).await else {
            continue;
        };
        let Some(delay) = shared.verdict(peer) else {
            continue;
        };
        let datagram = buf[..n].to_vec();
        let listen = listen.clone();
        send_after(delay, async move {
            let _ = listen.send_to(&datagram, peer).await;
        });
    }
}

/// Runs `send` now, or after `delay` on a task of its own (the relay keeps reading
/// meanwhile; delayed datagrams may overtake each other, as on a real network).
fn send_after(delay: Duration, send: impl Future<Output = ()> + Send + 'static) {
    if delay.is_zero() {
        tokio::spawn(send);
    } else {
        tokio::spawn(async move {
            // The delay is the fault being injected, not a wait for a condition.
            tokio::time::sleep(delay).await;
            send.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node stand-in that echoes datagrams, and a peer that sends through the proxy.
    #[test]
    fn relays_both_ways_and_drops_a_cut_link() {
        let echo = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let echo_port = echo.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        });
        let peer = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        peer.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let peer_port = peer.local_addr().expect("addr").port();
        let mut net = Net::new();
        net.add(echo_port);
        net.add(peer_port);
        let (node, other) = (0, 1);
        let mut buf = [0u8; 64];
        peer.send_to(b"ping", (Ipv4Addr::LOCALHOST, net.port(node)))
            .expect("send");
        let (n, from) = peer.recv_from(&mut buf).expect("an echo through the proxy");
        assert_eq!((&buf[..n], from.port()), (&b"ping"[..], net.port(node)));
        net.cut(node, other);
        peer.send_to(b"lost", (Ipv4Addr::LOCALHOST, net.port(node)))
            .expect("send");
        assert!(peer.recv_from(&mut buf).is_err(), "the cut link is silent");
        assert!(net.dropped() >= 1);
        net.heal();
        peer.send_to(b"back", (Ipv4Addr::LOCALHOST, net.port(node)))
            .expect("send");
        let (n, _) = peer.recv_from(&mut buf).expect("an echo after healing");
        assert_eq!(&buf[..n], b"back");
    }
}
