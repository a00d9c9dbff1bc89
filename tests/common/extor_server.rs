//! A test Extended ORPort server written from ext-orport-spec, independently of the client in
//! `src/extor`: its own HMAC computation and command parsing. Shared by the unit tests of
//! `src/extor` (included with `#[path]`) and the integration tests of the transport.
#![allow(dead_code)]

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const HEADER: &[u8] = b"! Extended ORPort Auth Cookie !\n";
pub const COOKIE_A: [u8; 32] = [0x11; 32];
pub const COOKIE_B: [u8; 32] = [0x22; 32];
pub const OKAY: &[u8] = &[0x10, 0x00, 0x00, 0x00];
pub const DENY: &[u8] = &[0x10, 0x01, 0x00, 0x00];

/// A cookie file that removes itself when the test ends.
pub struct CookieFile(pub PathBuf);

impl CookieFile {
    pub fn with_contents(contents: &[u8]) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "extor-cookie-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).unwrap();
        CookieFile(path)
    }

    pub fn new(cookie: &[u8; 32]) -> Self {
        Self::with_contents(&[HEADER, cookie].concat())
    }
}

impl Drop for CookieFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub struct Server {
    pub auth_types: Vec<u8>,
    /// Cookie used for the ServerHash tor sends.
    pub cookie: [u8; 32],
    /// Cookie used to check the client's hash (normally the same).
    pub check_cookie: [u8; 32],
    /// Bytes sent after DONE (commands, then possibly payload).
    pub reply: Vec<u8>,
    /// Whether to echo after `reply`.
    pub echo: bool,
}

impl Server {
    pub fn new(cookie: [u8; 32]) -> Self {
        let mut reply = vec![0x77, 0x77, 0x00, 0x02, b'z', b'z']; // unknown command: skipped
        reply.extend_from_slice(OKAY);
        reply.extend_from_slice(b"hello"); // same write as OKAY: must not be swallowed
        Server {
            auth_types: vec![1, 0],
            cookie,
            check_cookie: cookie,
            reply,
            echo: true,
        }
    }

    /// Just OKAY, then the server is done: for tests that drop the stream right away (unread
    /// payload at close would make the kernel reset the connection under the server).
    pub fn okay_only(cookie: [u8; 32]) -> Self {
        Server {
            reply: OKAY.to_vec(),
            echo: false,
            ..Server::new(cookie)
        }
    }
}

/// What the test server saw.
#[derive(Debug)]
pub struct Seen {
    pub chosen: u8,
    pub client_hash_ok: bool,
    pub raw_commands: Vec<u8>,
    pub commands: Vec<(u16, Vec<u8>)>,
}

pub fn hmac(cookie: &[u8; 32], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(cookie).unwrap();
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Serves exactly one connection on a fresh loopback listener.
pub async fn spawn(server: Server) -> (SocketAddr, JoinHandle<Result<Seen, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
        handle(s, server).await
    });
    (addr, handle)
}

/// Runs the server side of one accepted connection: authentication, commands, `reply`, then
/// an echo of everything that follows when `echo` is set.
pub async fn handle(mut s: TcpStream, server: Server) -> Result<Seen, String> {
    let e = |e: io::Error| e.to_string();
    s.write_all(&server.auth_types).await.map_err(e)?;
    let chosen = s.read_u8().await.map_err(e)?;
    let mut cn = [0u8; 32];
    s.read_exact(&mut cn).await.map_err(e)?;
    let sn = [0x5a; 32];
    let sh = hmac(
        &server.cookie,
        &[b"ExtORPort authentication server-to-client hash", &cn, &sn],
    );
    s.write_all(&[&sh[..], &sn[..]].concat()).await.map_err(e)?;
    let mut ch = [0u8; 32];
    s.read_exact(&mut ch).await.map_err(e)?;
    let want = hmac(
        &server.check_cookie,
        &[b"ExtORPort authentication client-to-server hash", &cn, &sn],
    );
    let client_hash_ok = ch[..] == want[..];
    s.write_all(&[u8::from(client_hash_ok)]).await.map_err(e)?;
    if !client_hash_ok {
        return Ok(Seen {
            chosen,
            client_hash_ok,
            raw_commands: vec![],
            commands: vec![],
        });
    }
    let (mut raw_commands, mut commands) = (Vec::new(), Vec::new());
    loop {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.map_err(e)?;
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.map_err(e)?;
        raw_commands.extend_from_slice(&head);
        raw_commands.extend_from_slice(&body);
        commands.push((kind, body));
        if kind == 0 {
            break;
        }
    }
    s.write_all(&server.reply).await.map_err(e)?;
    if server.echo {
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.map_err(e)?;
    }
    Ok(Seen {
        chosen,
        client_hash_ok,
        raw_commands,
        commands,
    })
}
