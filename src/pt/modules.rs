//! Which WATM a bridge uses, loaded once per file and shared by every connection.
//!
//! A bridge line names its module with `water-wasm=` (absolute path, `file:` URL or bare name in
//! the module directory) and may pin it with `water-sha256=`; with neither, the built-in
//! [`crate::DEFAULT_MODULE`] (`plain`) runs. Modules of the [catalogue](super::catalogue) are
//! found without touching the disk: a bare name of a built-in module (`shadowsocks` or
//! `shadowsocks.wasm`) whose pin, if any, matches, and any pin of a built-in module's bytes, even
//! beside a path (the digest says which bytes run, the path only where else to find them).
//!
//! tor hands us the same arguments on every SOCKS
//! connection to a bridge, so the expensive part (read, hash, compile) must happen once: files are
//! cached by (canonical path, length, modification time), and a file that changes on disk is
//! picked up on the next connection. [`Runtime::load`] dedups by SHA-256 underneath, so two paths
//! to identical bytes still share one compiled module.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use super::bridge::BridgeArgs;
use super::bridge_config::BridgeConfigDecl;
use super::catalogue::{self, Builtin};
use super::delivery::fetch::{FetchError, FetchSettings, Fetcher};
use super::file_stamp::RecentFiles;
use super::module_ref::ModuleRef;
use crate::runtime::{sha256, Error, Runtime, Watm};

/// A module file larger than this is refused before it is read: real WATMs are well under
/// 1 MiB, and a bridge line must not be able to make us read an arbitrary large file.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// Why the module a bridge asked for cannot be used. Each is a CONNECT-time failure on the
/// client and an `SMETHOD-ERROR` on the server.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A bare module name or a pin without `water-wasm`, but no module directory to look in.
    #[error("module {0:?} is named relative to the module directory, but there is none (use --module-dir)")]
    NoModuleDir(String),
    /// The file does not exist and no built-in module has the name or the pin.
    #[error(
        "module {what} is not built in (built-in: {}) and there is no file {}; put the module there",
        catalogue::names(), path.display()
    )]
    Missing { what: String, path: PathBuf },
    /// The file cannot be opened or read.
    #[error("cannot read module {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_MODULE_BYTES`].
    #[error("module {} is {len} bytes; the limit is {MAX_MODULE_BYTES}", path.display())]
    TooLarge { path: PathBuf, len: u64 },
    /// The module's SHA-256 is not the `water-sha256` pin.
    #[error("module {} has sha256 {actual}, but the bridge pins water-sha256={pinned}", path.display())]
    PinMismatch {
        path: PathBuf,
        pinned: String,
        actual: String,
    },
    /// The runtime refused the bytes (not wasm, not a WATM v1 or v0 module, ...).
    #[error("module {}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: Error,
    },
    /// The module is neither built in nor on disk, and downloading it from the bridge failed.
    #[error("module with water-sha256={pin}: download from the bridge failed: {source}")]
    Fetch {
        pin: String,
        #[source]
        source: FetchError,
    },
}

impl ModuleError {
    /// A short stable word for the kind of failure, used to report each kind once.
    pub fn kind(&self) -> &'static str {
        match self {
            ModuleError::NoModuleDir(_) => "no-module-dir",
            ModuleError::Missing { .. } => "module-missing",
            ModuleError::Read { .. } => "module-unreadable",
            ModuleError::TooLarge { .. } => "module-too-large",
            ModuleError::PinMismatch { .. } => "pin-mismatch",
            ModuleError::Invalid { .. } => "module-refused",
            ModuleError::Fetch { source, .. } => source.kind(),
        }
    }
}

/// A module's bridge-config declaration, or why it cannot be read.
type Declared = Result<Option<BridgeConfigDecl>, String>;

/// Identifies one version of one file without reading it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    path: PathBuf,
    len: u64,
    mtime: Option<SystemTime>,
}

/// Where the module a bridge line names comes from.
enum Source {
    /// The built-in default module.
    Default,
    Builtin(&'static Builtin),
    File(PathBuf),
}

/// Loads and caches the modules bridges ask for.
#[derive(Debug)]
pub struct ModuleStore {
    runtime: Runtime,
    module_dir: Option<PathBuf>,
    files: Mutex<HashMap<FileKey, Arc<Watm>>>,
    /// The same modules by the path they were read from, found with one `stat`.
    recent: RecentFiles,
    default: OnceLock<Arc<Watm>>,
    /// Bridge-config declarations by module digest, read when the bytes are at hand.
    decls: Mutex<HashMap<[u8; 32], Declared>>,
    /// Downloads of pinned modules from bridges, when enabled.
    fetcher: OnceLock<Fetcher>,
}

impl ModuleStore {
    /// A store loading into `runtime`; bare names resolve in `module_dir`.
    pub fn new(runtime: Runtime, module_dir: Option<PathBuf>) -> Self {
        Self {
            runtime,
            module_dir,
            files: Mutex::new(HashMap::new()),
            recent: RecentFiles::default(),
            default: OnceLock::new(),
            decls: Mutex::new(HashMap::new()),
            fetcher: OnceLock::new(),
        }
    }

    /// Lets [`ModuleStore::obtain`] download pinned modules from bridges (see
    /// [`super::delivery`]), keeping them in the module directory. Needs a module directory.
    pub fn with_fetch(self, settings: FetchSettings) -> Self {
        if let Some(dir) = &self.module_dir {
            let _ = self
                .fetcher
                .set(Fetcher::new(self.runtime.clone(), settings, dir.clone()));
        }
        self
    }

    /// The downloader, if downloads are enabled.
    pub fn fetcher(&self) -> Option<&Fetcher> {
        self.fetcher.get()
    }

    /// The module for a connection to the bridge at `bridge` (`host:port`): what
    /// [`ModuleStore::select`] finds, or, for a pin alone whose file is missing and a line
    /// that says where the bridge serves it (`water-fetch`), the module downloaded from the
    /// bridge within this call.
    pub async fn obtain(
        self: &Arc<Self>,
        args: BridgeArgs,
        bridge: &str,
    ) -> Result<Arc<Watm>, ModuleError> {
        let download = match (&args.wasm, &args.sha256, &args.fetch) {
            (None, Some(pin), Some(fetch)) => Some((*pin, fetch.clone())),
            _ => None,
        };
        match (
            self.select_blocking_off(args).await,
            download,
            self.fetcher(),
        ) {
            (Err(ModuleError::Missing { .. }), Some((pin, fetch)), Some(fetcher)) => fetcher
                .obtain(pin, bridge, &fetch)
                .await
                .map_err(|source| ModuleError::Fetch {
                    pin: hex::encode(pin),
                    source,
                }),
            (result, _, _) => result,
        }
    }

    /// Uses `watm` instead of the built-in module for bridges that name none (the standalone
    /// client's `--wasm`).
    pub fn with_default(self, watm: Arc<Watm>) -> Self {
        let _ = self.default.set(watm);
        self
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub fn module_dir(&self) -> Option<&Path> {
        self.module_dir.as_deref()
    }

    /// The module `args` select, checked against their pin. Blocking (it may read and compile
    /// a file); see [`ModuleStore::select_blocking_off`] for async callers.
    pub fn select(&self, args: &BridgeArgs) -> Result<Arc<Watm>, ModuleError> {
        self.load(self.source(args)?, args.sha256.as_ref())
    }

    /// The module from `source`, checked against `pin`.
    fn load(&self, source: Source, pin: Option<&[u8; 32]>) -> Result<Arc<Watm>, ModuleError> {
        match source {
            Source::Default => self.builtin(),
            Source::Builtin(b) => self.load_builtin(b),
            Source::File(path) => self.load_file(&path, pin),
        }
    }

    /// Where [`ModuleStore::select`] takes the module `args` name from, decided without
    /// touching the disk.
    fn source(&self, args: &BridgeArgs) -> Result<Source, ModuleError> {
        let pin = args.sha256.as_ref();
        if let Some(b) = pin.and_then(catalogue::by_sha256) {
            return Ok(Source::Builtin(b));
        }
        let path = match (&args.wasm, pin) {
            (None, None) => return Ok(Source::Default),
            (Some(ModuleRef::Path(p)), _) => p.clone(),
            (Some(ModuleRef::Name(name)), None) if catalogue::by_name(name).is_some() => {
                return Ok(Source::Builtin(catalogue::by_name(name).expect("checked")));
            }
            (wasm, pin) => {
                let dir = self.module_dir.as_deref().ok_or_else(|| {
                    ModuleError::NoModuleDir(match (wasm, pin) {
                        (Some(r), _) => r.to_string(),
                        (None, Some(pin)) => format!("{}.wasm", hex::encode(pin)),
                        (None, None) => String::new(),
                    })
                })?;
                match args.module_path(dir) {
                    Some(p) => p,
                    None => return Ok(Source::Default),
                }
            }
        };
        Ok(Source::File(path))
    }

    /// The bridge-config declaration of a module this store loaded: its own custom section, or
    /// the catalogue's entry for a built-in module. An unreadable declaration is an error (a
    /// bridge would otherwise publish a line that cannot work).
    pub fn bridge_config(&self, watm: &Watm) -> Result<Option<BridgeConfigDecl>, String> {
        let known = self
            .decls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&watm.sha256())
            .cloned();
        match (known, catalogue::by_sha256(&watm.sha256())) {
            (Some(d), _) => d,
            (None, Some(b)) => self.remember_decl(b.wasm),
            (None, None) => Ok(None),
        }
    }

    /// Reads (and remembers) the declaration of `wasm`'s bytes: the module's own custom
    /// section first, else the catalogue's entry.
    fn remember_decl(&self, wasm: &[u8]) -> Declared {
        let digest = sha256(wasm);
        let decl = BridgeConfigDecl::from_module(wasm).and_then(|own| {
            match (own, catalogue::by_sha256(&digest)) {
                (Some(d), _) => Ok(Some(d)),
                (None, Some(b)) => b
                    .bridge_config
                    .map(|text| {
                        BridgeConfigDecl::parse(text)
                            .map_err(|e| format!("built-in module {}: bridge config: {e}", b.name))
                    })
                    .transpose(),
                (None, None) => Ok(None),
            }
        });
        self.decls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(digest, decl.clone());
        decl
    }

    /// [`ModuleStore::select`] on tokio's blocking pool, so a first load (tens of
    /// milliseconds of compiling) does not stall the async workers.
    pub async fn select_blocking_off(
        self: &Arc<Self>,
        args: BridgeArgs,
    ) -> Result<Arc<Watm>, ModuleError> {
        // A module already compiled is a map lookup: the hand-over to the blocking pool (and
        // for a file, opening and hashing it again) would cost more than that on every SOCKS
        // connection.
        if let Some(watm) = self.already_loaded(&args) {
            return Ok(watm);
        }
        let source = self.source(&args)?;
        let pin = args.sha256;
        // A file read before and unchanged since: one `stat`, on this thread. Reading,
        // hashing and compiling a new or changed file stay on the blocking pool.
        if let Source::File(path) = &source {
            match self.recent.get(path) {
                Some(watm) if pin.is_none_or(|pin| pin == watm.sha256()) => return Ok(watm),
                _ => {}
            }
        }
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.load(source, pin.as_ref())).await {
            Ok(result) => result,
            Err(join) => Err(ModuleError::Invalid {
                path: PathBuf::new(),
                source: Error::Engine(format!("module loading task failed: {join}")),
            }),
        }
    }

    /// What [`ModuleStore::select`] returns for `args` when the runtime has already compiled
    /// it, found without touching the disk; `None` when it is not compiled yet, or is named by
    /// a path (whose file may have changed since).
    fn already_loaded(&self, args: &BridgeArgs) -> Option<Arc<Watm>> {
        let digest = match (&args.wasm, args.sha256) {
            // A pin names the bytes themselves: a built-in module (whatever `water-wasm`
            // says, as in `select`) or the cached `watm/<hex>.wasm` file of a pin-only line.
            (_, Some(pin)) if catalogue::by_sha256(&pin).is_some() => pin,
            (None, Some(pin)) => pin,
            (None, None) => return self.default.get().cloned(),
            (Some(ModuleRef::Name(name)), None) => catalogue::by_name(name)?.sha256(),
            (Some(_), _) => return None,
        };
        self.runtime.loaded(&digest)
    }

    fn builtin(&self) -> Result<Arc<Watm>, ModuleError> {
        if let Some(w) = self.default.get() {
            return Ok(w.clone());
        }
        let watm = self.load_builtin(catalogue::default_module())?;
        Ok(self.default.get_or_init(|| watm).clone())
    }

    fn load_builtin(&self, b: &'static Builtin) -> Result<Arc<Watm>, ModuleError> {
        // The runtime dedups by digest, so this compiles each built-in module once; the
        // catalogue's digest is computed once per process, not per connection.
        self.runtime
            .load_digested(b.wasm, b.sha256())
            .map_err(|source| ModuleError::Invalid {
                path: PathBuf::from(format!("<built-in {}>", b.name)),
                source,
            })
    }

    fn load_file(&self, path: &Path, pin: Option<&[u8; 32]>) -> Result<Arc<Watm>, ModuleError> {
        let read_err = |source| ModuleError::Read {
            path: path.to_path_buf(),
            source,
        };
        // Metadata comes from the opened file, so the key and the bytes describe the same inode.
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ModuleError::Missing {
                    what: match pin {
                        Some(pin) => format!("with water-sha256={}", hex::encode(pin)),
                        None => path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    },
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(read_err(e)),
        };
        let meta = file.metadata().map_err(read_err)?;
        if !meta.is_file() {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        if meta.len() > MAX_MODULE_BYTES {
            return Err(ModuleError::TooLarge {
                path: path.to_path_buf(),
                len: meta.len(),
            });
        }
        let key = FileKey {
            path: std::fs::canonicalize(path).map_err(read_err)?,
            len: meta.len(),
            mtime: meta.modified().ok(),
        };
        let cached = self.lock().get(&key).cloned();
        let watm = match cached {
            Some(w) => w,
            None => {
                let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
                (&mut file)
                    .take(MAX_MODULE_BYTES + 1)
                    .read_to_end(&mut bytes)
                    .map_err(read_err)?;
                // Checked before compiling: a wrong file is refused without spending the
                // compile time on it.
                check_pin(path, pin, &sha256(&bytes))?;
                // A bad declaration is kept and surfaces when a bridge asks for it.
                let _ = self.remember_decl(&bytes);
                let w = self
                    .runtime
                    .load(&bytes)
                    .map_err(|source| ModuleError::Invalid {
                        path: path.to_path_buf(),
                        source,
                    })?;
                self.lock().insert(key, w.clone());
                w
            }
        };
        check_pin(path, pin, &watm.sha256())?;
        self.recent.remember(path, &meta, &watm);
        Ok(watm)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Arc<Watm>>> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn check_pin(path: &Path, pin: Option<&[u8; 32]>, actual: &[u8; 32]) -> Result<(), ModuleError> {
    match pin {
        Some(pin) if pin != actual => Err(ModuleError::PinMismatch {
            path: path.to_path_buf(),
            pinned: hex::encode(pin),
            actual: hex::encode(actual),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "modules_tests.rs"]
mod tests;
