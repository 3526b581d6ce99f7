//! `GET/POST /oauth2/authorize`: the sign-in page of the authorization-code flow. The client
//! and redirect URI are checked before anything is sent to that URI (RFC 6749 §4.1.2.1: with an
//! unknown client or a wrong redirect URI the user is told, never redirected).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover_core::store::ClientRecord;
use drover_types::Timestamp;
use serde::Deserialize;

use super::{
    CSRF_FIELD, SignInError, alert, csrf_ok, csrf_refused, csrf_token, error_page, esc, hidden, origin_of, page_to,
    sign_in,
};
use crate::AppState;
use crate::oauth::grants::authorization_code::{self, AuthzCode};
use crate::oauth::grants::device_code::operator_roles;
use crate::oauth::grants::scope_within;
use crate::oauth::redirects::redirect_allowed;

#[derive(Debug, Deserialize, Default, Clone)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    // The sign-in form adds these.
    pub username: Option<String>,
    pub password: Option<String>,
    pub csrf_token: Option<String>,
}

/// The client and redirect URI, checked before anything is sent back to that URI.
async fn check_client(s: &AppState, p: &AuthorizeParams) -> Result<(ClientRecord, String), Response> {
    let bad = |msg: &str| error_page(StatusCode::BAD_REQUEST, msg);
    let id = p.client_id.as_deref().ok_or_else(|| bad("The request names no client."))?;
    let client = match s.store.get_client(id).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => return Err(bad("Unknown or disabled client.")),
        Err(e) => {
            tracing::error!(error = %e, "authorize: store error");
            return Err(error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."));
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

fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{q}")
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string()), (header::CACHE_CONTROL, "no-store".into())])
        .into_response()
}

fn error_redirect(s: &AppState, uri: &str, p: &AuthorizeParams, error: &str, description: &str) -> Response {
    let mut params = vec![("error", error), ("error_description", description), ("iss", s.issuer.as_str())];
    if let Some(st) = p.state.as_deref() {
        params.push(("state", st));
    }
    redirect(&with_params(uri, &params))
}

/// The sign-in form; the authorization request rides along in hidden fields.
fn login_page(client: &str, uri: &str, p: &AuthorizeParams, error: Option<&str>, csrf: &str) -> Response {
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let fields = [
        hidden("response_type", p.response_type.as_deref()),
        hidden("client_id", p.client_id.as_deref()),
        hidden("redirect_uri", p.redirect_uri.as_deref()),
        hidden("scope", p.scope.as_deref()),
        hidden("state", p.state.as_deref()),
        hidden("code_challenge", p.code_challenge.as_deref()),
        hidden("code_challenge_method", p.code_challenge_method.as_deref()),
        hidden(CSRF_FIELD, Some(csrf)),
    ]
    .concat();
    let body = format!(
        "<p>Sign in to let <strong>{client}</strong> act for you.</p>{err}\
         <form method=\"post\" action=\"/oauth2/authorize\">{fields}\
         <label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>",
        client = esc(client),
        err = alert(error),
    );
    page_to(status, "Sign in", &body, Some(csrf), origin_of(uri).as_deref())
}

/// `GET /oauth2/authorize`: the sign-in page.
pub async fn show(State(s): State<AppState>, headers: HeaderMap, Query(p): Query<AuthorizeParams>) -> Response {
    let (client, uri) = match check_client(&s, &p).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    if let Err((e, d)) = check_request(&p) {
        return error_redirect(&s, &uri, &p, e, d);
    }
    login_page(&client.client_id, &uri, &p, None, &csrf_token(&headers))
}

/// `POST /oauth2/authorize`: the sign-in form; on success, back to the client with a code.
pub async fn submit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<AuthorizeParams>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(p)) = form else {
        return error_page(StatusCode::BAD_REQUEST, "Malformed form.");
    };
    if !csrf_ok(&headers, p.csrf_token.as_deref()) {
        return csrf_refused();
    }
    let (client, uri) = match check_client(&s, &p).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    if let Err((e, d)) = check_request(&p) {
        return error_redirect(&s, &uri, &p, e, d);
    }
    let csrf = csrf_token(&headers);
    let route = "/oauth2/authorize";
    let op = match sign_in(&s, p.username.as_deref(), p.password.as_deref(), peer, &client.client_id, route).await {
        Ok(op) => op,
        Err(SignInError::Invalid) => {
            return login_page(&client.client_id, &uri, &p, Some("Invalid user name or password."), &csrf);
        }
        Err(SignInError::Unavailable) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
    };
    let roles = match scope_within(p.scope.as_deref(), &operator_roles(&op)) {
        Ok(r) => r,
        Err(e) => return error_redirect(&s, &uri, &p, e.error, &e.description),
    };
    let rec = AuthzCode {
        client_id: client.client_id.clone(),
        redirect_uri: uri.clone(),
        challenge: p.code_challenge.clone().unwrap_or_default(),
        operator: op.name.clone(),
        roles,
        issued_ms: Timestamp::now().0,
    };
    let code = match authorization_code::issue(&s, &rec).await {
        Ok(Some(code)) => code,
        Ok(None) | Err(_) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
    };
    let mut params = vec![("code", code.as_str()), ("iss", s.issuer.as_str())];
    if let Some(st) = p.state.as_deref() {
        params.push(("state", st));
    }
    redirect(&with_params(&uri, &params))
}
