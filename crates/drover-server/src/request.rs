//! The facts of one HTTP request that its audit entries carry (request id, peer, route), shared
//! by the API guard (`api::guard`) and the portal's (`portal::guard`).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use drover_core::audit::NewAuditEntry;
use drover_types::Timestamp;

/// Request facts for the audit log.
pub(crate) struct Facts {
    pub request_id: String,
    pub peer: Option<SocketAddr>,
    pub method: Method,
    /// The matched route (`/api/v1/deployments/{id}/abort`).
    pub route: String,
    pub path: String,
}

impl Facts {
    /// The facts of `req`, with a fresh request id.
    pub fn of(req: &Request) -> Self {
        Facts {
            request_id: hex::encode(rand::random::<[u8; 8]>()),
            peer: req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
            method: req.method().clone(),
            route: req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_default(),
            path: req.uri().path().to_string(),
        }
    }
    pub fn source(&self) -> String {
        self.peer.map(|p| p.to_string()).unwrap_or_default()
    }
    pub fn entry(
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
            source: self.source(),
            request_id: self.request_id.clone(),
            detail,
        }
    }
}

/// The response, carrying its request id (`x-request-id`), which its audit entries name.
pub(crate) fn with_request_id(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// The outcome of a call in its audit entry, from its status.
pub(crate) fn outcome(status: axum::http::StatusCode) -> &'static str {
    if status.is_success() || status.is_redirection() {
        "success"
    } else if status == axum::http::StatusCode::FORBIDDEN {
        "denied"
    } else {
        "failure"
    }
}
