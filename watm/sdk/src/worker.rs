//! The I/O loop behind `watm_start_v1`.
//!
//! One WATM instance is one thread of execution, so the loop multiplexes the
//! three descriptors (control, caller, network) with `poll_oneoff` itself:
//!
//! * All descriptors are non-blocking; `poll_oneoff` is the only place the
//!   loop waits, and it waits with no clock, i.e. for as long as nothing
//!   happens. An idle connection therefore costs no CPU.
//! * Each direction (caller to network, network to caller) is a [`Pipe`] that
//!   is in one of two states. With nothing pending it waits for its source to
//!   become readable. After a short write (`EAGAIN`) it waits for its sink to
//!   become writable and stops reading its source until the backlog is gone.
//!   That is the backpressure: a slow reader on one side slows the writer on
//!   the other instead of growing a buffer. Write interest exists only while
//!   bytes are pending, so the loop never spins on an always-writable socket.
//! * The control descriptor is always watched for reading. The runtime writes
//!   one byte (or closes its end) to stop the connection.
//! * A clock is added only while the transport asks for a timer
//!   ([`Transport::timer`]); when it is due, [`Transport::on_timer`] runs.

use std::time::{Duration, Instant};

use crate::ffi::{self, Fd};
use crate::session::Connection;
use crate::{Errno, Role, Transport};

/// `userdata` tags of the subscriptions.
const CTRL: u64 = 0;
const UP: u64 = 1;
const DOWN: u64 = 2;
const CLOCK: u64 = 3;

/// How long to keep trying to deliver already transformed bytes after one
/// side reached end of stream. The runtime closes every descriptor once
/// `watm_start_v1` returns, so without a bound a peer that stops reading
/// would keep the instance alive forever.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// First size of the read buffer. It grows (up to `Transport::READ_SIZE`)
/// only when reads fill it, so an idle or chatty connection keeps a few
/// pages while a bulk transfer gets large reads.
const INITIAL_READ: usize = 4 * 1024;

/// Reads one direction may do per readiness event while each read fills the
/// buffer, before going back to `poll_oneoff`: a bulk transfer then costs
/// one poll per several reads instead of one per read.
const READS_PER_WAKE: usize = 8;

/// What a step of a [`Pipe`] found.
#[derive(PartialEq, Eq)]
enum Flow {
    /// Keep going.
    Open,
    /// The source reached end of stream.
    Eof,
}

/// One direction of the connection: bytes read from `src` are transformed into
/// `out` and written to `dst`.
struct Pipe {
    src: Fd,
    dst: Fd,
    toward: Toward,
    /// Transformed bytes; `out[sent..]` still has to be written to `dst`.
    out: Vec<u8>,
    sent: usize,
}

impl Pipe {
    fn new(src: Fd, dst: Fd, toward: Toward, capacity: usize) -> Result<Self, Errno> {
        Ok(Self {
            src,
            dst,
            toward,
            out: buffer(capacity)?,
            sent: 0,
        })
    }

    fn pending(&self) -> bool {
        self.sent < self.out.len()
    }

    /// What this direction waits for: the sink while bytes are pending, the
    /// source otherwise.
    fn subscription(&self, tag: u64) -> wasi::Subscription {
        if self.pending() {
            ffi::writable(tag, self.dst)
        } else {
            ffi::readable(tag, self.src)
        }
    }

    /// Writes pending bytes until done or until `dst` would block.
    fn flush(&mut self) -> Result<(), Errno> {
        while let Some(rest) = self.out.get(self.sent..).filter(|rest| !rest.is_empty()) {
            match ffi::write(self.dst, rest) {
                // A stream socket never accepts zero bytes of a non-empty
                // buffer; retrying would spin, so report it instead.
                Ok(0) => return Err(Errno::IO),
                Ok(n) => self.sent += n,
                Err(Errno::AGAIN) => return Ok(()),
                Err(errno) => return Err(errno),
            }
        }
        self.out.clear();
        self.sent = 0;
        Ok(())
    }

    /// Writes `data` (already transformed) straight to `dst`; whatever the
    /// socket does not take at once is kept in `out` for [`Self::flush`].
    fn send(&mut self, data: &[u8]) -> Result<(), Errno> {
        let mut rest = data;
        while !rest.is_empty() {
            match ffi::write(self.dst, rest) {
                Ok(0) => return Err(Errno::IO),
                Ok(n) => rest = rest.get(n..).ok_or(Errno::IO)?,
                Err(Errno::AGAIN) => break,
                Err(errno) => return Err(errno),
            }
        }
        self.out.extend_from_slice(rest);
        Ok(())
    }

    /// Handles readiness of whatever [`Self::subscription`] waited for:
    /// continuing a pending write, or reads, each transformed and written.
    /// While reads fill the buffer (and everything was written), it reads
    /// again, up to [`READS_PER_WAKE`] times, growing the buffer up to
    /// `max_read`.
    fn step<T: Transport>(
        &mut self,
        buf: &mut Vec<u8>,
        max_read: usize,
        transport: &mut T,
        role: Role,
    ) -> Result<Flow, Errno> {
        if self.pending() {
            self.flush()?;
            return Ok(Flow::Open);
        }
        for _ in 0..READS_PER_WAKE {
            let n = match ffi::read(self.src, buf) {
                Ok(0) => return Ok(Flow::Eof),
                Ok(n) => n,
                // The readiness was stale (or the source is drained): wait
                // for the next one.
                Err(Errno::AGAIN) => return Ok(Flow::Open),
                Err(errno) => return Err(errno),
            };
            self.out.clear();
            self.sent = 0;
            let data = buf.get_mut(..n).ok_or(Errno::IO)?;
            if T::IN_PLACE {
                self.toward.transform_in_place(transport, role, data)?;
                self.send(data)?;
            } else {
                self.toward
                    .transform(transport, role, data, &mut self.out)?;
                self.flush()?;
            }
            if n < buf.len() || self.pending() {
                break;
            }
            grow(buf, max_read);
        }
        Ok(Flow::Open)
    }
}

/// Which way a [`Pipe`] carries bytes, and so which of the transport's
/// transforms it applies.
#[derive(Clone, Copy)]
enum Toward {
    Network,
    Caller,
}

impl Toward {
    /// The copying transform: appends what to send to `out`.
    fn transform<T: Transport>(
        self,
        transport: &mut T,
        role: Role,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        match self {
            Toward::Network => transport.caller_to_network(role, input, out),
            Toward::Caller => transport.network_to_caller(role, input, out),
        }
    }

    /// The in-place transform ([`Transport::IN_PLACE`]).
    fn transform_in_place<T: Transport>(
        self,
        transport: &mut T,
        role: Role,
        data: &mut [u8],
    ) -> Result<(), Errno> {
        match self {
            Toward::Network => transport.caller_to_network_in_place(role, data),
            Toward::Caller => transport.network_to_caller_in_place(role, data),
        }
    }
}

/// Enlarges a full read buffer (x4, at most `max`); keeps it as it is when
/// memory is short.
fn grow(buf: &mut Vec<u8>, max: usize) {
    let target = buf.len().saturating_mul(4).min(max);
    if target > buf.len() && buf.try_reserve_exact(target - buf.len()).is_ok() {
        buf.resize(target, 0);
    }
}

/// An empty buffer with room for `capacity` bytes, or `NOMEM` instead of an
/// abort when the guest's memory cannot grow that far.
fn buffer(capacity: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(capacity).map_err(|_| Errno::NOMEM)?;
    Ok(buf)
}

/// Reports what the events returned by one poll ask for, in priority order:
/// a stop request first, then any error, then which pipes are ready.
fn dispatch(events: &[wasi::Event]) -> Result<(bool, bool), Errno> {
    if events.iter().any(|event| event.userdata == CTRL) {
        return Err(Errno::CANCELED);
    }
    if let Some(event) = events
        .iter()
        .find(|event| event.error != wasi::ERRNO_SUCCESS)
    {
        return Err(Errno::from_raw(event.error.raw()));
    }
    let ready = |tag| events.iter().any(|event| event.userdata == tag);
    Ok((ready(UP), ready(DOWN)))
}

/// Runs the connection until it ends.
///
/// Returns `Ok(())` once either side reached end of stream and the bytes
/// already transformed for the other side were delivered; `CANCELED` when the
/// runtime signalled the control descriptor; `TIMEDOUT` when those last bytes
/// could not be delivered within [`DRAIN_TIMEOUT`]; any other errno from I/O
/// or from the transport.
pub(crate) fn run<T: Transport>(
    transport: &mut T,
    connection: &Connection,
    ctrl: Fd,
) -> Result<(), Errno> {
    let Connection {
        role,
        caller,
        network,
    } = *connection;
    for fd in [ctrl, caller, network] {
        ffi::set_nonblocking(fd)?;
    }
    // Waiting once for the network fd to be writable tells the host that
    // this loop handles short writes itself, so the host returns what the
    // kernel took instead of waiting for the rest (which would keep the loop
    // from serving the other direction meanwhile). The connection is up, so
    // this returns at once.
    let mut first = [ffi::EMPTY_EVENT; 2];
    let subscriptions = [ffi::readable(CTRL, ctrl), ffi::writable(UP, network)];
    dispatch(ffi::poll(&subscriptions, &mut first)?)?;

    let size = T::READ_SIZE.max(1);
    let mut buf = buffer(size.min(INITIAL_READ))?;
    buf.resize(size.min(INITIAL_READ), 0);
    // In-place transforms send from the read buffer; their output buffers
    // only ever hold what a socket did not take, so they start empty.
    let out_capacity = if T::IN_PLACE { 0 } else { size };
    let mut up = Pipe::new(caller, network, Toward::Network, out_capacity)?;
    let mut down = Pipe::new(network, caller, Toward::Caller, out_capacity)?;

    transport.on_start(role, &mut down.out, &mut up.out)?;
    up.flush()?;
    down.flush()?;

    let mut events = [ffi::EMPTY_EVENT; 4];
    loop {
        let timer = transport.timer();
        let nanos = match timer.map(|at| at.saturating_duration_since(Instant::now())) {
            Some(left) if left.is_zero() => {
                // Output of the timer goes behind whatever is pending; the
                // flushes only write, so backpressure is kept.
                transport.on_timer(role, &mut down.out, &mut up.out)?;
                up.flush()?;
                down.flush()?;
                continue;
            }
            Some(left) => Some(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)),
            None => None,
        };
        let subscriptions = [
            ffi::readable(CTRL, ctrl),
            up.subscription(UP),
            down.subscription(DOWN),
            // Without a timer the fourth slot repeats the control
            // subscription, so the loop still waits without a clock.
            match nanos {
                Some(nanos) => ffi::timeout(CLOCK, nanos),
                None => ffi::readable(CTRL, ctrl),
            },
        ];
        // A clock event needs no handling here: the next turn of the loop
        // sees the timer due.
        let (up_ready, down_ready) = dispatch(ffi::poll(&subscriptions, &mut events)?)?;
        if up_ready && up.step(&mut buf, size, transport, role)? == Flow::Eof {
            return drain(ctrl, &mut up, &mut down);
        }
        if down_ready && down.step(&mut buf, size, transport, role)? == Flow::Eof {
            return drain(ctrl, &mut up, &mut down);
        }
    }
}

/// Delivers what is still pending in either direction, for at most
/// [`DRAIN_TIMEOUT`], without reading anything new.
fn drain(ctrl: Fd, up: &mut Pipe, down: &mut Pipe) -> Result<(), Errno> {
    let start = Instant::now();
    let mut events = [ffi::EMPTY_EVENT; 4];
    loop {
        up.flush()?;
        down.flush()?;
        if !up.pending() && !down.pending() {
            return Ok(());
        }
        let left = DRAIN_TIMEOUT.saturating_sub(start.elapsed());
        if left.is_zero() {
            return Err(Errno::TIMEDOUT);
        }
        let nanos = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
        // A pipe with nothing pending repeats the control subscription rather
        // than watching its source: nothing new is read while draining.
        let sink = |pipe: &Pipe, tag| {
            if pipe.pending() {
                ffi::writable(tag, pipe.dst)
            } else {
                ffi::readable(CTRL, ctrl)
            }
        };
        let subscriptions = [
            ffi::readable(CTRL, ctrl),
            ffi::timeout(CLOCK, nanos),
            sink(up, UP),
            sink(down, DOWN),
        ];
        dispatch(ffi::poll(&subscriptions, &mut events)?)?;
    }
}
