//! The HTTP endpoints of the authorization server: RFC 8414 metadata, the JWKS, the token
//! endpoint (dispatch on `grant_type`), RFC 7009 revocation, RFC 7662 introspection and RFC 8628
//! device authorization. They authenticate the calling client themselves (`client_auth`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use drover_core::rbac::{PrincipalKind, Privilege};
use drover_types::Timestamp;

use super::client_auth::{FormInput, authenticated_form};
use super::error::OAuthError;
use super::grants::{self, device_code::DEVICE_GRANT};
use super::{CLOCK_SKEW_SECS, sessions, verify};
use crate::AppState;

pub async fn metadata(State(s): State<AppState>) -> Json<serde_json::Value> {
    let iss = &s.issuer;
    Json(serde_json::json!({
        "issuer": iss,
        "token_endpoint": format!("{iss}/oauth2/token"),
        "jwks_uri": format!("{iss}/oauth2/jwks"),
        "revocation_endpoint": format!("{iss}/oauth2/revoke"),
        "introspection_endpoint": format!("{iss}/oauth2/introspect"),
        "authorization_endpoint": format!("{iss}/oauth2/authorize"),
        "device_authorization_endpoint": format!("{iss}/oauth2/device_authorization"),
        "grant_types_supported": ["client_credentials", "authorization_code", "refresh_token", DEVICE_GRANT],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "EdDSA", "RS256", "PS256"],
        "scopes_supported": drover_core::rbac::BUILT_IN_ROLES.iter().filter(|r| **r != "agent").collect::<Vec<_>>(),
    }))
}

pub async fn jwks(State(s): State<AppState>) -> Response {
    ([(header::CACHE_CONTROL, "max-age=60")], Json(s.keys.jwks())).into_response()
}

/// `POST /oauth2/token`: authenticate the client, then the grant.
pub async fn token(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let source = peer.to_string();
    let result = async {
        let (form, client) = authenticated_form(&s, &headers, form, &source).await?;
        match form.grant_type.as_deref() {
            Some("client_credentials") => grants::client_credentials::grant(&s, &client, &form, &source).await,
            Some("authorization_code") => grants::authorization_code::grant(&s, &client, &form).await,
            Some("refresh_token") => grants::refresh_token::grant(&s, &client, &form, &source).await,
            Some(DEVICE_GRANT) => grants::device_code::grant(&s, &client, &form).await,
            Some(_) => Err(OAuthError::bad("unsupported_grant_type", "unsupported grant_type")),
            None => Err(OAuthError::invalid_request("grant_type is required")),
        }
    };
    match result.await {
        Ok(tokens) => tokens.into_response(),
        Err(e) => e.into_response(),
    }
}

/// RFC 7009: the client revokes one of its own tokens; unknown or foreign tokens get 200 too.
pub async fn revoke(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let source = peer.to_string();
    let result = async {
        let (form, client) = authenticated_form(&s, &headers, form, &source).await?;
        let token = form.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let who = format!("client:{}", client.client_id);
        if !token.contains('.') {
            // Not a JWT: a refresh token; revoking it ends its whole login session.
            sessions::revoke_refresh(&s, &client, token).await?;
            let detail = serde_json::json!({"kind": "refresh_token"});
            super::audit(&s, who, "token.revoked", &client.client_id, "success", &source, detail).await?;
            return Ok(());
        }
        if let Ok(c) = verify::decode(&s, token)
            && c.client_id == client.client_id
        {
            s.store.revoke_token(&c.jti, Timestamp((c.exp + CLOCK_SKEW_SECS as i64) * 1000)).await?;
            tracing::info!(client = %client.client_id, jti = %c.jti, "token revoked");
            let detail = serde_json::json!({"kind": "access_token", "jti": c.jti});
            super::audit(&s, who, "token.revoked", &client.client_id, "success", &source, detail).await?;
        }
        Ok::<(), OAuthError>(())
    };
    match result.await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => e.into_response(),
    }
}

/// RFC 7662: a client holding `token.introspect` asks whether a token is active.
pub async fn introspect(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let result = async {
        let (form, caller) = authenticated_form(&s, &headers, form, &peer.to_string()).await?;
        if caller.metadata.public {
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "public clients cannot introspect",
            ));
        }
        // Least privilege: agents and ordinary API clients do not learn about others' tokens.
        let principal = s.principals.resolve(PrincipalKind::Client, &caller.client_id, caller.roles.clone());
        if caller.metadata.agent.is_some() || !principal.holds_globally(Privilege::TokenIntrospect) {
            tracing::warn!(client = %caller.client_id, "introspection refused: the client lacks token.introspect");
            return Err(OAuthError::new(
                StatusCode::FORBIDDEN,
                "unauthorized_client",
                "introspection needs the privilege token.introspect",
            ));
        }
        let token = form.token.as_deref().ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let body = match (verify::verify_bearer(&s, token).await, verify::decode(&s, token)) {
            (Ok(_), Ok(c)) => serde_json::json!({
                "active": true, "token_type": "access_token", "client_id": c.client_id, "sub": c.sub,
                "scope": c.scope, "aud": c.aud, "iss": c.iss, "exp": c.exp, "iat": c.iat, "jti": c.jti, "act": c.act,
            }),
            (Err(verify::Refused::Unavailable), _) => return Err(OAuthError::unavailable("introspection")),
            _ => serde_json::json!({"active": false}),
        };
        Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /oauth2/device_authorization` (RFC 8628 §3.1).
pub async fn device_authorization(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: FormInput,
) -> Response {
    let result = async {
        let source = peer.to_string();
        let (form, client) = authenticated_form(&s, &headers, form, &source).await?;
        let body = grants::device_code::authorize(&s, &client, &form).await?;
        let detail = serde_json::json!({"scope": form.scope});
        let who = format!("client:{}", client.client_id);
        super::audit(&s, who, "device.authorization", &client.client_id, "success", &source, detail).await?;
        Ok::<_, OAuthError>(body)
    };
    match result.await {
        Ok(body) => ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}
