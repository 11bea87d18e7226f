//! Turning torrent path components into paths on disk, safely.
//!
//! Architecture invariant: nothing is written outside the target. The
//! metainfo parser already refuses `..`, separators and control characters,
//! but a `.atorrent` is remote input and the parser is someone else's
//! module, so every component is checked again here before it is joined,
//! and every existing component *inside* the target is inspected without
//! following symlinks: a symlink planted in a download directory (by
//! another program or an earlier torrent) must not redirect our writes.
//! The last component is additionally opened with `O_NOFOLLOW`
//! (see `files.rs`) to close the race between this check and the open.
//!
//! Seeding reads the user's own data, where a symlink to a file in the
//! same tree is legitimate (`make_torrent` accepts it too); only symlinks
//! that lead out of the data directory are refused there.

use super::error::StorageError;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Longest path component, in bytes (common file-system limit).
const MAX_COMPONENT_LEN: usize = 255;

/// Why `c` cannot be a path component, if it cannot.
pub(crate) fn component_problem(c: &str) -> Option<&'static str> {
    if c.is_empty() {
        return Some("empty component");
    }
    if c == "." || c == ".." {
        return Some("dot component");
    }
    if c.contains(['/', '\\']) {
        return Some("path separator in a component");
    }
    if c.chars().any(char::is_control) {
        return Some("control character in a component");
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Some("component longer than 255 bytes");
    }
    // Whatever the platform's rules, the component must be one plain name.
    let mut parts = Path::new(c).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None) if n == c => None,
        _ => Some("not a plain file name"),
    }
}

/// `root` joined with `components`, each checked first.
pub(crate) fn join_inside(root: &Path, components: &[String]) -> Result<PathBuf, StorageError> {
    if components.is_empty() {
        return Err(StorageError::UnsafePath {
            path: root.to_path_buf(),
            reason: "empty path",
        });
    }
    let mut path = root.to_path_buf();
    for c in components {
        if let Some(reason) = component_problem(c) {
            path.push(c.replace(char::is_control, "?"));
            return Err(StorageError::UnsafePath { path, reason });
        }
        path.push(c);
    }
    Ok(path)
}

/// Prepare a download file below `root`: create the missing directories,
/// refuse symlinks and anything that is not a directory on the way, and
/// refuse an existing last component that is not a regular file. Returns
/// the file's path; the file itself is not created here.
pub(crate) fn download_file(root: &Path, components: &[String]) -> Result<PathBuf, StorageError> {
    let full = join_inside(root, components)?;
    let mut path = root.to_path_buf();
    let last = components.len() - 1;
    for (i, c) in components.iter().enumerate() {
        path.push(c);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageError::io(e, &path, "inspecting")),
        };
        match meta {
            Some(m) if m.file_type().is_symlink() => {
                return Err(StorageError::UnsafePath {
                    path,
                    reason: "it is a symlink",
                })
            }
            Some(m) if i == last && !m.is_file() => return Err(StorageError::NotAFile { path }),
            Some(m) if i < last && !m.is_dir() => return Err(StorageError::NotADirectory { path }),
            Some(_) => {}
            None if i == last => {}
            None => create_dir(&path)?,
        }
    }
    debug_assert_eq!(path, full);
    Ok(full)
}

/// Create one directory; if something appeared there meanwhile, accept it
/// only if it is a real directory.
fn create_dir(path: &Path) -> Result<(), StorageError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let m =
                std::fs::symlink_metadata(path).map_err(StorageError::at(path, "inspecting"))?;
            if m.file_type().is_symlink() {
                Err(StorageError::UnsafePath {
                    path: path.to_path_buf(),
                    reason: "it is a symlink",
                })
            } else if m.is_dir() {
                Ok(())
            } else {
                Err(StorageError::NotADirectory {
                    path: path.to_path_buf(),
                })
            }
        }
        Err(e) => Err(StorageError::io(e, path, "creating")),
    }
}

/// Make sure `dir` (given by the user, symlinks allowed) is a directory,
/// creating it and its parents if `create`.
pub(crate) fn user_dir(dir: &Path, create: bool) -> Result<(), StorageError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(StorageError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(StorageError::at(dir, "creating"))
        }
        Err(e) => Err(StorageError::io(e, dir, "opening")),
    }
}

/// Check a seed file: it exists, is a regular file of `expected` bytes, and
/// (when `canonical_root` is given, i.e. multi-file) resolves inside it.
pub(crate) fn seed_file(
    path: &Path,
    canonical_root: Option<&Path>,
    expected: u64,
) -> Result<(), StorageError> {
    let m = std::fs::metadata(path).map_err(StorageError::at(path, "opening"))?;
    if !m.is_file() {
        return Err(StorageError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if let Some(root) = canonical_root {
        let real = std::fs::canonicalize(path).map_err(StorageError::at(path, "resolving"))?;
        if !real.starts_with(root) {
            return Err(StorageError::UnsafePath {
                path: path.to_path_buf(),
                reason: "a symlink leads outside the data directory",
            });
        }
    }
    if m.len() != expected {
        return Err(StorageError::WrongLength {
            path: path.to_path_buf(),
            expected,
            actual: m.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn comps(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bad_components_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/etc",
            "a\\b",
            "x\ny",
            "\0",
            &"n".repeat(256),
        ] {
            assert!(component_problem(bad).is_some(), "{bad:?}");
        }
        for good in ["a", "a.b", "..a", "a b", "ünï", &"n".repeat(255)] {
            assert_eq!(component_problem(good), None, "{good:?}");
        }
    }

    #[test]
    fn join_never_leaves_the_root() {
        let root = Path::new("/t/root");
        for bad in [
            &["..", "x"][..],
            &["a", ".."],
            &["/abs"],
            &["a", "b/../../c"],
            &[],
        ] {
            let e = join_inside(root, &comps(bad)).expect_err("escaped");
            assert_eq!(e.kind(), "unsafe_path", "{bad:?}");
        }
        let ok = join_inside(root, &comps(&["a", "b"])).expect("join");
        assert_eq!(ok, Path::new("/t/root/a/b"));
    }

    #[test]
    fn download_creates_directories_and_refuses_symlinks() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path();
        let p = download_file(root, &comps(&["n", "d", "f"])).expect("prepare");
        assert_eq!(p, root.join("n/d/f"));
        assert!(root.join("n/d").is_dir());
        assert!(!p.exists());

        // A symlinked directory inside the target, pointing elsewhere.
        let outside = tempfile::tempdir().expect("tempdir");
        symlink(outside.path(), root.join("n/evil")).expect("symlink");
        let e = download_file(root, &comps(&["n", "evil", "f"])).expect_err("followed");
        assert_eq!(e.kind(), "unsafe_path");
        // A symlink as the file itself.
        symlink(outside.path().join("victim"), root.join("n/d/g")).expect("symlink");
        let e = download_file(root, &comps(&["n", "d", "g"])).expect_err("followed");
        assert_eq!(e.kind(), "unsafe_path");
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);

        // A file where a directory is needed, a directory where a file is.
        std::fs::write(root.join("n/plain"), b"x").expect("write");
        let e = download_file(root, &comps(&["n", "plain", "f"])).expect_err("through a file");
        assert_eq!(e.kind(), "not_a_directory");
        let e = download_file(root, &comps(&["n", "d"])).expect_err("a directory");
        assert_eq!(e.kind(), "not_a_file");
    }

    #[test]
    fn seed_files_are_checked() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(t.path()).expect("canon");
        std::fs::write(root.join("f"), b"12345").expect("write");
        seed_file(&root.join("f"), Some(&root), 5).expect("good");
        let e = seed_file(&root.join("f"), Some(&root), 6).expect_err("length");
        assert_eq!(e.kind(), "wrong_length");
        assert!(e.to_string().contains("is 5 bytes, the torrent says 6"));
        let e = seed_file(&root.join("nope"), Some(&root), 1).expect_err("missing");
        assert_eq!(e.kind(), "missing");
        let e = seed_file(&root, Some(&root), 1).expect_err("dir");
        assert_eq!(e.kind(), "not_a_file");

        // A symlink inside the tree is fine; one leading out is not.
        symlink(root.join("f"), root.join("inside")).expect("symlink");
        seed_file(&root.join("inside"), Some(&root), 5).expect("inside link");
        let outside = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(outside.path(), b"12345").expect("write");
        symlink(outside.path(), root.join("out")).expect("symlink");
        let e = seed_file(&root.join("out"), Some(&root), 5).expect_err("escaped");
        assert_eq!(e.kind(), "unsafe_path");
    }

    #[test]
    fn user_dir_must_be_a_directory() {
        let t = tempfile::tempdir().expect("tempdir");
        user_dir(&t.path().join("a/b"), true).expect("created");
        assert!(t.path().join("a/b").is_dir());
        std::fs::write(t.path().join("f"), b"").expect("write");
        assert_eq!(
            user_dir(&t.path().join("f"), true)
                .expect_err("file")
                .kind(),
            "not_a_directory"
        );
        assert_eq!(
            user_dir(&t.path().join("none"), false)
                .expect_err("absent")
                .kind(),
            "missing"
        );
    }
}
