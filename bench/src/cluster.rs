//! A throwaway local cluster for `etch-bench suite`: `n` etchd processes on loopback in a
//! temporary directory, with certificates made by `etch_proto::pki::init_dir`. Dropping it
//! kills the processes; [`LocalCluster::stop`] asks them to stop first.

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use etch_client::{Client, ClientOptions, TlsFiles};
use etch_proto::pki::{InitOptions, init_dir};

/// One etchd process.
pub struct Node {
    pub name: String,
    pub client_addr: String,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Child,
}

impl Node {
    /// Resident set size from /proc, in KiB (`None` once the process is gone).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Bytes under the node's data directory (files only; what `du --apparent-size` says).
    pub fn disk_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.data_dir)
    }

    /// Fails, with the tail of its log, if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!(
                "{} exited with {status}; log tail:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The running cluster; its directory goes away with it unless kept.
pub struct LocalCluster {
    pub nodes: Vec<Node>,
    pub certs: PathBuf,
    etchd: PathBuf,
    dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl LocalCluster {
    /// Starts `n` nodes of `etchd` in `dir` (a fresh temporary directory when `None`) and
    /// waits, up to 60 s, until the cluster answers a linearizable read.
    pub async fn start(etchd: &Path, n: usize, dir: Option<PathBuf>) -> Result<LocalCluster> {
        let (temp, dir) = match dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("etch-bench.")
                    .tempdir()
                    .context("creating a temporary directory")?;
                let path = temp.path().to_owned();
                (Some(temp), path)
            }
        };
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let certs = dir.join("certs");
        // One certificate more, for the node the catch-up workload adds.
        let mut certified = names.clone();
        certified.push(spare_name(n));
        let opts = InitOptions {
            nodes: certified,
            clients: vec!["root".into()],
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        init_dir(&certs, &opts).context("generating certificates")?;
        let ports = free_ports(2 * n)?;
        let peers: Vec<(String, u16, u16)> = (names.iter().enumerate())
            .map(|(i, name)| (name.clone(), ports[2 * i], ports[2 * i + 1]))
            .collect();
        let initial = (peers.iter())
            .map(|(name, _, peer)| format!("{name}=127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            certs,
            etchd: etchd.to_owned(),
            dir,
            _dir: temp,
        };
        for (name, client, peer) in peers {
            let node = cluster.spawn(&name, client, peer, &initial, "new")?;
            cluster.nodes.push(node);
        }
        cluster.await_ready().await?;
        Ok(cluster)
    }

    /// Starts etchd `name` on the given ports with `--initial-cluster initial` and
    /// `--initial-cluster-state state`.
    fn spawn(
        &self,
        name: &str,
        client: u16,
        peer: u16,
        initial: &str,
        state: &str,
    ) -> Result<Node> {
        let client_addr = format!("127.0.0.1:{client}");
        let log = self.dir.join(format!("{name}.log"));
        let data_dir = self.dir.join(name);
        let child = Command::new(&self.etchd)
            .args(["--name", name, "--listen-client", &client_addr])
            .arg("--listen-peer")
            .arg(format!("127.0.0.1:{peer}"))
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", state])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--ca")
            .arg(self.certs.join("ca.crt"))
            .arg("--cert")
            .arg(self.certs.join(format!("{name}.crt")))
            .arg("--key")
            .arg(self.certs.join(format!("{name}.key")))
            .env(
                "RUST_LOG",
                std::env::var("ETCH_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(File::create(&log).context("creating a node log")?)
            .spawn()
            .with_context(|| format!("starting {}", self.etchd.display()))?;
        Ok(Node {
            name: name.to_owned(),
            client_addr,
            peer_port: peer,
            data_dir,
            log,
            child,
        })
    }

    /// Adds a node to the cluster as etcd's operators do: `member add` (a voter) through
    /// `client`, then the node started with `--initial-cluster-state existing`. Returns its
    /// index in `nodes`.
    pub async fn add_node(&mut self, client: &Client) -> Result<usize> {
        let name = spare_name(self.nodes.len());
        let ports = free_ports(2)?;
        let peer_addr = format!("127.0.0.1:{}", ports[1]);
        client
            .member_add(name.clone(), peer_addr.clone())
            .await
            .with_context(|| format!("adding member {name}"))?;
        let mut initial: Vec<String> = (self.nodes.iter())
            .map(|n| format!("{}=127.0.0.1:{}", n.name, n.peer_port))
            .collect();
        initial.push(format!("{name}={peer_addr}"));
        let node = self.spawn(&name, ports[0], ports[1], &initial.join(","), "existing")?;
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    /// The client endpoints, `127.0.0.1:PORT` each.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client_addr.clone()).collect()
    }

    pub fn tls(&self) -> TlsFiles {
        TlsFiles::in_dir(&self.certs, "root")
    }

    async fn await_ready(&mut self) -> Result<()> {
        let opts = ClientOptions::new(self.endpoints(), self.tls())
            .connect_timeout(Duration::from_secs(1))
            .request_timeout(Duration::from_secs(2));
        let client = Client::new(opts).context("creating a probe client")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            for node in &mut self.nodes {
                node.check_running().context("during start-up")?;
            }
            match client.get("probe").await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(e).context("the local cluster did not become ready in 60 s");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// SIGTERM to every node, then waits (up to 10 s each) and kills what is left.
    pub fn stop(mut self) {
        for node in &self.nodes {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(node.child.id().to_string())
                .status();
        }
        for node in &mut self.nodes {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(node.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// The name of the node after the first `n`.
fn spare_name(n: usize) -> String {
    format!("n{}", n + 1)
}

/// `n` distinct loopback UDP ports that were free a moment ago (all bound at once, so they
/// differ, then released for etchd to take).
/// `n` ports free for UDP (QUIC) and TCP (a client port also carries the gRPC front).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let udp = UdpSocket::bind("127.0.0.1:0").context("picking free UDP ports")?;
        let port = udp.local_addr().context("reading a bound port")?.port();
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push((udp, tcp));
        }
    }
    Ok(ports)
}
