//! The plain HTML pages of the authorization server: sign-in for the authorization-code flow,
//! the device-code page, and errors. No scripts; framing is refused.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::grants::AuthorizeParams;

/// HTML-escapes text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · Drover</title>\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <style>body{{font-family:sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem}}\
         label{{display:block;margin:.8rem 0 .2rem}}input{{width:100%;padding:.4rem;box-sizing:border-box}}\
         button{{margin-top:1rem;padding:.5rem 1rem}}.error{{color:#a00}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = esc(title)
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sign-in problem", &format!("<p class=\"error\">{}</p>", esc(message)))
}

fn hidden(name: &str, value: Option<&str>) -> String {
    value.map(|v| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", esc(v))).unwrap_or_default()
}

/// The sign-in form; the authorization request rides along in hidden fields.
pub fn login_page(client: &str, p: &AuthorizeParams, error: Option<&str>) -> Response {
    let status = if error.is_some() { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let err = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let fields = [
        hidden("response_type", p.response_type.as_deref()),
        hidden("client_id", p.client_id.as_deref()),
        hidden("redirect_uri", p.redirect_uri.as_deref()),
        hidden("scope", p.scope.as_deref()),
        hidden("state", p.state.as_deref()),
        hidden("code_challenge", p.code_challenge.as_deref()),
        hidden("code_challenge_method", p.code_challenge_method.as_deref()),
    ]
    .concat();
    let body = format!(
        "<p>Sign in to let <strong>{client}</strong> act for you.</p>{err}\
         <form method=\"post\" action=\"/oauth2/authorize\">{fields}\
         <label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\">Sign in</button></form>",
        client = esc(client)
    );
    page(status, "Sign in", &body)
}

/// The device page: the code the device shows, then the operator's credentials.
pub fn device_page(user_code: &str, error: Option<&str>, status: StatusCode) -> Response {
    device_page_for(user_code, None, error, status)
}

/// The device page, naming the client that asks and the roles it asks for (when known).
pub fn device_page_for(
    user_code: &str,
    asking: Option<(&str, &str)>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let err = error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default();
    let who = asking
        .map(|(c, r)| {
            format!("<p>Client <strong>{}</strong> asks to act for you with: <strong>{}</strong>.</p>", esc(c), esc(r))
        })
        .unwrap_or_default();
    let body = format!(
        "<p>Enter the code your device shows, then sign in to approve it.</p>{who}{err}\
         <form method=\"post\" action=\"/device\">\
         <label for=\"user_code\">Code</label><input id=\"user_code\" name=\"user_code\" value=\"{code}\" required>\
         <label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required>\
         <label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
         <button type=\"submit\" name=\"action\" value=\"approve\">Approve</button> \
         <button type=\"submit\" name=\"action\" value=\"deny\">Deny</button></form>",
        code = esc(user_code)
    );
    page(status, "Connect a device", &body)
}

pub fn done_page(approved: bool) -> Response {
    let msg = if approved {
        "The device is signed in. You can close this page and go back to it."
    } else {
        "The request was denied. The device will not be signed in."
    };
    page(StatusCode::OK, if approved { "Device approved" } else { "Device denied" }, &format!("<p>{msg}</p>"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::esc("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }
}
