//! `GET/POST /device`: where an operator enters the code a device shows (RFC 8628 §3.3), signs
//! in, and approves or denies it. The page names the asking client and the roles it asks for.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::{
    CSRF_FIELD, SignInError, alert, csrf_ok, csrf_refused, csrf_token, error_page, esc, hidden, page, sign_in,
};
use crate::AppState;
use crate::oauth::grants::device_code::{self, DecideError};

#[derive(Debug, Deserialize, Default)]
pub struct DeviceForm {
    pub user_code: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `approve` or `deny`.
    pub action: Option<String>,
    pub csrf_token: Option<String>,
}

/// The device page: the code the device shows, then the operator's credentials.
fn device_page(
    user_code: &str,
    asking: Option<(&str, &str)>,
    error: Option<&str>,
    status: StatusCode,
    csrf: &str,
) -> Response {
    let who = asking
        .map(|(c, r)| {
            format!("<p>Client <strong>{}</strong> asks to act for you with: <strong>{}</strong>.</p>", esc(c), esc(r))
        })
        .unwrap_or_default();
    let body = format!(
        "<p>Enter the code your device shows, then sign in to approve it.</p>{who}{err}\
         <form method=\"post\" action=\"/device\">{csrf_field}\
         <label for=\"user_code\">Code</label><input id=\"user_code\" name=\"user_code\" value=\"{code}\" required>\
         <label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" name=\"action\" value=\"approve\">Approve</button> \
         <button type=\"submit\" name=\"action\" value=\"deny\">Deny</button></form>",
        code = esc(user_code),
        err = alert(error),
        csrf_field = hidden(CSRF_FIELD, Some(csrf)),
    );
    page(status, "Connect a device", &body, Some(csrf))
}

fn done_page(approved: bool) -> Response {
    let msg = if approved {
        "The device is signed in. You can close this page and go back to it."
    } else {
        "The request was denied. The device will not be signed in."
    };
    page(StatusCode::OK, if approved { "Device approved" } else { "Device denied" }, &format!("<p>{msg}</p>"), None)
}

/// `GET /device`.
pub async fn show(State(s): State<AppState>, headers: HeaderMap, Query(f): Query<DeviceForm>) -> Response {
    let code: String = f.user_code.as_deref().unwrap_or("").chars().take(32).collect();
    let asking = if code.is_empty() { None } else { device_code::pending(&s, &code).await };
    let asking = asking.as_ref().map(|(c, r)| (c.as_str(), r.as_str()));
    device_page(&code, asking, None, StatusCode::OK, &csrf_token(&headers))
}

/// `POST /device`: the operator signs in and approves (or denies) the device.
pub async fn submit(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<DeviceForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return error_page(StatusCode::BAD_REQUEST, "Malformed form.");
    };
    if !csrf_ok(&headers, f.csrf_token.as_deref()) {
        return csrf_refused();
    }
    let csrf = csrf_token(&headers);
    let shown: String = f.user_code.as_deref().unwrap_or("").chars().take(32).collect();
    let again = |msg: &str, status| device_page(&shown, None, Some(msg), status, &csrf);
    let client = match device_code::client_of(&s, &shown).await {
        Ok(c) => c,
        Err(DecideError::AlreadyUsed) => return again("This code was already used.", StatusCode::BAD_REQUEST),
        Err(DecideError::Unavailable) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
        Err(_) => return again("Unknown or expired code.", StatusCode::BAD_REQUEST),
    };
    let op = match sign_in(&s, f.username.as_deref(), f.password.as_deref(), peer, &client, "/device").await {
        Ok(op) => op,
        Err(SignInError::Invalid) => return again("Invalid user name or password.", StatusCode::UNAUTHORIZED),
        Err(SignInError::Unavailable) => return error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
    };
    let approve = f.action.as_deref() != Some("deny");
    match device_code::decide(&s, &shown, &op, approve).await {
        Ok(approved) => done_page(approved),
        Err(DecideError::TooMuch(why)) => {
            again(&format!("The device asks for more than you have: {why}."), StatusCode::FORBIDDEN)
        }
        Err(DecideError::AlreadyUsed) => again("This code was already used.", StatusCode::BAD_REQUEST),
        Err(DecideError::Changed) => again("The code changed meanwhile; try again.", StatusCode::CONFLICT),
        Err(DecideError::UnknownCode) => again("Unknown or expired code.", StatusCode::BAD_REQUEST),
        Err(DecideError::Unavailable) => error_page(StatusCode::SERVICE_UNAVAILABLE, "Try again later."),
    }
}
