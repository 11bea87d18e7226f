//! Reachability checks: before a peer is offered as a neighbour or relay,
//! the tracker dials its announced (address, listen port) over TLS and
//! checks that the certificate presented is the announcing identity.
//!
//! The original Anomos trusted a client-supplied `ip`, so anyone could make
//! the tracker route circuits to a victim. Here the verifier accepts any
//! certificate during the handshake (peers are self-signed) and the pin is
//! compared afterwards: SHA-256 of the presented certificate's SPKI must be
//! the announced peer id. The peer accepts the connection and closes it when
//! no hello arrives; the tracker closes it right after the handshake.

use std::net::SocketAddr;
use std::time::Duration;

use anomos_common::identity::pin_of_x509;
use anomos_common::PeerId;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Why a check failed, from a fixed set (safe for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachFailure {
    /// TCP connect failed or was refused.
    Connect,
    /// TLS handshake failed.
    Handshake,
    /// No certificate presented.
    NoCertificate,
    /// The certificate is not the announcing identity.
    WrongIdentity,
    /// The dial or handshake took longer than the timeout.
    Timeout,
}

/// Dials peers; built once, used for every check.
#[derive(Debug, Clone)]
pub struct Prober {
    connector: SslConnector,
    timeout: Duration,
}

impl Prober {
    /// A prober that accepts any certificate (the pin is checked after).
    pub fn new(timeout: Duration) -> Result<Self, openssl::error::ErrorStack> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        b.set_verify(SslVerifyMode::NONE);
        Ok(Prober {
            connector: b.build(),
            timeout,
        })
    }

    /// Dial `addr` and check it presents `expected`'s certificate.
    pub async fn check(&self, addr: SocketAddr, expected: PeerId) -> Result<(), ReachFailure> {
        match tokio::time::timeout(self.timeout, self.dial(addr, expected)).await {
            Ok(r) => r,
            Err(_) => Err(ReachFailure::Timeout),
        }
    }

    async fn dial(&self, addr: SocketAddr, expected: PeerId) -> Result<(), ReachFailure> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|_| ReachFailure::Connect)?;
        let mut cfg = self
            .connector
            .configure()
            .map_err(|_| ReachFailure::Handshake)?;
        cfg.set_verify_hostname(false);
        cfg.set_use_server_name_indication(false);
        let ssl = cfg
            .into_ssl("anomos-peer")
            .map_err(|_| ReachFailure::Handshake)?;
        let mut stream = SslStream::new(ssl, tcp).map_err(|_| ReachFailure::Handshake)?;
        std::pin::Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|_| ReachFailure::Handshake)?;
        let cert = stream
            .ssl()
            .peer_certificate()
            .ok_or(ReachFailure::NoCertificate)?;
        let pin = pin_of_x509(&cert).map_err(|_| ReachFailure::NoCertificate)?;
        let _ = stream.shutdown().await;
        if PeerId::from(pin) == expected {
            Ok(())
        } else {
            Err(ReachFailure::WrongIdentity)
        }
    }
}

/// Back-off for retrying failed checks: `base · 2^(failures − 1)`, capped.
pub fn retry_delay(base: Duration, max: Duration, failures: u32) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    base.saturating_mul(1u32 << shift).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(s(5), s(300), 1), s(5));
        assert_eq!(retry_delay(s(5), s(300), 3), s(20));
        assert_eq!(retry_delay(s(5), s(300), 40), s(300));
    }

    #[actix_rt::test]
    async fn refused_port_fails_fast() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let p = Prober::new(Duration::from_secs(2)).unwrap();
        assert_eq!(
            p.check(addr, PeerId([0; 32])).await,
            Err(ReachFailure::Connect)
        );
    }
}
