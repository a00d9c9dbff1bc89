//! The WATM v1 driver.
//!
//! Call order after instantiation (and `_initialize` / `_start`):
//!
//! 1. `watm_init_v1()`;
//! 2. insert the caller socket and call the role export
//!    (`watm_dial_v1`, `watm_dial_fixed_v1`, `watm_accept_v1` or
//!    `watm_associate_v1`), which returns the network fd;
//! 3. insert the module's end of the control pipe, `watm_ctrlpipe_v1(fd)`;
//! 4. once the session has reported success, `watm_start_v1()`, which
//!    returns 0 when one side of the connection closed and `-ECANCELED`
//!    after a stop request.

use super::driver::Driver;
use super::error::Error;
use super::exports::{call, check_func, expect_success, insert_control, lend_caller, Sig};
use super::host::{self, Host};
use super::module::Role;
use super::session::{Caller, SessionEnd};
use crate::wasi::Errno;
use wasmtime::{ExternType, Linker, Module, Store};

/// The export that marks a v1 module.
pub(crate) const MARKER: &str = "watm_init_v1";

/// The exports every v1 module has.
const REQUIRED: [(&str, Sig); 3] = [
    ("watm_init_v1", Sig::NoneToI32),
    ("watm_ctrlpipe_v1", Sig::I32ToI32),
    ("watm_start_v1", Sig::NoneToI32),
];

/// The WATM v1 driver.
pub(crate) struct V1;

impl Driver for V1 {
    fn imports(&self) -> &'static [&'static str] {
        host::WATER_IMPORTS
    }

    fn add_imports(&self, linker: &mut Linker<Host>) -> wasmtime::Result<()> {
        host::add_v1_imports(linker)
    }

    fn roles(&self, module: &Module) -> Result<Vec<Role>, Error> {
        let exports = |name: &str| module.get_export(name);
        for (name, ty) in REQUIRED {
            check_func(exports(name), name, ty)?.ok_or(Error::MissingExport(name))?;
        }
        match module.get_export("memory") {
            Some(ExternType::Memory(_)) => {}
            _ => return Err(Error::MissingExport("memory")),
        }
        let mut roles = Vec::new();
        for role in Role::ALL {
            let (name, ty) = match role {
                Role::Relay => (role.export(), Sig::NoneToI32),
                _ => (role.export(), Sig::I32ToI32),
            };
            if check_func(exports(name), name, ty)?.is_some() {
                roles.push(role);
            }
        }
        Ok(roles)
    }

    fn role_export(&self, role: Role) -> Option<&'static str> {
        Some(role.export())
    }

    fn init(&self, store: &mut Store<Host>) -> Result<(), Error> {
        expect_success(call(store, "watm_init_v1", None)?, "watm_init_v1")
    }

    fn setup(&self, store: &mut Store<Host>, role: Role, caller: &mut Caller) -> Result<(), Error> {
        self.init(store)?;

        let role_export = role.export();
        if role == Role::Relay {
            // `watm_associate_v1` returns an errno, not an fd: the module keeps
            // both of its sockets (from `water_accept` and `water_dial_fixed`).
            expect_success(call(store, role_export, None)?, role_export)?;
        } else {
            let fd = lend_caller(store, caller)?;
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
        let ctrl_fd = insert_control(store)?;
        expect_success(
            call(store, "watm_ctrlpipe_v1", Some(ctrl_fd as i32))?,
            "watm_ctrlpipe_v1",
        )
    }

    fn work(&self, store: &mut Store<Host>) -> SessionEnd {
        match call(store, "watm_start_v1", None) {
            // Any value >= 0 is a normal end, as in the reference runtime
            // (see [`expect_success`]).
            Ok(r) if r >= 0 => SessionEnd::Closed,
            Ok(r) if Errno::from_negative(r) == Some(Errno::CANCELED) => SessionEnd::Cancelled,
            Ok(r) => SessionEnd::Failed(match Errno::from_negative(r) {
                Some(errno) => format!("watm_start_v1 returned -{errno}"),
                None => format!("watm_start_v1 returned {r}"),
            }),
            Err(e) => SessionEnd::Failed(e.to_string()),
        }
    }
}
