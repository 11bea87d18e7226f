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
use crate::link::{link_socket, EstablishedLink};

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
    let mut s = SslStream::new(ssl, link_socket(tcp))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::net::listen::{accept_link, AcceptContext};
    use crate::net::tls::{link_acceptor, link_connector};
    use crate::net::NeighbourTable;
    use anomos_common::identity::PeerIdentity;
    use anomos_common::{Nid, Pin};
    use std::cell::Cell;
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::rc::Rc;
    use std::sync::Arc;
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    fn entry(nid: u16, addr: SocketAddr, pin: Pin) -> Neighbour {
        Neighbour {
            nid: Nid(nid),
            addr,
            pin,
            dial: false,
        }
    }

    struct Side {
        ctx: Rc<AcceptContext>,
        table: watch::Sender<NeighbourTable>,
        asked: Rc<Cell<u32>>,
        addr: SocketAddr,
        listener: TcpListener,
    }

    async fn acceptor(id: &PeerIdentity) -> Side {
        let (table, rx) = watch::channel::<NeighbourTable>(Arc::new(BTreeMap::new()));
        let asked = Rc::new(Cell::new(0));
        let a = asked.clone();
        let ctx = Rc::new(AcceptContext {
            acceptor: link_acceptor(id).unwrap(),
            me: id.peer_id(),
            table: rx,
            on_unknown_nid: Box::new(move |_| a.set(a.get() + 1)),
            handshake_timeout: Duration::from_secs(5),
            unknown_nid_wait: Duration::from_millis(300),
            metrics: Metrics::new().unwrap(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Side {
            ctx,
            table,
            asked,
            addr,
            listener,
        }
    }

    async fn one_accept(side: &Side) -> Result<EstablishedLink, LinkError> {
        let (tcp, _) = side.listener.accept().await.unwrap();
        accept_link(&side.ctx, tcp).await
    }

    #[actix_rt::test]
    async fn dial_and_accept_agree_and_check_pins() {
        let (a, b, c) = (
            PeerIdentity::generate().unwrap(),
            PeerIdentity::generate().unwrap(),
            PeerIdentity::generate().unwrap(),
        );
        let side = acceptor(&a).await;
        let con_b = link_connector(&b).unwrap();
        let to_a = entry(7, side.addr, a.tls().pin());
        side.table.send_replace(Arc::new(BTreeMap::from([(
            Nid(7),
            entry(7, side.addr, b.tls().pin()),
        )])));
        let t = Duration::from_secs(5);

        // The good case: both ends learn the other's id, one end dialled.
        let (d, l) = tokio::join!(dial(&con_b, b.peer_id(), &to_a, t), one_accept(&side));
        let (d, l) = (d.unwrap(), l.unwrap());
        assert_eq!((d.nid, d.peer, d.dialer), (Nid(7), a.peer_id(), true));
        assert_eq!((l.nid, l.peer, l.dialer), (Nid(7), b.peer_id(), false));

        // A stranger (c) with its own certificate for NID 7: refused by the
        // listener as bad_pin; the stranger sees the link closed.
        let con_c = link_connector(&c).unwrap();
        let (d, l) = tokio::join!(dial(&con_c, c.peer_id(), &to_a, t), one_accept(&side));
        assert!(matches!(l, Err(LinkError::BadPin)), "{l:?}");
        assert!(d.is_err());

        // The dialer pins too: the listener is not who the tracker named.
        let wrong = entry(7, side.addr, c.tls().pin());
        let (d, _) = tokio::join!(dial(&con_b, b.peer_id(), &wrong, t), one_accept(&side));
        assert!(matches!(d, Err(LinkError::BadPin)), "{d:?}");

        // An unknown NID asks for an early announce and waits for it.
        let to_a9 = entry(9, side.addr, a.tls().pin());
        let learn = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut m = BTreeMap::clone(&side.table.borrow());
            m.insert(Nid(9), entry(9, side.addr, b.tls().pin()));
            side.table.send_replace(Arc::new(m));
        };
        let (d, l, ()) = tokio::join!(
            dial(&con_b, b.peer_id(), &to_a9, t),
            one_accept(&side),
            learn
        );
        assert_eq!((d.unwrap().nid, l.unwrap().nid), (Nid(9), Nid(9)));
        assert_eq!(side.asked.get(), 1);

        // …and gives up when the tracker never lists it.
        let to_a11 = entry(11, side.addr, a.tls().pin());
        let (d, l) = tokio::join!(dial(&con_b, b.peer_id(), &to_a11, t), one_accept(&side));
        assert!(matches!(l, Err(LinkError::UnknownNid)), "{l:?}");
        assert!(d.is_err());
        assert_eq!(side.asked.get(), 2);
    }

    #[actix_rt::test]
    async fn garbage_instead_of_tls_is_a_violation() {
        let a = PeerIdentity::generate().unwrap();
        let side = acceptor(&a).await;
        let garbage = async {
            let mut tcp = TcpStream::connect(side.addr).await.unwrap();
            tcp.write_all(&[0x5a; 600]).await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest).await;
        };
        let (l, ()) = tokio::join!(one_accept(&side), garbage);
        let e = l.unwrap_err();
        assert!(matches!(e, LinkError::BadTls), "{e:?}");
        assert!(e.is_violation());
        // A port scan (connect, close) is not.
        let scan = async {
            drop(TcpStream::connect(side.addr).await.unwrap());
        };
        let (l, ()) = tokio::join!(one_accept(&side), scan);
        let e = l.unwrap_err();
        assert!(!e.is_violation(), "{e:?}");
    }

    #[actix_rt::test]
    async fn a_silent_probe_is_not_a_violation() {
        let a = PeerIdentity::generate().unwrap();
        let side = acceptor(&a).await;
        let probe = async {
            let tcp = TcpStream::connect(side.addr).await.unwrap();
            let con = link_connector(&PeerIdentity::generate().unwrap()).unwrap();
            let ssl = con
                .configure()
                .unwrap()
                .verify_hostname(false)
                .into_ssl("x")
                .unwrap();
            let mut s = SslStream::new(ssl, tcp).unwrap();
            std::pin::Pin::new(&mut s).connect().await.unwrap();
            let _ = s.shutdown().await;
        };
        let (l, ()) = tokio::join!(one_accept(&side), probe);
        let e = l.unwrap_err();
        assert!(matches!(e, LinkError::NoHello), "{e:?}");
        assert!(!e.is_violation());
    }
}
