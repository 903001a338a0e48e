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

pub mod checker;
pub mod fault;
pub mod grpc;
pub mod history;

/// Path of a workspace binary built next to the running test, or in `ETCH_BIN_DIR` when
/// that is set (a long soak runs on a copy that a concurrent build cannot replace).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("ETCH_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
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

/// A plugin component built by `scripts/build-plugins` into `target/plugins/<name>.wasm`
/// (beside `target/<profile>`, or in `ETCH_PLUGIN_DIR` when that is set).
pub fn plugin_wasm(name: &str) -> PathBuf {
    let file = format!("{name}.wasm");
    if let Some(dir) = std::env::var_os("ETCH_PLUGIN_DIR") {
        return Path::new(&dir).join(file);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/plugins/<name>.wasm
    let target = exe.ancestors().nth(3).expect("target dir");
    let path = target.join("plugins").join(file);
    assert!(
        path.exists(),
        "{} not found: build the plugins first (scripts/build-plugins, as scripts/test does)",
        path.display()
    );
    path
}

/// A loopback port for a node (free for UDP and TCP), reserved for this test process alone.
///
/// Ports are taken below the kernel's ephemeral range (`ip_local_port_range`), so no socket
/// that binds port 0 — an SDK client, a proxy, another test's node — can take one while its
/// node is down between a kill and a restart (the fault soak saw a restarted node refused
/// with "Address already in use" when ports came from the ephemeral range). Each port is
/// reserved across test processes by a lock on `$TMPDIR/etch-test-ports/PORT.lock`, held
/// until this process exits (the kernel drops it even on a crash), so two tests running in
/// parallel never get the same port either.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let (low, high) = port_pool();
    let span = u32::from(high - low);
    let dir = std::env::temp_dir().join("etch-test-ports");
    std::fs::create_dir_all(&dir).expect("create the port lock directory");
    // Processes start their search at different places, so they seldom try the same ports.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = low + ((start + step) % span) as u16;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .expect("open a port lock");
        if lock.try_lock().is_err() {
            continue;
        }
        let free = UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// The ports [`free_port`] hands out: below the ephemeral range when there is room (the
/// usual 32768–60999 leaves 20000–32767), else above it.
fn port_pool() -> (u16, u16) {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok();
    let bounds: Vec<u16> = (range.iter())
        .flat_map(|r| r.split_whitespace())
        .filter_map(|n| n.parse().ok())
        .collect();
    match bounds[..] {
        [first, _] if first > 22_000 => (20_000, first),
        [_, last] if last < 63_000 => (last + 1, 65_535),
        _ => (20_000, 30_000),
    }
}

/// The log filter of test nodes: `ETCH_TEST_LOG`, else `info`.
fn test_log() -> String {
    std::env::var("ETCH_TEST_LOG").unwrap_or_else(|_| "info".into())
}

/// `GET path` from the HTTP server at `addr` (HTTP/1.0, so the body ends with the
/// connection): the status code and the body.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no end of headers in {answer:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
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

/// Like [`wait_for`], in async code: polls `check` every 50 ms until it returns `Some`,
/// failing after `timeout`.
pub async fn wait_for_async<T, F: Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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
    /// `RUST_LOG` for the process: `ETCH_TEST_LOG`, else `info` (libraries included);
    /// `None` leaves etchd's own default filter.
    pub rust_log: Option<String>,
    /// Runs the node with its data dir on a tmpfs of its own (a small disk that can fill).
    pub tmpfs: Option<Tmpfs>,
    /// More environment for the process (e.g. `ETCH_FAILPOINTS`).
    pub env: Vec<(String, String)>,
    tls: TlsFiles,
    log: PathBuf,
    child: Option<Child>,
    /// The process holding a [`Tmpfs`] node's namespace.
    holder: Option<Child>,
}

/// A tmpfs mounted over a node's data dir in a user and mount namespace of its own
/// (`unshare`, no privileges needed), with a ballast file that takes part of it; the test
/// frees space by removing the ballast ([`Etchd::remove_ballast`]). A holder process keeps
/// the namespace (and so the tmpfs) while the [`Etchd`] lives, and the node runs inside it
/// (`nsenter`), so that it can stop and start again on the same small disk.
#[derive(Clone, Copy, Debug)]
pub struct Tmpfs {
    pub size_mib: u64,
    pub ballast_mib: u64,
}

/// Mounts the tmpfs over `$1` (`$2` MiB), writes `$3` MiB of ballast, says `ready`, then
/// holds the namespace until its standard input closes (the harness drops it).
const HOLD_TMPFS: &str = r#"set -e
mount -t tmpfs -o size="$2m" tmpfs "$1"
head -c "$3M" /dev/zero > "$1/ballast"
echo ready
exec cat"#;

impl Etchd {
    /// The client endpoint, `127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The peer endpoint, `127.0.0.1:PORT`.
    pub fn peer_endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// Starts the process (again) and waits until it serves linearizable reads.
    pub fn start(&mut self, client_tls: &TlsFiles) {
        self.spawn();
        self.await_ready(client_tls);
    }

    /// Starts the process without waiting for it.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open node log");
        let mut command = match self.tmpfs {
            None => Command::new(bin("etchd")),
            Some(t) => {
                let holder = self.tmpfs_holder(t);
                let mut c = Command::new("nsenter");
                c.args(["--user", "--mount", "--target", &holder.to_string(), "--"])
                    .arg(bin("etchd"));
                c
            }
        };
        match &self.rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
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
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etchd");
        self.child = Some(child);
    }

    /// The pid of the process holding the [`Tmpfs`] node's namespace, started (and its
    /// tmpfs mounted) on first use.
    fn tmpfs_holder(&mut self, t: Tmpfs) -> u32 {
        use std::io::BufRead;
        if let Some(holder) = &self.holder {
            return holder.id();
        }
        std::fs::create_dir_all(&self.data_dir).expect("create the mount point");
        let mut holder = Command::new("unshare")
            .args([
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                HOLD_TMPFS,
            ])
            .arg("etchd-tmpfs")
            .arg(&self.data_dir)
            .arg(t.size_mib.to_string())
            .arg(t.ballast_mib.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the tmpfs holder (unshare)");
        let mut line = String::new();
        let out = holder.stdout.take().expect("the holder's stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read the holder's answer");
        assert_eq!(line.trim(), "ready", "the tmpfs holder failed to mount");
        let pid = holder.id();
        self.holder = Some(holder);
        pid
    }

    /// Frees the space of a [`Tmpfs`] node's ballast (through `/proc/PID/root`, the
    /// namespace's view of the filesystem).
    pub fn remove_ballast(&self) {
        let pid = self.holder.as_ref().expect("a tmpfs node").id();
        let inside = Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(
                self.data_dir
                    .strip_prefix("/")
                    .expect("an absolute data dir"),
            )
            .join("ballast");
        std::fs::remove_file(&inside)
            .unwrap_or_else(|e| panic!("removing {}: {e}", inside.display()));
    }

    /// Waits until the node answers `endpoint health` (a linearizable read).
    pub fn await_ready(&mut self, client_tls: &TlsFiles) {
        self.await_answer(client_tls, &["endpoint", "health"]);
    }

    /// Starts the process and waits only until it answers serializable reads (a node that
    /// cannot reach a quorum yet, such as a learner, or one still catching up).
    pub fn start_serving(&mut self, client_tls: &TlsFiles) {
        self.spawn();
        self.await_answer(client_tls, &["get", "probe", "--serializable"]);
    }

    /// Waits until `etchctl ARGS` against this node succeeds; fails at once, with the node's
    /// log, if the process exits meanwhile.
    fn await_answer(&mut self, client_tls: &TlsFiles, args: &[&str]) {
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
                etchctl_with(&endpoint, client_tls, args)
                    .status
                    .success()
                    .then_some(())
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

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits up to `timeout` for the process to exit by itself, and reaps it.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        let child = self.child.as_mut().expect("the node runs");
        let status = wait_for(&format!("{name} to exit"), timeout, || {
            child.try_wait().expect("try_wait on etchd")
        });
        self.child = None;
        status
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
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

/// A cluster of etchd processes with its certificates, in one temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub certs: Certs,
    pub nodes: Vec<Etchd>,
}

impl Drop for Cluster {
    /// A failing test deletes the nodes' logs with its directory: show their last lines
    /// first (40, or `ETCH_TEST_LOG_TAIL`), so that a failure on CI can be read.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for node in &self.nodes {
            let text = node.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let keep = std::env::var("ETCH_TEST_LOG_TAIL")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(40);
            let tail = &lines[lines.len().saturating_sub(keep)..];
            eprintln!(
                "--- last lines of {}'s log:\n{}",
                node.name,
                tail.join("\n")
            );
        }
    }
}

impl Cluster {
    /// One node, `n1`, with client certificates `root` and `alice`.
    pub fn single() -> Self {
        Self::single_with(&[])
    }

    /// One node with extra etchd flags.
    pub fn single_with(extra_args: &[&str]) -> Self {
        Self::new(1, extra_args)
    }

    /// `n` nodes named `n1`..`nN` founding one cluster, each started with `extra_args`;
    /// returns once every node serves linearizable reads. Client certificates: `root`, `alice`.
    pub fn new(n: usize, extra_args: &[&str]) -> Self {
        let mut cluster = Self::prepare(n, extra_args);
        cluster.start();
        cluster
    }

    /// Starts every node of a [`Cluster::prepare`]d cluster and waits until each serves
    /// linearizable reads.
    pub fn start(&mut self) {
        let tls = self.client_tls("root");
        // Start every process first: a majority must be up before any can answer.
        for node in &mut self.nodes {
            node.spawn();
        }
        for node in &mut self.nodes {
            node.await_ready(&tls);
        }
    }

    /// Like [`Cluster::new`] but starts nothing.
    pub fn prepare(n: usize, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let certs = Certs::new(&dir.path().join("certs"), &name_refs, &["root", "alice"]);
        let ports: Vec<(u16, u16)> = names.iter().map(|_| (free_port(), free_port())).collect();
        let initial = names
            .iter()
            .zip(&ports)
            .map(|(name, (_, peer))| format!("{name}=127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = names
            .iter()
            .zip(&ports)
            .map(|(name, &(client_port, peer_port))| {
                let mut args = vec!["--initial-cluster".to_owned(), initial.clone()];
                args.extend(extra_args.iter().map(|s| s.to_string()));
                Etchd {
                    name: name.clone(),
                    data_dir: dir.path().join(name),
                    client_port,
                    peer_port,
                    extra_args: args,
                    rust_log: Some(test_log()),
                    tmpfs: None,
                    env: Vec::new(),
                    tls: certs.files(name),
                    log: dir.path().join(format!("{name}.log")),
                    child: None,
                    holder: None,
                }
            })
            .collect();
        Cluster { dir, certs, nodes }
    }

    /// A node that is not (yet) a member: `name` with a fresh certificate, data dir and
    /// ports, to be started with `--initial-cluster-state existing` after `member add`.
    pub fn extra_node(&self, name: &str, extra_args: &[&str]) -> Etchd {
        let certs = Certs::new(&self.certs.dir, &[name], &[]);
        Etchd {
            name: name.into(),
            data_dir: self.dir.path().join(name),
            client_port: free_port(),
            peer_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            rust_log: Some(test_log()),
            tmpfs: None,
            env: Vec::new(),
            tls: certs.files(name),
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
            holder: None,
        }
    }

    /// A node `name` that is not a member yet, set to join this cluster: started with the
    /// current members and itself as `--initial-cluster` and `--initial-cluster-state
    /// existing`, it waits to be reached by the leader.
    pub fn joining_node(&self, name: &str) -> Etchd {
        let mut node = self.extra_node(name, &[]);
        let mut initial: Vec<String> = (self.nodes.iter())
            .map(|n| format!("{}=127.0.0.1:{}", n.name, n.peer_port))
            .collect();
        initial.push(format!("{name}={}", node.peer_endpoint()));
        node.extra_args = vec![
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "existing".into(),
        ];
        node
    }

    /// Adds a new node `name` as a learner (`etchctl member add --learner`), starts it with
    /// the current members as its existing cluster, and appends it to `nodes`; returns
    /// what `member add` printed.
    pub fn add_learner(&mut self, name: &str) -> String {
        let mut node = self.joining_node(name);
        let added = ok_stdout(&self.etchctl(&[
            "member",
            "add",
            name,
            "--peer-urls",
            &node.peer_endpoint(),
            "--learner",
        ]));
        node.start_serving(&self.client_tls("root"));
        self.nodes.push(node);
        added
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
        etchctl_stdin_with(&self.endpoints(), &self.client_tls("root"), args, stdin)
    }

    /// Pauses node `i` (SIGSTOP) or resumes it (SIGCONT).
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.nodes[i].pid().expect("node is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Restarts node `i` and waits only until it answers serializable reads (it may still
    /// be catching up with the cluster).
    pub fn restart_serving(&mut self, i: usize) {
        let tls = self.client_tls("root");
        self.nodes[i].kill();
        self.nodes[i].start_serving(&tls);
    }

    /// Restarts node `i` after a `kill -9`.
    pub fn restart(&mut self, i: usize) {
        let tls = self.client_tls("root");
        self.nodes[i].restart(&tls);
    }
}

/// Runs Debian's `etcdctl` (package etcd-client, v3 API; scripts/test installs it) with
/// `args`, `stdin` on its standard input; what it said.
pub fn etcdctl_output<A: AsRef<std::ffi::OsStr>>(args: &[A], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl (Debian's etcd-client; scripts/test installs it)");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("etcdctl output")
}

/// The etchctl command as the holder of `tls` against `endpoints`, for a test to run or spawn.
pub fn etchctl_command<A: AsRef<std::ffi::OsStr>>(
    endpoints: &str,
    tls: &TlsFiles,
    args: &[A],
) -> Command {
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
pub fn etchctl_with<A: AsRef<std::ffi::OsStr>>(
    endpoints: &str,
    tls: &TlsFiles,
    args: &[A],
) -> Output {
    etchctl_command(endpoints, tls, args)
        .output()
        .expect("run etchctl")
}

/// Runs etchctl as the holder of `tls` against `endpoints`, with `stdin` as its input.
pub fn etchctl_stdin_with(endpoints: &str, tls: &TlsFiles, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = etchctl_command(endpoints, tls, args)
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

// SDK clients, raw QUIC connections and a graceful stop (used by tests/single_node.rs).

/// What a node answers on a stream: its response, or the error it reports.
pub type Answer = Result<etch_proto::Response, etch_proto::Error>;

impl Cluster {
    /// SDK options for the client certificate `name`, against every node.
    pub fn client_options(&self, name: &str) -> etch_client::ClientOptions {
        etch_client::ClientOptions::new(
            self.nodes.iter().map(Etchd::endpoint),
            self.client_tls(name),
        )
    }

    /// An SDK client as `root` that connects on first use, with a 10 s request timeout
    /// (room for a failover).
    pub fn root_client(&self) -> etch_client::Client {
        let opts = self
            .client_options("root")
            .request_timeout(Duration::from_secs(10));
        etch_client::Client::new(opts).expect("an SDK client as root")
    }

    /// Index of the running node that says it leads (`etchctl endpoint status`), waiting
    /// up to 20 s for one.
    pub fn leader_index(&mut self) -> usize {
        let tls = self.client_tls("root");
        wait_for("a leader", Duration::from_secs(20), || {
            (0..self.nodes.len()).find(|&i| {
                self.nodes[i].is_running() && {
                    let out =
                        etchctl_with(&self.nodes[i].endpoint(), &tls, &["endpoint", "status"]);
                    out.status.success()
                        && String::from_utf8_lossy(&out.stdout).contains(", true, false,")
                }
            })
        })
    }

    /// An SDK client connected as `root`.
    pub async fn client(&self) -> etch_client::Client {
        etch_client::Client::connect(self.client_options("root"))
            .await
            .expect("connect the SDK client as root")
    }
}

impl Etchd {
    /// Stops the node gracefully (SIGTERM) and waits, with a deadline, for a clean exit.
    pub fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .expect("kill -TERM");
        assert!(status.success(), "kill -TERM {pid}");
        let what = format!("{} to exit after SIGTERM", self.name);
        let child = &mut self.child;
        let exit = wait_for(&what, Duration::from_secs(20), || {
            child.as_mut().and_then(|c| c.try_wait().ok().flatten())
        });
        self.child = None;
        assert!(
            exit.success(),
            "{} exited with {exit} after SIGTERM; log:\n{}",
            self.name,
            self.log_text()
        );
    }
}

/// The resident set size of process `pid`, from /proc/PID/status, in MiB.
///
/// # Panics
///
/// The process is gone.
pub fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line");
    kb / 1024
}

/// How long a memory-bound test waits for the resident set to settle. Such a test runs its
/// node with a write deadline far past it (`--client-write-timeout 60000`): the deadline
/// would free what the attack pins, and the bound must hold while the attack still pins it.
pub const RSS_SETTLE: Duration = Duration::from_secs(8);

/// The resident set size of process `pid` in MiB once it is under `bound_mib`, or its lowest
/// reading within `patience`. What an attack pins stays resident while the attack lasts;
/// what the work around it freed goes back to the kernel only when the allocator purges it
/// (jemalloc's decay, which a loaded machine can delay by seconds), and is not held.
///
/// # Panics
///
/// The process is gone.
pub async fn settled_rss_mib(pid: u32, bound_mib: u64, patience: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + patience;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut lowest = u64::MAX;
    loop {
        tick.tick().await;
        lowest = lowest.min(rss_mib(pid));
        if lowest < bound_mib || tokio::time::Instant::now() >= deadline {
            return lowest;
        }
    }
}

/// A TLS config for a raw QUIC connection that presents the client (or node) certificate in
/// `files`, trusts `files.ca` and speaks `alpn`.
pub fn raw_tls(files: &TlsFiles, alpn: &[u8]) -> rustls::ClientConfig {
    pki::Identity::load(files)
        .expect("load TLS files")
        .client_config(alpn)
        .expect("client TLS config")
}

/// A TLS config that trusts the CA in `ca` and presents no certificate at all.
pub fn raw_tls_anonymous(ca: &Path, alpn: &[u8]) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots
            .add(cert.expect("CA certificate"))
            .expect("add the CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(pki::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// Dials `addr` (`127.0.0.1:PORT`) over QUIC with `tls`, as server name `localhost`.
pub async fn quic_dial(
    addr: &str,
    tls: rustls::ClientConfig,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("a QUIC TLS config");
    let mut endpoint =
        quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).expect("bind UDP");
    endpoint.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(quic)));
    let addr = addr.parse().expect("a socket address");
    endpoint
        .connect(addr, "localhost")
        .expect("start a QUIC connection")
        .await
}

/// Writes `bytes` on a fresh bidirectional stream of `conn`, finishes it, and reads one
/// answer frame: `Ok(None)` when the node ends the stream without answering. A failed write
/// is not reported (a node stops reading a request it refuses); the read says what happened.
pub async fn raw_exchange(
    conn: &quinn::Connection,
    bytes: &[u8],
) -> Result<Option<Answer>, etch_proto::frame::FrameError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(std::io::Error::from)?;
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    etch_proto::frame::read(&mut recv, etch_proto::DEFAULT_MAX_RESPONSE_BYTES).await
}

// Raw protocol access for watch and lease tests (independent of the SDK).

/// Marks an error of [`RawClient::request_to`] that happened before the request was sent.
const NOT_SENT: &str = "not sent: ";

/// A raw client over QUIC: one cached connection per node, one stream per request.
pub struct RawClient {
    endpoints: Vec<String>,
    tls: rustls::ClientConfig,
    conns: tokio::sync::Mutex<std::collections::HashMap<String, quinn::Connection>>,
    /// The endpoint that answered last: [`RawClient::request`] starts there, so that a dead
    /// node costs one dial timeout, not one per request.
    preferred: std::sync::atomic::AtomicUsize,
}

impl RawClient {
    pub fn new(endpoints: Vec<String>, files: &TlsFiles) -> Self {
        RawClient {
            endpoints,
            tls: raw_tls(files, etch_proto::ALPN_CLIENT),
            conns: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            preferred: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The connection to `addr`, dialled when missing or closed.
    pub async fn conn(&self, addr: &str) -> Result<quinn::Connection, String> {
        let mut conns = self.conns.lock().await;
        if let Some(conn) = conns.get(addr)
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let dial = tokio::time::timeout(Duration::from_secs(3), self.dial(addr));
        let conn = dial
            .await
            .map_err(|_| format!("{NOT_SENT}dialling {addr} timed out"))?
            .map_err(|e| format!("{NOT_SENT}{e}"))?;
        conns.insert(addr.to_owned(), conn.clone());
        Ok(conn)
    }

    /// A connection that notices a dead node within seconds (keep-alives every 500 ms, closed
    /// after 3 s of silence), so that watchers move on instead of waiting on a dead stream.
    async fn dial(&self, addr: &str) -> Result<quinn::Connection, String> {
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(self.tls.clone())
            .map_err(|e| e.to_string())?;
        let mut config = quinn::ClientConfig::new(std::sync::Arc::new(quic));
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(Duration::from_millis(500)))
            .max_idle_timeout(Some(
                Duration::from_secs(3)
                    .try_into()
                    .map_err(|e| format!("{e}"))?,
            ));
        config.transport_config(std::sync::Arc::new(transport));
        let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into())
            .map_err(|e| e.to_string())?;
        let addr = addr.parse().map_err(|e| format!("{e}"))?;
        endpoint
            .connect_with(config, addr, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    }

    /// One unary exchange with the node at `addr`.
    pub async fn request_to(
        &self,
        addr: &str,
        request: &etch_proto::Request,
    ) -> Result<Answer, String> {
        let conn = self.conn(addr).await?;
        let bytes = etch_proto::frame::encode(request, etch_proto::DEFAULT_MAX_REQUEST_BYTES)
            .map_err(|e| e.to_string())?;
        let exchange = tokio::time::timeout(Duration::from_secs(15), raw_exchange(&conn, &bytes));
        match exchange.await {
            Ok(Ok(Some(answer))) => Ok(answer),
            Ok(Ok(None)) => Err(format!("{addr} ended the stream without answering")),
            Ok(Err(e)) => {
                self.conns.lock().await.remove(addr);
                Err(e.to_string())
            }
            Err(_) => Err(format!("{addr} did not answer in time")),
        }
    }

    /// Sends `request` to the nodes in turn, from the one that answered last, until one
    /// answers with something other than a retryable error, giving up after `timeout`. A
    /// write whose stream broke or timed out after it was sent may have been applied: it is
    /// reported as `Timeout`, never retried (so a test's history never holds a write twice).
    pub async fn request(&self, request: &etch_proto::Request, timeout: Duration) -> Answer {
        use std::sync::atomic::Ordering;
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let first = self.preferred.load(Ordering::Relaxed);
        for i in first.. {
            if Instant::now() >= deadline {
                break;
            }
            let at = i % self.endpoints.len();
            let addr = &self.endpoints[at];
            match self.request_to(addr, request).await {
                Ok(Err(e)) if e.is_retryable() => last = e.to_string(),
                Ok(answer) => {
                    self.preferred.store(at, Ordering::Relaxed);
                    return answer;
                }
                Err(e) if request.is_write() && !e.starts_with(NOT_SENT) => {
                    return Err(etch_proto::Error::Timeout);
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(etch_proto::Error::Unavailable {
            reason: format!("no node answered: {last}"),
        })
    }
}

/// A raw watch stream: `Request::Watch` as its first frame, responses read by a task of
/// its own (so that [`RawWatch::next`] is cancel-safe: a timeout never loses half a frame),
/// control frames written on the same stream.
pub struct RawWatch {
    send: quinn::SendStream,
    responses: tokio::sync::mpsc::Receiver<Result<etch_proto::watch::WatchResponse, String>>,
}

impl RawWatch {
    pub async fn open(
        conn: &quinn::Connection,
        req: etch_proto::watch::WatchCreateRequest,
    ) -> Result<RawWatch, String> {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let first = etch_proto::Request::Watch(req);
        etch_proto::frame::write(&mut send, &first, etch_proto::DEFAULT_MAX_REQUEST_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let (tx, responses) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let frame: Result<Option<Answer>, _> =
                    etch_proto::frame::read(&mut recv, etch_proto::DEFAULT_MAX_RESPONSE_BYTES)
                        .await;
                let item = match frame {
                    Ok(None) => return,
                    Ok(Some(Ok(etch_proto::Response::Watch(resp)))) => Ok(resp),
                    Ok(Some(Ok(other))) => Err(format!("not a watch response: {other:?}")),
                    Ok(Some(Err(e))) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        Ok(RawWatch { send, responses })
    }

    /// The next watch response: `Ok(None)` when the node finished the stream, `Err` when
    /// the stream or connection broke, or the node answered with an error. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<etch_proto::watch::WatchResponse>, String> {
        self.responses.recv().await.transpose()
    }

    pub async fn control(
        &mut self,
        control: etch_proto::watch::WatchControl,
    ) -> Result<(), String> {
        etch_proto::frame::write(
            &mut self.send,
            &control,
            etch_proto::DEFAULT_MAX_REQUEST_BYTES,
        )
        .await
        .map_err(|e| e.to_string())
    }
}
