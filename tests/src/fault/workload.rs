//! [`Workload`]: concurrent SDK clients running put / get / delete / CAS on a few keys,
//! every operation recorded in a [`History`].
//!
//! The shape serves the checker: several keys, a handful of clients per key, every value
//! unique (`c<client>.<n>`), so the per-key search stays small even with the unknown
//! outcomes a fault leaves behind. Each client has its own SDK connection, to the
//! endpoints in its own rotation, so a fault hits some clients and not others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etch_client::{Client, ClientOptions};
use etch_proto::pki::TlsFiles;
use tokio::runtime::Runtime;

use super::seed::Rng;
use crate::history::{self, ClientId, History, Op, OpResult, Outcome};

/// Every workload key starts with this.
pub const PREFIX: &str = "f/";

/// The SDK's time for one request, retries included; past it a write is `Unknown`. etcd's
/// clients default to 5 s (etcdctl's `--command-timeout`), as etch's SDK does.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether workload client `id` names its writes (the SDK's exactly-once): the even ones.
/// The odd ones do not, so that every run compares the two under the same faults.
pub fn named(id: ClientId) -> bool {
    id.is_multiple_of(2)
}

/// SDK options for a client of `endpoints` that tries them from `first` on (its client
/// id), naming its writes as [`named`] says.
pub fn client_options(endpoints: &[String], first: usize, tls: &TlsFiles) -> ClientOptions {
    let n = endpoints.len();
    let rotated = (0..n).map(|i| endpoints[(first + i) % n].clone());
    ClientOptions::new(rotated, tls.clone())
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(REQUEST_TIMEOUT)
        .exactly_once(named(first))
}

/// Clients at work, and what they did.
pub struct Workload {
    pub history: Arc<History>,
    pub keys: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    acked_writes: Arc<AtomicU64>,
    causes: Causes,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Operations by class ("read", "named write", "unnamed write": see [`client_options`]),
/// and unknown outcomes by class and the SDK's error ("named write: timed out, no
/// answer"), with how many.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub ops: BTreeMap<String, u64>,
    pub unknown: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        for (mine, theirs) in [
            (&mut self.ops, &other.ops),
            (&mut self.unknown, &other.unknown),
        ] {
            for (k, n) in theirs {
                *mine.entry(k.clone()).or_default() += n;
            }
        }
    }
}

type Causes = Arc<Mutex<Tally>>;

impl Workload {
    /// Starts `clients_per_key` clients on each of `keys` keys, against `endpoints`.
    pub fn start(
        rt: &Runtime,
        endpoints: &[String],
        tls: &TlsFiles,
        (keys, clients_per_key): (usize, usize),
        rng: &mut Rng,
    ) -> Workload {
        let history = Arc::new(History::new());
        let stop = Arc::new(AtomicBool::new(false));
        let acked_writes = Arc::new(AtomicU64::new(0));
        let causes = Causes::default();
        let keys: Vec<Vec<u8>> = (0..keys).map(|k| format!("{PREFIX}k{k}").into()).collect();
        let mut tasks = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            for c in 0..clients_per_key {
                let id = k * clients_per_key + c;
                let opts = client_options(endpoints, id, tls);
                let client = Client::new(opts).expect("an SDK client");
                let run = ClientRun {
                    id,
                    key: key.clone(),
                    client,
                    history: history.clone(),
                    stop: stop.clone(),
                    acked_writes: acked_writes.clone(),
                    causes: causes.clone(),
                    rng: rng.fork(id as u64),
                };
                tasks.push(rt.spawn(run.run()));
            }
        }
        Workload {
            history,
            keys,
            stop,
            acked_writes,
            causes,
            tasks,
        }
    }

    /// The workload's operations by class, and why those of unknown outcome were so.
    pub fn tally(&self) -> Tally {
        self.causes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes acknowledged so far.
    pub fn acked_writes(&self) -> u64 {
        self.acked_writes.load(Ordering::SeqCst)
    }

    /// Stops the clients and waits for their last operations (each bounded by the
    /// request timeout).
    pub fn stop(&mut self, rt: &Runtime) {
        self.stop.store(true, Ordering::SeqCst);
        for task in self.tasks.drain(..) {
            rt.block_on(task).expect("a workload client panicked");
        }
    }

    /// Reads every key once more, linearizably, recorded in the history: the checker then
    /// knows the final state, so an acknowledged write missing from it is a violation.
    /// Retries a key until one read is answered, up to `timeout`.
    ///
    /// # Errors
    ///
    /// When some key could not be read in time.
    pub fn final_reads(
        &self,
        rt: &Runtime,
        client: &Client,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let reader: ClientId = usize::MAX;
        for key in &self.keys {
            loop {
                let op = Op::Get { key: key.clone() };
                let id = self.history.invoke(reader, op.clone());
                let answer = rt.block_on(client.request(op.request()));
                let outcome = history::outcome(&op, &answer);
                let answered = matches!(outcome, Outcome::Ok(_));
                self.history.complete(id, outcome);
                if answered {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("final read of {}: {answer:?}", history::show(key)));
                }
            }
        }
        Ok(())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One client's loop on its key.
struct ClientRun {
    id: ClientId,
    key: Vec<u8>,
    client: Client,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    acked_writes: Arc<AtomicU64>,
    causes: Causes,
    rng: Rng,
}

impl ClientRun {
    async fn run(mut self) {
        // The value this client last knew the key to hold, for its CAS.
        let mut known: Option<Vec<u8>> = None;
        for n in 0.. {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let value = format!("c{}.{n}", self.id).into_bytes();
            let key = self.key.clone();
            let op = match self.rng.below(100) {
                0..30 => Op::Put { key, value },
                30..60 => Op::Get { key },
                60..85 => Op::Cas {
                    key,
                    expected: known.clone(),
                    new: value,
                },
                _ => Op::Delete { key },
            };
            let id = self.history.invoke(self.id, op.clone());
            let answer = self.client.request(op.request()).await;
            let outcome = history::outcome(&op, &answer);
            self.history.complete(id, outcome.clone());
            {
                let class = match (op.is_write(), named(self.id)) {
                    (false, _) => "read",
                    (true, true) => "named write",
                    (true, false) => "unnamed write",
                };
                let mut tally = self.causes.lock().unwrap_or_else(|e| e.into_inner());
                *tally.ops.entry(class.to_owned()).or_default() += 1;
                if let (Outcome::Unknown, Err(e)) = (&outcome, &answer) {
                    let cause = format!("{class}: {}", cause(e));
                    *tally.unknown.entry(cause).or_default() += 1;
                }
            }
            match (&op, &outcome) {
                (_, Outcome::Ok(result)) if result.wrote() => {
                    self.acked_writes.fetch_add(1, Ordering::SeqCst);
                    known = match op {
                        Op::Put { value, .. } | Op::Cas { new: value, .. } => Some(value),
                        Op::Delete { .. } | Op::Get { .. } => None,
                    };
                }
                (_, Outcome::Ok(OpResult::Get { value, .. })) => known = value.clone(),
                (_, Outcome::Ok(_)) => {}
                (_, Outcome::Failed | Outcome::Unknown) => {
                    // Backing off is the point here: a client whose requests fail at once
                    // (no leader yet) should not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// A short name for what an SDK error was: its variant, and for a timeout the last
/// attempt's error ("no answer" when there was none).
fn cause(e: &etch_client::Error) -> String {
    let variant = |e: &etch_client::Error| match e {
        etch_client::Error::Server(server) => format!("{server:?}")
            .split(['(', ' ', '{'])
            .next()
            .map_or_else(String::new, |v| format!("server {v}")),
        other => format!("{other:?}")
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    match e {
        etch_client::Error::Timeout { last_error, .. } => match last_error {
            Some(last) => format!("timed out after {}", variant(last)),
            None => "timed out, no answer".to_owned(),
        },
        other => variant(other),
    }
}
