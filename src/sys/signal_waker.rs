//! Wake-ups without a descriptor (Linux, Android).
//!
//! A [`Waker`] is a flag plus the thread currently waiting on it. Waking
//! sets the flag and, if a thread is waiting, sends it [`WAKE_SIGNAL`] with
//! `pthread_kill`. A thread that waits keeps that signal blocked except
//! inside `ppoll`, whose signal mask unblocks it for exactly the duration of
//! the wait, atomically: a wake that lands between the flag check and the
//! `ppoll` stays pending and ends the `ppoll` at once with `EINTR`, so no
//! wake-up is lost, and the signal can never interrupt anything else.
//!
//! Waking costs a signal instead of a descriptor per session (an eventfd
//! before): 10,000 connections hold 10,000 fewer descriptors, and an idle
//! session costs nothing at all until something happens on its sockets.

use super::{PollFd, PollFlags, Waited};
use nix::errno::Errno;
use nix::poll::{ppoll, PollFd as OsPollFd, PollFlags as OsPollFlags};
use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::time::TimeSpec;
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Descriptors each [`Waker`] holds: none.
pub const WAKER_DESCRIPTORS: u64 = 0;
use std::time::{Duration, Instant};

/// The signal that ends a waiting thread's `ppoll`. `SIGURG`, as the Go
/// runtime uses for preempting its threads: its default action is to ignore
/// it, nothing sends it to a pluggable transport, and the kernel raises it
/// only for out-of-band data on a socket whose owner was set with
/// `F_SETOWN`, which this process never does. One arriving from outside
/// runs the no-op handler and is otherwise harmless.
const WAKE_SIGNAL: Signal = Signal::SIGURG;

/// A wake-up signal a [`wait`] can include: woken from [`Waker::wake`]
/// until [`Waker::drain`]. One thread at a time waits on a given waker (a
/// session's thread on its stop signal).
#[derive(Debug)]
pub struct Waker {
    woken: AtomicBool,
    /// The thread inside a [`wait`] on this waker, if any. Set and cleared
    /// by that thread under the lock, and signalled under it: a thread is
    /// never signalled after it stopped waiting (it may have exited since,
    /// and signalling a thread that is gone is undefined behaviour).
    waiter: Mutex<Option<ThreadId>>,
}

impl Waker {
    /// Creates a new, not yet signalled, waker.
    pub fn new() -> io::Result<Self> {
        install_handler()?;
        Ok(Self {
            woken: AtomicBool::new(false),
            waiter: Mutex::new(None),
        })
    }

    /// Signals the waker; any current or future wait that includes it returns.
    pub fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        if let Some(thread) = *self.waiter() {
            // Fails only if the thread is gone, which the lock rules out.
            let _ = pthread_kill(thread.pthread(), WAKE_SIGNAL);
        }
    }

    /// Resets the waker to not signalled, so that a wait including it blocks
    /// again until the next [`Waker::wake`].
    pub fn drain(&self) {
        self.woken.store(false, Ordering::SeqCst);
    }

    /// Whether [`Waker::wake`] has been called since the last drain.
    pub fn is_woken(&self) -> bool {
        self.woken.load(Ordering::SeqCst)
    }

    fn waiter(&self) -> MutexGuard<'_, Option<ThreadId>> {
        self.waiter.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Waits until one of `fds` is ready, one of `wakers` is woken, or
/// `timeout` passes (`None`: no limit). A waker stays woken until drained,
/// so a wake that came before the call ends it at once (after one look at
/// `fds`, so that readiness is reported beside the wake).
pub fn wait(
    fds: &mut [PollFd<'_>],
    wakers: &[&Waker],
    timeout: Option<Duration>,
) -> io::Result<Waited> {
    let mask = wait_mask()?;
    let deadline = timeout.map(|t| Instant::now() + t);
    // Bits `nix` has no name for (`POLLRDHUP`) are passed through as they are.
    let mut os: Vec<OsPollFd<'_>> = fds
        .iter()
        .map(|p| OsPollFd::new(p.fd, OsPollFlags::from_bits_retain(p.events.bits() as _)))
        .collect();
    // Registered before the flags are checked: a wake after the check finds
    // this thread and signals it.
    let _registered = Registered::new(wakers);
    loop {
        let woken = wakers.iter().any(|w| w.is_woken());
        let left = match woken {
            true => Some(Duration::ZERO),
            false => deadline.map(|d| d.saturating_duration_since(Instant::now())),
        };
        match ppoll(&mut os, left.map(TimeSpec::from_duration), Some(mask)) {
            Ok(_) => {
                let mut ready = 0;
                for (ours, theirs) in fds.iter_mut().zip(&os) {
                    ours.revents = revents(theirs);
                    ready += usize::from(!ours.revents.is_empty());
                }
                let woken = woken || wakers.iter().any(|w| w.is_woken());
                return Ok(Waited { ready, woken });
            }
            // The wake signal (or another one): look at the flags again.
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// What the kernel reported for one entry. `nix` reports nothing
/// (`None`) when a bit it has no name for is set, and the only such bit a
/// wait asks for is `POLLRDHUP` (the peer shut its side): the kernel sets
/// it together with `POLLIN` (end-of-stream is readable), so that is what
/// such an entry reports. An error or full hang-up there shows on the next
/// read.
fn revents(entry: &OsPollFd<'_>) -> PollFlags {
    match entry.revents() {
        Some(known) => PollFlags::from_bits_retain(known.bits() as _),
        None => PollFlags::IN | PollFlags::RDHUP,
    }
}

/// A thread's `pthread_t`, kept as a plain number. `pthread_t` is an integer
/// with glibc and Bionic but a pointer with musl, which would make every
/// [`Waker`] neither `Send` nor `Sync` there; the value is only ever handed
/// back to `pthread_kill`, never dereferenced, so a number loses nothing.
#[derive(Debug, Clone, Copy)]
struct ThreadId(usize);

impl ThreadId {
    fn current() -> Self {
        // An `as` cast from either representation (integer or pointer).
        #[allow(clippy::unnecessary_cast)]
        Self(pthread_self() as usize)
    }

    fn pthread(self) -> Pthread {
        #[allow(clippy::unnecessary_cast)]
        let thread = self.0 as Pthread;
        thread
    }
}

/// This thread as the waiter of some wakers, until dropped.
struct Registered<'a>(&'a [&'a Waker]);

impl<'a> Registered<'a> {
    fn new(wakers: &'a [&'a Waker]) -> Self {
        let me = ThreadId::current();
        for w in wakers {
            *w.waiter() = Some(me);
        }
        Self(wakers)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        for w in self.0 {
            *w.waiter() = None;
        }
    }
}

thread_local! {
    /// This thread's signal mask during a wait: its usual mask without
    /// [`WAKE_SIGNAL`]. `None` until the thread first waits, which blocks
    /// the signal for it from then on.
    static WAIT_MASK: Cell<Option<SigSet>> = const { Cell::new(None) };
}

/// The mask to wait with; blocks [`WAKE_SIGNAL`] outside waits on first use.
fn wait_mask() -> io::Result<SigSet> {
    if let Some(mask) = WAIT_MASK.get() {
        return Ok(mask);
    }
    install_handler()?;
    let mut wake = SigSet::empty();
    wake.add(WAKE_SIGNAL);
    let mut mask = wake.thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    mask.remove(WAKE_SIGNAL);
    WAIT_MASK.set(Some(mask));
    Ok(mask)
}

/// Installs the process-wide handler for [`WAKE_SIGNAL`], once. Only a
/// handled signal interrupts `ppoll` (an ignored one is discarded); the
/// handler sets a flag nobody reads, which is all `signal-hook` lets safe
/// code install and all a wake-up needs.
fn install_handler() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            signal_hook::flag::register(WAKE_SIGNAL as i32, Arc::new(AtomicBool::new(false)))
                .map(drop)
                .map_err(|e| format!("cannot install the wake-up signal handler: {e}"))
        })
        .clone()
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_wake_ends_a_wait_from_another_thread() {
        let waker = Arc::new(Waker::new().unwrap());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let remote = waker.clone();
        let wake = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            remote.wake();
        });
        let mut fds = [PollFd::from_borrowed_fd(a.as_fd(), PollFlags::IN)];
        let waited = wait(&mut fds, &[&waker], None).unwrap();
        assert_eq!(
            waited,
            Waited {
                ready: 0,
                woken: true
            }
        );
        wake.join().unwrap();
        // Still woken until drained: a wait returns at once.
        assert!(wait(&mut fds, &[&waker], None).unwrap().woken);
        waker.drain();
        let waited = wait(&mut fds, &[&waker], Some(Duration::from_millis(10))).unwrap();
        assert_eq!(
            waited,
            Waited {
                ready: 0,
                woken: false
            }
        );
    }

    #[test]
    fn a_peer_that_shut_its_side_is_reported_as_a_hang_up() {
        let waker = Waker::new().unwrap();
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        b.shutdown(std::net::Shutdown::Write).unwrap();
        let mut fds = [PollFd::from_borrowed_fd(
            a.as_fd(),
            PollFlags::IN | PollFlags::RDHUP,
        )];
        let waited = wait(&mut fds, &[&waker], None).unwrap();
        assert_eq!(
            waited,
            Waited {
                ready: 1,
                woken: false
            }
        );
        assert!(fds[0].revents().contains(PollFlags::IN | PollFlags::RDHUP));
    }

    #[test]
    fn a_pending_wake_signal_is_not_a_wake() {
        // A signal left pending from an earlier wait (or sent from outside)
        // interrupts the next ppoll, which must go on waiting.
        let waker = Waker::new().unwrap();
        let _ = wait(&mut [], &[&waker], Some(Duration::ZERO)).unwrap();
        pthread_kill(pthread_self(), WAKE_SIGNAL).unwrap();
        let started = Instant::now();
        let waited = wait(&mut [], &[&waker], Some(Duration::from_millis(30))).unwrap();
        assert!(!waited.woken);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
