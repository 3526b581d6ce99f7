//! CLI commands: one module per noun, each subcommand a `run(self, &Conn)` (or a function of
//! the connection). Shared here: credentials, the client, printing, exit codes, secret files.

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

pub(crate) use crate::{Conn, Output, exit, render};

pub mod access;
pub mod agent;
pub mod agents;
pub mod artifacts;
pub mod audit;
pub mod clients;
pub mod deployments;
pub mod keys;
pub mod keystore;
pub mod master_key;
pub mod operators;
pub mod pipelines;
pub mod system;
pub mod variables;

pub use access::{AccessGroupsCommand, RolesCommand};
pub use agent::AgentArgs;
pub use agents::AgentsCommand;
pub use artifacts::ArtifactCommand;
pub use audit::AuditCommand;
pub use clients::ClientCommand;
pub use deployments::ActionArgs;
pub use keys::KeysCommand;
pub use keystore::KeystoreCommand;
pub use master_key::MasterKeyCommand;
pub use operators::OperatorsCommand;
pub use pipelines::EnvironmentsCommand;
pub use system::SystemCommand;
pub use variables::VariablesCommand;

/// Whether this command authenticated with a `drover login` session (so that a refusal can
/// say what to do).
pub static SESSION_USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What to add to an error, if anything: a refused login session is ended or revoked.
pub fn hint_for(e: &anyhow::Error) -> Option<&'static str> {
    (exit_code_of(e) == exit::UNAUTHENTICATED && SESSION_USED.load(Ordering::Relaxed))
        .then_some("this CLI's login session was refused (ended, revoked or signed out): run `drover login`")
}

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

/// A JSON file (a JWKS for `--jwks-file`).
pub fn read_json_file(p: &Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
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
            let password = match (&conn.login_password_file, std::env::var("DROVER_PASSWORD")) {
                (Some(f), _) => read_secret_file(f)?,
                (None, Ok(p)) if !p.is_empty() => p,
                _ => bail!(
                    "DROVER_USER is set: give the password in DROVER_PASSWORD, DROVER_PASSWORD_FILE or --login-password-file"
                ),
            };
            Credentials::Basic { user: user.clone(), password }
        }
        None => match crate::login::session_token(&conn.url, ca.as_deref()).await? {
            Some(token) => {
                SESSION_USED.store(true, Ordering::Relaxed);
                Credentials::Bearer(token)
            }
            None => bail!(
                "no credentials: run `drover login`, or set DROVER_USER and DROVER_PASSWORD (or DROVER_PASSWORD_FILE), or \
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

/// Writes a secret to `p`, mode 0600, replacing what is there (a file or a symlink: never
/// written through) by renaming a new file over it.
pub fn write_private(p: &Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = private_tmp(p);
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        writeln!(f, "{content}")?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("writing {}", p.display()))
}

fn private_tmp(p: &Path) -> PathBuf {
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    p.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Can a secret be written to `p`? Checked before asking the orchestrator for it, so that a
/// secret shown only once is not lost to a typo in the path.
pub fn check_writable(p: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = private_tmp(p);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write the secret to {}", p.display()))?;
    let _ = std::fs::remove_file(&tmp);
    Ok(())
}

/// `drover health [--wait D]`: the orchestrator answers `/healthz` (waiting up to D for it, and
/// for its CA file to appear, when it was just started).
pub async fn health(conn: &Conn, wait: Option<std::time::Duration>) -> anyhow::Result<u8> {
    let deadline = std::time::Instant::now() + wait.unwrap_or_default();
    loop {
        let ca = ca_of(conn);
        let ready = ca.as_deref().is_none_or(|p| p.exists());
        let r = if ready { Client::new(&conn.url, ca.as_deref(), Credentials::None)?.health().await } else { Ok(()) };
        match r {
            Ok(()) if ready => {
                println!("{} is up", conn.url);
                return Ok(exit::OK);
            }
            Err(e) if std::time::Instant::now() >= deadline => return Err(e.into()),
            _ if std::time::Instant::now() >= deadline => bail!("{} is not up: no CA file yet", conn.url),
            _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}
