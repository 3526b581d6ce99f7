//! The drover agent: long-polls the orchestrator for tasks of its environment, runs them,
//! streams logs and heartbeats, and reports results.
//!
//! De-duplication: before running an attempt the agent records it in its journal
//! (`WORK_DIR/.drover/attempts/<id>`), and the result next to it before reporting. An attempt
//! the orchestrator hands out again (a lost poll response, an agent restart) is therefore never
//! run twice: a finished one is re-reported, one cut off by a restart is reported as failed.
//!
//! Containment: every process a task starts leads its own process group, journaled with the
//! boot id and the leader's start time (`groups`); cancel, abort and timeouts end the group
//! (TERM, then KILL after `kill_grace`), so does the task's end (nothing it started outlives
//! it), and a restarted agent ends the groups of cut-off attempts before reporting them.
//!
//! Isolation: with task users (`users`), tasks run as other uids, one task per user, and
//! everything of a user's uid is killed when its task ends and when the agent starts. The
//! agent's own files — journal, downloads, credentials — are in `WORK_DIR/.drover` (0700).
//! Without task users, tasks run as the agent's own user (`isolation: none`), which the agent
//! says when it starts and reports with every poll.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_client::{Client, Credentials, is_retryable};
use drover_types::agent::{Assignment, AttemptEvents, AttemptResult, LogEntry, Outcome, PollRequest};
use tokio::sync::{Notify, mpsc, watch};

pub mod exec;
pub mod groups;
pub mod spawner;
mod unpack;
pub mod users;

#[derive(Clone)]
pub struct AgentConfig {
    pub url: String,
    pub ca_cert: Option<PathBuf>,
    pub name: String,
    /// The agent's client secret (its client id is its name)...
    pub secret: String,
    /// ...or another way to get tokens (`private_key_jwt`), which then wins.
    pub auth: Option<drover_client::ClientAuth>,
    pub work_dir: PathBuf,
    /// Tasks run at once (different applications; one pipeline stage runs one at a time).
    pub capacity: u32,
    /// How long a task's processes get after SIGTERM before SIGKILL.
    pub kill_grace: Duration,
    /// The users tasks run as (one task each at a time); none: as the agent's own user.
    pub task_users: Vec<users::TaskUser>,
    /// Names of the agent's environment variables passed to tasks as they are (a proxy,
    /// `JAVA_HOME`); nothing else of the agent's environment reaches a task.
    pub task_env: Vec<String>,
    /// Files holding the agent's credentials: the agent refuses to start when a task user can
    /// read one.
    pub credential_files: Vec<PathBuf>,
    /// With task users: the drover executable, run as `EXE task-spawner` to start task
    /// processes cheaply (`spawner`); none: the agent starts them itself (a fork of the agent
    /// per task).
    pub spawner: Option<PathBuf>,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("url", &self.url)
            .field("name", &self.name)
            .field("secret", &"***")
            .field("auth", &self.auth)
            .field("work_dir", &self.work_dir)
            .field("capacity", &self.capacity)
            .field("kill_grace", &self.kill_grace)
            .field("task_users", &self.task_users)
            .field("task_env", &self.task_env)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Client(#[from] drover_client::Error),
    #[error("work dir {0}: {1}")]
    WorkDir(PathBuf, std::io::Error),
    #[error("{0}")]
    Isolation(String),
}

/// What an agent reports of how its tasks are kept from it.
pub fn isolation(cfg: &AgentConfig) -> &'static str {
    if cfg.task_users.is_empty() { "none" } else { "task-user" }
}

struct Agent {
    cfg: AgentConfig,
    client: Client,
    journal: PathBuf,
    /// Attempts running or waiting to report.
    running: Mutex<HashSet<String>>,
    freed: Notify,
    heartbeat: Mutex<Duration>,
    shutdown: watch::Receiver<bool>,
    /// Task users, when the agent has them.
    pool: Option<users::Pool>,
    /// What starts their processes.
    spawner: Option<spawner::Spawner>,
}

/// Runs the agent until `shutdown` becomes true.
pub async fn run(mut cfg: AgentConfig, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
    let journal = prepare_work_dir(&cfg.work_dir)?;
    // Paths as they are on disk: the checks below look at the real directories.
    cfg.work_dir = std::fs::canonicalize(&cfg.work_dir).map_err(|e| Error::WorkDir(cfg.work_dir.clone(), e))?;
    if !cfg.task_users.is_empty() && nix::unistd::geteuid().is_root() {
        // Root needs no supplementary groups, and a task user's filesystem uid must not keep
        // the agent's (they would count in its permission checks).
        nix::unistd::setgroups(&[]).map_err(|e| {
            Error::Isolation(format!("cannot drop the agent's supplementary groups ({e}), which task users would keep"))
        })?;
    }
    users::check_start(&cfg.task_users, &cfg.work_dir, &cfg.credential_files).await.map_err(Error::Isolation)?;
    if cfg.task_users.is_empty() {
        tracing::warn!(
            uid = nix::unistd::geteuid().as_raw(),
            "isolation: none — tasks run as this agent's own user, so a task can read the agent's credentials and act as the agent; start it as root with --task-user USER"
        );
    } else {
        cfg.capacity = cfg.task_users.len() as u32;
        let names: Vec<&str> = cfg.task_users.iter().map(|u| u.name.as_str()).collect();
        tracing::info!(task_users = ?names, capacity = cfg.capacity, "isolation: tasks run as task users");
    }
    // Before anything is reported (and before old records are pruned): end what attempts cut
    // off by a crash left running.
    let ended = groups::reap(&journal, cfg.kill_grace).await;
    if ended > 0 {
        tracing::warn!(groups = ended, "ended the process groups of attempts cut off by the last stop");
    }
    for u in cfg.task_users.clone() {
        let name = u.name.clone();
        let (found, left) = tokio::task::spawn_blocking(move || users::kill_all(&u)).await.unwrap_or((0, 1));
        if found > 0 {
            tracing::warn!(user = %name, processes = found, "ended processes of a task user left by the last stop");
        }
        if left > 0 {
            return Err(Error::Isolation(format!(
                "{left} processes of task user {name} survive being killed; the agent does not start beside them"
            )));
        }
    }
    prune_journal(&journal);
    let downloads = cfg.work_dir.join(".drover").join("downloads");
    if let Ok(rd) = std::fs::read_dir(&downloads) {
        for e in rd.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let pool = (!cfg.task_users.is_empty()).then(|| users::Pool::new(cfg.task_users.clone()));
    let spawner = pool.as_ref().and(cfg.spawner.as_deref()).map(spawner::Spawner::new);
    let client = Client::new(
        &cfg.url,
        cfg.ca_cert.as_deref(),
        Credentials::ClientCredentials {
            client_id: cfg.name.clone(),
            auth: cfg.auth.clone().unwrap_or_else(|| drover_client::ClientAuth::Secret(cfg.secret.clone())),
        },
    )?;
    let agent = Arc::new(Agent {
        cfg,
        client,
        journal,
        running: Mutex::new(HashSet::new()),
        freed: Notify::new(),
        heartbeat: Mutex::new(Duration::from_secs(5)),
        shutdown: shutdown.clone(),
        spawner,
        pool,
    });
    agent.poll_loop().await;
    // Give running tasks a moment to report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !agent.running.lock().expect("poisoned").is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The work dir, and in it `.drover/` (0700: the journal, downloads, the agent's own files).
/// Returns the journal's directory.
fn prepare_work_dir(work_dir: &Path) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let at = |e| Error::WorkDir(work_dir.to_path_buf(), e);
    std::fs::create_dir_all(work_dir).map_err(at)?;
    let own = work_dir.join(".drover");
    // The agent's own: a directory of its uid (a task user's could hold forged journal records
    // that make a restarted agent signal process groups of its choosing), then only its.
    let me = nix::unistd::geteuid().as_raw();
    for dir in [own.clone(), own.join("attempts"), own.join("downloads")] {
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if !m.file_type().is_dir() => {
                return Err(Error::WorkDir(dir, std::io::Error::other("not a directory (a symlink?)")));
            }
            Ok(m) if std::os::unix::fs::MetadataExt::uid(&m) != me => {
                let why = format!(
                    "belongs to uid {}, not the agent's ({me}); remove it",
                    std::os::unix::fs::MetadataExt::uid(&m)
                );
                return Err(Error::WorkDir(dir, std::io::Error::other(why)));
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir(&dir).map_err(at)?,
        }
    }
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).map_err(at)?;
    Ok(own.join("attempts"))
}

fn prune_journal(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let week = Duration::from_secs(7 * 24 * 3600);
    for e in rd.flatten() {
        if e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|a| a > week)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

enum Journal {
    New,
    Started,
    Finished(AttemptResult),
}

impl Agent {
    /// The task users and their spawner, when the agent has them.
    fn isolation(&self) -> Option<exec::Isolation<'_>> {
        self.pool.as_ref().map(|pool| exec::Isolation { pool, spawner: self.spawner.as_ref() })
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn poll_loop(self: &Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        let mut failing = false;
        let mut shutdown = self.shutdown.clone();
        while !self.stopping() {
            let (running, free) = {
                let r = self.running.lock().expect("poisoned");
                (r.iter().cloned().collect::<Vec<_>>(), self.cfg.capacity.saturating_sub(r.len() as u32))
            };
            if free == 0 {
                let freed = self.freed.notified();
                tokio::select! {
                    _ = freed => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            let req = PollRequest {
                running,
                capacity: free,
                wait_ms: 20_000,
                agent_version: Some(env!("CARGO_PKG_VERSION").into()),
                isolation: Some(isolation(&self.cfg).into()),
            };
            let r = tokio::select! {
                r = self.client.poll(&req) => r,
                _ = shutdown.changed() => return,
            };
            match r {
                Ok(resp) => {
                    if failing {
                        tracing::info!("connected to the orchestrator again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(100);
                    *self.heartbeat.lock().expect("poisoned") =
                        Duration::from_millis(resp.heartbeat_interval_ms.max(100));
                    for a in resp.tasks {
                        self.accept(a);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "polling the orchestrator failed; retrying with backoff");
                        failing = true;
                    }
                    if !is_retryable(&e) {
                        backoff = backoff.max(Duration::from_secs(5));
                    }
                    let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + jitter) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn journal_path(&self, attempt: &str) -> Option<PathBuf> {
        if attempt.is_empty() || !attempt.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        Some(self.journal.join(attempt))
    }

    fn read_journal(&self, path: &Path) -> Journal {
        match std::fs::read_to_string(path) {
            Err(_) => Journal::New,
            Ok(s) => match s.split_once('\n') {
                Some(("finished", json)) => match serde_json::from_str(json) {
                    Ok(r) => Journal::Finished(r),
                    Err(_) => Journal::Started,
                },
                _ => Journal::Started,
            },
        }
    }

    /// `durable`: fsync before returning. The `started` record must be durable (it is what stops
    /// a second run); the `finished` record need not be: if it is lost in a crash, the attempt is
    /// reported as failed instead of re-run.
    fn write_journal(&self, path: &Path, content: &str, durable: bool) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        if durable {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path)?;
        if durable {
            std::fs::File::open(&self.journal)?.sync_all()?;
        }
        Ok(())
    }

    fn accept(self: &Arc<Self>, a: Assignment) {
        let Some(path) = self.journal_path(&a.attempt_id) else {
            tracing::error!(attempt = %a.attempt_id, "refusing an attempt with an invalid id");
            return;
        };
        if !self.running.lock().expect("poisoned").insert(a.attempt_id.clone()) {
            return; // already running here
        }
        let me = self.clone();
        tokio::spawn(async move {
            let result = match me.read_journal(&path) {
                Journal::Finished(r) => {
                    tracing::info!(attempt = %a.attempt_id, "re-reporting the result of a finished attempt");
                    r
                }
                Journal::Started => {
                    tracing::warn!(attempt = %a.attempt_id, "attempt was cut off by an agent restart; not running it again");
                    AttemptResult {
                        outcome: Outcome::Failed,
                        exit_code: None,
                        message: Some(format!(
                            "agent {} restarted while running this attempt; it was not run again (retry the task to run it anew)",
                            me.cfg.name
                        )),
                        logs: vec![],
                    }
                }
                Journal::New => {
                    if let Err(e) = me.write_journal(&path, "started\n", true) {
                        tracing::error!(error = %e, "cannot write the attempt journal; refusing to run the attempt");
                        me.running.lock().expect("poisoned").remove(&a.attempt_id);
                        me.freed.notify_one();
                        return;
                    }
                    tracing::debug!(attempt = %a.attempt_id, variables = ?a.variables, secret = ?a.secret, "the attempt's variables");
                    tracing::info!(
                        attempt = %a.attempt_id, deployment = a.deployment_id, stage = %a.stage,
                        task = %a.spec.kind(), application = %a.application, version = %a.version,
                        started_by = %a.started_by, "running task"
                    );
                    let r = me.execute(&a).await;
                    let line = format!("finished\n{}", serde_json::to_string(&r).unwrap_or_default());
                    if let Err(e) = me.write_journal(&path, &line, false) {
                        tracing::error!(error = %e, "cannot record the attempt result in the journal");
                    }
                    r
                }
            };
            me.report(&a.attempt_id, result).await;
            me.running.lock().expect("poisoned").remove(&a.attempt_id);
            me.freed.notify_one();
        });
    }

    /// Runs the task with a log/heartbeat pump beside it.
    async fn execute(self: &Arc<Self>, a: &Assignment) -> AttemptResult {
        // The attempt's secrets never leave this agent in what it sends back (the orchestrator
        // masks again, with every secret of the task's environment).
        let masker = Arc::new(drover_core::vars::Masker::new(
            a.secret.iter().filter_map(|n| a.variables.0.get(n)).map(String::as_str),
        ));
        let (log_tx, mut log_rx) = mpsc::channel::<LogEntry>(1024);
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let pump = {
            let me = self.clone();
            let attempt = a.attempt_id.clone();
            let masker = masker.clone();
            tokio::spawn(async move {
                let mut buf: Vec<LogEntry> = Vec::new();
                // The claim started the lease; the first heartbeat is due one interval later.
                let mut last_beat = tokio::time::Instant::now();
                loop {
                    let interval = *me.heartbeat.lock().expect("poisoned");
                    let flush_at = if buf.is_empty() {
                        last_beat + interval
                    } else {
                        (last_beat + interval).min(tokio::time::Instant::now() + Duration::from_millis(200))
                    };
                    let closed = tokio::select! {
                        l = log_rx.recv() => match l {
                            Some(mut l) => {
                                masker.mask_string(&mut l.line);
                                buf.push(l);
                                if buf.len() < 500 { continue }
                                false
                            }
                            None => true,
                        },
                        _ = tokio::time::sleep_until(flush_at) => false,
                    };
                    if closed {
                        return buf; // the rest goes with the result
                    }
                    let batch = AttemptEvents { logs: std::mem::take(&mut buf) };
                    match me.client.attempt_events(&attempt, &batch).await {
                        Ok(r) => {
                            last_beat = tokio::time::Instant::now();
                            if r.cancel {
                                tracing::warn!(attempt = %attempt, "the orchestrator cancelled this attempt; stopping it");
                                let _ = cancel_tx.send(true);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "heartbeat failed; keeping log lines for later");
                            let mut back = batch.logs;
                            back.append(&mut buf);
                            buf = back;
                            if buf.len() > 10_000 {
                                let drop = buf.len() - 10_000;
                                buf.drain(..drop);
                            }
                            last_beat = tokio::time::Instant::now();
                        }
                    }
                }
            })
        };
        let record = groups::record_path(&self.journal, &a.attempt_id);
        let contain = exec::Containment { record: &record, grace: self.cfg.kill_grace };
        let run = exec::run_task(&self.cfg, &self.client, a, log_tx, cancel_rx, contain, self.isolation());
        let outcome = match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(run)).await {
            Ok(o) => o,
            Err(_) => exec::TaskOutcome {
                outcome: Outcome::Failed,
                exit_code: None,
                message: Some("the agent hit an internal error running this task (see the agent log)".into()),
            },
        };
        let rest = pump.await.unwrap_or_default();
        let mut message = outcome.message;
        if let Some(m) = &mut message {
            masker.mask_string(m);
        }
        AttemptResult { outcome: outcome.outcome, exit_code: outcome.exit_code, message, logs: rest }
    }

    /// Reports a result, retrying while the orchestrator is away.
    async fn report(&self, attempt: &str, r: AttemptResult) {
        let mut backoff = Duration::from_millis(100);
        for _ in 0..10_000 {
            match self.client.attempt_result(attempt, &r).await {
                Ok(resp) => {
                    if resp.status != "recorded" {
                        tracing::info!(attempt, status = %resp.status, "result not recorded (the attempt is no longer current)");
                    }
                    return;
                }
                Err(e) if is_retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "reporting failed; retrying");
                    if self.stopping() {
                        tracing::warn!(attempt, "stopping with an unreported result; it is kept in the journal");
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::error!(attempt, error = %e, "the orchestrator refused the result");
                    return;
                }
            }
        }
    }
}
