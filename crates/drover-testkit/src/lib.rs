//! Test support: an orchestrator in-process on an ephemeral loopback port with a temp data
//! dir (SQLite or a PostgreSQL schema of its own), agents in-process, sample artifacts, and
//! bounded waits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use drover_client::{Client, Credentials};
use drover_types::{Deployment, DeploymentStatus};
use tokio::sync::watch;

pub mod browser;
pub mod portal;
pub mod relay;

/// Generates, for each `async fn name(Backend) -> anyhow::Result<()>`, a module `name` with a
/// `sqlite` and a `postgres` test.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await.unwrap()
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await.unwrap()
            }
        }
    )+};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub running: Option<drover_server::Running>,
    pub url: String,
    pub ca: PathBuf,
    pub admin_password: String,
    pg_schema: Option<String>,
    agents: Vec<(String, watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> anyhow::Result<Self> {
        Self::start_with(backend, Duration::from_secs(30)).await
    }

    /// Starts an orchestrator whose attempts are lost after `heartbeat_timeout` without a heartbeat.
    pub async fn start_with(backend: Backend, heartbeat_timeout: Duration) -> anyhow::Result<Self> {
        Self::start_configured(backend, |cfg| cfg.heartbeat_timeout = heartbeat_timeout).await
    }

    /// Starts an orchestrator with a configuration `tune` adjusts (data dir and listen address
    /// are the test's).
    pub async fn start_configured(
        backend: Backend,
        tune: impl FnOnce(&mut drover_server::Config),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cfg = drover_server::Config::new(dir.path().join("data"));
        cfg.listen = "127.0.0.1:0".parse()?;
        tune(&mut cfg);
        let mut pg_schema = None;
        if backend == Backend::Postgres {
            let (store, schema) =
                drover_store::testing::pg_schema_store().await.context("PostgreSQL on 127.0.0.1:5432")?;
            drop(store);
            cfg.database_url = Some(drover_store::testing::pg_schema_url(&schema));
            pg_schema = Some(schema);
        }
        let running = drover_server::start(cfg).await?;
        let admin_password = running.initial_admin_password.clone().context("fresh data dir creates admin")?;
        Ok(TestServer {
            url: running.url.clone(),
            ca: running.ca_cert.clone(),
            running: Some(running),
            dir,
            admin_password,
            pg_schema,
            agents: Vec::new(),
        })
    }

    /// The PostgreSQL URL (with its schema) when the server runs on PostgreSQL.
    pub fn pg_url(&self) -> Option<String> {
        self.pg_schema.as_deref().map(drover_store::testing::pg_schema_url)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// An HTTPS client that trusts the test CA and does not follow redirects (for pages,
    /// sign-in flows and raw requests).
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(drover_tls::client_config(&self.ca).expect("the test CA"))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }

    /// Adds an operator with these roles (as admin); returns their password.
    pub async fn add_operator(&self, name: &str, roles: &[&str]) -> String {
        let pw = format!("{name}-password-123456");
        self.admin()
            .add_operator(&drover_types::NewOperator {
                name: name.into(),
                email: None,
                roles: roles.iter().map(|r| r.to_string()).collect(),
                password: Some(pw.clone()),
            })
            .await
            .expect("adding an operator");
        pw
    }

    pub fn admin(&self) -> Client {
        self.client("admin", &self.admin_password)
    }

    pub fn client(&self, user: &str, password: &str) -> Client {
        Client::new(&self.url, Some(&self.ca), Credentials::Basic { user: user.into(), password: password.into() })
            .expect("client")
    }

    /// A client for an agent: client credentials, tokens fetched and refreshed as needed.
    pub fn agent_client(&self, name: &str, secret: &str) -> Client {
        Client::new(
            &self.url,
            Some(&self.ca),
            Credentials::ClientCredentials {
                client_id: name.into(),
                auth: drover_client::ClientAuth::Secret(secret.into()),
            },
        )
        .unwrap()
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, Some(&self.ca), Credentials::None).expect("client")
    }

    /// Registers an agent and runs it in-process; returns its work dir.
    pub async fn agent(&mut self, name: &str, environment: &str) -> anyhow::Result<PathBuf> {
        let cred = self.admin().add_agent(name, environment).await?;
        let work = self.dir.path().join("agents").join(name);
        self.run_agent(name, &cred.secret, &work, 4)?;
        Ok(work)
    }

    /// Registers an agent with labels and runs it in-process; returns its work dir.
    pub async fn labelled_agent(
        &mut self,
        name: &str,
        environment: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<PathBuf> {
        let a = drover_types::NewAgent {
            name: name.into(),
            environment: environment.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            jwks: None,
        };
        let cred = self.admin().register_agent(&a).await?;
        let work = self.dir.path().join("agents").join(name);
        self.run_agent(name, &cred.secret, &work, 4)?;
        Ok(work)
    }

    pub fn run_agent(&mut self, name: &str, secret: &str, work: &Path, capacity: u32) -> anyhow::Result<()> {
        self.run_agent_with(name, drover_client::ClientAuth::Secret(secret.into()), work, capacity)
    }

    /// Runs an agent that gets its tokens with `auth` (a secret, or a key for private_key_jwt).
    pub fn run_agent_with(
        &mut self,
        name: &str,
        auth: drover_client::ClientAuth,
        work: &Path,
        capacity: u32,
    ) -> anyhow::Result<()> {
        self.run_agent_tuned(name, auth, work, capacity, |_| {})
    }

    /// Runs an agent whose configuration `tune` adjusts (task users, `--task-env`, credential
    /// files).
    pub fn run_agent_tuned(
        &mut self,
        name: &str,
        auth: drover_client::ClientAuth,
        work: &Path,
        capacity: u32,
        tune: impl FnOnce(&mut drover_agent::AgentConfig),
    ) -> anyhow::Result<()> {
        let mut cfg = drover_agent::AgentConfig {
            url: self.url.clone(),
            ca_cert: Some(self.ca.clone()),
            name: name.into(),
            secret: String::new(),
            auth: Some(auth),
            work_dir: work.to_path_buf(),
            capacity,
            kill_grace: std::time::Duration::from_secs(2),
            task_users: vec![],
            task_env: vec![],
            credential_files: vec![],
            spawner: None,
        };
        tune(&mut cfg);
        let (tx, rx) = watch::channel(false);
        let h = tokio::spawn(async move {
            if let Err(e) = drover_agent::run(cfg, rx).await {
                eprintln!("agent stopped: {e}");
            }
        });
        self.agents.push((name.to_string(), tx, h));
        Ok(())
    }

    pub async fn stop_agents(&mut self) {
        for (_, tx, h) in self.agents.drain(..) {
            let _ = tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
        }
    }

    /// Stops the orchestrator and starts it again on the same data dir, database and address
    /// (the issuer stays the same, so tokens and portal sessions carry over).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let running = self.running.take().context("not running")?;
        let addr = running.addr;
        running.shutdown().await;
        let mut cfg = drover_server::Config::new(self.data_dir());
        cfg.listen = addr;
        cfg.database_url = self.pg_url();
        let mut last = None;
        // The port is free again once the old listener's task has ended: a few tries.
        for _ in 0..50 {
            match drover_server::start(cfg.clone()).await {
                Ok(r) => {
                    self.running = Some(r);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(last.map(anyhow::Error::from).unwrap_or_else(|| anyhow::anyhow!("restart failed")))
    }

    pub async fn shutdown(mut self) {
        self.stop_agents().await;
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
        if let Some(s) = self.pg_schema.take() {
            drover_store::testing::drop_schema(&s).await;
        }
    }
}

/// A `.tar.gz` with the given files (path, content, mode).
pub fn tarball(files: &[(&str, &str, u32)]) -> Vec<u8> {
    tarball_with_links(files, &[])
}

/// A `.tar.gz` with files (path, content, mode) and then symlinks (path, target); link targets
/// are written as given, absolute or with `..`, as a hostile archive would have them.
pub fn tarball_with_links(files: &[(&str, &str, u32)], links: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        tar.append_data(&mut h, name, content.as_bytes()).expect("tar");
    }
    for (name, target) in links {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, name, target).expect("tar");
    }
    tar.into_inner().expect("tar").finish().expect("gzip")
}

/// Polls a deployment until `done` holds, up to `timeout` (bounded; fails with the last state).
pub async fn wait_for(
    c: &Client,
    id: i64,
    timeout: Duration,
    done: impl Fn(&Deployment) -> bool,
) -> anyhow::Result<Deployment> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = None;
    let mut changes = 0;
    while tokio::time::Instant::now() < deadline && changes < 100_000 {
        let d = c.deployment(id).await?;
        if done(&d) {
            return Ok(d);
        }
        last = Some(d);
        changes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("deployment {id} did not reach the expected state in {timeout:?}; last: {last:#?}")
}

/// Waits until the deployment has the given status.
pub async fn wait_status(c: &Client, id: i64, status: DeploymentStatus) -> anyhow::Result<Deployment> {
    wait_for(c, id, Duration::from_secs(60), |d| d.status == status).await
}

/// A unique name for tests sharing a server.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(rand::random::<[u8; 3]>()))
}

/// A system user made for one test (`useradd`), removed when dropped. Tests run as root.
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Makes a user with a unique name starting with `prefix` (at most 16 characters with it).
    pub fn create(prefix: &str) -> anyhow::Result<TestUser> {
        let name = format!("{prefix}{}", hex::encode(rand::random::<[u8; 3]>()));
        let mut last = String::new();
        // useradd takes a lock on the user database; tests running at once may meet there.
        for _ in 0..50 {
            let out = std::process::Command::new("useradd")
                .args(["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"])
                .args(["--shell", "/usr/sbin/nologin", &name])
                .output()
                .context("running useradd")?;
            if out.status.success() {
                let u = nix::unistd::User::from_name(&name)?.context("the user just made")?;
                return Ok(TestUser { name, uid: u.uid.as_raw(), gid: u.gid.as_raw() });
            }
            last = String::from_utf8_lossy(&out.stderr).into_owned();
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("useradd {name}: {last}")
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = std::process::Command::new("userdel").arg(&self.name).status().is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("userdel {} failed", self.name);
    }
}

/// A directory every user can reach but only root can change, whatever the umask (a task
/// user's work dir must be reachable by it). Removed when dropped.
pub fn reachable_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new().prefix("drover-reach-").tempdir_in("/tmp")?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(d)
}

/// A uid:gid no user of this machine has, for a task user without an entry in the user
/// database (the agent takes `UID:GID` as well as names).
pub fn free_uid() -> u32 {
    for _ in 0..1000 {
        let uid = 200_000 + rand::random::<u32>() % 800_000;
        if nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().is_none() {
            return uid;
        }
    }
    panic!("no free uid in 1000 tries")
}
