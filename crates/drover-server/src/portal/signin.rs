//! Sign-in through the orchestrator's own authorization server: the portal is the OAuth
//! client `drover-portal` (authorization code + PKCE S256). `GET /portal/signin` puts the PKCE
//! verifier, `state` and where to go next in a `__Host-` cookie sealed with the master key (10
//! minutes; nothing is written to the database before someone signs in) and sends the browser
//! to `/oauth2/authorize`; the sign-in page there sends it back to `/portal/callback`, which
//! checks `state` against the cookie, exchanges the code in-process (the portal's client is
//! refused at the token endpoint; a code is single use) and starts a new session with a new
//! random id. Sign-out revokes the refresh-token family.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Viewer, error_page, session};
use crate::AppState;
use crate::oauth::client_auth::TokenForm;
use crate::oauth::grants::authorization_code;
use crate::oauth::pages::cookie;
use crate::secrets::new_secret;

/// The cookie that ties a callback to the browser that started the sign-in.
pub const LOGIN_COOKIE: &str = "__Host-drover-login";
const LOGIN_CONTEXT: &str = "portal_login";
const LOGIN_TTL: std::time::Duration = std::time::Duration::from_secs(600);

#[derive(Serialize, Deserialize)]
struct Login {
    state: String,
    verifier: String,
    next: String,
    until_ms: i64,
}

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    next: Option<String>,
    /// Set on the redirect to the issuer's host, so that a proxy rewriting `Host` cannot loop.
    hop: Option<u8>,
}

/// Where to go after sign-in: a portal path of ours, nothing else (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    let plain = |n: &str| n.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-_.?=&".contains(&b));
    match next {
        Some(n)
            if n.starts_with("/portal/")
                && plain(n)
                && !n.contains("//")
                && !n.contains("..")
                && n.len() <= 512
                && !n.starts_with("/portal/signin")
                && !n.starts_with("/portal/callback") =>
        {
            n.to_string()
        }
        _ => "/portal/".to_string(),
    }
}

fn callback_uri(s: &AppState) -> String {
    format!("{}/portal/callback", s.issuer)
}

fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age: u64) {
    if let Ok(v) =
        HeaderValue::from_str(&format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}"))
    {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn unavailable() -> Response {
    error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again in a moment", "The orchestrator cannot reach its database.")
}

/// The host the browser used is the issuer's (cookies are per host: a sign-in started on
/// another name for this server could not finish on the issuer's).
fn on_issuer_host(s: &AppState, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    match url::Url::parse(&s.issuer) {
        Ok(u) => {
            let want = match (u.host_str(), u.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return true,
            };
            host.eq_ignore_ascii_case(&want)
        }
        Err(_) => true,
    }
}

/// `GET /portal/signin`: to the authorization server's sign-in page.
pub async fn start(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<SignInQuery>) -> Response {
    let next = safe_next(q.next.as_deref());
    if q.hop.is_none() && !on_issuer_host(&s, &headers) {
        let query = serde_urlencoded::to_string([("next", next.as_str()), ("hop", "1")]).unwrap_or_default();
        return Redirect::to(&format!("{}/portal/signin?{query}", s.issuer)).into_response();
    }
    let (state, verifier) = (new_secret(), new_secret());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let until_ms = drover_types::Timestamp::now().plus(LOGIN_TTL).0;
    let rec = Login { state: state.clone(), verifier, next, until_ms };
    let Ok(sealed) = s.keys.master().seal(serde_json::to_string(&rec).unwrap_or_default().as_bytes(), LOGIN_CONTEXT)
    else {
        return unavailable();
    };
    let params = [
        ("response_type", "code"),
        ("client_id", crate::oauth::PORTAL_CLIENT),
        ("redirect_uri", &callback_uri(&s)),
        ("state", &state),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    let mut resp = Redirect::to(&format!("/oauth2/authorize?{q}")).into_response();
    set_cookie(&mut resp, LOGIN_COOKIE, &sealed, LOGIN_TTL.as_secs());
    resp
}

#[derive(Deserialize, Default)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

fn sign_in_again(message: &str) -> Response {
    error_page(StatusCode::BAD_REQUEST, "Sign-in did not finish", message)
}

/// `GET /portal/callback`: back from the sign-in page with a code.
pub async fn callback(State(s): State<AppState>, headers: HeaderMap, Query(q): Query<CallbackQuery>) -> Response {
    let Some(sealed) = cookie(&headers, LOGIN_COOKIE) else {
        return sign_in_again("This sign-in was not started in this browser, or it expired. Sign in again.");
    };
    let login = match s
        .keys
        .master()
        .open(&sealed, LOGIN_CONTEXT)
        .ok()
        .and_then(|p| serde_json::from_slice::<Login>(&p).ok())
    {
        Some(l) if l.until_ms > drover_types::Timestamp::now().0 => l,
        Some(_) => return sign_in_again("This sign-in expired. Sign in again."),
        None => return sign_in_again("This sign-in is not readable. Sign in again."),
    };
    let state_ok = q.state.as_deref().is_some_and(|st| bool::from(st.as_bytes().ct_eq(login.state.as_bytes())));
    if !state_ok {
        tracing::warn!("portal callback: state does not match the sign-in this browser started");
        return sign_in_again("This answer does not belong to the sign-in this browser started. Sign in again.");
    }
    if let Some(e) = q.error.as_deref() {
        let why = q.error_description.as_deref().unwrap_or(e);
        return sign_in_again(&format!("The authorization server refused the sign-in: {why}."));
    }
    let Some(code) = q.code.as_deref() else { return sign_in_again("The answer carries no code. Sign in again.") };
    let client = match s.store.get_client(crate::oauth::PORTAL_CLIENT).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => {
            return error_page(
                StatusCode::FORBIDDEN,
                "Portal disabled",
                "The portal's client (drover-portal) is disabled; an administrator can enable it.",
            );
        }
        Err(_) => return unavailable(),
    };
    let form = TokenForm::for_code(code, &callback_uri(&s), &login.verifier);
    let tokens = match authorization_code::grant(&s, &client, &form).await {
        Ok(t) => t,
        Err(e) if e.status.is_server_error() => return unavailable(),
        Err(e) => {
            tracing::warn!(reason = %e.description, "portal callback: code exchange refused");
            return sign_in_again(&format!("The sign-in could not be completed ({}). Sign in again.", e.description));
        }
    };
    let operator = tokens.claims.act.as_ref().map(|a| a.sub.clone()).unwrap_or_default();
    // A session this browser had is over: the new one has a new id (no fixation).
    if let Some(old) = cookie(&headers, session::COOKIE) {
        let _ = session::end(&s, &old).await;
    }
    let id = match session::create(&s, &operator, &tokens).await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "portal: the session could not be stored");
            if let Some(f) = tokens.claims.sid.as_deref() {
                let _ = crate::oauth::sessions::revoke_family(&s, f).await;
            }
            return unavailable();
        }
    };
    tracing::info!(operator = %operator, "portal: signed in");
    let mut resp = Redirect::to(&login.next).into_response();
    set_cookie(&mut resp, session::COOKIE, &id, session::ABSOLUTE.as_secs());
    set_cookie(&mut resp, LOGIN_COOKIE, "", 0);
    resp
}

/// `POST /portal/signout` (guarded: a signed-in session and its CSRF token).
pub async fn sign_out(State(s): State<AppState>, headers: HeaderMap, v: Viewer) -> Response {
    let id = cookie(&headers, session::COOKIE).unwrap_or_default();
    if let Err(e) = session::end(&s, &id).await {
        tracing::error!(error = %e, "portal sign-out: store error");
        return unavailable();
    }
    tracing::info!(operator = %v.session.operator, "portal: signed out");
    let mut resp = Redirect::to("/portal/signed-out").into_response();
    set_cookie(&mut resp, session::COOKIE, "", 0);
    resp
}

/// `GET /portal/signed-out`.
pub async fn signed_out() -> Response {
    let html = super::pages::SignedOut { css: super::assets::css() };
    super::render(StatusCode::OK, &html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_portal_path_only() {
        assert_eq!(safe_next(Some("/portal/deployments/4")), "/portal/deployments/4");
        assert_eq!(safe_next(Some("/portal/audit?outcome=denied")), "/portal/audit?outcome=denied");
        for bad in [
            "https://evil.example/",
            "//evil.example/portal/",
            "/portal//evil.example",
            "/portal/\\evil",
            "/api/v1/clients",
            "/portal/../api",
            "/portal/%2e%2e/oauth2/authorize",
            "/portal/x%0aSet-Cookie:a=b",
            "/portal/é",
            "/portal/signin",
        ] {
            assert_eq!(safe_next(Some(bad)), "/portal/", "{bad}");
        }
        assert_eq!(safe_next(None), "/portal/");
    }
}
