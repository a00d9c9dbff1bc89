//! One connection = one instance = one thread.
//!
//! A session runs the WATM v1 call order on its own OS thread, because
//! `watm_start_v1` blocks for the connection's whole life:
//!
//! 1. instantiate from the module's shared `InstancePre`;
//! 2. `_initialize` or `_start` if exported (`proc_exit(0)` counts as success);
//! 3. `watm_init_v1()`;
//! 4. insert the caller socket and call the role export
//!    (`watm_dial_v1`, `watm_dial_fixed_v1`, `watm_accept_v1` or
//!    `watm_associate_v1`), which returns the network fd;
//! 5. insert the module's end of the control pipe, `watm_ctrlpipe_v1(fd)`;
//! 6. report success to whoever is waiting, then `watm_start_v1()`.
//!
//! When the thread ends, the store and with it every socket of the instance
//! are dropped.

use super::error::Error;
use super::host::{self, Host, Inbound};
use super::module::{Role, Watm};
use super::net::NetPolicy;
use super::RuntimeInner;
use crate::sys::{self, HostFd, PollFd, PollFlags};
use crate::wasi::{Entry, Errno, HostTrap, Socket, StopSignal, WasiCtx};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};
use wasmtime::{Store, UpdateDeadline};

/// Bytes the runtime writes on the caller socket once the role call has
/// succeeded (or failed), before the module starts moving data. The SOCKS
/// front uses it to send its reply only once the transport is up, without
/// taking the socket back from the instance.
pub struct Replies {
    pub ready: Vec<u8>,
    pub failed: FailureReply,
}

/// Computes the bytes to send when setup failed, from the reason.
pub type FailureReply = Box<dyn FnOnce(&Error) -> Vec<u8> + Send>;

/// Everything one session needs.
pub(crate) struct Job {
    pub role: Role,
    /// The caller-side socket (`None` for a relay).
    pub caller: Option<HostFd>,
    /// The connection `water_accept` returns (listener and relay).
    pub inbound: Option<HostFd>,
    /// The remote `water_dial_fixed` dials.
    pub fixed_remote: Option<(String, String)>,
    pub config: Option<Arc<[u8]>>,
    pub policy: Arc<NetPolicy>,
    pub replies: Option<Replies>,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEnd {
    /// `watm_start_v1` returned 0: one side of the connection closed.
    Closed,
    /// `watm_start_v1` returned `-ECANCELED` after a stop request.
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
    done: watch::Sender<Option<SessionEnd>>,
}

impl SessionShared {
    /// Ends the instance now: its waits return, wasm code traps at the next
    /// epoch check.
    pub(crate) fn force_stop(&self, engine: &wasmtime::Engine) {
        if self.done.borrow().is_none() {
            tracing::warn!(conn = self.id, "module did not stop in time; forcing it");
        }
        self.stop.kill();
        engine.increment_epoch();
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

    pub fn is_finished(&self) -> bool {
        self.shared.done.borrow().is_some()
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
    runtime.ticker.schedule_force_stop(
        Instant::now() + runtime.limits.stop_grace,
        Arc::downgrade(shared),
    );
}

/// Starts a session thread. The returned receiver yields once the role call
/// and `watm_ctrlpipe_v1` are done (or have failed).
pub(crate) fn spawn(
    runtime: &Arc<RuntimeInner>,
    watm: Arc<Watm>,
    job: Job,
) -> Result<(SessionHandle, oneshot::Receiver<Result<(), Error>>), Error> {
    watm.require(job.role)?;
    let permit = runtime.admit()?;
    let shared = Arc::new(SessionShared {
        id: permit.id,
        stop: Arc::new(StopSignal::new()?),
        stop_requested: AtomicBool::new(false),
        done: watch::Sender::new(None),
    });
    runtime.register(&shared);
    let (tx, rx) = oneshot::channel();
    let handle = SessionHandle {
        shared: shared.clone(),
        runtime: runtime.clone(),
    };
    let rt = runtime.clone();
    runtime
        .threads
        .execute(Box::new(move || {
            let id = shared.id;
            let end = run(&rt, &watm, job, shared.clone(), tx);
            rt.unregister(id);
            drop(permit);
            shared.done.send_replace(Some(end));
        }))
        .map_err(Error::Io)?;
    Ok((handle, rx))
}

/// The body of a session thread.
fn run(
    rt: &RuntimeInner,
    watm: &Watm,
    mut job: Job,
    shared: Arc<SessionShared>,
    ready: oneshot::Sender<Result<(), Error>>,
) -> SessionEnd {
    let id = shared.id;
    let replies = job.replies.take();
    let mut store = new_store(rt, &mut job, shared);
    let mut caller_fd = None;
    let outcome = setup(watm, &mut store, job, &mut caller_fd);
    let outcome = outcome.and_then(|()| {
        if let (Some(r), Some(fd)) = (&replies, caller_fd) {
            write_to_guest_socket(&store, fd, &r.ready)?;
        }
        Ok(())
    });
    match outcome {
        Ok(()) => {
            let _ = ready.send(Ok(()));
        }
        Err(mut e) => {
            if let Some((address, source)) = store.data_mut().last_dial_error.take() {
                if !matches!(e, Error::Trap { .. }) {
                    e = Error::Dial { address, source };
                }
            }
            tracing::info!(conn = id, "connection setup failed: {e}");
            if let (Some(r), Some(fd)) = (replies, caller_fd) {
                let _ = write_to_guest_socket(&store, fd, &(r.failed)(&e));
            }
            let end = SessionEnd::Failed(e.to_string());
            let _ = ready.send(Err(e));
            return end;
        }
    }
    let start = Instant::now();
    let end = match call(&mut store, "watm_start_v1", None) {
        Ok(0) => SessionEnd::Closed,
        Ok(r) if Errno::from_negative(r) == Some(Errno::CANCELED) => SessionEnd::Cancelled,
        Ok(r) => SessionEnd::Failed(match Errno::from_negative(r) {
            Some(errno) => format!("watm_start_v1 returned -{errno}"),
            None => format!("watm_start_v1 returned {r}"),
        }),
        Err(e) => SessionEnd::Failed(e.to_string()),
    };
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

fn new_store(rt: &RuntimeInner, job: &mut Job, shared: Arc<SessionShared>) -> Store<Host> {
    let host = Host {
        wasi: WasiCtx::new(job.config.take(), shared.stop.clone(), shared.id),
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
                "module ran wasm code too long without calling the host",
            ));
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

/// Steps 1-5 of the call order.
fn setup(
    watm: &Watm,
    store: &mut Store<Host>,
    job: Job,
    caller_fd: &mut Option<u32>,
) -> Result<(), Error> {
    initialize(watm, store)?;
    connect_role(store, job, caller_fd)
}

/// Steps 1-3: instantiate, run the entry point, `watm_init_v1` (which reads the config).
fn initialize(watm: &Watm, store: &mut Store<Host>) -> Result<(), Error> {
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
    expect_zero(call(store, "watm_init_v1", None)?, "watm_init_v1")
}

/// Steps 4-5: the role call with the caller socket, then the control pipe.
fn connect_role(
    store: &mut Store<Host>,
    job: Job,
    caller_fd: &mut Option<u32>,
) -> Result<(), Error> {
    let role_export = job.role.export();
    if job.role == Role::Relay {
        // `watm_associate_v1` returns an errno, not an fd: the module keeps
        // both of its sockets (from `water_accept` and `water_dial_fixed`).
        expect_zero(call(store, role_export, None)?, role_export)?;
    } else {
        let caller = job
            .caller
            .ok_or_else(|| Error::Io(std::io::Error::other("this role needs a caller socket")))?;
        let fd = insert(store, caller, "caller socket")?;
        *caller_fd = Some(fd);
        let net_fd = call(store, role_export, Some(fd as i32))?;
        if let Some(errno) = Errno::from_negative(net_fd) {
            return Err(Error::Guest {
                call: role_export,
                errno,
            });
        }
        if store.data().wasi.fds.socket(net_fd).is_err() {
            return Err(Error::BogusFd {
                call: role_export,
                fd: net_fd,
            });
        }
    }
    let ctrl_fd = store
        .data_mut()
        .wasi
        .fds
        .insert(Entry::Control {
            nonblocking: false,
            delivered: false,
        })
        .map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "cannot give the control channel to the module: {e}"
            )))
        })?;
    expect_zero(
        call(store, "watm_ctrlpipe_v1", Some(ctrl_fd as i32))?,
        "watm_ctrlpipe_v1",
    )
}

fn insert(store: &mut Store<Host>, fd: HostFd, what: &str) -> Result<u32, Error> {
    let r = host::insert_socket(store.data_mut(), fd);
    u32::try_from(r).map_err(|_| {
        Error::Io(std::io::Error::other(format!(
            "cannot give the {what} to the module: {}",
            Errno::from_negative(r).unwrap_or(Errno::IO)
        )))
    })
}

fn expect_zero(ret: i32, call: &'static str) -> Result<(), Error> {
    match Errno::from_negative(ret) {
        None if ret == 0 => Ok(()),
        Some(errno) => Err(Error::Guest { call, errno }),
        None => Err(Error::Guest {
            call,
            errno: Errno::INVAL,
        }),
    }
}

/// Calls a `() -> i32` or `(i32) -> i32` export by name.
fn call(store: &mut Store<Host>, name: &'static str, arg: Option<i32>) -> Result<i32, Error> {
    let instance = store.data().instance.ok_or(Error::MissingExport(name))?;
    let trap = |e: wasmtime::Error| Error::Trap {
        call: name,
        reason: format!("{e:#}"),
    };
    match arg {
        None => instance
            .get_typed_func::<(), i32>(&mut *store, name)
            .map_err(|_| Error::MissingExport(name))?
            .call(&mut *store, ())
            .map_err(trap),
        Some(a) => instance
            .get_typed_func::<i32, i32>(&mut *store, name)
            .map_err(|_| Error::MissingExport(name))?
            .call(&mut *store, a)
            .map_err(trap),
    }
}

/// Writes `bytes` to a socket in the guest's table, waiting (bounded) if the
/// socket buffer is full.
fn write_to_guest_socket(store: &Store<Host>, fd: u32, bytes: &[u8]) -> Result<(), Error> {
    let host = store.data();
    let sock: &Socket = host.wasi.fds.socket(fd as i32).map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "the module closed its caller socket ({e})"
        )))
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut off = 0;
    while off < bytes.len() {
        match sys::write_vectored(sock.fd(), &[std::io::IoSlice::new(&bytes[off..])]) {
            Ok(n) => off += n,
            Err(rustix::io::Errno::AGAIN) => {
                let mut fds = [
                    PollFd::from_borrowed_fd(sock.fd(), PollFlags::OUT),
                    PollFd::from_borrowed_fd(
                        host.wasi.stop_signal().waker().as_fd(),
                        PollFlags::IN,
                    ),
                ];
                let left = deadline.saturating_duration_since(Instant::now());
                if sys::poll(&mut fds, Some(left))? == 0 || !fds[1].revents().is_empty() {
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

/// Instantiates `watm` with `config` on a session thread and runs it up to `watm_init_v1`,
/// then drops the instance. A bridge does this at start-up so that a module that refuses its
/// config fails the launch with the module's own words (what it wrote to stderr) instead of
/// failing every connection later.
pub(crate) async fn check_init(
    runtime: &super::Runtime,
    watm: Arc<Watm>,
    config: Option<Arc<[u8]>>,
) -> Result<(), String> {
    let rt = runtime.inner().clone();
    let permit = rt.admit().map_err(|e| e.to_string())?;
    let shared = Arc::new(SessionShared {
        id: permit.id,
        stop: Arc::new(StopSignal::new().map_err(|e| e.to_string())?),
        stop_requested: AtomicBool::new(false),
        done: watch::Sender::new(None),
    });
    let (tx, rx) = oneshot::channel();
    let thread_rt = rt.clone();
    rt.threads
        .execute(Box::new(move || {
            let mut job = Job {
                role: Role::Listener,
                caller: None,
                inbound: None,
                fixed_remote: None,
                config,
                policy: Arc::new(NetPolicy::default()),
                replies: None,
            };
            let mut store = new_store(&thread_rt, &mut job, shared);
            store.data_mut().wasi.captured_stderr = Some(String::new());
            let result = initialize(&watm, &mut store).map_err(|e| {
                let said = store.data_mut().wasi.captured_stderr.take();
                match said.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                    Some(said) => {
                        let lines: Vec<_> = said
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .collect();
                        format!("{e}; the module says: {}", lines.join("; "))
                    }
                    None => e.to_string(),
                }
            });
            drop(store);
            drop(permit);
            let _ = tx.send(result);
        }))
        .map_err(|e| e.to_string())?;
    rx.await
        .unwrap_or_else(|_| Err("the start-up check ended without a result".into()))
}

/// Spawns a session and waits until its connection is set up.
pub(crate) async fn start(
    runtime: &super::Runtime,
    watm: Arc<Watm>,
    job: Job,
) -> Result<SessionHandle, Error> {
    let (handle, ready) = spawn(runtime.inner(), watm, job)?;
    match ready.await {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Engine(
            "session thread ended without a result".into(),
        )),
    }
}
