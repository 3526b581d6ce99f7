//! `refresh_token` (RFC 6749 §6), rotated on every use with reuse detection (RFC 9700 §4.14):
//! a spent refresh token presented again — or one lost in a race to spend it — revokes its
//! whole login session.

use drover_core::store::ClientRecord;
use drover_types::Timestamp;

use super::scope_within;
use crate::AppState;
use crate::oauth::client_auth::TokenForm;
use crate::oauth::error::OAuthError;
use crate::oauth::sessions::{self, Family, RefreshRec, SESSION_MAX, TokenSet};
use crate::secrets::secret_hash;

/// The session of a reused refresh token ends, and the reuse is audited.
async fn reused(s: &AppState, rec: &RefreshRec) -> OAuthError {
    tracing::warn!(client = %rec.client_id, operator = %rec.operator, session = %rec.family, "spent refresh token presented again: session revoked");
    if let Err(e) = sessions::revoke_family(s, &rec.family).await {
        return OAuthError::unavailable(e);
    }
    let _ = crate::oauth::audit(
        s,
        format!("operator:{} via client:{}", rec.operator, rec.client_id),
        "token.refresh_reused",
        &rec.client_id,
        "denied",
        "",
        serde_json::json!({"session": rec.family}),
    )
    .await;
    OAuthError::invalid_grant("refresh token already used; the login session is revoked")
}

pub(crate) async fn grant(
    s: &AppState,
    client: &ClientRecord,
    form: &TokenForm,
    source: &str,
) -> Result<TokenSet, OAuthError> {
    let Some(token) = form.refresh_token.as_deref() else {
        return Err(OAuthError::invalid_request("refresh_token is required"));
    };
    let key = secret_hash(token);
    let (body, version) = s
        .store
        .record_get("refresh", &key)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("invalid or expired refresh token"))?;
    let mut rec: RefreshRec =
        serde_json::from_str(&body).map_err(|_| OAuthError::invalid_grant("invalid refresh token"))?;
    if rec.client_id != client.client_id {
        tracing::warn!(client = %client.client_id, "refresh token of another client presented");
        return Err(OAuthError::invalid_grant("invalid or expired refresh token"));
    }
    let family: Family = match s.store.record_get("refresh_family", &rec.family).await? {
        Some((b, _)) => serde_json::from_str(&b).map_err(|_| OAuthError::invalid_grant("invalid refresh token"))?,
        None => return Err(OAuthError::invalid_grant("the login session has ended")),
    };
    if family.revoked {
        return Err(OAuthError::invalid_grant("the login session was revoked"));
    }
    if rec.spent {
        return Err(reused(s, &rec).await);
    }
    let roles = scope_within(form.scope.as_deref(), &rec.roles)?;
    rec.spent = true;
    let keep = Some(Timestamp(family.created_ms).plus(SESSION_MAX));
    let body = serde_json::to_string(&rec).map_err(OAuthError::server_error)?;
    if !s.store.record_update("refresh", &key, version, &body, keep).await? {
        // Someone else spent it at the same moment: that is reuse too.
        return Err(reused(s, &rec).await);
    }
    sessions::live_operator(s, &rec.operator, family.created_ms).await?;
    let tokens = sessions::issue_pair(
        s,
        client,
        &rec.operator,
        roles,
        &rec.family,
        Timestamp(family.created_ms).plus(SESSION_MAX),
    )
    .await?;
    sessions::audit_issued(s, &rec.client_id, &rec.operator, "refresh_token", &rec.family, &tokens.claims.jti, source)
        .await?;
    Ok(tokens)
}
