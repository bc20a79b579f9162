//! TLS, as Faktory does it: when the configuration directory holds both `public.cert.pem`
//! (the certificate chain, server certificate first) and `private.key.pem` (its key: PKCS#8,
//! PKCS#1 or SEC1), the protocol port speaks TLS only (TLS 1.2 and 1.3, rustls with the `ring`
//! provider). There is no mixed mode: a plaintext client on a TLS port fails its handshake.
//!
//! [`load`] returns a [`TlsAcceptor`], which is cheap to clone: the web UI serves HTTPS with the
//! same certificate through a clone (or through a copy of [`TlsAcceptor::config`] with its own
//! ALPN protocols).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

pub use tokio_rustls::TlsAcceptor;

/// The certificate chain's file name in the configuration directory.
pub const CERT_FILE: &str = "public.cert.pem";
/// The private key's file name in the configuration directory.
pub const KEY_FILE: &str = "private.key.pem";

/// The TLS acceptor for `config_dir`: `None` when neither [`CERT_FILE`] nor [`KEY_FILE`] is
/// there (plain TCP). Only one of them, an unreadable or empty file, no certificate or no key in
/// it, or a key that does not belong to the certificate is an error naming the file.
pub fn load(config_dir: &Path) -> Result<Option<TlsAcceptor>, String> {
    load_config(config_dir).map(|c| c.map(TlsAcceptor::from))
}

/// Like [`load`], but the rustls configuration itself (no ALPN protocols set).
pub fn load_config(config_dir: &Path) -> Result<Option<Arc<ServerConfig>>, String> {
    let cert_path = config_dir.join(CERT_FILE);
    let key_path = config_dir.join(KEY_FILE);
    let (cert_there, key_there) = (exists(&cert_path)?, exists(&key_path)?);
    match (cert_there, key_there) {
        (false, false) => return Ok(None),
        (true, false) => {
            return Err(format!(
                "{} exists but {} does not: TLS needs both (remove the certificate to serve \
                 plain TCP)",
                cert_path.display(),
                key_path.display()
            ))
        }
        (false, true) => {
            return Err(format!(
                "{} exists but {} does not: TLS needs both (remove the key to serve plain TCP)",
                key_path.display(),
                cert_path.display()
            ))
        }
        (true, true) => {}
    }
    let cert_text = read(&cert_path)?;
    let key_text = read(&key_path)?;
    let certs = CertificateDer::pem_slice_iter(&cert_text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not valid PEM: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected a -----BEGIN CERTIFICATE----- section)",
            cert_path.display()
        ));
    }
    let key = match PrivateKeyDer::from_pem_slice(&key_text) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => {
            return Err(format!(
                "{}: no private key in it (expected a -----BEGIN PRIVATE KEY-----, \
                 -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY----- section)",
                key_path.display()
            ))
        }
        Err(e) => return Err(format!("{}: not valid PEM: {e}", key_path.display())),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "{}: the private key does not belong to the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            e => format!(
                "{} / {}: unusable certificate or key: {e}",
                cert_path.display(),
                key_path.display()
            ),
        })?;
    Ok(Some(Arc::new(config)))
}

fn exists(path: &Path) -> Result<bool, String> {
    path.try_exists()
        .map_err(|e| format!("cannot check for {}: {e}", path.display()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_files_means_plain_tcp() {
        let dir = std::env::temp_dir().join(format!("werk-tls-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn garbage_names_the_file() {
        let dir = std::env::temp_dir().join(format!("werk-tls-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(CERT_FILE), "not a certificate\n").unwrap();
        let err = load(&dir).err().expect("an error");
        assert!(err.contains(KEY_FILE), "{err}");
        std::fs::write(dir.join(KEY_FILE), "not a key\n").unwrap();
        let err = load(&dir).err().expect("an error");
        assert!(
            err.contains(CERT_FILE) && err.contains("no certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
