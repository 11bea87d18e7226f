//! The hand-over point between link establishment and the data path.
//!
//! `net::dial` / `net::listen` produce an [`EstablishedLink`] only after TLS,
//! the certificate pin the tracker gave for the NID, and the hello all
//! checked out. The data path (`datapath`) takes it from there.

use anomos_common::{Nid, PeerId};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// A neighbour link that passed every check and is ready to carry cells.
#[derive(Debug)]
pub struct EstablishedLink {
    /// The NID the tracker gave this link (the same at both ends).
    pub nid: Nid,
    /// The neighbour's identity (the pin of its certificate).
    pub peer: PeerId,
    /// Whether we dialled: the dialer allocates odd circuit ids.
    pub dialer: bool,
    /// The TLS stream, after the hello exchange.
    pub stream: SslStream<TcpStream>,
}
