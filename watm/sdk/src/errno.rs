//! WASI error numbers, the currency of the WATM v1 ABI.

use core::fmt;

/// A WASI (preview 1) error number.
///
/// Every `watm_*_v1` export and every `water_*` import reports failure as the
/// negated errno, with WASI numbering (which differs from Linux: `EINVAL` is
/// 28, not 22). Only the numbers this SDK or its users are likely to need have
/// names here; [`Errno::from_raw`] accepts any other.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(u16);

impl Errno {
    /// Permission denied (the runtime refused an address, for example).
    pub const ACCES: Self = Self(2);
    /// Resource unavailable, try again (a non-blocking call would block).
    pub const AGAIN: Self = Self(6);
    /// Bad file descriptor.
    pub const BADF: Self = Self(8);
    /// Device or resource busy: the call does not fit the module's state.
    pub const BUSY: Self = Self(10);
    /// Operation canceled: `watm_start_v1` was told to stop by the runtime.
    pub const CANCELED: Self = Self(11);
    /// Connection reset.
    pub const CONNRESET: Self = Self(15);
    /// File too large.
    pub const FBIG: Self = Self(22);
    /// Invalid argument (also: a malformed configuration).
    pub const INVAL: Self = Self(28);
    /// I/O error.
    pub const IO: Self = Self(29);
    /// Message too large.
    pub const MSGSIZE: Self = Self(35);
    /// No such device: the runtime has nothing behind an import.
    pub const NODEV: Self = Self(43);
    /// No such file or directory.
    pub const NOENT: Self = Self(44);
    /// Not enough memory.
    pub const NOMEM: Self = Self(48);
    /// Function not supported.
    pub const NOSYS: Self = Self(52);
    /// Not connected: no role function has set up a connection yet.
    pub const NOTCONN: Self = Self(53);
    /// Not supported: the transport does not offer this role.
    pub const NOTSUP: Self = Self(58);
    /// Broken pipe.
    pub const PIPE: Self = Self(64);
    /// Protocol error: the peer sent bytes the transport cannot make sense of.
    pub const PROTO: Self = Self(65);
    /// Timed out.
    pub const TIMEDOUT: Self = Self(73);

    /// Wraps a raw WASI errno. Zero means success, not an error, so it is
    /// mapped to [`Errno::IO`] to keep "an `Errno` is always a failure" true.
    pub const fn from_raw(raw: u16) -> Self {
        if raw == 0 { Self::IO } else { Self(raw) }
    }

    /// The raw WASI errno (never 0).
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// The value an export returns for this error: the negated errno.
    pub const fn to_return(self) -> i32 {
        -(self.0 as i32)
    }

    /// Reads a failure back out of an import's or export's return value:
    /// `None` for `ret >= 0` (success, or a descriptor), the errno otherwise.
    pub const fn from_return(ret: i32) -> Option<Self> {
        if ret >= 0 {
            None
        } else if ret < -(u16::MAX as i32) {
            // Not a WASI errno at all; a confused host. Still a failure.
            Some(Self::IO)
        } else {
            Some(Self::from_raw((-ret) as u16))
        }
    }
}

/// `std::io::Error` carries the errno of wasi-libc, which on WASI uses the WASI
/// numbering, so the raw OS error can be passed through unchanged.
impl From<std::io::Error> for Errno {
    fn from(err: std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(raw) => u16::try_from(raw).map_or(Self::IO, Self::from_raw),
            None if err.kind() == std::io::ErrorKind::OutOfMemory => Self::NOMEM,
            None => Self::IO,
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Errno({})", self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WASI errno {}", self.0)
    }
}

impl std::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::Errno;

    #[test]
    fn return_values_round_trip() {
        assert_eq!(Errno::NOTCONN.to_return(), -53);
        assert_eq!(Errno::CANCELED.to_return(), -11);
        assert_eq!(Errno::from_return(-28), Some(Errno::INVAL));
        assert_eq!(Errno::from_return(0), None);
        assert_eq!(Errno::from_return(7), None);
        assert_eq!(Errno::from_return(i32::MIN), Some(Errno::IO));
    }

    #[test]
    fn zero_is_never_an_error() {
        assert_eq!(Errno::from_raw(0), Errno::IO);
    }
}
