//! The state machine behind the `watm_*_v1` exports.
//!
//! Public only so that [`export_transport!`](crate::export_transport) can
//! reach it from the transport's crate; not part of the SDK's API.
//!
//! A WATER runtime drives one instance through one connection:
//! `watm_init_v1`, then one role function (`watm_dial_v1`,
//! `watm_dial_fixed_v1`, `watm_accept_v1` or `watm_associate_v1`), then
//! `watm_ctrlpipe_v1`, then `watm_start_v1`, which blocks for the connection's
//! life. Calls out of that order get an errno rather than undefined behaviour.
//!
//! The v0 exports (`_water_*`) drive the same state machine in the same
//! order; they differ only in the imports the role functions call.

use std::cell::RefCell;
use std::io::Read;
use std::thread::LocalKey;

use crate::ffi::{self, Fd};
use crate::{CONFIG_PATH, Errno, MAX_CONFIG_LEN, Role, Transport, worker};

/// The descriptors of the connection a role function set up.
pub(crate) struct Connection {
    pub(crate) role: Role,
    pub(crate) caller: Fd,
    pub(crate) network: Fd,
}

/// Everything one module instance knows about its connection.
pub struct Session<T> {
    transport: Option<T>,
    ctrl: Option<Fd>,
    connection: Option<Connection>,
    started: bool,
}

impl<T> Default for Session<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Session<T> {
    /// An instance before `watm_init_v1`.
    pub const fn new() -> Self {
        Self {
            transport: None,
            ctrl: None,
            connection: None,
            started: false,
        }
    }
}

/// Runs `f` on the session stored in `key` and returns its result.
///
/// The session stays borrowed while an export runs, including the whole of
/// `watm_start_v1`; an export entered meanwhile (which a correct runtime never
/// does) gets `-EBUSY` instead of a panic.
pub fn with<T: 'static>(
    key: &'static LocalKey<RefCell<Session<T>>>,
    f: impl FnOnce(&mut Session<T>) -> i32,
) -> i32 {
    key.try_with(|cell| match cell.try_borrow_mut() {
        Ok(mut session) => f(&mut session),
        Err(_) => Errno::BUSY.to_return(),
    })
    .unwrap_or(Errno::BUSY.to_return())
}

/// Converts a descriptor the runtime passed in; a negative one is invalid.
fn fd_arg(fd: i32) -> Result<Fd, Errno> {
    Fd::try_from(fd).map_err(|_| Errno::BADF)
}

/// Folds a role function's outcome into its return value: the network fd (or
/// 0 for `watm_associate_v1`) or the negated errno.
fn ret(result: Result<i32, Errno>) -> i32 {
    result.unwrap_or_else(Errno::to_return)
}

impl<T: Transport> Session<T> {
    /// `watm_init_v1`: reads the configuration and builds the transport.
    pub fn init(&mut self) -> i32 {
        ret(self.try_init().map(|()| 0))
    }

    fn try_init(&mut self) -> Result<(), Errno> {
        if self.connection.is_some() {
            return Err(Errno::BUSY);
        }
        self.transport = Some(T::init(read_config()?)?);
        Ok(())
    }

    /// `watm_ctrlpipe_v1`: remembers the control descriptor.
    pub fn ctrlpipe(&mut self, ctrl_fd: i32) -> i32 {
        ret(fd_arg(ctrl_fd).map(|fd| {
            self.ctrl = Some(fd);
            0
        }))
    }

    /// `watm_dial_v1`: the runtime picks the remote, so the module asks for it
    /// with `water_dial_fixed` (the v1 names are crossed).
    pub fn dial(&mut self, caller_fd: i32) -> i32 {
        ret(self.connect(Role::Dialer, Some(caller_fd), |_| ffi::dial_fixed()))
    }

    /// `watm_dial_fixed_v1`: the module picks the remote and dials it with
    /// `water_dial`.
    pub fn dial_fixed(&mut self, caller_fd: i32) -> i32 {
        ret(self.connect(Role::FixedDialer, Some(caller_fd), |t| {
            let (network, address) = t.fixed_remote()?;
            ffi::dial(network, address)
        }))
    }

    /// `watm_accept_v1`: the network side is the next inbound connection.
    pub fn accept(&mut self, caller_fd: i32) -> i32 {
        ret(self.connect(Role::Listener, Some(caller_fd), |_| ffi::accept()))
    }

    /// `watm_associate_v1`: accept an inbound connection, then dial the
    /// runtime's remote for it. Returns 0 on success; the descriptors stay
    /// inside the module.
    pub fn associate(&mut self) -> i32 {
        ret(self
            .connect(Role::Relay, None, |_| ffi::dial_fixed())
            .map(|_| 0))
    }

    /// v0 `_water_dial`: the module asks for the runtime's remote with
    /// `host_dial`.
    pub fn dial_v0(&mut self, caller_fd: i32) -> i32 {
        ret(self.connect(Role::Dialer, Some(caller_fd), |_| ffi::host_dial()))
    }

    /// v0 `_water_accept`: the network side comes from `host_accept`.
    pub fn accept_v0(&mut self, caller_fd: i32) -> i32 {
        ret(self.connect(Role::Listener, Some(caller_fd), |_| ffi::host_accept()))
    }

    /// v0 `_water_associate`: `host_accept`, then `host_dial`; 0 on success.
    /// As in `watm_associate_v1`, the accepted connection is the caller side.
    pub fn associate_v0(&mut self) -> i32 {
        if self.connection.is_some() {
            return Errno::BUSY.to_return();
        }
        if self.transport.is_none() {
            return Errno::INVAL.to_return();
        }
        let caller = match ffi::host_accept() {
            Ok(fd) => fd,
            Err(errno) => return errno.to_return(),
        };
        // Lossless: the descriptor came from a non-negative `i32`.
        match self.connect(Role::Relay, Some(caller as i32), |_| ffi::host_dial()) {
            Ok(_) => 0,
            Err(errno) => {
                // The accepted connection is ours alone; do not leak it.
                ffi::close(caller);
                errno.to_return()
            }
        }
    }

    /// v0 `_water_worker`: [`Self::start`], then `host_defer`, as the
    /// reference v0 modules do when their worker ends.
    pub fn worker_v0(&mut self) -> i32 {
        let result = self.start();
        ffi::host_defer();
        result
    }

    /// Shared part of the role functions. For [`Role::Relay`] (no caller fd
    /// from the runtime) the accepted connection becomes the caller side.
    fn connect(
        &mut self,
        role: Role,
        caller_fd: Option<i32>,
        open_network: impl FnOnce(&T) -> Result<Fd, Errno>,
    ) -> Result<i32, Errno> {
        if self.connection.is_some() {
            return Err(Errno::BUSY);
        }
        // Role functions before `watm_init_v1` are a runtime bug.
        let transport = self.transport.as_ref().ok_or(Errno::INVAL)?;
        let caller = match caller_fd {
            Some(fd) => fd_arg(fd)?,
            None => ffi::accept()?,
        };
        let network = match open_network(transport) {
            Ok(fd) => fd,
            Err(errno) => {
                if caller_fd.is_none() {
                    // The accepted connection is ours alone; do not leak it.
                    ffi::close(caller);
                }
                return Err(errno);
            }
        };
        self.connection = Some(Connection {
            role,
            caller,
            network,
        });
        // Lossless: every descriptor here came from a non-negative `i32`.
        Ok(network as i32)
    }

    /// `watm_start_v1`: carries the connection until it ends; see
    /// [`worker::run`] for the return values.
    pub fn start(&mut self) -> i32 {
        ret(self.try_start().map(|()| 0))
    }

    fn try_start(&mut self) -> Result<(), Errno> {
        let (Some(connection), Some(transport)) = (&self.connection, &mut self.transport) else {
            return Err(Errno::NOTCONN);
        };
        let ctrl = self.ctrl.ok_or(Errno::BADF)?;
        if self.started {
            return Err(Errno::BUSY);
        }
        self.started = true;
        worker::run(transport, connection, ctrl)
    }
}

/// Reads the configuration file, if the runtime provided one.
///
/// Failing to *open* it means there is no configuration (without a config the
/// runtime preopens no `/conf` at all, which wasi-libc reports as `ENOENT` or
/// `ENOTCAPABLE`), so every open error is taken as "none". Failing to *read* a
/// file that exists is a real error.
fn read_config() -> Result<Option<Vec<u8>>, Errno> {
    let Ok(file) = std::fs::File::open(CONFIG_PATH) else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over".
    file.take(MAX_CONFIG_LEN as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_CONFIG_LEN {
        return Err(Errno::FBIG);
    }
    Ok(Some(bytes))
}
