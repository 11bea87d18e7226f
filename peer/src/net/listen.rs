//! The link listener: TLS accept, the neighbour's hello, checks against the
//! tracker's neighbour table, our hello back → [`EstablishedLink`].
//!
//! Order of checks: the hello names the NID, the NID names the pin the
//! tracker gave, the certificate must show that pin and the hello must name
//! the same peer. Only then do we answer with our own hello, so a stranger
//! learns nothing but our certificate (which the tracker's reachability probe
//! sees anyway). A connection that closes or stays silent without a hello is
//! that probe, or a scanner: it is closed quietly, never counted. Bytes
//! that are not a TLS handshake are counted (`bad_tls`).

use std::rc::Rc;
use std::time::Duration;

use anomos_common::hello::{Hello, HELLO_LEN};
use anomos_common::{DecodeError, Nid, PeerId};
use openssl::ssl::{Ssl, SslAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_openssl::SslStream;

use super::tls::peer_pin;
use super::NeighbourTable;
use crate::error::LinkError;
use crate::link::{link_socket, EstablishedLink};
use crate::metrics::Metrics;

/// What the listener needs to check incoming links.
pub struct AcceptContext {
    /// TLS context with our certificate.
    pub acceptor: SslAcceptor,
    /// Our peer id (sent in our hello).
    pub me: PeerId,
    /// The current neighbour table.
    pub table: watch::Receiver<NeighbourTable>,
    /// Called with a NID the table does not know: asks for an early
    /// re-announce (the tracker may have told the other end first).
    pub on_unknown_nid: Box<dyn Fn(Nid)>,
    /// Budget for the TLS handshake and the hello.
    pub handshake_timeout: Duration,
    /// How long an unknown NID waits for the table to learn it.
    pub unknown_nid_wait: Duration,
    /// Violation counters.
    pub metrics: Metrics,
}

impl std::fmt::Debug for AcceptContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptContext")
    }
}

/// Accept connections until the listener fails; each verified link goes
/// to `on_link`. Runs on the current (actix) thread.
pub fn spawn_listener(
    listener: TcpListener,
    ctx: Rc<AcceptContext>,
    on_link: Rc<dyn Fn(EstablishedLink)>,
) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        loop {
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    actix_rt::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (ctx, on_link) = (ctx.clone(), on_link.clone());
            actix_rt::spawn(async move {
                match accept_link(&ctx, tcp).await {
                    Ok(link) => on_link(link),
                    Err(e) => report(&ctx.metrics, &e, "incoming"),
                }
            });
        }
    })
}

/// Count and log a failed link set-up. Probes and network errors are quiet.
pub fn report(metrics: &Metrics, e: &LinkError, dir: &'static str) {
    if e.is_violation() {
        metrics.violation(e.kind());
        tracing::warn!(kind = e.kind(), dir, "link refused");
    } else {
        tracing::debug!(kind = e.kind(), dir, "link set-up failed");
    }
}

/// Run the accept side of one connection.
pub async fn accept_link(
    ctx: &AcceptContext,
    tcp: TcpStream,
) -> Result<EstablishedLink, LinkError> {
    let _ = tcp.set_nodelay(true);
    let ssl = Ssl::new(ctx.acceptor.context())?;
    let mut s = SslStream::new(ssl, link_socket(tcp))?;
    let (hello, pin) = tokio::time::timeout(ctx.handshake_timeout, async {
        std::pin::Pin::new(&mut s).accept().await.map_err(|e| {
            // A protocol error is garbage from the other side; anything
            // else (EOF, reset) is a probe or the network.
            if e.code() == openssl::ssl::ErrorCode::SSL {
                LinkError::BadTls
            } else {
                LinkError::Tls
            }
        })?;
        let hello = read_hello(&mut s).await?;
        Ok::<_, LinkError>((hello, peer_pin(s.ssl())))
    })
    .await
    .map_err(|_| LinkError::NoHello)??;
    let expected = lookup(ctx, hello.nid).await?;
    if pin.map(PeerId::from) != Some(PeerId(expected.0)) {
        return Err(LinkError::BadPin);
    }
    hello
        .check(PeerId(expected.0), hello.nid)
        .map_err(|_| LinkError::BadHello)?;
    s.write_all(&Hello::new(ctx.me, hello.nid).encode()).await?;
    s.flush().await?;
    Ok(EstablishedLink {
        nid: hello.nid,
        peer: hello.peer,
        dialer: false,
        stream: s,
    })
}

/// The pin the tracker gave for `nid`, waiting briefly (after asking for
/// an early re-announce) if the table does not have it yet.
async fn lookup(ctx: &AcceptContext, nid: Nid) -> Result<anomos_common::Pin, LinkError> {
    let mut table = ctx.table.clone();
    if let Some(n) = table.borrow().get(&nid) {
        return Ok(n.pin);
    }
    (ctx.on_unknown_nid)(nid);
    let waited = tokio::time::timeout(ctx.unknown_nid_wait, async {
        table
            .wait_for(|t| t.contains_key(&nid))
            .await
            .ok()
            .and_then(|t| t.get(&nid).map(|n| n.pin))
    })
    .await;
    waited.ok().flatten().ok_or(LinkError::UnknownNid)
}

/// Read one hello. The magic is checked on whatever prefix arrived, so a
/// stranger speaking another protocol is refused at once. EOF before the
/// first byte is a silent probe ([`LinkError::NoHello`]).
pub async fn read_hello<S: AsyncRead + Unpin>(s: &mut S) -> Result<Hello, LinkError> {
    let mut buf = [0u8; HELLO_LEN];
    let mut got = 0;
    loop {
        match Hello::decode(&buf[..got]) {
            Ok((h, _)) => return Ok(h),
            Err(DecodeError::NeedMore(_)) => {}
            Err(_) => return Err(LinkError::BadHello),
        }
        let n = match s.read(&mut buf[got..]).await {
            Ok(n) => n,
            Err(_) if got == 0 => return Err(LinkError::NoHello),
            Err(e) => return Err(LinkError::Io(e)),
        };
        if n == 0 {
            return Err(if got == 0 {
                LinkError::NoHello
            } else {
                LinkError::BadHello
            });
        }
        got += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn hello_reader_sorts_probes_from_garbage() {
        let good = Hello::new(PeerId([3; 32]), Nid(9)).encode();
        let mut r: &[u8] = &good;
        assert_eq!(read_hello(&mut r).await.unwrap().nid, Nid(9));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_hello(&mut empty).await,
            Err(LinkError::NoHello)
        ));
        let mut http: &[u8] = b"GET / HTTP/1.1\r\n";
        assert!(matches!(
            read_hello(&mut http).await,
            Err(LinkError::BadHello)
        ));
        let mut short: &[u8] = &good[..20];
        assert!(matches!(
            read_hello(&mut short).await,
            Err(LinkError::BadHello)
        ));
    }
}
