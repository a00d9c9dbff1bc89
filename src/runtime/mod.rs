//! The WATER runtime on wasmtime (WATM v1 modules, and v0 ones).
//!
//! One [`Runtime`] per process holds the wasmtime `Engine` (with the pooling
//! allocator and epoch interruption), compiles each distinct module once
//! ([`Watm`], shared by every connection through an `InstancePre`), and
//! runs each connection in its own instance on its own thread
//! ([`session`]). The role APIs — [`Dialer`], [`Listener`], [`Relay`] — are
//! thin layers that decide which sockets a session starts with.
//!
//! Which exports a session calls, and which imports the module gets, depend
//! on the module's [`Generation`]: each has a [`driver`].

mod artifact_cache;
mod binding;
mod cancel;
mod dialer;
mod driver;
mod error;
mod exports;
mod finish;
mod host;
mod listener;
mod module;
mod net;
mod relay;
mod residency;
mod session;
mod stream;
mod threads;
mod ticker;
mod v0;
mod v1;

pub use crate::wasi::OpenSocket;
pub use cancel::{run_cancellable, run_task_cancellable};
pub use dialer::Dialer;
pub use driver::Generation;
pub use error::Error;
pub use listener::{into_fd, open_direct, open_with, Listener, Server};
pub use module::{sha256, Role, Watm};
pub use net::{resolve, AllowList, Connector, DirectConnector, NetPolicy};
pub use relay::Relay;
pub use residency::RESIDENT_BUDGET;
pub use session::{Replies, SessionEnd, SessionHandle, SetupHook};
pub use stream::WaterStream;

pub(crate) use artifact_cache::check_private_dir;
use artifact_cache::ArtifactCache;
use driver::Linkers;
use session::SessionShared;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use ticker::Ticker;
use tokio::sync::watch;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig};

/// Resource limits applied to every instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory one instance may grow to.
    pub max_memory: usize,
    /// Wasm stack size of one instance.
    pub wasm_stack: usize,
    /// How long a module may run wasm code without a host call that waits or
    /// moves data before it is stopped.
    pub max_compute: Duration,
    /// Most connections (instances) open at once; more are refused.
    pub max_connections: usize,
    /// How long a module asked to stop may take before it is forced.
    pub stop_grace: Duration,
    /// How long a connection may take to become ready (instantiation, the
    /// module's init and role calls, `watm_ctrlpipe_v1`) before it is
    /// stopped by force. A module waiting in setup for a peer that never
    /// sends would otherwise hold its slot, thread and sockets for good.
    pub setup_timeout: Duration,
    /// How long data a module wrote to a network socket may go unread by
    /// the peer before the connection fails (`TCP_USER_TIMEOUT`). Without
    /// it, a peer that stops reading holds the connection, its thread and
    /// its sockets until TCP's own retries give up many minutes later, even
    /// after the caller has gone.
    pub network_stall: Duration,
    /// Send and receive buffer size of every socket a module is given
    /// (`SO_SNDBUF` / `SO_RCVBUF`), or `None` for the kernel's autotuning.
    /// Autotuning suits a few connections over long paths; a bridge carrying
    /// a thousand busy connections can run the kernel out of TCP memory with
    /// it (each socket may grow to several MiB), after which the kernel drops
    /// packets and connections stall. A fixed size bounds kernel memory to
    /// about four times this per socket, at the cost of throughput over
    /// paths whose bandwidth-delay product exceeds it.
    pub socket_buffer: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_memory: 64 << 20,
            wasm_stack: 512 << 10,
            max_compute: Duration::from_secs(10),
            max_connections: 10_000,
            stop_grace: Duration::from_secs(2),
            setup_timeout: Duration::from_secs(60),
            network_stall: Duration::from_secs(120),
            socket_buffer: None,
        }
    }
}

/// How to build a [`Runtime`].
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    pub limits: Limits,
    /// Where compiled modules are cached across restarts (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Session threads kept waiting for the next connection once theirs
    /// ended (starting a thread costs more than the rest of a session's
    /// setup).
    pub idle_threads: usize,
    /// How long such a thread waits before exiting.
    pub thread_keepalive: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            cache_dir: None,
            idle_threads: 64,
            thread_keepalive: Duration::from_secs(10),
        }
    }
}

/// The shared runtime: engine, compiled modules, live sessions.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

pub(crate) struct RuntimeInner {
    engine: Engine,
    linkers: Linkers,
    limits: Limits,
    cache: Option<ArtifactCache>,
    modules: Mutex<HashMap<[u8; 32], Arc<Watm>>>,
    ticker: Arc<Ticker>,
    pub(crate) threads: Arc<threads::Threads>,
    sessions: Mutex<HashMap<u64, Weak<SessionShared>>>,
    residency: residency::Residency,
    /// Connections open: counted under the watch's lock, so that admissions and releases on
    /// different threads can neither exceed the limit nor publish their counts out of order
    /// (which could leave [`Runtime::wait_idle`] waiting with nothing open).
    live: watch::Sender<usize>,
    next_id: AtomicU64,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker.shutdown();
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.inner.limits)
            .field("live", &self.live_connections())
            .finish()
    }
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, Error> {
        let (engine, limits) = build_engine_that_fits(config.limits)?;
        let linkers = Linkers::new(&engine).map_err(Error::engine)?;
        let cache = match &config.cache_dir {
            Some(dir) => match ArtifactCache::open(dir, &engine) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("compiled-module cache disabled ({}): {e}", dir.display());
                    None
                }
            },
            None => None,
        };
        // The tick period bounds how precisely compute limits and grace
        // periods are enforced; 100 ms keeps the idle cost negligible.
        let period =
            (limits.max_compute / 10).clamp(Duration::from_millis(5), Duration::from_millis(100));
        let ticker = Ticker::start(engine.clone(), period)?;
        // The wasm stack lives on the session thread's stack, beside the
        // host's own frames.
        let threads = threads::Threads::new(
            limits.wasm_stack + (512 << 10),
            config.idle_threads,
            config.thread_keepalive,
        );
        let residency = residency::Residency::new(&engine);
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linkers,
                limits,
                cache,
                modules: Mutex::new(HashMap::new()),
                ticker,
                threads,
                sessions: Mutex::new(HashMap::new()),
                residency,
                live: watch::Sender::new(0),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Loads a module from its bytes: compiled (or read from the disk cache)
    /// the first time a given SHA-256 is seen, shared afterwards.
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<Watm>, Error> {
        self.load_digested(wasm, sha256(wasm))
    }

    /// [`Runtime::load`] for bytes whose SHA-256 the caller already knows (a built-in
    /// module's, computed once per process), so that finding a loaded module costs a map
    /// lookup rather than hashing the whole module on every connection. `sha` must be the
    /// digest of `wasm`.
    pub fn load_digested(&self, wasm: &[u8], sha: [u8; 32]) -> Result<Arc<Watm>, Error> {
        debug_assert_eq!(sha, sha256(wasm), "load_digested: wrong digest");
        let mut modules = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = modules.get(&sha) {
            return Ok(w.clone());
        }
        let engine = &self.inner.engine;
        let cached = self.inner.cache.as_ref().and_then(|c| c.get(engine, &sha));
        let from_cache = cached.is_some();
        let module = match cached {
            Some(m) => m,
            None => {
                let started = std::time::Instant::now();
                let m = Module::from_binary(engine, wasm)
                    .map_err(|e| Error::InvalidModule(format!("{e:#}")))?;
                tracing::debug!(
                    "compiled module {} ({} bytes) in {:?}",
                    hex::encode(sha),
                    wasm.len(),
                    started.elapsed()
                );
                m
            }
        };
        let watm = Arc::new(Watm::link(&self.inner.linkers, module, sha)?);
        if !from_cache {
            if let Some(c) = &self.inner.cache {
                c.put(&sha, watm.module());
            }
        }
        modules.insert(sha, watm.clone());
        Ok(watm)
    }

    /// The module with SHA-256 `sha`, if this runtime has loaded it.
    pub fn loaded(&self, sha: &[u8; 32]) -> Option<Arc<Watm>> {
        let modules = self.inner.modules.lock().unwrap_or_else(|p| p.into_inner());
        modules.get(sha).cloned()
    }

    /// Reads and loads a module file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<Watm>, Error> {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot read module {}: {e}", path.display()),
            ))
        })?;
        self.load(&bytes)
    }

    /// Runs `watm` up to `watm_init_v1` with `config` and throws the instance away: whether
    /// the module accepts this config, with its own reason when it does not. Uses one
    /// connection slot while it runs.
    pub async fn check_init(&self, watm: Arc<Watm>, config: Option<&[u8]>) -> Result<(), String> {
        session::check_init(self, watm, config.map(Arc::from)).await
    }

    /// Number of connections (instances) currently open.
    pub fn live_connections(&self) -> usize {
        *self.inner.live.borrow()
    }

    /// Asks every open connection to stop.
    pub fn stop_all(&self) {
        let sessions: Vec<_> = self
            .inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for s in sessions {
            session::request_stop(&s, &self.inner);
        }
    }

    /// Resolves once no connection is open.
    pub async fn wait_idle(&self) {
        let mut rx = self.inner.live.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    pub(crate) fn inner(&self) -> &Arc<RuntimeInner> {
        &self.inner
    }
}

/// Admission of one connection under the connection limit; dropping it
/// releases the slot.
pub(crate) struct Permit {
    pub id: u64,
    rt: Arc<RuntimeInner>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut n = 0;
        self.rt.live.send_modify(|live| {
            *live -= 1;
            n = *live;
        });
        self.rt.ticker.session_ended();
        self.rt.residency.ended(n);
    }
}

impl RuntimeInner {
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Permit, Error> {
        let max = self.limits.max_connections;
        // The count this admission saw, and made if it was admitted.
        let mut live = 0;
        let admitted = self.live.send_if_modified(|open| {
            live = *open;
            if live >= max {
                return false;
            }
            *open += 1;
            live += 1;
            true
        });
        if !admitted {
            return Err(Error::TooManyConnections(live));
        }
        self.ticker.session_started();
        self.residency.started(live);
        Ok(Permit {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            rt: self.clone(),
        })
    }

    pub(crate) fn register(&self, s: &Arc<SessionShared>) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(s.id, Arc::downgrade(s));
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Epoch ticks a module may compute without waiting or moving data.
    pub(crate) fn tick_budget(&self) -> u32 {
        let ticks = self.limits.max_compute.as_nanos() / self.ticker.period.as_nanos().max(1);
        u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
    }
}

/// Bytes of a pool slot's memory kept resident between instances, within the pool-wide
/// [`RESIDENT_BUDGET`] (see `residency`).
pub(crate) const KEEP_RESIDENT: usize = 128 << 10;

/// Memory mappings one open connection adds, with room to spare: its thread's stack and
/// the two signal stacks (Rust's and wasmtime's), each beside a guard page, and its
/// instance's linear memory, split around the module's memory image (10 on Linux x86-64).
const MAPPINGS_PER_CONNECTION: u64 = 12;

/// Mappings left for the rest of the process: the executable and libraries, the pool's
/// reservations, tokio's threads and the short-lived helper threads.
const MAPPINGS_RESERVED: u64 = 2_000;

/// Lowers the connection limit to what the platform's limit on memory mappings leaves room
/// for (`vm.max_map_count`, 65,530 by default on Linux: about 5,300 connections), and says
/// so once. Past that limit a new session thread cannot map its signal stack, and the Rust
/// runtime aborts the whole process; below it, one connection too many is refused like any
/// other beyond `--max-connections`.
fn fit_mapping_limit(limits: &mut Limits) {
    let Some(max) = crate::sys::max_memory_mappings() else {
        return;
    };
    let room = connections_for_mappings(max);
    if limits.max_connections > room {
        tracing::info!(
            "vm.max_map_count {max} leaves room for about {room} connections \
             ({MAPPINGS_PER_CONNECTION} memory mappings each): serving at most {room}, not {} \
             (raise it, e.g. `sysctl vm.max_map_count=262144`, to allow more)",
            limits.max_connections
        );
        limits.max_connections = room;
    }
}

/// How many connections `max` memory mappings leave room for (at least one).
fn connections_for_mappings(max: u64) -> usize {
    let room = max.saturating_sub(MAPPINGS_RESERVED) / MAPPINGS_PER_CONNECTION;
    usize::try_from(room).unwrap_or(usize::MAX).max(1)
}

/// [`build_engine`], with fewer connection slots when the address space cannot hold all of
/// them. The pool reserves `max_connections` x (`max_memory` + a guard) of address space up
/// front (about 640 GiB with the defaults): free on a 64-bit machine, but refused under
/// `ulimit -v` or strict overcommit. Rather than not starting, the runtime then halves the
/// slots until the reservation succeeds, lowers the connection limit to match, and says in
/// one line which options trade capacity for address space.
fn build_engine_that_fits(mut limits: Limits) -> Result<(Engine, Limits), Error> {
    fit_mapping_limit(&mut limits);
    let wanted = limits.max_connections;
    loop {
        match build_engine(&limits) {
            Ok(engine) => {
                if limits.max_connections < wanted {
                    tracing::warn!(
                        "could not reserve address space for {wanted} connections of {} MiB; \
                         serving at most {} (lower --max-memory-mib, or raise ulimit -v or \
                         vm.overcommit_memory, to allow more)",
                        limits.max_memory >> 20,
                        limits.max_connections
                    );
                }
                return Ok((engine, limits));
            }
            Err(_) if limits.max_connections > 1 => limits.max_connections /= 2,
            Err(e) => {
                return Err(Error::Engine(format!(
                    "{e}; even one connection's memory ({} MiB) cannot be reserved: lower \
                     --max-memory-mib or raise ulimit -v",
                    limits.max_memory >> 20
                )))
            }
        }
    }
}

fn build_engine(limits: &Limits) -> Result<Engine, Error> {
    let slots = u32::try_from(limits.max_connections)
        .unwrap_or(u32::MAX)
        .max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(slots)
        .total_memories(slots)
        .total_tables(slots)
        .max_memory_size(limits.max_memory)
        // A reused slot is reset by restoring the pages its memory touched
        // rather than by returning them to the OS and faulting them back in
        // on the next connection: that is where a session's guest stack and
        // buffers live. The pool as a whole keeps at most RESIDENT_BUDGET
        // this way (see `residency`). A table is a page or so, which the
        // runtime cannot give back itself, so tables keep nothing: measured,
        // that costs no connection rate (2,054-2,118 against 2,068-2,134
        // plain connections/s in the same runs), and a flood of 10,000
        // leaves 40 MB less behind.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(0)
        // Where the kernel can say which pages a slot really touched (Linux 6.7+), only
        // those are zeroed: zeroing all of the kept start of a slot a probe hardly used
        // would fault its pages in, so a flood of silent connections would leave more
        // memory resident after it closed than while it was open.
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .max_wasm_stack(limits.wasm_stack)
        // Reserve only the memory a module may use (plus a small guard)
        // per pool slot, so thousands of slots fit comfortably in the
        // address space; bounds checks are explicit instead.
        .memory_reservation(limits.max_memory as u64)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(Error::engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two permits released at once on two threads: what is published last must be what is
    /// open (0), or `wait_idle` would wait for good.
    #[test]
    fn releases_on_two_threads_leave_the_count_at_zero() {
        let rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let inner = rt.inner().clone();
        let permits = [inner.admit().unwrap(), inner.admit().unwrap()];
        assert_eq!(*inner.live.borrow(), 2);
        let start = Arc::new(std::sync::Barrier::new(permits.len()));
        let releases: Vec<_> = permits
            .into_iter()
            .map(|permit| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    drop(permit);
                })
            })
            .collect();
        for release in releases {
            release.join().unwrap();
        }
        assert_eq!(*inner.live.borrow(), 0);
    }

    /// Linux's default `vm.max_map_count` leaves room for about 5,300 connections, below the
    /// default connection limit; a raised one for all of them; a tiny one still for one.
    #[test]
    fn connection_limit_fits_the_mapping_limit() {
        assert_eq!(connections_for_mappings(65_530), 5_294);
        assert!(connections_for_mappings(262_144) > Limits::default().max_connections);
        assert_eq!(connections_for_mappings(100), 1);
        let mut limits = Limits {
            max_connections: 7,
            ..Limits::default()
        };
        fit_mapping_limit(&mut limits);
        assert_eq!(limits.max_connections, 7, "a low limit is left alone");
    }
}
