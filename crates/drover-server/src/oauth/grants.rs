//! The grants that act for an operator: authorization code with PKCE (RFC 6749 §4.1, RFC 7636,
//! loopback redirects per RFC 8252), refresh tokens rotated on every use with reuse detection
//! (RFC 9700 §4.14), and the device authorization grant (RFC 8628); plus operator sessions.
//!
//! State lives in the store's small records (see `Store::record_*`), keyed by the SHA-256 of
//! the secret value, never the value itself:
//! - `authz_code`: single use (`record_take`), 60 s;
//! - `refresh`: one per refresh token, marked spent by compare-and-swap; a spent token presented
//!   again revokes its family;
//! - `refresh_family`: a login session; revoked as a whole (its id is also put on the token
//!   deny-list, so access tokens carrying it as `sid` stop working at once);
//! - `device` / `device_user`: a pending device authorization and its user code;
//! - `operator_sessions`: per-operator not-before (revoke sessions, disable, password change).

use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use drover_core::rbac::PrincipalKind;
use drover_core::store::{ClientRecord, OperatorRecord};
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

use super::pages;
use super::{
    ACCESS_TOKEN_TTL, CLOCK_SKEW_SECS, FormInput, TokenForm, authenticated_form, issue_access_token, oauth_error,
    scope_within, token_response,
};
use crate::AppState;
use crate::auth::secret_hash;

pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const CODE_TTL: Duration = Duration::from_secs(60);
/// A refresh token is valid this long after it was issued (each use gives a new one)...
pub const REFRESH_TTL: Duration = Duration::from_secs(24 * 3600);
/// ...within a login session of at most this long.
pub const SESSION_MAX: Duration = Duration::from_secs(30 * 24 * 3600);
pub const DEVICE_TTL: Duration = Duration::from_secs(600);
/// Seconds a device must wait between polls (RFC 8628 §3.5); `slow_down` adds 5.
pub const DEVICE_INTERVAL: u64 = 5;
/// The CLI's public client, created on first start.
pub const CLI_CLIENT: &str = "drover-cli";

#[derive(Serialize, Deserialize)]
struct AuthzCode {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    operator: String,
    roles: Vec<String>,
    /// When the operator signed in: a session revocation after it voids the code.
    issued_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct RefreshRec {
    family: String,
    client_id: String,
    operator: String,
    roles: Vec<String>,
    spent: bool,
}

#[derive(Serialize, Deserialize)]
struct Family {
    client_id: String,
    operator: String,
    created_ms: i64,
    revoked: bool,
}

#[derive(Serialize, Deserialize)]
struct DeviceRec {
    client_id: String,
    user_code: String,
    scope: Option<String>,
    /// `pending`, `approved` or `denied`.
    status: String,
    operator: Option<String>,
    roles: Vec<String>,
    interval: u64,
    last_poll_ms: i64,
    /// Fixed at creation: polling does not extend it.
    expires_ms: i64,
    /// When the operator approved.
    approved_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct Sessions {
    not_before_ms: i64,
}

fn digest(v: &str) -> String {
    secret_hash(v)
}

fn grant_error(error: &str, description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, error, description, false)
}

fn store_unavailable(e: drover_core::Error) -> Response {
    tracing::error!(error = %e, "token endpoint: store error");
    oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again", false)
}

pub(crate) async fn audit(
    s: &AppState,
    principal: String,
    action: &str,
    target: &str,
    outcome: &str,
    source: &str,
    detail: serde_json::Value,
) {
    let e = super::token_event(principal, action, target, outcome, source, detail);
    if let Err(err) = s.store.append_audit(&e).await {
        tracing::error!(error = %err, action, "could not append to the audit log");
    }
}

// ---- redirect URIs ----------------------------------------------------------------------------

/// RFC 8252 §7.3: a registered loopback IP redirect matches any port; everything else is exact.
pub fn redirect_allowed(registered: &[String], given: &str) -> bool {
    registered.iter().any(|r| r == given || loopback_match(r, given))
}

fn loopback_match(registered: &str, given: &str) -> bool {
    for host in ["http://127.0.0.1", "http://[::1]"] {
        if let (Some(r), Some(g)) = (registered.strip_prefix(host), given.strip_prefix(host)) {
            let strip_port = |x: &str| -> Option<String> {
                match x.strip_prefix(':') {
                    Some(rest) => {
                        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
                        (digits > 0 && digits <= 5).then(|| rest[digits..].to_string())
                    }
                    None => Some(x.to_string()),
                }
            };
            return matches!((strip_port(r), strip_port(g)), (Some(a), Some(b)) if a == b && (a.is_empty() || a.starts_with('/')));
        }
    }
    false
}

/// Whether a redirect URI may be registered: https, a loopback IP over http, or a private-use
/// scheme (`com.example.app:/cb`); absolute, no fragment, no wildcard.
pub fn redirect_registrable(uri: &str) -> Result<(), String> {
    if uri.contains('#') || uri.contains('*') || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("redirect URI {uri:?}: no fragments, wildcards or spaces"));
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!("redirect URI {uri:?} is not absolute"));
    };
    let ok = match scheme {
        "https" => rest.starts_with("//") && rest.len() > 2,
        "http" => {
            ["//127.0.0.1", "//[::1]"].iter().any(|h| {
                rest.strip_prefix(h)
                    .is_some_and(|after| after.is_empty() || after.starts_with(':') || after.starts_with('/'))
            }) && !rest.contains('@')
        }
        s => s.contains('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("redirect URI {uri:?}: use https, http on 127.0.0.1/[::1], or a private-use scheme"))
    }
}

fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{q}")
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string()), (header::CACHE_CONTROL, "no-store".into())])
        .into_response()
}

// ---- the authorization endpoint ----------------------------------------------------------------

#[derive(Debug, Deserialize, Default, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    // The login form adds these.
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The client and redirect URI, checked before anything is sent back to that URI (RFC 6749
/// §4.1.2.1: with an unknown client or a wrong redirect URI, the user is told, not redirected).
async fn check_client(s: &AppState, p: &AuthorizeParams) -> Result<(ClientRecord, String), Response> {
    let bad = |msg: &str| pages::error_page(StatusCode::BAD_REQUEST, msg);
    let id = p.client_id.as_deref().ok_or_else(|| bad("The request names no client."))?;
    let client = match s.store.get_client(id).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => return Err(bad("Unknown or disabled client.")),
        Err(e) => {
            tracing::error!(error = %e, "authorize: store error");
            return Err(pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."));
        }
    };
    let uri = match p.redirect_uri.as_deref() {
        Some(u) if redirect_allowed(&client.metadata.redirect_uris, u) => u.to_string(),
        Some(u) => {
            tracing::warn!(client = %client.client_id, redirect_uri = u, "authorize: redirect URI not registered");
            return Err(bad("The redirect URI is not registered for this client."));
        }
        None => return Err(bad("The request has no redirect URI.")),
    };
    Ok((client, uri))
}

/// Errors that go back to the client's redirect URI.
fn check_request(p: &AuthorizeParams) -> Result<(), (&'static str, &'static str)> {
    if p.response_type.as_deref() != Some("code") {
        return Err(("unsupported_response_type", "only response_type=code"));
    }
    match (p.code_challenge.as_deref(), p.code_challenge_method.as_deref()) {
        (Some(c), Some("S256"))
            if c.len() == 43 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Ok(())
        }
        (Some(_), Some("S256")) => Err(("invalid_request", "malformed code_challenge")),
        (Some(_), _) => Err(("invalid_request", "code_challenge_method must be S256")),
        (None, _) => Err(("invalid_request", "PKCE is required (code_challenge, S256)")),
    }
}

fn error_redirect(s: &AppState, uri: &str, p: &AuthorizeParams, error: &str, description: &str) -> Response {
    let mut params = vec![("error", error), ("error_description", description), ("iss", s.issuer.as_str())];
    if let Some(st) = p.state.as_deref() {
        params.push(("state", st));
    }
    redirect(&with_params(uri, &params))
}

/// `GET /oauth2/authorize`: the login page.
pub async fn authorize_page(State(s): State<AppState>, Query(p): Query<AuthorizeParams>) -> Response {
    let (client, uri) = match check_client(&s, &p).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    if let Err((e, d)) = check_request(&p) {
        return error_redirect(&s, &uri, &p, e, d);
    }
    pages::login_page(&client.client_id, &p, None)
}

/// `POST /oauth2/authorize`: the login form; on success, back to the client with a code.
pub async fn authorize_submit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<AuthorizeParams>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(p)) = form else {
        return pages::error_page(StatusCode::BAD_REQUEST, "Malformed form.");
    };
    let (client, uri) = match check_client(&s, &p).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    if let Err((e, d)) = check_request(&p) {
        return error_redirect(&s, &uri, &p, e, d);
    }
    let op = match login(&s, &p, &peer.to_string(), &client.client_id).await {
        Ok(op) => op,
        Err(page) => return page,
    };
    let roles = match scope_within(p.scope.as_deref(), &operator_roles(&op)) {
        Ok(r) => r,
        Err(why) => return error_redirect(&s, &uri, &p, "invalid_scope", &why),
    };
    let code = hex::encode(rand::random::<[u8; 32]>());
    let rec = AuthzCode {
        client_id: client.client_id.clone(),
        redirect_uri: uri.clone(),
        challenge: p.code_challenge.clone().unwrap_or_default(),
        operator: op.name.clone(),
        roles,
        issued_ms: Timestamp::now().0,
    };
    let body = serde_json::to_string(&rec).unwrap_or_default();
    match s.store.record_insert("authz_code", &digest(&code), &body, Some(Timestamp::now().plus(CODE_TTL))).await {
        Ok(true) => {}
        Ok(false) | Err(_) => return pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
    }
    let mut params = vec![("code", code.as_str()), ("iss", s.issuer.as_str())];
    if let Some(st) = p.state.as_deref() {
        params.push(("state", st));
    }
    redirect(&with_params(&uri, &params))
}

/// Checks an operator's credentials from a login form (same lockout and audit as the API).
async fn login(s: &AppState, p: &AuthorizeParams, source: &str, client: &str) -> Result<OperatorRecord, Response> {
    let (Some(user), Some(pw)) = (p.username.as_deref(), p.password.as_deref()) else {
        return Err(pages::login_page(client, p, Some("Enter your user name and password.")));
    };
    let failed = |reason: &str| {
        let detail = serde_json::json!({"route": "/oauth2/authorize", "reason": reason, "client": client});
        (detail, pages::login_page(client, p, Some("Invalid user name or password.")))
    };
    match s.auth.authenticate(user, pw, false).await {
        Ok((principal, _)) if principal.kind == PrincipalKind::Operator => {
            match s.store.get_operator(&principal.name).await {
                Ok(Some(op)) => {
                    audit(
                        s,
                        format!("operator:{}", op.name),
                        "auth.login",
                        &op.name,
                        "success",
                        source,
                        serde_json::json!({"client": client}),
                    )
                    .await;
                    Ok(op)
                }
                _ => Err(pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later.")),
            }
        }
        Ok(_) => {
            let (d, page) = failed("not_an_operator");
            audit(s, "anonymous".into(), "auth.failed", user, "failure", source, d).await;
            Err(page)
        }
        Err(f) => {
            let (d, page) = failed(f.reason);
            audit(s, "anonymous".into(), "auth.failed", user, "failure", source, d).await;
            if f.locked_now {
                audit(s, "system".into(), "operator.locked", user, "success", source, serde_json::json!({})).await;
            }
            Err(page)
        }
    }
}

fn operator_roles(op: &OperatorRecord) -> Vec<String> {
    op.roles.iter().filter(|r| r.as_str() != "agent").cloned().collect()
}

// ---- token endpoint: authorization_code ---------------------------------------------------------

fn pkce_ok(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    well_formed && subtle::ConstantTimeEq::ct_eq(computed.as_bytes(), challenge.as_bytes()).into()
}

pub(crate) async fn authorization_code(s: &AppState, client: &ClientRecord, form: &TokenForm) -> Response {
    let (Some(code), Some(uri)) = (form.code.as_deref(), form.redirect_uri.as_deref()) else {
        return grant_error("invalid_request", "code and redirect_uri are required");
    };
    let Some(verifier) = form.code_verifier.as_deref() else {
        return grant_error("invalid_request", "code_verifier is required (PKCE)");
    };
    // Taken whatever happens next: a code is tried once.
    let rec: AuthzCode = match s.store.record_take("authz_code", &digest(code)).await {
        Ok(Some(b)) => match serde_json::from_str(&b) {
            Ok(r) => r,
            Err(_) => return grant_error("invalid_grant", "invalid authorization code"),
        },
        Ok(None) => return grant_error("invalid_grant", "invalid, expired or used authorization code"),
        Err(e) => return store_unavailable(e),
    };
    if rec.client_id != client.client_id {
        tracing::warn!(client = %client.client_id, "authorization code issued to another client");
        return grant_error("invalid_grant", "invalid authorization code");
    }
    if rec.redirect_uri != uri {
        return grant_error("invalid_grant", "redirect_uri differs from the authorization request");
    }
    if !pkce_ok(verifier, &rec.challenge) {
        tracing::warn!(client = %client.client_id, operator = %rec.operator, "PKCE verification failed");
        return grant_error("invalid_grant", "PKCE verification failed");
    }
    new_session(s, client, &rec.operator, rec.roles, "authorization_code", rec.issued_ms).await
}

/// Starts a login session (refresh-token family) for an operator, with its first tokens.
async fn new_session(
    s: &AppState,
    client: &ClientRecord,
    operator: &str,
    roles: Vec<String>,
    grant: &str,
    authenticated_ms: i64,
) -> Response {
    let op = match s.store.get_operator(operator).await {
        Ok(Some(op)) if !op.disabled => op,
        Ok(_) => return grant_error("invalid_grant", "the operator is disabled"),
        Err(e) => return store_unavailable(e),
    };
    // A sign-in from before the operator's sessions were revoked (password change, disable,
    // revoke-sessions) does not start a new session.
    match sessions_not_before(s, &op.name).await {
        Ok(nbf) if authenticated_ms <= nbf.0 => {
            return grant_error("invalid_grant", "the sign-in predates a session revocation");
        }
        Ok(_) => {}
        Err(e) => return store_unavailable(e),
    }
    let roles: Vec<String> = roles.into_iter().filter(|r| op.roles.contains(r)).collect();
    let family = hex::encode(rand::random::<[u8; 16]>());
    let now = Timestamp::now();
    let fam =
        Family { client_id: client.client_id.clone(), operator: op.name.clone(), created_ms: now.0, revoked: false };
    match s
        .store
        .record_insert(
            "refresh_family",
            &family,
            &serde_json::to_string(&fam).unwrap_or_default(),
            Some(now.plus(SESSION_MAX)),
        )
        .await
    {
        Ok(_) => {}
        Err(e) => return store_unavailable(e),
    }
    let resp = issue_pair(s, client, &op.name, roles, &family, now.plus(SESSION_MAX)).await;
    audit(
        s,
        format!("operator:{} via client:{}", op.name, client.client_id),
        "token.issued",
        &client.client_id,
        "success",
        "",
        serde_json::json!({"grant": grant, "session": family}),
    )
    .await;
    resp
}

async fn issue_pair(
    s: &AppState,
    client: &ClientRecord,
    operator: &str,
    roles: Vec<String>,
    family: &str,
    session_end: Timestamp,
) -> Response {
    let (access, claims) = match issue_access_token(s, client, roles.clone(), Some(operator), Some(family)) {
        Ok(x) => x,
        Err(resp) => return *resp,
    };
    let refresh = hex::encode(rand::random::<[u8; 32]>());
    let rec = RefreshRec {
        family: family.to_string(),
        client_id: client.client_id.clone(),
        operator: operator.to_string(),
        roles,
        spent: false,
    };
    let until = Timestamp::now().plus(REFRESH_TTL).0.min(session_end.0);
    match s
        .store
        .record_insert(
            "refresh",
            &digest(&refresh),
            &serde_json::to_string(&rec).unwrap_or_default(),
            Some(Timestamp(until)),
        )
        .await
    {
        Ok(_) => token_response(access, &claims, Some(refresh)),
        Err(e) => store_unavailable(e),
    }
}

// ---- token endpoint: refresh_token ----------------------------------------------------------------

/// Ends a login session: no refresh token of the family works again, nor any access token
/// that carries it.
async fn revoke_family(s: &AppState, family: &str) -> drover_core::Result<()> {
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

pub(crate) async fn refresh(s: &AppState, client: &ClientRecord, form: &TokenForm) -> Response {
    let Some(token) = form.refresh_token.as_deref() else {
        return grant_error("invalid_request", "refresh_token is required");
    };
    let key = digest(token);
    let (body, version) = match s.store.record_get("refresh", &key).await {
        Ok(Some(x)) => x,
        Ok(None) => return grant_error("invalid_grant", "invalid or expired refresh token"),
        Err(e) => return store_unavailable(e),
    };
    let Ok(mut rec) = serde_json::from_str::<RefreshRec>(&body) else {
        return grant_error("invalid_grant", "invalid refresh token");
    };
    if rec.client_id != client.client_id {
        tracing::warn!(client = %client.client_id, "refresh token of another client presented");
        return grant_error("invalid_grant", "invalid or expired refresh token");
    }
    let family: Family = match s.store.record_get("refresh_family", &rec.family).await {
        Ok(Some((b, _))) => match serde_json::from_str(&b) {
            Ok(f) => f,
            Err(_) => return grant_error("invalid_grant", "invalid refresh token"),
        },
        Ok(None) => return grant_error("invalid_grant", "the login session has ended"),
        Err(e) => return store_unavailable(e),
    };
    if family.revoked {
        return grant_error("invalid_grant", "the login session was revoked");
    }
    let reuse = async |s: &AppState, rec: &RefreshRec| {
        tracing::warn!(client = %rec.client_id, operator = %rec.operator, session = %rec.family, "spent refresh token presented again: session revoked");
        if let Err(e) = revoke_family(s, &rec.family).await {
            return store_unavailable(e);
        }
        audit(
            s,
            format!("operator:{} via client:{}", rec.operator, rec.client_id),
            "token.refresh_reused",
            &rec.client_id,
            "denied",
            "",
            serde_json::json!({"session": rec.family}),
        )
        .await;
        grant_error("invalid_grant", "refresh token already used; the login session is revoked")
    };
    if rec.spent {
        return reuse(s, &rec).await;
    }
    let roles = match scope_within(form.scope.as_deref(), &rec.roles) {
        Ok(r) => r,
        Err(why) => return grant_error("invalid_scope", &why),
    };
    rec.spent = true;
    let keep = Some(Timestamp(family.created_ms).plus(SESSION_MAX));
    match s.store.record_update("refresh", &key, version, &serde_json::to_string(&rec).unwrap_or_default(), keep).await
    {
        Ok(true) => {}
        // Someone else spent it at the same moment: that is reuse too.
        Ok(false) => return reuse(s, &rec).await,
        Err(e) => return store_unavailable(e),
    }
    match s.store.get_operator(&rec.operator).await {
        Ok(Some(op)) if !op.disabled => {}
        Ok(_) => return grant_error("invalid_grant", "the operator is disabled"),
        Err(e) => return store_unavailable(e),
    }
    match sessions_not_before(s, &rec.operator).await {
        Ok(nbf) if family.created_ms <= nbf.0 => return grant_error("invalid_grant", "the login session was revoked"),
        Ok(_) => {}
        Err(e) => return store_unavailable(e),
    }
    issue_pair(s, client, &rec.operator, roles, &rec.family, Timestamp(family.created_ms).plus(SESSION_MAX)).await
}

/// RFC 7009 for refresh tokens: the session of a refresh token the client holds ends.
pub(crate) async fn revoke_refresh(s: &AppState, client: &ClientRecord, token: &str) -> drover_core::Result<()> {
    let Some((body, _)) = s.store.record_get("refresh", &digest(token)).await? else { return Ok(()) };
    let Ok(rec) = serde_json::from_str::<RefreshRec>(&body) else { return Ok(()) };
    if rec.client_id == client.client_id {
        revoke_family(s, &rec.family).await?;
        tracing::info!(client = %client.client_id, operator = %rec.operator, "login session revoked");
    }
    Ok(())
}

// ---- operator sessions ------------------------------------------------------------------------

/// Tokens acting for the operator issued before this instant are refused.
pub async fn sessions_not_before(s: &AppState, operator: &str) -> drover_core::Result<Timestamp> {
    Ok(match s.store.record_get("operator_sessions", operator).await? {
        Some((b, _)) => Timestamp(serde_json::from_str::<Sessions>(&b).map(|x| x.not_before_ms).unwrap_or(i64::MAX)),
        None => Timestamp(0),
    })
}

/// Ends every session of an operator now: their access and refresh tokens stop working.
pub async fn revoke_sessions(s: &AppState, operator: &str) -> drover_core::Result<()> {
    let body = serde_json::to_string(&Sessions { not_before_ms: Timestamp::now().0 }).unwrap_or_default();
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

// ---- device authorization (RFC 8628) -----------------------------------------------------------

const USER_CODE_CHARS: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn normalize_user_code(c: &str) -> String {
    c.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_uppercase()).collect()
}

/// `POST /oauth2/device_authorization`.
pub async fn device_authorization(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let (form, client) = match authenticated_form(&s, &headers, form, &peer.to_string()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let device_code = hex::encode(rand::random::<[u8; 32]>());
    let user_code: String = {
        use rand::Rng;
        let mut rng = rand::rng();
        (0..8).map(|_| USER_CODE_CHARS[rng.random_range(0..USER_CODE_CHARS.len())] as char).collect()
    };
    let shown = format!("{}-{}", &user_code[..4], &user_code[4..]);
    let until = Some(Timestamp::now().plus(DEVICE_TTL));
    let rec = DeviceRec {
        client_id: client.client_id.clone(),
        user_code: user_code.clone(),
        scope: form.scope.clone(),
        status: "pending".into(),
        operator: None,
        roles: Vec::new(),
        interval: DEVICE_INTERVAL,
        last_poll_ms: 0,
        expires_ms: Timestamp::now().plus(DEVICE_TTL).0,
        approved_ms: 0,
    };
    let dkey = digest(&device_code);
    let stored = async {
        if !s.store.record_insert("device_user", &user_code, &dkey, until).await? {
            return Ok(false);
        }
        s.store.record_insert("device", &dkey, &serde_json::to_string(&rec).unwrap_or_default(), until).await
    };
    match stored.await {
        Ok(true) => {}
        Ok(false) => {
            return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "try again", false);
        }
        Err(e) => return store_unavailable(e),
    }
    let uri = format!("{}/device", s.issuer);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "device_code": device_code,
            "user_code": shown,
            "verification_uri": uri,
            "verification_uri_complete": with_params(&uri, &[("user_code", &shown)]),
            "expires_in": DEVICE_TTL.as_secs(),
            "interval": DEVICE_INTERVAL,
        })),
    )
        .into_response()
}

#[derive(Debug, Deserialize, Default)]
pub struct DeviceForm {
    pub user_code: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `approve` or `deny`.
    pub action: Option<String>,
}

/// What a pending device request asks for, to show the operator before they approve.
async fn device_request(s: &AppState, user_code: &str) -> Option<(String, String)> {
    let (dkey, _) = s.store.record_get("device_user", &normalize_user_code(user_code)).await.ok()??;
    let (body, _) = s.store.record_get("device", &dkey).await.ok()??;
    let rec: DeviceRec = serde_json::from_str(&body).ok()?;
    Some((rec.client_id, rec.scope.unwrap_or_else(|| "all of your roles".into())))
}

/// `GET /device`: the page where an operator enters the code shown by the device.
pub async fn device_page(State(s): State<AppState>, Query(f): Query<DeviceForm>) -> Response {
    let code = f.user_code.as_deref().unwrap_or("");
    let asking = if code.is_empty() { None } else { device_request(&s, code).await };
    pages::device_page_for(code, asking.as_ref().map(|(c, r)| (c.as_str(), r.as_str())), None, StatusCode::OK)
}

/// `POST /device`: the operator signs in and approves (or denies) the device.
pub async fn device_submit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    form: Result<Form<DeviceForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return pages::error_page(StatusCode::BAD_REQUEST, "Malformed form.");
    };
    let code = normalize_user_code(f.user_code.as_deref().unwrap_or(""));
    let shown = f.user_code.as_deref().unwrap_or("");
    let dkey = match s.store.record_get("device_user", &code).await {
        Ok(Some((k, _))) => k,
        Ok(None) => return pages::device_page(shown, Some("Unknown or expired code."), StatusCode::BAD_REQUEST),
        Err(_) => return pages::error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
    };
    let (body, version) = match s.store.record_get("device", &dkey).await {
        Ok(Some(x)) => x,
        _ => return pages::device_page(shown, Some("Unknown or expired code."), StatusCode::BAD_REQUEST),
    };
    let Ok(mut rec) = serde_json::from_str::<DeviceRec>(&body) else {
        return pages::error_page(StatusCode::BAD_REQUEST, "Unknown or expired code.");
    };
    if rec.status != "pending" {
        return pages::device_page(shown, Some("This code was already used."), StatusCode::BAD_REQUEST);
    }
    let login_form =
        AuthorizeParams { username: f.username.clone(), password: f.password.clone(), ..Default::default() };
    let op = match login(&s, &login_form, &peer.to_string(), &rec.client_id).await {
        Ok(op) => op,
        Err(_) => return pages::device_page(shown, Some("Invalid user name or password."), StatusCode::UNAUTHORIZED),
    };
    if f.action.as_deref() == Some("deny") {
        rec.status = "denied".into();
    } else {
        match scope_within(rec.scope.as_deref(), &operator_roles(&op)) {
            Ok(roles) => {
                rec.status = "approved".into();
                rec.roles = roles;
                rec.operator = Some(op.name.clone());
                rec.approved_ms = Timestamp::now().0;
            }
            Err(why) => {
                return pages::device_page(
                    shown,
                    Some(&format!("The device asks for more than you have: {why}.")),
                    StatusCode::FORBIDDEN,
                );
            }
        }
    }
    let until = Some(Timestamp::now().plus(DEVICE_TTL));
    match s.store.record_update("device", &dkey, version, &serde_json::to_string(&rec).unwrap_or_default(), until).await
    {
        Ok(true) => {}
        _ => return pages::device_page(shown, Some("The code changed meanwhile; try again."), StatusCode::CONFLICT),
    }
    let _ = s.store.record_delete("device_user", &code).await;
    pages::done_page(rec.status == "approved")
}

pub(crate) async fn device_code(s: &AppState, client: &ClientRecord, form: &TokenForm) -> Response {
    let Some(code) = form.device_code.as_deref() else {
        return grant_error("invalid_request", "device_code is required");
    };
    let key = digest(code);
    let (body, version) = match s.store.record_get("device", &key).await {
        Ok(Some(x)) => x,
        Ok(None) => return grant_error("expired_token", "the device code has expired or is unknown"),
        Err(e) => return store_unavailable(e),
    };
    let Ok(mut rec) = serde_json::from_str::<DeviceRec>(&body) else {
        return grant_error("invalid_grant", "invalid device code");
    };
    if rec.client_id != client.client_id {
        return grant_error("invalid_grant", "the device code belongs to another client");
    }
    match rec.status.as_str() {
        "approved" => {
            // Single use: whoever takes the record gets the tokens.
            match s.store.record_take("device", &key).await {
                Ok(Some(_)) => {}
                Ok(None) => return grant_error("invalid_grant", "the device code was already used"),
                Err(e) => return store_unavailable(e),
            }
            let operator = rec.operator.clone().unwrap_or_default();
            new_session(s, client, &operator, rec.roles, "device_code", rec.approved_ms).await
        }
        "denied" => {
            let _ = s.store.record_take("device", &key).await;
            grant_error("access_denied", "the operator denied the request")
        }
        _ => {
            let now = Timestamp::now().0;
            let too_fast = now - rec.last_poll_ms < (rec.interval * 1000) as i64;
            if too_fast {
                rec.interval += 5;
            }
            rec.last_poll_ms = now;
            let until = Some(Timestamp(rec.expires_ms));
            let _ = s
                .store
                .record_update("device", &key, version, &serde_json::to_string(&rec).unwrap_or_default(), until)
                .await;
            if too_fast {
                grant_error("slow_down", "polling too often; wait 5 more seconds between polls")
            } else {
                grant_error("authorization_pending", "the operator has not approved the request yet")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_match_exactly_except_loopback_ports() {
        let reg = vec!["https://portal.example.com/cb".to_string(), "http://127.0.0.1/callback".to_string()];
        assert!(redirect_allowed(&reg, "https://portal.example.com/cb"));
        assert!(!redirect_allowed(&reg, "https://portal.example.com/cb/"));
        assert!(!redirect_allowed(&reg, "https://portal.example.com/c"));
        assert!(!redirect_allowed(&reg, "https://portal.example.com/cb?x=1"));
        assert!(!redirect_allowed(&reg, "https://portal.example.co/cb"));
        assert!(redirect_allowed(&reg, "http://127.0.0.1:49152/callback"));
        assert!(redirect_allowed(&reg, "http://127.0.0.1/callback"));
        assert!(!redirect_allowed(&reg, "http://127.0.0.1:49152/callbacks"));
        assert!(!redirect_allowed(&reg, "http://127.0.0.1:49152@evil.example/callback"));
        assert!(!redirect_allowed(&reg, "http://127.0.0.1.evil.example/callback"));
        assert!(!redirect_allowed(&reg, "http://localhost:49152/callback"));
        assert!(!redirect_allowed(&reg, "https://127.0.0.1:49152/callback"));
    }

    #[test]
    fn registrable_redirect_uris() {
        assert!(redirect_registrable("https://ci.example.com/oauth/cb").is_ok());
        assert!(redirect_registrable("http://127.0.0.1/callback").is_ok());
        assert!(redirect_registrable("com.example.app:/cb").is_ok());
        assert!(redirect_registrable("http://ci.example.com/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1.evil.com/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1@evil.com/cb").is_err());
        assert!(redirect_registrable("http://127.0.0.1:8080/cb").is_ok());
        assert!(redirect_registrable("https://*.example.com/cb").is_err());
        assert!(redirect_registrable("https://ci.example.com/cb#x").is_err());
        assert!(redirect_registrable("/relative").is_err());
    }

    #[test]
    fn pkce_s256() {
        // RFC 7636 Appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_ok(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
        assert!(!pkce_ok("short", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"));
    }
}
