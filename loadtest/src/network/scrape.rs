//! Reading `/metrics` (and the tracker's `/status`) of every process.
//!
//! Scrapes run on a short-lived thread of their own, one GET after another
//! with plain blocking sockets, and hand the bodies back to the async
//! driver. Why a thread: in `netns` mode the operator listeners live in
//! network namespaces the load tester's own threads cannot reach, so the
//! scraping thread first moves itself into the hub namespace (where the
//! bridge is) with `setns`; a thread that did that is never reused. Why
//! blocking sockets: a few hundred small GETs per scrape cost milliseconds,
//! and no runtime has to be entered on that thread.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

/// Longest wait for one GET (connect, then each read and write).
const GET_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest body accepted.
const MAX_BODY: usize = 8 << 20;

/// One GET to make.
#[derive(Debug, Clone)]
pub struct Get {
    /// The operator listener.
    pub addr: SocketAddr,
    /// `/metrics` or `/status`.
    pub path: &'static str,
    /// Bearer token (for `/status`).
    pub token: Option<String>,
}

impl Get {
    /// `GET /metrics` at `addr`.
    pub fn metrics(addr: SocketAddr) -> Get {
        Get {
            addr,
            path: "/metrics",
            token: None,
        }
    }
}

/// Where scrapes run from.
#[derive(Debug, Clone, Default)]
pub struct Scraper {
    /// A network namespace file (`/run/netns/NAME`) to enter first.
    pub netns: Option<PathBuf>,
}

impl Scraper {
    /// Make every GET in order; one result per GET.
    pub async fn get_all(&self, gets: Vec<Get>) -> anyhow::Result<Vec<anyhow::Result<String>>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let netns = self.netns.clone();
        std::thread::Builder::new()
            .name("scrape".into())
            .spawn(move || {
                let out = match netns.as_deref().map(super::netns::enter).transpose() {
                    Ok(_) => gets.iter().map(get).collect(),
                    Err(e) => gets.iter().map(|_| Err(anyhow::anyhow!("{e:#}"))).collect(),
                };
                let _ = tx.send(out);
            })?;
        rx.await.context("scrape thread died")
    }

    /// Every GET must succeed.
    pub async fn get_each(&self, gets: Vec<Get>) -> anyhow::Result<Vec<String>> {
        self.get_all(gets).await?.into_iter().collect()
    }
}

/// One plain HTTP/1.1 GET; the body of a 200.
fn get(g: &Get) -> anyhow::Result<String> {
    let what = || format!("GET http://{}{}", g.addr, g.path);
    let mut s = TcpStream::connect_timeout(&g.addr, GET_TIMEOUT).with_context(what)?;
    s.set_read_timeout(Some(GET_TIMEOUT))?;
    s.set_write_timeout(Some(GET_TIMEOUT))?;
    let auth = g
        .token
        .as_deref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n",
        g.path
    );
    s.write_all(req.as_bytes()).with_context(what)?;
    let mut out = Vec::new();
    s.take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .with_context(what)?;
    if out.len() > MAX_BODY {
        bail!("{}: response too large", what());
    }
    let out = String::from_utf8_lossy(&out);
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}: {}", what(), head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// The value of `key` in the tracker's `/status` lines (`key value`).
pub fn status_value(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Answer `n` connections with `reply` each.
    fn serve(reply: &'static str, n: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..n {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).unwrap();
                c.write_all(reply.as_bytes()).unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn gets_bodies_and_refuses_errors() {
        let ok = serve("HTTP/1.1 200 OK\r\n\r\nx_total 3\n", 2);
        let bad = serve("HTTP/1.1 401 Unauthorized\r\n\r\n", 1);
        let s = Scraper::default();
        let r = s
            .get_all(vec![Get::metrics(ok), Get::metrics(bad), Get::metrics(ok)])
            .await
            .unwrap();
        assert_eq!(r[0].as_ref().unwrap(), "x_total 3\n");
        assert!(r[1].as_ref().unwrap_err().to_string().contains("401"));
        assert!(r[2].is_ok());
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(s.get_each(vec![Get::metrics(closed)]).await.is_err());
    }

    #[tokio::test]
    async fn a_missing_namespace_fails_every_get() {
        let s = Scraper {
            netns: Some("/nonexistent/netns".into()),
        };
        let r = s
            .get_all(vec![Get::metrics(([127, 0, 0, 1], 9).into())])
            .await;
        assert!(r.unwrap()[0].is_err());
    }

    #[test]
    fn status_lines_parse() {
        let t = "peers 5\ngraph_edges 12\n";
        assert_eq!(status_value(t, "graph_edges"), Some(12.0));
        assert_eq!(status_value(t, "graph"), None);
    }
}
