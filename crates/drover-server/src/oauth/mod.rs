//! The OAuth 2.0 authorization server: RFC 8414 metadata, JWKS, the token endpoint
//! (`client_credentials` with `client_secret_basic` / `client_secret_post`), RFC 7009
//! revocation, and verification of the RFC 9068 JWT access tokens it issues.

use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use drover_core::rbac::{Principal, PrincipalKind};
use drover_core::store::ClientRecord;
use drover_types::Timestamp;
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::auth::secret_hash;

pub mod keys;

/// Lifetime of access tokens.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp`.
pub const CLOCK_SKEW_SECS: u64 = 30;
/// The audience of Drover's API tokens.
pub const AUDIENCE: &str = "drover-api";

/// RFC 9068 access-token claims (plus `roles`, and `iat_ms` for revocation to the millisecond).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub iat_ms: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub roles: Vec<String>,
}

/// The routes of the authorization server (they authenticate clients themselves).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/.well-known/openid-configuration", get(metadata))
        .route("/oauth2/jwks", get(jwks))
        .route("/oauth2/token", post(token))
        .route("/oauth2/revoke", post(revoke))
        .route("/oauth2/introspect", post(introspect))
}

async fn metadata(State(s): State<AppState>) -> Json<serde_json::Value> {
    let iss = &s.issuer;
    Json(serde_json::json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oauth2/token"),
        "jwks_uri": format!("{iss}/oauth2/jwks"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "response_types_supported": [],
        "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
        "scopes_supported": drover_core::rbac::BUILT_IN_ROLES.iter().filter(|r| **r != "agent").collect::<Vec<_>>(),
    }))
}

async fn jwks(State(s): State<AppState>) -> Response {
    ([(header::CACHE_CONTROL, "max-age=60")], Json(s.keys.jwks())).into_response()
}

/// RFC 6749 §5.2 error response.
fn oauth_error(status: StatusCode, error: &str, description: &str, basic_challenge: bool) -> Response {
    let mut resp = (
        status,
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(serde_json::json!({"error": error, "error_description": description})),
    )
        .into_response();
    if basic_challenge {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"drover\""));
    }
    resp
}

#[derive(Debug, Deserialize, Default)]
pub struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    token: Option<String>,
}

type FormInput = Result<Form<TokenForm>, axum::extract::rejection::FormRejection>;

/// The form, and the client that authenticated with it: the preamble of every endpoint here.
async fn authenticated_form(
    s: &AppState,
    headers: &HeaderMap,
    form: FormInput,
) -> Result<(TokenForm, ClientRecord), Response> {
    let Ok(Form(form)) = form else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
            false,
        ));
    };
    let client = authenticate_client(s, headers, &form).await?;
    Ok((form, client))
}

/// How the client authenticated (RFC 6749 §2.3.1): HTTP Basic with form-encoded id and secret,
/// or the body parameters; never both.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Result<(String, String, bool), &'static str> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .map(|b| b.trim().to_string());
    match (basic, &form.client_id, &form.client_secret) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err("use one client authentication method"),
        (Some(b), None, None) => {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| "malformed Basic credentials")?;
            let s = String::from_utf8(raw).map_err(|_| "malformed Basic credentials")?;
            let (id, secret) = s.split_once(':').ok_or("malformed Basic credentials")?;
            let dec = |x: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={x}"))
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(|p| p.1)
            };
            Ok((dec(id).ok_or("malformed Basic credentials")?, dec(secret).ok_or("malformed Basic credentials")?, true))
        }
        (None, Some(id), Some(secret)) => Ok((id.clone(), secret.clone(), false)),
        _ => Err("client authentication required"),
    }
}

/// Checks a client secret against the current one, or the previous one within its grace period.
fn secret_matches(c: &ClientRecord, secret: &str, now: Timestamp) -> bool {
    let given = secret_hash(secret);
    let current = bool::from(given.as_bytes().ct_eq(c.secret_hash.as_bytes()));
    let previous = match (&c.previous_secret_hash, c.previous_valid_until) {
        (Some(h), Some(until)) if until > now => bool::from(given.as_bytes().ct_eq(h.as_bytes())),
        _ => false,
    };
    current | previous
}

async fn authenticate_client(s: &AppState, headers: &HeaderMap, form: &TokenForm) -> Result<ClientRecord, Response> {
    let (id, secret, basic) = client_credentials(headers, form).map_err(|why| {
        if why.starts_with("use one") {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why, false)
        } else {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why, true)
        }
    })?;
    let client = s.store.get_client(&id).await.map_err(|e| {
        tracing::error!(error = %e, "token endpoint: store error");
        oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "try again later", false)
    })?;
    let now = Timestamp::now();
    match client {
        Some(c) if !c.disabled && secret_matches(&c, &secret, now) => Ok(c),
        Some(c) if c.disabled => {
            tracing::warn!(client = %id, "token refused: client disabled");
            Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", basic))
        }
        _ => {
            tracing::warn!(client = %id, "token refused: unknown client or wrong secret");
            Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", basic))
        }
    }
}

async fn token(State(s): State<AppState>, headers: HeaderMap, form: FormInput) -> Response {
    let (form, client) = match authenticated_form(&s, &headers, form).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match form.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
                false,
            );
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required", false),
    }
    // Scope: the client's roles, or the subset it asks for.
    let roles: Vec<String> = match form.scope.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => client.roles.clone(),
        Some(scope) => {
            let asked: Vec<String> = scope.split(' ').filter(|x| !x.is_empty()).map(String::from).collect();
            if let Some(bad) = asked.iter().find(|r| !client.roles.contains(r)) {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    &format!("the client does not have {bad}"),
                    false,
                );
            }
            asked
        }
    };
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
    };
    let token = match s.keys.sign(&claims) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "signing a token");
            return oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "try again later", false);
        }
    };
    tracing::debug!(client = %client.client_id, jti = %claims.jti, "access token issued");
    (
        [(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")],
        Json(serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_TTL.as_secs(),
            "scope": claims.scope,
        })),
    )
        .into_response()
}

/// RFC 7009: the client revokes one of its own tokens; unknown or foreign tokens get 200 too.
async fn revoke(State(s): State<AppState>, headers: HeaderMap, form: FormInput) -> Response {
    let (form, client) = match authenticated_form(&s, &headers, form).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(token) = form.token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required", false);
    };
    if let Ok(c) = decode(&s, token)
        && c.client_id == client.client_id
    {
        if let Err(e) = s.store.revoke_token(&c.jti, Timestamp((c.exp + CLOCK_SKEW_SECS as i64) * 1000)).await {
            tracing::error!(error = %e, "revoking a token");
            return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again", false);
        }
        tracing::info!(client = %client.client_id, jti = %c.jti, "token revoked");
    }
    StatusCode::OK.into_response()
}

/// RFC 7662: an authenticated client asks whether a token is active.
async fn introspect(State(s): State<AppState>, headers: HeaderMap, form: FormInput) -> Response {
    let (form, _) = match authenticated_form(&s, &headers, form).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(token) = form.token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required", false);
    };
    let body = match (verify_bearer(&s, token).await, decode(&s, token)) {
        (Ok(_), Ok(c)) => serde_json::json!({
            "active": true, "token_type": "access_token", "client_id": c.client_id, "sub": c.sub, "scope": c.scope,
            "aud": c.aud, "iss": c.iss, "exp": c.exp, "iat": c.iat, "jti": c.jti,
        }),
        _ => serde_json::json!({"active": false}),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Signature and claim checks. The algorithm comes from the key the `kid` names, never from
/// the token; `exp`, `iss` and `aud` are required with their JSON types.
fn decode(s: &AppState, token: &str) -> Result<Claims, &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
    // RFC 9068 §4: only access tokens (not, say, an ID token signed with the same key).
    let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
    if typ != "at+jwt" && typ != "application/at+jwt" {
        return Err("not an access token (typ)");
    }
    let kid = header.kid.ok_or("token without kid")?;
    let key = s.keys.verifying_key(&kid).ok_or("unknown kid")?;
    let mut v = Validation::new(key.alg);
    v.algorithms = vec![key.alg];
    v.set_issuer(&[s.issuer.as_str()]);
    v.set_audience(&[AUDIENCE]);
    v.leeway = CLOCK_SKEW_SECS;
    v.set_required_spec_claims(&["exp", "iss", "aud"]);
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v).map_err(|_| "invalid token")?;
    Ok(data.claims)
}

/// Verifies a bearer token for the API: signature and claims, then the client still exists, is
/// enabled, has not revoked its tokens since this one was issued, and the token id is not revoked.
pub async fn verify_bearer(s: &AppState, token: &str) -> Result<Principal, &'static str> {
    let c = decode(s, token)?;
    let client = s.store.get_client(&c.client_id).await.map_err(|_| "store error")?.ok_or("unknown client")?;
    if client.disabled {
        return Err("client disabled");
    }
    if c.iat_ms < client.tokens_not_before.0 {
        return Err("token revoked (client tokens revoked)");
    }
    if s.store.is_token_revoked(&c.jti).await.map_err(|_| "store error")? {
        return Err("token revoked");
    }
    // A token carries the roles granted at issue, limited to the client's current roles.
    let roles = c.roles.into_iter().filter(|r| client.roles.contains(r)).collect();
    Ok(Principal { kind: PrincipalKind::Client, name: client.client_id, roles })
}
