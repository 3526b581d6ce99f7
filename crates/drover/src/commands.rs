//! CLI commands that talk to the orchestrator's API.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use drover_client::{Client, Credentials};
use drover_types::{Action, DeploymentStatus};
use futures_util::StreamExt;
use serde::Serialize;

use crate::{Conn, Output, exit, render};

/// Maps an error to the documented exit code.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<drover_client::Error>() {
        // The public table decides (docs/api.md, "Errors").
        Some(err @ drover_client::Error::Api { .. }) if err.code().is_some() => {
            err.code().map(|c| c.exit_code()).unwrap_or(exit::ERROR)
        }
        // An answer without a code of the table (a proxy's page, an OAuth endpoint): by status.
        Some(drover_client::Error::Api { status, .. }) => match status {
            401 => exit::UNAUTHENTICATED,
            403 => exit::FORBIDDEN,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            400 | 422 => exit::INVALID,
            503 => exit::UNAVAILABLE,
            _ => exit::ERROR,
        },
        Some(drover_client::Error::Transport(_)) => exit::UNREACHABLE,
        _ => exit::ERROR,
    }
}

/// Reads a secret or password file: first line, without surrounding whitespace.
pub fn read_secret_file(p: &Path) -> anyhow::Result<String> {
    let s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let s = s.lines().next().unwrap_or("").trim().to_string();
    if s.is_empty() {
        bail!("{} is empty", p.display());
    }
    Ok(s)
}

/// Client credentials from DROVER_CLIENT_ID and DROVER_CLIENT_SECRET (or _SECRET_FILE).
fn client_credentials_env() -> anyhow::Result<Option<(String, String)>> {
    let Ok(id) = std::env::var("DROVER_CLIENT_ID") else { return Ok(None) };
    let secret = match (std::env::var("DROVER_CLIENT_SECRET"), std::env::var_os("DROVER_CLIENT_SECRET_FILE")) {
        (_, Some(f)) => read_secret_file(Path::new(&f))?,
        (Ok(s), None) if !s.is_empty() => s,
        _ => bail!("DROVER_CLIENT_ID is set: give the secret in DROVER_CLIENT_SECRET or DROVER_CLIENT_SECRET_FILE"),
    };
    Ok(Some((id, secret)))
}

/// The CA to trust: `--ca-cert`, else `./drover-data/tls/ca.pem` when it exists.
pub fn ca_of(conn: &Conn) -> Option<PathBuf> {
    conn.ca_cert.clone().or_else(|| {
        let p = PathBuf::from("drover-data/tls/ca.pem");
        p.exists().then_some(p)
    })
}

/// A client for the API with the first credentials found: DROVER_CLIENT_ID/SECRET (client
/// credentials), DROVER_USER (+ password: Basic), or a `drover login` session.
pub async fn client(conn: &Conn) -> anyhow::Result<Client> {
    let ca = ca_of(conn);
    if conn.user.is_none()
        && let Some((id, secret)) = client_credentials_env()?
    {
        let anon = Client::new(&conn.url, ca.as_deref(), Credentials::None)?;
        let t = anon.client_credentials_token(&id, &secret, None).await?;
        let token = t["access_token"].as_str().context("the token response has no access_token")?.to_string();
        return Ok(Client::new(&conn.url, ca.as_deref(), Credentials::Bearer(token))?);
    }
    let creds = match &conn.user {
        Some(user) => {
            let password = match (&conn.password_file, std::env::var("DROVER_PASSWORD")) {
                (Some(f), _) => read_secret_file(f)?,
                (None, Ok(p)) if !p.is_empty() => p,
                _ => bail!("DROVER_USER is set: give the password in DROVER_PASSWORD or --password-file"),
            };
            Credentials::Basic { user: user.clone(), password }
        }
        None => match crate::login::session_token(&conn.url, ca.as_deref()).await? {
            Some(token) => Credentials::Bearer(token),
            None => bail!(
                "no credentials: run `drover login`, or set DROVER_USER and DROVER_PASSWORD (or --password-file), or \
                 DROVER_CLIENT_ID and DROVER_CLIENT_SECRET; the first operator is 'admin', its password is in \
                 DATA_DIR/initial-admin-password"
            ),
        },
    };
    Ok(Client::new(&conn.url, ca.as_deref(), creds)?)
}

fn print<T: Serialize>(output: Output, value: &T, text: impl FnOnce(&T) -> String) -> anyhow::Result<u8> {
    let out = match output {
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Text => text(value).trim_end().to_string(),
    };
    if out.is_empty() {
        return Ok(exit::OK);
    }
    match writeln!(std::io::stdout().lock(), "{out}") {
        // A closed pipe (`| head`) is not an error of ours.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(exit::OK),
    }
}

// ---- agent ----------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Orchestrator URL.
    #[arg(long, env = "DROVER_URL", default_value = "https://127.0.0.1:8443")]
    pub url: String,
    /// CA certificate to trust (the orchestrator's DATA_DIR/tls/ca.pem).
    #[arg(long, env = "DROVER_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Agent name, as registered with `drover agents add`.
    #[arg(long, env = "DROVER_AGENT_NAME")]
    pub name: String,
    /// File holding the agent's client secret (from `drover agents add`).
    #[arg(long, env = "DROVER_AGENT_SECRET_FILE", required_unless_present = "key_file")]
    pub secret_file: Option<PathBuf>,
    /// PKCS#8 PEM private key for private_key_jwt (see `drover agent-keygen`), instead of a secret.
    #[arg(long, env = "DROVER_AGENT_KEY_FILE", conflicts_with = "secret_file")]
    pub key_file: Option<PathBuf>,
    /// Where releases are unpacked and the attempt journal is kept.
    #[arg(long, env = "DROVER_WORK_DIR")]
    pub work_dir: PathBuf,
    /// Tasks run at once.
    #[arg(long, default_value_t = 4)]
    pub capacity: u32,
    /// How long a task's processes get after SIGTERM (abort, cancel, timeout) before SIGKILL.
    #[arg(long, env = "DROVER_KILL_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,
}

/// Reads a PKCS#8 private key from PEM (`BEGIN PRIVATE KEY`).
pub fn read_pkcs8_pem(p: &Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    if body.is_empty() {
        bail!("{}: no -----BEGIN PRIVATE KEY----- block (PKCS#8 PEM expected)", p.display());
    }
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .with_context(|| format!("{}: bad base64", p.display()))
}

pub async fn agent(a: AgentArgs) -> anyhow::Result<u8> {
    let (secret, auth) = match (&a.secret_file, &a.key_file) {
        (_, Some(k)) => {
            let der = read_pkcs8_pem(k)?;
            let key = drover_server::oauth::jwt::SigningKey::from_pkcs8(&der, None)
                .map_err(|e| anyhow!("{}: {e}", k.display()))?;
            (String::new(), Some(drover_client::ClientAuth::PrivateKey { pkcs8_der: der, kid: Some(key.kid) }))
        }
        (Some(f), None) => (read_secret_file(f)?, None),
        (None, None) => bail!("give --secret-file or --key-file"),
    };
    let cfg = drover_agent::AgentConfig {
        url: a.url,
        ca_cert: a.ca_cert,
        name: a.name.clone(),
        secret,
        auth,
        work_dir: a.work_dir,
        capacity: a.capacity.max(1),
        kill_grace: a.kill_grace,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::config::wait_for_signal().await;
        let _ = tx.send(true);
    });
    tracing::info!(agent = %a.name, "agent starting");
    drover_agent::run(cfg, rx).await?;
    Ok(exit::OK)
}

// ---- pipelines ------------------------------------------------------------------------------

pub async fn apply(conn: &Conn, file: &Path) -> anyhow::Result<u8> {
    let yaml = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let c = client(conn).await?;
    let r = c.apply_yaml(&yaml).await.map_err(|e| match e {
        drover_client::Error::Api { status: 422, code, message } => {
            anyhow!(drover_client::Error::Api { status: 422, code, message: format!("{}: {message}", file.display()) })
        }
        e => anyhow!(e),
    })?;
    print(conn.output, &r, |r| {
        let mut s = format!("pipeline {} {}", r.pipeline.name, r.outcome);
        for e in &r.created_environments {
            s.push_str(&format!("\nenvironment {e} created"));
        }
        s
    })
}

pub async fn pipelines(conn: &Conn) -> anyhow::Result<u8> {
    let v = client(conn).await?.pipelines().await?;
    print(conn.output, &v, |v| {
        let mut s = format!("{:<24} {:<16} STAGES\n", "NAME", "APPLICATION");
        for p in v {
            let stages: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
            s.push_str(&format!("{:<24} {:<16} {}\n", p.name, p.application, stages.join(" → ")));
        }
        s
    })
}

#[derive(Subcommand, Debug)]
pub enum EnvironmentsCommand {
    /// Create or change an environment (needs environment.manage).
    Set {
        name: String,
        /// dev, qa, staging, production or custom (default: from the name; kept on a change).
        #[arg(long)]
        kind: Option<String>,
        /// Only these applications' pipelines may target it (repeat; none: any application).
        #[arg(long = "application")]
        applications: Vec<String>,
    },
}

pub async fn environments(conn: &Conn, cmd: Option<EnvironmentsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let line = |e: &drover_types::Environment| {
        let apps = if e.applications.is_empty() { "any".to_string() } else { e.applications.join(",") };
        format!("{:<24} {:<12} {apps}", e.name, e.kind.as_str())
    };
    match cmd {
        None => {
            let v = c.environments().await?;
            print(conn.output, &v, |v| {
                let mut s = format!("{:<24} {:<12} APPLICATIONS\n", "NAME", "KIND");
                for e in v {
                    s.push_str(&(line(e) + "\n"));
                }
                s
            })
        }
        Some(EnvironmentsCommand::Set { name, kind, applications }) => {
            let kind = kind
                .map(|k| {
                    drover_types::EnvironmentKind::parse(&k)
                        .ok_or_else(|| anyhow!("unknown kind {k:?}: dev, qa, staging, production or custom"))
                })
                .transpose()?;
            let e = drover_types::NewEnvironment { name, kind, labels: Default::default(), applications };
            let exists = c.environments().await?.iter().any(|x| x.name == e.name);
            let got = if exists { c.put_environment(&e).await? } else { c.create_environment(&e).await? };
            print(conn.output, &got, line)
        }
    }
}

// ---- deployments ----------------------------------------------------------------------------

pub async fn deploy(conn: &Conn, app: &str, version: &str, pipeline: Option<&str>, follow: bool) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let pipeline = match pipeline {
        Some(p) => p.to_string(),
        None => {
            let all = c.pipelines().await?;
            let mine: Vec<_> = all.iter().filter(|p| p.application == app).collect();
            match mine.as_slice() {
                [one] => one.name.clone(),
                [] => bail!("application {app} has no pipeline; apply one first (drover apply -f pipeline.yaml)"),
                many => match many.iter().find(|p| p.name == app) {
                    Some(p) => p.name.clone(),
                    None => bail!(
                        "application {app} has several pipelines ({}); choose one with --pipeline",
                        many.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                },
            }
        }
    };
    let d = c.deploy(&pipeline, version).await?;
    if follow {
        if conn.output == Output::Text {
            println!("deployment {} of {} {} started", d.id, d.application, d.version);
        }
        return follow_deployment(&c, conn.output, d.id).await;
    }
    print(conn.output, &d, |d| {
        format!("deployment {} of {} {} on pipeline {}: {}", d.id, d.application, d.version, d.pipeline, d.status)
    })
}

pub async fn status(conn: &Conn, id: i64, follow: bool) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    if follow {
        return follow_deployment(&c, conn.output, id).await;
    }
    let d = c.deployment(id).await?;
    print(conn.output, &d, render::deployment)
}

/// Streams a deployment until it ends or stops in error, through every wait (queued,
/// promotion, approval, pause), saying what it waits for and what would continue it; exit 0
/// only if it completed. The server ends a stream after an hour: it is followed on from the
/// last log line seen.
pub async fn follow_deployment(c: &Client, output: Output, id: i64) -> anyhow::Result<u8> {
    let mut r = render::Follower::default();
    let mut last: Option<drover_types::Deployment> = None;
    let mut after = 0;
    // Bounded: each stream lasts up to an hour.
    'streams: for _ in 0..10_000 {
        let mut stream = Box::pin(c.follow(id, after).await?);
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"event": ev.event, "data": serde_json::from_str::<serde_json::Value>(&ev.data).unwrap_or_default()})
                );
            }
            match ev.event.as_str() {
                "deployment" => {
                    let d: drover_types::Deployment = serde_json::from_str(&ev.data)?;
                    if output == Output::Text {
                        for line in r.changes(&d) {
                            println!("{line}");
                        }
                    }
                    // In error it waits for an operator (retry, skip, abort): stop here, with
                    // the commands printed above.
                    let stop = d.status == DeploymentStatus::Error;
                    last = Some(d);
                    if stop {
                        break 'streams;
                    }
                }
                "log" => {
                    let l: drover_types::LogLine = serde_json::from_str(&ev.data)?;
                    after = after.max(l.id);
                    if output == Output::Text {
                        println!("{}", r.log_line(&l, last.as_ref()));
                    }
                }
                "end" => break 'streams,
                _ => {}
            }
        }
        if last.as_ref().is_some_and(|d| d.status.is_terminal()) {
            break;
        }
    }
    let d = c.deployment(id).await?;
    Ok(if d.status == DeploymentStatus::Completed { exit::OK } else { exit::DEPLOYMENT_NOT_COMPLETED })
}

pub async fn logs(conn: &Conn, id: i64) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let mut after = 0;
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = c.logs(id, after).await?;
        if page.lines.is_empty() {
            break;
        }
        after = page.next;
        all.extend(page.lines);
    }
    print(conn.output, &all, |v| {
        v.iter().map(|l| format!("{} [{}/{}] {}: {}\n", l.ts, l.stage_index, l.task_index, l.stream, l.line)).collect()
    })
}

pub async fn deployments(conn: &Conn, pipeline: Option<&str>, status: Option<&str>, limit: u32) -> anyhow::Result<u8> {
    let v = client(conn).await?.deployments(pipeline, status, Some(limit)).await?;
    print(conn.output, &v, |v| {
        let mut s =
            format!("{:>6}  {:<20} {:<12} {:<18} {:<8} CREATED BY\n", "ID", "PIPELINE", "VERSION", "STATUS", "STAGE");
        for d in v {
            s.push_str(&format!(
                "{:>6}  {:<20} {:<12} {:<18} {:<8} {}\n",
                d.id,
                d.pipeline,
                d.version,
                d.status.as_str(),
                d.stage_index,
                d.created_by
            ));
        }
        s
    })
}

#[derive(Args, Debug)]
pub struct ActionArgs {
    /// Deployment id.
    pub id: i64,
    /// Why (recorded with the action).
    #[arg(long, alias = "comment")]
    pub reason: Option<String>,
    /// Approve or reject as an override, not as one of the approvers (needs
    /// approval.override and --reason; recorded as an override).
    #[arg(long = "override")]
    pub override_approval: bool,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn action(a: ActionArgs, action: Action) -> anyhow::Result<u8> {
    if a.override_approval && !matches!(action, Action::Approve | Action::Reject) {
        anyhow::bail!("--override applies to approve and reject only");
    }
    if a.override_approval && a.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        anyhow::bail!("an override needs --reason (it is recorded with the decision)");
    }
    let req = drover_types::ActionRequest { reason: a.reason, comment: None, override_approval: a.override_approval };
    let d = client(&a.conn).await?.act_with(a.id, action, &req).await?;
    print(a.conn.output, &d, |d| {
        if action == Action::Rollback {
            format!("rollback deployment {} of {} {} started ({})", d.id, d.application, d.version, d.status)
        } else {
            format!(
                "deployment {}: {}{}",
                d.id,
                d.status,
                d.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()
            )
        }
    })
}

// ---- agents ---------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// Register an agent; prints its secret once.
    Add {
        name: String,
        #[arg(long)]
        environment: String,
        /// Also write the secret to this file (mode 0600).
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// The agent's public keys (from `drover agent-keygen`): it authenticates with
        /// private_key_jwt and gets no secret.
        #[arg(long, conflicts_with = "secret_out")]
        jwks_file: Option<PathBuf>,
    },
    /// Remove an agent.
    Remove { name: String },
}

pub async fn agents(conn: &Conn, cmd: Option<AgentsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    match cmd {
        None => {
            let v = c.agents().await?;
            print(conn.output, &v, |v| {
                let mut s = format!("{:<24} {:<16} {:<8} LAST SEEN\n", "NAME", "ENVIRONMENT", "ONLINE");
                for a in v {
                    let seen = a.last_seen_at.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
                    s.push_str(&format!(
                        "{:<24} {:<16} {:<8} {}\n",
                        a.name,
                        a.environment,
                        if a.online { "yes" } else { "no" },
                        seen
                    ));
                }
                s
            })
        }
        Some(AgentsCommand::Add { name, environment, secret_out, jwks_file }) => {
            let jwks = match &jwks_file {
                Some(f) => Some(
                    serde_json::from_str(
                        &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", f.display()))?,
                ),
                None => None,
            };
            let cred = c.register_agent(&drover_types::NewAgent { name, environment, jwks }).await?;
            if let Some(p) = &secret_out {
                write_private(p, &cred.secret)?;
            }
            if cred.secret.is_empty() {
                return print(conn.output, &cred, |c| {
                    format!(
                        "agent {} registered for environment {} (key authentication)\nrun it with: drover agent --url URL --ca-cert CA --name {} --key-file KEY --work-dir DIR",
                        c.name, c.environment, c.name
                    )
                });
            }
            print(conn.output, &cred, |c| {
                format!(
                    "agent {} registered for environment {}\nsecret (shown once): {}\nrun it with: drover agent --url URL --ca-cert CA --name {} --secret-file FILE --work-dir DIR",
                    c.name, c.environment, c.secret, c.name
                )
            })
        }
        Some(AgentsCommand::Remove { name }) => {
            c.delete_agent(&name).await?;
            print(conn.output, &serde_json::json!({"removed": name}), |_| format!("agent {name} removed"))
        }
    }
}

pub fn write_private(p: &Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .with_context(|| format!("writing {}", p.display()))?;
    writeln!(f, "{content}")?;
    Ok(())
}

// ---- artifacts ------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum ArtifactCommand {
    /// Stream a file (a .tar.gz) to the orchestrator as APP VERSION.
    Push {
        file: PathBuf,
        #[arg(long)]
        app: String,
        #[arg(long)]
        version: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List artifacts.
    List {
        #[arg(long)]
        app: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a version (refused while a deployment that has not ended uses it).
    Delete {
        #[arg(long)]
        app: String,
        #[arg(long)]
        version: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn artifact(cmd: ArtifactCommand) -> anyhow::Result<u8> {
    match cmd {
        ArtifactCommand::Push { file, app, version, conn } => {
            let c = client(&conn).await?;
            let len = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
            let tty = std::io::stderr().is_terminal() && conn.output == Output::Text;
            let shown = Arc::new(AtomicU64::new(0));
            let progress = {
                let shown = shown.clone();
                move |sent: u64| {
                    if !tty {
                        return;
                    }
                    let pct = (sent * 100).checked_div(len).unwrap_or(100);
                    if shown.swap(pct, Ordering::Relaxed) != pct || sent == len {
                        let bar = "#".repeat((pct / 4) as usize);
                        eprint!("\r[{bar:<25}] {pct:>3}% {} / {} MiB", sent >> 20, len >> 20);
                        let _ = std::io::stderr().flush();
                    }
                }
            };
            let a = c.push_artifact(&app, &version, &file, None, progress).await;
            if tty {
                eprintln!();
            }
            let a = a?;
            print(conn.output, &a, |a| {
                format!("{} {} stored: {} bytes, sha256 {}", a.application, a.version, a.size, a.sha256)
            })
        }
        ArtifactCommand::Delete { app, version, conn } => {
            client(&conn).await?.delete_artifact(&app, &version).await?;
            println!("{app} {version} deleted");
            Ok(exit::OK)
        }
        ArtifactCommand::List { app, conn } => {
            let v = client(&conn).await?.artifacts(app.as_deref()).await?;
            print(conn.output, &v, |v| {
                let mut s = format!("{:<20} {:<16} {:>12}  SHA256\n", "APPLICATION", "VERSION", "SIZE");
                for a in v {
                    s.push_str(&format!("{:<20} {:<16} {:>12}  {}\n", a.application, a.version, a.size, a.sha256));
                }
                s
            })
        }
    }
}

// ---- audit ----------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List entries, newest first.
    List {
        /// e.g. operator:admin, agent:dev-1, anonymous
        #[arg(long)]
        principal: Option<String>,
        /// Substring of the action (e.g. approve, auth.failed).
        #[arg(long)]
        action: Option<String>,
        /// success, failure or denied.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check the keyed chain and the signed checkpoints; exit 11 at the first rewritten,
    /// removed or truncated entry.
    Verify {
        #[command(flatten)]
        conn: Conn,
    },
    /// Write the log, its checkpoints, the checkpoint public key and the chain key as JSON
    /// Lines, for a third party (docs/verify-audit-export.py checks it).
    Export {
        /// The file to write (mode 0600: it holds the chain key).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn audit(cmd: AuditCommand) -> anyhow::Result<u8> {
    match cmd {
        AuditCommand::List { principal, action, outcome, limit, conn } => {
            let v = client(&conn)
                .await?
                .audit(principal.as_deref(), action.as_deref(), outcome.as_deref(), Some(limit))
                .await?;
            print(conn.output, &v, |v| {
                let mut s = String::new();
                for a in v {
                    let e = &a.entry;
                    s.push_str(&format!(
                        "{:>6} {} {:<22} {:<8} {} {} (from {}, request {})\n",
                        a.seq, e.ts, e.principal, e.outcome, e.action, e.target, e.source, e.request_id
                    ));
                }
                s
            })
        }
        AuditCommand::Verify { conn } => {
            let v = client(&conn).await?.verify_audit().await?;
            let code = if v.ok { exit::OK } else { exit::AUDIT_BROKEN };
            print(conn.output, &v, |v| match &v.broken {
                None => format!(
                    "audit log intact: {} entries; head {} {}",
                    v.entries,
                    v.head_seq.unwrap_or(0),
                    v.head_hash.as_deref().unwrap_or("-")
                ),
                Some(b) => format!(
                    "audit log BROKEN at entry {}: {} ({} entries verified before it)",
                    b.seq, b.reason, v.entries
                ),
            })?;
            Ok(code)
        }
        AuditCommand::Export { out, conn } => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt;
            let mut stream = Box::pin(client(&conn).await?.audit_export().await?);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut bytes = 0usize;
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk?;
                bytes += chunk.len();
                f.write_all(&chunk)?;
            }
            f.sync_all()?;
            print(conn.output, &serde_json::json!({"file": out, "bytes": bytes}), |_| {
                format!(
                    "audit log exported to {} ({bytes} bytes); check it with docs/verify-audit-export.py",
                    out.display()
                )
            })
        }
    }
}

// ---- keystores ------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum KeystoreCommand {
    /// List aliases, key types, certificate subjects and expiry. Never prints key material.
    Inspect {
        file: PathBuf,
        /// File holding the keystore password (PKCS#12 and JKS need one).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "password_file")]
        password_stdin: bool,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Serialize)]
struct InspectEntry<'a> {
    alias: &'a str,
    key_type: Option<String>,
    certificates: &'a [drover_keystore::CertInfo],
}

pub fn keystore(cmd: KeystoreCommand) -> anyhow::Result<u8> {
    let KeystoreCommand::Inspect { file, password_file, password_stdin, output } = cmd;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let password = if password_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        Some(s.trim_end_matches(['\r', '\n']).to_string())
    } else {
        password_file.as_deref().map(read_secret_file).transpose()?
    };
    let ks = drover_keystore::open(&bytes, password.as_deref()).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let entries: Vec<InspectEntry> = ks
        .entries
        .iter()
        .map(|e| InspectEntry {
            alias: &e.alias,
            key_type: e.key.as_ref().map(|k| k.kind.to_string()),
            certificates: &e.certs,
        })
        .collect();
    let view = serde_json::json!({"format": ks.format, "entries": entries});
    print(output, &view, |_| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut s = format!(
            "{}: {} keystore, {} entr{}\n",
            file.display(),
            ks.format,
            ks.entries.len(),
            if ks.entries.len() == 1 { "y" } else { "ies" }
        );
        for e in &ks.entries {
            let what = match &e.key {
                Some(k) => format!("private key {} with {} certificate(s)", k.kind, e.certs.len()),
                None => "trusted certificate".to_string(),
            };
            s.push_str(&format!("  {}: {what}\n", e.alias));
            for c in &e.certs {
                let expiry = drover_types::Timestamp(c.not_after * 1000);
                let left = (c.not_after - now) / 86_400;
                let state = if c.not_after < now { "EXPIRED".to_string() } else { format!("in {left} days") };
                s.push_str(&format!(
                    "    subject {}\n    issuer  {}\n    expires {expiry} ({state}); public key {}; sha256 {}\n",
                    c.subject, c.issuer, c.public_key, c.sha256
                ));
            }
        }
        s
    })
}

// ---- operators ------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum OperatorsCommand {
    /// Add an operator; without --password-file a random password is generated and shown once.
    /// Without --role, the operator's rights come from access groups only.
    Add {
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Refuse the operator's logins.
    Disable { name: String },
    /// Accept the operator's logins again.
    Enable { name: String },
    /// Lift a lockout after repeated failed logins.
    Unlock { name: String },
    /// Set a new password (read from a file).
    SetPassword {
        name: String,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Replace the operator's roles.
    SetRoles {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// End every login session of the operator (their tokens stop working now).
    RevokeSessions { name: String },
}

fn operator_line(o: &drover_types::Operator) -> String {
    let state = if o.disabled {
        "disabled".to_string()
    } else if let Some(t) = o.locked_until {
        format!("locked until {t}")
    } else {
        "active".to_string()
    };
    format!("{:<20} {:<28} {:<24} {}", o.name, o.roles.join(","), o.email.as_deref().unwrap_or("-"), state)
}

pub async fn operators(conn: &Conn, cmd: Option<OperatorsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let update = |disabled: Option<bool>, roles: Option<Vec<String>>| drover_types::OperatorUpdate {
        email: None,
        roles,
        disabled,
    };
    let one = match cmd {
        None => {
            let v = c.operators().await?;
            return print(conn.output, &v, |v| {
                let mut s = format!("{:<20} {:<28} {:<24} STATE\n", "NAME", "ROLES", "EMAIL");
                for o in v {
                    s.push_str(&operator_line(o));
                    s.push('\n');
                }
                s
            });
        }
        Some(OperatorsCommand::Add { name, roles, email, password_file }) => {
            let password = password_file.as_deref().map(read_secret_file).transpose()?;
            let created = c.add_operator(&drover_types::NewOperator { name, email, roles, password }).await?;
            return print(conn.output, &created, |r| match &r.password {
                Some(pw) => format!("operator {} added\npassword (shown once): {pw}", r.operator.name),
                None => format!("operator {} added", r.operator.name),
            });
        }
        Some(OperatorsCommand::Disable { name }) => c.update_operator(&name, &update(Some(true), None)).await?,
        Some(OperatorsCommand::Enable { name }) => c.update_operator(&name, &update(Some(false), None)).await?,
        Some(OperatorsCommand::Unlock { name }) => c.unlock_operator(&name).await?,
        Some(OperatorsCommand::SetRoles { name, roles }) => {
            c.update_operator(&name, &update(None, Some(roles))).await?
        }
        Some(OperatorsCommand::RevokeSessions { name }) => {
            c.revoke_operator_sessions(&name).await?;
            return print(conn.output, &serde_json::json!({"name": name, "sessions": "revoked"}), |_| {
                format!("every session of {name} is revoked")
            });
        }
        Some(OperatorsCommand::SetPassword { name, password_file }) => {
            let pw = read_secret_file(&password_file)?;
            c.set_operator_password(&name, &pw).await?;
            return print(conn.output, &serde_json::json!({"name": name, "password": "changed"}), |_| {
                format!("password of {name} changed")
            });
        }
    };
    print(conn.output, &one, operator_line)
}

// ---- OAuth clients --------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client; prints its id and secret once (none for --public or --jwks-file).
    Create {
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Exact redirect URI for the authorization-code flow (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (no secret; operator sign-in flows with PKCE only).
        #[arg(long)]
        public: bool,
        /// Public keys (a JWKS file) for private_key_jwt; the client gets no secret.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// Also write the secret to this file (mode 0600).
        #[arg(long)]
        secret_out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List clients.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// One client: roles, state, redirect URIs, keys, secret rotation and revocation times.
    Show {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// New secret; with --grace the old one keeps working that long (e.g. 1h).
    RegenerateSecret {
        name: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
        #[arg(long)]
        secret_out: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke every token the client holds, at once.
    RevokeTokens {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Refuse the client (its tokens stop working).
    Disable {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    Enable {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn client_line(c: &drover_types::Client) -> String {
    let mut s =
        format!("{:<24} {:<28} {}", c.client_id, c.roles.join(","), if c.disabled { "disabled" } else { "enabled" });
    if let Some(t) = c.previous_secret_valid_until {
        s.push_str(&format!("; previous secret valid until {t}"));
    }
    if let Some(t) = c.tokens_not_before {
        s.push_str(&format!("; tokens before {t} revoked"));
    }
    s
}

pub async fn oauth_client(cmd: ClientCommand) -> anyhow::Result<u8> {
    let show_secret = |s: &drover_types::ClientSecret, out: &Option<PathBuf>| -> anyhow::Result<()> {
        if let Some(p) = out {
            write_private(p, &s.client_secret)?;
        }
        Ok(())
    };
    match cmd {
        ClientCommand::Create { name, roles, redirect_uris, public, jwks_file, secret_out, conn } => {
            let jwks = match &jwks_file {
                Some(f) => Some(
                    serde_json::from_str(
                        &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
                    )
                    .with_context(|| format!("{} is not JSON", f.display()))?,
                ),
                None => None,
            };
            if roles.is_empty() && !public {
                bail!("give at least one --role (or --public for a client that only acts for operators)");
            }
            let n = drover_types::NewClient { name, roles, redirect_uris, public, jwks };
            let s = client(&conn).await?.register_client(&n).await?;
            if !s.client_secret.is_empty() {
                show_secret(&s, &secret_out)?;
            }
            print(conn.output, &s, |s| {
                if s.client_secret.is_empty() {
                    format!("client_id: {} (no secret)", s.client_id)
                } else {
                    format!("client_id: {}\nclient_secret (shown once): {}", s.client_id, s.client_secret)
                }
            })
        }
        ClientCommand::List { conn } => {
            let v = client(&conn).await?.clients().await?;
            print(conn.output, &v, |v| v.iter().map(|c| client_line(c) + "\n").collect())
        }
        ClientCommand::Show { name, conn } => {
            let c = client(&conn).await?.client_registration(&name).await?;
            print(conn.output, &c, |c| {
                let mut t = client_line(c);
                if c.public {
                    t.push_str("\npublic client (no secret; PKCE)");
                }
                if !c.redirect_uris.is_empty() {
                    t.push_str(&format!("\nredirect URIs: {}", c.redirect_uris.join(" ")));
                }
                if !c.key_ids.is_empty() {
                    t.push_str(&format!("\nprivate_key_jwt keys: {}", c.key_ids.join(" ")));
                }
                if let Some(a) = &c.agent {
                    t.push_str(&format!("\nthe client of agent {a}"));
                }
                t
            })
        }
        ClientCommand::RegenerateSecret { name, grace, secret_out, conn } => {
            let s = client(&conn).await?.regenerate_client_secret(&name, grace.unwrap_or_default()).await?;
            show_secret(&s, &secret_out)?;
            print(conn.output, &s, |s| {
                let mut t = format!("client_id: {}\nclient_secret (shown once): {}", s.client_id, s.client_secret);
                if let Some(u) = s.previous_secret_valid_until {
                    t.push_str(&format!("\nthe previous secret works until {u}"));
                }
                t
            })
        }
        ClientCommand::RevokeTokens { name, conn } => {
            let c = client(&conn).await?.revoke_client_tokens(&name).await?;
            print(conn.output, &c, client_line)
        }
        ClientCommand::Disable { name, conn } => {
            let u = drover_types::ClientUpdate { disabled: Some(true), ..Default::default() };
            let c = client(&conn).await?.update_client(&name, &u).await?;
            print(conn.output, &c, client_line)
        }
        ClientCommand::Enable { name, conn } => {
            let u = drover_types::ClientUpdate { disabled: Some(false), ..Default::default() };
            let c = client(&conn).await?.update_client(&name, &u).await?;
            print(conn.output, &c, client_line)
        }
        ClientCommand::Delete { name, conn } => {
            client(&conn).await?.delete_client(&name).await?;
            print(conn.output, &serde_json::json!({"deleted": name}), |_| format!("client {name} deleted"))
        }
    }
}

// ---- signing keys ---------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List token-signing keys.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Generate a new key and make it active; the old one keeps verifying its tokens.
    Rotate {
        /// ES256, EdDSA, RS256 or PS256 (default: the current key's algorithm).
        #[arg(long)]
        alg: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Import the private key under ALIAS from a keystore (PKCS#12, JKS or PEM).
    Import {
        file: PathBuf,
        #[arg(long)]
        alias: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Make it the active signing key.
        #[arg(long)]
        activate: bool,
        /// For RSA keys: RS256 (default) or PS256.
        #[arg(long)]
        alg: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn keys(cmd: KeysCommand) -> anyhow::Result<u8> {
    match cmd {
        KeysCommand::List { conn } => {
            let v = client(&conn).await?.keys().await?;
            print(conn.output, &v, |v| {
                let mut s = format!("{:<18} {:<6} {:<8} {:<8} CREATED\n", "KID", "ALG", "ACTIVE", "IN JWKS");
                for k in v {
                    s.push_str(&format!(
                        "{:<18} {:<6} {:<8} {:<8} {}{}\n",
                        k.kid,
                        k.alg,
                        if k.active { "yes" } else { "no" },
                        if k.in_jwks { "yes" } else { "no" },
                        k.created_at,
                        k.retired_at.map(|r| format!(" (retired {r})")).unwrap_or_default()
                    ));
                }
                s
            })
        }
        KeysCommand::Rotate { alg, conn } => {
            let v = client(&conn).await?.rotate_key_to(alg.as_deref()).await?;
            print(conn.output, &v, |v| {
                format!("new active key {} ({})", v["kid"].as_str().unwrap_or("?"), v["alg"].as_str().unwrap_or("?"))
            })
        }
        KeysCommand::Import { file, alias, password_file, activate, alg, conn } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let password = password_file.as_deref().map(read_secret_file).transpose()?;
            let ks =
                drover_keystore::open(&bytes, password.as_deref()).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let (key, _) = ks.signing_key(&alias).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let v = client(&conn).await?.import_key(key.pkcs8_der(), alg.as_deref(), activate).await?;
            print(conn.output, &v, |v| {
                format!(
                    "imported key {} ({}){}",
                    v["kid"].as_str().unwrap_or("?"),
                    v["alg"].as_str().unwrap_or("?"),
                    if activate { " (active)" } else { "" }
                )
            })
        }
    }
}

// ---- roles and access groups ------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum RolesCommand {
    /// A custom role: a name and its privileges.
    Create {
        name: String,
        #[arg(long = "privilege", required = true)]
        privileges: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        name: String,
    },
}

pub async fn roles(conn: &Conn, cmd: Option<RolesCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let line = |r: &drover_types::Role| {
        format!("{:<20} {:<9} {}", r.name, if r.built_in { "built-in" } else { "custom" }, r.privileges.join(","))
    };
    match cmd {
        None => {
            let v = c.roles().await?;
            print(conn.output, &v, |v| v.iter().map(|r| line(r) + "\n").collect())
        }
        Some(RolesCommand::Create { name, privileges, description }) => {
            let r = c.create_role(&drover_types::Role { name, privileges, built_in: false, description }).await?;
            print(conn.output, &r, line)
        }
        Some(RolesCommand::Delete { name }) => {
            c.delete_role(&name).await?;
            print(conn.output, &serde_json::json!({"deleted": name}), |_| format!("role {name} deleted"))
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AccessGroupsCommand {
    /// Create or replace an access group: members get the roles, on the applications given
    /// (all applications without --application).
    Set {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[arg(long = "operator")]
        operators: Vec<String>,
        #[arg(long = "client")]
        clients: Vec<String>,
        #[arg(long = "application")]
        applications: Vec<String>,
    },
    Delete {
        name: String,
    },
}

pub async fn access_groups(conn: &Conn, cmd: Option<AccessGroupsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let line = |g: &drover_types::AccessGroup| {
        format!(
            "{:<20} roles {}; operators {}; clients {}; applications {}",
            g.name,
            g.roles.join(","),
            if g.operators.is_empty() { "-".into() } else { g.operators.join(",") },
            if g.clients.is_empty() { "-".into() } else { g.clients.join(",") },
            if g.applications.is_empty() { "all".into() } else { g.applications.join(",") },
        ) + &if g.ineffective_privileges.is_empty() {
            String::new()
        } else {
            format!("; no effect under its scope: {}", g.ineffective_privileges.join(","))
        }
    };
    match cmd {
        None => {
            let v = c.access_groups().await?;
            print(conn.output, &v, |v| v.iter().map(|g| line(g) + "\n").collect())
        }
        Some(AccessGroupsCommand::Set { name, roles, operators, clients, applications }) => {
            let g = drover_types::AccessGroup {
                name,
                roles,
                operators,
                clients,
                applications,
                ineffective_privileges: vec![],
            };
            let g = c.put_access_group(&g).await?;
            print(conn.output, &g, line)
        }
        Some(AccessGroupsCommand::Delete { name }) => {
            c.delete_access_group(&name).await?;
            print(conn.output, &serde_json::json!({"deleted": name}), |_| format!("access group {name} deleted"))
        }
    }
}

/// `drover agent-keygen`: a P-256 key for private_key_jwt, written as PKCS#8 PEM (mode 0600);
/// prints the public JWKS to register with `drover agents add --jwks-file`.
pub fn agent_keygen(key_file: &Path) -> anyhow::Result<u8> {
    use base64::Engine as _;
    if key_file.exists() {
        bail!("{} exists; not overwriting a key", key_file.display());
    }
    let alg = drover_server::oauth::jwt::Alg::ES256;
    let der = drover_server::oauth::jwt::generate(alg).map_err(|e| anyhow!(e))?;
    let key = drover_server::oauth::jwt::SigningKey::from_pkcs8(&der, Some(alg)).map_err(|e| anyhow!(e))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk)?);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    write_private(key_file, pem.trim_end())?;
    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"keys": [key.public_jwk()]}))?);
    Ok(exit::OK)
}

// ---- master key -----------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum MasterKeyCommand {
    /// Replace the master key and re-seal every stored secret with the new one. Run it while
    /// the orchestrator is stopped.
    Rotate {
        #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
        data_dir: PathBuf,
        #[arg(long, env = "DROVER_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Re-seal every stored secret under the current master key (after changing
    /// DROVER_MASTER_KEY by hand, with the old key in DROVER_MASTER_KEY_RETIRED).
    Reseal {
        #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
        data_dir: PathBuf,
        #[arg(long, env = "DROVER_DATABASE_URL")]
        database_url: Option<String>,
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

pub async fn master_key(cmd: MasterKeyCommand) -> anyhow::Result<u8> {
    match cmd {
        MasterKeyCommand::Reseal { data_dir, database_url, output } => {
            let r = drover_server::reseal(&data_dir, database_url.as_deref()).await?;
            print(output, &r, |r| {
                format!(
                    "{} signing keys and {} profile secrets re-sealed under master key {}",
                    r.signing_keys, r.profile_secrets, r.new_id
                )
            })
        }
        MasterKeyCommand::Rotate { data_dir, database_url, output } => {
            let r = drover_server::rotate_master_key(&data_dir, database_url.as_deref()).await?;
            print(output, &r, |r| {
                format!(
                    "master key {} replaced by {}: {} signing keys and {} profile secrets re-sealed\n\
                     the old key is kept as {}; delete it once no backup needs it",
                    r.old_id,
                    r.new_id,
                    r.signing_keys,
                    r.profile_secrets,
                    r.retired_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
                )
            })
        }
    }
}

// ---- system -----------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Orchestrator nodes: version, start, last heartbeat, draining (system.observe).
    Nodes,
    /// Caches with size and hit rate (system.observe).
    Caches,
    /// Database connections, agent long polls, password hashing (system.observe).
    Pools,
    /// Ready tasks per environment, active deployments per status (system.observe).
    Queues,
    /// Empty a cache of the node answering: verified_tokens, sign_ins, principals, jwks (system.manage).
    ClearCache { name: String },
    /// Stop a node handing out new work; its agents finish what they hold (system.manage).
    Drain { node: String },
    /// End a node's drain (system.manage).
    Resume { node: String },
    /// Resize the database pool, PostgreSQL only (system.manage).
    PoolSize { max_connections: u32 },
}

pub async fn system(conn: &Conn, cmd: SystemCommand) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let v = match cmd {
        SystemCommand::Nodes => c.system("nodes").await?,
        SystemCommand::Caches => c.system("caches").await?,
        SystemCommand::Pools => c.system("pools").await?,
        SystemCommand::Queues => c.system("queues").await?,
        SystemCommand::ClearCache { name } => c.clear_cache(&name).await?,
        SystemCommand::Drain { node } => c.drain_node(&node, true).await?,
        SystemCommand::Resume { node } => c.drain_node(&node, false).await?,
        SystemCommand::PoolSize { max_connections } => c.resize_pool(max_connections).await?,
    };
    print(conn.output, &v, |v| serde_json::to_string_pretty(v).unwrap_or_default())
}
