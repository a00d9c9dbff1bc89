//! Per-instance host state and the WATER v1 imports (`water_dial`,
//! `water_dial_fixed`, `water_accept`).
//!
//! All three return a new guest fd on success and `-errno` (WASI numbers)
//! on failure, like the reference runtime: `-ENODEV` when nothing stands
//! behind the import in this role, `-EACCES` for an address the allow-list
//! refuses, `-ENOTCONN` when the host's dial fails.

use super::net::NetPolicy;
use super::session::SessionShared;
use crate::sys::AsFd;
use crate::sys::HostFd;
use crate::wasi::{self, Entry, Errno, Socket, WasiCtx, WasiView};
use std::io;
use std::sync::Arc;
use wasmtime::{Caller, Linker};

/// Import module of the WATER functions.
pub const WATER_MODULE: &str = "env";
/// The WATER imports the runtime implements.
pub const WATER_IMPORTS: &[&str] = &["water_dial", "water_dial_fixed", "water_accept"];

/// Longest network name (`tcp4`) and address read from guest memory.
const MAX_NETWORK_LEN: usize = 16;
const MAX_ADDRESS_LEN: usize = 512;
/// Most outbound dials one instance may make.
const MAX_DIALS: u32 = 16;

/// The inbound connection `water_accept` hands out, at most once.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// This role has no inbound connection (`-ENODEV`).
    None,
    Pending(HostFd),
    /// Already accepted; a second call gets `-ENOTCONN`.
    Taken,
}

/// Store data of one instance.
pub(crate) struct Host {
    pub wasi: WasiCtx,
    pub inbound: Inbound,
    /// What `water_dial_fixed` dials, if anything.
    pub fixed_remote: Option<(String, String)>,
    pub policy: Arc<NetPolicy>,
    pub dials: u32,
    /// The last failed host dial, kept so the runtime's caller can tell a
    /// refused connection from a module failure.
    pub last_dial_error: Option<(String, io::Error)>,
    pub shared: Arc<SessionShared>,
    /// The instance, once created (exports are looked up through it).
    pub instance: Option<wasmtime::Instance>,
    /// Epoch ticks a module may run wasm code without a host call that waits or
    /// moves data.
    pub tick_budget: u32,
    /// Applied to every network socket the module gets (see
    /// [`super::Limits::network_stall`]).
    pub network_stall: std::time::Duration,
    /// Kernel buffer size for every socket the module is given (see
    /// [`super::Limits::socket_buffer`]); `None` leaves the kernel's autotuning.
    pub socket_buffer: Option<usize>,
}

impl WasiView for Host {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
}

/// Adds the WATER v1 imports to `linker`.
pub(crate) fn add_v1_imports(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WATER_MODULE,
        "water_dial_fixed",
        |mut c: Caller<'_, Host>| -> i32 { dial_fixed(c.data_mut()) },
    )?;
    linker.func_wrap(
        WATER_MODULE,
        "water_dial",
        |mut c: Caller<'_, Host>, net: i32, net_len: i32, addr: i32, addr_len: i32| -> i32 {
            let Some(memory) = c.data().wasi.memory else {
                return Errno::FAULT.negated();
            };
            let (bytes, host) = memory.data_and_store_mut(&mut c);
            host.wasi.ticks_without_host_call = 0;
            let m = wasi::GuestMemory::new(bytes);
            let read = |ptr: i32, len: i32, max| -> Result<String, Errno> {
                let raw = m.gather(ptr as u32, len as u32, max)?;
                String::from_utf8(raw).map_err(|_| Errno::INVAL)
            };
            let (network, address) = match (
                read(net, net_len, MAX_NETWORK_LEN),
                read(addr, addr_len, MAX_ADDRESS_LEN),
            ) {
                (Ok(n), Ok(a)) => (n, a),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(
                        conn = host.wasi.tag,
                        "water_dial: unreadable arguments ({e})"
                    );
                    return e.negated();
                }
            };
            if !host.policy.allow.allows(&network, &address) {
                tracing::warn!(
                    conn = host.wasi.tag,
                    "water_dial: module asked for {network} {address}, which is not allowed"
                );
                return Errno::ACCES.negated();
            }
            dial(host, &network, &address)
        },
    )?;
    linker.func_wrap(
        WATER_MODULE,
        "water_accept",
        |mut c: Caller<'_, Host>| -> i32 { accept(c.data_mut(), "water_accept") },
    )?;
    Ok(())
}

/// Dials the remote the runtime chose for this connection (`-ENODEV` when
/// the role has none).
pub(crate) fn dial_fixed(host: &mut Host) -> i32 {
    host.wasi.ticks_without_host_call = 0;
    match host.fixed_remote.clone() {
        Some((network, address)) => dial(host, &network, &address),
        None => Errno::NODEV.negated(),
    }
}

/// Hands out the inbound connection, once (`-ENODEV` when the role has
/// none, `-ENOTCONN` the second time). `import` names the caller in the log.
pub(crate) fn accept(host: &mut Host, import: &str) -> i32 {
    host.wasi.ticks_without_host_call = 0;
    match std::mem::replace(&mut host.inbound, Inbound::Taken) {
        Inbound::Pending(fd) => insert_network_socket(host, fd),
        Inbound::None => {
            host.inbound = Inbound::None;
            Errno::NODEV.negated()
        }
        Inbound::Taken => {
            tracing::warn!(
                conn = host.wasi.tag,
                "{import} called again: this instance's connection was already accepted"
            );
            Errno::NOTCONN.negated()
        }
    }
}

fn dial(host: &mut Host, network: &str, address: &str) -> i32 {
    if host.dials >= MAX_DIALS {
        tracing::warn!(conn = host.wasi.tag, "module exceeded {MAX_DIALS} dials");
        return Errno::MFILE.negated();
    }
    host.dials += 1;
    let result = host
        .policy
        .connector
        .connect(network, address, host.wasi.stop_signal().waker());
    match result {
        Ok(stream) => {
            let _ = stream.set_nodelay(true);
            insert_network_socket(host, stream.into())
        }
        Err(e) => {
            tracing::info!(conn = host.wasi.tag, "dial {network} {address} failed: {e}");
            host.last_dial_error = Some((address.to_owned(), e));
            Errno::NOTCONN.negated()
        }
    }
}

/// [`insert_socket`] for a network connection (accepted or dialed), which
/// also gets the network stall limit ([`super::Limits::network_stall`]).
fn insert_network_socket(host: &mut Host, fd: HostFd) -> i32 {
    let _ = crate::sys::set_stall_timeout(fd.as_fd(), host.network_stall);
    insert_socket(host, fd)
}

/// Puts a host socket (the caller socket, an accepted or a dialed connection)
/// into the guest's fd table and returns its number (or `-errno`), first
/// fixing its buffer sizes if [`super::Limits::socket_buffer`] asks for it.
pub(crate) fn insert_socket(host: &mut Host, fd: HostFd) -> i32 {
    if let Some(bytes) = host.socket_buffer {
        if let Err(e) = crate::sys::set_buffer_size(fd.as_fd(), bytes) {
            tracing::debug!(conn = host.wasi.tag, "cannot size socket buffers: {e}");
        }
    }
    match Socket::new(fd)
        .map_err(|e| Errno::from(&e))
        .and_then(|s| host.wasi.fds.insert(Entry::Socket(s)))
    {
        Ok(n) => n as i32,
        Err(e) => e.negated(),
    }
}
