//! One connection = one instance = one thread.
//!
//! A session runs a module's call order on its own OS thread, because the
//! module's worker (`watm_start_v1`) blocks for the connection's whole life:
//!
//! 1. instantiate from the module's shared `InstancePre`;
//! 2. `_initialize` or `_start` if exported (`proc_exit(0)` counts as success);
//! 3. the driver of the module's generation ([`super::driver`]) runs the
//!    module's init, inserts the caller socket, makes the role call (v1:
//!    `watm_dial_v1`, `watm_dial_fixed_v1`, `watm_accept_v1` or
//!    `watm_associate_v1`) and hands over the control pipe
//!    (`watm_ctrlpipe_v1(fd)`);
//! 4. report success to whoever is watching (a task awaiting [`start`], or
//!    the setup hook given to [`launch`]), then the driver runs the worker
//!    (`watm_start_v1()`).
//!
//! When the thread ends, the store and with it every socket of the instance
//! are dropped.
//!
//! Steps 1-3 are bounded by the setup deadline ([`super::Limits::setup_timeout`]):
//! a connection not ready by then is stopped by force, and so is one whose
//! starter stopped waiting (the [`start`] future was dropped), since nobody
//! else holds a handle on a session before it is ready.

use super::error::Error;
use super::finish::EndHooks;
use super::host::{Host, Inbound};
use super::module::{Role, Watm};
use super::ticker::Deadline;
use super::RuntimeInner;
use crate::sys::{self, AsFd, PollFd, PollFlags};
use crate::wasi::{CallerClose, Entry, HostTrap, NetBytes, StopSignal, WasiCtx};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use wasmtime::{Store, UpdateDeadline};

mod check;
mod job;
pub(crate) use check::check_init;
use job::Unstarted;
pub(crate) use job::{CallerSocket, Job, SetupWatch};
pub use job::{Replies, SetupHook};

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// The worker (`watm_start_v1`) returned 0: one side of the connection
    /// closed.
    Closed,
    /// The worker returned `-ECANCELED` after a stop request.
    Cancelled,
    /// Setup failed, the module returned an error, trapped or was stopped by
    /// force; the text names the cause.
    Failed(String),
}

/// State shared between a session's thread and its handles.
pub struct SessionShared {
    pub(crate) id: u64,
    /// Makes the module's control fd readable (graceful stop) or ends every
    /// wait of the instance (forced stop).
    pub(crate) stop: Arc<StopSignal>,
    /// Whether a graceful stop (and its forced follow-up) was scheduled.
    stop_requested: AtomicBool,
    /// Where setup stands (`SETUP`, `READY`, `EXPIRED`, `ABANDONED`); only
    /// one transition away from `SETUP` happens, so a connection that became
    /// ready is never stopped for a setup deadline, and vice versa.
    setup: AtomicU8,
    /// The setup deadline, for the error message.
    setup_timeout: Duration,
    done: watch::Sender<Option<SessionEnd>>,
    /// What the module moved on its network sockets, set when the worker returns.
    net_bytes: std::sync::Mutex<NetBytes>,
    /// Run on this thread as the session ends ([`SessionHandle::when_finished`]).
    on_end: EndHooks,
}

const SETUP: u8 = 0;
const READY: u8 = 1;
/// The setup deadline passed first.
const EXPIRED: u8 = 2;
/// The starter stopped waiting first.
const ABANDONED: u8 = 3;

impl SessionShared {
    fn new(id: u64, setup_timeout: Duration) -> std::io::Result<SessionShared> {
        Ok(SessionShared {
            id,
            stop: Arc::new(StopSignal::new()?),
            stop_requested: AtomicBool::new(false),
            setup: AtomicU8::new(SETUP),
            setup_timeout,
            done: watch::Sender::new(None),
            net_bytes: Default::default(),
            on_end: EndHooks::default(),
        })
    }

    /// Has the ticker end setup by force once the setup deadline passes.
    fn arm_setup_deadline(self: &Arc<Self>, runtime: &RuntimeInner) {
        runtime.ticker.schedule(
            Instant::now() + self.setup_timeout,
            Deadline::Setup,
            Arc::downgrade(self),
        );
    }

    /// Ends the instance now: its waits return, wasm code traps at the next
    /// epoch check.
    fn kill(&self, engine: &wasmtime::Engine) {
        self.stop.kill();
        engine.increment_epoch();
    }

    /// Leaves `SETUP` for `to`; false if setup already ended otherwise.
    fn end_setup(&self, to: u8) -> bool {
        self.setup
            .compare_exchange(SETUP, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Called by the ticker when a deadline scheduled for this session is due.
    pub(crate) fn deadline_passed(&self, what: Deadline, engine: &wasmtime::Engine) {
        match what {
            Deadline::StopGrace => {
                if self.done.borrow().is_none() {
                    tracing::warn!(conn = self.id, "module did not stop in time; forcing it");
                }
                self.kill(engine);
            }
            // The session thread logs the failure (with the reason below).
            Deadline::Setup => {
                if self.end_setup(EXPIRED) {
                    self.kill(engine);
                }
            }
        }
    }

    /// Why setup failed when it was cut short, replacing the trap the forced
    /// stop caused.
    fn cut_short(&self) -> Option<Error> {
        match self.setup.load(Ordering::SeqCst) {
            EXPIRED => Some(Error::SetupTimeout(self.setup_timeout)),
            ABANDONED => Some(Error::SetupCancelled),
            _ => None,
        }
    }
}

/// A handle on a running session.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<SessionShared>,
    runtime: Arc<RuntimeInner>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("id", &self.shared.id)
            .finish()
    }
}

impl SessionHandle {
    /// The connection id used in log lines.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// Asks the module to stop: its control fd becomes readable (one `0x00`
    /// byte, then end-of-stream). A module that has not returned when the
    /// grace period ends is stopped by force.
    pub fn stop(&self) {
        request_stop(&self.shared, &self.runtime);
    }

    /// Bytes the module read from and wrote to the network; known once the session has
    /// finished (zero before).
    pub fn net_bytes(&self) -> NetBytes {
        *self
            .shared
            .net_bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn is_finished(&self) -> bool {
        self.shared.done.borrow().is_some()
    }

    /// Runs `hook` with how the session ended and what it moved on the network:
    /// on the session's thread as it ends, after its sockets are released, or
    /// here and now if it has ended already. Nothing waits for the end, so a
    /// front that only counts connections needs no task per connection.
    pub fn when_finished(&self, hook: impl FnOnce(&SessionEnd, NetBytes) + Send + 'static) {
        self.shared.on_end.add(Box::new(hook));
    }

    /// Resolves when the instance has ended and released its sockets, with
    /// the reason it ended.
    pub async fn finished(&self) -> SessionEnd {
        let mut rx = self.shared.done.subscribe();
        let end = match rx.wait_for(Option::is_some).await {
            Ok(end) => end.clone().unwrap_or(SessionEnd::Closed),
            Err(_) => SessionEnd::Failed("session state lost".into()),
        };
        end
    }
}

pub(crate) fn request_stop(shared: &Arc<SessionShared>, runtime: &RuntimeInner) {
    if shared.stop_requested.swap(true, Ordering::SeqCst) || shared.done.borrow().is_some() {
        return;
    }
    shared.stop.request();
    runtime.ticker.schedule(
        Instant::now() + runtime.limits.stop_grace,
        Deadline::StopGrace,
        Arc::downgrade(shared),
    );
}

/// Starts a session thread. The job's watch hears once the role call and the
/// hand-over of the control pipe are done (or have failed). `None` when the
/// session never started; the watch has heard why.
fn spawn(runtime: &Arc<RuntimeInner>, watm: Arc<Watm>, job: Job) -> Option<SessionHandle> {
    // A job refused here, or one whose thread cannot start (see [`Unstarted`]), answers its
    // caller and its watch on the way out.
    let permit = match watm.require(job.role).and_then(|()| runtime.admit()) {
        Ok(permit) => permit,
        Err(e) => {
            job.refuse(e);
            return None;
        }
    };
    let shared = match SessionShared::new(permit.id, runtime.limits.setup_timeout) {
        Ok(shared) => Arc::new(shared),
        Err(e) => {
            job.refuse(e.into());
            return None;
        }
    };
    let job = Unstarted::new(job);
    let handle = SessionHandle {
        shared: shared.clone(),
        runtime: runtime.clone(),
    };
    let rt = runtime.clone();
    let session = handle.clone();
    // Registered before the thread starts, so `stop_all` cannot miss it; a
    // thread that cannot be started takes its entry back out.
    runtime.register(&shared);
    let started = runtime.threads.execute(Box::new(move || {
        let id = session.shared.id;
        let end = run(&rt, &watm, job.take(), &session);
        let shared = session.shared;
        rt.unregister(id);
        drop(permit);
        shared.done.send_replace(Some(end.clone()));
        let bytes = *shared
            .net_bytes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.on_end.run(&end, bytes);
    }));
    if let Err(e) = started {
        // The closure, and with it the job, is gone: the job's drop guard has answered.
        tracing::warn!(conn = shared.id, "cannot start a session thread: {e}");
        runtime.unregister(shared.id);
        return None;
    }
    shared.arm_setup_deadline(runtime);
    Some(handle)
}

/// The body of a session thread.
fn run(rt: &RuntimeInner, watm: &Watm, mut job: Job, session: &SessionHandle) -> SessionEnd {
    let replies = job.replies.take();
    let caller = match job.caller.take() {
        Some(fd) => Caller::Held(fd),
        None => Caller::None,
    };
    let watch = job.watch.take();
    let mut store = new_store(rt, &mut job, session.shared.clone());
    let end = drive(watm, &mut store, job.role, caller, replies, session, watch);
    rt.residency.retire(store);
    end
}

/// Sets the session up, answers the caller, and runs it to its end.
fn drive(
    watm: &Watm,
    store: &mut Store<Host>,
    role: Role,
    mut caller: Caller,
    replies: Option<Replies>,
    session: &SessionHandle,
    watch: Option<SetupWatch>,
) -> SessionEnd {
    let shared = &*session.shared;
    let id = shared.id;
    // A reply is owed until setup ends: keep the caller's socket open for it even if the
    // module closes its descriptor.
    if replies.is_some() {
        store.data_mut().wasi.caller_close = CallerClose::Keeps;
    }
    let outcome = setup(watm, store, role, &mut caller);
    let outcome = outcome.and_then(|()| match &replies {
        Some(r) => write_reply(store, &caller, &r.ready, false),
        None => Ok(()),
    });
    // Ready only if no deadline or cancellation cut setup short meanwhile.
    let outcome = outcome.and_then(|()| match shared.end_setup(READY) {
        true => Ok(()),
        false => Err(Error::SetupCancelled),
    });
    match outcome {
        Ok(()) => {
            // No reply is owed any more; a caller socket kept for one closes here.
            store.data_mut().wasi.caller_close = CallerClose::Closes;
            if let Some(watch) = watch {
                watch.tell(Ok(session));
            }
        }
        Err(mut e) => {
            if let Some(why) = shared.cut_short() {
                e = why;
            } else if let Some((address, source)) = store.data_mut().last_dial_error.take() {
                if !matches!(e, Error::Trap { .. }) {
                    e = Error::Dial { address, source };
                }
            }
            tracing::info!(conn = id, "connection setup failed: {e}");
            // The caller gets its failure reply whether or not the module had
            // been given the socket yet (init may fail before that).
            if let Some(r) = replies {
                let _ = write_reply(store, &caller, &(r.failed)(&e), true);
            }
            store.data_mut().wasi.caller_close = CallerClose::Closes;
            let end = SessionEnd::Failed(e.to_string());
            if let Some(watch) = watch {
                watch.tell(Err(e));
            }
            return end;
        }
    }
    let start = Instant::now();
    let end = watm.driver().work(store);
    *shared
        .net_bytes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = store.data().wasi.net_bytes;
    match &end {
        SessionEnd::Failed(why) => tracing::info!(conn = id, "connection ended: {why}"),
        _ => tracing::debug!(
            conn = id,
            "connection ended ({end:?}) after {:?}",
            start.elapsed()
        ),
    }
    end
}

/// Where the caller socket is during setup.
pub(crate) enum Caller {
    /// This role has none (relay).
    None,
    /// Not yet given to the module.
    Held(CallerSocket),
    /// In the module's table under this number.
    Lent(u32),
}

fn new_store(rt: &RuntimeInner, job: &mut Job, shared: Arc<SessionShared>) -> Store<Host> {
    let host = Host {
        wasi: WasiCtx::new(job.config.take(), shared.stop.clone(), shared.id)
            .with_network_stall(rt.limits.network_stall),
        inbound: match job.inbound.take() {
            Some(fd) => Inbound::Pending(fd),
            None => Inbound::None,
        },
        fixed_remote: job.fixed_remote.take(),
        policy: job.policy.clone(),
        dials: 0,
        last_dial_error: None,
        shared,
        instance: None,
        tick_budget: rt.tick_budget(),
        network_stall: rt.limits.network_stall,
        socket_buffer: rt.limits.socket_buffer,
    };
    let mut store = Store::new(&rt.engine, host);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let host = ctx.data_mut();
        if host.shared.stop.is_killed() {
            return Err(wasmtime::Error::new(HostTrap::Stopped));
        }
        host.wasi.ticks_without_host_call += 1;
        if host.wasi.ticks_without_host_call > host.tick_budget {
            return Err(wasmtime::Error::msg(
                "module ran wasm code too long without waiting or moving data",
            ));
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

/// Steps 1-3 of the call order.
fn setup(
    watm: &Watm,
    store: &mut Store<Host>,
    role: Role,
    caller: &mut Caller,
) -> Result<(), Error> {
    instantiate(watm, store)?;
    watm.driver().setup(store, role, caller)
}

/// Steps 1-2: the instance and its entry point.
fn instantiate(watm: &Watm, store: &mut Store<Host>) -> Result<(), Error> {
    let instance = watm.pre.instantiate(&mut *store).map_err(|e| Error::Trap {
        call: "instantiation",
        reason: format!("{e:#}"),
    })?;
    store.data_mut().wasi.memory = instance.get_memory(&mut *store, "memory");
    store.data_mut().instance = Some(instance);

    if let Some(entry) = watm.entry {
        let f = instance
            .get_typed_func::<(), ()>(&mut *store, entry)
            .map_err(|e| Error::Trap {
                call: entry,
                reason: format!("{e:#}"),
            })?;
        if let Err(e) = f.call(&mut *store, ()) {
            if !matches!(e.downcast_ref::<HostTrap>(), Some(HostTrap::Exit(0))) {
                return Err(Error::Trap {
                    call: entry,
                    reason: format!("{e:#}"),
                });
            }
        }
    }
    Ok(())
}

/// Writes a setup reply on the caller socket, wherever it is, waiting
/// (bounded, and not past a stop) if its buffer is full. Nothing is written
/// to an fd number the module reused for another socket.
///
/// `to_closed`: whether a caller socket the module closed during setup still gets the bytes
/// (see [`CallerClose`]). A failure reply does, so the caller
/// learns why; a success reply does not: the module dropped its caller, so setup failed.
fn write_reply(
    store: &Store<Host>,
    caller: &Caller,
    bytes: &[u8],
    to_closed: bool,
) -> Result<(), Error> {
    let host = store.data();
    let fd = match caller {
        Caller::None => return Ok(()),
        Caller::Held(CallerSocket::Open(fd)) => fd.as_fd(),
        // Nobody to answer: the socket does not exist yet.
        Caller::Held(CallerSocket::OnFirstWrite(_)) => return Ok(()),
        Caller::Lent(n) => match host.wasi.fds.get(*n as i32) {
            Ok(Entry::Socket(s)) if s.is_caller => s.fd(),
            _ => match &host.wasi.caller_close {
                CallerClose::Kept(fd) if to_closed => fd.as_fd(),
                _ => {
                    return Err(Error::Io(std::io::Error::other(
                        "the module closed its caller socket",
                    )))
                }
            },
        },
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut off = 0;
    while off < bytes.len() {
        match sys::write_vectored(fd, &[std::io::IoSlice::new(&bytes[off..])]) {
            Ok(n) => off += n,
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
                let left = deadline.saturating_duration_since(Instant::now());
                let stop = host.wasi.stop_signal().waker();
                let outcome = sys::wait(&mut fds, &[stop], Some(left))?;
                if outcome.ready == 0 || outcome.woken {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "caller socket not writable",
                    )));
                }
            }
            Err(e) => return Err(Error::Io(e.into())),
        }
    }
    Ok(())
}

/// Spawns a session and waits until its connection is set up.
pub(crate) async fn start(
    runtime: &super::Runtime,
    watm: Arc<Watm>,
    mut job: Job,
) -> Result<SessionHandle, Error> {
    let (tx, ready) = oneshot::channel();
    job.watch = Some(SetupWatch::Task(tx));
    let waiting = spawn(runtime.inner(), watm, job).map(|handle| Waiting {
        handle,
        armed: true,
    });
    let result = ready.await;
    match (result, waiting.map(Waiting::done)) {
        (Ok(Ok(())), Some(handle)) => Ok(handle),
        (Ok(Err(e)), _) => Err(e),
        _ => Err(Error::Engine(
            "session thread ended without a result".into(),
        )),
    }
}

/// Starts a session without waiting for it: `on_setup` hears how setup
/// ended, on the session's thread (or on this one if the session never
/// starts). Nothing stops the session on the starter's behalf, so its only
/// bounds are the setup deadline and the runtime's shutdown.
pub(crate) fn launch(runtime: &super::Runtime, watm: Arc<Watm>, mut job: Job, on_setup: SetupHook) {
    job.watch = Some(SetupWatch::Hook(on_setup));
    spawn(runtime.inner(), watm, job);
}

/// Held while [`start`] waits for setup. Dropped while still armed (the
/// future was dropped), it stops the session: nobody else has its handle yet.
struct Waiting {
    handle: SessionHandle,
    armed: bool,
}

impl Waiting {
    fn done(mut self) -> SessionHandle {
        self.armed = false;
        self.handle.clone()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let shared = &self.handle.shared;
        if shared.end_setup(ABANDONED) {
            tracing::debug!(conn = shared.id, "setup abandoned by its starter; stopping");
            shared.kill(&self.handle.runtime.engine);
        } else {
            // Ready, but the handle never reached anyone.
            self.handle.stop();
        }
    }
}
