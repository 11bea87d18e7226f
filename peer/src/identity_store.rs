//! Load-or-create the peer's identity (PROTOCOL.md §2.1) in its data dir.
//!
//! Identities are per tracker, so two trackers can never link a peer's
//! activity through its peer id: each tracker gets a subdirectory named by
//! the hex SHA-256 of its URL's origin (`scheme://host:port`, lower case).
//! A persistent identity lets the tracker's ratio history survive restarts;
//! `--ephemeral` keeps it in memory only.
//!
//! Files: `cert.pem` (certificate), `key.pem` (Ed25519 PKCS#8, mode 0600),
//! `onion.key` (32 raw bytes, mode 0600). Every write goes to a temporary
//! file in the same directory that is then renamed over the target, so a
//! crash leaves either the old file or the new one, never half of one.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anomos_common::crypto::X25519_LEN;
use anomos_common::identity::{IdentityFiles, PeerIdentity};
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::net::tracker_client::TrackerUrl;

/// Certificate file name.
pub const CERT_FILE: &str = "cert.pem";
/// Private key file name (mode 0600).
pub const KEY_FILE: &str = "key.pem";
/// Onion secret file name (mode 0600).
pub const ONION_FILE: &str = "onion.key";

/// The identity directory for `tracker` under `data_dir`.
pub fn identity_dir(data_dir: &Path, tracker: &TrackerUrl) -> PathBuf {
    let digest = anomos_common::crypto::sha256(tracker.origin().as_bytes());
    data_dir.join(hex::encode(digest))
}

/// The identity to use: a fresh in-memory one if `ephemeral`, else the one
/// stored in `dir` (created on first use).
pub fn load_or_create(dir: &Path, ephemeral: bool) -> Result<PeerIdentity, StoreError> {
    if ephemeral {
        return Ok(PeerIdentity::generate()?);
    }
    let paths = [CERT_FILE, KEY_FILE, ONION_FILE].map(|f| dir.join(f));
    let present = paths.iter().filter(|p| p.exists()).count();
    if present == 0 {
        let id = PeerIdentity::generate()?;
        store(dir, &id)?;
        return Ok(id);
    }
    let corrupt = |why: &str| StoreError::Corrupt {
        dir: dir.display().to_string(),
        why: why.to_owned(),
    };
    if present != paths.len() {
        return Err(corrupt("some identity files are missing"));
    }
    let [cert, key, onion] = paths;
    let onion_raw = Zeroizing::new(read(&onion)?);
    let onion_key: [u8; X25519_LEN] = onion_raw
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("onion key is not 32 bytes"))?;
    let files = IdentityFiles {
        cert_pem: read(&cert)?,
        key_pem: Zeroizing::new(read(&key)?),
        onion_key: Zeroizing::new(onion_key),
    };
    PeerIdentity::from_files(&files).map_err(|e| corrupt(e.kind()))
}

/// Write `id` into `dir` (created with mode 0700 if missing).
pub fn store(dir: &Path, id: &PeerIdentity) -> Result<(), StoreError> {
    fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    // Best effort: the directory holds keys, keep others out of it.
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    let files = id.to_files()?;
    write_atomic(&dir.join(CERT_FILE), &files.cert_pem, 0o644)?;
    write_atomic(&dir.join(KEY_FILE), &files.key_pem, 0o600)?;
    write_atomic(&dir.join(ONION_FILE), files.onion_key.as_ref(), 0o600)?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    fs::read(path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Temp file with `mode` from the start (never world-readable, even
/// briefly), flushed to disk, then renamed over `path`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> TrackerUrl {
        TrackerUrl::parse(s).unwrap()
    }

    #[test]
    fn creates_then_reloads_the_same_identity() {
        let data = tempfile::tempdir().unwrap();
        let dir = identity_dir(data.path(), &url("https://tracker.example:8443/"));
        let a = load_or_create(&dir, false).unwrap();
        let b = load_or_create(&dir, false).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.onion_public(), b.onion_public());
        for (f, mode) in [(CERT_FILE, 0o644), (KEY_FILE, 0o600), (ONION_FILE, 0o600)] {
            let m = fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{f}");
        }
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn one_identity_per_tracker_origin() {
        let data = tempfile::tempdir().unwrap();
        let a = identity_dir(data.path(), &url("https://a.example:8443"));
        let a2 = identity_dir(data.path(), &url("https://A.example:8443/v1/"));
        let b = identity_dir(data.path(), &url("https://b.example:8443"));
        assert_eq!(a, a2);
        assert_ne!(a, b);
        let ia = load_or_create(&a, false).unwrap();
        let ib = load_or_create(&b, false).unwrap();
        assert_ne!(ia.peer_id(), ib.peer_id());
    }

    #[test]
    fn corrupt_or_partial_files_are_a_clear_error() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("id");
        load_or_create(&dir, false).unwrap();
        fs::write(dir.join(KEY_FILE), b"not a key").unwrap();
        let e = load_or_create(&dir, false).unwrap_err();
        assert_eq!(e.kind(), "corrupt");
        assert!(e.to_string().contains("move them away"), "{e}");

        let dir = data.path().join("id2");
        load_or_create(&dir, false).unwrap();
        fs::write(dir.join(ONION_FILE), [1u8; 31]).unwrap();
        assert_eq!(load_or_create(&dir, false).unwrap_err().kind(), "corrupt");

        let dir = data.path().join("id3");
        load_or_create(&dir, false).unwrap();
        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        assert_eq!(load_or_create(&dir, false).unwrap_err().kind(), "corrupt");
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("id");
        load_or_create(&dir, false).unwrap();
        // A directory where a file should be cannot be read, even by root.
        fs::remove_file(dir.join(ONION_FILE)).unwrap();
        fs::create_dir(dir.join(ONION_FILE)).unwrap();
        assert_eq!(load_or_create(&dir, false).unwrap_err().kind(), "io");
    }

    #[test]
    fn ephemeral_writes_nothing() {
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().join("id");
        let a = load_or_create(&dir, true).unwrap();
        let b = load_or_create(&dir, true).unwrap();
        assert_ne!(a.peer_id(), b.peer_id());
        assert!(!dir.exists());
    }
}
