//! `--metrics-listen ADDR`: the [statistics](super::stats) in the Prometheus text format.
//!
//! The counters are the totals since the start (Prometheus wants counters that only grow),
//! labelled by side and module, never by address. The endpoint answers every `GET` with the
//! whole page and closes the connection.
//!
//! The HTTP side is written here rather than taken from a crate: it reads one request head
//! (bounded in size and time) and writes one fixed response, which is less code than wiring
//! an HTTP server crate into the transport's tokio runtime, and nothing of the request is
//! interpreted beyond its first line.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::stats::Stats;

/// The most bytes of a request head read before answering anyway.
const MAX_REQUEST: usize = 8 << 10;
/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `stats` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &stats)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, stats: &Stats) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let response = if head.starts_with(b"GET ") {
        let body = render(stats);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The page: one family per counter, one sample per side and module.
pub fn render(stats: &Stats) -> String {
    let totals = stats.totals();
    let mut out = String::new();
    let labels = |key: &str| {
        let (side, module) = key.split_once(' ').unwrap_or(("", key));
        format!("side=\"{}\",module=\"{}\"", escape(side), escape(module))
    };
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut out,
        "water_connections_accepted_total",
        "counter",
        "Connections accepted.",
    );
    for (key, c) in &totals {
        let _ = writeln!(
            out,
            "water_connections_accepted_total{{{}}} {}",
            labels(key),
            c.accepted
        );
    }
    family(
        &mut out,
        "water_connections_completed_total",
        "counter",
        "Connections that ended normally.",
    );
    for (key, c) in &totals {
        let _ = writeln!(
            out,
            "water_connections_completed_total{{{}}} {}",
            labels(key),
            c.completed
        );
    }
    family(
        &mut out,
        "water_connections_failed_total",
        "counter",
        "Connections that failed, by reason.",
    );
    for (key, c) in &totals {
        for (reason, n) in &c.failed {
            let _ = writeln!(
                out,
                "water_connections_failed_total{{{},reason=\"{}\"}} {n}",
                labels(key),
                escape(reason)
            );
        }
    }
    family(
        &mut out,
        "water_network_bytes_total",
        "counter",
        "Bytes the modules read from (in) and wrote to (out) the network, counted as connections end.",
    );
    for (key, c) in &totals {
        let l = labels(key);
        let _ = writeln!(
            out,
            "water_network_bytes_total{{{l},direction=\"in\"}} {}",
            c.bytes_in
        );
        let _ = writeln!(
            out,
            "water_network_bytes_total{{{l},direction=\"out\"}} {}",
            c.bytes_out
        );
    }
    family(
        &mut out,
        "water_connections_open",
        "gauge",
        "Connections open now.",
    );
    for (key, c) in &totals {
        let _ = writeln!(out, "water_connections_open{{{}}} {}", labels(key), c.open);
    }
    family(
        &mut out,
        "water_connections_peak",
        "gauge",
        "Most connections open at once since the start.",
    );
    for (key, c) in &totals {
        let _ = writeln!(out, "water_connections_peak{{{}}} {}", labels(key), c.peak);
    }
    out
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_totals_as_prometheus_text() {
        let stats = Arc::new(Stats::default());
        let c = stats.accepted("bridge", "shadowsocks");
        c.add_bytes(5, 7);
        c.failed("extor-denied");
        let _open = stats.accepted("bridge", "shadowsocks");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, stats.clone()));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).await.unwrap();
        server.abort();
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        for line in [
            "water_connections_accepted_total{side=\"bridge\",module=\"shadowsocks\"} 2",
            "water_connections_failed_total{side=\"bridge\",module=\"shadowsocks\",reason=\"extor-denied\"} 1",
            "water_network_bytes_total{side=\"bridge\",module=\"shadowsocks\",direction=\"in\"} 5",
            "water_network_bytes_total{side=\"bridge\",module=\"shadowsocks\",direction=\"out\"} 7",
            "water_connections_open{side=\"bridge\",module=\"shadowsocks\"} 1",
            "# TYPE water_connections_peak gauge",
        ] {
            assert!(page.lines().any(|l| l == line), "{line}\n{page}");
        }
        // Reports restart the period's counters, not the totals.
        stats.report("test");
        assert!(render(&stats).contains(
            "water_connections_accepted_total{side=\"bridge\",module=\"shadowsocks\"} 2"
        ));
    }
}
