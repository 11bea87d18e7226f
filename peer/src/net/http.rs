//! The operator listener: plain HTTP `/metrics` (Prometheus text) and
//! `/healthz`. Meant for localhost; it serves nothing sensitive (metric
//! labels come from fixed sets), but neither does it need to be public.
//!
//! Hand-written because it answers two GETs: one request per connection,
//! head bounded to 8 KiB and 5 s, then `Connection: close`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve `/metrics` and `/healthz` on `listener` until the task is dropped.
pub fn spawn_operator(listener: TcpListener, metrics: Metrics) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let m = metrics.clone();
            actix_rt::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT, serve_one(tcp, &m)).await;
            });
        }
    })
}

async fn serve_one(mut tcp: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, ctype, body) = route(&buf, metrics);
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.shutdown().await
}

/// Pick the answer for a request head.
fn route(head: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::new().unwrap();
        m.neighbors_connected.set(3);
        let (s, _, body) = route(b"GET /metrics HTTP/1.1\r\n\r\n", &m);
        assert_eq!(s, "200 OK");
        assert!(body.contains("anomos_neighbors_connected 3"));
        assert_eq!(route(b"GET /healthz?x HTTP/1.1\r\n\r\n", &m).2, "ok\n");
        assert_eq!(route(b"GET /other HTTP/1.1\r\n\r\n", &m).0, "404 Not Found");
        assert_eq!(
            route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"\xff\xfe", &m).0, "405 Method Not Allowed");
    }

    #[actix_rt::test]
    async fn serves_over_tcp() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _h = spawn_operator(l, Metrics::new().unwrap());
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("\r\n\r\nok\n"),
            "{out}"
        );
    }
}
