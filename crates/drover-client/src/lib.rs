//! Typed client of the orchestrator's HTTPS API, used by the CLI, the agent and the tests.
//! Transport, credentials, errors and the application resources are here; the administration
//! of trust (keys, OAuth clients, roles, groups, operators, audit) is in `admin.rs`.

mod admin;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use drover_types::agent::{
    AttemptEvents, AttemptEventsResponse, AttemptResult, AttemptResultResponse, PollRequest, PollResponse,
};
use drover_types::{
    Action, ActionRequest, Agent, AgentCredentials, ApiErrorBody, ApplyResult, Artifact, Deployment, DeploymentEvent,
    Environment, LogPage, NewAgent, NewDeployment, Pipeline, PipelineSpec,
};
use futures_util::{Stream, StreamExt};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The orchestrator answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api { status: u16, code: String, message: String },
    /// No answer: connection refused, TLS failure, timeout.
    #[error("cannot reach the orchestrator: {0}")]
    Transport(String),
    #[error("unexpected response: {0}")]
    Decode(String),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
    /// The orchestrator's error code, when it answered with one of the public table.
    pub fn code(&self) -> Option<drover_types::ErrorCode> {
        match self {
            Error::Api { code, .. } => drover_types::ErrorCode::parse(code),
            _ => None,
        }
    }
}

fn transport(e: reqwest::Error) -> Error {
    // reqwest's Display is terse; include the chain (e.g. the TLS error).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Error::Transport(msg)
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone)]
pub enum Credentials {
    /// HTTP Basic: an operator (name + password) or an agent (name + secret).
    Basic {
        user: String,
        password: String,
    },
    /// An OAuth 2.0 access token.
    Bearer(String),
    /// OAuth 2.0 client credentials: tokens are fetched, cached, refreshed before they expire
    /// and fetched again once when a call is refused with 401.
    ClientCredentials {
        client_id: String,
        auth: ClientAuth,
    },
    None,
}

/// How a client proves itself at the token endpoint.
#[derive(Clone)]
pub enum ClientAuth {
    /// `client_secret_basic`.
    Secret(String),
    /// `private_key_jwt` (RFC 7523): a PKCS#8 private key (P-256, Ed25519 or RSA) signs a
    /// short-lived assertion per token request.
    PrivateKey { pkcs8_der: Vec<u8>, kid: Option<String> },
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAuth::Secret(_) => write!(f, "Secret(***)"),
            ClientAuth::PrivateKey { kid, .. } => write!(f, "PrivateKey(kid {kid:?}, ***)"),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
            Credentials::ClientCredentials { client_id, .. } => write!(f, "ClientCredentials({client_id}, ***)"),
            Credentials::None => write!(f, "None"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
    tokens: Option<Arc<TokenSource>>,
}

/// Access tokens of a client, cached until shortly before they expire.
struct TokenSource {
    client_id: String,
    auth: ClientAuth,
    cached: std::sync::Mutex<Option<(String, std::time::Instant)>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSource({}, ***)", self.client_id)
    }
}

/// Refresh this long before the token expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// One server-sent event of `logs?follow=true`.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

impl Client {
    /// `base`: `https://host:port`. `ca_cert`: the PEM CA to trust (the orchestrator's
    /// `DATA_DIR/tls/ca.pem`); without it, the system's roots are not used either, so it is
    /// required for https.
    pub fn new(base: &str, ca_cert: Option<&Path>, creds: Credentials) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_nodelay(true)
            .user_agent(concat!("drover/", env!("CARGO_PKG_VERSION")));
        if base.starts_with("https://") {
            let ca = ca_cert.ok_or_else(|| {
                Error::Config(
                    "--ca-cert (or DROVER_CA_CERT) is required: the orchestrator's DATA_DIR/tls/ca.pem".into(),
                )
            })?;
            let mut cfg = drover_tls::client_config(ca).map_err(|e| Error::Config(e.to_string()))?;
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            b = b.use_preconfigured_tls(cfg);
        } else if base.starts_with("http://") {
            // No TLS in use, but reqwest still wants a configuration (one crypto provider: ours).
            b = b.use_preconfigured_tls(drover_tls::empty_client_config().map_err(|e| Error::Config(e.to_string()))?);
        } else {
            return Err(Error::Config(format!("invalid URL {base:?}: expected https://HOST:PORT")));
        }
        let http = b.build().map_err(transport)?;
        let creds_tokens = match &creds {
            Credentials::ClientCredentials { client_id, auth } => Some((client_id.clone(), auth.clone())),
            _ => None,
        };
        let auth = match creds {
            Credentials::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credentials::Bearer(t) => Some(format!("Bearer {t}")),
            Credentials::ClientCredentials { .. } | Credentials::None => None,
        };
        let tokens = creds_tokens.map(|(client_id, auth)| {
            Arc::new(TokenSource {
                client_id,
                auth,
                cached: std::sync::Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            })
        });
        Ok(Client { http, base, auth, tokens })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(a) = &self.auth {
            r = r.header(reqwest::header::AUTHORIZATION, a);
        }
        r
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ApiErrorBody>(&text) {
            Ok(b) => Err(Error::Api { status: status.as_u16(), code: b.error.code, message: b.error.message }),
            Err(_) => Err(Error::Api {
                status: status.as_u16(),
                code: "http_error".into(),
                message: if text.is_empty() { status.to_string() } else { text },
            }),
        }
    }

    /// A current access token (client credentials), fetched when missing or about to expire.
    async fn token(&self, ts: &TokenSource) -> Result<String> {
        let fresh = |c: &Option<(String, std::time::Instant)>| {
            c.as_ref().filter(|(_, until)| *until > std::time::Instant::now()).map(|(t, _)| t.clone())
        };
        if let Some(t) = fresh(&ts.cached.lock().expect("poisoned")) {
            return Ok(t);
        }
        let _one = ts.fetching.lock().await;
        if let Some(t) = fresh(&ts.cached.lock().expect("poisoned")) {
            return Ok(t);
        }
        let v = match &ts.auth {
            ClientAuth::Secret(secret) => {
                self.oauth_form("/oauth2/token", &[("grant_type", "client_credentials")], Some((&ts.client_id, secret)))
                    .await
            }
            ClientAuth::PrivateKey { pkcs8_der, kid } => {
                let assertion =
                    client_assertion(&ts.client_id, &format!("{}/oauth2/token", self.base), pkcs8_der, kid)?;
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", assertion.as_str()),
                ];
                self.oauth_form("/oauth2/token", &form, None).await
            }
        }
        .map_err(|e| match e {
            Error::Api { status, code, message } if status == 400 || status == 401 => Error::Api {
                status: 401,
                code,
                message: format!(
                    "client {} could not get a token ({message}): disabled, deleted, or wrong credentials",
                    ts.client_id
                ),
            },
            other => other,
        })?;
        let token = v["access_token"].as_str().ok_or_else(|| Error::Decode("no access_token".into()))?.to_string();
        let life = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(300));
        let until = std::time::Instant::now() + life.saturating_sub(TOKEN_MARGIN).max(life / 2);
        *ts.cached.lock().expect("poisoned") = Some((token.clone(), until));
        Ok(token)
    }

    /// Sends a request with the client's credentials; with client credentials, a 401 makes it
    /// fetch a new token and try once more (the token was revoked or its key rotated).
    async fn dispatch(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let Some(ts) = &self.tokens else { return rb.send().await.map_err(transport) };
        let again = rb.try_clone();
        let token = self.token(ts).await?;
        let resp = rb.bearer_auth(&token).send().await.map_err(transport)?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let Some(again) = again else { return Ok(resp) };
        {
            let mut c = ts.cached.lock().expect("poisoned");
            if c.as_ref().is_some_and(|(t, _)| *t == token) {
                *c = None;
            }
        }
        let token = self.token(ts).await?;
        again.bearer_auth(&token).send().await.map_err(transport)
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T> {
        let resp = Self::check(self.dispatch(rb).await?).await?;
        let bytes = resp.bytes().await.map_err(transport)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(self.req(Method::GET, path).timeout(Duration::from_secs(60))).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.req(Method::POST, path).json(body).timeout(Duration::from_secs(60))).await
    }

    async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(self.req(Method::PUT, path).json(body).timeout(Duration::from_secs(60))).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        Self::check(self.dispatch(self.req(Method::DELETE, path).timeout(Duration::from_secs(60))).await?).await?;
        Ok(())
    }

    /// RFC 8414 authorization-server metadata.
    pub async fn oauth_metadata(&self) -> Result<serde_json::Value> {
        self.get("/.well-known/oauth-authorization-server").await
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<()> {
        let r = self.req(Method::GET, "/healthz").timeout(Duration::from_secs(5)).send().await.map_err(transport)?;
        Self::check(r).await.map(|_| ())
    }

    // ---- pipelines and environments ----

    pub async fn pipelines(&self) -> Result<Vec<Pipeline>> {
        self.get("/api/v1/pipelines").await
    }
    pub async fn pipeline(&self, name: &str) -> Result<Pipeline> {
        self.get(&format!("/api/v1/pipelines/{name}")).await
    }
    pub async fn apply(&self, spec: &PipelineSpec) -> Result<ApplyResult> {
        self.post("/api/v1/pipelines", spec).await
    }
    /// Applies pipeline YAML as is; the orchestrator parses it, so errors name lines.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<ApplyResult> {
        let rb = self
            .req(Method::POST, "/api/v1/pipelines")
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(yaml.to_string())
            .timeout(Duration::from_secs(60));
        self.send(rb).await
    }
    pub async fn delete_pipeline(&self, name: &str) -> Result<()> {
        self.delete(&format!("/api/v1/pipelines/{name}")).await
    }
    pub async fn environments(&self) -> Result<Vec<Environment>> {
        self.get("/api/v1/environments").await
    }
    pub async fn create_environment(&self, e: &drover_types::NewEnvironment) -> Result<Environment> {
        self.post("/api/v1/environments", e).await
    }
    /// Creates or replaces an environment (kind, labels, the applications it accepts).
    pub async fn put_environment(&self, e: &drover_types::NewEnvironment) -> Result<Environment> {
        self.send(
            self.req(Method::PUT, &format!("/api/v1/environments/{}", e.name)).json(e).timeout(Duration::from_secs(60)),
        )
        .await
    }

    // ---- agents ----

    pub async fn agents(&self) -> Result<Vec<Agent>> {
        self.get("/api/v1/agents").await
    }
    pub async fn add_agent(&self, name: &str, environment: &str) -> Result<AgentCredentials> {
        let a = NewAgent { name: name.into(), environment: environment.into(), labels: Default::default(), jwks: None };
        self.register_agent(&a).await
    }
    /// Replaces an agent's labels.
    pub async fn set_agent_labels(
        &self,
        name: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<Agent> {
        self.put(&format!("/api/v1/agents/{name}/labels"), labels).await
    }
    /// Approves a pending agent (`variable.manage`).
    pub async fn approve_agent(&self, name: &str) -> Result<Agent> {
        self.post(&format!("/api/v1/agents/{name}/approve"), &serde_json::json!({})).await
    }
    pub async fn register_agent(&self, a: &NewAgent) -> Result<AgentCredentials> {
        self.post("/api/v1/agents", a).await
    }
    pub async fn delete_agent(&self, name: &str) -> Result<()> {
        self.delete(&format!("/api/v1/agents/{name}")).await
    }

    // ---- artifacts ----

    pub async fn artifacts(&self, application: Option<&str>) -> Result<Vec<Artifact>> {
        match application {
            Some(a) => self.get(&format!("/api/v1/artifacts?application={a}")).await,
            None => self.get("/api/v1/artifacts").await,
        }
    }

    /// `DELETE /api/v1/artifacts/{app}/{version}`.
    pub async fn delete_artifact(&self, application: &str, version: &str) -> Result<()> {
        self.delete(&format!("/api/v1/artifacts/{application}/{version}")).await
    }

    /// Streams a file to the orchestrator; `progress` is called with the bytes sent so far.
    pub async fn push_artifact(
        &self,
        application: &str,
        version: &str,
        file: &Path,
        sha256: Option<&str>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Artifact> {
        let f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
                progress(sent);
            }
            chunk
        });
        let mut rb = self
            .req(Method::PUT, &format!("/api/v1/artifacts/{application}/{version}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        if let Some(s) = sha256 {
            rb = rb.header("x-drover-sha256", s);
        }
        self.send(rb).await
    }

    /// Pushes bytes held in memory (small artifacts, tests).
    pub async fn push_artifact_bytes(&self, application: &str, version: &str, data: Vec<u8>) -> Result<Artifact> {
        let rb = self
            .req(Method::PUT, &format!("/api/v1/artifacts/{application}/{version}"))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data)
            .timeout(Duration::from_secs(300));
        self.send(rb).await
    }

    // ---- deployments ----

    pub async fn deploy(&self, pipeline: &str, version: &str) -> Result<Deployment> {
        self.post("/api/v1/deployments", &NewDeployment { pipeline: pipeline.into(), version: version.into() }).await
    }
    /// A pipeline's delivery figures between `from` and `to` (`YYYY-MM-DD` or RFC 3339; the
    /// server's default: the last 30 days).
    pub async fn report(
        &self,
        pipeline: &str,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<drover_types::report::PipelineReport> {
        // Dates and RFC 3339 times: only `+` needs escaping in a query.
        let q: Vec<String> = [("from", from), ("to", to)]
            .into_iter()
            .filter_map(|(k, v)| Some(format!("{k}={}", v?.replace('+', "%2B"))))
            .collect();
        self.get(&format!("/api/v1/reports/pipelines/{pipeline}?{}", q.join("&"))).await
    }
    pub async fn deployment(&self, id: i64) -> Result<Deployment> {
        self.get(&format!("/api/v1/deployments/{id}")).await
    }
    pub async fn deployments(
        &self,
        pipeline: Option<&str>,
        status: Option<&str>,
        limit: Option<u32>,
    ) -> Result<Vec<Deployment>> {
        let mut q = vec![];
        if let Some(p) = pipeline {
            q.push(format!("pipeline={p}"));
        }
        if let Some(s) = status {
            q.push(format!("status={s}"));
        }
        if let Some(l) = limit {
            q.push(format!("limit={l}"));
        }
        let qs = if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) };
        self.get(&format!("/api/v1/deployments{qs}")).await
    }
    pub async fn act(&self, id: i64, action: Action, reason: Option<String>) -> Result<Deployment> {
        self.act_with(id, action, &ActionRequest { reason, ..Default::default() }).await
    }
    /// An action with every option (an approval override, say).
    pub async fn act_with(&self, id: i64, action: Action, req: &ActionRequest) -> Result<Deployment> {
        self.post(&format!("/api/v1/deployments/{id}/{action}"), req).await
    }
    pub async fn logs(&self, id: i64, after: i64) -> Result<LogPage> {
        self.get(&format!("/api/v1/deployments/{id}/logs?after={after}")).await
    }
    pub async fn events(&self, id: i64) -> Result<Vec<DeploymentEvent>> {
        self.get(&format!("/api/v1/deployments/{id}/events")).await
    }

    /// Follows a deployment: server-sent events until it is terminal.
    pub async fn follow(&self, id: i64, after: i64) -> Result<impl Stream<Item = Result<SseEvent>>> {
        let resp = self
            .dispatch(self.req(Method::GET, &format!("/api/v1/deployments/{id}/logs?follow=true&after={after}")))
            .await?;
        let resp = Self::check(resp).await?;
        let bytes = resp.bytes_stream();
        Ok(sse_events(bytes))
    }

    /// Any request to an OAuth endpoint (`/oauth2/token`, `/oauth2/revoke`, ...) with a form,
    /// optionally authenticated with `client_secret_basic`; the JSON answer or the RFC 6749 error.
    pub async fn oauth_form(
        &self,
        endpoint: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<serde_json::Value> {
        let mut rb = self.http.post(format!("{}{endpoint}", self.base)).form(form).timeout(Duration::from_secs(60));
        if let Some((id, secret)) = basic {
            rb = rb.basic_auth(id, Some(secret));
        }
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let text = resp.text().await.map_err(transport)?;
        let v: serde_json::Value = if text.trim().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_str(&text).map_err(|e| Error::Decode(e.to_string()))?
        };
        if !status.is_success() {
            return Err(Error::Api {
                status: status.as_u16(),
                code: v["error"].as_str().unwrap_or("oauth_error").to_string(),
                message: v["error_description"].as_str().unwrap_or("request refused").to_string(),
            });
        }
        Ok(v)
    }

    /// Client credentials grant (`client_secret_basic`): returns the access token response.
    pub async fn client_credentials_token(
        &self,
        client_id: &str,
        secret: &str,
        scope: Option<&str>,
    ) -> Result<serde_json::Value> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let rb = self
            .http
            .post(format!("{}/oauth2/token", self.base))
            .basic_auth(client_id, Some(secret))
            .form(&form)
            .timeout(Duration::from_secs(60));
        let resp = rb.send().await.map_err(transport)?;
        let status = resp.status();
        let v: serde_json::Value = resp.json().await.map_err(|e| Error::Decode(e.to_string()))?;
        if !status.is_success() {
            return Err(Error::Api {
                status: status.as_u16(),
                code: v["error"].as_str().unwrap_or("oauth_error").to_string(),
                message: v["error_description"].as_str().unwrap_or("token request refused").to_string(),
            });
        }
        Ok(v)
    }

    // ---- agent protocol ----

    pub async fn poll(&self, req: &PollRequest) -> Result<PollResponse> {
        let rb = self
            .req(Method::POST, "/agent/v1/poll")
            .json(req)
            .timeout(Duration::from_millis(req.wait_ms) + Duration::from_secs(30));
        self.send(rb).await
    }
    pub async fn attempt_events(&self, attempt: &str, ev: &AttemptEvents) -> Result<AttemptEventsResponse> {
        self.post(&format!("/agent/v1/attempts/{attempt}/events"), ev).await
    }
    pub async fn attempt_result(&self, attempt: &str, r: &AttemptResult) -> Result<AttemptResultResponse> {
        self.post(&format!("/agent/v1/attempts/{attempt}/result"), r).await
    }
    /// The audit log as JSON Lines (header, checkpoints, entries), streamed.
    pub async fn audit_export(&self) -> Result<impl Stream<Item = Result<Bytes>> + use<>> {
        let resp = self.dispatch(self.req(Method::GET, "/api/v1/audit/export")).await?;
        let resp = Self::check(resp).await?;
        Ok(resp.bytes_stream().map(|r| r.map_err(transport)))
    }
    /// Downloads artifact content by digest as a byte stream (with its length when known).
    pub async fn download(&self, sha256: &str) -> Result<(Option<u64>, impl Stream<Item = Result<Bytes>> + use<>)> {
        let resp = self.dispatch(self.req(Method::GET, &format!("/agent/v1/artifacts/{sha256}"))).await?;
        let resp = Self::check(resp).await?;
        let len = resp.content_length();
        Ok((len, resp.bytes_stream().map(|r| r.map_err(transport))))
    }
}

/// Parses a `text/event-stream` body into events.
fn sse_events(body: impl Stream<Item = reqwest::Result<Bytes>> + Unpin) -> impl Stream<Item = Result<SseEvent>> {
    futures_util::stream::unfold((body, String::new(), false), |(mut body, mut buf, done)| async move {
        if done {
            return None;
        }
        loop {
            if let Some(pos) = buf.find("\n\n") {
                let block: String = buf.drain(..pos + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // comment / keep-alive
                }
                return Some((Ok(SseEvent { event, data }), (body, buf, false)));
            }
            match body.next().await {
                Some(Ok(chunk)) => buf.push_str(&String::from_utf8_lossy(&chunk)),
                Some(Err(e)) => return Some((Err(transport(e)), (body, buf, true))),
                None => return None,
            }
        }
    })
}

/// Whether an error means "try again later" (orchestrator away) rather than "you are wrong".
pub fn is_retryable(e: &Error) -> bool {
    match e {
        Error::Transport(_) => true,
        Error::Api { status, .. } => {
            let s = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
        }
        _ => false,
    }
}

/// An RFC 7523 client assertion: `iss` = `sub` = the client, `aud` = the token endpoint, a
/// one-minute lifetime and a fresh `jti`.
pub fn client_assertion(
    client_id: &str,
    token_endpoint: &str,
    pkcs8_der: &[u8],
    kid: &Option<String>,
) -> Result<String> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": token_endpoint, "iat": now, "exp": now + 60,
        "jti": hex_id(),
    });
    // The key type decides the algorithm.
    let (alg, key) = if aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8_der,
    )
    .is_ok()
    {
        (Algorithm::ES256, EncodingKey::from_ec_der(pkcs8_der))
    } else if aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8_der).is_ok() {
        (Algorithm::EdDSA, EncodingKey::from_ed_der(pkcs8_der))
    } else {
        return Err(Error::Config("the client key must be a P-256 or Ed25519 PKCS#8 private key".into()));
    };
    let mut h = Header::new(alg);
    h.kid = kid.clone();
    jsonwebtoken::encode(&h, &claims, &key).map_err(|e| Error::Config(format!("signing the client assertion: {e}")))
}

fn hex_id() -> String {
    use std::fmt::Write;
    let bytes: [u8; 16] = rand_bytes();
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn rand_bytes() -> [u8; 16] {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("the OS CSPRNG");
    b
}
