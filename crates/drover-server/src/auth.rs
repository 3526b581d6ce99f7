//! The one authentication layer: request → principal → the privilege the route declares.
//!
//! Principals here: operators (HTTP Basic, Argon2id-hashed passwords) and bearer tokens (see
//! `oauth::verify_bearer`: clients, agents, operators acting through clients). A successful operator check is
//! cached for a few minutes under a keyed hash of the credentials, so scripts that send Basic
//! on every call do not pay for Argon2 each time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use drover_core::Store;
use drover_core::audit::NewAuditEntry;
use drover_core::rbac::{Principal, PrincipalKind, Privilege};

use drover_core::store::OperatorRecord;
use drover_types::Timestamp;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::ApiError;

const CACHE_TTL: Duration = Duration::from_secs(300);
/// Failed logins in a row that lock an operator out...
pub const LOCKOUT_THRESHOLD: u32 = 5;
/// ...for this long (or until an admin unlocks them).
pub const LOCKOUT_FOR: Duration = Duration::from_secs(15 * 60);

/// Why a login failed: for the log and the audit trail, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailure {
    pub reason: &'static str,
    /// This failure locked the operator out.
    pub locked_now: bool,
}

fn fail(reason: &'static str) -> AuthFailure {
    AuthFailure { reason, locked_now: false }
}
const TOUCH_EVERY: Duration = Duration::from_secs(5);

/// A remembered successful password check.
struct CachedLogin {
    /// Keyed hash of the credentials.
    key: [u8; 32],
    at: Instant,
    /// The password hash they were checked against: a changed password invalidates it.
    password_hash: String,
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    pepper: [u8; 32],
    cache: Mutex<HashMap<String, CachedLogin>>,
    touched: Mutex<HashMap<String, Instant>>,
    /// Argon2 is memory- and CPU-hard: bound how many run at once.
    hashing: Semaphore,
}

/// SHA-256 (hex) of an agent secret: 256 random bits need no slow hash.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new secret: 256 bits from the OS CSPRNG as 64 lowercase hex characters.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(|e| e.to_string())?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
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

impl Authenticator {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Authenticator {
            store,
            pepper: rand::random(),
            cache: Mutex::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
            hashing: Semaphore::new(2),
        }
    }

    fn cache_key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.pepper);
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Resolves credentials to a principal; `None` for anything wrong (unknown user, wrong
    /// password, disabled operator) — the caller learns nothing more, the log does.
    /// Resolves operators and agents (names are unique across both: agent registration refuses
    /// operator names). `agent_first` only orders the look-ups, for the agent protocol's sake.
    /// On success, also says whether this was a fresh operator login (a password check, not a
    /// remembered one): those are audited.
    pub async fn authenticate(
        &self,
        user: &str,
        password: &str,
        agent_first: bool,
    ) -> Result<(Principal, bool), AuthFailure> {
        // Agents do not log in with Basic: they hold OAuth 2.0 client credentials and send tokens.
        let _ = agent_first;
        let op = self.store.get_operator(user).await.map_err(|e| {
            tracing::error!(error = %e, "authentication: store error");
            fail("store_error")
        })?;
        if op.is_none() {
            tracing::warn!(user, "authentication failed: unknown operator");
        }
        let Some(op) = op else { return Err(fail("unknown")) };
        if op.disabled {
            tracing::warn!(operator = user, "authentication failed: operator disabled");
            return Err(fail("disabled"));
        }
        let now = Timestamp::now();
        if op.locked_until.is_some_and(|t| t > now) {
            // The password is not even checked: a locked account gives a guesser nothing.
            tracing::warn!(operator = user, "authentication refused: operator locked out");
            return Err(fail("locked"));
        }
        let key = self.cache_key(user, password);
        let cached = {
            let c = self.cache.lock().expect("poisoned");
            c.get(user).is_some_and(|l| {
                l.at.elapsed() < CACHE_TTL && l.password_hash == op.password_hash && bool::from(l.key.ct_eq(&key))
            })
        };
        if !cached {
            let _permit = self.hashing.acquire().await.map_err(|_| fail("shutting_down"))?;
            let hash = op.password_hash.clone();
            let pw = password.to_string();
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
            })
            .await
            .unwrap_or(false);
            if !ok {
                let lock_until = now.plus(LOCKOUT_FOR);
                let locked_now = match self.store.login_failed(user, LOCKOUT_THRESHOLD, lock_until).await {
                    Ok(Some((n, Some(t)))) => n == LOCKOUT_THRESHOLD && t == lock_until,
                    Ok(_) => false,
                    Err(e) => {
                        tracing::error!(error = %e, "recording a failed login");
                        false
                    }
                };
                if locked_now {
                    tracing::warn!(operator = user, until = %lock_until, "operator locked out after {LOCKOUT_THRESHOLD} failed logins");
                } else {
                    tracing::warn!(operator = user, "authentication failed: wrong password");
                }
                return Err(AuthFailure { reason: "wrong_password", locked_now });
            }
            if op.failed_logins > 0 || op.locked_until.is_some() {
                let reset = OperatorRecord { failed_logins: 0, locked_until: None, ..op.clone() };
                if let Err(e) = self.store.update_operator(&reset).await {
                    tracing::error!(error = %e, "resetting failed logins");
                }
            }
            let login = CachedLogin { key, at: Instant::now(), password_hash: op.password_hash.clone() };
            self.cache.lock().expect("poisoned").insert(user.to_string(), login);
        }
        Ok((Principal::new(PrincipalKind::Operator, op.name, op.roles), !cached))
    }

    pub(crate) async fn touch(&self, agent: &str) {
        let due = {
            let mut t = self.touched.lock().expect("poisoned");
            let due = t.get(agent).is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
            if due {
                t.insert(agent.to_string(), Instant::now());
            }
            due
        };
        if due && let Err(e) = self.store.touch_agent(agent, Timestamp::now()).await {
            tracing::warn!(error = %e, "recording agent last-seen failed");
        }
    }
}

/// The route's declared privilege, checked by [`require`].
#[derive(Clone)]
pub struct Guard {
    pub state: AppState,
    pub privilege: Privilege,
}

/// Request facts for the audit log.
struct Ctx {
    request_id: String,
    source: String,
    method: axum::http::Method,
    route: String,
    path: String,
}

impl Ctx {
    fn entry(
        &self,
        principal: &str,
        action: String,
        target: String,
        outcome: &str,
        detail: serde_json::Value,
    ) -> NewAuditEntry {
        NewAuditEntry {
            ts: Timestamp::now(),
            principal: principal.to_string(),
            action,
            target,
            outcome: outcome.to_string(),
            source: self.source.clone(),
            request_id: self.request_id.clone(),
            detail,
        }
    }
}

async fn audit(state: &AppState, e: NewAuditEntry) {
    if let Err(err) = state.store.append_audit(&e).await {
        tracing::error!(error = %err, action = %e.action, principal = %e.principal, "could not append to the audit log");
    }
}

fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Middleware: authenticate, then authorize against the route's privilege; audit failed
/// logins, fresh logins, denials and every state-changing `/api/v1` call.
pub async fn require(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let ctx = Ctx {
        request_id: hex::encode(rand::random::<[u8; 8]>()),
        source: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default(),
        method: req.method().clone(),
        route: req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default(),
        path: req.uri().path().to_string(),
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    if let Some(token) = bearer {
        let principal = match crate::oauth::verify_bearer(&g.state, &token).await {
            Ok(p) => p,
            Err(why) => {
                tracing::warn!(reason = why, path = %ctx.path, "bearer token refused");
                let e = ctx.entry(
                    "anonymous",
                    "auth.failed".into(),
                    "bearer".into(),
                    "failure",
                    json!({"route": ctx.route, "reason": why}),
                );
                audit(&g.state, e).await;
                let mut resp = ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "the access token is invalid, expired or revoked",
                )
                .into_response();
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"drover\", error=\"invalid_token\""),
                );
                return with_request_id(resp, &ctx.request_id);
            }
        };
        return authorized(g, ctx, principal, req, next).await;
    }
    let Some((user, password)) = parse_basic(&req) else {
        return with_request_id(ApiError::unauthorized().into_response(), &ctx.request_id);
    };
    let agent_first = g.privilege == Privilege::AgentWork;
    let (principal, fresh) = match g.state.auth.authenticate(&user, &password, agent_first).await {
        Ok(x) => x,
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
                let e = ctx.entry(
                    "system",
                    "operator.locked".into(),
                    user.clone(),
                    "success",
                    json!({"failed_logins": LOCKOUT_THRESHOLD, "for_secs": LOCKOUT_FOR.as_secs()}),
                );
                audit(&g.state, e).await;
            }
            return with_request_id(ApiError::unauthorized().into_response(), &ctx.request_id);
        }
    };
    if fresh {
        audit(&g.state, ctx.entry(&principal.audit_label(), "auth.login".into(), user.clone(), "success", json!({})))
            .await;
    }
    let principal = g.state.principals.resolve(principal.kind, &principal.name, principal.roles);
    authorized(g, ctx, principal, req, next).await
}

/// The request is authenticated: check the privilege, run it, audit it.
async fn authorized(g: Guard, ctx: Ctx, principal: Principal, mut req: Request, next: Next) -> Response {
    let who = principal.audit_label();
    if !principal.has(g.privilege) {
        tracing::warn!(principal = %principal.label(), privilege = %g.privilege, path = %ctx.path, "permission denied");
        let e = ctx.entry(
            &who,
            "permission.denied".into(),
            ctx.path.clone(),
            "denied",
            json!({"privilege": g.privilege.as_str(), "route": format!("{} {}", ctx.method, ctx.route)}),
        );
        audit(&g.state, e).await;
        let resp = ApiError::forbidden(format!("this needs the privilege {}", g.privilege)).into_response();
        return with_request_id(resp, &ctx.request_id);
    }
    req.extensions_mut().insert(principal);
    let resp = next.run(req).await;
    // Agent-protocol traffic is recorded per deployment (its events name the agent).
    if ctx.method != axum::http::Method::GET && ctx.route.starts_with("/api/") {
        let status = resp.status();
        let outcome = if status.is_success() { "success" } else { "failure" };
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
