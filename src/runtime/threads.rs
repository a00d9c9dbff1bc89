//! The threads that run sessions.
//!
//! `watm_start_v1` blocks for a connection's whole life, so every session
//! needs an OS thread. Starting one costs far more than the rest of a
//! session's setup (a fresh stack, and the signal stacks Rust and wasmtime
//! install per thread), so a thread whose session ended waits a while for
//! the next one instead of exiting. Idle threads are bounded in number and
//! in how long they wait, so a burst leaves nothing behind for long.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

type Task = Box<dyn FnOnce() + Send + 'static>;

/// A parked thread's mailbox.
#[derive(Default)]
struct Slot {
    task: Mutex<Option<Task>>,
    ready: Condvar,
}

pub(crate) struct Threads {
    idle: Mutex<Vec<Arc<Slot>>>,
    /// How long an idle thread waits for work before exiting.
    keepalive: Duration,
    /// Most threads kept waiting at once.
    max_idle: usize,
    stack_size: usize,
}

impl Threads {
    pub fn new(stack_size: usize, max_idle: usize, keepalive: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            keepalive,
            max_idle,
            stack_size,
        })
    }

    /// Runs `task` on an idle thread, or on a new one.
    pub fn execute(self: &Arc<Self>, task: Task) -> std::io::Result<()> {
        let parked = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        if let Some(slot) = parked {
            *slot.task.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
            slot.ready.notify_one();
            return Ok(());
        }
        let pool = self.clone();
        std::thread::Builder::new()
            .name("watm-session".into())
            .stack_size(self.stack_size)
            .spawn(move || pool.work(task))
            .map(drop)
    }

    fn work(self: Arc<Self>, first: Task) {
        first();
        let slot = Arc::new(Slot::default());
        while let Some(task) = self.park(&slot) {
            task();
        }
    }

    /// Waits for the next task; `None` when the thread should exit.
    fn park(&self, slot: &Arc<Slot>) -> Option<Task> {
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() >= self.max_idle {
                return None;
            }
            idle.push(slot.clone());
        }
        let mut task = slot.task.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = std::time::Instant::now() + self.keepalive;
        loop {
            if let Some(t) = task.take() {
                return Some(t);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                // Leave the idle list, unless a caller already took this slot:
                // then its task is on the way and must be run.
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(i) = idle.iter().position(|s| Arc::ptr_eq(s, slot)) {
                    idle.swap_remove(i);
                    let last = idle.is_empty();
                    drop(idle);
                    // The last parked thread leaving means no session has started for
                    // a whole keep-alive: whatever burst came before is over and its
                    // sessions' memory freed, so the heap gives its free pages back now
                    // rather than keeping them until the next burst.
                    if last {
                        tracing::debug!("no session for {:?}: trimming the heap", self.keepalive);
                        crate::sys::trim_heap();
                    }
                    return None;
                }
                drop(idle);
                while task.is_none() {
                    task = slot
                        .ready
                        .wait(task)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                continue;
            }
            task = slot
                .ready
                .wait_timeout(task, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Threads waiting for work right now.
    #[cfg(test)]
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn threads_are_reused_and_expire() {
        let pool = Threads::new(256 << 10, 4, Duration::from_millis(200));
        let (tx, rx) = mpsc::channel();
        let tx1 = tx.clone();
        pool.execute(Box::new(move || {
            tx1.send(std::thread::current().id()).unwrap()
        }))
        .unwrap();
        let first = rx.recv().unwrap();
        // Wait until the thread has parked, then the next task reuses it.
        while pool.idle_count() == 0 {
            std::thread::yield_now();
        }
        pool.execute(Box::new(move || {
            tx.send(std::thread::current().id()).unwrap()
        }))
        .unwrap();
        assert_eq!(rx.recv().unwrap(), first);
        // With no work the idle thread leaves after its keepalive.
        while pool.idle_count() == 0 {
            std::thread::yield_now();
        }
        let start = std::time::Instant::now();
        while pool.idle_count() > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "idle thread never expired"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn idle_threads_are_capped() {
        let pool = Threads::new(256 << 10, 1, Duration::from_secs(30));
        let (tx, rx) = mpsc::channel::<()>();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..2 {
            let (b, tx) = (barrier.clone(), tx.clone());
            pool.execute(Box::new(move || {
                b.wait();
                tx.send(()).unwrap();
            }))
            .unwrap();
        }
        barrier.wait();
        rx.recv().unwrap();
        rx.recv().unwrap();
        let start = std::time::Instant::now();
        // Two threads finished; only one may stay parked.
        loop {
            let n = pool.idle_count();
            assert!(n <= 1);
            if n == 1 || start.elapsed() > Duration::from_secs(5) {
                break;
            }
            std::thread::yield_now();
        }
        assert_eq!(pool.idle_count(), 1);
    }
}
