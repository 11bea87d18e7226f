//! TLS contexts: neighbour links (TLS 1.3, both sides present their
//! self-signed peer certificate) and the tracker connection.
//!
//! Peer certificates are self-signed, so no chain can be verified: the
//! verify callbacks accept any chain and the caller checks the SHA-256 SPKI
//! pin (`peer_pin`) against the pin the tracker gave for the link's NID
//! after the handshake. The acceptor *requests* a client certificate but does
//! not require one, so the tracker's reachability probe (which has none) can
//! complete its handshake and see our certificate.

use anomos_common::identity::{pin_of_x509, PeerIdentity};
use anomos_common::Pin;
use openssl::error::ErrorStack;
use openssl::ssl::{
    SslAcceptor, SslConnector, SslContextBuilder, SslMethod, SslRef, SslVerifyMode, SslVersion,
};
use openssl::x509::X509StoreContextRef;

/// Accept any chain: the pin is checked after the handshake.
fn accept_any(_preverify: bool, _ctx: &mut X509StoreContextRef) -> bool {
    true
}

/// What both ends of a link share: TLS 1.3 only, our certificate, and the
/// peer's certificate requested but checked by pin after the handshake.
fn configure_link(b: &mut SslContextBuilder, id: &PeerIdentity) -> Result<(), ErrorStack> {
    b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    b.set_private_key(id.tls().key())?;
    b.set_certificate(id.tls().cert())?;
    b.check_private_key()?;
    b.set_verify_callback(SslVerifyMode::PEER, accept_any);
    Ok(())
}

/// The listener's context: our certificate, TLS 1.3 only, client
/// certificate requested (not required).
pub fn link_acceptor(id: &PeerIdentity) -> Result<SslAcceptor, ErrorStack> {
    let mut b = SslAcceptor::mozilla_modern_v5(SslMethod::tls_server())?;
    configure_link(&mut b, id)?;
    // One-shot links: session tickets only add state.
    b.set_num_tickets(0)?;
    Ok(b.build())
}

/// The dialer's context: our certificate as client certificate, TLS 1.3.
pub fn link_connector(id: &PeerIdentity) -> Result<SslConnector, ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    configure_link(&mut b, id)?;
    Ok(b.build())
}

/// The tracker connector. With a pin, any chain is accepted during the
/// handshake and the caller compares `peer_pin` with it afterwards (the
/// tracker's certificate may be self-signed). Without one, the system CAs
/// and the host name decide.
pub fn tracker_connector(pinned: bool) -> Result<SslConnector, ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    if pinned {
        b.set_verify_callback(SslVerifyMode::PEER, accept_any);
    } else {
        b.set_default_verify_paths()?;
        b.set_verify(SslVerifyMode::PEER);
    }
    Ok(b.build())
}

/// The pin of the certificate the other side presented, if any.
pub fn peer_pin(ssl: &SslRef) -> Option<Pin> {
    ssl.peer_certificate().and_then(|c| pin_of_x509(&c).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin as StdPin;
    use tokio::net::{TcpListener, TcpStream};
    use tokio_openssl::SslStream;

    #[actix_rt::test]
    async fn both_ends_see_each_others_pin_over_tls13() {
        let (a, b) = (
            PeerIdentity::generate().unwrap(),
            PeerIdentity::generate().unwrap(),
        );
        let acc = link_acceptor(&a).unwrap();
        let con = link_connector(&b).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = actix_rt::spawn(async move {
            let (tcp, _) = l.accept().await.unwrap();
            let mut s =
                SslStream::new(openssl::ssl::Ssl::new(acc.context()).unwrap(), tcp).unwrap();
            StdPin::new(&mut s).accept().await.unwrap();
            (peer_pin(s.ssl()), s.ssl().version_str().to_owned())
        });
        let ssl = con
            .configure()
            .unwrap()
            .verify_hostname(false)
            .into_ssl("p")
            .unwrap();
        let mut c = SslStream::new(ssl, TcpStream::connect(addr).await.unwrap()).unwrap();
        StdPin::new(&mut c).connect().await.unwrap();
        assert_eq!(peer_pin(c.ssl()), Some(a.tls().pin()));
        let (seen, version) = server.await.unwrap();
        assert_eq!(seen, Some(b.tls().pin()));
        assert_eq!(version, "TLSv1.3");
    }
}
