//! The OAuth 2.0 authorization server:
//! - [`endpoints`]: RFC 8414 metadata, JWKS, the token endpoint, RFC 7009 revocation, RFC 7662
//!   introspection, RFC 8628 device authorization;
//! - [`client_auth`]: `client_secret_basic`, `client_secret_post`, RFC 7523 `private_key_jwt`,
//!   public clients;
//! - [`grants`]: one file per grant (`client_credentials`, `authorization_code` with PKCE,
//!   `refresh_token` with rotation and reuse detection, `device_code`);
//! - [`sessions`]: token signing, login sessions, their revocation;
//! - [`verify`]: verification of the RFC 9068 access tokens it issues;
//! - [`pages`]: the sign-in and device pages; [`redirects`]: redirect-URI rules;
//! - [`jwt`], [`keys`]: the JWS codec, the master key, signing keys and the JWKS.
//!
//! Layering: this module uses `auth` (password checks) and `access` (principals), never `api`
//! or `service`; `api` uses it (the guard verifies bearer tokens here).

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::AppState;

pub mod client_auth;
pub mod endpoints;
pub mod error;
pub mod grants;
pub mod jwt;
pub mod keys;
pub mod pages;
pub mod redirects;
pub mod sessions;
pub mod verify;

pub use verify::{Refused, VerifiedTokens, reverify_bearer, verify_bearer};

/// Lifetime of access tokens.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp`.
pub const CLOCK_SKEW_SECS: u64 = 30;
/// The audience of Drover's API tokens.
pub const AUDIENCE: &str = "drover-api";
/// Lifetime of a `private_key_jwt` client assertion, at most.
pub const ASSERTION_MAX_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 7523 client-assertion type.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The CLI's public client, created on first start.
pub const CLI_CLIENT: &str = "drover-cli";
/// The portal's client, created on start: used only inside the orchestrator (its codes are
/// exchanged in-process by `portal::signin`), refused at the token endpoint.
pub const PORTAL_CLIENT: &str = "drover-portal";

/// The operator on whose behalf a client acts (`act`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    pub sub: String,
}

/// RFC 9068 access-token claims (plus `roles`, and `iat_ms` for revocation to the millisecond).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub iat_ms: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
    pub roles: Vec<String>,
    /// The operator, for tokens from the authorization-code, device and refresh grants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    /// The refresh-token family (login session) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The routes of the authorization server (they authenticate clients and operators themselves).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(endpoints::metadata))
        .route("/.well-known/openid-configuration", get(endpoints::metadata))
        .route("/oauth2/jwks", get(endpoints::jwks))
        .route("/oauth2/token", post(endpoints::token))
        .route("/oauth2/revoke", post(endpoints::revoke))
        .route("/oauth2/introspect", post(endpoints::introspect))
        .route("/oauth2/authorize", get(pages::authorize::show).post(pages::authorize::submit))
        .route("/oauth2/device_authorization", post(endpoints::device_authorization))
        .route("/device", get(pages::device::show).post(pages::device::submit))
}

/// An audit entry of the authorization server (a fresh request id; the token endpoint's go
/// through the batched audit sink, the sign-in pages' straight to the store).
pub(crate) fn event(
    principal: String,
    action: &str,
    target: &str,
    outcome: &str,
    source: &str,
    detail: serde_json::Value,
) -> drover_types::audit::NewAuditEntry {
    drover_types::audit::NewAuditEntry {
        ts: Timestamp::now(),
        principal,
        action: action.into(),
        target: target.into(),
        outcome: outcome.into(),
        source: source.into(),
        request_id: hex::encode(rand::random::<[u8; 8]>()),
        detail,
    }
}

/// Appends an authorization-server entry to the audit log; returns once it is durable, or
/// that it could not be written (the caller then refuses what it was about to hand out).
pub(crate) async fn audit(
    s: &AppState,
    principal: String,
    action: &str,
    target: &str,
    outcome: &str,
    source: &str,
    detail: serde_json::Value,
) -> Result<(), error::OAuthError> {
    let e = event(principal, action, target, outcome, source, detail);
    s.audit_sink.record(e).await.map_err(|_| error::OAuthError::unavailable("the audit log cannot be written"))
}
