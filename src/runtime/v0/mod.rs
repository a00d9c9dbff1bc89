//! The WATM v0 driver: the first generation of the WATER ABI, which the
//! reference runtime still runs and its example modules still use.
//!
//! A v0 module is recognised by an export named `_water_v0`, of any kind:
//! TinyGo modules export a function, Rust modules an immutable global.
//! After instantiation (and `_start`, which TinyGo modules export):
//!
//! 1. `_water_init()`;
//! 2. the role call: `_water_dial(caller_fd)` or `_water_accept(caller_fd)`,
//!    returning the network fd the module got from `env.host_dial` /
//!    `env.host_accept`; or `_water_associate()` for a relay, which takes
//!    both and returns an errno;
//! 3. `_water_cancel_with(cancel_fd)`: the module watches that fd for
//!    readability and stops when it is;
//! 4. `_water_worker()`, which blocks for the connection's life.
//!
//! The cancel fd is the same control channel v1 modules get: readable with
//! one `0x00` byte once the runtime asks for a stop, which is what the
//! reference runtime writes into its cancel socket pair. There is no fixed
//! dialer in v0: the host always picks the address `host_dial` connects to.

mod imports;

use super::driver::Driver;
use super::error::Error;
use super::exports::{call, check_func, insert_control, lend_caller, Sig};
use super::host::Host;
use super::module::Role;
use super::session::{Caller, SessionEnd};
use crate::wasi::Errno;
use wasmtime::{ExternType, Linker, Module, Store};

/// The export that marks a v0 module.
pub(crate) const MARKER: &str = "_water_v0";

const INIT: &str = "_water_init";
const CANCEL_WITH: &str = "_water_cancel_with";
const WORKER: &str = "_water_worker";

/// The exports every v0 module has.
const REQUIRED: [(&str, Sig); 3] = [
    (INIT, Sig::NoneToI32),
    (CANCEL_WITH, Sig::I32ToI32),
    (WORKER, Sig::NoneToI32),
];

/// The WATM v0 driver.
pub(crate) struct V0;

impl Driver for V0 {
    fn imports(&self) -> &'static [&'static str] {
        imports::NAMES
    }

    fn add_imports(&self, linker: &mut Linker<Host>) -> wasmtime::Result<()> {
        imports::add_to_linker(linker)
    }

    fn roles(&self, module: &Module) -> Result<Vec<Role>, Error> {
        let exports = |name: &str| module.get_export(name);
        for (name, ty) in REQUIRED {
            check_func(exports(name), name, ty)?.ok_or(Error::MissingV0Export(name))?;
        }
        match exports("memory") {
            Some(ExternType::Memory(_)) => {}
            _ => return Err(Error::MissingV0Export("memory")),
        }
        let mut roles = Vec::new();
        for role in Role::ALL {
            let Some(name) = self.role_export(role) else {
                continue;
            };
            let ty = match role {
                Role::Relay => Sig::NoneToI32,
                _ => Sig::I32ToI32,
            };
            if check_func(exports(name), name, ty)?.is_some() {
                roles.push(role);
            }
        }
        Ok(roles)
    }

    fn role_export(&self, role: Role) -> Option<&'static str> {
        match role {
            Role::Dialer => Some("_water_dial"),
            Role::Listener => Some("_water_accept"),
            Role::Relay => Some("_water_associate"),
            Role::FixedDialer => None,
        }
    }

    fn init(&self, store: &mut Store<Host>) -> Result<(), Error> {
        success(call(store, INIT, None)?, INIT).map(drop)
    }

    fn setup(&self, store: &mut Store<Host>, role: Role, caller: &mut Caller) -> Result<(), Error> {
        self.init(store)?;
        let export = self.role_export(role).ok_or(Error::RoleUnsupported {
            role: role.name(),
            export: "(none in WATM v0)",
        })?;
        if role == Role::Relay {
            // The module keeps both sockets (from `host_accept` and
            // `host_dial`); the result is only an errno.
            success(call(store, export, None)?, export)?;
        } else {
            let fd = lend_caller(store, caller)?;
            let net_fd = call(store, export, Some(fd as i32))?;
            success(net_fd, export)?;
            // The reference runtime looks the result up among the sockets it
            // inserted in `host_dial`/`host_accept`; the only other socket
            // in the table is the caller's own.
            if net_fd as u32 == fd || store.data().wasi.fds.socket(net_fd).is_err() {
                return Err(Error::BogusFd {
                    call: export,
                    fd: net_fd,
                });
            }
        }
        let cancel_fd = insert_control(store)?;
        success(
            call(store, CANCEL_WITH, Some(cancel_fd as i32))?,
            CANCEL_WITH,
        )
        .map(drop)
    }

    fn work(&self, store: &mut Store<Host>) -> SessionEnd {
        match call(store, WORKER, None) {
            Ok(r) => worker_end(r),
            Err(e) => SessionEnd::Failed(e.to_string()),
        }
    }
}

/// v0 results are read by sign, as the reference runtime does: negative is
/// `-errno`, anything else success (or an fd).
fn success(ret: i32, call: &'static str) -> Result<i32, Error> {
    match Errno::from_negative(ret) {
        Some(errno) => Err(Error::Guest { call, errno }),
        None => Ok(ret),
    }
}

/// How a `_water_worker` result ends the session. Besides success and
/// `-ECANCELED`, `-EPIPE` is a normal end: the shipped TinyGo v0 modules
/// return it when either side of the connection reached end-of-stream.
fn worker_end(ret: i32) -> SessionEnd {
    match Errno::from_negative(ret) {
        None => SessionEnd::Closed,
        Some(Errno::CANCELED) => SessionEnd::Cancelled,
        Some(Errno::PIPE) => SessionEnd::Closed,
        Some(errno) => SessionEnd::Failed(format!("{WORKER} returned -{errno}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_results_read_by_sign() {
        assert_eq!(worker_end(0), SessionEnd::Closed);
        assert_eq!(worker_end(3), SessionEnd::Closed);
        assert_eq!(worker_end(-64), SessionEnd::Closed);
        assert_eq!(worker_end(-11), SessionEnd::Cancelled);
        assert_eq!(
            worker_end(-29),
            SessionEnd::Failed("_water_worker returned -EIO(29)".into())
        );
        assert!(success(-8, INIT).is_err());
        assert_eq!(success(5, INIT).unwrap(), 5);
    }
}
