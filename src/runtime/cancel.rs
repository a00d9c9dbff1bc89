//! Blocking work that a stop must be able to cut short.
//!
//! A session thread sometimes has to wait for something that offers no way to
//! be interrupted: a name lookup (the system resolver has no cancellation), a
//! dial through a proxy, the Extended ORPort handshake. Such work runs on a
//! helper thread while the session thread waits for either its result or the
//! session's stop waker. A stopped session returns at once; the helper
//! finishes on its own (each kind of work is bounded by its own timeout) and
//! its result is dropped.

use crate::sys::{self, Waker};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

/// Runs `work` on a helper thread and returns its result, or `Interrupted`
/// as soon as `cancel` is woken.
pub fn run_cancellable<T: Send + 'static>(
    cancel: &Waker,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let done = Arc::new(Waker::new()?);
    let slot = Arc::new(Mutex::new(None));
    let (helper_done, helper_slot) = (done.clone(), slot.clone());
    std::thread::Builder::new()
        .name("water-blocking".into())
        .spawn(move || {
            let result = work();
            *helper_slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
            helper_done.wake();
        })?;
    sys::wait(&mut [], &[&done, cancel], None)?;
    // A result that is there wins over a stop that came at the same time.
    let result = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    result.unwrap_or_else(|| Err(io::Error::new(io::ErrorKind::Interrupted, "stopped")))
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
}
