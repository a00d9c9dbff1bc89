//! `poll_oneoff`: one `poll(2)` over the guest's sockets.
//!
//! WATMs spend their whole life in this call: they subscribe FD_READ on the
//! control pipe, the caller fd and the network fd and block until one is
//! ready. Every wait can also be ended by the instance's stop signal, so the
//! runtime can end a module that ignores its control pipe; a clock
//! subscription becomes the wait's timeout.

use super::{with_ctx, Entry, Errno, Fail, GuestMemory, HostResult, WasiCtx, WasiView};
use crate::sys::{self, AsFd, PollFd, PollFlags, HANGUP, READ_INTEREST};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Linker};

const SUBSCRIPTION_SIZE: u32 = 48;
const EVENT_SIZE: u32 = 32;
/// Most subscriptions accepted in one call.
const MAX_SUBSCRIPTIONS: u32 = 4096;

const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;
const EVENTRWFLAGS_HANGUP: u16 = 1;

pub(super) const CLOCK_REALTIME: u32 = 0;
pub(super) const CLOCK_MONOTONIC: u32 = 1;
pub(super) const CLOCK_PROCESS_CPUTIME: u32 = 2;
pub(super) const CLOCK_THREAD_CPUTIME: u32 = 3;

pub(super) fn add_to_linker<T: WasiView>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.func_wrap(
        super::PREVIEW1,
        "poll_oneoff",
        |mut c: Caller<'_, T>, subs: i32, events: i32, n: i32, out: i32| {
            with_ctx(&mut c, |m, ctx| {
                let count = poll_oneoff(m, ctx, subs as u32, events as u32, n as u32)?;
                Ok(m.write_u32(out as u32, count)?)
            })
        },
    )?;
    Ok(())
}

/// One decoded subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sub {
    Clock {
        userdata: u64,
        deadline: Option<Duration>,
    },
    Fd {
        userdata: u64,
        kind: u8,
        fd: i32,
    },
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Event {
    userdata: u64,
    error: u16,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

impl Event {
    fn encode(&self) -> [u8; EVENT_SIZE as usize] {
        let mut b = [0u8; EVENT_SIZE as usize];
        b[0..8].copy_from_slice(&self.userdata.to_le_bytes());
        b[8..10].copy_from_slice(&self.error.to_le_bytes());
        b[10] = self.kind;
        b[16..24].copy_from_slice(&self.nbytes.to_le_bytes());
        b[24..26].copy_from_slice(&self.flags.to_le_bytes());
        b
    }
}

/// Decodes the subscription array. A clock's deadline is stored relative to
/// `now` (`None` for an unknown clock, reported as an EINVAL event).
fn decode(m: &GuestMemory<'_>, ctx: &WasiCtx, base: u32, n: u32) -> HostResult<Vec<Sub>> {
    if n == 0 || n > MAX_SUBSCRIPTIONS {
        return Err(Errno::INVAL.into());
    }
    m.slice(base, n * SUBSCRIPTION_SIZE)?;
    let mut subs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let at = base + i * SUBSCRIPTION_SIZE;
        let userdata = m.read_u64(at)?;
        let sub = match m.read_u8(at + 8)? {
            EVENTTYPE_CLOCK => {
                let id = m.read_u32(at + 16)?;
                let timeout = m.read_u64(at + 24)?;
                let abstime = m.read_u16(at + 40)? & SUBCLOCKFLAGS_ABSTIME != 0;
                Sub::Clock {
                    userdata,
                    deadline: clock_deadline(ctx, id, timeout, abstime),
                }
            }
            kind @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => Sub::Fd {
                userdata,
                kind,
                fd: m.read_u32(at + 16)? as i32,
            },
            _ => return Err(Errno::INVAL.into()),
        };
        subs.push(sub);
    }
    Ok(subs)
}

/// How long from now until a clock subscription fires.
fn clock_deadline(ctx: &WasiCtx, id: u32, timeout: u64, abstime: bool) -> Option<Duration> {
    let timeout = Duration::from_nanos(timeout);
    if !abstime {
        return matches!(
            id,
            CLOCK_REALTIME | CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME
        )
        .then_some(timeout);
    }
    let now = match id {
        CLOCK_REALTIME => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
        CLOCK_MONOTONIC | CLOCK_PROCESS_CPUTIME | CLOCK_THREAD_CPUTIME => ctx.clock_base.elapsed(),
        _ => return None,
    };
    Some(timeout.saturating_sub(now))
}

fn poll_oneoff(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    subs_ptr: u32,
    events_ptr: u32,
    n: u32,
) -> HostResult<u32> {
    let subs = decode(m, ctx, subs_ptr, n)?;
    // The output array must be able to hold an event per subscription.
    m.slice(events_ptr, n * EVENT_SIZE)?;
    // A socket opened on demand is opened once the module waits to write
    // to it; until then it is never readable. Waiting to write to a socket
    // also shows that the module handles short writes (see `send`).
    for sub in &subs {
        if let Sub::Fd {
            kind: EVENTTYPE_FD_WRITE,
            fd,
            ..
        } = *sub
        {
            ctx.open_lazy(fd)?;
            if matches!(ctx.fds.get(fd), Ok(Entry::Socket(_))) {
                ctx.polls_for_write = true;
            }
        }
    }

    let start = Instant::now();
    let mut events = Vec::new();
    let mut waits: Vec<usize> = Vec::new();
    // Read subscriptions on the control channel that are not ready yet.
    let mut controls: Vec<usize> = Vec::new();
    let mut fds: Vec<PollFd<'_>> = Vec::new();
    let mut timeout: Option<Duration> = None;
    for (i, sub) in subs.iter().enumerate() {
        match *sub {
            Sub::Clock { userdata, deadline } => match deadline {
                Some(d) => timeout = Some(timeout.map_or(d, |t| t.min(d))),
                None => events.push(Event {
                    userdata,
                    error: Errno::INVAL.0,
                    kind: EVENTTYPE_CLOCK,
                    ..Event::default()
                }),
            },
            Sub::Fd { userdata, kind, fd } => {
                let ready = |nbytes, flags| Event {
                    userdata,
                    kind,
                    nbytes,
                    flags,
                    error: 0,
                };
                match ctx.fds.get(fd) {
                    Ok(Entry::Socket(s)) => {
                        let interest = if kind == EVENTTYPE_FD_READ {
                            READ_INTEREST
                        } else {
                            PollFlags::OUT
                        };
                        waits.push(i);
                        fds.push(PollFd::from_borrowed_fd(s.fd(), interest));
                    }
                    Ok(Entry::Lazy(_)) => {}
                    // Files and stdio never block.
                    Ok(Entry::ConfFile { pos }) => {
                        let len = ctx.conf.as_ref().map_or(0, |c| c.len() as u64);
                        events.push(ready(len.saturating_sub(*pos), 0));
                    }
                    Ok(Entry::Stdin) => events.push(ready(0, EVENTRWFLAGS_HANGUP)),
                    Ok(Entry::Stdout | Entry::Stderr) => events.push(ready(0, 0)),
                    // Readable once a stop was requested; never writable.
                    Ok(Entry::Control { .. }) => {
                        if kind == EVENTTYPE_FD_READ && ctx.stop.is_requested() {
                            events.push(ready(1, 0));
                        } else {
                            controls.push(i);
                        }
                    }
                    Ok(Entry::ConfDir) => events.push(Event {
                        error: Errno::ISDIR.0,
                        ..ready(0, 0)
                    }),
                    Err(e) => events.push(Event {
                        error: e.0,
                        ..ready(0, 0)
                    }),
                }
            }
        }
    }
    if !events.is_empty() {
        timeout = Some(Duration::ZERO);
    }

    let stop = ctx.stop.clone();
    // The first pass only looks: whether the call then has to block tells
    // a wait (which restarts the compute budget) from a module polling in a
    // busy loop. The budget only runs down while wasm code runs, so when it
    // has not ticked since it last restarted, a restart would change nothing
    // and the look is skipped: a module that moves data between its waits
    // pays one `ppoll` per wait, not two.
    let mut probing = ctx.ticks_without_host_call != 0;
    let mut waited = false;
    loop {
        let left = if probing {
            Some(Duration::ZERO)
        } else {
            timeout.map(|t| t.saturating_sub(start.elapsed()))
        };
        let outcome = sys::wait(&mut fds, &[stop.waker()], left).map_err(|e| Errno::from(&e))?;
        if std::mem::take(&mut probing)
            && outcome.ready == 0
            && !outcome.woken
            && timeout != Some(Duration::ZERO)
        {
            waited = true;
            continue;
        }
        if outcome.woken {
            stop.woken().map_err(Fail::Trap)?;
            if stop.is_requested() {
                // Only reading: the control fd is never writable.
                for &i in &controls {
                    if let Sub::Fd {
                        userdata,
                        kind: EVENTTYPE_FD_READ,
                        ..
                    } = subs[i]
                    {
                        events.push(Event {
                            userdata,
                            kind: EVENTTYPE_FD_READ,
                            nbytes: 1,
                            ..Event::default()
                        });
                    }
                }
                controls.clear();
            }
        }
        let clock_due = timeout.is_some_and(|t| start.elapsed() >= t);
        if outcome.ready > 0 || clock_due || !events.is_empty() {
            break;
        }
    }

    for (i, p) in waits.iter().zip(&fds) {
        let revents = p.revents();
        if revents.is_empty() {
            continue;
        }
        let Sub::Fd { userdata, kind, .. } = subs[*i] else {
            continue;
        };
        let mut ev = Event {
            userdata,
            kind,
            ..Event::default()
        };
        if revents.contains(PollFlags::NVAL) {
            ev.error = Errno::BADF.0;
        } else {
            if revents.intersects(HANGUP) {
                ev.flags = EVENTRWFLAGS_HANGUP;
            }
            if kind == EVENTTYPE_FD_READ {
                ev.nbytes = sys::bytes_readable(p.as_fd());
            }
        }
        events.push(ev);
    }
    let elapsed = start.elapsed();
    for sub in &subs {
        if let Sub::Clock {
            userdata,
            deadline: Some(d),
        } = *sub
        {
            if elapsed >= d {
                events.push(Event {
                    userdata,
                    kind: EVENTTYPE_CLOCK,
                    ..Event::default()
                });
            }
        }
    }
    drop(fds);
    drop(waits);
    // A module that polls is not spinning on a refused write.
    ctx.forget_refused_writes();
    if waited {
        ctx.waited();
    }

    for (k, ev) in events.iter().enumerate() {
        m.write(events_ptr + k as u32 * EVENT_SIZE, &ev.encode())?;
    }
    Ok(events.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_layout_matches_preview1() {
        let ev = Event {
            userdata: 0x1122_3344_5566_7788,
            error: 0x0B,
            kind: EVENTTYPE_FD_READ,
            nbytes: 5,
            flags: EVENTRWFLAGS_HANGUP,
        };
        let b = ev.encode();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[8..10], &[0x0B, 0]);
        assert_eq!(b[10], 1);
        assert_eq!(&b[16..24], &5u64.to_le_bytes());
        assert_eq!(&b[24..26], &[1, 0]);
        assert!(b[11..16].iter().chain(&b[26..]).all(|&x| x == 0));
    }
}
