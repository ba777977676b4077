//! A fixed pool of scanning threads behind a bounded queue.
//!
//! libclamav scans are blocking and CPU-bound, so they run on plain OS
//! threads (`max-threads`), never on the async runtime. At most `max-queue`
//! jobs wait; [`ScanPool::submit`] fails at once when the queue is full so
//! the caller can answer the client instead of hanging. Each thread
//! publishes what it is doing in a [`TaskSlot`], which STATS reads.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::ipc::observe::{QueueWaitHistogram, QUEUE_WAIT_BOUNDS_US};

/// A unit of work; it receives the slot of the thread that runs it.
pub type Job = Box<dyn FnOnce(&TaskSlot) + Send + 'static>;

/// The queue was full (or the pool is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// What one thread is doing, for STATS.
pub struct TaskSlot {
    current: Mutex<Option<Task>>,
    idle_since: Mutex<Instant>,
}

impl Default for TaskSlot {
    fn default() -> Self {
        TaskSlot {
            current: Mutex::new(None),
            idle_since: Mutex::new(Instant::now()),
        }
    }
}

#[derive(Clone)]
pub struct Task {
    pub command: &'static str,
    pub started: Instant,
    pub filename: String,
}

impl TaskSlot {
    pub fn begin(&self, command: &'static str, filename: &str) {
        *lock(&self.current) = Some(Task {
            command,
            started: Instant::now(),
            filename: filename.to_string(),
        });
    }

    /// Updates the file name while a walk moves from file to file.
    pub fn set_file(&self, filename: &str) {
        if let Some(t) = lock(&self.current).as_mut() {
            t.filename.clear();
            t.filename.push_str(filename);
        }
    }

    fn clear(&self) {
        *lock(&self.current) = None;
        *lock(&self.idle_since) = Instant::now();
    }

    fn snapshot(&self) -> Option<Task> {
        lock(&self.current).clone()
    }
}

struct Queue {
    /// When each job was queued, and whether its wait counts in the
    /// metrics (the health probe's does not).
    jobs: VecDeque<(Instant, bool, Job)>,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    max_queue: usize,
    slots: Vec<TaskSlot>,
    /// How long jobs waited in the queue (the metrics' queue wait).
    waited: Mutex<QueueWaitHistogram>,
}

/// The pool. Cloning shares it.
#[derive(Clone)]
pub struct ScanPool {
    shared: Arc<Shared>,
}

/// A moment's view of the pool, for STATS.
pub struct PoolSnapshot {
    pub threads: usize,
    pub busy: usize,
    pub queued: usize,
    /// min, max and average wait of queued jobs.
    pub waits: Option<(Duration, Duration, Duration)>,
    pub tasks: Vec<Task>,
    /// How long each idle thread has been idle.
    pub idle: Vec<Duration>,
    /// How long every job so far waited before a thread took it.
    pub wait_histogram: QueueWaitHistogram,
}

impl ScanPool {
    pub fn new(threads: usize, max_queue: usize) -> std::io::Result<ScanPool> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(max_queue),
                closed: false,
            }),
            ready: Condvar::new(),
            max_queue,
            slots: (0..threads).map(|_| TaskSlot::default()).collect(),
            waited: Mutex::new(QueueWaitHistogram::default()),
        });
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("scan-{i}"))
                .spawn(move || worker(&shared, i))?;
        }
        Ok(ScanPool { shared })
    }

    /// Queues a job, or fails at once if `max-queue` jobs are already waiting.
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        self.submit_or_return(job).map_err(|_| Busy)
    }

    /// Like [`submit`](Self::submit), but hands a refused job back to the caller.
    pub fn submit_or_return(&self, job: Job) -> Result<(), Job> {
        self.queue(job, true)
    }

    /// Like [`submit`](Self::submit), for the health probe: its wait is not
    /// a scan's and is not counted in the queue wait metrics.
    pub fn submit_probe(&self, job: Job) -> Result<(), Busy> {
        self.queue(job, false).map_err(|_| Busy)
    }

    fn queue(&self, job: Job, metered: bool) -> Result<(), Job> {
        let mut q = lock(&self.shared.queue);
        if q.closed || q.jobs.len() >= self.shared.max_queue {
            return Err(job);
        }
        q.jobs.push_back((Instant::now(), metered, job));
        drop(q);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// Runs `f` on the pool and waits for its result without blocking the runtime.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce(&TaskSlot) -> T + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Box::new(move |slot| {
            let _ = tx.send(f(slot));
        }))?;
        // The sender is dropped without a value only if the job panicked.
        rx.await.map_err(|_| Busy)
    }

    pub fn threads(&self) -> usize {
        self.shared.slots.len()
    }

    /// Stops the threads once the queue is empty.
    pub fn close(&self) {
        lock(&self.shared.queue).closed = true;
        self.shared.ready.notify_all();
    }

    pub fn snapshot(&self) -> PoolSnapshot {
        let now = Instant::now();
        let (queued, waits) = {
            let q = lock(&self.shared.queue);
            let waits: Vec<Duration> = q.jobs.iter().map(|(t, _, _)| now - *t).collect();
            let summary = if waits.is_empty() {
                None
            } else {
                let min = *waits.iter().min().unwrap_or(&Duration::ZERO);
                let max = *waits.iter().max().unwrap_or(&Duration::ZERO);
                let avg = waits.iter().sum::<Duration>() / waits.len() as u32;
                Some((min, max, avg))
            };
            (q.jobs.len(), summary)
        };
        let mut tasks = Vec::new();
        let mut idle = Vec::new();
        for slot in &self.shared.slots {
            match slot.snapshot() {
                Some(t) => tasks.push(t),
                None => idle.push(now.saturating_duration_since(*lock(&slot.idle_since))),
            }
        }
        PoolSnapshot {
            threads: self.shared.slots.len(),
            busy: tasks.len(),
            queued,
            waits,
            tasks,
            idle,
            wait_histogram: *lock(&self.shared.waited),
        }
    }
}

fn worker(shared: &Shared, index: usize) {
    let slot = &shared.slots[index];
    loop {
        let job = {
            let mut q = lock(&shared.queue);
            loop {
                if let Some((queued_at, metered, job)) = q.jobs.pop_front() {
                    if metered {
                        let waited =
                            u64::try_from(queued_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                        lock(&shared.waited).observe(&QUEUE_WAIT_BOUNDS_US, waited);
                    }
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared
                    .ready
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        // A panicking job must not take the thread (and its slot) with it.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(slot)));
        slot.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn full_queue_is_refused_at_once() {
        let pool = ScanPool::new(1, 2).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        pool.submit(Box::new(move |_| {
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
        }))
        .unwrap();
        started_rx.recv().unwrap();
        pool.submit(Box::new(|_| {})).unwrap();
        pool.submit(Box::new(|_| {})).unwrap();
        assert_eq!(pool.submit(Box::new(|_| {})), Err(Busy));
        assert_eq!(pool.snapshot().queued, 2);
        gate_tx.send(()).unwrap();
    }

    #[test]
    fn slots_show_running_tasks() {
        let pool = ScanPool::new(2, 4).unwrap();
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        let (started_tx, started_rx) = mpsc::channel::<()>();
        pool.submit(Box::new(move |slot| {
            slot.begin("SCAN", "/x");
            started_tx.send(()).unwrap();
            gate_rx.recv().unwrap();
        }))
        .unwrap();
        started_rx.recv().unwrap();
        let snap = pool.snapshot();
        assert_eq!(snap.busy, 1);
        assert_eq!(snap.tasks[0].filename, "/x");
        gate_tx.send(()).unwrap();
    }
}
