//! Where each download stands during a run, the same in every mode: when
//! it completed or why it did not, and at the end its record (seconds,
//! rate, and whether the file written equals the source).

use std::path::Path;
use std::time::Instant;

use super::figures;
use super::report::Download;
use super::setup::{self, Torrent};

/// What a download ends as when the run's deadline passes first.
pub const NOT_BY_DEADLINE: &str = "not complete by the run's deadline";

/// Completion bookkeeping of `n` downloads started at `t0`.
#[derive(Debug, Clone)]
pub struct Progress {
    /// When the downloads were started.
    pub t0: Instant,
    done: Vec<Option<Instant>>,
    errors: Vec<Option<String>>,
}

impl Progress {
    /// `n` downloads, all pending, started now.
    pub fn new(n: usize) -> Progress {
        Progress {
            t0: Instant::now(),
            done: vec![None; n],
            errors: vec![None; n],
        }
    }

    /// Neither completed nor failed yet.
    pub fn pending(&self, i: usize) -> bool {
        self.done[i].is_none() && self.errors[i].is_none()
    }

    /// Download `i` completed now (if still pending).
    pub fn complete(&mut self, i: usize) {
        if self.pending(i) {
            self.done[i] = Some(Instant::now());
        }
    }

    /// Download `i` failed (if still pending).
    pub fn fail(&mut self, i: usize, why: String) {
        if self.pending(i) {
            self.errors[i] = Some(why);
        }
    }

    /// No download is pending.
    pub fn settled(&self) -> bool {
        (0..self.done.len()).all(|i| !self.pending(i))
    }

    /// Fail every pending download: the deadline passed.
    pub fn expire(&mut self) {
        for i in 0..self.done.len() {
            self.fail(i, NOT_BY_DEADLINE.to_owned());
        }
    }

    /// The last completion (now if none completed).
    pub fn last_done(&self) -> Instant {
        self.done
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or_else(Instant::now)
    }

    /// Every download's record; downloader `k` fetched torrent
    /// `k mod torrents.len()` into its directory under `dir`.
    pub fn records(&self, dir: &Path, torrents: &[Torrent], bytes: u64) -> Vec<Download> {
        (0..self.done.len())
            .map(|k| {
                let t = &torrents[k % torrents.len()];
                let (_, got) = setup::download_paths(dir, k, t);
                let secs = self.done[k].map(|d| d.duration_since(self.t0).as_secs_f64());
                let intact = secs.is_some() && setup::same_bytes(&t.data, &got);
                let error = self.errors[k].clone();
                figures::download(k, k % torrents.len(), bytes, secs, intact, error)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_settle_once_and_records_check_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let files = setup::make_data(dir.path(), 1, 70_000).unwrap();
        let pin = anomos_common::Pin([1; 32]);
        let t = setup::make_torrents(&files, "https://127.0.0.1:1", pin, Some(1 << 16)).unwrap();
        let mut p = Progress::new(3);
        p.complete(0);
        p.fail(0, "too late".into());
        p.fail(1, "exited".into());
        p.complete(1);
        assert!(!p.settled());
        p.expire();
        assert!(p.settled());
        // Downloader 0 "completed": give it a correct copy.
        let (out, got) = setup::download_paths(dir.path(), 0, &t[0]);
        std::fs::create_dir_all(out).unwrap();
        std::fs::copy(&t[0].data, got).unwrap();
        let r = p.records(dir.path(), &t, 70_000);
        assert!(
            r[0].complete && r[0].intact && r[0].error.is_none(),
            "{:?}",
            r[0]
        );
        assert_eq!(r[1].error.as_deref(), Some("exited"));
        assert!(!r[1].complete);
        assert_eq!(r[2].error.as_deref(), Some(NOT_BY_DEADLINE));
        assert!(p.last_done() >= p.t0);
    }
}
