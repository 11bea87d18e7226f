//! The tracker's TLS identity and server context, and its admin token.
//!
//! Without `--tls-cert/--tls-key` the tracker creates an Ed25519 self-signed
//! certificate (CN "anomos tracker") in its data dir on first start and
//! reuses it afterwards, so its pin — what a `.atorrent` may carry — stays
//! stable across restarts. Private files are created with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anomos_common::identity::TlsIdentity;
use openssl::ssl::{SslAcceptor, SslAcceptorBuilder, SslMethod, SslVersion};

use crate::error::TrackerError;

/// Common name of the self-signed tracker certificate.
pub const TRACKER_COMMON_NAME: &str = "anomos tracker";
/// File names inside the data dir.
pub const CERT_FILE: &str = "tracker-cert.pem";
/// Private key of the self-signed certificate.
pub const KEY_FILE: &str = "tracker-key.pem";
/// Bearer token for `/status`.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Load the operator's certificate, or load/create the self-signed one.
pub fn load_or_create_identity(
    data_dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<TlsIdentity, TrackerError> {
    let id_err = |e: anomos_common::identity::IdentityError| TrackerError::Identity(e.to_string());
    if let (Some(c), Some(k)) = (cert, key) {
        return TlsIdentity::from_pem(&std::fs::read(c)?, &std::fs::read(k)?).map_err(id_err);
    }
    std::fs::create_dir_all(data_dir)?;
    let (cp, kp) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
    if cp.exists() && kp.exists() {
        return TlsIdentity::from_pem(&std::fs::read(&cp)?, &std::fs::read(&kp)?).map_err(id_err);
    }
    let id = TlsIdentity::generate(TRACKER_COMMON_NAME).map_err(id_err)?;
    let (cert_pem, key_pem) = id.to_pem().map_err(id_err)?;
    write_private(&kp, &key_pem)?;
    std::fs::write(&cp, cert_pem)?;
    Ok(id)
}

/// A TLS server context: TLS 1.2 minimum (1.3 preferred by openssl), the
/// Mozilla intermediate cipher list.
pub fn acceptor(id: &TlsIdentity) -> Result<SslAcceptorBuilder, TrackerError> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_private_key(id.key())?;
    b.set_certificate(id.cert())?;
    b.check_private_key()?;
    Ok(b)
}

/// The configured admin token, else the one in the data dir, else a new
/// random one written there with mode 0600.
pub fn load_or_create_admin_token(
    data_dir: &Path,
    configured: Option<&str>,
) -> Result<String, TrackerError> {
    if let Some(t) = configured.filter(|t| !t.is_empty()) {
        return Ok(t.to_owned());
    }
    let path: PathBuf = data_dir.join(ADMIN_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let t = existing.trim();
        if !t.is_empty() {
            return Ok(t.to_owned());
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, token.as_bytes())?;
    Ok(token)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_and_token_are_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create_identity(dir.path(), None, None).unwrap();
        let b = load_or_create_identity(dir.path(), None, None).unwrap();
        assert_eq!(a.pin(), b.pin());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let t1 = load_or_create_admin_token(dir.path(), None).unwrap();
        let t2 = load_or_create_admin_token(dir.path(), None).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(dir.path().join(ADMIN_TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            load_or_create_admin_token(dir.path(), Some("x")).unwrap(),
            "x"
        );
        assert!(acceptor(&a).is_ok());
    }
}
