//! Dialling a neighbour: TCP, TLS 1.3, pin check, hellos → [`EstablishedLink`].
//!
//! The mirror image of `listen`: we know the NID and the pin before
//! connecting, so the certificate is checked right after the handshake and
//! we speak first; the neighbour's hello must name the pinned peer and the
//! same NID.

use std::time::Duration;

use anomos_common::api::Neighbour;
use anomos_common::hello::Hello;
use anomos_common::PeerId;
use openssl::ssl::SslConnector;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use super::listen::read_hello;
use super::tls::peer_pin;
use crate::error::LinkError;
use crate::link::EstablishedLink;

/// Dial `n` and run the link handshake, all within `timeout`.
pub async fn dial(
    connector: &SslConnector,
    me: PeerId,
    n: &Neighbour,
    timeout: Duration,
) -> Result<EstablishedLink, LinkError> {
    tokio::time::timeout(timeout, dial_inner(connector, me, n))
        .await
        .map_err(|_| LinkError::Timeout)?
}

async fn dial_inner(
    connector: &SslConnector,
    me: PeerId,
    n: &Neighbour,
) -> Result<EstablishedLink, LinkError> {
    let tcp = TcpStream::connect(n.addr).await?;
    let _ = tcp.set_nodelay(true);
    let ssl = connector
        .configure()?
        .verify_hostname(false)
        .use_server_name_indication(false)
        .into_ssl("anomos-peer")?;
    let mut s = SslStream::new(ssl, tcp)?;
    std::pin::Pin::new(&mut s)
        .connect()
        .await
        .map_err(|_| LinkError::Tls)?;
    if peer_pin(s.ssl()) != Some(n.pin) {
        return Err(LinkError::BadPin);
    }
    s.write_all(&Hello::new(me, n.nid).encode()).await?;
    s.flush().await?;
    let theirs = match read_hello(&mut s).await {
        // The other end closing without a hello: it refused us (e.g. it
        // does not know the NID yet). A failure, not a violation.
        Err(LinkError::NoHello) => {
            return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()))
        }
        other => other?,
    };
    theirs
        .check(PeerId(n.pin.0), n.nid)
        .map_err(|_| LinkError::BadHello)?;
    Ok(EstablishedLink {
        nid: n.nid,
        peer: theirs.peer,
        dialer: true,
        stream: s,
    })
}
