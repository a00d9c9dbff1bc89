//! Writes to guest sockets, which always complete.
//!
//! Modules built with the reference TinyGo v1 SDK treat a short `fd_write`
//! (fewer bytes taken than asked) as fatal, and retry `EAGAIN` in a tight
//! loop. So a write here takes all of the guest's bytes: when the kernel
//! takes only part, the host waits for room and writes the rest before it
//! returns, in blocking and non-blocking mode alike. `EAGAIN` comes back only
//! from a non-blocking write that could not take a single byte.
//!
//! Every wait includes the instance's stop signal (a forced stop ends it)
//! and is bounded by the network-stall limit: a write that makes no
//! progress for that long returns what it wrote so far, or `ETIMEDOUT` when
//! that is nothing.
//!
//! A module that has polled any of its sockets for writability (FD_WRITE)
//! is the exception: such a module handles backpressure itself, so its
//! non-blocking writes get what the kernel took, at once. Waiting there
//! would take away its chance to serve the other direction meanwhile: two
//! such modules writing toward each other, or one in front of a peer that
//! reads only while its writes back go through (an echo), would each wait
//! for the other to read, for good.
//!
//! A module that retries a refused write with nothing in between (no
//! `poll_oneoff`, no data moved) is spinning. From its second
//! attempt on, a refused write first waits up to [`SPIN_WAIT`] for room, so
//! such a loop costs a few calls per second instead of a core, and it fails
//! with `ETIMEDOUT` once it has spun for the network-stall limit. A module
//! that polls for writability after the first `EAGAIN`, as a well-behaved
//! non-blocking module does, never meets that wait.

use super::{Entry, Errno, Fail, HostResult, StopSignal, WasiCtx};
use crate::sys::{self, BorrowedFd, PollFd, PollFlags};
use std::io::IoSlice;
use std::time::{Duration, Instant};

/// How long a spinning module's refused write waits for room before it is
/// refused again. Long enough that the loop is cheap, short enough that a
/// module doing something else between its attempts still gets to it.
pub(super) const SPIN_WAIT: Duration = Duration::from_millis(50);

/// What a write does when the socket has no room for a single byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Return `EAGAIN` at once (non-blocking mode).
    Refuse,
    /// Wait up to this long for room, then return `EAGAIN` (non-blocking
    /// mode, spinning module).
    WaitThenRefuse(Duration),
    /// Wait for room (blocking mode).
    Wait,
    /// Return `EAGAIN` at once, and a short count when the kernel took only
    /// part (a module that polls for writability).
    Short,
}

/// How a write ended, short of an error.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// This many bytes were written: all of them, or, when the socket failed
    /// or stalled part-way, those before the error.
    Wrote(usize, Option<Errno>),
    /// Nothing was written; `waited` tells whether it waited first.
    Refused { waited: bool },
}

/// Writes all of `bufs` to the guest socket `fd` (see the module docs), and
/// returns how many bytes were written.
pub(super) fn write_socket(ctx: &mut WasiCtx, fd: i32, bufs: &[IoSlice<'_>]) -> HostResult<usize> {
    let stall = ctx.network_stall;
    let spinning = ctx.refused_writes > 0;
    if spinning && ctx.refused_since.is_some_and(|t| t.elapsed() >= stall) {
        return Err(Errno::TIMEDOUT.into());
    }
    let Entry::Socket(socket) = ctx.fds.get_mut(fd)? else {
        return Err(Errno::NOTSOCK.into());
    };
    if let Some(errno) = socket.failed.take() {
        return Err(errno.into());
    }
    let when_full = match (socket.nonblocking, spinning) {
        (false, _) => WhenFull::Wait,
        (true, _) if ctx.polls_for_write => WhenFull::Short,
        (true, false) => WhenFull::Refuse,
        (true, true) => WhenFull::WaitThenRefuse(SPIN_WAIT.min(stall)),
    };
    let to_network = !socket.is_caller;
    match write_all(socket.fd(), bufs, when_full, stall, &ctx.stop)? {
        Outcome::Wrote(n, then) => {
            socket.failed = then;
            if to_network {
                ctx.net_bytes.written += n as u64;
            }
            ctx.progressed();
            Ok(n)
        }
        Outcome::Refused { waited } => {
            if waited {
                ctx.waited();
            }
            ctx.refused_writes = ctx.refused_writes.saturating_add(1);
            ctx.refused_since.get_or_insert_with(Instant::now);
            Err(Errno::AGAIN.into())
        }
    }
}

fn write_all(
    fd: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    when_full: WhenFull,
    stall: Duration,
    stop: &StopSignal,
) -> HostResult<Outcome> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut owned = bufs.to_vec();
    let mut rest = &mut owned[..];
    let mut written = 0usize;
    let mut waited = false;
    while written < total {
        match sys::write_vectored(fd, rest) {
            // A stream socket never takes nothing of a non-empty buffer;
            // retrying would spin.
            Ok(0) => return Ok(Outcome::Wrote(written, None)),
            Ok(n) => {
                written += n;
                IoSlice::advance_slices(&mut rest, n);
            }
            Err(rustix::io::Errno::AGAIN) => {
                let limit = match (written, when_full) {
                    (1.., WhenFull::Short) => return Ok(Outcome::Wrote(written, None)),
                    (1.., _) | (0, WhenFull::Wait) => stall,
                    (0, WhenFull::WaitThenRefuse(limit)) => limit,
                    (0, WhenFull::Refuse | WhenFull::Short) => {
                        return Ok(Outcome::Refused { waited })
                    }
                };
                waited = true;
                if !wait_writable(fd, stop, limit)? {
                    match (written, when_full) {
                        (1.., _) => return Ok(Outcome::Wrote(written, Some(Errno::TIMEDOUT))),
                        (0, WhenFull::Wait) => return Err(Errno::TIMEDOUT.into()),
                        (0, _) => return Ok(Outcome::Refused { waited }),
                    }
                }
            }
            // Bytes already taken are reported now, the error next time.
            Err(e) if written > 0 => return Ok(Outcome::Wrote(written, Some(Errno::from(e)))),
            Err(e) => return Err(Errno::from(e).into()),
        }
    }
    Ok(Outcome::Wrote(written, None))
}

/// Waits up to `limit` for room on `fd` (or an error on it, which the next
/// write reports). Returns `false` when the time ran out. A forced stop
/// traps; a graceful stop request does not end the wait (the module sees it
/// on its control fd once the write is done).
fn wait_writable(fd: BorrowedFd<'_>, stop: &StopSignal, limit: Duration) -> HostResult<bool> {
    let deadline = Instant::now().checked_add(limit);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
        let outcome = sys::wait(&mut fds, &[stop.waker()], left).map_err(|e| Errno::from(&e))?;
        if outcome.woken {
            stop.woken().map_err(Fail::Trap)?;
        }
        if outcome.ready > 0 {
            return Ok(true);
        }
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(false);
        }
    }
}

// The tests size Unix-domain socket buffers to fill them quickly; loopback TCP
// (the only stream pair on Windows) grows its buffers on its own.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    /// A connected pair with small buffers; `ours` is non-blocking.
    fn pair() -> (UnixStream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        sys::set_buffer_size(ours.as_fd(), 4096).unwrap();
        sys::set_buffer_size(theirs.as_fd(), 4096).unwrap();
        ours.set_nonblocking(true).unwrap();
        (ours, theirs)
    }

    /// Fills the socket until the kernel takes nothing more.
    fn fill(s: &UnixStream) -> usize {
        let chunk = [7u8; 1024];
        let mut n = 0;
        while let Ok(k) = sys::write_vectored(s.as_fd(), &[IoSlice::new(&chunk)]) {
            n += k;
        }
        n
    }

    #[test]
    fn a_short_write_is_completed_once_the_peer_reads() {
        let (ours, mut theirs) = pair();
        let stop = StopSignal::new().unwrap();
        let data: Vec<u8> = (0..1 << 20).map(|i| i as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        let bufs = [IoSlice::new(&data[..1000]), IoSlice::new(&data[1000..])];
        let out = write_all(
            ours.as_fd(),
            &bufs,
            WhenFull::Refuse,
            Duration::from_secs(30),
            &stop,
        );
        assert_eq!(out.ok(), Some(Outcome::Wrote(data.len(), None)));
        drop(ours);
        assert!(
            reader.join().unwrap() == data,
            "bytes arrive intact, in order"
        );
    }

    #[test]
    fn a_full_socket_refuses_or_waits_as_asked() {
        let (ours, _theirs) = pair();
        let stop = StopSignal::new().unwrap();
        assert!(fill(&ours) > 0);
        let byte = [IoSlice::new(b"x")];
        let stall = Duration::from_secs(30);
        let out = write_all(ours.as_fd(), &byte, WhenFull::Refuse, stall, &stop);
        assert_eq!(out.ok(), Some(Outcome::Refused { waited: false }));
        let start = Instant::now();
        let spin = WhenFull::WaitThenRefuse(Duration::from_millis(30));
        let out = write_all(ours.as_fd(), &byte, spin, stall, &stop);
        assert_eq!(out.ok(), Some(Outcome::Refused { waited: true }));
        assert!(start.elapsed() >= Duration::from_millis(30));
        let out = write_all(
            ours.as_fd(),
            &byte,
            WhenFull::Wait,
            Duration::from_millis(30),
            &stop,
        );
        assert!(matches!(out, Err(Fail::Errno(Errno::TIMEDOUT))));
    }

    #[test]
    fn a_stalled_write_returns_what_it_wrote() {
        let (ours, _theirs) = pair();
        let stop = StopSignal::new().unwrap();
        let data = vec![1u8; 1 << 20];
        let stall = Duration::from_millis(50);
        let out = write_all(
            ours.as_fd(),
            &[IoSlice::new(&data)],
            WhenFull::Refuse,
            stall,
            &stop,
        );
        match out.ok() {
            Some(Outcome::Wrote(n, Some(Errno::TIMEDOUT))) => {
                assert!(n > 0 && n < data.len(), "wrote {n}")
            }
            other => panic!("expected a partial write, got {other:?}"),
        }
    }

    #[test]
    fn a_stop_request_does_not_end_the_wait_a_kill_does() {
        let (ours, _theirs) = pair();
        fill(&ours);
        let byte = [IoSlice::new(b"x")];
        let stop = std::sync::Arc::new(StopSignal::new().unwrap());
        stop.request();
        let short = Duration::from_millis(30);
        let out = write_all(ours.as_fd(), &byte, WhenFull::Wait, short, &stop);
        assert!(matches!(out, Err(Fail::Errno(Errno::TIMEDOUT))), "{out:?}");

        let killer = stop.clone();
        let t = std::thread::spawn(move || killer.kill());
        let long = Duration::from_secs(30);
        let out = write_all(ours.as_fd(), &byte, WhenFull::Wait, long, &stop);
        t.join().unwrap();
        assert!(
            matches!(out, Err(Fail::Trap(super::super::HostTrap::Stopped))),
            "{out:?}"
        );
    }

    /// A context holding `ours` (non-blocking) as guest fd 3.
    fn ctx_with(ours: UnixStream, stall: Duration) -> (WasiCtx, i32) {
        let stop = std::sync::Arc::new(StopSignal::new().unwrap());
        let mut ctx = WasiCtx::new(None, stop, 0).with_network_stall(stall);
        let mut socket = super::super::Socket::new(ours.into()).unwrap();
        socket.nonblocking = true;
        let fd = ctx.fds.insert(super::super::Entry::Socket(socket)).unwrap();
        (ctx, fd as i32)
    }

    #[test]
    fn only_a_retry_with_nothing_in_between_waits() {
        let (ours, _theirs) = pair();
        fill(&ours);
        let (mut ctx, fd) = ctx_with(ours, Duration::from_secs(30));
        let byte = [IoSlice::new(b"x")];
        // The compute budget shows whether a call waited: a wait restarts it.
        ctx.ticks_without_host_call = 5;
        let first = write_socket(&mut ctx, fd, &byte);
        assert!(matches!(first, Err(Fail::Errno(Errno::AGAIN))));
        assert_eq!(
            ctx.ticks_without_host_call, 5,
            "the first refusal is at once"
        );
        let retry = write_socket(&mut ctx, fd, &byte);
        assert!(matches!(retry, Err(Fail::Errno(Errno::AGAIN))));
        assert_eq!(ctx.ticks_without_host_call, 0, "a spinning retry waits");

        // After a poll, the next refusal is immediate again.
        ctx.forget_refused_writes();
        ctx.ticks_without_host_call = 5;
        let after_poll = write_socket(&mut ctx, fd, &byte);
        assert!(matches!(after_poll, Err(Fail::Errno(Errno::AGAIN))));
        assert_eq!(ctx.ticks_without_host_call, 5);
    }

    #[test]
    fn spinning_past_the_stall_limit_fails_the_write() {
        let (ours, _theirs) = pair();
        fill(&ours);
        let stall = Duration::from_millis(120);
        let (mut ctx, fd) = ctx_with(ours, stall);
        let byte = [IoSlice::new(b"x")];
        let start = Instant::now();
        let mut tries = 0;
        let errno = loop {
            tries += 1;
            match write_socket(&mut ctx, fd, &byte) {
                Err(Fail::Errno(Errno::AGAIN)) if tries < 100 => continue,
                Err(Fail::Errno(e)) => break e,
                other => panic!("unexpected {other:?} after {tries} tries"),
            }
        };
        assert_eq!(errno, Errno::TIMEDOUT);
        assert!(start.elapsed() >= stall);
        assert!(tries <= 10, "each retry waited ({tries} tries)");
    }

    #[test]
    fn the_error_that_cut_a_write_short_comes_with_the_next_write() {
        let (ours, _theirs) = pair();
        let (mut ctx, fd) = ctx_with(ours, Duration::from_millis(50));
        let data = vec![1u8; 1 << 20];
        let n = write_socket(&mut ctx, fd, &[IoSlice::new(&data)]);
        assert!(matches!(n, Ok(n) if n > 0 && n < data.len()), "{n:?}");
        // Without the stored error this would be a plain EAGAIN.
        let next = write_socket(&mut ctx, fd, &[IoSlice::new(b"x")]);
        assert!(
            matches!(next, Err(Fail::Errno(Errno::TIMEDOUT))),
            "{next:?}"
        );
    }

    #[test]
    fn a_socket_polled_for_writability_gets_short_writes() {
        let (ours, _theirs) = pair();
        let stop = StopSignal::new().unwrap();
        let data = vec![1u8; 1 << 20];
        let start = Instant::now();
        let stall = Duration::from_secs(30);
        let out = write_all(
            ours.as_fd(),
            &[IoSlice::new(&data)],
            WhenFull::Short,
            stall,
            &stop,
        );
        match out.ok() {
            Some(Outcome::Wrote(n, None)) => assert!(n > 0 && n < data.len(), "wrote {n}"),
            other => panic!("expected a short write, got {other:?}"),
        }
        assert!(
            start.elapsed() < stall,
            "returned without waiting for the peer"
        );
        let out = write_all(
            ours.as_fd(),
            &[IoSlice::new(b"x")],
            WhenFull::Short,
            stall,
            &stop,
        );
        assert_eq!(out.ok(), Some(Outcome::Refused { waited: false }));
    }
}
