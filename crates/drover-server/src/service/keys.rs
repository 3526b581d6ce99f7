//! Token-signing keys (`keystore.manage`).

use base64::Engine as _;
use drover_core::rbac::Privilege;
use drover_core::{Error, Result};
use drover_types::{KeyImport, SigningKey};
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

/// What importing a key from a keystore did: the key, and the certificate it came with.
pub struct Imported {
    pub kid: String,
    pub alg: String,
    pub active: bool,
    /// The certificate's subject and last day (Unix seconds), when the entry has one.
    pub subject: Option<String>,
    pub not_after: Option<i64>,
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
    let leaf = certs.first();
    let (subject, not_after) = (leaf.map(|c| c.subject.clone()), leaf.map(|c| c.not_after));
    let pkcs8_base64 = base64::engine::general_purpose::STANDARD.encode(key.pkcs8_der());
    let v = import(c, KeyImport { pkcs8_base64, activate, alg: alg.map(String::from) }).await?;
    Ok(Imported {
        kid: v["kid"].as_str().unwrap_or_default().to_string(),
        alg: v["alg"].as_str().unwrap_or_default().to_string(),
        active: activate,
        subject,
        not_after,
    })
}

/// Keystore files parsed at once (each can cost a million PBKDF rounds per bag).
static KEYSTORE_PARSING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// A key someone brings signs tokens for anyone: importing one needs every privilege (the
/// grant ceiling), not only `keystore.manage`.
pub async fn import(c: &Ctx<'_>, k: KeyImport) -> Result<serde_json::Value> {
    c.require(Privilege::KeystoreManage)?;
    c.within_ceiling(Privilege::ALL, "a signing key you bring (it can sign tokens with any role)")?;
    let s = c.state;
    let der = base64::engine::general_purpose::STANDARD
        .decode(k.pkcs8_base64.trim())
        .map_err(|_| Error::BadRequest("pkcs8_base64 is not base64".into()))?;
    let alg = parse_alg(k.alg.as_deref())?;
    let (kid, alg) = s.keys.import(s.store.as_ref(), &der, alg, k.activate).await.map_err(key_error)?;
    tracing::info!(kid = %kid, alg = alg.as_str(), by = %c.label(), "signing key imported");
    Ok(json!({"kid": kid, "alg": alg.as_str(), "active": k.activate}))
}
