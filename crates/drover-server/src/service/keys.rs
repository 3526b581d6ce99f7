//! Token-signing keys (`keystore.manage`).

use base64::Engine as _;
use drover_core::rbac::Privilege;
use drover_core::{Error, Result};
use drover_types::{KeyCertificate, KeyImport, SigningKey};
use serde_json::json;

use super::Ctx;
use crate::oauth::jwt::Alg;
use crate::oauth::keys::KeyError;

fn key_error(e: KeyError) -> Error {
    match e {
        KeyError::Store(e) => e,
        KeyError::Key(m) => Error::Invalid(m),
        other => Error::Store(other.to_string()),
    }
}

fn parse_alg(a: Option<&str>) -> Result<Option<Alg>> {
    a.map(|a| {
        Alg::parse(a).ok_or_else(|| Error::BadRequest(format!("unknown algorithm {a:?}; ES256, EdDSA, RS256 or PS256")))
    })
    .transpose()
}

pub async fn list(c: &Ctx<'_>) -> Result<Vec<SigningKey>> {
    c.require(Privilege::KeystoreManage)?;
    let published = c.state.keys.jwks();
    let in_jwks = |kid: &str| published["keys"].as_array().is_some_and(|a| a.iter().any(|k| k["kid"] == kid));
    Ok(c.state
        .store
        .list_signing_keys()
        .await?
        .into_iter()
        .map(|k| SigningKey {
            in_jwks: in_jwks(&k.kid),
            kid: k.kid,
            alg: k.alg,
            active: k.active,
            created_at: k.created_at,
            retired_at: k.retired_at,
            certificate: k
                .cert_subject
                .zip(k.cert_not_after)
                .map(|(subject, not_after)| KeyCertificate { subject, not_after }),
        })
        .collect())
}

/// A new active key; default algorithm: that of the key it replaces.
pub async fn rotate(c: &Ctx<'_>, alg: Option<&str>) -> Result<serde_json::Value> {
    c.require(Privilege::KeystoreManage)?;
    let s = c.state;
    let alg = parse_alg(alg)?.or(s.keys.active_alg()).unwrap_or(Alg::ES256);
    let kid = s.keys.rotate(s.store.as_ref(), alg).await.map_err(key_error)?;
    tracing::info!(kid = %kid, alg = alg.as_str(), by = %c.label(), "signing key rotated");
    Ok(json!({"kid": kid, "alg": alg.as_str(), "active": true}))
}

/// What importing a key did: the key, and the certificate kept with it.
pub struct Imported {
    pub kid: String,
    pub alg: String,
    pub active: bool,
    /// The certificate of the keystore entry that is this key's, when there is one.
    pub certificate: Option<KeyCertificate>,
}

impl Imported {
    fn json(&self) -> serde_json::Value {
        json!({"kid": self.kid, "alg": self.alg, "active": self.active, "certificate": self.certificate})
    }
}

/// Certificates sent with a key, at most.
const MAX_CERTIFICATES: usize = 10;

/// The certificate among `certs` whose public key is this private key's: a keystore entry's
/// chain starts with it, but a PEM file may hold certificates in any order, or others'.
fn certificate_for(pkcs8: &[u8], certs: &[drover_keystore::CertInfo]) -> Option<KeyCertificate> {
    let key = crate::oauth::jwt::SigningKey::from_pkcs8(pkcs8, None).ok()?;
    certs.iter().find(|c| c.public_key_bits == key.public_key_bytes()).map(|c| KeyCertificate {
        subject: c.subject.clone(),
        not_after: drover_types::Timestamp(c.not_after.saturating_mul(1000)),
    })
}

/// Imports the private key of `alias` from a keystore file (PKCS#12, JKS or PEM) opened with
/// `password`, as `drover keys import` does on the operator's machine. What went wrong (wrong
/// password, no such alias, a damaged file, an unsupported key) is said as the CLI says it; the
/// password is never logged.
pub async fn import_keystore(
    c: &Ctx<'_>,
    file: &[u8],
    alias: &str,
    password: Option<&str>,
    alg: Option<&str>,
    activate: bool,
) -> Result<Imported> {
    c.require(Privilege::KeystoreManage)?;
    c.within_ceiling(Privilege::ALL, "a signing key you bring (it can sign tokens with any role)")?;
    if file.is_empty() {
        return Err(Error::BadRequest("choose a keystore file".into()));
    }
    // Off the async workers, one at a time, and bounded in time.
    let _permit = KEYSTORE_PARSING.acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
    let (bytes, pw) = (file.to_vec(), password.map(String::from));
    let parse = tokio::task::spawn_blocking(move || match drover_keystore::open(&bytes, pw.as_deref()) {
        // A PKCS#12 file with an empty password, sent without one.
        Err(e) if pw.is_none() => drover_keystore::open(&bytes, Some("")).map_err(|_| e),
        r => r,
    });
    let ks = match tokio::time::timeout(std::time::Duration::from_secs(30), parse).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err(Error::Store(format!("keystore parsing: {e}"))),
        Err(_) => return Err(Error::Invalid("the keystore took too long to open; it cannot be used".into())),
    }
    .map_err(|e| {
        tracing::warn!(error = %e, by = %c.label(), "keystore upload refused");
        Error::Invalid(format!("the keystore could not be read: {e}"))
    })?;
    let (key, certs) = ks.signing_key(alias.trim()).map_err(|e| Error::Invalid(e.to_string()))?;
    import_der(c, key.pkcs8_der(), certs, parse_alg(alg)?, activate).await
}

/// Keystore files parsed at once (each can cost a million PBKDF rounds per bag).
static KEYSTORE_PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A key someone brings signs tokens for anyone: importing one needs every privilege (the
/// grant ceiling), not only `keystore.manage`.
pub async fn import(c: &Ctx<'_>, k: KeyImport) -> Result<serde_json::Value> {
    c.require(Privilege::KeystoreManage)?;
    c.within_ceiling(Privilege::ALL, "a signing key you bring (it can sign tokens with any role)")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let der = b64.decode(k.pkcs8_base64.trim()).map_err(|_| Error::BadRequest("pkcs8_base64 is not base64".into()))?;
    if k.certificates_der_base64.len() > MAX_CERTIFICATES {
        return Err(Error::BadRequest(format!("at most {MAX_CERTIFICATES} certificates")));
    }
    let mut certs = Vec::with_capacity(k.certificates_der_base64.len());
    for (i, c) in k.certificates_der_base64.iter().enumerate() {
        let bad = || Error::BadRequest(format!("certificates_der_base64[{i}] is not a base64 DER X.509 certificate"));
        let der = b64.decode(c.trim()).map_err(|_| bad())?;
        certs.push(drover_keystore::certificate(&der).map_err(|_| bad())?);
    }
    let alg = parse_alg(k.alg.as_deref())?;
    Ok(import_der(c, &der, &certs, alg, k.activate).await?.json())
}

/// Stores the key and the certificate that is its own. Its callers have checked
/// `keystore.manage` and the grant ceiling: it checks nothing itself.
async fn import_der(
    c: &Ctx<'_>,
    pkcs8: &[u8],
    certs: &[drover_keystore::CertInfo],
    alg: Option<Alg>,
    activate: bool,
) -> Result<Imported> {
    let s = c.state;
    let certificate = certificate_for(pkcs8, certs);
    let (kid, alg) =
        s.keys.import(s.store.as_ref(), pkcs8, alg, activate, certificate.as_ref()).await.map_err(key_error)?;
    tracing::info!(kid = %kid, alg = alg.as_str(), by = %c.label(), certificate = certificate.is_some(), "signing key imported");
    Ok(Imported { kid, alg: alg.as_str().into(), active: activate, certificate })
}
