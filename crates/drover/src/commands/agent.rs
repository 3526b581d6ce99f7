//! `drover agent` (run an agent) and `drover agent-keygen`.

use super::*;

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
    /// Tasks run at once (with --task-user: the number of task users).
    #[arg(long, default_value_t = 4)]
    pub capacity: u32,
    /// How long a task's processes get after SIGTERM (abort, cancel, timeout) before SIGKILL.
    #[arg(long, env = "DROVER_KILL_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub kill_grace: std::time::Duration,
    /// A user tasks run as, NAME or UID:GID (repeatable; one task per user at a time, so the
    /// capacity is their number). The agent must run as root. Without one, tasks run as the
    /// agent's own user (isolation: none).
    #[arg(long = "task-user", env = "DROVER_TASK_USER", value_delimiter = ',')]
    pub task_users: Vec<String>,
    /// An environment variable of the agent's passed to tasks as it is (repeatable), e.g. a
    /// proxy or JAVA_HOME; tasks get nothing else of the agent's environment.
    #[arg(long = "task-env", env = "DROVER_TASK_ENV", value_delimiter = ',')]
    pub task_env: Vec<String>,
}

/// A `--task-env` name: an environment variable's name, never one of Drover's own.
fn task_env_name(n: &str) -> anyhow::Result<String> {
    let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("--task-env {n:?}: not an environment variable name");
    }
    if n.to_ascii_uppercase().starts_with("DROVER_") {
        bail!("--task-env {n}: Drover's own variables are never passed to tasks");
    }
    Ok(n.to_string())
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

pub async fn run(a: AgentArgs) -> anyhow::Result<u8> {
    let task_users = a
        .task_users
        .iter()
        .filter(|u| !u.trim().is_empty())
        .map(|u| drover_agent::users::TaskUser::parse(u).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let task_env = a.task_env.iter().map(|n| task_env_name(n.trim())).collect::<anyhow::Result<Vec<_>>>()?;
    let credential_files: Vec<PathBuf> = a.secret_file.iter().chain(a.key_file.iter()).cloned().collect();
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
        spawner: if task_users.is_empty() { None } else { Some(std::env::current_exe()?) },
        task_users,
        task_env,
        credential_files,
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

/// `drover agent-keygen`: a P-256 key for private_key_jwt, written as PKCS#8 PEM (mode 0600);
/// prints the public JWKS to register with `drover agents add --jwks-file`.
pub fn keygen(key_file: &Path) -> anyhow::Result<u8> {
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
