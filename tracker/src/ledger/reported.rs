//! The last cumulative counters each identity reported, on disk.
//!
//! Peers announce counters that are cumulative over their run; the session
//! turns them into ledger deltas against what the peer reported before. A
//! session that starts with a heartbeat (the tracker restarted, or the
//! session expired while the peer kept running) must start from that same
//! base, or every byte of the run so far would be counted a second time.
//! So the base is stored next to the totals, in the same transactions:
//! `reported` (relayed bytes) and `reported_torrents` (per torrent
//! uploaded and downloaded bytes), replaced whenever they change.

use std::collections::HashMap;

use anomos_common::{InfoHash, PeerId};
use dashmap::DashMap;
use rusqlite::{params, Connection, Transaction};

use super::{from_sql, to_sql};
use crate::core::session::Reported;

/// Create the tables if needed and read every stored base.
pub(super) fn load(conn: &Connection) -> rusqlite::Result<DashMap<PeerId, Reported>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS reported (
             id BLOB PRIMARY KEY, relayed INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS reported_torrents (
             id BLOB NOT NULL, infohash BLOB NOT NULL,
             uploaded INTEGER NOT NULL, downloaded INTEGER NOT NULL,
             PRIMARY KEY (id, infohash));",
    )?;
    let out: DashMap<PeerId, Reported> = DashMap::new();
    let mut stmt = conn.prepare("SELECT id, relayed FROM reported")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?)))?;
    for row in rows {
        let (id, relayed) = row?;
        if let Some(peer) = peer_id(&id) {
            out.entry(peer).or_default().relayed = from_sql(relayed);
        }
    }
    let mut stmt =
        conn.prepare("SELECT id, infohash, uploaded, downloaded FROM reported_torrents")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get(2)?,
            r.get(3)?,
        ))
    })?;
    for row in rows {
        let (id, ih, up, down) = row?;
        let (Some(peer), Ok(ih)) = (peer_id(&id), <[u8; 32]>::try_from(ih.as_slice())) else {
            continue;
        };
        let counters = (from_sql(up), from_sql(down));
        out.entry(peer)
            .or_default()
            .torrents
            .insert(InfoHash(ih), counters);
    }
    Ok(out)
}

/// Replace the stored base of every identity in `reports`.
pub(super) fn write(
    tx: &Transaction<'_>,
    reports: &HashMap<PeerId, Reported>,
) -> rusqlite::Result<()> {
    if reports.is_empty() {
        return Ok(());
    }
    let mut relayed = tx.prepare_cached(
        "INSERT INTO reported (id, relayed) VALUES (?1, ?2)
         ON CONFLICT(id) DO UPDATE SET relayed = excluded.relayed",
    )?;
    let mut clear = tx.prepare_cached("DELETE FROM reported_torrents WHERE id = ?1")?;
    let mut torrent = tx.prepare_cached(
        "INSERT INTO reported_torrents (id, infohash, uploaded, downloaded)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for (peer, r) in reports {
        relayed.execute(params![&peer.0[..], to_sql(r.relayed)])?;
        clear.execute(params![&peer.0[..]])?;
        for (ih, (up, down)) in &r.torrents {
            torrent.execute(params![&peer.0[..], &ih.0[..], to_sql(*up), to_sql(*down)])?;
        }
    }
    Ok(())
}

fn peer_id(raw: &[u8]) -> Option<PeerId> {
    <[u8; 32]>::try_from(raw).ok().map(PeerId)
}

#[cfg(test)]
mod tests {
    use super::super::Ledger;
    use super::*;
    use crate::core::session::LedgerDelta;

    #[test]
    fn the_last_reported_counters_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let (a, b) = (PeerId([1; 32]), PeerId([2; 32]));
        let first = Reported {
            relayed: 7,
            torrents: [(InfoHash([9; 32]), (1, 2)), (InfoHash([8; 32]), (3, 4))].into(),
        };
        let second = Reported {
            relayed: 70,
            torrents: [(InfoHash([9; 32]), (10, 20))].into(),
        };
        {
            let l = Ledger::open(&path).unwrap();
            l.record(a, LedgerDelta::default(), Some(first.clone()), 5);
            assert_eq!(l.reported(&a), first, "visible at once");
            l.flush().unwrap();
            // The newer base replaces the older one, torrents included.
            l.record(a, LedgerDelta::default(), Some(second.clone()), 6);
            l.record(b, LedgerDelta::default(), None, 6);
            l.close().unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.reported(&a), second);
        assert_eq!(l.reported(&b), Reported::default());
    }
}
