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

pub async fn import(c: &Ctx<'_>, k: KeyImport) -> Result<serde_json::Value> {
    c.require(Privilege::KeystoreManage)?;
    let s = c.state;
    let der = base64::engine::general_purpose::STANDARD
        .decode(k.pkcs8_base64.trim())
        .map_err(|_| Error::BadRequest("pkcs8_base64 is not base64".into()))?;
    let alg = parse_alg(k.alg.as_deref())?;
    let (kid, alg) = s.keys.import(s.store.as_ref(), &der, alg, k.activate).await.map_err(key_error)?;
    tracing::info!(kid = %kid, alg = alg.as_str(), by = %c.label(), "signing key imported");
    Ok(json!({"kid": kid, "alg": alg.as_str(), "active": k.activate}))
}
