//! Keystores: PKCS#12 (`.p12`/`.pfx`, and what modern `keytool` writes even into `.jks`), Java
//! KeyStore (`.jks`, magic `0xFEEDFEED`) and PEM. The format is detected from the bytes, never
//! from the file name. Entries are found by alias and unlocked by password.
//!
//! Errors are distinct (wrong password, missing alias, unsupported key type, corrupt file) and
//! never contain key material; private keys are held in [`PrivateKey`], whose `Debug` is redacted.

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("wrong keystore password")]
    WrongPassword,
    #[error("a password is needed to open this {0} keystore")]
    PasswordRequired(Format),
    #[error("no entry with alias {alias:?}; the keystore has: {}", available.join(", "))]
    MissingAlias { alias: String, available: Vec<String> },
    #[error("entry {alias:?} holds no private key (a trusted certificate only)")]
    NoPrivateKey { alias: String },
    #[error("unsupported key type {kind} in entry {alias:?}; use an EC P-256, Ed25519 or RSA key")]
    UnsupportedKeyType { alias: String, kind: String },
    #[error("unsupported keystore format: {0}")]
    UnsupportedFormat(String),
    #[error("corrupt or unreadable {format} keystore: {reason}")]
    Corrupt { format: String, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pkcs12,
    Jks,
    Pem,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Pkcs12 => "PKCS#12",
            Format::Jks => "JKS",
            Format::Pem => "PEM",
        })
    }
}

/// The type of a private key, from its PKCS#8 algorithm identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyType {
    EcP256,
    EcP384,
    Ed25519,
    Rsa,
    /// Anything else (DSA, other curves...), by algorithm name or OID.
    Unsupported(String),
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcP256 => f.write_str("EC P-256"),
            KeyType::EcP384 => f.write_str("EC P-384"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
            KeyType::Rsa => f.write_str("RSA"),
            KeyType::Unsupported(s) => write!(f, "{s} (unsupported)"),
        }
    }
}

/// A PKCS#8 private key. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey {
    pub kind: KeyType,
    pkcs8: Vec<u8>,
}

impl PrivateKey {
    /// The PKCS#8 DER bytes. Handle with care: never log them.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.kind)
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.pkcs8.iter_mut().for_each(|b| *b = 0);
    }
}

/// What `keystore inspect` shows about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Public key algorithm and size, e.g. `EC P-256`, `RSA 2048`.
    pub public_key: String,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The subject public key (the SPKI's bit string: an EC point, an Ed25519 key, a DER
    /// RSAPublicKey), to tell which private key the certificate is for.
    #[serde(skip)]
    pub public_key_bits: Vec<u8>,
}

/// Reads one DER certificate.
pub fn certificate(der: &[u8]) -> Result<CertInfo> {
    cert_info(der).map_err(|reason| Error::Corrupt { format: "X.509 certificate".into(), reason })
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub alias: String,
    pub key: Option<PrivateKey>,
    /// The certificate chain (leaf first), or the trusted certificate.
    pub certs: Vec<CertInfo>,
}

#[derive(Debug, Clone)]
pub struct Keystore {
    pub format: Format,
    pub entries: Vec<Entry>,
}

/// JKS and JCEKS magic numbers.
const JKS_MAGIC: [u8; 4] = [0xFE, 0xED, 0xFE, 0xED];
const JCEKS_MAGIC: [u8; 4] = [0xCE, 0xCE, 0xCE, 0xCE];

/// Detects the format from the first bytes.
pub fn detect(bytes: &[u8]) -> Result<Format> {
    if bytes.starts_with(&JKS_MAGIC) {
        return Ok(Format::Jks);
    }
    if bytes.starts_with(&JCEKS_MAGIC) {
        return Err(Error::UnsupportedFormat(
            "JCEKS; convert it: keytool -importkeystore -srcstoretype JCEKS -deststoretype PKCS12".into(),
        ));
    }
    let text_start = bytes.iter().skip_while(|b| b.is_ascii_whitespace()).take(10).copied().collect::<Vec<_>>();
    if text_start.starts_with(b"-----BEGIN") {
        return Ok(Format::Pem);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(Format::Pkcs12);
    }
    Err(Error::UnsupportedFormat("not PKCS#12, JKS or PEM".into()))
}

/// Opens a keystore. `password` may be `None` only for PEM without encryption.
pub fn open(bytes: &[u8], password: Option<&str>) -> Result<Keystore> {
    let format = detect(bytes)?;
    let entries = match format {
        Format::Pem => open_pem(bytes)?,
        Format::Jks => open_jks(bytes, password.ok_or(Error::PasswordRequired(format))?)?,
        Format::Pkcs12 => open_pkcs12(bytes, password.ok_or(Error::PasswordRequired(format))?)?,
    };
    Ok(Keystore { format, entries })
}

impl Keystore {
    pub fn aliases(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.alias.clone()).collect()
    }

    pub fn entry(&self, alias: &str) -> Result<&Entry> {
        self.entries
            .iter()
            .find(|e| e.alias == alias)
            .ok_or_else(|| Error::MissingAlias { alias: alias.to_string(), available: self.aliases() })
    }

    /// The private key under `alias`, if it is of a type Drover can sign with.
    pub fn signing_key(&self, alias: &str) -> Result<(&PrivateKey, &[CertInfo])> {
        let e = self.entry(alias)?;
        let key = e.key.as_ref().ok_or_else(|| Error::NoPrivateKey { alias: alias.to_string() })?;
        if let KeyType::Unsupported(kind) = &key.kind {
            return Err(Error::UnsupportedKeyType { alias: alias.to_string(), kind: kind.clone() });
        }
        Ok((key, &e.certs))
    }
}

fn corrupt(format: Format, reason: impl fmt::Display) -> Error {
    Error::Corrupt { format: format.to_string(), reason: reason.to_string() }
}

fn open_pem(bytes: &[u8]) -> Result<Vec<Entry>> {
    let text = String::from_utf8_lossy(bytes);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(Error::UnsupportedFormat(
            "encrypted PEM private key; use a PKCS#12 file instead (openssl pkcs12 -export)".into(),
        ));
    }
    let mut certs = Vec::new();
    for c in CertificateDer::pem_slice_iter(bytes) {
        let c = c.map_err(|e| corrupt(Format::Pem, e))?;
        certs.push(cert_info(c.as_ref()).map_err(|e| corrupt(Format::Pem, e))?);
    }
    let key = match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(PrivateKeyDer::Pkcs8(k)) => Some(private_key(k.secret_pkcs8_der().to_vec())),
        Ok(PrivateKeyDer::Sec1(_)) => {
            return Err(Error::UnsupportedFormat(
                "SEC1 EC key (BEGIN EC PRIVATE KEY); convert it to PKCS#8: openssl pkcs8 -topk8 -nocrypt".into(),
            ));
        }
        Ok(PrivateKeyDer::Pkcs1(_)) => {
            return Err(Error::UnsupportedFormat(
                "PKCS#1 RSA key (BEGIN RSA PRIVATE KEY); convert it to PKCS#8: openssl pkcs8 -topk8 -nocrypt".into(),
            ));
        }
        Ok(_) => return Err(Error::UnsupportedFormat("unknown PEM private key kind".into())),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => None,
        Err(e) => return Err(corrupt(Format::Pem, e)),
    };
    if key.is_none() && certs.is_empty() {
        return Err(corrupt(Format::Pem, "no certificate or private key found"));
    }
    Ok(vec![Entry { alias: "pem".into(), key, certs }])
}

fn open_jks(bytes: &[u8], password: &str) -> Result<Vec<Entry>> {
    let mut ks = jks::KeyStore::new();
    ks.load(bytes, password.as_bytes()).map_err(|e| match e {
        jks::KeyStoreError::InvalidDigest => Error::WrongPassword,
        other => corrupt(Format::Jks, other),
    })?;
    let mut aliases = ks.aliases();
    aliases.sort();
    let mut out = Vec::new();
    for alias in aliases {
        if ks.is_private_key_entry(&alias) {
            let e = ks.get_private_key_entry(&alias, password.as_bytes()).map_err(|e| match e {
                // The store opened with this password; a key that does not decrypt has its own.
                jks::KeyStoreError::InvalidDigest => Error::WrongPassword,
                other => corrupt(Format::Jks, other),
            })?;
            let certs = e
                .certificate_chain
                .iter()
                .map(|c| cert_info(&c.content))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| corrupt(Format::Jks, e))?;
            out.push(Entry { alias, key: Some(private_key(e.private_key.clone())), certs });
        } else if ks.is_trusted_certificate_entry(&alias) {
            let t = ks.get_trusted_certificate_entry(&alias).map_err(|e| corrupt(Format::Jks, e))?;
            let certs = vec![cert_info(&t.certificate.content).map_err(|e| corrupt(Format::Jks, e))?];
            out.push(Entry { alias, key: None, certs });
        }
    }
    Ok(out)
}

fn open_pkcs12(bytes: &[u8], password: &str) -> Result<Vec<Entry>> {
    let ks = p12_keystore::KeyStore::from_pkcs12(bytes, password, p12_keystore::Pkcs12ImportPolicy::Relaxed).map_err(
        |e| match e {
            p12_keystore::error::Error::MacError(_) => Error::WrongPassword,
            other => corrupt(Format::Pkcs12, other),
        },
    )?;
    let mut out = Vec::new();
    for (alias, entry) in ks.entries() {
        match entry {
            p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                let certs = chain
                    .certs()
                    .iter()
                    .map(|c| cert_info(c.as_der()))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| corrupt(Format::Pkcs12, e))?;
                out.push(Entry { alias: alias.clone(), key: Some(private_key(chain.key().as_der().to_vec())), certs });
            }
            p12_keystore::KeyStoreEntry::Certificate(c) => {
                let certs = vec![cert_info(c.as_der()).map_err(|e| corrupt(Format::Pkcs12, e))?];
                out.push(Entry { alias: alias.clone(), key: None, certs });
            }
            p12_keystore::KeyStoreEntry::Secret(_) => {}
        }
    }
    Ok(out)
}

// DER encodings of the algorithm OIDs that matter.
const OID_RSA: &[u8] = &[0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2B, 0x65, 0x70];
const OID_DSA: &[u8] = &[0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x38, 0x04, 0x01];

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Classifies a PKCS#8 key by the algorithm identifier at its start.
pub fn key_type(pkcs8: &[u8]) -> KeyType {
    // PrivateKeyInfo: SEQUENCE { version, AlgorithmIdentifier, ... }: the identifier sits in the
    // first few dozen bytes.
    let head = &pkcs8[..pkcs8.len().min(48)];
    if contains(head, OID_ED25519) {
        KeyType::Ed25519
    } else if contains(head, OID_EC) {
        if contains(head, OID_P256) {
            KeyType::EcP256
        } else if contains(head, OID_P384) {
            KeyType::EcP384
        } else {
            KeyType::Unsupported("EC (other curve)".into())
        }
    } else if contains(head, OID_RSA) {
        KeyType::Rsa
    } else if contains(head, OID_DSA) {
        KeyType::Unsupported("DSA".into())
    } else {
        KeyType::Unsupported("unknown algorithm".into())
    }
}

fn private_key(pkcs8: Vec<u8>) -> PrivateKey {
    PrivateKey { kind: key_type(&pkcs8), pkcs8 }
}

fn cert_info(der: &[u8]) -> std::result::Result<CertInfo, String> {
    let (_, c) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("certificate: {e}"))?;
    let spki = c.public_key();
    let public_key = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(r)) => format!("RSA {}", r.key_size()),
        Ok(x509_parser::public_key::PublicKey::EC(p)) => match p.key_size() {
            256 => "EC P-256".to_string(),
            384 => "EC P-384".to_string(),
            n => format!("EC {n}-bit"),
        },
        Ok(x509_parser::public_key::PublicKey::DSA(_)) => "DSA".to_string(),
        Ok(_) if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => "Ed25519".to_string(),
        _ => spki.algorithm.algorithm.to_id_string(),
    };
    Ok(CertInfo {
        subject: c.subject().to_string(),
        issuer: c.issuer().to_string(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        public_key,
        sha256: hex::encode(Sha256::digest(der)),
        der: der.to_vec(),
        public_key_bits: spki.subject_public_key.data.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_uses_bytes() {
        assert_eq!(detect(&[0xFE, 0xED, 0xFE, 0xED, 0, 0]).unwrap(), Format::Jks);
        assert_eq!(detect(b"\n-----BEGIN CERTIFICATE-----").unwrap(), Format::Pem);
        assert_eq!(detect(&[0x30, 0x82, 0x01]).unwrap(), Format::Pkcs12);
        assert!(matches!(detect(&[0xCE, 0xCE, 0xCE, 0xCE]), Err(Error::UnsupportedFormat(m)) if m.contains("JCEKS")));
        assert!(matches!(detect(b"hello"), Err(Error::UnsupportedFormat(_))));
        assert!(matches!(detect(b""), Err(Error::UnsupportedFormat(_))));
    }

    #[test]
    fn corrupt_files_are_named_as_such() {
        let mut jks = JKS_MAGIC.to_vec();
        jks.extend_from_slice(&[0, 0, 0, 2, 0, 0]);
        assert!(matches!(open(&jks, Some("pw")), Err(Error::Corrupt { .. })));
        assert!(matches!(open(&[0x30, 0x03, 0x02, 0x01, 0x03], Some("pw")), Err(Error::Corrupt { .. })));
        let bad_pem = open(b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", None);
        assert!(matches!(bad_pem, Err(Error::Corrupt { .. })), "{bad_pem:?}");
        assert_eq!(open(&[0x30, 0x00], None).unwrap_err(), Error::PasswordRequired(Format::Pkcs12));
    }

    #[test]
    fn private_keys_do_not_print() {
        let k = private_key(vec![1, 2, 3]);
        assert_eq!(format!("{k:?}"), "PrivateKey(unknown algorithm (unsupported), <redacted>)");
    }
}
