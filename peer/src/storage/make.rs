//! `anomos make-torrent`: a `.atorrent` from a file or a directory.
//!
//! The walk is sorted by name (byte order), so the same tree always gives
//! the same torrent. It takes regular files only: a device, FIFO or socket
//! has no stable content to share and is refused by name rather than
//! skipped, so a user never publishes a torrent that silently lacks
//! something. A symlink to a file inside the tree is shared as that file; a
//! symlink leading out of the tree is refused (it would publish something
//! the user did not point at), and so is a symlink to a directory (it could
//! loop, and inside the tree it would only duplicate files). Names must be
//! valid torrent path components, checked before anything is hashed.
//!
//! Everything cheap is validated first, by building the torrent once with
//! all-zero piece hashes: a bad announce URL or piece length should not cost
//! the user a full read of a large tree.

use super::error::StorageError;
use super::paths::component_problem;
use anomos_common::metainfo::{
    default_piece_length, Metainfo, MetainfoError, PieceHasher, HASH_LEN, MAX_METAINFO_LEN,
};
use anomos_common::Pin;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Bytes read from disk at a time while hashing.
const CHUNK: usize = 1 << 20;

/// A file found by the walk.
struct Found {
    /// Torrent path components (empty for a single-file torrent).
    components: Vec<String>,
    /// Where to read it.
    path: PathBuf,
    /// Length seen by the walk.
    length: u64,
}

/// Build a `.atorrent` from a file or a directory. `piece_length` `None`
/// picks [`default_piece_length`] for the total size. Files are hashed
/// sequentially in large chunks; `progress(bytes_done, bytes_total)` is
/// called after each. Blocks on file I/O for as long as hashing takes.
pub fn make_torrent(
    path: &Path,
    announce: &str,
    pin: Option<Pin>,
    piece_length: Option<u32>,
    mut progress: impl FnMut(u64, u64),
) -> Result<Metainfo, StorageError> {
    // The path the user gave may itself be a symlink: follow it.
    let meta = fs::metadata(path).map_err(StorageError::at(path, "opening"))?;
    let root = fs::canonicalize(path).map_err(StorageError::at(path, "resolving"))?;
    // Name the torrent after what the user pointed at (a symlink keeps its
    // own name); `.` and `..` have none, so their real name is used.
    let name = path
        .file_name()
        .or(root.file_name())
        .and_then(|n| n.to_str())
        .ok_or(StorageError::UnsafePath {
            path: path.to_path_buf(),
            reason: "the name is not valid UTF-8 or is empty",
        })?
        .to_string();
    if let Some(reason) = component_problem(&name) {
        return Err(StorageError::UnsafePath {
            path: path.to_path_buf(),
            reason,
        });
    }
    let found = if meta.is_file() {
        vec![Found {
            components: Vec::new(),
            path: root.clone(),
            length: meta.len(),
        }]
    } else if meta.is_dir() {
        walk(&root)?
    } else {
        return Err(StorageError::NotAFile {
            path: path.to_path_buf(),
        });
    };
    let total = found
        .iter()
        .try_fold(0u64, |t, f| t.checked_add(f.length))
        .ok_or(MetainfoError::Overflow)?;
    if total == 0 {
        return Err(StorageError::Empty {
            path: path.to_path_buf(),
        });
    }
    let piece_length = piece_length.unwrap_or_else(|| default_piece_length(total));
    let list: Vec<(Vec<String>, u64)> = found
        .iter()
        .map(|f| (f.components.clone(), f.length))
        .collect();
    // Dry run with all-zero hashes: every check but the data's. A
    // piece count whose hashes alone exceed the file limit fails here too.
    let pieces = total.div_ceil(u64::from(piece_length.max(1)));
    if pieces.saturating_mul(HASH_LEN as u64) > MAX_METAINFO_LEN as u64 {
        return Err(MetainfoError::TooLarge.into());
    }
    let zero_hashes = vec![[0u8; HASH_LEN]; pieces as usize];
    Metainfo::create(&list, &name, piece_length, zero_hashes, announce, pin)?;

    let mut hasher = PieceHasher::new(piece_length);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    progress(0, total);
    for f in &found {
        let read = hash_file(f, &mut hasher, &mut buf, |n| {
            done += n;
            progress(done, total);
        })?;
        if read != f.length {
            return Err(StorageError::WrongLength {
                path: f.path.clone(),
                expected: f.length,
                actual: read,
            });
        }
    }
    Ok(Metainfo::create(
        &list,
        &name,
        piece_length,
        hasher.finish(),
        announce,
        pin,
    )?)
}

/// Feed one file to `hasher`; returns the bytes read, which differ from
/// the walk's length only if the file changed meanwhile.
fn hash_file(
    f: &Found,
    hasher: &mut PieceHasher,
    buf: &mut [u8],
    mut read_more: impl FnMut(u64),
) -> Result<u64, StorageError> {
    let file = File::open(&f.path).map_err(StorageError::at(&f.path, "opening"))?;
    // One byte past the expected length is enough to notice growth.
    let mut input = file.take(f.length.saturating_add(1));
    let mut read = 0u64;
    loop {
        match input.read(buf) {
            Ok(0) => return Ok(read),
            Ok(n) => {
                hasher.update(&buf[..n]);
                read += n as u64;
                read_more(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StorageError::io(e, &f.path, "reading")),
        }
    }
}

/// Every regular file below `root` (canonical), sorted, depth first.
fn walk(root: &Path) -> Result<Vec<Found>, StorageError> {
    let mut found = Vec::new();
    let mut stack = vec![(Vec::new(), sorted_entries(root)?.into_iter())];
    loop {
        let Some((prefix, entries)) = stack.last_mut() else {
            return Ok(found);
        };
        let Some((name, path)) = entries.next() else {
            stack.pop();
            continue;
        };
        let mut components = prefix.clone();
        components.push(name);
        let kind = fs::symlink_metadata(&path).map_err(StorageError::at(&path, "inspecting"))?;
        if kind.file_type().is_symlink() {
            let real = fs::canonicalize(&path).map_err(StorageError::at(&path, "resolving"))?;
            if !real.starts_with(root) {
                return Err(StorageError::UnsafePath {
                    path,
                    reason: "a symlink leads outside the tree",
                });
            }
            let target = fs::metadata(&real).map_err(StorageError::at(&path, "inspecting"))?;
            if target.is_dir() {
                return Err(StorageError::UnsafePath {
                    path,
                    reason: "a symlink to a directory (could loop or duplicate files)",
                });
            }
            if !target.is_file() {
                return Err(StorageError::NotAFile { path });
            }
            found.push(Found {
                components,
                path: real,
                length: target.len(),
            });
        } else if kind.is_file() {
            found.push(Found {
                components,
                path,
                length: kind.len(),
            });
        } else if kind.is_dir() {
            let entries = sorted_entries(&path)?;
            stack.push((components, entries.into_iter()));
        } else {
            return Err(StorageError::NotAFile { path });
        }
    }
}

/// The entries of `dir` as `(name, path)`, sorted by name; names that are
/// not valid torrent path components are refused.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(StorageError::at(dir, "listing"))? {
        let entry = entry.map_err(StorageError::at(dir, "listing"))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| StorageError::UnsafePath {
                path: path.clone(),
                reason: "the name is not valid UTF-8",
            })?;
        if let Some(reason) = component_problem(&name) {
            return Err(StorageError::UnsafePath { path, reason });
        }
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const ANNOUNCE: &str = "https://tracker.example";

    fn make(path: &Path) -> Result<Metainfo, StorageError> {
        make_torrent(path, ANNOUNCE, None, None, |_, _| {})
    }

    #[test]
    fn walks_sorted_and_hashes_the_stream() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("d");
        for (rel, data) in [
            ("b/y", &b"yy"[..]),
            ("a", b"a"),
            ("b/x", b""),
            ("c", b"ccc"),
        ] {
            let p = root.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, data).expect("write");
        }
        fs::create_dir(root.join("empty-dir")).expect("mkdir");
        let mut seen = Vec::new();
        let m = make_torrent(&root, ANNOUNCE, Some(Pin([1; 32])), None, |d, n| {
            seen.push((d, n))
        })
        .expect("make");
        let files: Vec<_> = m
            .files()
            .iter()
            .map(|f| (f.path.join("/"), f.length))
            .collect();
        let expect = [("a", 1), ("b/x", 0), ("b/y", 2), ("c", 3)];
        assert_eq!(files, expect.map(|(p, n)| (p.to_string(), n)));
        assert_eq!(m.name(), "d");
        assert_eq!(m.pin(), Some(Pin([1; 32])));
        assert_eq!(m.piece_length(), default_piece_length(6));
        assert!(m.check_piece(0, b"ayyccc"));
        assert_eq!(seen.first(), Some(&(0, 6)));
        assert_eq!(seen.last(), Some(&(6, 6)));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn nothing_to_share_is_an_error() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("e");
        fs::create_dir(&root).expect("mkdir");
        assert_eq!(make(&root).expect_err("empty").kind(), "empty");
        fs::write(root.join("zero"), b"").expect("write");
        let e = make(&root).expect_err("zero bytes");
        assert_eq!(e.kind(), "empty");
        assert!(e.to_string().contains("nothing to share"), "{e}");
        assert_eq!(
            make(&t.path().join("none")).expect_err("absent").kind(),
            "missing"
        );
    }

    #[test]
    fn special_files_are_refused() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("s");
        fs::create_dir(&root).expect("mkdir");
        fs::write(root.join("a"), b"data").expect("write");
        // A socket is a special file anyone can create, no mkfifo needed.
        let sock = root.join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
        let e = make(&root).expect_err("socket inside");
        assert_eq!(e.kind(), "not_a_file");
        assert!(e.to_string().contains("sock"), "{e}");
        assert_eq!(make(&sock).expect_err("socket").kind(), "not_a_file");
        if Path::new("/dev/null").exists() {
            assert_eq!(
                make(Path::new("/dev/null")).expect_err("device").kind(),
                "not_a_file"
            );
        }
    }

    #[test]
    fn the_name_is_what_the_user_pointed_at() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("show");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("ep1"), b"1").expect("write");
        symlink(dir.join("ep1"), t.path().join("pilot")).expect("symlink");
        let m = make(&t.path().join("pilot")).expect("link");
        assert_eq!((m.name(), m.is_multi_file()), ("pilot", false));
        assert_eq!(make(&dir.join(".")).expect("dot").name(), "show");
        assert_eq!(make(&dir.join("../show")).expect("dotdot").name(), "show");
        let up = dir.join("sub");
        fs::create_dir(&up).expect("mkdir");
        assert_eq!(make(&up.join("..")).expect("parent").name(), "show");
    }

    #[test]
    fn symlinks_stay_inside_the_tree() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("l");
        fs::create_dir_all(root.join("dir")).expect("mkdir");
        fs::write(root.join("real"), b"real").expect("write");
        symlink(root.join("real"), root.join("alias")).expect("symlink");
        let m = make(&root).expect("inside link");
        let names: Vec<_> = m.files().iter().map(|f| f.path.join("/")).collect();
        assert_eq!(names, ["alias", "real"]);
        assert!(m.check_piece(0, b"realreal"));

        symlink(root.join("dir"), root.join("loop")).expect("symlink");
        assert_eq!(make(&root).expect_err("dir link").kind(), "unsafe_path");
        fs::remove_file(root.join("loop")).expect("rm");

        fs::write(t.path().join("secret"), b"s").expect("write");
        symlink(t.path().join("secret"), root.join("dir/out")).expect("symlink");
        let e = make(&root).expect_err("escape");
        assert_eq!(e.kind(), "unsafe_path");
        assert!(e.to_string().contains("outside the tree"), "{e}");
    }

    #[test]
    fn bad_names_and_settings_fail_before_hashing() {
        use std::os::unix::ffi::OsStrExt as _;
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("n");
        fs::create_dir(&root).expect("mkdir");
        fs::write(root.join("ok"), b"1").expect("write");
        fs::write(root.join("back\\slash"), b"2").expect("write");
        assert_eq!(make(&root).expect_err("backslash").kind(), "unsafe_path");
        fs::remove_file(root.join("back\\slash")).expect("rm");
        let bad = root.join(std::ffi::OsStr::from_bytes(b"\xff"));
        fs::write(&bad, b"3").expect("write");
        assert_eq!(make(&root).expect_err("not utf-8").kind(), "unsafe_path");
        fs::remove_file(&bad).expect("rm");

        let mut calls = 0;
        let e = make_torrent(&root, "http://plain", None, None, |_, _| calls += 1)
            .expect_err("announce");
        assert_eq!(e.kind(), "metainfo");
        let e = make_torrent(&root, ANNOUNCE, None, Some(1000), |_, _| calls += 1)
            .expect_err("piece length");
        assert_eq!(e.kind(), "metainfo");
        assert_eq!(calls, 0, "hashed before refusing");
        let m = make_torrent(&root, ANNOUNCE, None, Some(1 << 20), |_, _| {}).expect("make");
        assert_eq!(m.piece_length(), 1 << 20);
    }
}
