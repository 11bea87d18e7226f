//! The tracker client: signed announces as `POST /v1/announce` over HTTPS,
//! hand-written HTTP/1.1 over tokio-openssl with keep-alive.
//!
//! One request at a time on one connection, so HTTP/1.1 is all we need:
//! `Content-Length` bodies out, `Content-Length` or chunked bodies in. The
//! parser ([`parse_response`]) is sans-IO and bounded: the head may not
//! exceed [`MAX_HEAD`] and the body not [`MAX_RESPONSE_BODY`], whatever the
//! tracker (or something pretending to be it) sends. The tracker is
//! authenticated by its pin when one is configured (from `--tracker-pin` or
//! the `.atorrent`), else by the system CAs and its host name.

use std::time::Duration;

use anomos_common::api::{
    AnnounceResponse, ApiErrorBody, Message, ANNOUNCE_PATH, CONTENT_TYPE, MAX_RESPONSE_BODY,
};
use anomos_common::Pin;
use openssl::ssl::SslConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::tls::{peer_pin, tracker_connector};
use crate::error::TrackerError;

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// A parsed `https://host[:port][/prefix]` tracker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerUrl {
    /// Host name or IP literal (IPv6 without brackets), lower case.
    pub host: String,
    /// TCP port (443 if not given).
    pub port: u16,
    /// Path prefix without trailing slash (`""` for none).
    pub prefix: String,
}

impl TrackerUrl {
    /// Parse a tracker base URL. Only `https` is accepted: announces are
    /// signed, but neighbour addresses and circuits must stay confidential.
    pub fn parse(s: &str) -> Result<Self, TrackerError> {
        let bad =
            || TrackerError::Malformed("tracker URL must look like https://host[:port][/path]");
        let rest = s.trim().strip_prefix("https://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(bad)?;
            let port = match &v6[end + 1..] {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad())?,
            None => 443,
        };
        if host.is_empty() || port == 0 || host.contains(['@', ' ', '?', '#']) {
            return Err(bad());
        }
        Ok(TrackerUrl {
            host: host.to_ascii_lowercase(),
            port,
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// `https://host:port`: names the tracker for per-tracker identities.
    pub fn origin(&self) -> String {
        if self.host.contains(':') {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 443 {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// The bytes of one announce request.
pub fn build_request(url: &TrackerUrl, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {}{ANNOUNCE_PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\n\
         Accept: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
        url.prefix,
        url.host_header(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Parse one response from the front of `buf`: `Ok(None)` means more bytes
/// are needed; `Ok(Some((resp, used)))` a complete response of `used` bytes.
pub fn parse_response(buf: &[u8]) -> Result<Option<(HttpResponse, usize)>, TrackerError> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(TrackerError::Malformed("response head too long"));
        }
        return Ok(None);
    };
    if head_end > MAX_HEAD {
        return Err(TrackerError::Malformed("response head too long"));
    }
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| TrackerError::Malformed("response head is not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(TrackerError::Malformed("not an HTTP/1.x response"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|s| (100..600).contains(s))
        .ok_or(TrackerError::Malformed("bad status code"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(TrackerError::Malformed("bad header line"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value
                    .parse::<usize>()
                    .map_err(|_| TrackerError::Malformed("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(TrackerError::Malformed("conflicting content-length"));
                }
                length = Some(n);
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let rest = &buf[head_end + 4..];
    let (body, used) = if chunked {
        match dechunk(rest)? {
            Some(x) => x,
            None => return Ok(None),
        }
    } else {
        let n = length.ok_or(TrackerError::Malformed("response without length"))?;
        if n > MAX_RESPONSE_BODY {
            return Err(TrackerError::Malformed("response body too large"));
        }
        if rest.len() < n {
            return Ok(None);
        }
        (rest[..n].to_vec(), n)
    };
    let resp = HttpResponse {
        status,
        body,
        close,
    };
    Ok(Some((resp, head_end + 4 + used)))
}

/// Decode a chunked body (no trailers): `None` if incomplete.
fn dechunk(mut b: &[u8]) -> Result<Option<(Vec<u8>, usize)>, TrackerError> {
    let total = b.len();
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return if b.len() > 32 {
                Err(TrackerError::Malformed("bad chunk size line"))
            } else {
                Ok(None)
            };
        };
        let size_text = std::str::from_utf8(&b[..eol])
            .map_err(|_| TrackerError::Malformed("bad chunk size line"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size_text, 16)
            .map_err(|_| TrackerError::Malformed("bad chunk size"))?;
        if n > MAX_RESPONSE_BODY || out.len() + n > MAX_RESPONSE_BODY {
            return Err(TrackerError::Malformed("response body too large"));
        }
        let data = &b[eol + 2..];
        if data.len() < n + 2 {
            return Ok(None);
        }
        if &data[n..n + 2] != b"\r\n" {
            return Err(TrackerError::Malformed("chunk not terminated"));
        }
        if n == 0 {
            let used = total - b.len() + eol + 4;
            return Ok(Some((out, used)));
        }
        out.extend_from_slice(&data[..n]);
        b = &data[n + 2..];
    }
}

/// A connection to one tracker, re-used between announces.
pub struct TrackerClient {
    url: TrackerUrl,
    pin: Option<Pin>,
    connector: SslConnector,
    timeout: Duration,
    conn: Option<SslStream<TcpStream>>,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrackerClient({})", self.url.origin())
    }
}

impl TrackerClient {
    /// A client for `url`, checking the tracker by `pin` if given.
    pub fn new(url: TrackerUrl, pin: Option<Pin>, timeout: Duration) -> Result<Self, TrackerError> {
        let connector =
            tracker_connector(pin.is_some()).map_err(|_| TrackerError::Malformed("tls context"))?;
        Ok(TrackerClient {
            url,
            pin,
            connector,
            timeout,
            conn: None,
        })
    }

    /// POST one signed announce and decode the answer. A kept-alive
    /// connection the tracker closed meanwhile is retried once on a fresh one.
    pub async fn announce(&mut self, signed: &[u8]) -> Result<AnnounceResponse, TrackerError> {
        let req = build_request(&self.url, signed);
        let reused = self.conn.is_some();
        let resp = match self.exchange(&req).await {
            Err(TrackerError::Unreachable(_)) if reused => {
                self.conn = None;
                self.exchange(&req).await
            }
            other => other,
        };
        let resp = match resp {
            Ok(r) => r,
            Err(e) => {
                self.conn = None;
                return Err(e);
            }
        };
        if resp.close {
            self.conn = None;
        }
        if resp.status == 200 {
            return AnnounceResponse::decode(&resp.body)
                .map_err(|_| TrackerError::Malformed("announce response body"));
        }
        let message = ApiErrorBody::decode(&resp.body)
            .map(|b| b.message)
            .unwrap_or_else(|_| "no error body".to_owned());
        Err(TrackerError::Refused {
            status: resp.status,
            message,
        })
    }

    async fn exchange(&mut self, req: &[u8]) -> Result<HttpResponse, TrackerError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.exchange_inner(req))
            .await
            .map_err(|_| TrackerError::Unreachable("timed out".into()))?
    }

    async fn exchange_inner(&mut self, req: &[u8]) -> Result<HttpResponse, TrackerError> {
        let unreachable = |e: std::io::Error| TrackerError::Unreachable(e.kind().to_string());
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(TrackerError::Unreachable("no connection".into()));
        };
        conn.write_all(req).await.map_err(unreachable)?;
        conn.flush().await.map_err(unreachable)?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((resp, _)) = parse_response(&buf)? {
                return Ok(resp);
            }
            let n = conn.read(&mut chunk).await.map_err(unreachable)?;
            if n == 0 {
                return Err(TrackerError::Unreachable("connection closed".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn connect(&self) -> Result<SslStream<TcpStream>, TrackerError> {
        let unreachable = |e: std::io::Error| TrackerError::Unreachable(e.kind().to_string());
        let tcp = TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(unreachable)?;
        let _ = tcp.set_nodelay(true);
        let mut cfg = self
            .connector
            .configure()
            .map_err(|_| TrackerError::Malformed("tls context"))?;
        if self.pin.is_some() {
            cfg.set_verify_hostname(false);
        }
        let ssl = cfg
            .into_ssl(&self.url.host)
            .map_err(|_| TrackerError::Malformed("tls context"))?;
        let mut s = SslStream::new(ssl, tcp).map_err(|_| TrackerError::Malformed("tls context"))?;
        std::pin::Pin::new(&mut s)
            .connect()
            .await
            .map_err(|e| TrackerError::Unreachable(format!("tls: {e}")))?;
        if let Some(pin) = self.pin {
            if peer_pin(s.ssl()) != Some(pin) {
                return Err(TrackerError::BadPin);
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_host_port_prefix() {
        let u = TrackerUrl::parse("https://Tracker.Example:8443/anomos/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.prefix.as_str()),
            ("tracker.example", 8443, "/anomos")
        );
        assert_eq!(u.origin(), "https://tracker.example:8443");
        let u = TrackerUrl::parse("https://[::1]:9000").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9000));
        assert_eq!(u.origin(), "https://[::1]:9000");
        assert_eq!(TrackerUrl::parse("https://t").unwrap().port, 443);
        for bad in [
            "http://t",
            "https://",
            "https://t:x",
            "https://t:0",
            "https://u@t",
            "t:1",
        ] {
            assert!(TrackerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_has_path_host_type_and_length() {
        let u = TrackerUrl::parse("https://127.0.0.1:8443/p").unwrap();
        let r = build_request(&u, b"abc");
        let text = String::from_utf8(r).unwrap();
        assert!(
            text.starts_with("POST /p/v1/announce HTTP/1.1\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nHost: 127.0.0.1:8443\r\n"));
        assert!(text.contains("\r\nContent-Type: application/x-anomos-bincode\r\n"));
        assert!(text.contains("\r\nContent-Length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn parses_length_and_chunked_responses_incrementally() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: x\r\n\r\nhelloNEXT";
        for cut in 0..raw.len() - 4 {
            assert_eq!(parse_response(&raw[..cut]).unwrap(), None, "cut {cut}");
        }
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close, used),
            (200, &b"hello"[..], false, raw.len() - 4)
        );

        let raw = b"HTTP/1.1 429 Too Many\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        for cut in 0..raw.len() {
            assert_eq!(parse_response(&raw[..cut]).unwrap(), None, "cut {cut}");
        }
        let (r, used) = parse_response(raw).unwrap().unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.close, used),
            (429, &b"abcde"[..], true, raw.len())
        );
    }

    #[test]
    fn refuses_malformed_or_oversized_responses() {
        let bad: [&[u8]; 7] = [
            b"SSH-2.0-x\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ];
        for b in bad {
            assert!(parse_response(b).is_err(), "{}", String::from_utf8_lossy(b));
        }
        assert!(parse_response(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            raw.extend_from_slice(&bytes);
            let _ = parse_response(&raw);
            let _ = parse_response(&bytes);
        }
    }
}
