//! The hand-over point between link establishment and the data path.
//!
//! `net::dial` / `net::listen` produce an [`EstablishedLink`] only after TLS,
//! the certificate pin the tracker gave for the NID, and the hello all
//! checked out. The data path (`datapath`) takes it from there.

use anomos_common::{Nid, PeerId};
use tokio::io::BufStream;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Bytes buffered under the TLS layer in each direction of a link.
///
/// Why buffer below TLS: OpenSSL hands each record (at most 16 KiB) to the
/// socket on its own and reads a record as two `recv`s (header, then body),
/// so an unbuffered link costs two to three syscalls, and the kernel one
/// segment and one wake-up of the other side, per 16 KiB. With these
/// buffers the writer's batch leaves in one `send` per 64 KiB and the
/// reader takes whatever has arrived (up to 64 KiB) in one `recv`; on
/// loopback that cut the CPU per byte of a TLS stream by 15–30 % (the
/// copies in and out of the buffers cost far less than the syscalls).
/// Nothing waits in them: the handshake, the hello and the data path's
/// writer all flush after each write.
pub const LINK_SOCKET_BUF: usize = 64 * 1024;

/// The socket under a link's TLS (see [`LINK_SOCKET_BUF`]).
pub type LinkSocket = BufStream<TcpStream>;

/// A link's TLS stream.
pub type LinkStream = SslStream<LinkSocket>;

/// Wrap a connected socket for TLS (both the dialer and the acceptor).
pub fn link_socket(tcp: TcpStream) -> LinkSocket {
    BufStream::with_capacity(LINK_SOCKET_BUF, LINK_SOCKET_BUF, tcp)
}

/// A neighbour link that passed every check and is ready to carry cells.
#[derive(Debug)]
pub struct EstablishedLink {
    /// The NID the tracker gave this link (the same at both ends).
    pub nid: Nid,
    /// The neighbour's identity (the pin of its certificate).
    pub peer: PeerId,
    /// Whether we dialled: the dialer allocates odd circuit ids.
    pub dialer: bool,
    /// The TLS stream over the buffered socket, after the hello exchange.
    pub stream: LinkStream,
}
