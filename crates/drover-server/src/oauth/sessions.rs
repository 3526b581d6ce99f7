//! Tokens and operator sessions: signing access tokens, login sessions (refresh-token
//! families) with rotating refresh tokens, and their revocation.
//!
//! State lives in the store's small records, keyed by the SHA-256 of the secret value:
//! - `refresh`: one per refresh token, marked spent by compare-and-swap;
//! - `refresh_family`: a login session; revoked as a whole (its id is also put on the token
//!   deny-list, so access tokens carrying it as `sid` stop working at once);
//! - `operator_sessions`: per-operator not-before (revoke sessions, disable, password change).

use std::time::Duration;

use axum::Json;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use drover_core::store::ClientRecord;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use super::error::OAuthError;
use super::{ACCESS_TOKEN_TTL, AUDIENCE, Actor, CLOCK_SKEW_SECS, Claims};
use crate::AppState;
use crate::secrets::secret_hash;

/// A refresh token is valid this long after it was issued (each use gives a new one)...
pub const REFRESH_TTL: Duration = Duration::from_secs(24 * 3600);
/// ...within a login session of at most this long.
pub const SESSION_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a successful grant returns (RFC 6749 §5.1).
pub struct TokenSet {
    pub access_token: String,
    pub claims: Claims,
    pub refresh_token: Option<String>,
}

impl IntoResponse for TokenSet {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_TTL.as_secs(),
            "scope": self.claims.scope,
        });
        if let Some(r) = self.refresh_token {
            body["refresh_token"] = serde_json::Value::String(r);
        }
        ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response()
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct RefreshRec {
    pub family: String,
    pub client_id: String,
    pub operator: String,
    pub roles: Vec<String>,
    pub spent: bool,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Family {
    pub client_id: String,
    pub operator: String,
    pub created_ms: i64,
    pub revoked: bool,
}

#[derive(Serialize, Deserialize)]
struct OperatorSessions {
    not_before_ms: i64,
}

/// Signs an access token for the client (acting for `operator` when given).
pub(crate) fn issue_access_token(
    s: &AppState,
    client: &ClientRecord,
    roles: Vec<String>,
    operator: Option<&str>,
    sid: Option<&str>,
) -> Result<TokenSet, OAuthError> {
    let now = Timestamp::now();
    let claims = Claims {
        iss: s.issuer.clone(),
        sub: client.client_id.clone(),
        aud: AUDIENCE.into(),
        exp: now.0 / 1000 + ACCESS_TOKEN_TTL.as_secs() as i64,
        iat: now.0 / 1000,
        iat_ms: now.0,
        jti: hex::encode(rand::random::<[u8; 16]>()),
        client_id: client.client_id.clone(),
        scope: roles.join(" "),
        roles,
        act: operator.map(|o| Actor { sub: o.to_string() }),
        sid: sid.map(String::from),
    };
    let token = s.keys.sign(&claims).map_err(OAuthError::server_error)?;
    tracing::debug!(client = %client.client_id, jti = %claims.jti, "access token issued");
    Ok(TokenSet { access_token: token, claims, refresh_token: None })
}

/// Starts a login session (refresh-token family) for an operator, with its first tokens.
/// `authenticated_ms`: when the operator signed in (a session revocation after it voids it).
pub(crate) async fn new_session(
    s: &AppState,
    client: &ClientRecord,
    operator: &str,
    roles: Vec<String>,
    grant: &str,
    authenticated_ms: i64,
) -> Result<TokenSet, OAuthError> {
    let op = match s.store.get_operator(operator).await? {
        Some(op) if !op.disabled => op,
        _ => return Err(OAuthError::invalid_grant("the operator is disabled")),
    };
    // A sign-in from before the operator's sessions were revoked (password change, disable,
    // revoke-sessions) does not start a new session.
    if authenticated_ms <= not_before(s, &op.name).await?.0 {
        return Err(OAuthError::invalid_grant("the sign-in predates a session revocation"));
    }
    let roles: Vec<String> = roles.into_iter().filter(|r| op.roles.contains(r)).collect();
    let family = hex::encode(rand::random::<[u8; 16]>());
    let now = Timestamp::now();
    let fam =
        Family { client_id: client.client_id.clone(), operator: op.name.clone(), created_ms: now.0, revoked: false };
    let body = serde_json::to_string(&fam).map_err(OAuthError::server_error)?;
    s.store.record_insert("refresh_family", &family, &body, Some(now.plus(SESSION_MAX))).await?;
    let tokens = issue_pair(s, client, &op.name, roles, &family, now.plus(SESSION_MAX)).await?;
    audit_issued(s, &client.client_id, &op.name, grant, &family, &tokens.claims.jti, "").await?;
    Ok(tokens)
}

/// An access token and a new refresh token of the session `family`.
pub(crate) async fn issue_pair(
    s: &AppState,
    client: &ClientRecord,
    operator: &str,
    roles: Vec<String>,
    family: &str,
    session_end: Timestamp,
) -> Result<TokenSet, OAuthError> {
    let mut tokens = issue_access_token(s, client, roles.clone(), Some(operator), Some(family))?;
    let refresh = hex::encode(rand::random::<[u8; 32]>());
    let rec = RefreshRec {
        family: family.to_string(),
        client_id: client.client_id.clone(),
        operator: operator.to_string(),
        roles,
        spent: false,
    };
    let until = Timestamp::now().plus(REFRESH_TTL).0.min(session_end.0);
    let body = serde_json::to_string(&rec).map_err(OAuthError::server_error)?;
    s.store.record_insert("refresh", &secret_hash(&refresh), &body, Some(Timestamp(until))).await?;
    tokens.refresh_token = Some(refresh);
    Ok(tokens)
}

/// The operator of a login session begun at `session_created_ms`, if they may still act: enabled,
/// and no session revocation of theirs since (the refresh grant and [`reissue`] both ask).
pub(crate) async fn live_operator(
    s: &AppState,
    operator: &str,
    session_created_ms: i64,
) -> Result<drover_core::store::OperatorRecord, OAuthError> {
    let op = match s.store.get_operator(operator).await? {
        Some(op) if !op.disabled => op,
        _ => return Err(OAuthError::invalid_grant("the operator is disabled")),
    };
    if session_created_ms <= not_before(s, &op.name).await?.0 {
        return Err(OAuthError::invalid_grant("the login session was revoked"));
    }
    Ok(op)
}

/// The audit entry of tokens issued to `client` acting for `operator` in the login session
/// `family` (durable before the tokens are handed out).
pub(crate) async fn audit_issued(
    s: &AppState,
    client: &str,
    operator: &str,
    grant: &str,
    family: &str,
    jti: &str,
    source: &str,
) -> Result<(), OAuthError> {
    super::audit(
        s,
        format!("operator:{operator} via client:{client}"),
        "token.issued",
        client,
        "success",
        source,
        serde_json::json!({"grant": grant, "session": family, "jti": jti}),
    )
    .await
}

/// A new access token of a live login session, for a client inside the orchestrator (the
/// portal) that holds the session itself rather than its refresh token: the same checks as the
/// refresh grant (the session is the client's and not revoked, the operator is enabled and has
/// not had their sessions revoked since it began) without spending anything, so two renewals
/// at once are harmless and a failure half-way leaves nothing to replay.
pub(crate) async fn reissue(
    s: &AppState,
    client: &ClientRecord,
    family: &str,
    roles: Vec<String>,
) -> Result<TokenSet, OAuthError> {
    let fam: Family = match s.store.record_get("refresh_family", family).await? {
        Some((b, _)) => serde_json::from_str(&b).map_err(|_| OAuthError::invalid_grant("unreadable login session"))?,
        None => return Err(OAuthError::invalid_grant("the login session has ended")),
    };
    if fam.revoked || fam.client_id != client.client_id {
        return Err(OAuthError::invalid_grant("the login session was revoked"));
    }
    let op = live_operator(s, &fam.operator, fam.created_ms).await?;
    let roles: Vec<String> = roles.into_iter().filter(|r| op.roles.contains(r)).collect();
    let tokens = issue_access_token(s, client, roles, Some(&op.name), Some(family))?;
    audit_issued(s, &client.client_id, &op.name, "session_renewal", family, &tokens.claims.jti, "").await?;
    Ok(tokens)
}

/// Ends a login session: no refresh token of the family works again, nor any access token
/// that carries it.
pub(crate) async fn revoke_family(s: &AppState, family: &str) -> drover_core::Result<()> {
    for _ in 0..5 {
        let Some((body, v)) = s.store.record_get("refresh_family", family).await? else { break };
        let Ok(mut f) = serde_json::from_str::<Family>(&body) else { break };
        if f.revoked {
            break;
        }
        f.revoked = true;
        let until = Timestamp(f.created_ms).plus(SESSION_MAX);
        if s.store
            .record_update("refresh_family", family, v, &serde_json::to_string(&f).unwrap_or_default(), Some(until))
            .await?
        {
            break;
        }
    }
    let deny_until = Timestamp::now().plus(ACCESS_TOKEN_TTL + Duration::from_secs(CLOCK_SKEW_SECS + 1));
    s.store.revoke_token(family, deny_until).await
}

/// RFC 7009 for refresh tokens: the session of a refresh token the client holds ends.
pub(crate) async fn revoke_refresh(s: &AppState, client: &ClientRecord, token: &str) -> drover_core::Result<()> {
    let Some((body, _)) = s.store.record_get("refresh", &secret_hash(token)).await? else { return Ok(()) };
    let Ok(rec) = serde_json::from_str::<RefreshRec>(&body) else { return Ok(()) };
    if rec.client_id == client.client_id {
        revoke_family(s, &rec.family).await?;
        tracing::info!(client = %client.client_id, operator = %rec.operator, "login session revoked");
    }
    Ok(())
}

/// Tokens acting for the operator issued before this instant are refused.
pub async fn not_before(s: &AppState, operator: &str) -> drover_core::Result<Timestamp> {
    Ok(match s.store.record_get("operator_sessions", operator).await? {
        Some((b, _)) => {
            Timestamp(serde_json::from_str::<OperatorSessions>(&b).map(|x| x.not_before_ms).unwrap_or(i64::MAX))
        }
        None => Timestamp(0),
    })
}

/// Ends every session of an operator now: their access and refresh tokens stop working.
pub async fn revoke_sessions(s: &AppState, operator: &str) -> drover_core::Result<()> {
    let body = serde_json::to_string(&OperatorSessions { not_before_ms: Timestamp::now().0 }).unwrap_or_default();
    for _ in 0..5 {
        match s.store.record_get("operator_sessions", operator).await? {
            None if s.store.record_insert("operator_sessions", operator, &body, None).await? => return Ok(()),
            Some((_, v)) if s.store.record_update("operator_sessions", operator, v, &body, None).await? => {
                return Ok(());
            }
            _ => continue,
        }
    }
    Err(drover_core::Error::Store("operator sessions: too much contention".into()))
}
