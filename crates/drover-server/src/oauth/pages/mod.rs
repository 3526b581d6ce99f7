//! The plain HTML pages of the authorization server: sign-in for the authorization-code flow
//! ([`authorize`]), the device-code page ([`device`]), and errors. No scripts; framing is
//! refused; every form carries a CSRF token bound to a `__Host-` cookie (double submit), checked
//! before anything else, so no other site can post a sign-in or an approval.

pub mod authorize;
pub mod device;

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use drover_core::store::OperatorRecord;
use subtle::ConstantTimeEq;

use crate::AppState;

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

/// The CSRF cookie; `__Host-`: HTTPS only, this host only, path `/`.
pub const CSRF_COOKIE: &str = "__Host-drover-csrf";
/// The form field carrying the same value.
pub const CSRF_FIELD: &str = "csrf_token";

/// The browser's CSRF token if it has a well-formed one, else a new one.
fn csrf_token(headers: &HeaderMap) -> String {
    cookie(headers, CSRF_COOKIE)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(crate::secrets::new_secret)
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A form post carries the token of the cookie its page set.
pub(crate) fn csrf_ok(headers: &HeaderMap, field: Option<&str>) -> bool {
    match (cookie(headers, CSRF_COOKIE), field) {
        (Some(c), Some(f)) if c.len() == 64 => bool::from(c.as_bytes().ct_eq(f.as_bytes())),
        _ => false,
    }
}

/// The answer to a form post whose CSRF token is missing or wrong.
pub(crate) fn csrf_refused() -> Response {
    tracing::warn!("form post without a matching CSRF token refused");
    error_page(
        StatusCode::FORBIDDEN,
        "This form expired or was not sent from this page. Reload the page and try again.",
    )
}

/// The sign-in and device pages' CSP: nothing but their inline style; forms go to this origin
/// only, and, on the sign-in page, to the origin of the client's redirect URI, where the
/// signed-in form is redirected (browsers hold a form's redirects to `form-action` too).
fn csp(form_to: Option<&str>) -> HeaderValue {
    let extra = form_to
        .filter(|o| o.bytes().all(|b| b.is_ascii_alphanumeric() || b".:/[]-".contains(&b)))
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'{extra}; base-uri 'none'; frame-ancestors 'none'"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; form-action 'self'; frame-ancestors 'none'"))
}

/// Where a redirect URI's form redirect may go, for [`csp`]: its origin (`scheme://host[:port]`),
/// or, for a private-use scheme (`com.example.app:/callback`, no origin), the scheme.
pub(crate) fn origin_of(uri: &str) -> Option<String> {
    let u = url::Url::parse(uri).ok()?;
    match u.origin().ascii_serialization() {
        o if o != "null" => Some(o),
        _ => Some(format!("{}:", u.scheme())),
    }
}

fn page(status: StatusCode, title: &str, body: &str, csrf: Option<&str>) -> Response {
    page_to(status, title, body, csrf, None)
}

fn page_to(status: StatusCode, title: &str, body: &str, csrf: Option<&str>, form_to: Option<&str>) -> Response {
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
    h.insert(header::CONTENT_SECURITY_POLICY, csp(form_to));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Some(t) = csrf
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={t}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
        ))
    {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}

pub fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sign-in problem", &format!("<p class=\"error\">{}</p>", esc(message)), None)
}

fn hidden(name: &str, value: Option<&str>) -> String {
    value.map(|v| format!("<input type=\"hidden\" name=\"{name}\" value=\"{}\">", esc(v))).unwrap_or_default()
}

fn alert(error: Option<&str>) -> String {
    error.map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e))).unwrap_or_default()
}

/// Why a sign-in on a page failed.
pub(crate) enum SignInError {
    /// Wrong name or password, unknown, disabled or locked out: the page says only "invalid".
    Invalid,
    /// The store failed: "try again later".
    Unavailable,
}

/// Checks an operator's credentials from a form, with the same limits and audit as the API.
pub(crate) async fn sign_in(
    s: &AppState,
    username: Option<&str>,
    password: Option<&str>,
    peer: SocketAddr,
    client: &str,
    route: &str,
) -> Result<OperatorRecord, SignInError> {
    let (Some(user), Some(pw)) = (username, password) else { return Err(SignInError::Invalid) };
    let source = peer.to_string();
    match s.auth.authenticate(user, pw, peer.ip()).await {
        Ok(signed_in) => {
            let op = signed_in.operator;
            let detail = serde_json::json!({"client": client, "route": route});
            // A sign-in that cannot be recorded does not happen.
            super::audit(s, format!("operator:{}", op.name), "auth.login", &op.name, "success", &source, detail)
                .await
                .map_err(|_| SignInError::Unavailable)?;
            Ok(op)
        }
        Err(f) => {
            let detail = serde_json::json!({"route": route, "reason": f.reason, "client": client});
            let _ = super::audit(s, "anonymous".into(), "auth.failed", user, "failure", &source, detail).await;
            if f.locked_now {
                let detail = serde_json::json!({"source": peer.ip().to_string()});
                let _ = super::audit(s, "system".into(), "operator.locked", user, "success", &source, detail).await;
            }
            if f.unavailable() { Err(SignInError::Unavailable) } else { Err(SignInError::Invalid) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_go_to_this_origin_and_the_redirect_uris() {
        let with = |u: &str| csp(origin_of(u).as_deref()).to_str().unwrap().to_string();
        assert!(with("http://127.0.0.1:5555/callback").contains("form-action 'self' http://127.0.0.1:5555;"));
        assert!(with("https://ci.example.com/cb?x=1").contains("form-action 'self' https://ci.example.com;"));
        assert!(with("com.example.app:/callback").contains("form-action 'self' com.example.app:;"));
        assert!(csp(None).to_str().unwrap().contains("form-action 'self';"));
        // Nothing that could end the directive or add one gets in.
        assert!(csp(Some("https://x; script-src *")).to_str().unwrap().contains("form-action 'self';"));
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }

    #[test]
    fn csrf_needs_the_cookie_and_the_field_to_match() {
        let t = "ab".repeat(32);
        let mut h = HeaderMap::new();
        assert!(!csrf_ok(&h, Some(&t)), "no cookie");
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("x=1; {CSRF_COOKIE}={t}")).unwrap());
        assert!(csrf_ok(&h, Some(&t)));
        assert!(!csrf_ok(&h, None), "no field");
        assert!(!csrf_ok(&h, Some(&"cd".repeat(32))), "another token");
        assert_eq!(csrf_token(&h), t, "a page reuses the browser's token (several tabs work)");
        h.insert(header::COOKIE, HeaderValue::from_static("__Host-drover-csrf=short"));
        assert!(!csrf_ok(&h, Some("short")));
        assert_ne!(csrf_token(&h), "short");
    }
}
