//! The client's download of a module it lacks, from the bridge in its line.
//!
//! [`Fetcher::obtain`] is what the [module store](crate::pt::modules::ModuleStore) calls for a
//! pinned module that is neither built in nor on disk. One download per pin runs at a time:
//! concurrent requests wait for it and share its result. The download dials the bridge's
//! delivery port through the runtime (the built-in Shadowsocks module, with the connector of
//! every bridge connection, so tor's proxy and bind addresses apply), then, in this order:
//! refuses a response announcing more than the limit before reading it, checks the bytes'
//! SHA-256 against the pin before anything else looks at them, loads them as a WATM that can
//! dial, and writes them atomically to the module directory. A failure is returned to every
//! waiter and forgotten, so the next connection tries again.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

use super::wire::{read_response, ReadError, Request, Response, Status};
use super::{client_config, delivery_module};
use crate::pt::bridge::FetchArgs;
use crate::runtime::{sha256, Dialer, NetPolicy, Role, Runtime, Watm};

/// The client's download limits.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// How the delivery port is reached (tor's proxy and bind addresses).
    pub policy: NetPolicy,
    /// The largest module accepted (`--max-fetch-mib`).
    pub max_bytes: u32,
    /// How long a whole download may take (`--fetch-timeout-secs`).
    pub timeout: Duration,
}

/// Default for [`FetchSettings::max_bytes`]: 16 MiB.
pub const DEFAULT_MAX_BYTES: u32 = 16 << 20;
/// Default for [`FetchSettings::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a module could not be downloaded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The bridge address cannot carry a delivery port.
    #[error("bad bridge address {0:?}")]
    Address(String),
    /// The whole download took longer than the limit.
    #[error("no complete answer within {0:?} (--fetch-timeout-secs)")]
    Timeout(Duration),
    /// The delivery session could not be set up.
    #[error("cannot reach the bridge's delivery port: {0}")]
    Connect(String),
    /// The bridge said no.
    #[error("{status} (status {code}, value {value})", code = status.code())]
    Refused { status: Status, value: u32 },
    /// The announced module is larger than accepted.
    #[error(
        "the bridge offers a module of {declared} bytes; the limit is {limit} (--max-fetch-mib)"
    )]
    TooLarge { declared: u32, limit: u32 },
    /// The response ended early.
    #[error("the response ended after {got} of {need} bytes")]
    Truncated { got: u64, need: u64 },
    /// The response is not a delivery response.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// Reading or writing the session failed.
    #[error("{0}")]
    Io(String),
    /// The bytes are not the pinned module.
    #[error("the bridge sent a module whose sha256 is {actual}, not the pinned one; refused")]
    PinMismatch { actual: String },
    /// The bytes are the pinned module, but the runtime cannot run it as a client.
    #[error("the pinned module is not a usable WATM: {0}")]
    Invalid(String),
}

impl FetchError {
    /// A short stable word for the kind of failure.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Address(_) => "fetch-address",
            FetchError::Timeout(_) => "fetch-timeout",
            FetchError::Connect(_) => "fetch-connect",
            FetchError::Refused { .. } => "fetch-refused",
            FetchError::TooLarge { .. } => "fetch-too-large",
            FetchError::Truncated { .. } => "fetch-truncated",
            FetchError::Malformed(_) => "fetch-malformed",
            FetchError::Io(_) => "fetch-io",
            FetchError::PinMismatch { .. } => "fetch-pin-mismatch",
            FetchError::Invalid(_) => "fetch-invalid-module",
        }
    }
}

impl From<ReadError> for FetchError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Malformed(w) => FetchError::Malformed(w.to_string()),
            ReadError::TooLarge { declared, limit } => FetchError::TooLarge { declared, limit },
            ReadError::Truncated { got, need } => FetchError::Truncated { got, need },
            ReadError::Io(e) => FetchError::Io(e.to_string()),
        }
    }
}

type Shared = Arc<OnceCell<Result<Arc<Watm>, FetchError>>>;

/// Downloads modules for one module store.
#[derive(Debug)]
pub struct Fetcher {
    runtime: Runtime,
    settings: FetchSettings,
    /// Where downloaded modules are kept (`<state>/watm`), as `<hex>.wasm`.
    dir: PathBuf,
    /// Downloads under way, by pin.
    running: Mutex<HashMap<[u8; 32], Shared>>,
    /// Modules downloaded by this process (so a directory that cannot keep them does not
    /// mean a download per connection).
    done: Mutex<HashMap<[u8; 32], Arc<Watm>>>,
}

impl Fetcher {
    pub fn new(runtime: Runtime, settings: FetchSettings, dir: PathBuf) -> Self {
        Self {
            runtime,
            settings,
            dir,
            running: Mutex::new(HashMap::new()),
            done: Mutex::new(HashMap::new()),
        }
    }

    /// The module pinned by `pin`, downloaded from the bridge at `bridge` (`host:port`, the
    /// SOCKS request's target) through `fetch`, or the result of a download of it already
    /// under way.
    pub async fn obtain(
        &self,
        pin: [u8; 32],
        bridge: &str,
        fetch: &FetchArgs,
    ) -> Result<Arc<Watm>, FetchError> {
        if let Some(w) = self.lock_done().get(&pin) {
            return Ok(w.clone());
        }
        let (cell, joined) = {
            let mut running = self.lock_running();
            match running.get(&pin) {
                Some(cell) => (cell.clone(), true),
                None => {
                    let cell = Shared::default();
                    running.insert(pin, cell.clone());
                    (cell, false)
                }
            }
        };
        if joined {
            tracing::debug!(
                "module {}: waiting for the download already under way",
                hex::encode(pin)
            );
        }
        let result = cell
            .get_or_init(|| self.download(pin, bridge.to_owned(), fetch.clone()))
            .await
            .clone();
        {
            let mut running = self.lock_running();
            if running.get(&pin).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                running.remove(&pin);
            }
        }
        if let Ok(w) = &result {
            self.lock_done().insert(pin, w.clone());
        }
        result
    }

    async fn download(
        &self,
        pin: [u8; 32],
        bridge: String,
        fetch: FetchArgs,
    ) -> Result<Arc<Watm>, FetchError> {
        let addr = delivery_address(&bridge, fetch.port)?;
        tracing::debug!(
            "module {}: downloading it from the bridge's delivery port",
            hex::encode(pin)
        );
        let limit = self.settings.max_bytes;
        // Compiled before the clock starts (the first time, or found in the compiled-module
        // cache): the limit is for the bridge's answer, not for this machine's compiler.
        let runtime = self.runtime.clone();
        let carrier = tokio::task::spawn_blocking(move || delivery_module(&runtime))
            .await
            .map_err(|e| FetchError::Connect(format!("loading the delivery module: {e}")))?
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let exchange = self.request(carrier, &addr, &fetch, pin);
        let bytes = tokio::time::timeout(self.settings.timeout, exchange)
            .await
            .map_err(|_| FetchError::Timeout(self.settings.timeout))??;
        // The pin first: nothing else looks at bytes that are not the pinned module.
        let actual = sha256(&bytes);
        if actual != pin {
            return Err(FetchError::PinMismatch {
                actual: hex::encode(actual),
            });
        }
        debug_assert!(bytes.len() as u64 <= u64::from(limit));
        let runtime = self.runtime.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let watm = runtime
                .load(&bytes)
                .and_then(|w| w.require(Role::Dialer).map(|()| w))
                .map_err(|e| FetchError::Invalid(e.to_string()))?;
            if let Err(e) = keep(&dir, &pin, &bytes) {
                tracing::warn!(
                    "downloaded module {} is used but not kept: {e}",
                    hex::encode(pin)
                );
            }
            Ok(watm)
        })
        .await
        .map_err(|e| FetchError::Invalid(format!("loading task failed: {e}")))?
    }

    /// One delivery exchange: the module's bytes, unchecked.
    async fn request(
        &self,
        carrier: Arc<Watm>,
        addr: &str,
        fetch: &FetchArgs,
        pin: [u8; 32],
    ) -> Result<Vec<u8>, FetchError> {
        let mut stream = Dialer::new(&self.runtime, carrier)
            .with_config(Some(client_config(&fetch.key)))
            .with_policy(self.settings.policy.clone())
            .dial("tcp", addr)
            .await
            .map_err(|e| FetchError::Connect(e.to_string()))?;
        let request = Request {
            max_len: self.settings.max_bytes,
            sha256: pin,
        };
        stream
            .write_all(&request.encode())
            .await
            .map_err(|e| FetchError::Io(format!("sending the request: {e}")))?;
        match read_response(&mut stream, self.settings.max_bytes).await? {
            Response::Module(bytes) => Ok(bytes),
            Response::Refused(status, value) => Err(FetchError::Refused { status, value }),
        }
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Shared>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_done(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Watm>>> {
        self.done.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The delivery port's address: the bridge's host with port `port`.
pub fn delivery_address(bridge: &str, port: u16) -> Result<String, FetchError> {
    if let Ok(addr) = bridge.parse::<SocketAddr>() {
        return Ok(SocketAddr::new(addr.ip(), port).to_string());
    }
    match bridge.rsplit_once(':') {
        Some((host, _)) if !host.is_empty() => Ok(format!("{host}:{port}")),
        _ => Err(FetchError::Address(bridge.to_owned())),
    }
}

/// Writes a verified module to `dir/<hex>.wasm`: a new private temporary file, synced, then
/// renamed, so a reader never sees half a module. Only into a directory that the module
/// store may trust later (owned by this user, not writable by others).
fn keep(dir: &Path, pin: &[u8; 32], bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    crate::sys::create_private_dir(dir)?;
    crate::runtime::check_private_dir(dir, "the module directory")?;
    let hex = hex::encode(pin);
    let tmp = dir.join(format!(
        ".{hex}.{}.{}.tmp",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = crate::sys::create_private_file(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, dir.join(format!("{hex}.wasm"))));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_address_keeps_the_host() {
        let a = |b| delivery_address(b, 7000).unwrap();
        assert_eq!(a("192.0.2.1:443"), "192.0.2.1:7000");
        assert_eq!(a("[2001:db8::1]:443"), "[2001:db8::1]:7000");
        assert_eq!(a("bridge.example:443"), "bridge.example:7000");
        assert!(delivery_address("noport", 1).is_err());
        assert!(delivery_address(":443", 1).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn kept_atomically_and_only_in_a_private_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("water-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pin = sha256(b"module");
        keep(&dir, &pin, b"module").unwrap();
        let file = dir.join(format!("{}.wasm", hex::encode(pin)));
        assert_eq!(std::fs::read(&file).unwrap(), b"module");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary left"
        );

        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = keep(&dir, &pin, b"module").unwrap_err();
        assert!(
            err.to_string().contains("group or others may write"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
