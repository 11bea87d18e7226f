//! Why a storage operation failed, in words a user can act on.
//!
//! Every variant that concerns a file names it: the operator needs to know
//! *which* disk is full or *which* seed file is short, and the paths are the
//! user's own (the CLI prints them; they are never logged at info level by
//! the peer). [`StorageError::kind`] gives a fixed label for metrics.
//!
//! [`StorageError::io`] is the single place where an `io::Error` becomes a
//! `StorageError`, so disk-full and permission problems are recognised the
//! same way everywhere, whatever operation hit them.

use anomos_common::metainfo::MetainfoError;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why the torrent's files could not be opened, read, written or made.
#[derive(Debug, Error)]
pub enum StorageError {
    /// No space left on the device (or the user's quota is exhausted).
    #[error("disk full while {action} {}", path.display())]
    DiskFull {
        /// The file being written or preallocated.
        path: PathBuf,
        /// What was being done, e.g. "writing".
        action: &'static str,
    },
    /// The file system refused access (mode bits, read-only mount).
    #[error("permission denied while {action} {}", path.display())]
    PermissionDenied {
        /// The path refused.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
    },
    /// A file the torrent needs does not exist.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The absent file.
        path: PathBuf,
    },
    /// A seed file exists but its length differs from the torrent's.
    #[error("{} is {actual} bytes, the torrent says {expected}", path.display())]
    WrongLength {
        /// The file.
        path: PathBuf,
        /// Length the torrent expects.
        expected: u64,
        /// Length on disk.
        actual: u64,
    },
    /// A path would leave the target, uses an unsafe component, or runs
    /// through a symlink where none is allowed.
    #[error("refusing unsafe path {}: {reason}", path.display())]
    UnsafePath {
        /// The offending path (as far as it was built).
        path: PathBuf,
        /// Why it is unsafe.
        reason: &'static str,
    },
    /// A directory was needed, something else is there.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A regular file was needed, something else (directory, device, FIFO,
    /// socket) is there.
    #[error("{} is not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Any other I/O failure.
    #[error("i/o error while {action} {}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// A piece, offset or length outside the torrent.
    #[error("piece {piece} offset {offset} length {len} is outside the torrent")]
    OutOfRange {
        /// Piece index asked for.
        piece: u32,
        /// Offset inside the piece.
        offset: u32,
        /// Length asked for.
        len: u32,
    },
    /// A write to seed data, which is opened read-only.
    #[error("seed data is read-only")]
    ReadOnly,
    /// `make_torrent` found nothing to share.
    #[error("nothing to share in {}: no file has any data", path.display())]
    Empty {
        /// The file or directory given.
        path: PathBuf,
    },
    /// `make_torrent` could not build a valid torrent (bad announce URL,
    /// piece length, or file name).
    #[error("cannot make the torrent: {0}")]
    Metainfo(#[from] MetainfoError),
    /// A blocking job panicked or was cancelled before it finished.
    #[error("a storage job panicked or was cancelled")]
    Job,
}

impl StorageError {
    /// Coarse kind, from a fixed set, for metrics and retry decisions.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageError::DiskFull { .. } => "disk_full",
            StorageError::PermissionDenied { .. } => "permission_denied",
            StorageError::Missing { .. } => "missing",
            StorageError::WrongLength { .. } => "wrong_length",
            StorageError::UnsafePath { .. } => "unsafe_path",
            StorageError::NotADirectory { .. } => "not_a_directory",
            StorageError::NotAFile { .. } => "not_a_file",
            StorageError::Io { .. } => "io",
            StorageError::OutOfRange { .. } => "out_of_range",
            StorageError::ReadOnly => "read_only",
            StorageError::Empty { .. } => "empty",
            StorageError::Metainfo(_) => "metainfo",
            StorageError::Job => "job",
        }
    }

    /// Classify an OS error hit while doing `action` on `path`. Disk full is
    /// recognised by kind *and* raw errno, since `ErrorKind::StorageFull`
    /// only covers `ENOSPC` and quotas report `EDQUOT`; `ELOOP` is what
    /// `O_NOFOLLOW` answers for a symlink.
    pub fn io(err: io::Error, path: &Path, action: &'static str) -> StorageError {
        let path = path.to_path_buf();
        let raw = err.raw_os_error();
        match err.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                StorageError::DiskFull { path, action }
            }
            _ if matches!(raw, Some(libc::ENOSPC | libc::EDQUOT)) => {
                StorageError::DiskFull { path, action }
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                StorageError::PermissionDenied { path, action }
            }
            io::ErrorKind::NotFound => StorageError::Missing { path },
            io::ErrorKind::NotADirectory => StorageError::NotADirectory { path },
            io::ErrorKind::IsADirectory => StorageError::NotAFile { path },
            _ if raw == Some(libc::ELOOP) => StorageError::UnsafePath {
                path,
                reason: "it is a symlink",
            },
            _ => StorageError::Io {
                path,
                action,
                source: err,
            },
        }
    }

    /// A closure for `map_err` that classifies with [`StorageError::io`].
    pub(crate) fn at<'a>(
        path: &'a Path,
        action: &'static str,
    ) -> impl FnOnce(io::Error) -> StorageError + 'a {
        move |e| StorageError::io(e, path, action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn classify(e: io::Error) -> &'static str {
        StorageError::io(e, Path::new("/x/y"), "writing").kind()
    }

    #[test]
    fn disk_full_by_kind_and_by_errno() {
        assert_eq!(classify(io::Error::from_raw_os_error(28)), "disk_full");
        assert_eq!(classify(io::Error::from_raw_os_error(122)), "disk_full");
        assert_eq!(classify(io::ErrorKind::StorageFull.into()), "disk_full");
        assert_eq!(classify(io::ErrorKind::QuotaExceeded.into()), "disk_full");
        let e = StorageError::io(
            io::Error::from_raw_os_error(28),
            Path::new("/d/f"),
            "writing",
        );
        assert_eq!(e.to_string(), "disk full while writing /d/f");
    }

    /// A real ENOSPC from the kernel, without root: `/dev/full` refuses
    /// every write with it.
    #[test]
    fn dev_full_write_is_disk_full() {
        let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            println!("skipped: /dev/full is not available here");
            return;
        };
        let err = f
            .write_all(&[0u8; 4096])
            .and_then(|()| f.flush())
            .expect_err("/dev/full accepted a write");
        assert_eq!(classify(err), "disk_full");
    }

    #[test]
    fn other_errors_keep_their_meaning() {
        assert_eq!(
            classify(io::Error::from_raw_os_error(13)),
            "permission_denied"
        );
        assert_eq!(
            classify(io::Error::from_raw_os_error(30)),
            "permission_denied"
        );
        assert_eq!(classify(io::ErrorKind::NotFound.into()), "missing");
        assert_eq!(
            classify(io::Error::from_raw_os_error(20)),
            "not_a_directory"
        );
        assert_eq!(classify(io::Error::from_raw_os_error(21)), "not_a_file");
        assert_eq!(classify(io::Error::from_raw_os_error(40)), "unsafe_path");
        let e = StorageError::io(io::Error::from_raw_os_error(5), Path::new("/a"), "reading");
        assert_eq!(e.kind(), "io");
        assert!(e.to_string().starts_with("i/o error while reading /a: "));
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn displays_are_one_line_and_name_the_path() {
        let all = [
            StorageError::PermissionDenied {
                path: "/o/d".into(),
                action: "creating",
            },
            StorageError::Missing {
                path: "/s/f".into(),
            },
            StorageError::WrongLength {
                path: "/s/f".into(),
                expected: 10,
                actual: 9,
            },
            StorageError::UnsafePath {
                path: "/o/..".into(),
                reason: "dot component",
            },
            StorageError::NotADirectory {
                path: "/o/f".into(),
            },
            StorageError::NotAFile {
                path: "/o/d".into(),
            },
        ];
        for e in all {
            let s = e.to_string();
            assert!(s.contains("/o/") || s.contains("/s/"), "{s}");
            assert!(!s.contains('\n'));
        }
        assert_eq!(StorageError::Job.kind(), "job");
    }
}
