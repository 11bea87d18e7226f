//! The ratio ledger: per identity uploaded / downloaded / relayed bytes, in
//! SQLite at `DATA_DIR/ledger.sqlite3`.
//!
//! Reads are served from an in-memory copy (loaded at open, updated on every
//! [`Ledger::record`]), so policy decisions never touch the disk. Writes go
//! through a channel to one writer thread that folds whatever has queued up
//! into a single transaction (WAL mode, `synchronous = NORMAL`): at 10k
//! announces/s that is a handful of commits per second, not 10k fsyncs.
//! [`Ledger::flush`] waits until everything queued is committed; shutdown
//! calls [`Ledger::close`], which flushes and joins the writer.
//!
//! The ledger also keeps the per-tracker salt that makes the pseudonymous ids
//! of the status page (`SHA-256(peer id ‖ salt)`, first 8 hex digits)
//! meaningless outside this tracker, and each identity's last reported
//! cumulative counters (`reported.rs`), so a session that begins after a
//! tracker restart counts only what is new.

mod reported;

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anomos_common::crypto::sha256_parts;
use anomos_common::PeerId;
use dashmap::DashMap;
use rusqlite::{params, Connection, OptionalExtension};

use crate::core::session::{LedgerDelta, Reported};
use crate::error::LedgerError;

/// One identity's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Bytes uploaded to others.
    pub uploaded: u64,
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes relayed for others.
    pub relayed: u64,
    /// First announce (Unix seconds).
    pub first_seen: u64,
    /// Latest announce (Unix seconds).
    pub last_seen: u64,
}

impl Totals {
    /// `(uploaded + relayed) / downloaded`; `None` before any download.
    pub fn ratio(&self) -> Option<f64> {
        (self.downloaded > 0)
            .then(|| self.uploaded.saturating_add(self.relayed) as f64 / self.downloaded as f64)
    }

    fn add(&mut self, d: LedgerDelta, now: u64) {
        self.uploaded = self.uploaded.saturating_add(d.uploaded);
        self.downloaded = self.downloaded.saturating_add(d.downloaded);
        self.relayed = self.relayed.saturating_add(d.relayed);
        if self.first_seen == 0 {
            self.first_seen = now;
        }
        self.last_seen = now;
    }
}

/// One row of the status page's leaderboard.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderboardRow {
    /// Pseudonymous id (8 hex digits).
    pub pseudonym: String,
    /// Share ratio (`None`: nothing downloaded yet).
    pub ratio: Option<f64>,
    /// Totals.
    pub totals: Totals,
}

enum Cmd {
    Add(PeerId, LedgerDelta, Option<Reported>, u64),
    Flush(Sender<Result<(), String>>),
}

/// Handle to the ledger; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Ledger {
    tx: Mutex<Option<Sender<Cmd>>>,
    cache: Arc<DashMap<PeerId, Totals>>,
    reported: DashMap<PeerId, Reported>,
    salt: [u8; 16],
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Open (or create) the ledger database and start its writer thread.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS peers (
                 id BLOB PRIMARY KEY, uploaded INTEGER NOT NULL, downloaded INTEGER NOT NULL,
                 relayed INTEGER NOT NULL, first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);",
        )?;
        let reported = reported::load(&conn)?;
        let salt = load_salt(&conn)?;
        let cache = Arc::new(DashMap::new());
        {
            let mut stmt = conn.prepare(
                "SELECT id, uploaded, downloaded, relayed, first_seen, last_seen FROM peers",
            )?;
            let rows = stmt.query_map([], |r| {
                let id: Vec<u8> = r.get(0)?;
                let t = Totals {
                    uploaded: from_sql(r.get(1)?),
                    downloaded: from_sql(r.get(2)?),
                    relayed: from_sql(r.get(3)?),
                    first_seen: from_sql(r.get(4)?),
                    last_seen: from_sql(r.get(5)?),
                };
                Ok((id, t))
            })?;
            for row in rows {
                let (id, t) = row?;
                if let Ok(raw) = <[u8; 32]>::try_from(id.as_slice()) {
                    cache.insert(PeerId(raw), t);
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer_loop(conn, rx))?;
        Ok(Ledger {
            tx: Mutex::new(Some(tx)),
            cache,
            reported,
            salt,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Add a delta for `peer`, and the counters it reported if they
    /// changed (visible to reads at once, on disk at the next batch).
    pub fn record(&self, peer: PeerId, delta: LedgerDelta, reported: Option<Reported>, now: u64) {
        self.cache.entry(peer).or_default().add(delta, now);
        if let Some(r) = &reported {
            self.reported.insert(peer, r.clone());
        }
        if let Ok(guard) = self.tx.lock() {
            if let Some(tx) = guard.as_ref() {
                // The writer only goes away at close(); a send error then is moot.
                let _ = tx.send(Cmd::Add(peer, delta, reported, now));
            }
        }
    }

    /// The cumulative counters `peer` last reported (zero if never).
    pub fn reported(&self, peer: &PeerId) -> Reported {
        self.reported
            .get(peer)
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Current totals of `peer`.
    pub fn totals(&self, peer: &PeerId) -> Option<Totals> {
        self.cache.get(peer).map(|t| *t)
    }

    /// Number of identities ever seen.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether no identity was ever seen.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The pseudonymous id of a peer on this tracker.
    pub fn pseudonym(&self, peer: &PeerId) -> String {
        let h = sha256_parts(&[&peer.0, &self.salt]).unwrap_or([0; 32]);
        hex::encode(&h[..4])
    }

    /// The `n` best ratios (peers with downloads first, then by relayed).
    pub fn leaderboard(&self, n: usize) -> Vec<LeaderboardRow> {
        let mut rows: Vec<LeaderboardRow> = self
            .cache
            .iter()
            .map(|e| LeaderboardRow {
                pseudonym: self.pseudonym(e.key()),
                ratio: e.value().ratio(),
                totals: *e.value(),
            })
            .collect();
        rows.sort_by(|a, b| {
            let ka = a.ratio.unwrap_or(f64::INFINITY);
            let kb = b.ratio.unwrap_or(f64::INFINITY);
            kb.total_cmp(&ka)
                .then(b.totals.relayed.cmp(&a.totals.relayed))
                .then(a.pseudonym.cmp(&b.pseudonym))
        });
        rows.truncate(n);
        rows
    }

    /// Wait until everything recorded so far is committed.
    pub fn flush(&self) -> Result<(), LedgerError> {
        let (ack_tx, ack_rx) = mpsc::channel();
        {
            let guard = self.tx.lock().map_err(|_| LedgerError::Closed)?;
            let tx = guard.as_ref().ok_or(LedgerError::Closed)?;
            tx.send(Cmd::Flush(ack_tx))
                .map_err(|_| LedgerError::Closed)?;
        }
        ack_rx
            .recv()
            .map_err(|_| LedgerError::Closed)?
            .map_err(LedgerError::Write)
    }

    /// Flush, stop the writer and wait for it. Later records are dropped.
    pub fn close(&self) -> Result<(), LedgerError> {
        let flushed = self.flush();
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            h.join()
                .map_err(|_| LedgerError::Write("writer panicked".into()))?;
        }
        flushed
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

pub(crate) fn from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn load_salt(conn: &Connection) -> Result<[u8; 16], LedgerError> {
    let existing: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = 'salt'", [], |r| {
            r.get(0)
        })
        .optional()?;
    if let Some(raw) = existing.and_then(|v| <[u8; 16]>::try_from(v.as_slice()).ok()) {
        return Ok(raw);
    }
    let salt: [u8; 16] = rand::random();
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('salt', ?1)",
        params![&salt[..]],
    )?;
    Ok(salt)
}

/// Fold queued commands into one transaction per wake-up.
fn writer_loop(mut conn: Connection, rx: Receiver<Cmd>) {
    while let Ok(first) = rx.recv() {
        let mut pending: HashMap<PeerId, (Totals, u64)> = HashMap::new();
        let mut reports: HashMap<PeerId, Reported> = HashMap::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(cmd) = next {
            match cmd {
                Cmd::Add(peer, d, r, now) => {
                    let e = pending.entry(peer).or_insert((Totals::default(), now));
                    e.0.add(d, now);
                    if let Some(r) = r {
                        reports.insert(peer, r);
                    }
                }
                Cmd::Flush(ack) => acks.push(ack),
            }
            next = if pending.len() < 50_000 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        let result = write_batch(&mut conn, &pending, &reports).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!(error = %e, "ledger batch write failed");
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }
}

fn write_batch(
    conn: &mut Connection,
    pending: &HashMap<PeerId, (Totals, u64)>,
    reports: &HashMap<PeerId, Reported>,
) -> rusqlite::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO peers (id, uploaded, downloaded, relayed, first_seen, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(id) DO UPDATE SET
                 uploaded = uploaded + excluded.uploaded,
                 downloaded = downloaded + excluded.downloaded,
                 relayed = relayed + excluded.relayed,
                 last_seen = excluded.last_seen",
        )?;
        for (peer, (t, first)) in pending {
            stmt.execute(params![
                &peer.0[..],
                to_sql(t.uploaded),
                to_sql(t.downloaded),
                to_sql(t.relayed),
                to_sql(*first),
                to_sql(t.last_seen)
            ])?;
        }
    }
    reported::write(&tx, reports)?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(u: u64, dn: u64, r: u64) -> LedgerDelta {
        LedgerDelta {
            uploaded: u,
            downloaded: dn,
            relayed: r,
        }
    }

    #[test]
    fn totals_survive_reopen_and_salt_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let p = PeerId([3; 32]);
        let pseudonym;
        {
            let l = Ledger::open(&path).unwrap();
            for _ in 0..1000 {
                l.record(p, d(1, 2, 3), None, 50);
            }
            l.record(PeerId([4; 32]), d(0, 10, 0), None, 60);
            pseudonym = l.pseudonym(&p);
            l.close().unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        let t = l.totals(&p).unwrap();
        assert_eq!((t.uploaded, t.downloaded, t.relayed), (1000, 2000, 3000));
        assert_eq!((t.first_seen, t.last_seen), (50, 50));
        assert_eq!(t.ratio(), Some(2.0));
        assert_eq!(l.pseudonym(&p), pseudonym);
        assert_eq!(pseudonym.len(), 8);
        let board = l.leaderboard(10);
        assert_eq!(board.len(), 2);
        assert_eq!(board[0].pseudonym, pseudonym);
        assert_eq!(board[1].ratio, Some(0.0));
    }

    #[test]
    fn flush_commits_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite3");
        let l = Ledger::open(&path).unwrap();
        for i in 0..200u8 {
            l.record(PeerId([i; 32]), d(u64::from(i), 1, 0), None, 1);
        }
        l.flush().unwrap();
        let conn = Connection::open(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM peers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 200);
        l.close().unwrap();
        assert!(l.flush().is_err(), "closed ledger refuses flush");
    }
}
