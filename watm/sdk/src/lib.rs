//! Write a WATER v1 transport module (WATM) as nothing more than a byte transform.
//!
//! A WATM is a WebAssembly module that a WATER runtime loads to carry one
//! connection. The runtime hands the module a *caller* socket (the application
//! side), the module obtains a *network* socket from the runtime's imports, and
//! `watm_start_v1` then moves bytes between the two until either side ends.
//! Everything except the transformation of those bytes is the same for every
//! transport, so this crate does it once:
//!
//! * the seven `watm_*_v1` exports and the `env.water_*` imports of the v1 ABI;
//! * reading the optional configuration file `/conf/watm.cfg`;
//! * a single-threaded, blocking `poll_oneoff` loop with backpressure, which
//!   waits for writability only while output is actually pending, so an idle
//!   connection costs no CPU.
//!
//! A transport implements [`Transport`] and names itself once:
//!
//! ```
//! use watm_sdk::{Errno, Role, Transport};
//!
//! /// Upper-cases ASCII on the way out, passes everything back unchanged.
//! struct Upper;
//!
//! impl Transport for Upper {
//!     fn init(_config: Option<Vec<u8>>) -> Result<Self, Errno> {
//!         Ok(Upper)
//!     }
//!
//!     fn caller_to_network(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
//!         out.extend(input.iter().map(u8::to_ascii_uppercase));
//!         Ok(())
//!     }
//!
//!     fn network_to_caller(&mut self, _: Role, input: &[u8], out: &mut Vec<u8>) -> Result<(), Errno> {
//!         out.extend_from_slice(input);
//!         Ok(())
//!     }
//! }
//!
//! watm_sdk::export_transport!(Upper);
//! ```
//!
//! The crate is built for `wasm32-wasip1`. On other targets the exports and the
//! I/O loop are compiled out (and [`export_transport!`] only checks its
//! argument), so a transport's own logic can be unit-tested natively.
//!
//! [`export_transport_v0!`] exports the same transport under the first
//! generation of the ABI (`_water_*` exports, `env.host_*` imports), for
//! runtimes that drive WATM v0 modules.
//!
//! All `unsafe` code of the SDK lives in one private module, `ffi`.

mod errno;
pub mod kv;

#[cfg(target_os = "wasi")]
mod ffi;
#[cfg(target_os = "wasi")]
#[doc(hidden)]
pub mod session;
#[cfg(target_os = "wasi")]
mod worker;

pub use errno::Errno;

/// Path at which a WATER runtime exposes the transport configuration, when it
/// was given one (a read-only preopened directory `/conf` with one file).
pub const CONFIG_PATH: &str = "/conf/watm.cfg";

/// Largest configuration file [`Transport::init`] is handed. A bigger file is
/// refused with [`Errno::FBIG`] rather than read into memory.
pub const MAX_CONFIG_LEN: usize = 1 << 20;

/// Which WATM entry point set up the connection.
///
/// In every role the SDK calls one socket the *caller* side and the other the
/// *network* side; the transforms of [`Transport`] are named after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `watm_dial_v1`: the runtime chose the remote; the module dialed it with
    /// `water_dial_fixed`. Caller = the application's socket.
    Dialer,
    /// `watm_dial_fixed_v1`: the module chose the remote
    /// ([`Transport::fixed_remote`]) and dialed it with `water_dial`.
    /// Caller = the application's socket.
    FixedDialer,
    /// `watm_accept_v1`: the network side is a connection accepted with
    /// `water_accept`. Caller = the application's socket.
    Listener,
    /// `watm_associate_v1`: the module accepted a connection with
    /// `water_accept` and dialed the runtime's remote with `water_dial_fixed`.
    /// The *accepted* connection plays the caller side and the *dialed* one the
    /// network side, as in the reference SDK (source and remote).
    Relay,
}

/// A WATM transport: a pair of byte transforms plus a little set-up.
///
/// One value of the implementing type exists per module instance, and a WATER
/// runtime uses one instance for exactly one connection, so the value is also
/// the connection's state (handshake progress, cipher state, ...).
///
/// None of these methods may panic: modules are built with `panic = "abort"`,
/// so a panic kills the instance. Report problems through [`Errno`] instead;
/// the SDK turns them into the negative return value of the export at hand.
pub trait Transport: Sized + 'static {
    /// Largest number of bytes read from either side at a time, and therefore
    /// the largest `input` a transform is given. The read buffer starts at
    /// 4 KiB (or this, if smaller) and grows towards this size only while
    /// reads fill it, so idle connections stay small; the two output buffers
    /// reserve this much once per connection (unless [`Self::IN_PLACE`]). A
    /// value of 0 is treated as 1.
    const READ_SIZE: usize = 128 * 1024;

    /// Builds the transport from the bytes of `/conf/watm.cfg`, or from `None`
    /// when the runtime provided no configuration.
    ///
    /// Called from `watm_init_v1`. Returning an error (typically
    /// [`Errno::INVAL`] for a malformed configuration) makes `watm_init_v1`
    /// fail with that errno.
    fn init(config: Option<Vec<u8>>) -> Result<Self, Errno>;

    /// The `(network, address)` that `watm_dial_fixed_v1` dials through the
    /// host's `water_dial`, for example `("tcp", "localhost:7700")`.
    ///
    /// The runtime checks the address against its own policy and may refuse
    /// it. The default refuses the role with [`Errno::NOTSUP`].
    fn fixed_remote(&self) -> Result<(&str, &str), Errno> {
        Err(Errno::NOTSUP)
    }

    /// Called once at the start of `watm_start_v1`, before any byte is read.
    ///
    /// Bytes appended to `to_caller` / `to_network` are sent first, which is
    /// where a client would put the opening message of a handshake. The
    /// default sends nothing.
    fn on_start(
        &mut self,
        role: Role,
        to_caller: &mut Vec<u8>,
        to_network: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let _ = (role, to_caller, to_network);
        Ok(())
    }

    /// When the transport next wants [`Self::on_timer`] to run, if at all.
    ///
    /// The I/O loop has no clock of its own: it sleeps in `poll_oneoff` until
    /// a descriptor is ready. A transport that must act on time (give up on a
    /// silent or hostile peer, send a handshake the caller is slow to start)
    /// returns the instant here; the loop then also wakes at that instant.
    /// Asked again before every wait, so the answer may change as the
    /// connection progresses. Not consulted while the connection drains after
    /// end of stream. The default is no timer.
    fn timer(&self) -> Option<std::time::Instant> {
        None
    }

    /// Called when the instant returned by [`Self::timer`] has passed (an
    /// instant already in the past fires before the next wait).
    ///
    /// Bytes appended to `to_caller` / `to_network` are queued after anything
    /// still pending for that side. The transport must move or clear its timer
    /// here, or it fires again at once. The default ends the connection with
    /// [`Errno::TIMEDOUT`], so a transport that only needs a deadline just
    /// overrides [`Self::timer`].
    fn on_timer(
        &mut self,
        role: Role,
        to_caller: &mut Vec<u8>,
        to_network: &mut Vec<u8>,
    ) -> Result<(), Errno> {
        let _ = (role, to_caller, to_network);
        Err(Errno::TIMEDOUT)
    }

    /// Transforms one read (at most [`Self::READ_SIZE`] bytes) from the caller
    /// side, appending what to send to the network side to `out`.
    ///
    /// `out` is empty on entry; appending nothing is fine (a transport may
    /// buffer internally). An error ends the connection with that errno.
    fn caller_to_network(
        &mut self,
        role: Role,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Errno>;

    /// Transforms one read from the network side, appending what to send to
    /// the caller side to `out`. Same rules as [`Self::caller_to_network`].
    fn network_to_caller(
        &mut self,
        role: Role,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Errno>;

    /// Whether the transforms keep every byte where it is: a pass-through, an
    /// XOR with a keystream, a byte substitution. The I/O loop then calls
    /// [`Self::caller_to_network_in_place`] and
    /// [`Self::network_to_caller_in_place`] on the bytes it read and sends
    /// them from the read buffer itself, instead of having the transform
    /// copy every byte into a second buffer first (only what a socket does
    /// not take at once is copied, to wait for it). The copying transforms
    /// are then not called by the loop. The default is `false`.
    const IN_PLACE: bool = false;

    /// The length-keeping form of [`Self::caller_to_network`], used when
    /// [`Self::IN_PLACE`] is `true`: `data` holds one read and, on return,
    /// the bytes to send in its place. The default refuses with
    /// [`Errno::NOTSUP`].
    fn caller_to_network_in_place(&mut self, role: Role, data: &mut [u8]) -> Result<(), Errno> {
        let _ = (role, data);
        Err(Errno::NOTSUP)
    }

    /// The length-keeping form of [`Self::network_to_caller`]; see
    /// [`Self::caller_to_network_in_place`].
    fn network_to_caller_in_place(&mut self, role: Role, data: &mut [u8]) -> Result<(), Errno> {
        let _ = (role, data);
        Err(Errno::NOTSUP)
    }
}

/// Helpers for a transport's own unit tests.
pub mod testing {
    use crate::{Role, Transport};

    /// Checks that the in-place transforms of a transport that sets
    /// [`Transport::IN_PLACE`] give exactly the bytes of its copying ones, in
    /// both directions and every role, on a transport built from `config`.
    /// Panics on a difference.
    pub fn assert_in_place_matches<T: Transport>(config: Option<Vec<u8>>) {
        assert!(T::IN_PLACE, "the transport does not set IN_PLACE");
        let data: Vec<u8> = (0..=255).cycle().take(1000).collect();
        let roles = [Role::Dialer, Role::FixedDialer, Role::Listener, Role::Relay];
        for role in roles {
            // Two instances fed the same reads, so stateful transforms stay comparable.
            let mut copying = T::init(config.clone()).expect("init");
            let mut in_place = T::init(config.clone()).expect("init");
            for chunk in data.chunks(333) {
                let mut expected = Vec::new();
                copying
                    .caller_to_network(role, chunk, &mut expected)
                    .expect("transform");
                let mut got = chunk.to_vec();
                in_place
                    .caller_to_network_in_place(role, &mut got)
                    .expect("transform");
                assert_eq!(got, expected, "caller to network, {role:?}");

                let mut expected = Vec::new();
                copying
                    .network_to_caller(role, chunk, &mut expected)
                    .expect("transform");
                let mut got = chunk.to_vec();
                in_place
                    .network_to_caller_in_place(role, &mut got)
                    .expect("transform");
                assert_eq!(got, expected, "network to caller, {role:?}");
            }
        }
    }
}

/// Non-WASI stand-in for the real v0 macro, like [`export_transport!`]'s.
#[cfg(not(target_os = "wasi"))]
#[macro_export]
macro_rules! export_transport_v0 {
    ($transport:ty) => {
        $crate::export_transport!($transport);
    };
}

/// Non-WASI stand-in for the real macro (defined in the private `ffi` module):
/// exports nothing, only checks that the type implements [`Transport`], so a
/// transport crate still builds and unit-tests on the development host.
#[cfg(not(target_os = "wasi"))]
#[macro_export]
macro_rules! export_transport {
    ($transport:ty) => {
        const _: () = {
            fn assert_transport<T: $crate::Transport>() {}
            let _ = assert_transport::<$transport>;
        };
    };
}
