//! TLS served by inlet itself: the certificate and key files, read at start and again on
//! [`Tls::reload`] (SIGHUP), so that a renewed certificate needs no restart.
//!
//! The rustls configuration is built once; its certificate resolver hands out the pair read
//! last, so a connection accepted after a reload presents the new certificate while those
//! already open keep theirs. A pair that does not load (unreadable, not PEM, key not matching
//! the certificate) leaves the current one in place.

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// The certificate and key files and the server configuration that serves them.
#[derive(Debug, Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub server: Arc<rustls::ServerConfig>,
    current: Arc<Current>,
}

impl Tls {
    /// Reads the pair from `cert` and `key`; an error says which file and why.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Tls, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(&cert, &key, &provider)?;
        let current = Arc::new(Current {
            pair: RwLock::new(Arc::new(pair)),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            cert,
            key,
            server: Arc::new(server),
            current,
        })
    }

    /// Reads the files again and serves the new pair to connections accepted from now on.
    /// On an error the pair served so far stays.
    pub fn reload(&self) -> Result<(), String> {
        let provider = self.server.crypto_provider();
        let pair = read_pair(&self.cert, &self.key, provider)?;
        *self.current.pair.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
        Ok(())
    }
}

/// The pair handed to each new handshake.
#[derive(Debug)]
struct Current {
    pair: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// Loads a PEM certificate chain and the private key that must match its first certificate.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("tls_cert {}: no certificate found", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| format!("tls_cert/tls_key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let c = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert, key, c.cert.der().to_vec())
    }

    fn served(tls: &Tls) -> Vec<u8> {
        tls.current.pair.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn reload_serves_the_new_pair_and_keeps_the_old_one_when_the_new_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, a) = write_pair(dir.path(), "a.test");
        let tls = Tls::load(cert.clone(), key.clone()).unwrap();
        assert_eq!(served(&tls), a);

        let (_, _, b) = write_pair(dir.path(), "b.test");
        tls.reload().unwrap();
        assert_eq!(served(&tls), b);

        // A key that does not match the certificate: refused, B stays.
        let other = rcgen::generate_simple_self_signed(vec!["c.test".to_owned()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let err = tls.reload().unwrap_err();
        assert!(err.contains("tls_cert/tls_key"), "{err}");
        assert_eq!(served(&tls), b);

        // A half-written certificate file: refused, B stays.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(served(&tls), b);
    }
}
