//! The CORS policy (`[http.cors]`): a list of trusted origins, the methods and headers they may
//! use, whether credentials may be sent, and how long a preflight may be cached. Everything else
//! is denied: a preflight from another origin gets 403 without CORS headers, and an API request
//! carrying another origin is refused before it runs (a browser would block the answer anyway;
//! refusing keeps a cross-site request from having effects).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://portal.example.com`); none: no cross-origin access at all.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    #[serde(default = "default_headers")]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
}

fn default_methods() -> Vec<String> {
    ["GET", "POST", "PUT", "DELETE"].iter().map(|s| s.to_string()).collect()
}
fn default_headers() -> Vec<String> {
    ["authorization", "content-type"].iter().map(|s| s.to_string()).collect()
}
fn default_max_age() -> u64 {
    600
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            allowed_methods: default_methods(),
            allowed_headers: default_headers(),
            allow_credentials: false,
            max_age_secs: default_max_age(),
        }
    }
}

impl CorsConfig {
    /// Refuses wildcards and malformed origins at start-up.
    pub fn validate(&self) -> Result<(), String> {
        for o in &self.allowed_origins {
            let ok = (o.starts_with("https://") || o.starts_with("http://"))
                && !o.contains('*')
                && !o.ends_with('/')
                && o.split("://").nth(1).is_some_and(|h| !h.is_empty() && !h.contains('/'));
            if !ok {
                return Err(format!(
                    "[http.cors] allowed_origins: {o:?} is not an origin (scheme://host[:port], no path, no wildcard)"
                ));
            }
        }
        for m in &self.allowed_methods {
            Method::from_bytes(m.as_bytes()).map_err(|_| format!("[http.cors] allowed_methods: {m:?}"))?;
        }
        Ok(())
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }
}

/// The issuer's origin (`scheme://host[:port]`, no path, no default port), as browsers send it
/// in `Origin` (the portal's guard compares posts with it too).
pub(crate) fn own_origin(issuer: &str) -> String {
    match url::Url::parse(issuer) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => issuer.trim_end_matches('/').to_string(),
    }
}

fn add_cors(h: &mut HeaderMap, cfg: &CorsConfig, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if cfg.allow_credentials {
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

/// Middleware on the whole application.
pub async fn policy(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let cfg = &s.cors;
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(String::from) else {
        return next.run(req).await;
    };
    let same_origin = origin == own_origin(&s.issuer);
    // The portal is for the orchestrator's own pages only: no other origin may read it, whatever
    // `[http.cors]` allows for the API (its pages carry the session's CSRF token).
    let portal = req.uri().path() == "/" || req.uri().path().starts_with("/portal");
    let allowed = cfg.origin_allowed(&origin) && !portal;
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let method = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let asked_headers: Vec<String> = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|x| x.trim().to_ascii_lowercase())
            .filter(|x| !x.is_empty())
            .collect();
        let method_ok = cfg.allowed_methods.iter().any(|m| m.eq_ignore_ascii_case(&method));
        let headers_ok = asked_headers.iter().all(|h| cfg.allowed_headers.iter().any(|a| a.eq_ignore_ascii_case(h)));
        if !(allowed && method_ok && headers_ok) {
            tracing::info!(%origin, %method, headers = ?asked_headers, "CORS preflight denied");
            return (StatusCode::FORBIDDEN, [(header::VARY, "Origin")]).into_response();
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        add_cors(h, cfg, &origin);
        if let Ok(v) = HeaderValue::from_str(&cfg.allowed_methods.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Ok(v) = HeaderValue::from_str(&cfg.allowed_headers.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(cfg.max_age_secs));
        return resp;
    }
    let api = req.uri().path().starts_with("/api/") || req.uri().path().starts_with("/agent/");
    if !allowed && !same_origin && api {
        tracing::info!(%origin, path = %req.uri().path(), "cross-origin API request refused");
        return crate::error::ApiError::forbidden(format!("origin {origin} is not allowed")).into_response();
    }
    let mut resp = next.run(req).await;
    if allowed {
        let h = resp.headers_mut();
        add_cors(h, cfg, &origin);
        h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("x-request-id"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_exact_and_validated() {
        let c = CorsConfig { allowed_origins: vec!["https://portal.example.com".into()], ..Default::default() };
        assert!(c.validate().is_ok());
        assert!(c.origin_allowed("https://portal.example.com"));
        assert!(!c.origin_allowed("https://portal.example.com.evil.io"));
        assert!(!c.origin_allowed("http://portal.example.com"));
        for bad in ["*", "https://*.example.com", "https://portal.example.com/", "portal.example.com", "https://a/b"] {
            let c = CorsConfig { allowed_origins: vec![bad.into()], ..Default::default() };
            assert!(c.validate().is_err(), "{bad}");
        }
        assert_eq!(own_origin("https://127.0.0.1:8443"), "https://127.0.0.1:8443");
        assert_eq!(own_origin("https://d.example.com/drover"), "https://d.example.com");
        assert_eq!(own_origin("https://d.example.com:443/"), "https://d.example.com", "no default port");
    }
}
