//! WASI preview1 error numbers.
//!
//! WATMs see these numbers both as the return value of preview1 calls and,
//! negated, as the result of the `water_*` imports and `watm_*` exports.

use std::fmt;
use std::io;

/// A WASI preview1 `errno` value.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct Errno(pub u16);

macro_rules! errnos {
    ($($name:ident = $value:expr),* $(,)?) => {
        impl Errno {
            $(pub const $name: Errno = Errno($value);)*

            /// The symbolic name, e.g. `ECANCELED`.
            pub fn name(self) -> &'static str {
                match self.0 {
                    $($value => concat!("E", stringify!($name)),)*
                    _ => "E?",
                }
            }
        }
    };
}

errnos! {
    SUCCESS = 0, TOOBIG = 1, ACCES = 2, ADDRINUSE = 3, ADDRNOTAVAIL = 4,
    AFNOSUPPORT = 5, AGAIN = 6, ALREADY = 7, BADF = 8, BADMSG = 9, BUSY = 10,
    CANCELED = 11, CHILD = 12, CONNABORTED = 13, CONNREFUSED = 14,
    CONNRESET = 15, DEADLK = 16, DESTADDRREQ = 17, DOM = 18, DQUOT = 19,
    EXIST = 20, FAULT = 21, FBIG = 22, HOSTUNREACH = 23, IDRM = 24, ILSEQ = 25,
    INPROGRESS = 26, INTR = 27, INVAL = 28, IO = 29, ISCONN = 30, ISDIR = 31,
    LOOP = 32, MFILE = 33, MLINK = 34, MSGSIZE = 35, MULTIHOP = 36,
    NAMETOOLONG = 37, NETDOWN = 38, NETRESET = 39, NETUNREACH = 40, NFILE = 41,
    NOBUFS = 42, NODEV = 43, NOENT = 44, NOEXEC = 45, NOLCK = 46, NOLINK = 47,
    NOMEM = 48, NOMSG = 49, NOPROTOOPT = 50, NOSPC = 51, NOSYS = 52,
    NOTCONN = 53, NOTDIR = 54, NOTEMPTY = 55, NOTRECOVERABLE = 56,
    NOTSOCK = 57, NOTSUP = 58, NOTTY = 59, NXIO = 60, OVERFLOW = 61,
    OWNERDEAD = 62, PERM = 63, PIPE = 64, PROTO = 65, PROTONOSUPPORT = 66,
    PROTOTYPE = 67, RANGE = 68, ROFS = 69, SPIPE = 70, SRCH = 71, STALE = 72,
    TIMEDOUT = 73, TXTBSY = 74, XDEV = 75, NOTCAPABLE = 76,
}

impl Errno {
    /// Interprets a `watm_*` / `water_*` style result: negative values are
    /// `-errno`. Returns `None` for non-negative results.
    pub fn from_negative(ret: i32) -> Option<Errno> {
        if ret >= 0 {
            return None;
        }
        Some(Errno(u16::try_from(ret.unsigned_abs()).unwrap_or(u16::MAX)))
    }

    /// The value returned to the guest from a preview1 call.
    pub fn raw(self) -> i32 {
        i32::from(self.0)
    }

    /// The value returned to the guest from a `water_*` import.
    pub fn negated(self) -> i32 {
        -i32::from(self.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        use rustix::io::Errno as E;
        match e {
            E::AGAIN => Errno::AGAIN,
            E::BADF => Errno::BADF,
            E::CONNRESET => Errno::CONNRESET,
            E::CONNREFUSED => Errno::CONNREFUSED,
            E::CONNABORTED => Errno::CONNABORTED,
            // Winsock has no EPIPE, ENOMEM, ENFILE, EPERM or ENOTSUP; its errors for
            // those cases (e.g. WSAESHUTDOWN, WSAENOBUFS) map through the other arms.
            #[cfg(unix)]
            E::PIPE => Errno::PIPE,
            E::NOTCONN => Errno::NOTCONN,
            E::TIMEDOUT => Errno::TIMEDOUT,
            E::HOSTUNREACH => Errno::HOSTUNREACH,
            E::NETUNREACH => Errno::NETUNREACH,
            E::NETDOWN => Errno::NETDOWN,
            E::INVAL => Errno::INVAL,
            #[cfg(unix)]
            E::NOMEM => Errno::NOBUFS,
            E::NOBUFS => Errno::NOBUFS,
            E::MFILE => Errno::MFILE,
            #[cfg(unix)]
            E::NFILE => Errno::NFILE,
            E::ACCESS => Errno::ACCES,
            #[cfg(unix)]
            E::PERM => Errno::PERM,
            E::ADDRINUSE => Errno::ADDRINUSE,
            E::ADDRNOTAVAIL => Errno::ADDRNOTAVAIL,
            E::NOTSOCK => Errno::NOTSOCK,
            #[cfg(unix)]
            E::NOTSUP => Errno::NOTSUP,
            #[cfg(windows)]
            E::OPNOTSUPP => Errno::NOTSUP,
            _ => Errno::IO,
        }
    }
}

impl From<&io::Error> for Errno {
    fn from(e: &io::Error) -> Self {
        if let Some(code) = e.raw_os_error() {
            return rustix::io::Errno::from_raw_os_error(code).into();
        }
        match e.kind() {
            io::ErrorKind::WouldBlock => Errno::AGAIN,
            io::ErrorKind::ConnectionRefused => Errno::CONNREFUSED,
            io::ErrorKind::ConnectionReset => Errno::CONNRESET,
            io::ErrorKind::ConnectionAborted => Errno::CONNABORTED,
            io::ErrorKind::NotConnected => Errno::NOTCONN,
            io::ErrorKind::TimedOut => Errno::TIMEDOUT,
            io::ErrorKind::PermissionDenied => Errno::ACCES,
            io::ErrorKind::InvalidInput => Errno::INVAL,
            io::ErrorKind::UnexpectedEof => Errno::PIPE,
            _ => Errno::IO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_follow_preview1() {
        assert_eq!(Errno::CANCELED.0, 11);
        assert_eq!(Errno::CANCELED.name(), "ECANCELED");
        assert_eq!(Errno::NOTCONN.0, 53);
        assert_eq!(Errno::NOSYS.0, 52);
        assert_eq!(Errno::INVAL.0, 28);
        assert_eq!(Errno::NODEV.0, 43);
        assert_eq!(Errno::NOTCAPABLE.name(), "ENOTCAPABLE");
        assert_eq!(Errno(999).name(), "E?");
    }

    #[test]
    fn negative_results_decode() {
        assert_eq!(Errno::from_negative(-11), Some(Errno::CANCELED));
        assert_eq!(Errno::from_negative(0), None);
        assert_eq!(Errno::from_negative(7), None);
        assert_eq!(Errno::from_negative(i32::MIN), Some(Errno(u16::MAX)));
        assert_eq!(Errno::CANCELED.negated(), -11);
    }

    #[test]
    fn host_errors_map() {
        let e = io::Error::from_raw_os_error(rustix::io::Errno::CONNREFUSED.raw_os_error());
        assert_eq!(Errno::from(&e), Errno::CONNREFUSED);
        let e = io::Error::new(io::ErrorKind::TimedOut, "t");
        assert_eq!(Errno::from(&e), Errno::TIMEDOUT);
    }
}
