//! The host functions a v0 module imports from module `env`.
//!
//! - `host_dial() -> i32`: dials the remote the runtime chose for this
//!   connection (the application's address for a dialer, the relay's
//!   target for a relay) and returns the new fd; `-ENODEV` in a role
//!   without one, `-ENOTCONN` when the dial fails.
//! - `host_accept() -> i32`: hands out the inbound connection; `-ENODEV`
//!   in a role without one.
//! - `host_defer()`: a no-op the reference runtime keeps for old modules,
//!   which call it when their worker ends.
//! - `pull_config() -> i32`: opens the transport config (the bytes a v1
//!   module reads as `/conf/watm.cfg`) read-only and returns its fd;
//!   `-EACCES` when the runtime was given no config, as in the reference
//!   runtime, where modules take that as "no config".
//!
//! The first two behave exactly like v1's `water_dial_fixed` and
//! `water_accept`, with the same limits (dial count, stall limit, socket
//! buffers).

use crate::runtime::host::{self, Host, WATER_MODULE};
use crate::wasi::{Entry, Errno};
use wasmtime::{Caller, Linker};

/// The `env` functions v0 modules may import.
pub(crate) const NAMES: &[&str] = &["host_dial", "host_accept", "host_defer", "pull_config"];

pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WATER_MODULE,
        "host_dial",
        |mut c: Caller<'_, Host>| -> i32 { host::dial_fixed(c.data_mut()) },
    )?;
    linker.func_wrap(
        WATER_MODULE,
        "host_accept",
        |mut c: Caller<'_, Host>| -> i32 { host::accept(c.data_mut(), "host_accept") },
    )?;
    // Neither of these two waits or moves data, so neither restarts the
    // compute budget: a module looping on them is still stopped.
    linker.func_wrap(WATER_MODULE, "host_defer", |_: Caller<'_, Host>| {})?;
    linker.func_wrap(
        WATER_MODULE,
        "pull_config",
        |mut c: Caller<'_, Host>| -> i32 { pull_config(c.data_mut()) },
    )?;
    Ok(())
}

fn pull_config(host: &mut Host) -> i32 {
    let wasi = &mut host.wasi;
    if !wasi.has_config() {
        return Errno::ACCES.negated();
    }
    match wasi.fds.insert(Entry::ConfFile { pos: 0 }) {
        Ok(fd) => fd as i32,
        // The reference runtime answers a config it cannot insert with EBADF.
        Err(_) => Errno::BADF.negated(),
    }
}
