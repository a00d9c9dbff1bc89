//! Test-only proxies and an echo server, written from the protocol texts (RFC 1928/1929,
//! SOCKS4a, HTTP CONNECT) rather than from the client code they test. Shared by the unit tests
//! of `src/proxy` (included with `#[path]`) and the transport's integration tests.
#![allow(dead_code)]

use base64::Engine as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

/// Sent by every test proxy in the same write as its success reply: if `dial` read past the
/// reply, these bytes would be missing from the stream it returns.
pub const BANNER: &[u8] = b"via-proxy;";

/// An echo server on loopback; serves any number of connections.
pub fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let Ok(mut reader) = conn.try_clone() else {
                    return;
                };
                let _ = io::copy(&mut reader, &mut conn);
            });
        }
    });
    addr
}

/// Accepts one connection and runs `handshake` on it. On `Ok(record)` it connects to
/// `upstream` and relays both ways; the record (or the error) is sent on the returned channel.
pub fn spawn_proxy<F>(
    upstream: SocketAddr,
    handshake: F,
) -> (SocketAddr, mpsc::Receiver<Result<String, String>>)
where
    F: FnOnce(&mut TcpStream) -> Result<String, String> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let outcome = handshake(&mut client);
        let ok = outcome.is_ok();
        tx.send(outcome).unwrap();
        if !ok {
            return;
        }
        let mut up = TcpStream::connect(upstream).unwrap();
        let mut up_r = up.try_clone().unwrap();
        let mut client_w = client.try_clone().unwrap();
        thread::spawn(move || {
            let _ = io::copy(&mut up_r, &mut client_w);
        });
        let _ = io::copy(&mut client, &mut up);
    });
    (addr, rx)
}

pub fn read_n(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(buf)
}

fn read_until_nul(s: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match read_n(s, 1)?[0] {
            0 => return Ok(out),
            b => out.push(b),
        }
    }
}

/// A SOCKS5 server. With `creds`, it insists on method 0x02 and those exact credentials.
/// It answers CONNECT with `rep` and the bound-address bytes `bnd` (ATYP + address + port).
pub fn socks5_server(
    creds: Option<(&'static str, &'static str)>,
    rep: u8,
    bnd: Vec<u8>,
) -> impl FnOnce(&mut TcpStream) -> Result<String, String> + Send + 'static {
    move |s| {
        let head = read_n(s, 2)?;
        if head[0] != 5 {
            return Err("not socks5".into());
        }
        let methods = read_n(s, usize::from(head[1]))?;
        let method = if creds.is_some() { 2 } else { 0 };
        if !methods.contains(&method) {
            s.write_all(&[5, 0xff]).unwrap();
            return Err(format!("method {method} not offered in {methods:?}"));
        }
        s.write_all(&[5, method]).unwrap();
        if let Some((user, pass)) = creds {
            let ver = read_n(s, 1)?[0];
            let ulen = read_n(s, 1)?[0];
            let u = read_n(s, usize::from(ulen))?;
            let plen = read_n(s, 1)?[0];
            let p = read_n(s, usize::from(plen))?;
            if ver != 1 || u != user.as_bytes() || p != pass.as_bytes() {
                s.write_all(&[1, 1]).unwrap();
                return Err("bad credentials".into());
            }
            s.write_all(&[1, 0]).unwrap();
        }
        let req = read_n(s, 4)?;
        if req[..3] != [5, 1, 0] {
            return Err(format!("bad request header {req:?}"));
        }
        let host = match req[3] {
            1 => IpAddr::from(<[u8; 4]>::try_from(read_n(s, 4)?).unwrap()).to_string(),
            4 => format!(
                "[{}]",
                IpAddr::from(<[u8; 16]>::try_from(read_n(s, 16)?).unwrap())
            ),
            3 => {
                let len = read_n(s, 1)?[0];
                String::from_utf8(read_n(s, usize::from(len))?).map_err(|e| e.to_string())?
            }
            other => return Err(format!("atyp {other}")),
        };
        let port = u16::from_be_bytes(read_n(s, 2)?.try_into().unwrap());
        let mut reply = vec![5, rep, 0];
        reply.extend_from_slice(&bnd);
        if rep != 0 {
            s.write_all(&reply).unwrap();
            return Err(format!("refused with {rep}"));
        }
        reply.extend_from_slice(BANNER);
        s.write_all(&reply).unwrap();
        Ok(format!(
            "socks5 method={method} atyp={} target={host}:{port}",
            req[3]
        ))
    }
}

pub const BND_V4: [u8; 7] = [1, 10, 9, 8, 7, 0x1f, 0x90];

/// A SOCKS4/4a server answering with reply code `cd`.
pub fn socks4a_server(
    cd: u8,
) -> impl FnOnce(&mut TcpStream) -> Result<String, String> + Send + 'static {
    move |s| {
        let head = read_n(s, 8)?;
        if head[..2] != [4, 1] {
            return Err(format!("bad header {head:?}"));
        }
        let port = u16::from_be_bytes([head[2], head[3]]);
        let ip = [head[4], head[5], head[6], head[7]];
        let user = read_until_nul(s)?;
        let host = if ip[..3] == [0, 0, 0] && ip[3] != 0 {
            String::from_utf8(read_until_nul(s)?).map_err(|e| e.to_string())?
        } else {
            IpAddr::from(ip).to_string()
        };
        let mut reply = vec![0, cd, 0, 0, 0, 0, 0, 0];
        if cd != 90 {
            s.write_all(&reply).unwrap();
            return Err(format!("refused with {cd}"));
        }
        reply.extend_from_slice(BANNER);
        s.write_all(&reply).unwrap();
        Ok(format!(
            "socks4a ip={} user={:?} target={host}:{port}",
            IpAddr::from(ip),
            user
        ))
    }
}

/// An HTTP CONNECT proxy; with `creds` it demands exactly that Basic authorization.
pub fn http_server(
    creds: Option<(&'static str, &'static str)>,
) -> impl FnOnce(&mut TcpStream) -> Result<String, String> + Send + 'static {
    move |s| {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.extend(read_n(s, 1)?);
        }
        let text = String::from_utf8(head).map_err(|e| e.to_string())?;
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut auth = None;
        for line in lines {
            if let Some(v) = line.strip_prefix("Proxy-Authorization: Basic ") {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| e.to_string())?;
                auth = Some(String::from_utf8(raw).map_err(|e| e.to_string())?);
            }
        }
        if let Some((user, pass)) = creds {
            if auth.as_deref() != Some(&format!("{user}:{pass}")) {
                let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                               Proxy-Authenticate: Basic realm=\"t\"\r\n\r\n";
                s.write_all(refusal.as_bytes()).unwrap();
                return Err("bad credentials".into());
            }
        }
        let mut reply = b"HTTP/1.1 200 Connection established\r\nX-Test: 1\r\n\r\n".to_vec();
        reply.extend_from_slice(BANNER);
        s.write_all(&reply).unwrap();
        Ok(format!("{request_line} auth={auth:?}"))
    }
}
