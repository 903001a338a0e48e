//! The integration-test harness: real `etchd` processes on loopback with real certificates.
//!
//! [`Cluster::single`] makes a certificate directory with `etch_proto::pki`, picks free
//! ports, starts `etchd` and waits (with a deadline, never a fixed sleep) until it answers a
//! linearizable read. [`Etchd::kill`] is `kill -9`; [`Etchd::restart`] starts the same node
//! on the same data directory and ports. [`etchctl`] runs the CLI binary.
//!
//! The binaries are found beside the test executable (`target/<profile>/`); `scripts/test`
//! builds them before running the tests.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use etch_proto::pki::{self, InitOptions, TlsFiles};

/// Path of a workspace binary built next to the running test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first (`cargo build --workspace --bins`, as scripts/test does)",
        path.display()
    );
    path
}

/// A loopback UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral UDP port");
    socket.local_addr().expect("local addr").port()
}

/// Waits until `check` returns `Some`, polling every 50 ms, failing after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A certificate directory made by `etch_proto::pki::init_dir`.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path, nodes: &[&str], clients: &[&str]) -> Self {
        let opts = InitOptions {
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            clients: clients.iter().map(|s| s.to_string()).collect(),
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
        };
        pki::init_dir(dir, &opts).expect("generate certificates");
        Certs {
            dir: dir.to_owned(),
        }
    }

    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, name)
    }
}

/// One etchd process.
pub struct Etchd {
    pub name: String,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub extra_args: Vec<String>,
    tls: TlsFiles,
    log: PathBuf,
    child: Option<Child>,
}

impl Etchd {
    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// Starts the process (again) and waits until it serves linearizable reads.
    pub fn start(&mut self, client_tls: &TlsFiles) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let child = Command::new(bin("etchd"))
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client")
            .arg(self.endpoint())
            .arg("--listen-peer")
            .arg(format!("127.0.0.1:{}", self.peer_port))
            .arg("--ca")
            .arg(&self.tls.ca)
            .arg("--cert")
            .arg(&self.tls.cert)
            .arg("--key")
            .arg(&self.tls.key)
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("ETCH_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etchd");
        self.child = Some(child);
        let endpoint = self.endpoint();
        wait_for(
            &format!("{} to serve on {endpoint}", self.name),
            Duration::from_secs(30),
            || {
                if let Some(status) = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    panic!(
                        "{} exited with {status} during start-up; log:\n{}",
                        self.name,
                        self.log_text()
                    );
                }
                let out = etchctl_with(&endpoint, client_tls, &["endpoint", "health"]);
                out.status.success().then_some(())
            },
        );
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9 etchd");
            child.wait().expect("reap etchd");
        }
    }

    /// Kills (if running) and starts again on the same data directory and ports.
    pub fn restart(&mut self, client_tls: &TlsFiles) {
        self.kill();
        self.start(client_tls);
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// What the node has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Etchd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of etchd processes with its certificates, in one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub nodes: Vec<Etchd>,
}

impl Cluster {
    /// One node, `n1`, with client certificates `root` and `alice`.
    pub fn single() -> Self {
        Self::single_with(&[])
    }

    /// One node with extra etchd flags.
    pub fn single_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = Certs::new(&dir.path().join("certs"), &["n1"], &["root", "alice"]);
        let mut node = Etchd {
            name: "n1".into(),
            data_dir: dir.path().join("n1"),
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            tls: certs.files("n1"),
            log: dir.path().join("n1.log"),
            child: None,
        };
        node.start(&certs.files("root"));
        Cluster {
            dir,
            certs,
            nodes: vec![node],
        }
    }

    /// TLS files of a client certificate.
    pub fn client_tls(&self, name: &str) -> TlsFiles {
        self.certs.files(name)
    }

    /// Every node's client endpoint, comma-separated as `--endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.nodes
            .iter()
            .map(Etchd::endpoint)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs etchctl as `root` against the whole cluster.
    pub fn etchctl(&self, args: &[&str]) -> Output {
        etchctl_with(&self.endpoints(), &self.client_tls("root"), args)
    }

    /// Runs etchctl as `root` with `stdin` fed to it.
    pub fn etchctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = etchctl_command(&self.endpoints(), &self.client_tls("root"), args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etchctl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("etchctl output")
    }

    /// Restarts node `i` after a `kill -9`.
    pub fn restart(&mut self, i: usize) {
        let tls = self.client_tls("root");
        self.nodes[i].restart(&tls);
    }
}

fn etchctl_command(endpoints: &str, tls: &TlsFiles, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("etchctl"));
    cmd.arg("--endpoints")
        .arg(endpoints)
        .arg("--cacert")
        .arg(&tls.ca)
        .arg("--cert")
        .arg(&tls.cert)
        .arg("--key")
        .arg(&tls.key)
        .args(args)
        .env_remove("RUST_LOG");
    cmd
}

/// Runs etchctl with the given endpoints and client certificate.
pub fn etchctl_with(endpoints: &str, tls: &TlsFiles, args: &[&str]) -> Output {
    etchctl_command(endpoints, tls, args)
        .output()
        .expect("run etchctl")
}

/// Standard output of a successful etchctl run; panics with its stderr otherwise.
pub fn ok_stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "etchctl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}
