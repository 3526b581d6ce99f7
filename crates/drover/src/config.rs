//! `drover serve`: flags, `DROVER_*` environment variables and `drover.toml`, in that order of
//! precedence. Every key is documented in docs/configuration.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Data directory: database, keys, CA, artifacts.
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
    pub data_dir: PathBuf,
    /// Configuration file (default: DATA_DIR/drover.toml when it exists).
    #[arg(long, env = "DROVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [file: listen; default 127.0.0.1:8443].
    #[arg(long, env = "DROVER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// postgres://... for PostgreSQL [file: database_url; default SQLite in the data dir].
    #[arg(long, env = "DROVER_DATABASE_URL")]
    pub database_url: Option<String>,
    /// An attempt without an agent heartbeat for this long is lost [file: heartbeat_timeout; default 30s].
    #[arg(long, env = "DROVER_HEARTBEAT_TIMEOUT", value_parser = humantime::parse_duration)]
    pub heartbeat_timeout: Option<Duration>,
    /// Extra host name or IP for the server certificate (repeatable) [file: tls_names].
    #[arg(long = "tls-name", env = "DROVER_TLS_NAMES", value_delimiter = ',')]
    pub tls_names: Vec<String>,
    /// The URL clients use to reach the orchestrator; the token issuer [file: public_url;
    /// default https://LISTEN].
    #[arg(long, env = "DROVER_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// `drover.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub task_timeout_grace: Option<String>,
    #[serde(default)]
    pub tls_names: Vec<String>,
    pub public_url: Option<String>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub audit: drover_server::audit_chain::AuditConfig,
    #[serde(default)]
    pub outbound: drover_server::outbound::OutboundConfig,
    #[serde(default)]
    pub artifacts: drover_server::artifacts::ArtifactsConfig,
    #[serde(default)]
    pub agents: drover_server::service::agents::AgentsConfig,
}

/// `[http]` in `drover.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default)]
    pub cors: drover_server::cors::CorsConfig,
    #[serde(default)]
    pub limits: drover_server::limits::LimitsConfig,
}

pub fn load(args: &ServeArgs) -> anyhow::Result<drover_server::Config> {
    let path = args.config.clone().or_else(|| {
        let p = args.data_dir.join("drover.toml");
        p.exists().then_some(p)
    });
    let file = match &path {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let mut cfg = drover_server::Config::new(&args.data_dir);
    if let Some(l) = args.listen.or(file.listen) {
        cfg.listen = l;
    }
    cfg.database_url = args.database_url.clone().or(file.database_url);
    if let Some(t) = args.heartbeat_timeout {
        cfg.heartbeat_timeout = t;
    } else if let Some(t) = &file.heartbeat_timeout {
        cfg.heartbeat_timeout = humantime::parse_duration(t).with_context(|| format!("heartbeat_timeout = {t:?}"))?;
    }
    if let Some(t) = &file.task_timeout_grace {
        cfg.task_timeout_grace = humantime::parse_duration(t).with_context(|| format!("task_timeout_grace = {t:?}"))?;
    }
    if cfg.heartbeat_timeout < Duration::from_millis(200) {
        bail!("heartbeat_timeout must be at least 200ms");
    }
    cfg.tls_names = if args.tls_names.is_empty() { file.tls_names } else { args.tls_names.clone() };
    cfg.public_url = args.public_url.clone().or(file.public_url).map(|u| u.trim_end_matches('/').to_string());
    if let Some(u) = &cfg.public_url
        && !u.starts_with("https://")
    {
        bail!("public_url must be an https:// URL, got {u:?}");
    }
    cfg.cors = file.http.cors;
    cfg.audit = file.audit;
    file.outbound.validate().map_err(anyhow::Error::msg)?;
    cfg.outbound = file.outbound;
    file.http.limits.validate().map_err(anyhow::Error::msg)?;
    cfg.limits = file.http.limits;
    file.artifacts.validate().map_err(anyhow::Error::msg)?;
    cfg.artifacts = file.artifacts;
    cfg.agents = file.agents;
    cfg.cors.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

fn read_file(p: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    toml::from_str(&text).with_context(|| format!("{}", p.display()))
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<u8> {
    let cfg = load(&args)?;
    let data_dir = cfg.data_dir.clone();
    let running = drover_server::start(cfg).await?;
    let file = drover_server::bootstrap::initial_password_file(&data_dir);
    if let Some(pw) = &running.initial_admin_password {
        eprintln!(
            "Created operator 'admin'. Initial password (shown once; also in {} until admin sets a password of \
             their own with `drover operators set-password admin --password-file F`, which deletes the file): {pw}",
            file.display()
        );
    } else if file.exists() {
        eprintln!(
            "The initial admin password is still in {}: set a password of your own (`drover operators set-password \
             admin --password-file F`) and the file is deleted.",
            file.display()
        );
    }
    eprintln!("Drover orchestrator on {} (CA: {})", running.url, running.ca_cert.display());
    wait_for_signal().await;
    eprintln!("shutting down");
    running.shutdown().await;
    Ok(crate::exit::OK)
}

pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> ServeArgs {
        ServeArgs {
            data_dir: dir.to_path_buf(),
            config: None,
            listen: None,
            database_url: None,
            heartbeat_timeout: None,
            tls_names: vec![],
            public_url: None,
        }
    }

    #[test]
    fn cors_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("drover.toml"),
            "public_url = \"https://drover.example.com/\"\n[http.cors]\nallowed_origins = [\"https://portal.example.com\"]\nallow_credentials = true\nmax_age_secs = 60\n",
        )
        .unwrap();
        let cfg = load(&args(dir.path())).unwrap();
        assert_eq!(cfg.public_url.as_deref(), Some("https://drover.example.com"));
        assert_eq!(cfg.cors.allowed_origins, vec!["https://portal.example.com".to_string()]);
        assert!(cfg.cors.allow_credentials);
        assert_eq!(cfg.cors.max_age_secs, 60);
        assert_eq!(cfg.cors.allowed_methods, vec!["GET", "POST", "PUT", "DELETE"]);
        std::fs::write(dir.path().join("drover.toml"), "[http.cors]\nallowed_origins = [\"*\"]\n").unwrap();
        assert!(format!("{:#}", load(&args(dir.path())).unwrap_err()).contains("not an origin"));
        std::fs::write(dir.path().join("drover.toml"), "[http.cors]\nallowed_orgins = []\n").unwrap();
        assert!(format!("{:#}", load(&args(dir.path())).unwrap_err()).contains("allowed_orgins"));
    }

    #[test]
    fn file_values_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drover.toml"), "listen = \"127.0.0.1:9999\"\nheartbeat_timeout = \"5s\"\n")
            .unwrap();
        let cfg = load(&args(dir.path())).unwrap();
        assert_eq!(cfg.listen.port(), 9999);
        assert_eq!(cfg.heartbeat_timeout, Duration::from_secs(5));
        let mut a = args(dir.path());
        a.listen = Some("127.0.0.1:1234".parse().unwrap());
        assert_eq!(load(&a).unwrap().listen.port(), 1234);
    }

    #[test]
    fn outbound_section_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("drover.toml");
        assert!(load(&args(dir.path())).unwrap().outbound.allowed_urls.is_empty(), "nothing by default");
        std::fs::write(&f, "[outbound]\nallowed_urls = [\"https://ci.example.com/job/\"]\n").unwrap();
        assert_eq!(load(&args(dir.path())).unwrap().outbound.allowed_urls, ["https://ci.example.com/job/"]);
        for bad in ["https://*.example.com/", "https://u:p@ci.example.com/", "ci.example.com", "ftp://x/"] {
            std::fs::write(&f, format!("[outbound]\nallowed_urls = [\"{bad}\"]\n")).unwrap();
            let e = format!("{:#}", load(&args(dir.path())).unwrap_err());
            assert!(e.contains("[outbound] allowed_urls"), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_and_artifacts_sections_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("drover.toml");
        let d = load(&args(dir.path())).unwrap();
        assert_eq!((d.limits.max_body_bytes, d.artifacts.max_size.0, d.artifacts.keep_versions), (4 << 20, 4 << 30, 0));
        std::fs::write(
            &f,
            "[http.limits]\nmax_connections_per_source = 50\nbody_timeout_secs = 5\n\n\
             [artifacts]\nmax_size = \"512MiB\"\nquota = \"20 GB\"\ntotal_quota = 1073741824\nkeep_versions = 10\n",
        )
        .unwrap();
        let c = load(&args(dir.path())).unwrap();
        assert_eq!((c.limits.max_connections_per_source, c.limits.body_timeout_secs), (50, 5));
        assert_eq!(c.limits.max_connections, 16_384, "unset keys keep their default");
        assert_eq!(
            (c.artifacts.max_size.0, c.artifacts.quota.0, c.artifacts.total_quota.0, c.artifacts.keep_versions),
            (512 << 20, 20_000_000_000, 1 << 30, 10)
        );
        for (bad, says) in [
            ("[http.limits]\nbody_timeout_secs = 0\n", "body_timeout_secs"),
            ("[http.limits]\nmax_header_bytes = 100\n", "max_header_bytes"),
            ("[http.limits]\nmax_conections = 5\n", "max_conections"),
            ("[artifacts]\nmax_size = \"12 parsecs\"\n", "unknown unit"),
            ("[artifacts]\nquota = \"-1GiB\"\n", "quota"),
            ("[artifacts]\ntotal_quota = 0\n", "[artifacts] total_quota must be at least 1"),
        ] {
            std::fs::write(&f, bad).unwrap();
            let e = format!("{:#}", load(&args(dir.path())).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("drover.toml"), "lisen = \"x\"\n").unwrap();
        let e = format!("{:#}", load(&args(dir.path())).unwrap_err());
        assert!(e.contains("lisen"), "{e}");
    }
}
