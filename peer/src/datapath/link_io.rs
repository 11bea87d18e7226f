//! The reader and writer tasks of one established link.
//!
//! The reader reads into a `CellReader` (16–256 KiB at a time, sized to
//! what the link delivers: `read_size.rs`) and hands every whole cell of
//! the read to the core in one call (the core takes runs of a circuit's
//! cells in one step). The writer swaps the link's two outbound lanes for
//! empty ones and writes the priority lane (set-up and credit cells) first,
//! then the rest, so cells leave in large writes (a socket pump does ~115
//! MB/s with 512-byte writes, ~3 GB/s with 256 KiB ones); TLS cuts them into
//! 16 KiB records, which the link's buffered socket (`link::link_socket`)
//! gathers again into sends of up to 64 KiB before the flush at the end of
//! the batch. Keep-alive PADDING and the idle timeout come from
//! [`LinkCore`].

use super::{DataPathEvent, Inner};
use crate::core::link::{LinkCore, LinkTimer};
use crate::core::relay::LinkId;
use crate::link::EstablishedLink;
use anomos_common::cell::{Cell, CellMsg, CellReader};
use anomos_common::{CircuitId, Nid, PeerId};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Notify};

mod read_size;

use read_size::ReadSize;

/// The shell's side of one link.
#[derive(Debug)]
pub(crate) struct LinkIo {
    pub nid: Nid,
    pub peer: PeerId,
    /// Wakes the writer: the outbound buffer grew.
    pub notify: Notify,
    timers: RefCell<LinkCore>,
    close_tx: watch::Sender<Option<&'static str>>,
}

impl LinkIo {
    /// Stop both tasks; the first reason wins.
    pub(crate) fn close(&self, reason: &'static str) {
        self.close_tx.send_if_modified(|r| {
            let first = r.is_none();
            if first {
                *r = Some(reason);
            }
            first
        });
    }
}

/// A handle on an attached link.
#[derive(Debug)]
pub struct LinkHandle {
    close_tx: Rc<watch::Sender<Option<&'static str>>>,
    io: Option<Rc<LinkIo>>,
}

impl LinkHandle {
    /// Close the link (reason `closed`); its circuits get BREAK.
    pub fn close(&self) {
        // A refused link (`io == None`) is closed already.
        if let Some(io) = &self.io {
            io.close("closed");
        }
    }

    /// Resolves with the reason once the link has ended.
    pub async fn closed(&self) -> &'static str {
        let mut rx = self.close_tx.subscribe();
        let reason = rx.wait_for(|r| r.is_some()).await.ok().and_then(|r| *r);
        reason.unwrap_or("closed")
    }
}

/// Register the link with the core and spawn its tasks.
pub(crate) fn attach(inner: &Rc<Inner>, link: EstablishedLink) -> LinkHandle {
    let added = inner
        .core
        .borrow_mut()
        .add_link(Instant::now(), link.nid, link.dialer);
    let Ok(id) = added else {
        let (tx, _) = watch::channel(Some("duplicate_nid"));
        return LinkHandle {
            close_tx: Rc::new(tx),
            io: None,
        };
    };
    let cfg = &inner.cfg;
    let (close_tx, close_rx) = watch::channel(None);
    let io = Rc::new(LinkIo {
        nid: link.nid,
        peer: link.peer,
        notify: Notify::new(),
        timers: RefCell::new(LinkCore::new(
            Instant::now(),
            cfg.keepalive,
            cfg.idle_timeout,
        )),
        close_tx,
    });
    inner.links.borrow_mut().insert(id, io.clone());
    let links = inner.links.borrow().len();
    inner.metrics.neighbors_connected.set(links as i64);
    let (rd, wr) = tokio::io::split(link.stream);
    tokio::task::spawn_local(reader(inner.clone(), id, io.clone(), rd, close_rx.clone()));
    tokio::task::spawn_local(writer(inner.clone(), id, io.clone(), wr, close_rx.clone()));
    tokio::task::spawn_local(supervise(inner.clone(), id, io.clone(), close_rx));
    // Circuits that were waiting for this link sent their CREATEs on it.
    inner.pump();
    // The handle watches the same channel through a second sender-side Rc.
    let (tx, _) = watch::channel(None);
    let close_tx = Rc::new(tx);
    tokio::task::spawn_local(mirror(io.clone(), close_tx.clone()));
    LinkHandle {
        close_tx,
        io: Some(io),
    }
}

/// Copy the link's close reason into the handle's channel.
async fn mirror(io: Rc<LinkIo>, to: Rc<watch::Sender<Option<&'static str>>>) {
    let mut rx = io.close_tx.subscribe();
    let reason = rx.wait_for(|r| r.is_some()).await.ok().and_then(|r| *r);
    to.send_replace(Some(reason.unwrap_or("closed")));
}

/// Once the link is closed: tell the core, forget the link, report it.
async fn supervise(
    inner: Rc<Inner>,
    id: LinkId,
    io: Rc<LinkIo>,
    mut closed: watch::Receiver<Option<&'static str>>,
) {
    let reason = closed.wait_for(|r| r.is_some()).await.ok().and_then(|r| *r);
    let reason = reason.unwrap_or("closed");
    inner.core.borrow_mut().link_lost(Instant::now(), id);
    inner.links.borrow_mut().remove(&id);
    let links = inner.links.borrow().len();
    inner.metrics.neighbors_connected.set(links as i64);
    inner.pump();
    inner.emit(DataPathEvent::LinkClosed {
        nid: io.nid,
        reason,
    });
}

async fn reader<R: AsyncRead + Unpin>(
    inner: Rc<Inner>,
    id: LinkId,
    io: Rc<LinkIo>,
    mut rd: R,
    mut closed: watch::Receiver<Option<&'static str>>,
) {
    let mut cells = CellReader::new();
    let mut size = ReadSize::default();
    loop {
        let offer = size.offer(cells.buffered());
        let spare = &mut cells.spare_mut(offer)[..offer];
        let read = tokio::select! {
            r = rd.read(spare) => r,
            _ = closed.wait_for(|r| r.is_some()) => return,
        };
        let got = match read {
            Ok(0) => return io.close("eof"),
            Err(_) => return io.close("io_error"),
            Ok(n) => n,
        };
        cells.commit(got);
        let now = Instant::now();
        io.timers.borrow_mut().on_rx(now);
        let whole = cells.whole_cells();
        if whole > 0 {
            inner
                .core
                .borrow_mut()
                .handle_cells(now, id, cells.whole_cells_mut());
            cells.consume_cells(whole);
            inner.pump();
        }
        if size.after_read(offer, got, cells.buffered()) {
            cells = CellReader::new();
        }
    }
}

async fn writer<W: AsyncWrite + Unpin>(
    inner: Rc<Inner>,
    id: LinkId,
    io: Rc<LinkIo>,
    mut wr: W,
    mut closed: watch::Receiver<Option<&'static str>>,
) {
    // Control cells that may pass queued DATA, then the rest in order.
    let mut prio = Vec::new();
    let mut buf = Vec::new();
    loop {
        let deadline = io.timers.borrow().next_deadline();
        tokio::select! {
            _ = io.notify.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
            _ = closed.wait_for(|r| r.is_some()) => return,
        }
        let due = io.timers.borrow().poll(Instant::now());
        if let LinkTimer::Close(reason) = due {
            return io.close(reason);
        }
        prio.clear();
        buf.clear();
        inner
            .core
            .borrow_mut()
            .take_outbound_lanes(id, &mut prio, &mut buf);
        if prio.is_empty() && buf.is_empty() && due == LinkTimer::SendPadding {
            Cell::new(CircuitId::LINK, CellMsg::Padding).encode_into(&mut buf);
        }
        if prio.is_empty() && buf.is_empty() {
            continue;
        }
        let write = async {
            wr.write_all(&prio).await?;
            wr.write_all(&buf).await?;
            wr.flush().await
        };
        let written = tokio::select! {
            r = write => r,
            _ = closed.wait_for(|r| r.is_some()) => return,
        };
        if written.is_err() {
            return io.close("io_error");
        }
        io.timers.borrow_mut().on_tx(Instant::now());
    }
}
