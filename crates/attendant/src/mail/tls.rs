//! The TLS client configuration every mail client and the `ldap` check share.
//!
//! Rules: rustls with the ring provider and its safe default protocol versions; the
//! server's certificate is always verified, against `ca_file` when the config names one,
//! else against the system's CAs; there is no switch to turn verification off.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls;

/// A rustls client config trusting `ca_file` (PEM) when given, else the system's CAs.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificates (set ca_file)".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
