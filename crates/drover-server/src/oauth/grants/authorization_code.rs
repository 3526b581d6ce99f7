//! `authorization_code` with PKCE (RFC 6749 §4.1, RFC 7636 S256 only): the code the sign-in
//! page issued (`oauth::pages::authorize`) is exchanged once, by the client it was issued to,
//! with the redirect URI it was issued for and the verifier of its challenge.

use std::time::Duration;

use base64::Engine as _;
use drover_core::store::ClientRecord;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::oauth::client_auth::TokenForm;
use crate::oauth::error::OAuthError;
use crate::oauth::sessions::{TokenSet, new_session};
use crate::secrets::secret_hash;

pub const CODE_TTL: Duration = Duration::from_secs(60);
const KIND: &str = "authz_code";

/// What a code stands for (stored under the SHA-256 of the code, single use, 60 s).
#[derive(Serialize, Deserialize)]
pub(crate) struct AuthzCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: String,
    pub operator: String,
    pub roles: Vec<String>,
    /// When the operator signed in: a session revocation after it voids the code.
    pub issued_ms: i64,
}

/// Stores a new code; returns it.
pub(crate) async fn issue(s: &AppState, rec: &AuthzCode) -> drover_core::Result<Option<String>> {
    let code = hex::encode(rand::random::<[u8; 32]>());
    let body = serde_json::to_string(rec).map_err(|e| drover_core::Error::Store(e.to_string()))?;
    let stored = s.store.record_insert(KIND, &secret_hash(&code), &body, Some(Timestamp::now().plus(CODE_TTL))).await?;
    Ok(stored.then_some(code))
}

fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into()
}

pub(crate) async fn grant(s: &AppState, client: &ClientRecord, form: &TokenForm) -> Result<TokenSet, OAuthError> {
    let (Some(code), Some(uri)) = (form.code.as_deref(), form.redirect_uri.as_deref()) else {
        return Err(OAuthError::invalid_request("code and redirect_uri are required"));
    };
    let Some(verifier) = form.code_verifier.as_deref() else {
        return Err(OAuthError::invalid_request("code_verifier is required (PKCE)"));
    };
    // Taken whatever happens next: a code is tried once.
    let body = s
        .store
        .record_take(KIND, &secret_hash(code))
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("invalid, expired or used authorization code"))?;
    let rec: AuthzCode =
        serde_json::from_str(&body).map_err(|_| OAuthError::invalid_grant("invalid authorization code"))?;
    if rec.client_id != client.client_id {
        tracing::warn!(client = %client.client_id, "authorization code issued to another client");
        return Err(OAuthError::invalid_grant("invalid authorization code"));
    }
    if rec.redirect_uri != uri {
        return Err(OAuthError::invalid_grant("redirect_uri differs from the authorization request"));
    }
    if !pkce_ok(verifier, &rec.challenge) {
        tracing::warn!(client = %client.client_id, operator = %rec.operator, "PKCE verification failed");
        return Err(OAuthError::invalid_grant("PKCE verification failed"));
    }
    new_session(s, client, &rec.operator, rec.roles, "authorization_code", rec.issued_ms).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_ok(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }
}
