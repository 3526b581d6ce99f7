//! TLS for Drover: the orchestrator's internal CA and server certificate (created on first
//! start under `DATA_DIR/tls/`), and rustls configurations (TLS 1.2 and 1.3 only, aws-lc-rs).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: not a valid PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// The one crypto provider Drover uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Paths of the orchestrator's PKI under `DATA_DIR/tls`.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }
    fn server_names(&self) -> PathBuf {
        self.dir.join("server.names")
    }

    /// Creates the CA (once) and a server certificate for `names` (again whenever the names
    /// change). Private keys are written with mode 0600.
    pub fn ensure(data_dir: &Path, names: &[String]) -> Result<Pki> {
        let pki = Pki { dir: data_dir.join("tls") };
        fs::create_dir_all(&pki.dir).map_err(io(&pki.dir))?;
        if !pki.ca_cert().exists() || !pki.ca_key().exists() {
            let key = KeyPair::generate()?;
            let cert = ca_params().self_signed(&key)?;
            write_private(&pki.ca_key(), key.serialize_pem().as_bytes())?;
            fs::write(pki.ca_cert(), cert.pem()).map_err(io(&pki.ca_cert()))?;
            let _ = fs::remove_file(pki.server_cert());
        }
        let mut names: Vec<String> = names.to_vec();
        for n in ["localhost", "127.0.0.1", "::1"] {
            if !names.iter().any(|x| x == n) {
                names.push(n.to_string());
            }
        }
        names.sort();
        names.dedup();
        let wanted = names.join("\n");
        let current = fs::read_to_string(pki.server_names()).unwrap_or_default();
        if current != wanted || !pki.server_cert().exists() || !pki.server_key().exists() {
            let ca_key_pem = fs::read_to_string(pki.ca_key()).map_err(io(&pki.ca_key()))?;
            let ca_key =
                KeyPair::from_pem(&ca_key_pem).map_err(|_| Error::Pem { path: pki.ca_key(), what: "private key" })?;
            let issuer = Issuer::new(ca_params(), ca_key);
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(names.clone())?;
            params.distinguished_name = dn("Drover orchestrator");
            params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
            params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(397);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            let cert = params.signed_by(&key, &issuer)?;
            write_private(&pki.server_key(), key.serialize_pem().as_bytes())?;
            let chain = format!("{}{}", cert.pem(), fs::read_to_string(pki.ca_cert()).map_err(io(&pki.ca_cert()))?);
            fs::write(pki.server_cert(), chain).map_err(io(&pki.server_cert()))?;
            fs::write(pki.server_names(), wanted).map_err(io(&pki.server_names()))?;
        }
        Ok(pki)
    }

    /// rustls server configuration with the server certificate (HTTP/1.1 via ALPN).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let certs = read_certs(&self.server_cert())?;
        let key = PrivateKeyDer::from_pem_file(self.server_key())
            .map_err(|_| Error::Pem { path: self.server_key(), what: "private key" })?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// SHA-256 fingerprint (hex) of the CA certificate, for out-of-band verification.
    pub fn ca_fingerprint(&self) -> Result<String> {
        let certs = read_certs(&self.ca_cert())?;
        Ok(hex::encode(Sha256::digest(certs[0].as_ref())))
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Drover");
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn("Drover internal CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time::OffsetDateTime::from_unix_timestamp(1_735_689_600).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    p.not_after = time::OffsetDateTime::from_unix_timestamp(2_524_608_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    p
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|_| Error::Pem { path: path.to_path_buf(), what: "certificate" })?
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| Error::Pem { path: path.to_path_buf(), what: "certificate" })?;
    if certs.is_empty() {
        return Err(Error::Pem { path: path.to_path_buf(), what: "certificate" });
    }
    Ok(certs)
}

/// rustls client configuration trusting only the CA certificates in `ca_pem_path`.
pub fn client_config(ca_pem_path: &Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca_pem_path)? {
        roots.add(c)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration that trusts nothing (for clients that must not use TLS by accident).
pub fn empty_client_config() -> Result<rustls::ClientConfig> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reissues_server_cert_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::ensure(dir.path(), &[]).unwrap();
        let ca1 = fs::read(pki.ca_cert()).unwrap();
        let srv1 = fs::read(pki.server_cert()).unwrap();
        let mode = fs::metadata(pki.dir.join("ca-key.pem")).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let pki = Pki::ensure(dir.path(), &[]).unwrap();
        assert_eq!(fs::read(pki.server_cert()).unwrap(), srv1, "unchanged names keep the certificate");
        let pki = Pki::ensure(dir.path(), &["drover.example".into()]).unwrap();
        assert_ne!(fs::read(pki.server_cert()).unwrap(), srv1);
        assert_eq!(fs::read(pki.ca_cert()).unwrap(), ca1, "the CA is never replaced");
        pki.server_config().unwrap();
        client_config(&pki.ca_cert()).unwrap();
        assert_eq!(pki.ca_fingerprint().unwrap().len(), 64);
    }
}
