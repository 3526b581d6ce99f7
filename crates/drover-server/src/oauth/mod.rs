//! The OAuth 2.0 authorization server: RFC 8414 metadata, JWKS, the token endpoint
//! (`client_credentials`; `authorization_code` with PKCE, `refresh_token` and the RFC 8628 device
//! grant in [`grants`]), client authentication (`client_secret_basic`, `client_secret_post`,
//! RFC 7523 `private_key_jwt`, and public clients), RFC 7009 revocation, RFC 7662 introspection,
//! and verification of the RFC 9068 JWT access tokens it issues.

use std::time::Duration;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, State};
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

pub mod grants;
pub mod jwt;
pub mod keys;
mod pages;

/// Lifetime of access tokens.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp`.
pub const CLOCK_SKEW_SECS: u64 = 30;
/// The audience of Drover's API tokens.
pub const AUDIENCE: &str = "drover-api";

/// Lifetime of a `private_key_jwt` client assertion, at most.
pub const ASSERTION_MAX_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 7523 client-assertion type.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The operator on whose behalf a client acts (`act`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    pub sub: String,
}

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
    /// The operator, for tokens from the authorization-code, device and refresh grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The refresh-token family (login session) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
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
        .route("/oauth2/authorize", get(grants::authorize_page).post(grants::authorize_submit))
        .route("/oauth2/device_authorization", post(grants::device_authorization))
        .route("/device", get(grants::device_page).post(grants::device_submit))
}

async fn metadata(State(s): State<AppState>) -> Json<serde_json::Value> {
    let iss = &s.issuer;
    Json(serde_json::json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oauth2/token"),
        "jwks_uri": format!("{iss}/oauth2/jwks"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{iss}/oauth2/device_authorization"),
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token", grants::DEVICE_GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
        "scopes_supported": drover_core::rbac::BUILT_IN_ROLES.iter().filter(|r| **r != "agent").collect::<Vec<_>>(),
    }))
}

async fn jwks(State(s): State<AppState>) -> Response {
    ([(header::CACHE_CONTROL, "max-age=60")], Json(s.keys.jwks())).into_response()
}

/// RFC 6749 §5.2 error response.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str, basic_challenge: bool) -> Response {
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
    pub(crate) grant_type: Option<String>,
    pub(crate) scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_assertion_type: Option<String>,
    client_assertion: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) code_verifier: Option<String>,
    pub(crate) refresh_token: Option<String>,
    pub(crate) device_code: Option<String>,
}

pub(crate) type FormInput = Result<Form<TokenForm>, axum::extract::rejection::FormRejection>;

/// The form, and the client that authenticated with it: the preamble of every endpoint here.
pub(crate) async fn authenticated_form(
    s: &AppState,
    headers: &HeaderMap,
    form: FormInput,
    source: &str,
) -> Result<(TokenForm, ClientRecord), Response> {
    let Ok(Form(form)) = form else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "expected an application/x-www-form-urlencoded body",
            false,
        ));
    };
    let client = authenticate_client(s, headers, &form, source).await?;
    Ok((form, client))
}

/// How a client presents itself.
enum Presented {
    Secret {
        id: String,
        secret: String,
        basic: bool,
    },
    Assertion {
        id: Option<String>,
        assertion: String,
    },
    /// A public client: its id, nothing else.
    Public {
        id: String,
    },
}

/// How the client authenticated (RFC 6749 §2.3.1, RFC 7523 §2.2): HTTP Basic, the body
/// parameters, a signed assertion, or (public clients) only `client_id`; never two at once.
fn presented(headers: &HeaderMap, form: &TokenForm) -> Result<Presented, &'static str> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
        .map(|b| b.trim().to_string());
    let assertion = match (&form.client_assertion_type, &form.client_assertion) {
        (None, None) => None,
        (Some(t), Some(a)) if t == JWT_BEARER_ASSERTION => Some(a.clone()),
        (Some(_), Some(_)) => return Err("unsupported client_assertion_type"),
        _ => return Err("client_assertion and client_assertion_type go together"),
    };
    match (basic, assertion, &form.client_id, &form.client_secret) {
        (Some(_), Some(_), _, _)
        | (Some(_), None, Some(_), _)
        | (Some(_), None, _, Some(_))
        | (None, Some(_), _, Some(_)) => Err("use one client authentication method"),
        (Some(b), None, None, None) => {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).map_err(|_| "malformed Basic credentials")?;
            let s = String::from_utf8(raw).map_err(|_| "malformed Basic credentials")?;
            let (id, secret) = s.split_once(':').ok_or("malformed Basic credentials")?;
            let dec = |x: &str| {
                serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={x}"))
                    .ok()
                    .and_then(|mut v| v.pop())
                    .map(|p| p.1)
            };
            Ok(Presented::Secret {
                id: dec(id).ok_or("malformed Basic credentials")?,
                secret: dec(secret).ok_or("malformed Basic credentials")?,
                basic: true,
            })
        }
        (None, Some(assertion), id, None) => Ok(Presented::Assertion { id: id.clone(), assertion }),
        (None, None, Some(id), Some(secret)) => {
            Ok(Presented::Secret { id: id.clone(), secret: secret.clone(), basic: false })
        }
        (None, None, Some(id), None) => Ok(Presented::Public { id: id.clone() }),
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

/// The `sub` of an assertion, read before its signature is checked (only to find the key).
fn unverified_subject(assertion: &str) -> Option<String> {
    let payload = assertion.split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v.get("sub")?.as_str().map(String::from)
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    jti: String,
}

/// RFC 7523 §3: signed by a key registered for the client, `iss` = `sub` = client id, `aud` the
/// token endpoint, a bounded lifetime, and a `jti` never seen before (replay cache until `exp`).
async fn check_assertion(s: &AppState, c: &ClientRecord, assertion: &str) -> Result<(), &'static str> {
    let jwks = c.metadata.jwks.as_ref().ok_or("client has no registered keys")?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|_| "registered keys unusable")?;
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| "malformed assertion")?;
    let jwk = match &header.kid {
        Some(kid) => set.find(kid).ok_or("unknown kid")?,
        None if set.keys.len() == 1 => &set.keys[0],
        None => return Err("assertion without kid"),
    };
    let alg = keys::jwk_algorithm(jwk, header.alg).ok_or("algorithm does not fit the key")?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| "registered key unusable")?;
    let mut v = Validation::new(alg);
    v.algorithms = vec![alg];
    v.set_audience(&[format!("{}/oauth2/token", s.issuer)]);
    v.set_issuer(&[c.client_id.as_str()]);
    v.sub = Some(c.client_id.clone());
    v.leeway = CLOCK_SKEW_SECS;
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &v).map_err(|_| "invalid assertion")?.claims;
    debug_assert!(claims.iss == c.client_id && claims.sub == c.client_id);
    let now = Timestamp::now().0 / 1000;
    let max = ASSERTION_MAX_LIFETIME.as_secs() as i64;
    if claims.exp - now > max + CLOCK_SKEW_SECS as i64 || claims.iat.is_some_and(|iat| claims.exp - iat > max) {
        return Err("assertion lifetime too long");
    }
    if claims.jti.is_empty() || claims.jti.len() > 200 {
        return Err("assertion without usable jti");
    }
    let until = Timestamp((claims.exp + CLOCK_SKEW_SECS as i64) * 1000);
    let fresh = s
        .store
        .record_insert("assertion_jti", &format!("{}:{}", c.client_id, claims.jti), "{}", Some(until))
        .await
        .map_err(|_| "store error")?;
    if !fresh {
        return Err("assertion replayed (jti seen before)");
    }
    Ok(())
}

/// An audit entry of the authorization server (a fresh request id; the token endpoint's go
/// through the batched audit sink, the sign-in pages' straight to the store).
pub(crate) fn token_event(
    principal: String,
    action: &str,
    target: &str,
    outcome: &str,
    source: &str,
    detail: serde_json::Value,
) -> drover_types::audit::NewAuditEntry {
    drover_types::audit::NewAuditEntry {
        ts: Timestamp::now(),
        principal,
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        source: source.into(),
        request_id: hex::encode(rand::random::<[u8; 8]>()),
        detail,
    }
}

async fn authenticate_client(
    s: &AppState,
    headers: &HeaderMap,
    form: &TokenForm,
    source: &str,
) -> Result<ClientRecord, Response> {
    let how = presented(headers, form).map_err(|why| {
        if why.starts_with("use one") || why.contains("assertion") {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why, false)
        } else {
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why, true)
        }
    })?;
    let (id, basic) = match &how {
        Presented::Secret { id, basic, .. } => (id.clone(), *basic),
        Presented::Public { id } => (id.clone(), false),
        Presented::Assertion { id, assertion } => match id.clone().or_else(|| unverified_subject(assertion)) {
            Some(id) => (id, false),
            None => {
                return Err(oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication failed",
                    false,
                ));
            }
        },
    };
    let client = s.store.get_client(&id).await.map_err(|e| {
        tracing::error!(error = %e, "token endpoint: store error");
        oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "try again later", false)
    })?;
    let now = Timestamp::now();
    let why = match (client, how) {
        (None, _) => "unknown client",
        (Some(c), _) if c.disabled => "client disabled",
        (Some(c), Presented::Secret { secret, .. }) if !c.metadata.public && secret_matches(&c, &secret, now) => {
            return Ok(c);
        }
        (Some(_), Presented::Secret { .. }) => "wrong secret",
        (Some(c), Presented::Public { .. }) if c.metadata.public => return Ok(c),
        (Some(_), Presented::Public { .. }) => "confidential client without credentials",
        (Some(c), Presented::Assertion { assertion, .. }) => match check_assertion(s, &c, &assertion).await {
            Ok(()) => return Ok(c),
            Err(why) => why,
        },
    };
    tracing::warn!(client = %id, reason = why, "client authentication failed");
    let detail = serde_json::json!({"reason": why, "endpoint": "token"});
    s.audit_sink.record(token_event("anonymous".into(), "token.refused", &id, "failure", source, detail)).await;
    Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", basic))
}

async fn token(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let source = peer.to_string();
    let (form, client) = match authenticated_form(&s, &headers, form, &source).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match form.grant_type.as_deref() {
        Some("client_credentials") if client.metadata.public => oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "a public client cannot use client_credentials",
            false,
        ),
        Some("client_credentials") => client_credentials_grant(&s, &client, &form, &source).await,
        Some("authorization_code") => grants::authorization_code(&s, &client, &form).await,
        Some("refresh_token") => grants::refresh(&s, &client, &form).await,
        Some(grants::DEVICE_GRANT) => grants::device_code(&s, &client, &form).await,
        Some(_) => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "unsupported grant_type", false),
        None => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required", false),
    }
}

/// The requested scope (space-separated roles) within what is allowed; `None` asks for all.
pub(crate) fn scope_within(asked: Option<&str>, allowed: &[String]) -> Result<Vec<String>, String> {
    match asked.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(allowed.to_vec()),
        Some(scope) => {
            let asked: Vec<String> = scope.split(' ').filter(|x| !x.is_empty()).map(String::from).collect();
            match asked.iter().find(|r| !allowed.contains(r)) {
                Some(bad) => Err(format!("{bad} is not granted")),
                None => Ok(asked),
            }
        }
    }
}

async fn client_credentials_grant(s: &AppState, client: &ClientRecord, form: &TokenForm, source: &str) -> Response {
    let roles = match scope_within(form.scope.as_deref(), &client.roles) {
        Ok(r) => r,
        Err(why) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &why, false),
    };
    match issue_access_token(s, client, roles, None, None) {
        Ok((token, claims)) => {
            let detail = serde_json::json!({"grant": "client_credentials", "jti": claims.jti, "scope": claims.scope});
            let e = token_event(
                format!("client:{}", client.client_id),
                "token.issued",
                &client.client_id,
                "success",
                source,
                detail,
            );
            s.audit_sink.record(e).await;
            token_response(token, &claims, None)
        }
        Err(resp) => *resp,
    }
}

/// Signs an access token for the client (acting for `operator` when given).
pub(crate) fn issue_access_token(
    s: &AppState,
    client: &ClientRecord,
    roles: Vec<String>,
    operator: Option<&str>,
    sid: Option<&str>,
) -> Result<(String, Claims), Box<Response>> {
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
    match s.keys.sign(&claims) {
        Ok(t) => {
            tracing::debug!(client = %client.client_id, jti = %claims.jti, "access token issued");
            Ok((t, claims))
        }
        Err(e) => {
            tracing::error!(error = %e, "signing a token");
            Err(Box::new(oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "try again later", false)))
        }
    }
}

/// RFC 6749 §5.1.
pub(crate) fn token_response(token: String, claims: &Claims, refresh_token: Option<String>) -> Response {
    let mut body = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_TTL.as_secs(),
        "scope": claims.scope,
    });
    if let Some(r) = refresh_token {
        body["refresh_token"] = serde_json::Value::String(r);
    }
    ([(header::CACHE_CONTROL, "no-store"), (header::PRAGMA, "no-cache")], Json(body)).into_response()
}

/// RFC 7009: the client revokes one of its own tokens; unknown or foreign tokens get 200 too.
async fn revoke(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let source = peer.to_string();
    let (form, client) = match authenticated_form(&s, &headers, form, &source).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(token) = form.token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required", false);
    };
    if !token.contains('.') {
        // Not a JWT: a refresh token; revoking it ends its whole login session.
        return match grants::revoke_refresh(&s, &client, token).await {
            Ok(()) => StatusCode::OK.into_response(),
            Err(e) => {
                tracing::error!(error = %e, "revoking a refresh token");
                oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again", false)
            }
        };
    }
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
async fn introspect(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let (form, caller) = match authenticated_form(&s, &headers, form, &peer.to_string()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if caller.metadata.public {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "public clients cannot introspect", false);
    }
    let Some(token) = form.token.as_deref() else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "token is required", false);
    };
    let body = match (verify_bearer(&s, token).await, decode(&s, token)) {
        (Ok(_), Ok(c)) => serde_json::json!({
            "active": true, "token_type": "access_token", "client_id": c.client_id, "sub": c.sub, "scope": c.scope,
            "aud": c.aud, "iss": c.iss, "exp": c.exp, "iat": c.iat, "jti": c.jti, "act": c.act,
        }),
        _ => serde_json::json!({"active": false}),
    };
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Tokens whose signature and claims were verified, by SHA-256 of the whole token, until they
/// expire: clients and agents present the same token for minutes, and one ES256 verification
/// costs a P-256 signature check. Only the signature and the fixed claims are remembered;
/// revocation (client, `jti`, session, operator) is checked on every call after this.
#[derive(Default)]
pub struct VerifiedTokens {
    map: std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>,
}

/// Entries at most; when full, the cache starts over (no eviction order to maintain).
const VERIFIED_CAP: usize = 100_000;

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32]) -> Option<Claims> {
        self.map.lock().expect("poisoned").get(digest).cloned()
    }
    fn put(&self, digest: [u8; 32], c: &Claims) {
        let mut m = self.map.lock().expect("poisoned");
        if m.len() >= VERIFIED_CAP {
            let now = Timestamp::now().0 / 1000;
            m.retain(|_, v| v.exp + CLOCK_SKEW_SECS as i64 > now);
            if m.len() >= VERIFIED_CAP {
                m.clear();
            }
        }
        m.insert(digest, c.clone());
    }
}

/// [`verify_signature`], remembered per token until it expires.
fn decode(s: &AppState, token: &str) -> Result<Claims, &'static str> {
    use sha2::Digest as _;
    let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
    let now = Timestamp::now().0 / 1000;
    if let Some(c) = s.verified.get(&digest) {
        return if c.exp + CLOCK_SKEW_SECS as i64 <= now { Err("expired") } else { Ok(c) };
    }
    let c = verify_signature(s, token)?;
    s.verified.put(digest, &c);
    Ok(c)
}

/// Signature and claim checks. The algorithm comes from the key the `kid` names, never from
/// the token; `exp`, `iss` and `aud` are required with their JSON types.
fn verify_signature(s: &AppState, token: &str) -> Result<Claims, &'static str> {
    let header = jwt::header(token)?;
    // RFC 9068 §4: only access tokens (not, say, an ID token signed with the same key).
    let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
    if typ != "at+jwt" && typ != "application/at+jwt" {
        return Err("not an access token (typ)");
    }
    let kid = header.kid.ok_or("token without kid")?;
    let key = s.keys.verifying_key(&kid).ok_or("unknown kid")?;
    let c: Claims = key.key.verify(token)?;
    if c.iss != s.issuer {
        return Err("wrong issuer");
    }
    if c.aud != AUDIENCE {
        return Err("wrong audience");
    }
    if c.exp + CLOCK_SKEW_SECS as i64 <= Timestamp::now().0 / 1000 {
        return Err("expired");
    }
    Ok(c)
}

/// Revocations win ties: a token issued in the same millisecond as a revocation is revoked.
///
/// Verifies a bearer token for the API: signature and claims, then the client still exists, is
/// enabled, has not revoked its tokens since this one was issued, and neither the token id nor
/// its login session is revoked; for a token acting for an operator, the operator is enabled and
/// has not had their sessions revoked since.
pub async fn verify_bearer(s: &AppState, token: &str) -> Result<Principal, &'static str> {
    let c = decode(s, token)?;
    let client = s.store.get_client(&c.client_id).await.map_err(|_| "store error")?.ok_or("unknown client")?;
    if client.disabled {
        return Err("client disabled");
    }
    if c.iat_ms <= client.tokens_not_before.0 {
        return Err("token revoked (client tokens revoked)");
    }
    if s.store.is_token_revoked(&c.jti).await.map_err(|_| "store error")? {
        return Err("token revoked");
    }
    if let Some(sid) = &c.sid
        && s.store.is_token_revoked(sid).await.map_err(|_| "store error")?
    {
        return Err("token revoked (login session ended)");
    }
    if let Some(agent) = &client.metadata.agent {
        if !c.roles.iter().any(|r| r == "agent") || !client.roles.iter().any(|r| r == "agent") {
            return Err("agent token without the agent role");
        }
        s.auth.touch(agent).await;
        return Ok(Principal::new(PrincipalKind::Agent, agent.clone(), vec!["agent".into()]));
    }
    let Some(act) = &c.act else {
        // A token carries the roles granted at issue, limited to the client's current roles; a
        // token whose scope was narrowed does not carry the client's access groups either.
        let full = client.roles.iter().all(|r| c.roles.contains(r));
        let roles = c.roles.into_iter().filter(|r| client.roles.contains(r)).collect();
        return Ok(s.principals.resolve_scoped(PrincipalKind::Client, &client.client_id, roles, full));
    };
    let op = s.store.get_operator(&act.sub).await.map_err(|_| "store error")?.ok_or("unknown operator")?;
    if op.disabled {
        return Err("operator disabled");
    }
    if c.iat_ms <= grants::sessions_not_before(s, &op.name).await.map_err(|_| "store error")?.0 {
        return Err("token revoked (operator sessions revoked)");
    }
    let full = op.roles.iter().filter(|r| r.as_str() != "agent").all(|r| c.roles.contains(r));
    let roles = c.roles.into_iter().filter(|r| op.roles.contains(r)).collect();
    let mut p = s.principals.resolve_scoped(PrincipalKind::Operator, &op.name, roles, full);
    p.via = Some(client.client_id);
    Ok(p)
}
