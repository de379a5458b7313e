//! How alert messages travel: a JSON POST to an `http://` or `https://` address. HTTPS is
//! verified against the system's trusted roots, plus the certificates of an optional CA
//! file (`[alerts] webhook_ca`, for a receiver with a private CA); never unverified.

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Time a webhook has to connect, shake hands and answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook address: `http[s]://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (tls, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
            (Some(r), _) => (true, r),
            (None, Some(r)) => (false, r),
            _ => {
                return Err(format!(
                    "webhook {url:?}: only http:// and https:// addresses are supported"
                ));
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("webhook {url:?}: bad port"))?,
            ),
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty()
            || url.len() > 2048
            || path.bytes().any(|b| b <= b' ' || b == 0x7f)
            || host.bytes().any(|b| b <= b' ' || b"/?#@".contains(&b))
        {
            return Err(format!("webhook {url:?}: not a valid http(s):// address"));
        }
        if tls && ServerName::try_from(host).is_err() {
            return Err(format!("webhook {url:?}: not a valid host name for TLS"));
        }
        Ok(Target {
            tls,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        })
    }

    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (false, 80) | (true, 443) => host,
            (_, p) => format!("{host}:{p}"),
        }
    }
}

/// The certificates of a PEM CA file; an error names the file and says why.
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let named = |e: &dyn std::fmt::Display| format!("alerts.webhook_ca {}: {e}", path.display());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| named(&e))?;
    if certs.is_empty() {
        return Err(named(&"no PEM certificate in it"));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots.add(c.clone()).map_err(|e| named(&e))?;
    }
    Ok(certs)
}

/// The TLS client settings of webhooks: the system's roots plus those of `ca`.
pub fn tls_client(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::warn!(
            errors = native.errors.len(),
            "alert webhooks: no system trusted roots found; https:// webhooks need [alerts] webhook_ca"
        );
    }
    if let Some(ca) = ca {
        for c in read_ca(ca)? {
            roots
                .add(c)
                .map_err(|e| format!("alerts.webhook_ca {}: {e}", ca.display()))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One POST; the response status, or why there was none. `tls` is needed for `https://`.
pub async fn post(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
) -> Result<u16, String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if !target.tls {
            return exchange(stream, target, body, headers).await;
        }
        let tls = tls.ok_or("tls: no client settings")?.clone();
        let name = ServerName::try_from(target.host.clone()).map_err(|e| format!("tls: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, stream)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        exchange(stream, target, body, headers).await
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

async fn exchange<IO>(
    io: IO,
    target: &Target,
    body: Bytes,
    headers: Vec<(&'static str, String)>,
) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::Full;
    let io = hyper_util::rt::TokioIo::new(io);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.host_header())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "inlet-alerts");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    Ok(resp.status().as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_addresses_are_http_or_https_and_checked() {
        let t = Target::parse("http://127.0.0.1:9000/hook?a=1").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (false, "127.0.0.1", 9000, "/hook?a=1")
        );
        let t = Target::parse("http://example.com").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert_eq!(t.host_header(), "example.com");
        let t = Target::parse("https://example.com/x").unwrap();
        assert_eq!(
            (t.tls, t.port, t.host_header().as_str()),
            (true, 443, "example.com")
        );
        let t = Target::parse("https://[::1]:8443/").unwrap();
        assert_eq!(
            (t.host.as_str(), t.host_header().as_str()),
            ("::1", "[::1]:8443")
        );
        assert!(Target::parse("ftp://example.com/").is_err());
        assert!(Target::parse("http://:80/").is_err());
        assert!(Target::parse("http://a b/").is_err());
        assert!(Target::parse("http://host:99999/").is_err());
        assert!(Target::parse("https://bad_name!/").is_err());
    }

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_ca(&missing).unwrap_err();
        assert!(
            e.contains("alerts.webhook_ca") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = read_ca(&junk).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_ca(&broken).is_err());
    }
}
