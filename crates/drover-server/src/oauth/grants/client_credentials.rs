//! `client_credentials` (RFC 6749 §4.4): a confidential client gets a token for itself.

use drover_core::store::ClientRecord;

use super::scope_within;
use crate::AppState;
use crate::oauth::client_auth::TokenForm;
use crate::oauth::error::OAuthError;
use crate::oauth::sessions::{TokenSet, issue_access_token};

pub(crate) async fn grant(
    s: &AppState,
    client: &ClientRecord,
    form: &TokenForm,
    source: &str,
) -> Result<TokenSet, OAuthError> {
    if client.metadata.public {
        return Err(OAuthError::bad("unauthorized_client", "a public client cannot use client_credentials"));
    }
    let roles = scope_within(form.scope.as_deref(), &client.roles)?;
    let tokens = issue_access_token(s, client, roles, None, None)?;
    let c = &tokens.claims;
    let detail = serde_json::json!({"grant": "client_credentials", "jti": c.jti, "scope": c.scope});
    let principal = format!("client:{}", client.client_id);
    let e = crate::oauth::event(principal, "token.issued", &client.client_id, "success", source, detail);
    // The token is handed out only once its issue is on record.
    s.audit_sink.record(e).await.map_err(|_| OAuthError::unavailable("the audit log cannot be written"))?;
    Ok(tokens)
}
