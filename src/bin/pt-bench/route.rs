//! How the benchmark reaches the stand-in ORPort: straight over TCP, or through a client
//! transport's SOCKS5 port the way tor's client does it.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use water_pt::pt::args::{encode_socks_args, split_for_socks};

/// A path to the stand-in ORPort.
#[derive(Debug, Clone)]
pub enum Route {
    /// No transport: connect to the ORPort itself.
    Direct(SocketAddr),
    /// Through a client transport's SOCKS5 port, with bridge arguments, to the server
    /// transport at `bridge`.
    Socks {
        proxy: SocketAddr,
        /// RFC 1929 username and password carrying the arguments, as tor splits them.
        user: Vec<u8>,
        pass: Vec<u8>,
        bridge: SocketAddr,
    },
}

impl Route {
    /// A SOCKS route carrying `args` as tor does: `k=v` joined by `;` in the username, the
    /// overflow past 255 bytes in the password.
    pub fn socks(
        proxy: SocketAddr,
        args: &[(String, String)],
        bridge: SocketAddr,
    ) -> io::Result<Self> {
        let encoded = encode_socks_args(args).map_err(|e| io::Error::other(e.to_string()))?;
        let (user, pass) =
            split_for_socks(encoded.as_bytes()).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Route::Socks {
            proxy,
            user,
            pass,
            bridge,
        })
    }

    /// Opens a connection ready to carry data. Returns the stream, when the connection attempt
    /// began, and when the request for the far end was sent: the SOCKS CONNECT for a
    /// transport, the TCP connect for the direct route (it has no other request).
    pub async fn open(&self) -> io::Result<Opened> {
        let began = Instant::now();
        match self {
            Route::Direct(addr) => {
                let stream = TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Ok(Opened {
                    stream,
                    began,
                    request_sent: began,
                })
            }
            Route::Socks {
                proxy,
                user,
                pass,
                bridge,
            } => {
                let mut stream = TcpStream::connect(proxy).await?;
                stream.set_nodelay(true)?;
                let request_sent = socks5_handshake(&mut stream, user, pass, *bridge).await?;
                Ok(Opened {
                    stream,
                    began,
                    request_sent,
                })
            }
        }
    }
}

/// An open connection and its timings.
#[derive(Debug)]
pub struct Opened {
    pub stream: TcpStream,
    pub began: Instant,
    pub request_sent: Instant,
}

/// tor's side of SOCKS5 with bridge arguments: offer no-auth and username/password, expect the
/// latter to be chosen, authenticate with the arguments, CONNECT. Each step waits for its
/// reply, as tor does. Returns when the CONNECT was written.
async fn socks5_handshake(
    s: &mut TcpStream,
    user: &[u8],
    pass: &[u8],
    target: SocketAddr,
) -> io::Result<Instant> {
    let proto = |msg: String| io::Error::new(io::ErrorKind::InvalidData, msg);
    s.write_all(&[5, 2, 0, 2]).await?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice).await?;
    if choice != [5, 2] {
        return Err(proto(format!(
            "SOCKS method {choice:?}, not username/password"
        )));
    }
    let mut auth = Vec::with_capacity(3 + user.len() + pass.len());
    auth.push(1);
    auth.push(user.len() as u8);
    auth.extend_from_slice(user);
    auth.push(pass.len() as u8);
    auth.extend_from_slice(pass);
    s.write_all(&auth).await?;
    let mut status = [0u8; 2];
    s.read_exact(&mut status).await?;
    if status != [1, 0] {
        return Err(proto(format!("SOCKS auth refused: {status:?}")));
    }
    let mut req = vec![5, 1, 0];
    match target {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend_from_slice(&a.ip().octets());
        }
    }
    req.extend_from_slice(&target.port().to_be_bytes());
    let sent = Instant::now();
    s.write_all(&req).await?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head).await?;
    if head[0] != 5 || head[1] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!("SOCKS CONNECT refused (REP {})", head[1]),
        ));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            len[0] as usize + 2
        }
        t => return Err(proto(format!("SOCKS reply ATYP {t}"))),
    };
    let mut bound = vec![0u8; rest];
    s.read_exact(&mut bound).await?;
    Ok(sent)
}
