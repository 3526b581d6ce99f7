//! Authentication profiles: named credentials the orchestrator uses to call external systems
//! (Jenkins, webhooks, artifact repositories), and the `webhook` task runner that uses them.
//!
//! Profiles live in the store's records (`auth_profile`) with their secret sealed under the
//! master key (context `auth_profile:NAME`); the API never returns a secret. An
//! `oauth2-client-credentials` profile's access token is cached, fetched again shortly before
//! it expires, and fetched again once when a call is answered 401 — so a long deployment never
//! fails because a token expired on the way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use drover_core::machine::{ORCHESTRATOR, WEBHOOK_DEFAULT_TIMEOUT};
use drover_types::agent::{AttemptResult, LogEntry, Outcome};
use drover_types::{AuthProfile, TaskSpec};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::engine::WebhookCall;

pub const KIND: &str = "auth_profile";
pub const KINDS: &[&str] = &["basic", "bearer", "oauth2-client-credentials"];
/// A cached token is fetched again this long before it expires (or at half its life if shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The stored form: the profile without its clear secret, plus the sealed one.
#[derive(Serialize, Deserialize)]
struct Stored {
    profile: AuthProfile,
    sealed_secret: Option<String>,
}

struct Cached {
    token: String,
    refresh_at: Instant,
    /// The record version it was fetched for: a changed profile drops it.
    version: i64,
}

#[derive(Default)]
pub struct Profiles {
    tokens: Mutex<HashMap<String, Cached>>,
}

fn context(name: &str) -> String {
    format!("auth_profile:{name}")
}

/// Checks a profile for the API (and drops what the kind does not use).
pub fn validate(p: &mut AuthProfile) -> Result<(), String> {
    drover_core::validate_name("auth profile", &p.name).map_err(|e| e.to_string())?;
    if !KINDS.contains(&p.kind.as_str()) {
        return Err(format!("kind must be one of {}, got {:?}", KINDS.join(", "), p.kind));
    }
    let need = |v: &Option<String>, f: &str| {
        if v.as_deref().is_none_or(str::is_empty) { Err(format!("a {} profile needs {f}", p.kind)) } else { Ok(()) }
    };
    match p.kind.as_str() {
        "basic" => need(&p.username, "username")?,
        "oauth2-client-credentials" => {
            need(&p.client_id, "client_id")?;
            need(&p.token_endpoint, "token_endpoint")?;
            let te = p.token_endpoint.as_deref().unwrap_or_default();
            if !(te.starts_with("https://") || te.starts_with("http://")) {
                return Err("token_endpoint must be an http(s) URL".into());
            }
        }
        _ => {}
    }
    if p.allowed_urls.is_empty() {
        return Err("allowed_urls: list the URLs (prefixes) the credentials may be sent to".into());
    }
    for u in &p.allowed_urls {
        crate::outbound::entry(u).map_err(|e| format!("allowed_urls: {e}"))?;
    }
    if let Some(f) = &p.ca_file
        && !std::path::Path::new(f).is_file()
    {
        return Err(format!("ca_file {f} does not exist on the orchestrator"));
    }
    Ok(())
}

impl Profiles {
    /// Stores a profile: a new secret is sealed; without one, the stored secret is kept.
    pub async fn put(&self, s: &AppState, mut p: AuthProfile, create: bool) -> drover_core::Result<AuthProfile> {
        use drover_core::Error;
        validate(&mut p).map_err(Error::BadRequest)?;
        if let Some(te) = &p.token_endpoint {
            s.outbound.permits(te, None).map_err(|e| Error::BadRequest(format!("token_endpoint: {e}")))?;
        }
        let existing = s.store.record_get(KIND, &p.name).await?;
        if create && existing.is_some() {
            return Err(Error::Conflict(format!("auth profile {} exists already", p.name)));
        }
        let old = existing.as_ref().and_then(|(b, _)| serde_json::from_str::<Stored>(b).ok());
        let new_secret = p.secret.as_deref().is_some_and(|x| !x.is_empty());
        // A kept secret goes only where, and to whom, it went before: a change of where it is
        // sent (URLs, endpoints, CA, environment) or of what it is needs the secret again, so
        // nobody can redirect a credential they cannot read.
        if let Some(old) = old.as_ref().filter(|o| o.sealed_secret.is_some() && !new_secret) {
            let o = &old.profile;
            let moved = [
                ("kind", o.kind != p.kind),
                ("username", o.username != p.username),
                ("client_id", o.client_id != p.client_id),
                ("token_endpoint", o.token_endpoint != p.token_endpoint),
                ("revocation_endpoint", o.revocation_endpoint != p.revocation_endpoint),
                ("ca_file", o.ca_file != p.ca_file),
                ("environment", o.environment != p.environment),
                ("allowed_urls", o.allowed_urls != p.allowed_urls),
            ];
            if let Some((field, _)) = moved.iter().find(|(_, changed)| *changed) {
                return Err(Error::BadRequest(format!(
                    "{field} changed: give the secret again (a stored secret is not sent anywhere new without it)"
                )));
            }
        }
        let old_sealed = old.and_then(|st| st.sealed_secret);
        let sealed = match p.secret.take().filter(|x| !x.is_empty()) {
            Some(secret) => Some(
                s.keys.master().seal(secret.as_bytes(), &context(&p.name)).map_err(|e| Error::Store(e.to_string()))?,
            ),
            None => old_sealed,
        };
        if sealed.is_none() && p.kind != "basic" {
            return Err(Error::BadRequest(format!("a {} profile needs a secret", p.kind)));
        }
        p.has_secret = sealed.is_some();
        let body = serde_json::to_string(&Stored { profile: p.clone(), sealed_secret: sealed })
            .map_err(|e| Error::Store(e.to_string()))?;
        let ok = match existing {
            Some((_, v)) => s.store.record_update(KIND, &p.name, v, &body, None).await?,
            None => s.store.record_insert(KIND, &p.name, &body, None).await?,
        };
        if !ok {
            return Err(Error::Conflict(format!("auth profile {} changed meanwhile; try again", p.name)));
        }
        self.tokens.lock().expect("poisoned").remove(&p.name);
        Ok(p)
    }

    pub async fn get(s: &AppState, name: &str) -> drover_core::Result<Option<AuthProfile>> {
        Ok(Self::load(s, name).await?.map(|(st, _)| st.profile))
    }

    pub async fn list(s: &AppState) -> drover_core::Result<Vec<AuthProfile>> {
        Ok(s.store
            .record_list(KIND)
            .await?
            .into_iter()
            .filter_map(|(_, b, _)| serde_json::from_str::<Stored>(&b).ok().map(|st| st.profile))
            .collect())
    }

    async fn load(s: &AppState, name: &str) -> drover_core::Result<Option<(Stored, i64)>> {
        match s.store.record_get(KIND, name).await? {
            Some((b, v)) => Ok(serde_json::from_str(&b).ok().map(|st| (st, v))),
            None => Ok(None),
        }
    }

    /// Re-seals every profile secret under `new` (master-key rotation). Returns how many.
    pub async fn reseal_all(
        store: &dyn drover_core::Store,
        old: &crate::oauth::keys::MasterKey,
        new: &crate::oauth::keys::MasterKey,
    ) -> Result<usize, crate::oauth::keys::KeyError> {
        let mut n = 0;
        for (name, body, v) in store.record_list(KIND).await? {
            let Ok(mut st) = serde_json::from_str::<Stored>(&body) else { continue };
            let Some(sealed) = &st.sealed_secret else { continue };
            let plain = old.open(sealed, &context(&name))?;
            st.sealed_secret = Some(new.seal(&plain, &context(&name))?);
            let body = serde_json::to_string(&st).map_err(|e| crate::oauth::keys::KeyError::Key(e.to_string()))?;
            if !store.record_update(KIND, &name, v, &body, None).await? {
                return Err(crate::oauth::keys::KeyError::Key(format!("profile {name} changed during the rotation")));
            }
            n += 1;
        }
        Ok(n)
    }

    /// The `Authorization` header value for a profile (`force`: do not use a cached token).
    async fn authorization(&self, s: &AppState, name: &str, force: bool) -> Result<String, String> {
        let (st, version) = Self::load(s, name)
            .await
            .map_err(|e| format!("loading auth profile {name}: {e}"))?
            .ok_or_else(|| format!("auth profile {name} does not exist"))?;
        let secret = match &st.sealed_secret {
            Some(sealed) => String::from_utf8(
                s.keys.master().open(sealed, &context(name)).map_err(|e| format!("auth profile {name}: {e}"))?,
            )
            .map_err(|_| format!("auth profile {name}: the secret is not text"))?,
            None => String::new(),
        };
        let p = &st.profile;
        match p.kind.as_str() {
            "basic" => Ok(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{secret}", p.username.as_deref().unwrap_or("")))
            )),
            "bearer" => Ok(format!("Bearer {secret}")),
            _ => {
                if !force
                    && let Some(c) = self.tokens.lock().expect("poisoned").get(name)
                    && c.version == version
                    && c.refresh_at > Instant::now()
                {
                    return Ok(format!("Bearer {}", c.token));
                }
                let endpoint = p.token_endpoint.as_deref().unwrap_or_default();
                let (te, http) = connect(s, Some(p), endpoint, false, Duration::from_secs(30)).await?;
                let shown_te = crate::outbound::origin(&te);
                let mut form = vec![("grant_type", "client_credentials")];
                if let Some(sc) = p.scope.as_deref() {
                    form.push(("scope", sc));
                }
                let resp = http
                    .post(te.clone())
                    .basic_auth(p.client_id.as_deref().unwrap_or_default(), Some(&secret))
                    .form(&form)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .map_err(|e| {
                        let f = crate::outbound::failure(&te, &e);
                        tracing::warn!(profile = name, detail = %f.detail, "auth profile: token request failed");
                        format!("token request for auth profile {name}: {}", f.shown)
                    })?;
                let status = resp.status();
                let v: serde_json::Value = resp.json().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(format!(
                        "token request to {shown_te} refused ({status}: {})",
                        v["error"].as_str().unwrap_or("no error code")
                    ));
                }
                let token = v["access_token"].as_str().ok_or("the token response has no access_token")?.to_string();
                let life = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(300));
                let refresh_at = Instant::now() + life.saturating_sub(REFRESH_MARGIN).max(life / 2);
                self.tokens
                    .lock()
                    .expect("poisoned")
                    .insert(name.to_string(), Cached { token: token.clone(), refresh_at, version });
                tracing::info!(profile = name, expires_in = life.as_secs(), "auth profile: access token fetched");
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// Makes a webhook task's call; the outcome goes back to the engine as the attempt result.
    pub async fn run_webhook(&self, s: &AppState, call: &WebhookCall) -> AttemptResult {
        let spec = match &call.spec {
            Ok(s) => s,
            Err(e) => return failed(e.clone(), vec![]),
        };
        let TaskSpec::Webhook { url, method, auth_profile, expect_status, body, timeout } = spec else {
            return failed("not a webhook task".into(), vec![]);
        };
        let fill = |t: &str| {
            t.replace("{{application}}", &call.application)
                .replace("{{version}}", &call.version)
                .replace("{{environment}}", &call.environment)
                .replace("{{deployment_id}}", &call.deployment_id.to_string())
                .replace("{{started_by}}", &call.started_by)
        };
        let url = fill(url);
        let method = method.clone().unwrap_or_else(|| "POST".into());
        let limit = timeout.map(|t| t.0).unwrap_or(WEBHOOK_DEFAULT_TIMEOUT);
        let profile = match auth_profile {
            Some(n) => match Self::get(s, n).await {
                Ok(Some(p)) => {
                    if let Some(env) = &p.environment
                        && *env != call.environment
                    {
                        return failed(
                            format!("auth profile {n} is for environment {env}, not {}", call.environment),
                            vec![],
                        );
                    }
                    Some(p)
                }
                Ok(None) => return failed(format!("auth profile {n} does not exist"), vec![]),
                Err(e) => return failed(format!("loading auth profile {n}: {e}"), vec![]),
            },
            None => None,
        };
        let (target, http) = match connect(s, profile.as_ref(), &url, true, limit).await {
            Ok(c) => c,
            Err(e) => return failed(e, vec![]),
        };
        let mut logs = Vec::new();
        let mut last = None;
        for attempt in 0..2 {
            let auth = match &profile {
                Some(p) => match self.authorization(s, &p.name, attempt > 0).await {
                    Ok(a) => Some(a),
                    Err(e) => return failed(e, logs),
                },
                None => None,
            };
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::POST);
            let mut rb = http.request(m, target.clone()).timeout(limit);
            if let Some(a) = auth {
                rb = rb.header(reqwest::header::AUTHORIZATION, a);
            }
            if let Some(b) = body {
                let b = fill(b);
                let ct = if serde_json::from_str::<serde_json::Value>(&b).is_ok() {
                    "application/json"
                } else {
                    "text/plain"
                };
                rb = rb.header(reqwest::header::CONTENT_TYPE, ct).body(b);
            }
            let status = match rb.send().await {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    let f = crate::outbound::failure(&target, &e);
                    let detail = masked(s, &f.detail).await;
                    tracing::warn!(deployment = call.deployment_id, detail = %detail.unwrap_or_default(), "webhook call failed");
                    return failed(format!("{method} {}", f.shown), logs);
                }
            };
            logs.push(LogEntry {
                stream: "agent".into(),
                line: format!("webhook {method} {} → {status}", shown(&url)),
            });
            last = Some(status);
            // One retry with a fresh token when an OAuth-protected call is refused.
            let retryable = status == 401 && profile.as_ref().is_some_and(|p| p.kind == "oauth2-client-credentials");
            if retryable && attempt == 0 {
                tracing::info!(url = %shown(&url), "webhook answered 401: fetching a new token and trying once more");
                continue;
            }
            break;
        }
        let status = last.unwrap_or(0);
        let ok = match expect_status {
            Some(e) => status == *e,
            None => (200..300).contains(&status),
        };
        if ok {
            AttemptResult { outcome: Outcome::Completed, exit_code: None, message: None, logs }
        } else {
            let want = expect_status.map(|e| e.to_string()).unwrap_or_else(|| "2xx".into());
            failed(format!("{method} {} answered {status}, expected {want}", shown(&url)), logs)
        }
    }
}

/// A URL for logs and messages: scheme, host and path, without the query (it may carry tokens).
fn shown(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn failed(message: String, logs: Vec<LogEntry>) -> AttemptResult {
    AttemptResult { outcome: Outcome::Failed, exit_code: None, message: Some(message), logs }
}

/// A client for `url` under the orchestrator's `[outbound]` policy — and, for a webhook
/// (`profile_list`), the profile's own `allowed_urls` — with the profile's CA for https.
async fn connect(
    s: &AppState,
    p: Option<&AuthProfile>,
    url: &str,
    profile_list: bool,
    limit: Duration,
) -> Result<(reqwest::Url, reqwest::Client), String> {
    let tls = if url.starts_with("https://") {
        let ca = p.and_then(|p| p.ca_file.as_deref()).ok_or_else(|| {
            "https calls need an auth profile with ca_file (the CA that signed the server's certificate)".to_string()
        })?;
        Some(drover_tls::client_config(std::path::Path::new(ca)).map_err(|e| format!("ca_file {ca}: {e}"))?)
    } else {
        None
    };
    let list = if profile_list { p.map(|p| p.allowed_urls.as_slice()) } else { None };
    let r = match s.outbound.client(url, list, tls, limit).await {
        Ok(c) => return Ok(c),
        Err(r) => r,
    };
    let (detail, shown) = (masked(s, &r.detail).await, masked(s, &r.shown).await);
    tracing::warn!(detail = %detail.unwrap_or_default(), "outbound call refused: {}", shown.as_deref().unwrap_or("(details withheld)"));
    Err(shown.unwrap_or_else(|| "the call was refused".into()))
}

/// `text` (a URL may hold a secret variable) with every secret masked; `None` when the
/// variables cannot be read: then it is not shown at all.
async fn masked(s: &AppState, text: &str) -> Option<String> {
    s.variables.snapshot().await.ok().map(|v| v.all().mask(text).into_owned())
}

/// Runs the webhook calls the engine hands over, each with its own deadline.
pub async fn run_webhooks(s: AppState, mut rx: tokio::sync::mpsc::UnboundedReceiver<WebhookCall>) {
    while let Some(call) = rx.recv().await {
        let s = s.clone();
        tokio::spawn(async move {
            let result = s.profiles.run_webhook(&s, &call).await;
            if let Err(e) = s.engine.attempt_result(ORCHESTRATOR, &call.attempt_id, result).await {
                tracing::error!(error = %e, deployment = call.deployment_id, "recording a webhook result failed; the lease will end the task");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_only_to_allowed_urls() {
        let p = AuthProfile {
            name: "j".into(),
            kind: "bearer".into(),
            username: None,
            client_id: None,
            token_endpoint: None,
            scope: None,
            revocation_endpoint: None,
            ca_file: None,
            environment: None,
            allowed_urls: vec!["https://ci.example.com".into(), "http://127.0.0.1:9000/job/".into()],
            has_secret: true,
            secret: None,
        };
        let url_allowed = |p: &AuthProfile, u: &str| crate::outbound::any_matches(&p.allowed_urls, &u.parse().unwrap());
        assert!(url_allowed(&p, "https://ci.example.com/job/x"));
        assert!(url_allowed(&p, "https://ci.example.com"));
        assert!(!url_allowed(&p, "https://ci.example.com.evil.io/x"));
        assert!(!url_allowed(&p, "https://ci.example.comx"));
        assert!(url_allowed(&p, "http://127.0.0.1:9000/job/build"));
        assert!(!url_allowed(&p, "http://127.0.0.1:9000/other"));
        assert_eq!(shown("https://h/p?token=abc"), "https://h/p");
    }
}
