//! TLS settings shared by every listener and by the link: certificates
//! from PEM files, or a self-signed one generated on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Where a certificate chain and its private key are, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The certificate `serve` generates when none is configured: in `dir`,
/// made once and reused. Returns the files and whether they were just made.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<(CertFiles, bool)> {
    let files = CertFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok((files, false));
    }
    std::fs::create_dir_all(dir)?;
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| Error::Invalid(format!("cannot generate a certificate: {e}")))?;
    write_private(&files.key, made.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, made.cert.pem())?;
    Ok((files, true))
}

/// Writes a file only its owner can read, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// Server settings from a certificate and key (TLS 1.2 and 1.3).
pub fn server_config(files: &CertFiles) -> Result<Arc<rustls::ServerConfig>> {
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Invalid(format!("{}: {e}", files.key.display())))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| Error::Invalid(format!("{}: {e}", files.cert.display())))?;
    Ok(Arc::new(config))
}

/// Client settings that trust exactly the certificates in `roots` (the
/// cluster's own CA, or the primary's self-signed certificate).
pub fn client_config(roots: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    for cert in certs(roots)? {
        store
            .add(cert)
            .map_err(|e| Error::Invalid(format!("{}: {e}", roots.display())))?;
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(store)
            .with_no_client_auth(),
    ))
}

/// Client settings that trust the system's certificate authorities
/// (`SSL_CERT_FILE`, else Debian's and Red Hat's bundles), for peers on the
/// open internet: https webhooks, S3 stores.
pub fn system_client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let files = std::env::var("SSL_CERT_FILE")
        .map(|f| vec![f])
        .unwrap_or_else(|_| {
            vec![
                "/etc/ssl/certs/ca-certificates.crt".into(),
                "/etc/pki/tls/certs/ca-bundle.crt".into(),
            ]
        });
    for f in files {
        if let Ok(iter) = CertificateDer::pem_file_iter(&f) {
            for cert in iter.flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        tracing::warn!("no CA certificates found: connections to https peers will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
    Arc::new(config)
}
