//! Headers on every answer of the orchestrator, whatever answered (a handler, a guard's
//! refusal, the fallback):
//! - `Strict-Transport-Security` (a year, without `includeSubDomains`: other hosts of the
//!   domain are not ours to pin), except when the request named `localhost` or an IP address,
//!   where it would pin every port of that host to HTTPS;
//! - `Cache-Control: no-store` on the API, the agent protocol and the OAuth endpoints: every
//!   answer there is per caller (tokens, secrets, what the caller may see).
//!
//! The portal's pages add their own CSP and friends (`portal::headers`); the sign-in and device
//! pages theirs (`oauth::pages`).

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

pub const HSTS: &str = "max-age=31536000";

/// A host HSTS would do harm on: `localhost` (and its subdomains) or an IP literal.
pub fn local_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => return v6.split(']').next().is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Answers that are per caller and must never be stored by a cache.
fn per_caller(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/agent/") || path.starts_with("/oauth2/")
}

pub async fn every_answer(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(String::from)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let no_store = per_caller(req.uri().path());
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    if !host.is_empty() && !local_host(&host) {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    if no_store {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsts_is_left_off_for_localhost_and_addresses() {
        for local in [
            "localhost",
            "localhost:8443",
            "app.localhost",
            "127.0.0.1:8443",
            "10.0.0.7",
            "[::1]:8443",
            "[fe80::1]",
            "LOCALHOST.",
        ] {
            assert!(local_host(local), "{local}");
        }
        for named in ["drover.example.com", "drover.example.com:8443", "localhost.example.com", "10.0.0.7.nip.io"] {
            assert!(!local_host(named), "{named}");
        }
    }
}
