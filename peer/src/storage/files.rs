//! The torrent's open files and blocking piece I/O on them.
//!
//! [`FileSet`] is the synchronous core of storage: it opens the files of a
//! [`Target`], reads byte ranges of pieces and writes verified pieces in
//! place, across file boundaries, using positioned reads and writes
//! (`pread`/`pwrite`) so that several pool threads can share one `File`
//! without seeking. Every method blocks; `storage.rs` only ever calls them
//! on the bounded blocking pool.
//!
//! It also remembers how much of each file existed before this session: a
//! file we just created (or grew) holds nothing but zeros past that point,
//! so `verify` can call such pieces missing without reading them. That
//! keeps starting a fresh multi-gigabyte download instant.

use super::error::StorageError;
use super::{paths, Target};
use anomos_common::crypto::sha256;
use anomos_common::metainfo::{Metainfo, HASH_LEN};
use anomos_common::piece::{Bitfield, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

/// The files of one torrent, opened.
#[derive(Debug)]
pub(crate) struct FileSet {
    paths: Vec<PathBuf>,
    files: Vec<File>,
    layout: Layout,
    hashes: Vec<[u8; HASH_LEN]>,
    writable: bool,
    /// Bytes of each file that were on disk before we opened it; the rest
    /// was zero-filled by us and holds no torrent data yet.
    existing: Vec<u64>,
    /// Files written since the last sync.
    dirty: Vec<AtomicBool>,
    /// Pieces written this session (they may lie past `existing`).
    written: Mutex<Bitfield>,
}

impl FileSet {
    /// Open (seed) or create/reopen (download) every file of `meta`.
    pub(crate) fn open(meta: &Metainfo, target: &Target) -> Result<FileSet, StorageError> {
        let mut opened = Vec::with_capacity(meta.files().len());
        match target {
            Target::Seed { data } => {
                if meta.is_multi_file() {
                    paths::user_dir(data, false)?;
                    let root =
                        std::fs::canonicalize(data).map_err(StorageError::at(data, "resolving"))?;
                    for f in meta.files() {
                        let path = paths::join_inside(data, &f.path)?;
                        paths::seed_file(&path, Some(&root), f.length)?;
                        opened.push(open_seed(path)?);
                    }
                } else {
                    let length = meta.total_length();
                    paths::seed_file(data, None, length)?;
                    opened.push(open_seed(data.clone())?);
                }
            }
            Target::Download { out_dir } => {
                paths::user_dir(out_dir, true)?;
                for f in meta.files() {
                    let components = if meta.is_multi_file() {
                        std::iter::once(meta.name().to_string())
                            .chain(f.path.iter().cloned())
                            .collect()
                    } else {
                        f.path.clone()
                    };
                    let path = paths::download_file(out_dir, &components)?;
                    opened.push(open_download(path, f.length)?);
                }
            }
        }
        let count = meta.layout().piece_count();
        let (paths, rest): (Vec<_>, Vec<_>) =
            opened.into_iter().map(|(p, f, e)| (p, (f, e))).unzip();
        let (files, existing): (Vec<_>, Vec<_>) = rest.into_iter().unzip();
        Ok(FileSet {
            dirty: paths.iter().map(|_| AtomicBool::new(false)).collect(),
            paths,
            files,
            layout: meta.layout().clone(),
            hashes: meta.piece_hashes().to_vec(),
            writable: matches!(target, Target::Download { .. }),
            existing,
            written: Mutex::new(Bitfield::new(count)),
        })
    }

    /// The files, in torrent order.
    pub(crate) fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The piece geometry.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Whether every byte of `piece` may hold data (else it is known empty).
    pub(crate) fn may_have(&self, piece: u32) -> bool {
        let written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        written.get(piece)
            || self
                .layout
                .file_spans(piece)
                .all(|s| s.file_offset + u64::from(s.len) <= self.existing[s.file_index])
    }

    /// Read `buf.len()` bytes of `piece` starting at `offset` in the piece.
    /// The caller has checked the range against the layout.
    pub(crate) fn read(&self, piece: u32, offset: u32, buf: &mut [u8]) -> Result<(), StorageError> {
        self.read_raw(piece, offset, buf)
            .map_err(|(i, e)| StorageError::io(e, &self.paths[i], "reading"))
    }

    /// Like [`FileSet::read`], with the index of the file that failed.
    fn read_raw(&self, piece: u32, offset: u32, buf: &mut [u8]) -> Result<(), (usize, io::Error)> {
        let end = u64::from(offset) + buf.len() as u64;
        for s in self.layout.file_spans(piece) {
            let (s_start, s_end) = (
                u64::from(s.piece_offset),
                u64::from(s.piece_offset) + u64::from(s.len),
            );
            let (from, to) = (s_start.max(u64::from(offset)), s_end.min(end));
            if from >= to {
                continue;
            }
            // Both are within the piece, so within `buf` after the shift.
            let dst =
                &mut buf[(from - u64::from(offset)) as usize..(to - u64::from(offset)) as usize];
            self.files[s.file_index]
                .read_exact_at(dst, s.file_offset + (from - s_start))
                .map_err(|e| (s.file_index, e))?;
        }
        Ok(())
    }

    /// Whether `piece` is on disk and matches its hash. Regions known to be
    /// empty, and files that have become shorter, count as "not have".
    pub(crate) fn verify_piece(&self, piece: u32) -> Result<bool, StorageError> {
        let Some(len) = self.layout.piece_len(piece) else {
            return Ok(false);
        };
        if !self.may_have(piece) {
            return Ok(false);
        }
        let mut buf = vec![0u8; len as usize];
        match self.read_raw(piece, 0, &mut buf) {
            Ok(()) => Ok(self.hashes.get(piece as usize) == Some(&sha256(&buf))),
            Err((_, e)) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err((i, e)) => Err(StorageError::io(e, &self.paths[i], "reading")),
        }
    }

    /// Write `data` as `piece` if it has the right length and hash.
    pub(crate) fn write_piece(&self, piece: u32, data: &[u8]) -> Result<bool, StorageError> {
        if !self.writable {
            return Err(StorageError::ReadOnly);
        }
        let len = self
            .layout
            .piece_len(piece)
            .ok_or(StorageError::OutOfRange {
                piece,
                offset: 0,
                len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            })?;
        if data.len() != len as usize || self.hashes.get(piece as usize) != Some(&sha256(data)) {
            return Ok(false);
        }
        for s in self.layout.file_spans(piece) {
            let start = s.piece_offset as usize;
            let chunk = &data[start..start + s.len as usize];
            // Dirty before writing: a partial write must be synced too.
            self.dirty[s.file_index].store(true, Ordering::Release);
            let path = &self.paths[s.file_index];
            self.files[s.file_index]
                .write_all_at(chunk, s.file_offset)
                .map_err(StorageError::at(path, "writing"))?;
        }
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .set(piece);
        Ok(true)
    }

    /// `fsync` every file written since the last sync.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        for (i, f) in self.files.iter().enumerate() {
            if self.dirty[i].swap(false, Ordering::AcqRel) {
                if let Err(e) = f.sync_all() {
                    self.dirty[i].store(true, Ordering::Release);
                    return Err(StorageError::io(e, &self.paths[i], "syncing"));
                }
            }
        }
        Ok(())
    }
}

type Opened = (PathBuf, File, u64);

/// Open a checked seed file read-only; all of it counts as existing.
fn open_seed(path: PathBuf) -> Result<Opened, StorageError> {
    let file = File::open(&path).map_err(StorageError::at(&path, "opening"))?;
    let len = file
        .metadata()
        .map_err(StorageError::at(&path, "opening"))?
        .len();
    Ok((path, file, len))
}

/// Create or reopen a download file (never through a symlink) and give it
/// its final length, keeping what it already holds.
fn open_download(path: PathBuf, length: u64) -> Result<Opened, StorageError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(StorageError::at(&path, "opening"))?;
    let meta = file
        .metadata()
        .map_err(StorageError::at(&path, "opening"))?;
    if !meta.is_file() {
        return Err(StorageError::NotAFile { path });
    }
    let before = meta.len();
    if length > before {
        preallocate(&file, length).map_err(StorageError::at(&path, "preallocating"))?;
    }
    file.set_len(length)
        .map_err(StorageError::at(&path, "sizing"))?;
    Ok((path, file, before.min(length)))
}

/// Reserve `len` bytes so a full disk shows now, not halfway through the
/// download. File systems without `fallocate` get a sparse file from the
/// caller's `set_len` instead, and report a full disk when a write fails.
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    match fs4::FileExt::allocate(file, len) {
        Ok(()) => Ok(()),
        Err(e) if is_unsupported(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `EOPNOTSUPP`, `ENOSYS`, or `EINVAL` (what some file systems answer).
fn is_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
        )
}
