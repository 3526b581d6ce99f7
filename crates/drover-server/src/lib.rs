//! The orchestrator: HTTPS server (API, agent protocol), the deployment engine and the
//! artifact store, started by [`start`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use drover_core::Store;
use drover_types::Timestamp;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub mod access;
pub mod api;
pub mod artifacts;
pub mod audit_chain;
pub mod audit_sink;
pub mod auth;
pub mod bootstrap;
pub mod cors;
pub mod engine;
pub mod error;
pub mod headers;
pub mod limits;
pub mod nodes;
pub mod oauth;
pub mod outbound;
pub mod portal;
pub mod profiles;
mod request;
pub mod secrets;
pub mod service;
mod sse;
pub mod variables;

pub use engine::Engine;

/// How the orchestrator runs. Built by the CLI from flags, environment and `drover.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: SQLite at `DATA_DIR/drover.db`.
    pub database_url: Option<String>,
    /// An attempt without a heartbeat for this long is lost (deployment goes to `error`).
    pub heartbeat_timeout: Duration,
    /// How long past a task's timeout the orchestrator waits for the agent's result before it
    /// fails the task itself.
    pub task_timeout_grace: Duration,
    /// Extra DNS names / IPs for the server certificate (localhost and loopback are always in).
    pub tls_names: Vec<String>,
    /// The URL clients use to reach the orchestrator; the token issuer. Default `https://LISTEN`.
    pub public_url: Option<String>,
    /// `[http.cors]`.
    pub cors: cors::CorsConfig,
    /// `[audit]`.
    pub audit: audit_chain::AuditConfig,
    /// `[outbound]`: where the orchestrator's own calls may go.
    pub outbound: outbound::OutboundConfig,
    /// `[artifacts]`: size limit, quota, retention.
    pub artifacts: artifacts::ArtifactsConfig,
    /// `[http.limits]`: connections, timeouts, sizes.
    pub limits: limits::LimitsConfig,
    /// `[agents]`: which environments' new agents wait for approval.
    pub agents: service::agents::AgentsConfig,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:8443".parse().expect("valid"),
            database_url: None,
            heartbeat_timeout: Duration::from_secs(30),
            task_timeout_grace: Duration::from_secs(60),
            tls_names: Vec::new(),
            public_url: None,
            cors: cors::CorsConfig::default(),
            audit: audit_chain::AuditConfig::default(),
            outbound: outbound::OutboundConfig::default(),
            artifacts: artifacts::ArtifactsConfig::default(),
            limits: limits::LimitsConfig::default(),
            agents: service::agents::AgentsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("{0}")]
    Tls(#[from] drover_tls::Error),
    #[error("database: {0}")]
    Store(#[from] drover_core::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    #[error("keys: {0}")]
    Keys(#[from] oauth::keys::KeyError),
    #[error("audit keys: {0}")]
    Audit(#[from] audit_chain::ChainError),
}

pub struct Inner {
    pub data_dir: PathBuf,
    pub store: Arc<dyn Store>,
    pub engine: Arc<Engine>,
    pub auth: auth::Authenticator,
    pub artifacts: artifacts::ArtifactFiles,
    pub artifact_policy: artifacts::ArtifactsConfig,
    pub limits: limits::LimitsConfig,
    /// Open connections, per source and in all.
    pub connections: Arc<limits::Connections>,
    pub node: String,
    pub started_at: Timestamp,
    pub listen: String,
    /// The token issuer (`iss`): the orchestrator's public URL.
    pub issuer: String,
    pub keys: Arc<oauth::keys::KeyRing>,
    /// Environments' variables, plain and secret.
    pub variables: Arc<variables::Variables>,
    /// Custom roles and access groups.
    pub principals: access::Principals,
    /// Authentication profiles (their token caches) for calls to external systems.
    pub profiles: profiles::Profiles,
    /// Every audit append, durable before its caller goes on.
    pub audit_sink: audit_sink::AuditSink,
    /// The chain key and the checkpoint signer (kept outside the database).
    pub audit_keys: audit_chain::AuditKeys,
    pub cors: cors::CorsConfig,
    /// The policy of the orchestrator's own outbound calls.
    pub outbound: outbound::Outbound,
    /// Access tokens already verified (signature and fixed claims), until they expire.
    pub verified: oauth::VerifiedTokens,
    /// `[agents]`.
    pub agents: service::agents::AgentsConfig,
}

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// A running orchestrator.
pub struct Running {
    pub addr: SocketAddr,
    pub url: String,
    pub ca_cert: PathBuf,
    /// The admin password, when this start created the admin operator.
    pub initial_admin_password: Option<String>,
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting connections and stops the engine.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        // The queue is drained: the last head is checkpointed.
        if let Err(e) = self.state.audit_keys.checkpoint(self.state.store.as_ref()).await {
            tracing::error!(error = %e, "writing the last audit checkpoint failed");
        }
    }
}

/// Creates what is missing in the data dir (keys, CA, admin) and starts serving.
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    cfg.cors.validate().map_err(StartError::Bootstrap)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.data_dir)
        .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?;
    let mut names = cfg.tls_names.clone();
    if !cfg.listen.ip().is_unspecified() {
        names.push(cfg.listen.ip().to_string());
    }
    let pki = drover_tls::Pki::ensure(&cfg.data_dir, &names)?;
    let tls = pki.server_config()?;
    let url =
        cfg.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", cfg.data_dir.join("drover.db").display()));
    let store = drover_store::open(&url).await?;
    let initial_admin_password = bootstrap::admin(store.as_ref(), &cfg.data_dir).await?;
    let master_path = master_key_path(&cfg.data_dir);
    let master = oauth::keys::MasterKey::configured(&master_path)?;
    let keys = Arc::new(oauth::keys::KeyRing::load(store.as_ref(), master).await?);
    let variables = Arc::new(variables::Variables::new(store.clone(), keys.clone()));
    bootstrap::cli_client(store.as_ref()).await?;
    bootstrap::agent_clients(store.as_ref()).await?;
    let principals = access::Principals::load(store.as_ref()).await?;
    let engine = Engine::new(store.clone(), cfg.heartbeat_timeout, cfg.task_timeout_grace);
    engine.use_variables(variables.clone());
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| StartError::Listen(cfg.listen, e))?;
    let addr = listener.local_addr().map_err(|e| StartError::Listen(cfg.listen, e))?;
    let (shutdown, rx) = watch::channel(false);
    let audit_keys = audit_chain::AuditKeys::load_or_create(&cfg.data_dir, keys.master(), store.as_ref()).await?;
    let (audit_sink, audit_writer) = audit_sink::AuditSink::start(store.clone(), audit_keys.chain.clone(), rx.clone());
    let state = AppState(Arc::new(Inner {
        data_dir: cfg.data_dir.clone(),
        store: store.clone(),
        engine: engine.clone(),
        auth: auth::Authenticator::new(store.clone()),
        artifacts: artifacts::ArtifactFiles::new(&cfg.data_dir)
            .map_err(|e| StartError::DataDir(cfg.data_dir.clone(), e))?,
        artifact_policy: cfg.artifacts.clone(),
        limits: cfg.limits.clone(),
        agents: cfg.agents.clone(),
        connections: limits::Connections::new(&cfg.limits),
        node: hostname(),
        started_at: Timestamp::now(),
        listen: addr.to_string(),
        issuer: cfg.public_url.clone().unwrap_or_else(|| format!("https://{addr}")),
        keys,
        variables,
        principals,
        profiles: profiles::Profiles::default(),
        audit_sink,
        audit_keys,
        outbound: outbound::Outbound::new(&cfg.outbound),
        cors: cfg.cors.clone(),
        verified: oauth::VerifiedTokens::default(),
    }));
    bootstrap::portal_client(store.as_ref(), &state.issuer).await?;
    let _ = std::fs::write(cfg.data_dir.join("orchestrator.addr"), addr.to_string());
    let app = router(state.clone());
    let mut tasks = vec![audit_writer];
    let engine_rx = rx.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = engine.run(engine_rx).await {
            tracing::error!(error = %e, "engine stopped");
        }
    }));
    {
        let (s, stop) = (state.clone(), rx.clone());
        tasks.push(tokio::spawn(nodes::run(s, stop)));
        let (s, stop, hook) = (state.clone(), rx.clone(), audit_chain::Webhook::new(&cfg.audit)?);
        tasks.push(tokio::spawn(audit_chain::run(s, hook, stop)));
    }
    // Roles and groups changed through another replica sharing the database.
    {
        let (s, mut stop) = (state.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(access::RELOAD_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = s.principals.reload(s.store.as_ref()).await {
                            tracing::warn!(error = %e, "reloading roles and access groups failed");
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    if let Some(calls) = state.engine.take_webhook_calls() {
        let (s, mut stop) = (state.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = profiles::run_webhooks(s, calls) => {}
                _ = stop.changed() => {}
            }
        }));
    }
    {
        // Content no version refers to (a crash between delete and collect) goes within the hour.
        let (s, mut stop) = (state.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                    _ = stop.changed() => return,
                }
                service::artifacts::collect_garbage(&s, Duration::from_secs(600)).await;
            }
        }));
    }
    tasks.push(tokio::spawn(serve_tls(listener, tls, app, state.clone(), rx)));
    tracing::info!(%addr, backend = store.backend(), "orchestrator listening on https://{addr}");
    Ok(Running {
        addr,
        url: format!("https://{addr}"),
        ca_cert: pki.ca_cert(),
        initial_admin_password,
        state,
        shutdown,
        tasks,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}

/// The full HTTP application: health check, guarded routes, JSON 404 for the rest.
pub fn router(state: AppState) -> Router {
    let (api, _) = api::routes(state.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(oauth::routes())
        .merge(api)
        .merge(portal::routes(state.clone()))
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), cors::policy))
        .layer(axum::middleware::from_fn(headers::every_answer))
        .layer(axum::extract::DefaultBodyLimit::max(state.limits.max_body_bytes as usize))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limits::bodies))
        .with_state(state)
}

/// Where the master key lives: `DROVER_MASTER_KEY_FILE`, else `DATA_DIR/master.key`.
pub fn master_key_path(data_dir: &Path) -> PathBuf {
    std::env::var_os("DROVER_MASTER_KEY_FILE").map(PathBuf::from).unwrap_or_else(|| data_dir.join("master.key"))
}

/// What a master-key rotation did.
#[derive(Debug, serde::Serialize)]
pub struct MasterKeyRotation {
    pub old_id: String,
    pub new_id: String,
    pub signing_keys: usize,
    pub profile_secrets: usize,
    /// Secret variables re-sealed.
    pub variable_secrets: usize,
    /// Audit chain and checkpoint keys re-sealed.
    pub audit_keys: usize,
    /// Portal sessions re-sealed.
    pub portal_sessions: usize,
    /// The old key, kept until every value is re-sealed; delete it once no backup needs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retired_file: Option<PathBuf>,
}

/// Master-key rotation (orchestrator stopped): a new key replaces the old one, which is kept as
/// `PATH.retired-<id>`; every sealed value (signing keys, profile secrets) is re-sealed under
/// the new one. Safe to repeat after a crash: the retired key still opens what was not re-sealed.
/// With `DROVER_MASTER_KEY` in the environment, rotate by hand and run [`reseal`] instead.
pub async fn rotate_master_key(data_dir: &Path, database_url: Option<&str>) -> Result<MasterKeyRotation, StartError> {
    if std::env::var_os("DROVER_MASTER_KEY").is_some() {
        return Err(StartError::Bootstrap(
            "DROVER_MASTER_KEY is set: put the new key there and the old one in DROVER_MASTER_KEY_RETIRED, then run \
             `drover master-key reseal`"
                .into(),
        ));
    }
    let path = master_key_path(data_dir);
    if !path.exists() {
        return Err(StartError::Bootstrap(format!("{} does not exist: nothing to rotate", path.display())));
    }
    let old = oauth::keys::MasterKey::load_or_create(&path)?;
    let new = oauth::keys::MasterKey::rotate_file(&path)?;
    let (signing_keys, profile_secrets, variable_secrets, audit_keys, portal_sessions) =
        reseal_with(data_dir, database_url, &new).await?;
    let retired_file = path.with_file_name(format!(
        "{}.retired-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("master.key"),
        old.id()
    ));
    tracing::info!(
        old = old.id(),
        new = new.id(),
        signing_keys,
        profile_secrets,
        variable_secrets,
        "master key rotated"
    );
    Ok(MasterKeyRotation {
        old_id: old.id().into(),
        new_id: new.id().into(),
        signing_keys,
        profile_secrets,
        variable_secrets,
        audit_keys,
        portal_sessions,
        retired_file: Some(retired_file),
    })
}

/// Re-seals every stored value under the configured master key (`DROVER_MASTER_KEY` or the
/// key file); values sealed under a retired key must still open (`DROVER_MASTER_KEY_RETIRED`,
/// or the `.retired-<id>` files beside the key file).
pub async fn reseal(data_dir: &Path, database_url: Option<&str>) -> Result<MasterKeyRotation, StartError> {
    let key = oauth::keys::MasterKey::configured(&master_key_path(data_dir))?;
    let (signing_keys, profile_secrets, variable_secrets, audit_keys, portal_sessions) =
        reseal_with(data_dir, database_url, &key).await?;
    Ok(MasterKeyRotation {
        old_id: String::new(),
        new_id: key.id().into(),
        signing_keys,
        profile_secrets,
        variable_secrets,
        audit_keys,
        portal_sessions,
        retired_file: None,
    })
}

async fn reseal_with(
    data_dir: &Path,
    database_url: Option<&str>,
    key: &oauth::keys::MasterKey,
) -> Result<(usize, usize, usize, usize, usize), StartError> {
    let url =
        database_url.map(String::from).unwrap_or_else(|| format!("sqlite://{}", data_dir.join("drover.db").display()));
    let store = drover_store::open(&url).await?;
    let signing_keys = oauth::keys::reseal_signing_keys(store.as_ref(), key).await?;
    let profile_secrets = profiles::Profiles::reseal_all(store.as_ref(), key, key).await?;
    let variable_secrets = variables::Variables::reseal_all(store.as_ref(), key, key).await?;
    let portal_sessions = portal::session::reseal_all(store.as_ref(), key, key).await?;
    let audit_keys = audit_chain::reseal(data_dir, key)?;
    Ok((signing_keys, profile_secrets, variable_secrets, audit_keys, portal_sessions))
}

/// Accepts TCP connections within the caps, completes the TLS handshake (bounded), and serves
/// HTTP/1.1 with bounded heads and writes (limits.rs).
async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    state: AppState,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let l = state.limits.clone();
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(slot) = state.connections.admit(peer.ip()) else {
            tracing::warn!(%peer, "connection refused: connection cap reached ([http.limits])");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let l = l.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let handshake = Duration::from_secs(l.handshake_timeout_secs);
            let stream = match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let stream = limits::StallGuard::new(stream, Duration::from_secs(l.write_stall_secs));
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let mut app = app.clone();
                async move { tower::Service::call(&mut app, req.map(axum::body::Body::new)).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(l.header_timeout_secs))
                .max_header_size(l.max_header_bytes)
                .max_headers(l.max_headers)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod layering {
    /// The module layering has no cycles: `secrets` ← `auth` ← `oauth` ← `service` ← `api`
    /// and `portal`.
    #[test]
    fn lower_layers_never_import_higher_ones() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let rules: &[(&str, &[&str])] = &[
            ("secrets.rs", &["crate::auth", "crate::oauth", "crate::service", "crate::api", "axum"]),
            ("auth", &["crate::oauth", "crate::service", "crate::api", "axum"]),
            ("oauth", &["crate::service", "crate::api", "crate::portal"]),
            ("service", &["crate::api", "crate::portal", "axum"]),
            ("bootstrap.rs", &["crate::service", "crate::api", "crate::portal"]),
            // The portal calls the service layer like the API does, never the API itself; its
            // pages never reach for the store or the engine (only its session and sign-in
            // records do).
            ("portal", &["crate::api"]),
            ("portal/pages.rs", &[".store", ".engine", "crate::api"]),
            ("portal/settings.rs", &[".store", ".engine", "crate::api"]),
            ("portal/admin.rs", &[".store", ".engine", "crate::api"]),
            ("portal/editor.rs", &[".store", ".engine", "crate::api"]),
            ("portal/form.rs", &[".store", ".engine", "crate::api"]),
        ];
        for (path, forbidden) in rules {
            let p = src.join(path);
            let files: Vec<std::path::PathBuf> = if p.is_dir() { walk(&p) } else { vec![p] };
            assert!(!files.is_empty(), "{path}");
            for f in files {
                let text = std::fs::read_to_string(&f).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap();
                for x in *forbidden {
                    assert!(!code.contains(x), "{} uses {x}", f.display());
                }
            }
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        out
    }
}
