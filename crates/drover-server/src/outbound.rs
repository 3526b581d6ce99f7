//! Calls the orchestrator itself makes to other systems (webhook tasks, authentication-profile
//! token fetches; later mail and Jenkins) go only where an administrator allowed them.
//!
//! Invariants:
//! - a URL is called only when it matches an entry of `[outbound] allowed_urls` (and, with an
//!   authentication profile, one of the profile's `allowed_urls` too). Matching is by parsed parts:
//!   same scheme, host and port, and the entry's path as a prefix at a `/` boundary; URLs with
//!   user information are refused;
//! - the host is resolved once, every address it resolves to is checked, and the connection is
//!   pinned to those addresses (a name cannot resolve to something else between check and call);
//!   loopback, link-local, unspecified and cloud-metadata addresses are refused unless the
//!   matching `[outbound]` entry names that very address as an IP literal (`localhost` is a name
//!   like any other: it resolves to loopback, so it is refused);
//! - redirects are never followed;
//! - what a caller sees of a failure is the host and a generic cause; the detail goes to the log.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// `[outbound]` in `drover.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// URL prefixes the orchestrator may call. Empty: it calls nothing.
    #[serde(default)]
    pub allowed_urls: Vec<String>,
}

impl OutboundConfig {
    pub fn validate(&self) -> Result<(), String> {
        for u in &self.allowed_urls {
            entry(u).map_err(|e| format!("[outbound] allowed_urls: {e}"))?;
        }
        Ok(())
    }
}

/// Parses an allow-list entry: an absolute http(s) URL with a host, no wildcards, no user
/// information, no query.
pub fn entry(u: &str) -> Result<Url, String> {
    let bad = || format!("{u:?} must be an absolute http(s) URL without wildcards, user information or query");
    if u.contains('*') {
        return Err(bad());
    }
    let p = Url::parse(u).map_err(|_| bad())?;
    if !matches!(p.scheme(), "http" | "https")
        || p.host_str().is_none_or(str::is_empty)
        || !p.username().is_empty()
        || p.password().is_some()
        || p.query().is_some()
        || p.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(p)
}

/// Does `url` fall under the allow-list entry `prefix`?
pub fn matches(prefix: &Url, url: &Url) -> bool {
    if prefix.scheme() != url.scheme()
        || prefix.host_str() != url.host_str()
        || prefix.port_or_known_default() != url.port_or_known_default()
    {
        return false;
    }
    let (want, got) = (prefix.path(), url.path());
    want == "/" || got == want || (got.starts_with(want) && (want.ends_with('/') || got[want.len()..].starts_with('/')))
}

/// Any of the `list` entries (unparseable ones match nothing).
pub fn any_matches(list: &[String], url: &Url) -> bool {
    list.iter().filter_map(|e| entry(e).ok()).any(|p| matches(&p, url))
}

/// What kind of address the orchestrator never calls without an explicit entry.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("cloud metadata")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else {
                None
            }
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.octets()[0] == 0 || ip.is_broadcast() {
        Some("unspecified")
    } else {
        None
    }
}

/// A refused or failed call: `shown` is for the deployment (host and a generic cause), the
/// detail only for the orchestrator's log.
#[derive(Debug)]
pub struct Refused {
    pub shown: String,
    pub detail: String,
}

impl Refused {
    fn same(msg: String) -> Self {
        Refused { detail: msg.clone(), shown: msg }
    }
}

/// `scheme://host[:port]` of a URL, for messages.
pub fn origin(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(p) => format!("{}://{host}:{p}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

#[derive(Debug, Clone, Default)]
pub struct Outbound {
    allowed: Vec<String>,
}

impl Outbound {
    pub fn new(cfg: &OutboundConfig) -> Self {
        Outbound { allowed: cfg.allowed_urls.clone() }
    }

    /// The policy by text alone (no DNS): what `apply` checks. `profile`: the profile's own list.
    pub fn permits(&self, url: &str, profile: Option<&[String]>) -> Result<Url, String> {
        let u = Url::parse(url).map_err(|_| format!("{url:?} is not an absolute URL"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(format!("{} is not an http(s) URL", origin(&u)));
        }
        if !u.username().is_empty() || u.password().is_some() {
            return Err("URLs with user information are refused; use an authentication profile".into());
        }
        if !any_matches(&self.allowed, &u) {
            return Err(format!(
                "{}{} is not among the URLs the orchestrator may call ([outbound] allowed_urls)",
                origin(&u),
                u.path()
            ));
        }
        if let Some(list) = profile
            && !any_matches(list, &u)
        {
            return Err(format!("{}{} is not among the profile's allowed_urls", origin(&u), u.path()));
        }
        if let Some(ip) = literal(&u)
            && let Some(kind) = special(ip)
            && !self.names(&u, ip)
        {
            return Err(format!("{} is a {kind} address; only an [outbound] entry naming it allows it", origin(&u)));
        }
        Ok(u)
    }

    /// Does a matching `[outbound]` entry name `ip` as an IP literal?
    fn names(&self, url: &Url, ip: IpAddr) -> bool {
        self.allowed.iter().filter_map(|e| entry(e).ok()).filter(|p| matches(p, url)).any(|p| match p.host() {
            Some(url::Host::Ipv4(a)) => IpAddr::V4(a) == ip,
            Some(url::Host::Ipv6(a)) => IpAddr::V6(a) == ip,
            Some(url::Host::Domain(_)) | None => false,
        })
    }

    /// Checks `url` by policy and by the addresses its host resolves to, and returns a client
    /// pinned to them (no redirects; `tls` for https).
    pub async fn client(
        &self,
        url: &str,
        profile: Option<&[String]>,
        tls: Option<rustls::ClientConfig>,
        limit: Duration,
    ) -> Result<(Url, reqwest::Client), Refused> {
        let u = self.permits(url, profile).map_err(Refused::same)?;
        let host = u.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
        let port = u.port_or_known_default().unwrap_or(80);
        let addrs: Vec<SocketAddr> = match literal(&u) {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => {
                let found = tokio::time::timeout(
                    Duration::from_secs(10).min(limit),
                    tokio::net::lookup_host((host.as_str(), port)),
                )
                .await;
                match found {
                    Ok(Ok(a)) => a.collect(),
                    Ok(Err(e)) => {
                        return Err(Refused {
                            shown: format!("{}: the name does not resolve", origin(&u)),
                            detail: e.to_string(),
                        });
                    }
                    Err(_) => {
                        return Err(Refused::same(format!("{}: resolving the name timed out", origin(&u))));
                    }
                }
            }
        };
        if addrs.is_empty() {
            return Err(Refused::same(format!("{}: the name does not resolve", origin(&u))));
        }
        for a in &addrs {
            if let Some(kind) = special(a.ip())
                && !self.names(&u, a.ip())
            {
                return Err(Refused {
                    shown: format!(
                        "{} resolves to a {kind} address; only an [outbound] entry naming it allows it",
                        origin(&u)
                    ),
                    detail: format!("{host} resolved to {}", a.ip()),
                });
            }
        }
        let tls = match tls {
            Some(t) => t,
            None => drover_tls::empty_client_config().map_err(|e| Refused::same(e.to_string()))?,
        };
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(limit))
            .redirect(reqwest::redirect::Policy::none())
            .use_preconfigured_tls(tls);
        if literal(&u).is_none() {
            b = b.resolve_to_addrs(&host, &addrs);
        }
        let client = b
            .build()
            .map_err(|e| Refused { shown: format!("{}: request failed", origin(&u)), detail: e.to_string() })?;
        Ok((u, client))
    }
}

fn literal(u: &Url) -> Option<IpAddr> {
    match u.host()? {
        url::Host::Ipv4(a) => Some(IpAddr::V4(a)),
        url::Host::Ipv6(a) => Some(IpAddr::V6(a)),
        url::Host::Domain(_) => None,
    }
}

/// A transport failure as a deployment shows it: the host and a generic cause. The detail (the
/// error chain) is returned for the log.
pub fn failure(url: &Url, e: &reqwest::Error) -> Refused {
    let cause = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer could not be read"
    } else {
        "request failed"
    };
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(x) = src {
        detail.push_str(": ");
        detail.push_str(&x.to_string());
        src = x.source();
    }
    Refused { shown: format!("{}: {cause}", origin(url)), detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> Outbound {
        Outbound::new(&OutboundConfig { allowed_urls: list.iter().map(|s| s.to_string()).collect() })
    }

    #[test]
    fn entries_match_by_parsed_parts_at_path_boundaries() {
        let p = policy(&["https://ci.example.com", "http://jenkins.internal:8080/job/"]);
        for ok in ["https://ci.example.com/x", "https://ci.example.com:443/x?q=1", "http://jenkins.internal:8080/job/a"]
        {
            assert!(p.permits(ok, None).is_ok(), "{ok}");
        }
        for bad in [
            "https://ci.example.com.evil.io/x",
            "https://ci.example.comx/",
            "http://ci.example.com/x",
            "https://ci.example.com:8443/x",
            "http://jenkins.internal:8080/jobs",
            "http://jenkins.internal:8080/other",
            "https://ci.example.com@evil.io/",
            "https://user:pw@ci.example.com/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(p.permits(bad, None).is_err(), "{bad}");
        }
        // Both lists must allow it.
        let prof = vec!["https://ci.example.com/job/".to_string()];
        assert!(p.permits("https://ci.example.com/job/x", Some(&prof)).is_ok());
        assert!(p.permits("https://ci.example.com/admin", Some(&prof)).is_err());
        assert!(entry("https://*.example.com").is_err());
        assert!(entry("https://u@example.com").is_err());
    }

    #[test]
    fn special_addresses_need_an_entry_naming_them() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00:ec2::254", "cloud metadata"),
            ("0.0.0.0", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("100.100.100.200", "cloud metadata"),
        ] {
            assert_eq!(special(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in ["10.0.0.1", "192.168.1.1", "8.8.8.8", "2001:db8::1"] {
            assert_eq!(special(ip.parse().unwrap()), None, "{ip}");
        }
        // A broad entry for a name does not let a loopback literal through; naming it does.
        let p = policy(&["http://127.0.0.1:9000/hooks/"]);
        assert!(p.permits("http://127.0.0.1:9000/hooks/x", None).is_ok());
        assert!(p.permits("http://127.0.0.1:9001/hooks/x", None).is_err());
        let p = policy(&["http://[::1]:9000/"]);
        assert!(p.permits("http://[::1]:9000/x", None).is_ok());
        let p = policy(&["http://169.254.169.254/"]);
        assert!(p.permits("http://169.254.169.254/latest/meta-data/", None).is_ok(), "named explicitly");
    }

    #[tokio::test]
    async fn names_are_resolved_and_checked_before_the_call() {
        // An entry naming `localhost` passes by text; the name resolves to loopback: refused.
        let p = policy(&["http://localhost:9/"]);
        assert!(p.permits("http://localhost:9/x", None).is_ok());
        let e = p.client("http://localhost:9/x", None, None, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.shown.contains("http://localhost:9 resolves to a loopback address"), "{e:?}");
        assert!(e.detail.contains("127.0.0.1") || e.detail.contains("::1"), "the log says where: {e:?}");
        // Named by address, it is allowed (and nothing is resolved).
        let p = policy(&["http://127.0.0.1:9/"]);
        assert!(p.client("http://127.0.0.1:9/x", None, None, Duration::from_secs(5)).await.is_ok());
        let e = p.client("http://127.0.0.1:10/x", None, None, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.shown.contains("not among"), "{e:?}");
    }
}
