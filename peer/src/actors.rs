//! The peer's control plane: three kinds of actix actors on the system
//! arbiter, the same thread as the data path (so they share its `Rc`
//! handles without locks).
//!
//! * [`neighbor::Neighbor`], one per NID the tracker assigns: dials (with
//!   back-off) or waits for the neighbour, hands the verified link to the
//!   data path and watches it.
//! * [`relay::Relay`], one per peer: owns the data path for control —
//!   originating circuits from grants, serving infohashes, dropping NIDs,
//!   statistics for the announce, the ordered shutdown — and turns the data
//!   path's events into messages to the Tracker actor.
//! * [`tracker::Tracker`], one per peer: periodic and early announces, and
//!   applying the answers (starts and stops Neighbor actors, sends grants to
//!   the Relay actor).
//!
//! The bulk data path is not here: cells move between link tasks inside
//! `DataPath` with no actor message per cell. Actor mailboxes carry control
//! messages only (a handful per link, circuit or announce), and every actor
//! sets a bounded mailbox; see ARCHITECTURE.md, "Peer actor topology".
//!
//! The actors reach the data path through [`Plane`], the part of the
//! `DataPath` API they use, so they can be tested against a
//! recording double.

pub mod neighbor;
pub mod relay;
pub mod swarm;
pub mod tracker;

#[cfg(test)]
pub(crate) mod testkit;

use std::future::Future;
use std::pin::Pin as StdPin;

use anomos_common::api::CircuitGrant;
use anomos_common::{InfoHash, Nid, PeerId};
use tokio::sync::mpsc;

use crate::link::EstablishedLink;

/// A boxed, thread-local future.
pub type LocalFuture<T> = StdPin<Box<dyn Future<Output = T>>>;

/// What the data path reports to the actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaneEvent {
    /// A link ended (I/O error, idle timeout, violation).
    LinkClosed {
        /// Its NID.
        nid: Nid,
        /// Why, a fixed kind.
        reason: &'static str,
    },
    /// A circuit this peer originated failed, or one ending here broke:
    /// re-announce at once.
    CircuitFailed {
        /// NIDs to report as failed (none from the real data path: a BREAK
        /// does not tell which link died).
        nids: Vec<Nid>,
    },
    /// A neighbour broke the protocol; report the NID so the tracker drops it.
    Misbehaving {
        /// Its NID.
        nid: Nid,
    },
}

/// One attached link, as seen by its Neighbor actor.
pub trait LinkWatch: 'static {
    /// Close the link now.
    fn close(&self);
    /// Resolves with the reason when the link ends.
    fn closed(&self) -> LocalFuture<&'static str>;
}

/// The data path, as the actors use it.
pub trait Plane: Clone + Unpin + 'static {
    /// Handle of an attached link.
    type Link: LinkWatch + Unpin;
    /// One open circuit end.
    type Stream: Send + Unpin + 'static;
    /// Start carrying cells on a verified link.
    fn attach_link(&self, link: EstablishedLink) -> Self::Link;
    /// The tracker dropped the NID: break its circuits, close the link.
    fn drop_nid(&self, nid: Nid);
    /// Originate a circuit from a grant; resolves when it is open.
    fn originate(&self, grant: CircuitGrant) -> LocalFuture<Result<Self::Stream, &'static str>>;
    /// Accept circuits for `infohash` at the exit.
    fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<Self::Stream>;
    /// Stop accepting circuits for `infohash`.
    fn unserve(&self, infohash: InfoHash);
    /// A new subscription to link and circuit failures.
    fn events(&self) -> mpsc::UnboundedReceiver<PlaneEvent>;
    /// Bytes relayed for others, cumulative.
    fn relayed_bytes(&self) -> u64;
    /// Links held now.
    fn links(&self) -> Vec<(Nid, PeerId)>;
    /// Live circuits in the table (relayed and local).
    fn circuits(&self) -> usize;
    /// Break every circuit and wait (bounded) for the acknowledgements.
    fn shutdown(&self) -> LocalFuture<()>;
}

/// The real data path behind the actors.
mod datapath_plane {
    use super::*;
    use crate::datapath::{CircuitStream, DataPath, DataPathEvent, LinkHandle};
    use std::rc::Rc;

    impl LinkWatch for Rc<LinkHandle> {
        fn close(&self) {
            LinkHandle::close(self);
        }
        fn closed(&self) -> LocalFuture<&'static str> {
            let h = self.clone();
            Box::pin(async move { LinkHandle::closed(&h).await })
        }
    }

    impl Plane for DataPath {
        type Link = Rc<LinkHandle>;
        type Stream = CircuitStream;
        fn attach_link(&self, link: EstablishedLink) -> Self::Link {
            Rc::new(DataPath::attach_link(self, link))
        }
        fn drop_nid(&self, nid: Nid) {
            DataPath::drop_nid(self, nid);
        }
        fn originate(
            &self,
            grant: CircuitGrant,
        ) -> LocalFuture<Result<CircuitStream, &'static str>> {
            let dp = self.clone();
            Box::pin(async move { DataPath::originate(&dp, grant).await.map_err(|e| e.kind()) })
        }
        fn serve(&self, infohash: InfoHash) -> mpsc::Receiver<CircuitStream> {
            DataPath::serve(self, infohash)
        }
        fn unserve(&self, infohash: InfoHash) {
            DataPath::unserve(self, infohash);
        }
        fn events(&self) -> mpsc::UnboundedReceiver<PlaneEvent> {
            let mut from = DataPath::events(self);
            let (tx, rx) = mpsc::unbounded_channel();
            actix_rt::spawn(async move {
                while let Some(ev) = from.recv().await {
                    let ev = match ev {
                        DataPathEvent::LinkClosed { nid, reason } => {
                            PlaneEvent::LinkClosed { nid, reason }
                        }
                        DataPathEvent::CircuitFailed { nids } => PlaneEvent::CircuitFailed { nids },
                        DataPathEvent::Misbehaving { nid } => PlaneEvent::Misbehaving { nid },
                    };
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            });
            rx
        }
        fn relayed_bytes(&self) -> u64 {
            DataPath::relayed_bytes(self)
        }
        fn links(&self) -> Vec<(Nid, PeerId)> {
            DataPath::links(self)
        }
        fn circuits(&self) -> usize {
            DataPath::circuit_count(self)
        }
        fn shutdown(&self) -> LocalFuture<()> {
            let dp = self.clone();
            Box::pin(async move { DataPath::shutdown(&dp).await })
        }
    }
}
