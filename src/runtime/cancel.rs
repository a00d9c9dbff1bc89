//! Work that a stop must be able to cut short.
//!
//! A session thread sometimes has to wait for something that offers no way to
//! be interrupted: a name lookup (the system resolver has no cancellation), a
//! dial through a proxy. Such work runs on a helper thread
//! ([`run_cancellable`]) while the session thread waits for either its result
//! or the session's stop waker. A stopped session returns at once; the helper
//! finishes on its own (each kind of work is bounded by its own timeout) and
//! its result is dropped.
//!
//! Asynchronous work (a server's connection to its upstream: tor's ORPort,
//! the Extended ORPort handshake, a standalone server's forward target)
//! needs no thread of its own: it runs as a task on the tokio runtime
//! ([`run_task_cancellable`]), which a stop aborts. A module's own dial to an
//! address literal needs neither: it is a non-blocking connect on the
//! session thread, waited on beside the stop signal (`net::connect_one`).

use crate::sys::{self, Waker};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

/// Where the work leaves its result, and the waker that says it did.
struct Outcome<T> {
    done: Waker,
    result: Mutex<Option<io::Result<T>>>,
}

impl<T> Outcome<T> {
    fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            done: Waker::new()?,
            result: Mutex::new(None),
        }))
    }

    fn set(&self, result: io::Result<T>) {
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        self.done.wake();
    }

    /// Waits for the result or a stop; `None` when stopped first.
    fn wait(&self, cancel: &Waker) -> io::Result<Option<io::Result<T>>> {
        sys::wait(&mut [], &[&self.done, cancel], None)?;
        // A result that is there wins over a stop that came at the same time.
        Ok(self
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take())
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "stopped")
}

/// Runs `work` on a helper thread and returns its result, or `Interrupted`
/// as soon as `cancel` is woken.
pub fn run_cancellable<T: Send + 'static>(
    cancel: &Waker,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let outcome = Outcome::new()?;
    let helper = outcome.clone();
    std::thread::Builder::new()
        .name("water-blocking".into())
        .spawn(move || helper.set(work()))?;
    outcome.wait(cancel)?.unwrap_or_else(|| Err(stopped()))
}

/// Runs `work` as a task on the tokio runtime behind `tokio` and returns its
/// result, or `Interrupted` as soon as `cancel` is woken, in which case the
/// task is aborted. Must not be called from inside that runtime's own
/// threads' tasks (it blocks).
pub fn run_task_cancellable<T: Send + 'static>(
    cancel: &Waker,
    tokio: &tokio::runtime::Handle,
    work: impl Future<Output = io::Result<T>> + Send + 'static,
) -> io::Result<T> {
    let outcome = Outcome::new()?;
    let task = outcome.clone();
    let handle = tokio.spawn(async move { task.set(work.await) });
    match outcome.wait(cancel)? {
        Some(result) => result,
        None => {
            handle.abort();
            Err(stopped())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn returns_the_result_of_the_work() {
        let cancel = Waker::new().unwrap();
        assert_eq!(run_cancellable(&cancel, || Ok(7)).unwrap(), 7);
        let err = run_cancellable::<()>(&cancel, || Err(io::Error::other("no"))).unwrap_err();
        assert_eq!(err.to_string(), "no");
    }

    #[test]
    fn a_stop_ends_the_wait_before_the_work() {
        let cancel = Arc::new(Waker::new().unwrap());
        let waker = cancel.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
        });
        let started = Instant::now();
        // The work waits until the test ends: only the stop can end the wait.
        let err = run_cancellable(&cancel, move || {
            let _ = rx.recv();
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(tx);
    }

    #[test]
    fn a_task_returns_its_result_or_is_aborted_by_a_stop() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cancel = Arc::new(Waker::new().unwrap());
        let got = run_task_cancellable(&cancel, rt.handle(), async { Ok(7) }).unwrap();
        assert_eq!(got, 7);

        let (mut tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waker = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
        });
        // The task waits until it is dropped: only the stop ends the wait,
        // and the abort drops the task (and with it the receiver).
        let err = run_task_cancellable(&cancel, rt.handle(), async move {
            let _ = rx.await;
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        let closed =
            rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), tx.closed()).await });
        assert!(closed.is_ok(), "the aborted task was not dropped");
    }
}
