//! Torrent storage on disk: pieces read, verified and written in place.
//!
//! A torrent is one byte stream cut into pieces (see
//! [`anomos_common::piece`]); [`Storage`] maps that stream onto the files of
//! a [`Target`] — the user's data when seeding, a download directory when
//! fetching — and [`make_torrent`] builds a `.atorrent` from files.
//!
//! Architecture invariant: the caller's thread (the Swarm actor, on
//! actix's single-threaded runtime) never touches a file or hashes a piece.
//! Every read, write, hash and fsync runs on tokio's blocking threads,
//! gated by a semaphore of `max_jobs` permits, so a busy swarm cannot
//! flood the machine with disk jobs and the actor stays responsive.
//! (Only [`Storage::open`] is synchronous, as its signature says; callers
//! on an actor thread use [`Storage::open_async`].)
//!
//! Architecture invariant: nothing is written outside the target and
//! nothing unverified is written at all: [`Storage::write_piece`] hashes
//! first. A crash therefore leaves only whole, correct pieces, plus zeros,
//! and [`Storage::verify`] after a restart finds exactly what survived.
//!
//! Code map: `paths.rs` checks and joins path components, `files.rs` is the
//! blocking file I/O, `cache.rs` keeps recently read pieces for uploading,
//! `make.rs` builds torrents, `error.rs` names what went wrong.

mod cache;
mod error;
mod files;
mod make;
mod paths;
#[cfg(test)]
mod tests;

pub use error::StorageError;
pub use make::make_torrent;

use anomos_common::metainfo::Metainfo;
use anomos_common::piece::{Bitfield, Layout};
use cache::PieceCache;
use files::FileSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};

/// Where the torrent's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `anomos seed FILE.atorrent --data PATH`: PATH is the file itself
    /// (single-file torrent) or the directory holding the files
    /// (multi-file; PATH plays the role of the torrent's `name` directory).
    /// Opened read-only; every file must exist with its exact length.
    Seed {
        /// The file or directory.
        data: PathBuf,
    },
    /// `anomos get FILE.atorrent --out DIR`: files go to DIR/<name>
    /// (single) or DIR/<name>/<path…> (multi); directories are created,
    /// files created or reopened (resume) with their final length.
    Download {
        /// The directory that receives the torrent.
        out_dir: PathBuf,
    },
}

/// Tuning of a [`Storage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// Concurrent blocking jobs (reads, writes, hashes); at least 1.
    pub max_jobs: usize,
    /// Recently read pieces kept in memory for serving blocks (0: none).
    pub cache_pieces: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            max_jobs: 4,
            cache_pieces: 8,
        }
    }
}

/// The files of one torrent, opened, with a bounded pool for their I/O.
/// Cheap to clone; clones share files, pool and cache.
#[derive(Clone)]
pub struct Storage {
    files: Arc<FileSet>,
    pool: Pool,
    cache: Arc<Mutex<PieceCache>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No paths: they name what the user shares.
        write!(
            f,
            "Storage(files={}, pieces={}, jobs={})",
            self.files.paths().len(),
            self.files.layout().piece_count(),
            self.pool.size
        )
    }
}

impl Storage {
    /// Open the files of `meta` at `target` (creating and sizing them for a
    /// download). Blocks on file I/O.
    pub fn open(
        meta: &Metainfo,
        target: Target,
        opts: StorageOptions,
    ) -> Result<Storage, StorageError> {
        let files = FileSet::open(meta, &target)?;
        let size = opts.max_jobs.max(1);
        Ok(Storage {
            files: Arc::new(files),
            pool: Pool {
                permits: Arc::new(Semaphore::new(size)),
                size,
            },
            cache: Arc::new(Mutex::new(PieceCache::new(opts.cache_pieces))),
        })
    }

    /// [`Storage::open`] on a blocking thread, for async callers:
    /// preallocating a large download can take a while.
    pub async fn open_async(
        meta: &Metainfo,
        target: Target,
        opts: StorageOptions,
    ) -> Result<Storage, StorageError> {
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || Storage::open(&meta, target, opts))
            .await
            .map_err(|_| StorageError::Job)?
    }

    /// Hash what is on disk (pieces in parallel, up to `max_jobs`) and
    /// return the verified pieces. `progress(done, total)` is called as
    /// pieces are checked. Regions known to be empty (created by this
    /// session and never written) are "not have" without hashing; so are
    /// files that became shorter.
    pub async fn verify(
        &self,
        mut progress: impl FnMut(u32, u32),
    ) -> Result<Bitfield, StorageError> {
        let total = self.files.layout().piece_count();
        let mut have = Bitfield::new(total);
        let mut done = 0u32;
        let mut jobs = JoinSet::new();
        for piece in 0..total {
            if self.files.may_have(piece) {
                while jobs.len() >= self.pool.size {
                    if let Some(joined) = jobs.join_next().await {
                        settle(joined, &mut have)?;
                        done += 1;
                        progress(done, total);
                    }
                }
                let permit = self.pool.permit().await?;
                let files = self.files.clone();
                jobs.spawn_blocking(move || {
                    let _permit = permit;
                    (piece, files.verify_piece(piece))
                });
            } else {
                done += 1;
                progress(done, total);
            }
        }
        while let Some(joined) = jobs.join_next().await {
            settle(joined, &mut have)?;
            done += 1;
            progress(done, total);
        }
        Ok(have)
    }

    /// Read `len` bytes at `offset` of `piece` (a piece we have, for
    /// uploading). The first request for a piece reads all of it into the
    /// cache; later blocks of it come from memory.
    pub async fn read_block(
        &self,
        piece: u32,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>, StorageError> {
        let out_of_range = StorageError::OutOfRange { piece, offset, len };
        let piece_len = self.files.layout().piece_len(piece).ok_or(out_of_range)?;
        let end = offset
            .checked_add(len)
            .filter(|&end| len > 0 && end <= piece_len)
            .ok_or(StorageError::OutOfRange { piece, offset, len })?;
        let slot = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slot(piece);
        let Some(slot) = slot else {
            let files = self.files.clone();
            return self
                .pool
                .run(move || {
                    let mut buf = vec![0u8; len as usize];
                    files.read(piece, offset, &mut buf).map(|()| buf)
                })
                .await;
        };
        let data = slot
            .get_or_try_init(|| {
                let (files, pool) = (self.files.clone(), self.pool.clone());
                async move {
                    pool.run(move || {
                        let mut buf = vec![0u8; piece_len as usize];
                        files.read(piece, 0, &mut buf).map(|()| Arc::new(buf))
                    })
                    .await
                }
            })
            .await?;
        Ok(data[offset as usize..end as usize].to_vec())
    }

    /// Hash `data` against the piece hash; if it matches, write it in place
    /// (across file boundaries) and return `Ok(true)`. A mismatch (wrong
    /// hash or length) writes nothing and returns `Ok(false)`.
    pub async fn write_piece(&self, piece: u32, data: Vec<u8>) -> Result<bool, StorageError> {
        let files = self.files.clone();
        let written = self
            .pool
            .run(move || files.write_piece(piece, &data))
            .await?;
        if written {
            self.cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .forget(piece);
        }
        Ok(written)
    }

    /// `fsync` every file written since the last sync.
    pub async fn sync(&self) -> Result<(), StorageError> {
        let files = self.files.clone();
        self.pool.run(move || files.sync()).await
    }

    /// The files, in torrent order (absolute or as given).
    pub fn paths(&self) -> &[PathBuf] {
        self.files.paths()
    }

    /// The piece geometry.
    pub fn layout(&self) -> &Layout {
        self.files.layout()
    }
}

/// Record one finished verify job in `have`.
fn settle(
    joined: Result<(u32, Result<bool, StorageError>), JoinError>,
    have: &mut Bitfield,
) -> Result<(), StorageError> {
    let (piece, good) = joined.map_err(|_| StorageError::Job)?;
    if good? {
        have.set(piece);
    }
    Ok(())
}

/// The bounded blocking pool: tokio's blocking threads behind a semaphore.
#[derive(Clone)]
struct Pool {
    permits: Arc<Semaphore>,
    size: usize,
}

impl Pool {
    /// Wait for a free job slot.
    async fn permit(&self) -> Result<OwnedSemaphorePermit, StorageError> {
        // The semaphore is never closed; treat it like a lost job if it is.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StorageError::Job)
    }

    /// Run `job` on a blocking thread once a slot is free.
    async fn run<T, F>(&self, job: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    {
        let permit = self.permit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|_| StorageError::Job)?
    }
}
