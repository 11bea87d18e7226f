//! A minimal HTTPS/1.1 keep-alive client for the tracker's bincode API.
//!
//! Why not an HTTP library: the load tester must measure the tracker, not a
//! client stack, and it needs exactly one thing — `POST /v1/announce` with a
//! bincode body, many times over one kept-alive TLS connection. A request is
//! one `write_all` of head and body together (one TLS record, one syscall);
//! the response is read until its `Content-Length` is complete.
//!
//! The tracker's certificate is self-signed, so the usual chain check is off
//! and the connection is accepted only when the SHA-256 of the served SPKI
//! equals the expected pin — the same rule peers follow.

use std::net::SocketAddr;
use std::time::Duration;

use anomos_common::api::{ANNOUNCE_PATH, CONTENT_TYPE, MAX_RESPONSE_BODY};
use anomos_common::identity::pin_of_x509;
use anomos_common::Pin;
use anyhow::{bail, Context as _};
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One kept-alive connection to the tracker's HTTPS API.
#[derive(Debug)]
pub struct TrackerClient {
    stream: SslStream<TcpStream>,
    /// Bytes read past the previous response (normally none).
    buf: Vec<u8>,
    request: Vec<u8>,
    timeout: Duration,
}

/// Build the TLS context once; each connection configures an `Ssl` from it.
pub fn connector() -> anyhow::Result<SslConnector> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_verify(SslVerifyMode::NONE);
    Ok(b.build())
}

impl TrackerClient {
    /// Connect, handshake and check the served certificate against `pin`.
    pub async fn connect(
        connector: &SslConnector,
        addr: SocketAddr,
        pin: Pin,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let connect = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut cfg = connector.configure()?;
            cfg.set_verify_hostname(false);
            let ssl = cfg.into_ssl("anomos-tracker")?;
            let mut stream = SslStream::new(ssl, tcp)?;
            std::pin::Pin::new(&mut stream).connect().await?;
            anyhow::Ok(stream)
        };
        let stream = tokio::time::timeout(timeout, connect)
            .await
            .context("TLS connect timed out")??;
        let cert = stream
            .ssl()
            .peer_certificate()
            .context("tracker sent no certificate")?;
        if pin_of_x509(&cert)? != pin {
            bail!("tracker certificate does not match the pin");
        }
        Ok(TrackerClient {
            stream,
            buf: Vec::new(),
            request: Vec::new(),
            timeout,
        })
    }

    /// `POST /v1/announce` with `body`; returns (status, response body).
    /// Any error leaves the connection unusable: drop it and reconnect.
    pub async fn announce(&mut self, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        self.request.clear();
        self.request.extend_from_slice(
            format!(
                "POST {ANNOUNCE_PATH} HTTP/1.1\r\nHost: tracker\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        self.request.extend_from_slice(body);
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.stream.write_all(&self.request).await?;
            self.read_response().await
        })
        .await
        .context("announce timed out")?
    }

    async fn read_response(&mut self) -> anyhow::Result<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            if self.buf.len() > MAX_HEAD {
                bail!("response head too long");
            }
            self.fill().await?;
        };
        let head = parse_head(&self.buf[..head_end])?;
        if head.body_len > MAX_RESPONSE_BODY {
            bail!("response body too long");
        }
        while self.buf.len() < head_end + head.body_len {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + head.body_len].to_vec();
        self.buf.drain(..head_end + head.body_len);
        Ok((head.status, body))
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed by the tracker");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Status line and framing of a response head.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    body_len: usize,
}

/// Parse `HTTP/1.1 STATUS …` and `Content-Length`; chunked bodies are
/// refused (the tracker always sends a length for its bincode bodies).
fn parse_head(head: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(head).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let mut body_len = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            body_len = Some(value.trim().parse().context("bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked responses are not supported");
        }
    }
    Ok(Head {
        status,
        body_len: body_len.unwrap_or(0),
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_status_and_length() {
        let h = parse_head(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 17\r\nx: y\r\n\r\n")
            .unwrap();
        assert_eq!(
            h,
            Head {
                status: 429,
                body_len: 17
            }
        );
        let h = parse_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.body_len, 0);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    }

    #[test]
    fn find_locates_the_head_end() {
        assert_eq!(find(b"ab\r\n\r\ncd", b"\r\n\r\n"), Some(2));
        assert_eq!(find(b"ab\r\n", b"\r\n\r\n"), None);
    }
}
