//! [`Executor`]: the node's plugin calls run here, on their own threads, never on tokio's
//! blocking pool.
//!
//! The blocking pool is what storage reads, leases and watches use. When plugin calls ran
//! there, 16 writes into a looping validator held every blocking thread for as long as the
//! binding's deadline: linearizable reads, lease grants and other installs stopped, and
//! reads outside the validator's prefix were slowed to seconds. Here a call can only delay
//! other plugin calls, and only its fair share of them:
//!
//! - [`CALL_SLOTS`] dedicated OS threads run jobs (a job is one write's judgement or one
//!   reactor step: calls are CPU-bound and a node has few cores);
//! - jobs queue per **lane** (the bindings a job calls: a validated write's validators, a
//!   reactor's name); the threads take lanes in turn (round robin), and one lane holds at
//!   most [`LANE_SLOTS`] threads at once, so a lane whose plugin burns its whole deadline
//!   never keeps another lane's jobs waiting for a thread;
//! - the threads run only on what the node's own work (tokio's workers: requests, Raft,
//!   watches; the log writer) leaves of the CPU ([`lower_priority`]): they are scheduled
//!   `SCHED_IDLE`, which the node's threads preempt the moment they wake, and they keep to
//!   half of the node's CPUs, so the other half never runs a plugin. A validator that burns
//!   its whole budget on every call then costs the traffic outside its prefix little on a
//!   machine of two cores (BENCHMARKS.md, "Fairness");
//! - the queue is bounded, per lane ([`LANE_QUEUE`]) and in all ([`QUEUE`]): a job that
//!   does not fit is refused at once ([`Refused::Full`]), and one that waited longer than
//!   its queue wait (the node's request timeout: its client has given up) is answered
//!   [`Refused::Expired`] without running. A job whose caller went away is skipped.
//!
//! Stopping the executor (node shutdown) refuses new jobs, drops the queued ones
//! ([`Refused::Stopped`]) and lets the threads end after their current job, which the
//! node's stop flag interrupts (`runtime.rs`, [`super::runtime::Cancel`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::runtime::CALL_SLOTS;

/// Threads one lane may hold at once: half of them, so that a second lane always finds one.
pub const LANE_SLOTS: usize = CALL_SLOTS / 2;
/// The nice value of the plugin threads where `SCHED_IDLE` is refused (0 is the node's; 19
/// gives a thread about a seventieth of a CPU's share against one at 0 when both are
/// runnable, and the whole CPU when alone).
pub const PLUGIN_NICE: i32 = 19;
/// Jobs one lane may have waiting.
pub const LANE_QUEUE: usize = 256;
/// Jobs all lanes together may have waiting.
pub const QUEUE: usize = 1024;

/// Why a job did not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many plugin calls waiting")]
    Full,
    #[error("waited too long for a plugin thread")]
    Expired,
    #[error("the node is stopping")]
    Stopped,
    #[error("the plugin thread failed")]
    Panicked,
}

/// A queued job: runs with `true`, or is told with `false` that it waited too long.
type Job = Box<dyn FnOnce(bool) + Send>;

/// The plugin threads and their queue. Dropping it stops them.
pub struct Executor {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued, a lane frees a thread, or the executor stops.
    work: Condvar,
    /// Longest a job may wait in the queue.
    queue_wait: Duration,
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    /// The lanes with waiting jobs, in the order the threads serve them.
    order: VecDeque<String>,
    queued: usize,
    stopped: bool,
}

#[derive(Default)]
struct Lane {
    jobs: VecDeque<(Instant, Job)>,
    running: usize,
}

impl Executor {
    /// Starts [`CALL_SLOTS`] threads; a job may wait `queue_wait` for one.
    ///
    /// # Errors
    ///
    /// A thread cannot be started.
    pub fn start(queue_wait: Duration) -> std::io::Result<Executor> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            queue_wait,
        });
        for i in 0..CALL_SLOTS {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("plugin-call-{i}"))
                .spawn(move || {
                    lower_priority();
                    work(&shared);
                })?;
        }
        Ok(Executor { shared })
    }

    /// Runs `f` on a plugin thread in `lane`'s turn and returns what it returned.
    ///
    /// # Errors
    ///
    /// The queue is full, the job waited too long, or the executor stopped.
    pub async fn run<T: Send + 'static>(
        &self,
        lane: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Refused> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |run| {
            // The caller went away (its request timed out): nobody wants the result.
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(if run { Ok(f()) } else { Err(Refused::Expired) });
        });
        self.submit(lane, job)?;
        match rx.await {
            Ok(answer) => answer,
            // Dropped unanswered: by `stop`, or by a job that panicked.
            Err(_) if self.shared.lock().stopped => Err(Refused::Stopped),
            Err(_) => Err(Refused::Panicked),
        }
    }

    fn submit(&self, lane: &str, job: Job) -> Result<(), Refused> {
        let mut state = self.shared.lock();
        if state.stopped {
            return Err(Refused::Stopped);
        }
        if state.queued >= QUEUE {
            return Err(Refused::Full);
        }
        let entry = state.lanes.entry(lane.to_owned()).or_default();
        if entry.jobs.len() >= LANE_QUEUE {
            return Err(Refused::Full);
        }
        let first = entry.jobs.is_empty();
        entry.jobs.push_back((Instant::now(), job));
        if first {
            state.order.push_back(lane.to_owned());
        }
        state.queued += 1;
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Refuses new jobs, drops the waiting ones and lets the threads end after their
    /// current job.
    pub fn stop(&self) {
        let dropped = {
            let mut state = self.shared.lock();
            state.stopped = true;
            state.order.clear();
            state.queued = 0;
            std::mem::take(&mut state.lanes)
        };
        // Dropping the jobs outside the lock tells their callers `Stopped`.
        drop(dropped);
        self.shared.work.notify_all();
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state completes under the lock (jobs run outside it): a
        // panic elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The next job to run: the first lane in turn with a job and a thread to spare.
    fn next(&mut self) -> Option<(String, Instant, Job)> {
        for _ in 0..self.order.len() {
            let name = self.order.pop_front()?;
            let Some(lane) = self.lanes.get_mut(&name) else {
                continue;
            };
            if lane.running >= LANE_SLOTS {
                self.order.push_back(name);
                continue;
            }
            let Some((queued_at, job)) = lane.jobs.pop_front() else {
                continue;
            };
            lane.running += 1;
            if !lane.jobs.is_empty() {
                self.order.push_back(name.clone());
            }
            self.queued -= 1;
            return Some((name, queued_at, job));
        }
        None
    }

    /// Whether a queued job could run now (its lane has a thread to spare).
    fn runnable(&self) -> bool {
        (self.order.iter())
            .filter_map(|name| self.lanes.get(name))
            .any(|lane| lane.running < LANE_SLOTS && !lane.jobs.is_empty())
    }

    /// A job of `name` ended.
    fn finished(&mut self, name: &str) {
        if let Some(lane) = self.lanes.get_mut(name) {
            lane.running = lane.running.saturating_sub(1);
            if lane.running == 0 && lane.jobs.is_empty() {
                self.lanes.remove(name);
            }
        }
    }
}

/// Gives the calling (plugin) thread only what the node's own threads leave of the CPU.
///
/// - `SCHED_IDLE`: a node thread that wakes preempts it at once. A nice value alone (10, 19)
///   left the node's threads waiting for the plugin thread's time slice on every wake-up:
///   with a looping validator on both cores, the p99 outside its prefix was 3-7x its
///   baseline; with `SCHED_IDLE` and the next point, within about 2x (BENCHMARKS.md).
/// - affinity to the upper half of the CPUs the node may use (at least one): the lower
///   half never runs a plugin call, so the node's threads always find a CPU free of them.
///   Plugins get at most half of the node's CPU; calls are short, and a lane holds at
///   most [`LANE_SLOTS`] threads anyway.
///
/// The threads share locks with the node only briefly (the executor's queue, the log
/// writer): a plugin thread preempted inside one delays its waiter until it runs again,
/// which the idle CPU time a waiting node thread leaves makes soon.
///
/// A refusal (a container that forbids either) falls back to [`PLUGIN_NICE`], then to
/// nothing, and is logged.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::debug!(error = ?e, "SCHED_IDLE refused for a plugin thread; lowering its nice value");
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), PLUGIN_NICE) {
            tracing::warn!(error = %e, "cannot lower the priority of a plugin thread");
        }
    }
    if let Some(cpus) = rustix::thread::sched_getaffinity(None)
        .ok()
        .and_then(|allowed| plugin_cpus(&allowed))
        && let Err(e) = rustix::thread::sched_setaffinity(None, &cpus)
    {
        tracing::warn!(error = %e, "cannot keep a plugin thread to half of the CPUs");
    }
}

/// The upper half of `allowed` (rounded down, at least one CPU); `None` when `allowed`
/// has a single CPU.
fn plugin_cpus(allowed: &rustix::thread::CpuSet) -> Option<rustix::thread::CpuSet> {
    let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&c| allowed.is_set(c))
        .collect();
    if cpus.len() < 2 {
        return None;
    }
    let mut upper = rustix::thread::CpuSet::new();
    for &c in &cpus[cpus.len().div_ceil(2)..] {
        upper.set(c);
    }
    Some(upper)
}

/// One plugin thread: runs jobs until the executor stops.
fn work(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.stopped {
            return;
        }
        let Some((lane, queued_at, job)) = state.next() else {
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        // Jobs this thread cannot take now may run on another: pass the wake-up on. (Waking
        // every idle thread after each job woke seven threads per call for nothing, at
        // thousands of calls a second.)
        let more = state.runnable();
        drop(state);
        if more {
            shared.work.notify_one();
        }
        let run = queued_at.elapsed() <= shared.queue_wait;
        // A panic is a bug, but it must cost one answer, not a plugin thread.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(run))).is_err() {
            tracing::error!(lane, "a plugin job panicked");
        }
        state = shared.lock();
        // A lane at its share may now take another thread: this one, as it loops.
        state.finished(&lane);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;

    use super::*;
    use crate::testing::wait_until_async;

    fn cpus(list: &[usize]) -> rustix::thread::CpuSet {
        let mut set = rustix::thread::CpuSet::new();
        for &c in list {
            set.set(c);
        }
        set
    }

    #[test]
    fn plugins_keep_to_the_upper_half_of_the_cpus() {
        assert_eq!(plugin_cpus(&cpus(&[0])), None, "one CPU is shared");
        assert_eq!(plugin_cpus(&cpus(&[0, 1])), Some(cpus(&[1])));
        assert_eq!(plugin_cpus(&cpus(&[0, 1, 2])), Some(cpus(&[2])));
        assert_eq!(plugin_cpus(&cpus(&[2, 3, 6, 7])), Some(cpus(&[6, 7])));
    }

    /// Plugin calls run `SCHED_IDLE` (preempted by any node thread that wakes) and, on a
    /// machine of more than one CPU, never on the lower half of the node's CPUs.
    #[tokio::test]
    async fn plugin_threads_run_at_idle_priority_on_half_of_the_cpus() {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let executor = Executor::start(Duration::from_secs(60)).expect("threads");
        let (policy, affinity) = executor
            .run("probe", || {
                let policy = thread_priority::thread_schedule_policy().expect("policy");
                (
                    policy,
                    rustix::thread::sched_getaffinity(None).expect("affinity"),
                )
            })
            .await
            .expect("ran");
        assert_eq!(
            policy,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
        );
        let node = rustix::thread::sched_getaffinity(None).expect("affinity");
        assert_eq!(Some(affinity), plugin_cpus(&node).or(Some(node)));
    }

    /// A job that blocks until told to end; counts how many are running.
    fn blocker(
        running: &Arc<AtomicUsize>,
    ) -> (impl FnOnce() -> usize + Send + 'static, mpsc::Sender<()>) {
        let (tx, rx) = mpsc::channel::<()>();
        let running = running.clone();
        let job = move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = rx.recv();
            running.fetch_sub(1, Ordering::SeqCst);
            now
        };
        (job, tx)
    }

    /// A lane that holds its share of threads with jobs that never end leaves the other
    /// threads to other lanes: their jobs run at once.
    #[tokio::test]
    async fn a_busy_lane_never_takes_every_thread() {
        let executor = Arc::new(Executor::start(Duration::from_secs(60)).expect("threads"));
        let running = Arc::new(AtomicUsize::new(0));
        let mut releases = Vec::new();
        let mut hostile = Vec::new();
        for _ in 0..CALL_SLOTS * 3 {
            let (job, release) = blocker(&running);
            releases.push(release);
            let executor = executor.clone();
            hostile.push(tokio::spawn(async move { executor.run("spin", job).await }));
        }
        wait_until_async("the busy lane to hold its share", || {
            running.load(Ordering::SeqCst) == LANE_SLOTS
        })
        .await;
        // Another lane is served while the busy one waits for its jobs to end.
        for i in 0..3 {
            assert_eq!(executor.run("calm", move || i * 2).await, Ok(i * 2));
        }
        assert_eq!(running.load(Ordering::SeqCst), LANE_SLOTS);
        drop(releases);
        for h in hostile {
            let ran = h.await.expect("task").expect("ran");
            assert!(ran <= LANE_SLOTS, "{ran} jobs of one lane ran at once");
        }
    }

    #[tokio::test]
    async fn a_full_lane_is_refused_at_once_and_stop_refuses_the_waiting() {
        let executor = Arc::new(Executor::start(Duration::from_secs(60)).expect("threads"));
        let running = Arc::new(AtomicUsize::new(0));
        let mut releases = Vec::new();
        let mut waiting = Vec::new();
        // The running jobs first, then the queued ones: submitted in one burst, the queue
        // could fill before the threads take the first jobs out of it.
        for (count, running_then, queued_then) in [
            (LANE_SLOTS, LANE_SLOTS, 0),
            (LANE_QUEUE, LANE_SLOTS, LANE_QUEUE),
        ] {
            for _ in 0..count {
                let (job, release) = blocker(&running);
                releases.push(release);
                let executor = executor.clone();
                waiting.push(tokio::spawn(async move { executor.run("spin", job).await }));
            }
            wait_until_async("the lane to fill", || {
                running.load(Ordering::SeqCst) == running_then
                    && executor.shared.lock().queued == queued_then
            })
            .await;
        }
        assert_eq!(executor.run("spin", || 0).await, Err(Refused::Full));
        executor.stop();
        assert_eq!(executor.run("calm", || 0).await, Err(Refused::Stopped));
        drop(releases);
        let mut stopped = 0;
        for h in waiting {
            if h.await.expect("task") == Err(Refused::Stopped) {
                stopped += 1;
            }
        }
        assert_eq!(
            stopped, LANE_QUEUE,
            "every waiting job is told the node stops"
        );
    }

    #[tokio::test]
    async fn a_job_that_waited_past_its_queue_wait_does_not_run() {
        let wait = Duration::from_millis(300);
        let executor = Arc::new(Executor::start(wait).expect("threads"));
        let running = Arc::new(AtomicUsize::new(0));
        let mut releases = Vec::new();
        let mut busy = Vec::new();
        for _ in 0..LANE_SLOTS {
            let (job, release) = blocker(&running);
            releases.push(release);
            let executor = executor.clone();
            busy.push(tokio::spawn(async move { executor.run("spin", job).await }));
        }
        wait_until_async("the lane to be busy", || {
            running.load(Ordering::SeqCst) == LANE_SLOTS
        })
        .await;
        let late = {
            let executor = executor.clone();
            tokio::spawn(async move { executor.run("spin", || 7).await })
        };
        wait_until_async("the job to queue", || executor.shared.lock().queued == 1).await;
        // Not synchronisation: the condition under test is time passing in the queue.
        tokio::time::sleep(wait * 2).await;
        drop(releases);
        assert_eq!(late.await.expect("task"), Err(Refused::Expired));
        for h in busy {
            assert!(h.await.expect("task").is_ok());
        }
    }
}
