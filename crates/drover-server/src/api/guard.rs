//! The guard every `/api/v1` and `/agent/v1` route runs through (registered by `Routes::add`):
//! request → principal (bearer token or operator Basic) → the route's declared privilege
//! (a global one held globally, an application one held on some application; the service
//! layer then checks the target's application) → the handler. It audits failed and fresh
//! sign-ins, denials, and every state-changing `/api/v1` call with its status.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use drover_core::audit::NewAuditEntry;
use drover_core::rbac::{Principal, PrincipalKind, Privilege};
use serde_json::json;

use crate::AppState;
use crate::auth::{LOCKOUT_FOR, LOCKOUT_THRESHOLD};
use crate::error::ApiError;
use crate::oauth::Refused;
use crate::request::{Facts, outcome, with_request_id};
use drover_types::ErrorCode;

/// The route's declared privilege, checked by [`require`].
#[derive(Clone)]
pub struct Guard {
    pub state: AppState,
    pub privilege: Privilege,
}

/// How a request authenticated, kept for a stream that checks its caller again while it runs.
#[derive(Clone)]
pub enum Credential {
    Bearer(String),
    /// An operator who gave their password (checked once, at the request), the hash it
    /// matched and when: a new password, or their sessions revoked since, ends what it opened.
    Basic {
        operator: String,
        password_hash: String,
        at: drover_types::Timestamp,
    },
}

/// The caller as of now: the bearer token verified again (its expiry aside: the stream has a
/// bound of its own), or the operator looked up again — enabled, with the same password and
/// no session revocation since. `Err(Invalid)` once they are gone.
pub async fn caller_now(s: &AppState, c: &Credential) -> Result<Principal, Refused> {
    match c {
        Credential::Bearer(token) => crate::oauth::reverify_bearer(s, token).await,
        Credential::Basic { operator, password_hash, at } => {
            let op = match s.store.get_operator(operator).await {
                Ok(Some(op)) if !op.disabled && op.password_hash == *password_hash => op,
                Ok(_) => return Err(Refused::Invalid("operator gone, disabled or given a new password")),
                Err(_) => return Err(Refused::Unavailable),
            };
            match crate::oauth::sessions::not_before(s, &op.name).await {
                Ok(nb) if nb.0 >= at.0 => Err(Refused::Invalid("operator sessions revoked")),
                Ok(_) => Ok(s.principals.resolve(PrincipalKind::Operator, &op.name, op.roles)),
                Err(_) => Err(Refused::Unavailable),
            }
        }
    }
}

/// A log stream's check, every few seconds while it runs: may the caller, as of now, still
/// read the deployment? A database that cannot say does not end the stream (it cannot read
/// logs either; the next check decides).
pub fn follow_check(s: &AppState, c: Credential, id: i64) -> crate::sse::Recheck {
    let s = s.clone();
    std::sync::Arc::new(move || {
        let (s, c) = (s.clone(), c.clone());
        Box::pin(async move {
            match caller_now(&s, &c).await {
                Ok(p) => match crate::service::deployments::may_follow(&crate::service::Ctx::new(&s, &p), id).await {
                    Ok(()) => true,
                    Err(drover_core::Error::Unavailable(_)) => true,
                    Err(_) => {
                        tracing::info!(principal = %p.label(), deployment = id, "log stream ended: the caller may no longer read it");
                        false
                    }
                },
                Err(Refused::Unavailable) => true,
                Err(Refused::Invalid(why)) => {
                    tracing::info!(reason = why, deployment = id, "log stream ended: its credentials no longer hold");
                    false
                }
            }
        })
    })
}

/// Appends an entry and waits until it is durable; false when it could not be written.
async fn audit(state: &AppState, e: NewAuditEntry) -> bool {
    state.audit_sink.record(e).await.is_ok()
}

/// Calls whose entries come before the call runs: state changes (never one without its
/// entry), and downloads of artifacts and logs.
fn audited(method: &axum::http::Method, route: &str) -> bool {
    if !route.starts_with("/api/") {
        return false;
    }
    *method != axum::http::Method::GET
        || route.ends_with("/content")
        || route.ends_with("/logs")
        || route.ends_with("/audit/export")
}

fn unavailable() -> Response {
    ApiError::unavailable().into_response()
}

fn parse_basic(req: &Request) -> Option<(String, String)> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Middleware: authenticate, then authorize against the route's privilege.
pub async fn require(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let ctx = Facts::of(&req);
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    if let Some(token) = bearer {
        let principal = match crate::oauth::verify_bearer(&g.state, &token).await {
            Ok(p) => p,
            Err(Refused::Unavailable) => return with_request_id(unavailable(), &ctx.request_id),
            Err(Refused::Invalid(why)) => {
                tracing::warn!(reason = why, path = %ctx.path, "bearer token refused");
                let e = ctx.entry(
                    "anonymous",
                    "auth.failed".into(),
                    "bearer".into(),
                    "failure",
                    json!({"route": ctx.route, "reason": why}),
                );
                audit(&g.state, e).await;
                let resp = ApiError::new(ErrorCode::InvalidToken, "the access token is invalid, expired or revoked")
                    .into_response();
                return with_request_id(resp, &ctx.request_id);
            }
        };
        let credential = Credential::Bearer(token);
        return authorized(g, ctx, principal, credential, req, next).await;
    }
    let Some((user, password)) = parse_basic(&req) else {
        return with_request_id(ApiError::unauthorized().into_response(), &ctx.request_id);
    };
    let ip = ctx.peer.map(|p| p.ip()).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let signed_in = match g.state.auth.authenticate(&user, &password, ip).await {
        Ok(x) => x,
        Err(f) if f.unavailable() => return with_request_id(unavailable(), &ctx.request_id),
        Err(f) => {
            let e = ctx.entry(
                "anonymous",
                "auth.failed".into(),
                user.clone(),
                "failure",
                json!({"route": ctx.route, "reason": f.reason}),
            );
            audit(&g.state, e).await;
            if f.locked_now {
                let detail = json!({
                    "failed_logins": LOCKOUT_THRESHOLD,
                    "for_secs": LOCKOUT_FOR.as_secs(),
                    "source": ip.to_string(),
                });
                audit(&g.state, ctx.entry("system", "operator.locked".into(), user.clone(), "success", detail)).await;
            }
            return with_request_id(ApiError::unauthorized().into_response(), &ctx.request_id);
        }
    };
    let op = signed_in.operator;
    let principal = g.state.principals.resolve(PrincipalKind::Operator, &op.name, op.roles.clone());
    if signed_in.fresh {
        let e = ctx.entry(&principal.audit_label(), "auth.login".into(), user.clone(), "success", json!({}));
        if !audit(&g.state, e).await {
            // A sign-in that cannot be recorded does not happen.
            return with_request_id(unavailable(), &ctx.request_id);
        }
    }
    let credential = Credential::Basic {
        operator: op.name.clone(),
        password_hash: op.password_hash.clone(),
        at: drover_types::Timestamp::now(),
    };
    authorized(g, ctx, principal, credential, req, next).await
}

/// The request is authenticated: check the privilege, run it, audit it.
async fn authorized(
    g: Guard,
    ctx: Facts,
    principal: Principal,
    credential: Credential,
    mut req: Request,
    next: Next,
) -> Response {
    let who = principal.audit_label();
    if !principal.may_call(g.privilege) {
        tracing::warn!(principal = %principal.label(), privilege = %g.privilege, path = %ctx.path, "permission denied");
        let detail = json!({"privilege": g.privilege.as_str(), "route": format!("{} {}", ctx.method, ctx.route)});
        audit(&g.state, ctx.entry(&who, "permission.denied".into(), ctx.path.clone(), "denied", detail)).await;
        let resp = ApiError::forbidden(format!("this needs the privilege {}", g.privilege)).into_response();
        return with_request_id(resp, &ctx.request_id);
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(credential);
    // A state change is recorded before it is made: if its entry cannot be written, it is not
    // made (503). Its outcome follows as a second entry. Agent-protocol traffic is recorded per
    // deployment instead (its events name the agent).
    let audited = audited(&ctx.method, &ctx.route);
    if audited {
        let e = ctx.entry(&who, format!("{} {}", ctx.method, ctx.route), ctx.path.clone(), "started", json!({}));
        if !audit(&g.state, e).await {
            return with_request_id(unavailable(), &ctx.request_id);
        }
    }
    let resp = next.run(req).await;
    if audited {
        let status = resp.status();
        let outcome = outcome(status);
        let e = ctx.entry(
            &who,
            format!("{} {}", ctx.method, ctx.route),
            ctx.path.clone(),
            outcome,
            json!({"status": status.as_u16()}),
        );
        audit(&g.state, e).await;
    }
    with_request_id(resp, &ctx.request_id)
}
