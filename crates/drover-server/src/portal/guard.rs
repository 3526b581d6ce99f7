//! The guard every portal page runs through (registered by `Pages::add`): origin (posts), the
//! session cookie → session → the operator's principal, the synchronizer CSRF token (posts),
//! the page's declared need, then the page. Like the API guard it records every state change —
//! and every page that shows a deployment's log — before it is made (one whose entry cannot be
//! written is not made: 503) and its outcome after, as the signed-in operator
//! (`operator:NAME via client:drover-portal`).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::rbac::Privilege;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::error_page;
use super::session::{self, Loaded};
use crate::AppState;
use crate::oauth::pages::cookie;
use crate::request::{Facts, outcome, with_request_id};

/// What a page needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any signed-in operator (the page shows what they may see).
    SignedIn,
    /// The privilege, held globally or on some application (the service layer checks the
    /// application of what the page touches).
    Privilege(Privilege),
}

#[derive(Clone)]
pub struct PageGuard {
    pub state: AppState,
    pub need: Need,
}

/// The form field every post carries.
pub const CSRF_FIELD: &str = "csrf_token";
/// A portal form is small; anything larger is refused before it is parsed...
const MAX_FORM_BYTES: usize = 64 * 1024;
/// ...but for a file upload (a keystore: kilobytes).
const MAX_UPLOAD_BYTES: usize = 256 * 1024;

/// The CSRF field of a posted form, urlencoded or multipart.
fn csrf_field(content_type: &str, body: &[u8]) -> Option<String> {
    match super::multipart::boundary(content_type) {
        Some(b) => {
            let parts = super::multipart::parse(body, &b)?;
            super::multipart::text(&parts, CSRF_FIELD).map(String::from)
        }
        None => serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .ok()?
            .into_iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v),
    }
}

/// A post from a page of ours. Browsers say where a request comes from in `Sec-Fetch-Site`
/// (`same-origin` for our own forms); with `Referrer-Policy: no-referrer` their `Origin` on a
/// form post is `null`, so `Origin` decides only for a browser that sends no `Sec-Fetch-Site`,
/// and must then be the issuer's origin.
fn same_origin(s: &AppState, h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    match h.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("")) {
        None => true,
        Some(o) => crate::cors::own_origin(&s.issuer) == o,
    }
}

/// Not signed in (or no longer): a page read goes to sign-in and comes back; a post is refused
/// (it is never replayed after sign-in).
fn sign_in_first(post: bool, facts: &Facts, query: Option<&str>) -> Response {
    if post {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended, so nothing was changed. Sign in again and repeat what you did.",
        );
    }
    let next = match query {
        Some(q) => format!("{}?{q}", facts.path),
        None => facts.path.clone(),
    };
    let q = serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default();
    Redirect::to(&format!("/portal/signin?{q}")).into_response()
}

/// The deployment page's live fragment (`?fragment=1`), which its live updates fetch.
fn is_fragment(route: &str, query: Option<&str>) -> bool {
    route == "/portal/deployments/{id}" && query.is_some_and(|q| q.split('&').any(|kv| kv == "fragment=1"))
}

/// Pages that show a deployment's log, and the audit export, are recorded before they are
/// served, as the API's downloads are (a log may hold what a task printed; the export holds the
/// chain key); the deployment page's live fragment shows no log (a task's message carries no
/// output either).
fn reads_log(route: &str, query: Option<&str>) -> bool {
    route == "/portal/deployments/{id}/live"
        || route == "/portal/audit/export"
        || (route == "/portal/deployments/{id}" && !is_fragment(route, query))
}

/// What an open page requests by itself (its live stream, the fragments its updates fetch) is
/// not the operator's activity: it does not keep the session from timing out.
fn by_itself(route: &str, query: Option<&str>) -> bool {
    route == "/portal/deployments/{id}/live" || is_fragment(route, query)
}

async fn audit(s: &AppState, e: drover_core::audit::NewAuditEntry) -> bool {
    s.audit_sink.record(e).await.is_ok()
}

/// Middleware: session, CSRF, need; audit of posts.
pub async fn require(State(g): State<PageGuard>, req: Request, next: Next) -> Response {
    let facts = Facts::of(&req);
    let s = &g.state;
    let post = req.method() == Method::POST;
    if post && !same_origin(s, req.headers()) {
        let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        tracing::warn!(path = %facts.path, origin = %origin, "portal: cross-site post refused");
        let detail = json!({"route": facts.route, "origin": origin});
        audit(s, facts.entry("anonymous", "portal.cross_site".into(), facts.path.clone(), "denied", detail)).await;
        let resp = error_page(StatusCode::FORBIDDEN, "Not allowed", "This form was not sent from a Drover page.");
        return with_request_id(resp, &facts.request_id);
    }
    let query = req.uri().query().map(String::from);
    let Some(id) = cookie(req.headers(), session::COOKIE) else {
        return with_request_id(sign_in_first(post, &facts, query.as_deref()), &facts.request_id);
    };
    let (sess, principal) = match session::load(s, &id, !by_itself(&facts.route, query.as_deref())).await {
        Loaded::Active(sess, p) => (sess, p),
        Loaded::Ended(why) => {
            tracing::debug!(reason = why, "portal: no live session");
            return with_request_id(sign_in_first(post, &facts, query.as_deref()), &facts.request_id);
        }
        Loaded::Unavailable => {
            let resp = error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a moment",
                "The orchestrator cannot reach its database. You are still signed in; reload this page shortly.",
            );
            return with_request_id(resp, &facts.request_id);
        }
    };
    let who = principal.audit_label();
    let mut req = if post {
        let (parts, body) = req.into_parts();
        let content_type =
            parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        let limit = if super::multipart::boundary(&content_type).is_some() { MAX_UPLOAD_BYTES } else { MAX_FORM_BYTES };
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            let resp = error_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                "This form is larger than a portal form can be.",
            );
            return with_request_id(resp, &facts.request_id);
        };
        let token = csrf_field(&content_type, &bytes);
        if !token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(sess.csrf.as_bytes()))) {
            tracing::warn!(principal = %who, path = %facts.path, "portal: post without this session's CSRF token refused");
            let detail = json!({"route": facts.route, "reason": "missing or wrong CSRF token"});
            audit(s, facts.entry(&who, "portal.csrf_refused".into(), facts.path.clone(), "denied", detail)).await;
            let resp = error_page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                "This form expired or was not sent from this session's page. Reload the page and try again.",
            );
            return with_request_id(resp, &facts.request_id);
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    if let Need::Privilege(p) = g.need
        && !principal.may_call(p)
    {
        tracing::warn!(principal = %principal.label(), privilege = %p, path = %facts.path, "portal: permission denied");
        let detail = json!({"privilege": p.as_str(), "route": format!("{} {}", facts.method, facts.route)});
        audit(s, facts.entry(&who, "permission.denied".into(), facts.path.clone(), "denied", detail)).await;
        let resp = error_page(StatusCode::FORBIDDEN, "Not allowed", &format!("This needs the privilege {p}."));
        return with_request_id(resp, &facts.request_id);
    }
    let action = format!("{} {}", facts.method, facts.route);
    let audited = post || reads_log(&facts.route, query.as_deref());
    if audited && !audit(s, facts.entry(&who, action.clone(), facts.path.clone(), "started", json!({}))).await {
        let resp = error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again in a moment",
            "The audit log cannot be written, so nothing was changed.",
        );
        return with_request_id(resp, &facts.request_id);
    }
    req.extensions_mut().insert((principal, sess));
    let resp = next.run(req).await;
    if audited {
        let status = resp.status();
        let detail = json!({"status": status.as_u16()});
        audit(s, facts.entry(&who, action, facts.path.clone(), outcome(status), detail)).await;
    }
    with_request_id(resp, &facts.request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_pages_are_audited_fragments_are_not() {
        assert!(reads_log("/portal/deployments/{id}", None));
        assert!(reads_log("/portal/deployments/{id}/live", Some("after=3")));
        assert!(!reads_log("/portal/deployments/{id}", Some("fragment=1")));
        assert!(reads_log("/portal/deployments/{id}", Some("fragment=10")));
        assert!(!reads_log("/portal/pipelines/{name}", None));
    }

    #[test]
    fn what_a_page_fetches_by_itself_is_not_activity() {
        assert!(by_itself("/portal/deployments/{id}/live", None));
        assert!(by_itself("/portal/deployments/{id}", Some("fragment=1")));
        assert!(!by_itself("/portal/deployments/{id}", None));
        assert!(!by_itself("/portal/deployments/{id}", Some("fragment=10")));
        assert!(!by_itself("/portal/", None));
    }
}
