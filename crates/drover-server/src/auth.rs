//! The one authentication layer: request → principal → the privilege the route declares.
//!
//! Principals here: operators (HTTP Basic, Argon2id-hashed passwords) and agents (HTTP Basic
//! with their name and a 256-bit secret stored as SHA-256). A successful operator check is
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
use drover_types::Timestamp;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::ApiError;

const CACHE_TTL: Duration = Duration::from_secs(300);
const TOUCH_EVERY: Duration = Duration::from_secs(5);

pub struct Authenticator {
    store: Arc<dyn Store>,
    pepper: [u8; 32],
    cache: Mutex<HashMap<String, ([u8; 32], Instant)>>,
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
    /// Returns the principal, and whether this was a fresh operator login (a password check,
    /// not a remembered one) — those are audited.
    pub async fn authenticate(&self, user: &str, password: &str, agent_first: bool) -> Option<(Principal, bool)> {
        let mut op = None;
        if !agent_first {
            op = match self.store.get_operator(user).await {
                Ok(op) => op,
                Err(e) => {
                    tracing::error!(error = %e, "authentication: store error");
                    return None;
                }
            };
        }
        if op.is_none() {
            let agent = match self.store.get_agent(user).await {
                Ok(Some(a)) => a,
                Ok(None) if agent_first => {
                    return Box::pin(self.authenticate(user, password, false)).await;
                }
                Ok(None) => {
                    tracing::warn!(user, "authentication failed: unknown operator or agent");
                    return None;
                }
                Err(e) => {
                    tracing::error!(error = %e, "authentication: store error");
                    return None;
                }
            };
            let given = secret_hash(password);
            if !bool::from(given.as_bytes().ct_eq(agent.secret_hash.as_bytes())) {
                tracing::warn!(agent = user, "authentication failed: wrong agent secret");
                return None;
            }
            self.touch(user).await;
            return Some((
                Principal { kind: PrincipalKind::Agent, name: agent.name, roles: vec!["agent".into()] },
                false,
            ));
        }
        let op = op?;
        if op.disabled {
            tracing::warn!(operator = user, "authentication failed: operator disabled");
            return None;
        }
        let key = self.cache_key(user, password);
        let cached = {
            let c = self.cache.lock().expect("poisoned");
            c.get(user).is_some_and(|(k, at)| at.elapsed() < CACHE_TTL && bool::from(k.ct_eq(&key)))
        };
        let fresh = !cached;
        if !cached {
            let _permit = self.hashing.acquire().await.ok()?;
            let hash = op.password_hash.clone();
            let pw = password.to_string();
            let ok = tokio::task::spawn_blocking(move || {
                PasswordHash::new(&hash).is_ok_and(|h| Argon2::default().verify_password(pw.as_bytes(), &h).is_ok())
            })
            .await
            .unwrap_or(false);
            if !ok {
                tracing::warn!(operator = user, "authentication failed: wrong password");
                return None;
            }
            self.cache.lock().expect("poisoned").insert(user.to_string(), (key, Instant::now()));
        }
        Some((Principal { kind: PrincipalKind::Operator, name: op.name, roles: op.roles }, fresh))
    }

    async fn touch(&self, agent: &str) {
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
pub async fn require(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let ctx = Ctx {
        request_id: hex::encode(rand::random::<[u8; 8]>()),
        source: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default(),
        method: req.method().clone(),
        route: req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default(),
        path: req.uri().path().to_string(),
    };
    let Some((user, password)) = parse_basic(&req) else {
        return with_request_id(ApiError::unauthorized().into_response(), &ctx.request_id);
    };
    let agent_first = g.privilege == Privilege::AgentWork;
    let Some((principal, fresh)) = g.state.auth.authenticate(&user, &password, agent_first).await else {
        let e = ctx.entry("anonymous", "auth.failed".into(), user.clone(), "failure", json!({"route": ctx.route}));
        audit(&g.state, e).await;
        return with_request_id(ApiError::unauthorized().into_response(), &ctx.request_id);
    };
    let who = principal.audit_label();
    if fresh {
        audit(&g.state, ctx.entry(&who, "auth.login".into(), user.clone(), "success", json!({}))).await;
    }
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
