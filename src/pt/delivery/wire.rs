//! The module-delivery protocol's bytes: one request, one response, then the connection ends.
//!
//! Both run on the plaintext side of an encrypted session (see [`super`]); this module only
//! encodes and parses them, with no I/O beyond [`read_response`]'s reader, so both sides are
//! tested against byte vectors and fuzzed. `pt-spec/README.md` ("Module delivery") is the
//! normative description; the layout is:
//!
//! ```text
//! request  = "WATD" 0x01 0x01 max_len:u32be sha256:32          (42 bytes)
//! response = "WATD" 0x01 status:u8 value:u32be [module bytes]  (10 bytes + value if status 0)
//! ```
//!
//! Integers are big-endian. `value` is the module's length when `status` is [`Status::Ok`]
//! (and that many bytes follow) or [`Status::TooLarge`] (nothing follows), the seconds to wait
//! for [`Status::RateLimited`], and 0 otherwise.

use std::fmt;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first four bytes of every request and response.
pub const MAGIC: [u8; 4] = *b"WATD";
/// The protocol version this implementation speaks.
pub const VERSION: u8 = 1;
/// The only command: send the module with this SHA-256.
pub const CMD_GET_MODULE: u8 = 1;
/// Bytes in a request.
pub const REQUEST_LEN: usize = 42;
/// Bytes in a response head.
pub const RESPONSE_HEAD_LEN: usize = 10;

/// "Send me the module whose SHA-256 is `sha256`, if it is at most `max_len` bytes."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The largest module the client accepts.
    pub max_len: u32,
    /// The pin of the module wanted.
    pub sha256: [u8; 32],
}

/// What the bridge answers, in the response head's `status` byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The module follows.
    Ok,
    /// The bridge serves no module with that SHA-256.
    UnknownModule,
    /// This client address asked too often; try again later.
    RateLimited,
    /// The module is larger than the request's `max_len`.
    TooLarge,
    /// The request was not understood (wrong magic, version or command).
    BadRequest,
}

impl Status {
    /// The status byte.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::UnknownModule => 1,
            Status::RateLimited => 2,
            Status::TooLarge => 3,
            Status::BadRequest => 4,
        }
    }

    /// The status for a byte, if it is one of ours.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::UnknownModule,
            2 => Status::RateLimited,
            3 => Status::TooLarge,
            4 => Status::BadRequest,
            _ => return None,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::UnknownModule => "the bridge does not serve this module",
            Status::RateLimited => "the bridge refused: too many downloads from this address",
            Status::TooLarge => "the module is larger than this client accepts",
            Status::BadRequest => "the bridge did not understand the request",
        })
    }
}

/// A response head: status and value (see the module documentation for what `value` means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: Status,
    pub value: u32,
}

/// Why bytes are not a request or a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The first four bytes are not `WATD`.
    #[error("not a module-delivery message (first bytes {})", hex::encode(.0))]
    Magic([u8; 4]),
    /// A version this implementation does not speak.
    #[error("unsupported module-delivery version {0}")]
    Version(u8),
    /// A request command other than [`CMD_GET_MODULE`].
    #[error("unknown module-delivery command {0}")]
    Command(u8),
    /// A response status byte that is not a [`Status`].
    #[error("unknown module-delivery status {0}")]
    Status(u8),
    /// A request for a module of at most 0 bytes, or a response with an empty module.
    #[error("a module length of 0")]
    ZeroLength,
    /// Fewer bytes than the message needs.
    #[error("{got} of the {need} bytes of a module-delivery message")]
    Short { got: usize, need: usize },
}

impl Request {
    /// The request's 42 bytes.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = CMD_GET_MODULE;
        out[6..10].copy_from_slice(&self.max_len.to_be_bytes());
        out[10..].copy_from_slice(&self.sha256);
        out
    }

    /// Parses exactly one request. Extra bytes after it are an error of the caller's choosing
    /// (the server reads exactly [`REQUEST_LEN`] bytes and ignores anything after).
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let bytes: &[u8; REQUEST_LEN] = bytes
            .get(..REQUEST_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(WireError::Short {
                got: bytes.len(),
                need: REQUEST_LEN,
            })?;
        check_magic_version(bytes)?;
        if bytes[5] != CMD_GET_MODULE {
            return Err(WireError::Command(bytes[5]));
        }
        let max_len = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        if max_len == 0 {
            return Err(WireError::ZeroLength);
        }
        let sha256 = bytes[10..].try_into().expect("32 bytes");
        Ok(Self { max_len, sha256 })
    }
}

impl ResponseHead {
    /// A head with `status` and `value`.
    pub fn new(status: Status, value: u32) -> Self {
        Self { status, value }
    }

    /// The head's 10 bytes.
    pub fn encode(&self) -> [u8; RESPONSE_HEAD_LEN] {
        let mut out = [0u8; RESPONSE_HEAD_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = VERSION;
        out[5] = self.status.code();
        out[6..].copy_from_slice(&self.value.to_be_bytes());
        out
    }

    /// Parses a response head.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let bytes: &[u8; RESPONSE_HEAD_LEN] = bytes
            .get(..RESPONSE_HEAD_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(WireError::Short {
                got: bytes.len(),
                need: RESPONSE_HEAD_LEN,
            })?;
        check_magic_version(bytes)?;
        let status = Status::from_code(bytes[5]).ok_or(WireError::Status(bytes[5]))?;
        let value = u32::from_be_bytes(bytes[6..10].try_into().expect("4 bytes"));
        if status == Status::Ok && value == 0 {
            return Err(WireError::ZeroLength);
        }
        Ok(Self { status, value })
    }
}

fn check_magic_version(bytes: &[u8]) -> Result<(), WireError> {
    let magic: [u8; 4] = bytes[..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(WireError::Magic(magic));
    }
    if bytes[4] != VERSION {
        return Err(WireError::Version(bytes[4]));
    }
    Ok(())
}

/// The whole of a module-delivery response as one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The module's bytes (not yet checked against anything).
    Module(Vec<u8>),
    /// A refusal, with the head's value.
    Refused(Status, u32),
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The head is malformed.
    #[error("malformed response: {0}")]
    Malformed(#[from] WireError),
    /// The bridge offers a module larger than the client accepts; nothing of it was read.
    #[error(
        "the bridge offers a module of {declared} bytes; the limit is {limit} (--max-fetch-mib)"
    )]
    TooLarge { declared: u32, limit: u32 },
    /// The connection ended inside the head or the module.
    #[error("the response ended after {got} of {need} bytes")]
    Truncated { got: u64, need: u64 },
    /// Reading failed.
    #[error("reading the response: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one response: the head, then (for [`Status::Ok`]) exactly the announced module
/// bytes, which must be at most `limit`. The declared length is checked before a single
/// module byte is read or any memory is set aside for it; the buffer then grows with the
/// bytes that actually arrive, so a bridge that announces much and sends little costs little.
pub async fn read_response<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u32,
) -> Result<Response, ReadError> {
    let mut head = [0u8; RESPONSE_HEAD_LEN];
    let got = read_full(reader, &mut head).await?;
    if got < RESPONSE_HEAD_LEN {
        return Err(ReadError::Truncated {
            got: got as u64,
            need: RESPONSE_HEAD_LEN as u64,
        });
    }
    let head = ResponseHead::parse(&head)?;
    if head.status != Status::Ok {
        return Ok(Response::Refused(head.status, head.value));
    }
    if head.value > limit {
        return Err(ReadError::TooLarge {
            declared: head.value,
            limit,
        });
    }
    let need = u64::from(head.value);
    let mut module = Vec::with_capacity(usize::try_from(need.min(64 << 10)).unwrap_or(0));
    let got = reader.take(need).read_to_end(&mut module).await? as u64;
    if got < need {
        return Err(ReadError::Truncated {
            got: RESPONSE_HEAD_LEN as u64 + got,
            need: RESPONSE_HEAD_LEN as u64 + need,
        });
    }
    Ok(Response::Module(module))
}

/// Reads until `buf` is full or the stream ends; the number of bytes read.
pub async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]).await? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: [u8; 32] = [0xab; 32];

    #[test]
    fn request_bytes() {
        let req = Request {
            max_len: 16 << 20,
            sha256: PIN,
        };
        let mut expected = b"WATD\x01\x01\x01\x00\x00\x00".to_vec();
        expected.extend_from_slice(&PIN);
        assert_eq!(req.encode().to_vec(), expected);
        assert_eq!(Request::parse(&expected), Ok(req));
        // Bytes after the request are not the parser's concern.
        let mut longer = expected.clone();
        longer.push(0);
        assert_eq!(Request::parse(&longer), Ok(req));
    }

    #[test]
    fn bad_requests() {
        let good = Request {
            max_len: 1,
            sha256: PIN,
        }
        .encode();
        let with = |i: usize, b: u8| {
            let mut r = good;
            r[i] = b;
            Request::parse(&r)
        };
        assert_eq!(with(0, b'X'), Err(WireError::Magic(*b"XATD")));
        assert_eq!(with(4, 2), Err(WireError::Version(2)));
        assert_eq!(with(5, 0), Err(WireError::Command(0)));
        assert_eq!(with(9, 0), Err(WireError::ZeroLength));
        assert_eq!(
            Request::parse(&good[..41]),
            Err(WireError::Short { got: 41, need: 42 })
        );
        assert_eq!(
            Request::parse(b""),
            Err(WireError::Short { got: 0, need: 42 })
        );
    }

    #[test]
    fn response_head_bytes() {
        let cases: [(Status, u32, &[u8]); 5] = [
            (Status::Ok, 0x0102_0304, b"WATD\x01\x00\x01\x02\x03\x04"),
            (Status::UnknownModule, 0, b"WATD\x01\x01\x00\x00\x00\x00"),
            (Status::RateLimited, 600, b"WATD\x01\x02\x00\x00\x02\x58"),
            (Status::TooLarge, 17 << 20, b"WATD\x01\x03\x01\x10\x00\x00"),
            (Status::BadRequest, 0, b"WATD\x01\x04\x00\x00\x00\x00"),
        ];
        for (status, value, bytes) in cases {
            let head = ResponseHead::new(status, value);
            assert_eq!(&head.encode()[..], bytes, "{status:?}");
            assert_eq!(ResponseHead::parse(bytes), Ok(head));
            assert_eq!(Status::from_code(status.code()), Some(status));
        }
        assert_eq!(
            ResponseHead::parse(b"WATD\x01\x05\x00\x00\x00\x00"),
            Err(WireError::Status(5))
        );
        assert_eq!(
            ResponseHead::parse(b"WATD\x01\x00\x00\x00\x00\x00"),
            Err(WireError::ZeroLength)
        );
        assert_eq!(
            ResponseHead::parse(b"HTTP/1.1 2"),
            Err(WireError::Magic(*b"HTTP"))
        );
        assert_eq!(
            ResponseHead::parse(b"WATD\x00\x00\x00\x00\x00\x01"),
            Err(WireError::Version(0))
        );
    }

    async fn read(bytes: &[u8], limit: u32) -> Result<Response, ReadError> {
        read_response(&mut &bytes[..], limit).await
    }

    #[tokio::test]
    async fn responses_read_whole_or_refused() {
        let mut ok = ResponseHead::new(Status::Ok, 3).encode().to_vec();
        ok.extend_from_slice(b"abc");
        assert_eq!(
            read(&ok, 3).await.unwrap(),
            Response::Module(b"abc".to_vec())
        );
        // Bytes after the module are left unread.
        ok.extend_from_slice(b"more");
        assert_eq!(
            read(&ok, 3).await.unwrap(),
            Response::Module(b"abc".to_vec())
        );

        let refused = ResponseHead::new(Status::RateLimited, 60).encode();
        assert_eq!(
            read(&refused, 3).await.unwrap(),
            Response::Refused(Status::RateLimited, 60)
        );
    }

    #[tokio::test]
    async fn oversized_truncated_and_malformed_responses_fail() {
        // Announced larger than the limit: refused from the head alone.
        let huge = ResponseHead::new(Status::Ok, u32::MAX).encode();
        let err = read(&huge, 16 << 20).await.unwrap_err();
        assert!(
            matches!(err, ReadError::TooLarge { declared: u32::MAX, limit } if limit == 16 << 20),
            "{err}"
        );

        let mut short = ResponseHead::new(Status::Ok, 5).encode().to_vec();
        short.extend_from_slice(b"abc");
        let err = read(&short, 100).await.unwrap_err();
        assert!(
            matches!(err, ReadError::Truncated { got: 13, need: 15 }),
            "{err}"
        );
        let err = read(b"WATD\x01", 100).await.unwrap_err();
        assert!(
            matches!(err, ReadError::Truncated { got: 5, need: 10 }),
            "{err}"
        );
        let err = read(b"garbage garbage", 100).await.unwrap_err();
        assert!(
            matches!(err, ReadError::Malformed(WireError::Magic(_))),
            "{err}"
        );
    }
}
