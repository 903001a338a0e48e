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
        let opts = InitOptions {
            nodes: names.clone(),
            clients: vec!["root".into()],
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        init_dir(&certs, &opts).context("generating certificates")?;
        let ports = free_ports(2 * n)?;
        let initial = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}=127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let client_addr = format!("127.0.0.1:{}", ports[2 * i]);
            let log = dir.join(format!("{name}.log"));
            let data_dir = dir.join(name);
            let child = Command::new(etchd)
                .args(["--name", name, "--listen-client", &client_addr])
                .arg("--listen-peer")
                .arg(format!("127.0.0.1:{}", ports[2 * i + 1]))
                .args(["--initial-cluster", &initial])
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--ca")
                .arg(certs.join("ca.crt"))
                .arg("--cert")
                .arg(certs.join(format!("{name}.crt")))
                .arg("--key")
                .arg(certs.join(format!("{name}.key")))
                .env(
                    "RUST_LOG",
                    std::env::var("ETCH_BENCH_NODE_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdout(Stdio::null())
                .stderr(File::create(&log).context("creating a node log")?)
                .spawn()
                .with_context(|| format!("starting {}", etchd.display()))?;
            nodes.push(Node {
                name: name.clone(),
                client_addr,
                data_dir,
                log,
                child,
            });
        }
        let mut cluster = LocalCluster {
            nodes,
            certs,
            _dir: temp,
        };
        cluster.await_ready().await?;
        Ok(cluster)
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
                if let Ok(Some(status)) = node.child.try_wait() {
                    bail!(
                        "{} exited with {status} during start-up; log tail:\n{}",
                        node.name,
                        node.log_tail()
                    );
                }
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
