//! A module's exports: their types, checked once when the module is loaded,
//! and the calls into them that every driver makes per connection.

use super::error::Error;
use super::host::{self, Host};
use super::session::{Caller, CallerSocket};
use crate::sys::HostFd;
use crate::wasi::{Entry, Errno, LazySocket, OpenSocket};
use std::os::fd::AsFd;
use wasmtime::{ExternType, FuncType, Store, ValType};

/// The two export types of the WATER ABIs.
#[derive(Copy, Clone)]
pub(crate) enum Sig {
    NoneToI32,
    I32ToI32,
}

impl Sig {
    fn describe(self) -> &'static str {
        match self {
            Sig::NoneToI32 => "func() -> i32",
            Sig::I32ToI32 => "func(i32) -> i32",
        }
    }

    fn matches(self, ty: &FuncType) -> bool {
        let params: Vec<ValType> = ty.params().collect();
        let results: Vec<ValType> = ty.results().collect();
        let want_params = match self {
            Sig::NoneToI32 => 0,
            Sig::I32ToI32 => 1,
        };
        params.len() == want_params
            && params.iter().all(|p| matches!(p, ValType::I32))
            && results.len() == 1
            && matches!(results[0], ValType::I32)
    }
}

/// `Ok(None)` when absent, `Ok(Some(()))` when present with type `sig`.
pub(crate) fn check_func(
    ty: Option<ExternType>,
    name: &'static str,
    sig: Sig,
) -> Result<Option<()>, Error> {
    match ty {
        None => Ok(None),
        Some(ExternType::Func(f)) if sig.matches(&f) => Ok(Some(())),
        Some(_) => Err(Error::BadExportType {
            name,
            expected: sig.describe(),
        }),
    }
}

/// Puts a host socket into the guest's table; `what` names it in the error.
fn insert(store: &mut Store<Host>, fd: HostFd, what: &str) -> Result<u32, Error> {
    let r = host::insert_socket(store.data_mut(), fd);
    u32::try_from(r).map_err(|_| {
        Error::Io(std::io::Error::other(format!(
            "cannot give the {what} to the module: {}",
            Errno::from_negative(r).unwrap_or(Errno::IO)
        )))
    })
}

/// Lends the caller socket to the module: inserts it, marks it as the
/// caller's (so a setup reply is never written to a reused fd number) and
/// returns its guest fd.
pub(crate) fn lend_caller(store: &mut Store<Host>, caller: &mut Caller) -> Result<u32, Error> {
    let Caller::Held(socket) = std::mem::replace(caller, Caller::None) else {
        return Err(Error::Io(std::io::Error::other(
            "this role needs a caller socket",
        )));
    };
    let fd = match socket {
        CallerSocket::Open(socket) => {
            let fd = insert(store, socket, "caller socket")?;
            if let Ok(Entry::Socket(s)) = store.data_mut().wasi.fds.get_mut(fd as i32) {
                s.is_caller = true;
            }
            fd
        }
        CallerSocket::OnFirstWrite(open) => insert_lazy(store, open)?,
    };
    *caller = Caller::Lent(fd);
    Ok(fd)
}

/// Puts a socket opened on demand into the guest's table; once opened it
/// gets the same buffer sizing as any other socket.
fn insert_lazy(store: &mut Store<Host>, open: OpenSocket) -> Result<u32, Error> {
    let buffer = store.data().socket_buffer;
    let open: OpenSocket = Box::new(move |cancel| {
        let fd = open(cancel)?;
        if let Some(bytes) = buffer {
            let _ = crate::sys::set_buffer_size(fd.as_fd(), bytes);
        }
        Ok(fd)
    });
    store
        .data_mut()
        .wasi
        .fds
        .insert(Entry::Lazy(LazySocket::new(open)))
        .map_err(|e| {
            Error::Io(std::io::Error::other(format!(
                "cannot give the caller socket to the module: {e}"
            )))
        })
}

/// Puts the control channel (the module's end of the stop signal) into the
/// guest's table.
pub(crate) fn insert_control(store: &mut Store<Host>) -> Result<u32, Error> {
    store
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
        })
}

/// Reads the result of a `watm_*_v1` call that returns an errno (init,
/// ctrlpipe, associate): only a negative value is a failure. The reference
/// runtime checks the result the same way (`< 0` is `-errno`), and modules
/// built for it may return a positive value on success (a Go function
/// returning a count or a descriptor where an errno is expected); refusing
/// those would fail connections the reference runtime serves.
pub(crate) fn expect_success(ret: i32, call: &'static str) -> Result<(), Error> {
    if ret >= 0 {
        return Ok(());
    }
    Err(Error::Guest {
        call,
        errno: Errno::from_negative(ret).unwrap_or(Errno::INVAL),
    })
}

/// Calls a `() -> i32` or `(i32) -> i32` export by name.
pub(crate) fn call(
    store: &mut Store<Host>,
    name: &'static str,
    arg: Option<i32>,
) -> Result<i32, Error> {
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
