//! Task executors: `run`, `deploy`, `http-check`.
//!
//! A task process starts from nothing of the agent's: its environment is [`task_env`] (a fixed
//! `PATH`, the user's `HOME`, `LANG`, the `--task-env` names passed on purpose, the task's
//! variables — none of the secret ones for hooks — and Drover's own `DROVER_*`), its uid is the
//! task user's when the agent has task users ([`crate::users`]), and every file operation under
//! the application's directory runs with that user's filesystem uid. The artifact is downloaded
//! and verified in `WORK_DIR/.drover/downloads`, which only the agent can enter, and handed to
//! the unpacking as an open file. A task's message says what happened, never what it printed:
//! the output is in the log, whose every read is audited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use drover_client::Client;
use drover_types::agent::{Assignment, LogEntry, Outcome};
use drover_types::{CommandSpec, TaskSpec};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::AgentConfig;
use crate::users::{self, TaskUser};

/// Releases kept per application (the current one is always kept).
pub const KEEP_RELEASES: usize = 5;
// The orchestrator enforces the same limits (plus a grace): `TaskSpec::agent_timeout`.
use drover_types::pipeline::{DEFAULT_CHECK_TIMEOUT, DEFAULT_RUN_TIMEOUT};
const HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// The `PATH` every task process starts with.
pub const TASK_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

pub struct TaskOutcome {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
}

fn ok(msg: impl Into<String>) -> TaskOutcome {
    TaskOutcome { outcome: Outcome::Completed, exit_code: Some(0), message: Some(msg.into()) }
}

fn fail(msg: impl Into<String>) -> TaskOutcome {
    TaskOutcome { outcome: Outcome::Failed, exit_code: None, message: Some(msg.into()) }
}

struct Logger(mpsc::Sender<LogEntry>);

impl Logger {
    async fn line(&self, stream: &str, line: impl Into<String>) {
        let _ = self.0.send(LogEntry { stream: stream.into(), line: line.into() }).await;
    }
}

/// An agent's task users, and what starts their processes (none: the agent itself).
#[derive(Clone, Copy)]
pub struct Isolation<'a> {
    pub pool: &'a users::Pool,
    pub spawner: Option<&'a crate::spawner::Spawner>,
}

/// Who a task's processes run as, and what starts them.
#[derive(Clone, Copy)]
struct RunAs<'a> {
    user: Option<&'a TaskUser>,
    spawner: Option<&'a crate::spawner::Spawner>,
}

/// Where an attempt journals its process group, and how long its processes get after TERM.
#[derive(Clone, Copy)]
pub struct Containment<'a> {
    pub record: &'a Path,
    pub grace: Duration,
}

pub async fn run_task(
    cfg: &AgentConfig,
    client: &Client,
    a: &Assignment,
    logs: mpsc::Sender<LogEntry>,
    cancel: watch::Receiver<bool>,
    contain: Containment<'_>,
    isolation: Option<Isolation<'_>>,
) -> TaskOutcome {
    let log = Logger(logs);
    log.line(
        "agent",
        format!(
            "agent {} runs {} for deployment {} (started by {})",
            cfg.name,
            a.spec.kind(),
            a.deployment_id,
            a.started_by
        ),
    )
    .await;
    if let TaskSpec::HttpCheck { url, expect_status, timeout } = &a.spec {
        let t = timeout.map(|d| d.0).unwrap_or(DEFAULT_CHECK_TIMEOUT);
        return http_check(cfg, url, *expect_status, t, &log, cancel).await;
    }
    if !matches!(a.spec, TaskSpec::Run { .. } | TaskSpec::Deploy {}) {
        return fail(format!("task type {} does not run on agents", a.spec.kind()));
    }
    let app_dir = match users::application_dir(&cfg.work_dir, &a.application) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    // Who runs it: the task user who owns the application's directory, once free.
    let lease = match isolation.map(|i| i.pool) {
        Some(pool) => {
            let waiting = |what: String| {
                let _ = log.0.try_send(LogEntry { stream: "agent".into(), line: format!("waiting for {what}") });
            };
            match pool.acquire(&app_dir, cancel.clone(), waiting).await {
                Ok(l) => Some(l),
                Err(e) => return fail(e),
            }
        }
        None => {
            if let Err(e) = tokio::fs::create_dir_all(&app_dir).await {
                return fail(format!("making {}: {e}", app_dir.display()));
            }
            None
        }
    };
    let user = lease.as_ref().map(|l| l.user().clone());
    let who = RunAs { user: user.as_ref(), spawner: isolation.and_then(|i| i.spawner) };
    let outcome = match &a.spec {
        TaskSpec::Run { command, timeout } => {
            let dir = app_dir.clone();
            let cwd = users::as_user(user.as_ref(), move || current_dir(&dir)).await.ok().flatten().unwrap_or(app_dir);
            let argv = match command {
                CommandSpec::Shell(s) => vec!["sh".to_string(), "-c".to_string(), s.clone()],
                CommandSpec::Exec(v) => v.clone(),
            };
            let t = timeout.map(|d| d.0).unwrap_or(DEFAULT_RUN_TIMEOUT);
            let env = task_env(cfg, a, &cwd, user.as_ref(), false);
            run_process(&argv, &cwd, &env, who, t, &log, cancel, contain).await
        }
        _ => deploy(cfg, client, a, &app_dir, who, &log, cancel, contain).await,
    };
    if let Some(lease) = lease {
        let name = lease.user().name.clone();
        let ended = lease.end().await;
        if ended > 0 {
            log.line("agent", format!("ended {ended} processes of task user {name} left by the task")).await;
        }
    }
    outcome
}

fn current_dir(app_dir: &Path) -> Option<PathBuf> {
    let cur = app_dir.join("current");
    std::fs::canonicalize(&cur).ok().filter(|p| p.is_dir())
}

/// A task process's whole environment: a fixed `PATH`, the user's `HOME`, `LANG`, what
/// `--task-env` passes through on purpose, the stage's variables (a hook gets none of the
/// secret ones), then Drover's own (which a variable cannot be named). Nothing else of the
/// agent's.
pub fn task_env(
    cfg: &AgentConfig,
    a: &Assignment,
    release_dir: &Path,
    user: Option<&TaskUser>,
    hook: bool,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), TASK_PATH.into());
    let home: &Path = match user {
        Some(u) => &u.home,
        None => users::own_home(),
    };
    env.insert("HOME".into(), home.display().to_string());
    env.insert("LANG".into(), "C.UTF-8".into());
    for name in &cfg.task_env {
        if let Ok(v) = std::env::var(name) {
            env.insert(name.clone(), v);
        }
    }
    for (k, v) in &a.variables.0 {
        if !(hook && a.secret.contains(k)) {
            env.insert(k.clone(), v.clone());
        }
    }
    env.extend([
        ("DROVER_AGENT".into(), cfg.name.clone()),
        ("DROVER_APPLICATION".into(), a.application.clone()),
        ("DROVER_VERSION".into(), a.version.clone()),
        ("DROVER_DEPLOYMENT_ID".into(), a.deployment_id.to_string()),
        ("DROVER_ENVIRONMENT".into(), a.environment.clone()),
        ("DROVER_STAGE".into(), a.stage.clone()),
        ("DROVER_ATTEMPT_ID".into(), a.attempt_id.clone()),
        ("DROVER_RELEASE_DIR".into(), release_dir.display().to_string()),
        ("DROVER_STARTED_BY".into(), a.started_by.clone()),
    ]);
    env.into_iter().collect()
}

/// Where the task's `PATH` (its own, when its variables set one) finds `prog`, as an absolute
/// path; `prog` as it is when it names a path already, or nothing is found (the spawn then says
/// it does not exist).
fn resolve(prog: &str, env: &[(String, String)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        return PathBuf::from(prog);
    }
    let path = env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(TASK_PATH);
    path.split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(prog))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| PathBuf::from(prog))
}

/// Runs a process (as `user`, when given) in its own process group (journaled); streams its
/// output; on timeout or cancellation ends the whole group (TERM, then KILL after the grace),
/// and when the process ends, whatever it left running in its group.
#[allow(clippy::too_many_arguments)]
async fn run_process(
    argv: &[String],
    cwd: &Path,
    env: &[(String, String)],
    who: RunAs<'_>,
    timeout: Duration,
    log: &Logger,
    mut cancel: watch::Receiver<bool>,
    contain: Containment<'_>,
) -> TaskOutcome {
    let Some((prog, args)) = argv.split_first() else { return fail("empty command") };
    // An absolute program lets the standard library start the process with posix_spawn; a
    // PATH of the child's own (it always has one) would make it fork the whole agent first
    // (measured: a sixth of the pipeline benchmark's throughput). Changing the ids needs a
    // fork: the task spawner's, which is small, or (without one) the agent's.
    let program = resolve(prog, env);
    let (mut child, pipes) = match spawn(&program, args, cwd, env, who).await {
        Ok(x) => x,
        Err(e) => return fail(format!("cannot start {prog:?} in {}: {e}", cwd.display())),
    };
    let pid = child.id();
    let journaled = match (&child, pid) {
        (Proc::Spawned(s), _) => crate::groups::record_stat(contain.record, &s.leader).map(|_| ()),
        (Proc::Here(_), Some(pid)) => crate::groups::record(contain.record, pid as i32).map(|_| ()),
        (Proc::Here(_), None) => Ok(()),
    };
    if let Some(pid) = pid
        && let Err(e) = journaled
    {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait().await;
        return fail(format!(
            "cannot journal the task's process group (so it would not be stopped after a crash): {e}"
        ));
    }
    let mut readers = Vec::new();
    for (name, pipe) in [("stdout", pipes.0), ("stderr", pipes.1)] {
        let tx = log.0.clone();
        readers.push(tokio::spawn(async move {
            // Bytes up to each newline, not UTF-8 lines: output that is not UTF-8 is shown with
            // replacement characters (a `lines()` reader would stop at it, and the process
            // would then block on a full pipe until its timeout).
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                let l = String::from_utf8_lossy(&buf).into_owned();
                let _ = tx.send(LogEntry { stream: name.into(), line: l }).await;
            }
        }));
    }
    let pgid = pid.map(|p| p as i32);
    let status = tokio::select! {
        s = child.wait() => Some(s),
        _ = tokio::time::sleep(timeout) => None,
        _ = cancel.wait_for(|c| *c) => None,
    };
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => {
            let why = if *cancel.borrow() { "cancelled" } else { "timeout" };
            // The leader is reaped while its group is ended, so its id stays reserved until then.
            let (_, s) = tokio::join!(
                async {
                    if let Some(g) = pgid {
                        crate::groups::end(g, contain.grace, why).await;
                    }
                },
                child.wait()
            );
            s
        }
    };
    // Nothing the task started outlives it.
    if let Some(g) = pgid {
        let left = crate::groups::end(g, contain.grace, "the task's process ended").await;
        if left > 0 {
            log.line("agent", format!("ended {left} processes the task left running in its process group")).await;
        }
        crate::groups::forget(contain.record);
    }
    // Descendants may keep the pipes open; do not wait for them forever.
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    if timed_out {
        let why = if *cancel.borrow() {
            "cancelled".to_string()
        } else {
            format!("timed out after {}", humantime::format_duration(timeout))
        };
        return TaskOutcome { outcome: Outcome::Failed, exit_code: None, message: Some(why) };
    }
    match status {
        Ok(s) if s.success() => TaskOutcome { outcome: Outcome::Completed, exit_code: Some(0), message: None },
        Ok(s) => {
            let code = s.code();
            let what = match code {
                Some(c) => format!("exit code {c} (its output is in the log)"),
                None => "killed by a signal".to_string(),
            };
            TaskOutcome { outcome: Outcome::Failed, exit_code: code, message: Some(what) }
        }
        Err(e) => fail(format!("waiting for the process: {e}")),
    }
}

type Output = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// A task process: started by the agent, or by its task spawner.
enum Proc {
    Here(tokio::process::Child),
    Spawned(crate::spawner::Spawned),
}

impl Proc {
    fn id(&self) -> Option<u32> {
        match self {
            Proc::Here(c) => c.id(),
            Proc::Spawned(s) => Some(s.pid),
        }
    }
    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self {
            Proc::Here(c) => c.wait().await,
            Proc::Spawned(s) => s.wait().await,
        }
    }
}

/// Starts a task process in a process group of its own, with exactly `env`, stdin from
/// nothing, its stdout and stderr to pipes the agent reads.
async fn spawn(
    program: &Path,
    args: &[String],
    cwd: &Path,
    env: &[(String, String)],
    who: RunAs<'_>,
) -> std::io::Result<(Proc, (Output, Output))> {
    let size: usize =
        env.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>() + args.iter().map(|a| a.len() + 4).sum::<usize>();
    if let (Some(u), Some(spawner)) = (who.user, who.spawner)
        && size < crate::spawner::MAX_REQUEST - 8192
    {
        use rustix::pipe::{PipeFlags, pipe_with};
        let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC)?;
        let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC)?;
        let spawned = spawner.spawn(u.uid, u.gid, program.to_path_buf(), args.to_vec(), cwd, env, out_w, err_w).await?;
        let out: Output = Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?);
        let err: Output = Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)?);
        return Ok((Proc::Spawned(spawned), (out, err)));
    }
    let mut cmd = tokio::process::Command::new(program);
    if let Some(u) = who.user {
        // std drops the supplementary groups when it changes the uid as root.
        cmd.uid(u.uid).gid(u.gid);
    }
    cmd.args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(std::io::Error::other("no output pipes"));
    };
    Ok((Proc::Here(child), (Box::new(out), Box::new(err))))
}

/// What putting a release in place found.
struct Placed {
    release: PathBuf,
    previous: Option<PathBuf>,
    /// The version was deployed here before (its old copy was replaced).
    replaced: bool,
    pre: bool,
    post: bool,
    unpacked: crate::unpack::Unpacked,
}

/// Unpacks `archive` beside the releases and moves it to `releases/<version>`; finds the hooks.
/// Runs with the task user's filesystem uid.
fn place_release(app_dir: &Path, archive: std::fs::File, version: &str, attempt: &str) -> Result<Placed, String> {
    let releases = app_dir.join("releases");
    std::fs::create_dir_all(&releases).map_err(|e| format!("making {}: {e}", releases.display()))?;
    let staging = releases.join(format!(".unpack-{attempt}"));
    let unpacked = match crate::unpack::unpack_from(archive, &staging) {
        Ok(u) => u,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(format!("unpacking the artifact (a .tar.gz): {e}"));
        }
    };
    let release = releases.join(version);
    let previous = std::fs::read_link(app_dir.join("current")).ok();
    let replaced = std::fs::symlink_metadata(&release).is_ok();
    if replaced {
        // Redeploying a version: the fresh copy replaces the old one.
        let _ = std::fs::remove_dir_all(&release);
    }
    if let Err(e) = std::fs::rename(&staging, &release) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(format!("moving the release into place: {e}"));
    }
    let hooks = crate::unpack::hook(&release, "pre-deploy")
        .and_then(|pre| Ok((pre, crate::unpack::hook(&release, "post-deploy")?)));
    match hooks {
        Ok((pre, post)) => {
            Ok(Placed { release, previous, replaced, pre: pre.is_some(), post: post.is_some(), unpacked })
        }
        Err(e) => {
            if !replaced {
                let _ = std::fs::remove_dir_all(&release);
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn deploy(
    cfg: &AgentConfig,
    client: &Client,
    a: &Assignment,
    app_dir: &Path,
    who: RunAs<'_>,
    log: &Logger,
    cancel: watch::Receiver<bool>,
    contain: Containment<'_>,
) -> TaskOutcome {
    let Some(art) = &a.artifact else {
        return fail(format!("no artifact {} {} on the orchestrator", a.application, a.version));
    };
    // 1. Download and verify where only the agent can reach.
    let download = cfg.work_dir.join(".drover").join("downloads").join(&a.attempt_id);
    log.line(
        "agent",
        format!("downloading {} {} ({} bytes, sha256 {})", a.application, a.version, art.size, art.sha256),
    )
    .await;
    let r = fetch(client, &art.sha256, &download).await;
    let archive = match r {
        Ok(sum) if sum == art.sha256 => std::fs::File::open(&download),
        Ok(sum) => {
            let _ = tokio::fs::remove_file(&download).await;
            return fail(format!("artifact checksum mismatch: expected {}, got {sum}", art.sha256));
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&download).await;
            return fail(format!("downloading the artifact: {e}"));
        }
    };
    // The open file is what the unpacking reads; the name can go now.
    let _ = tokio::fs::remove_file(&download).await;
    let archive = match archive {
        Ok(f) => f,
        Err(e) => return fail(format!("opening the downloaded artifact: {e}")),
    };
    // 2. As the task user: unpack beside the releases, move into place, find the hooks.
    let (dir, version, attempt) = (app_dir.to_path_buf(), a.version.clone(), a.attempt_id.clone());
    let user = who.user;
    let placed = match users::as_user(user, move || place_release(&dir, archive, &version, &attempt)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return fail(e),
        Err(e) => return fail(format!("unpacking: {e}")),
    };
    let u = &placed.unpacked;
    log.line(
        "agent",
        format!("unpacked {} files, {} directories, {} symlinks ({} bytes)", u.files, u.dirs, u.symlinks, u.bytes),
    )
    .await;
    let (release, replaced) = (placed.release.clone(), placed.replaced);
    let drop_release = |release: PathBuf| async move {
        if !replaced {
            let _ = users::as_user(user, move || std::fs::remove_dir_all(release)).await;
        }
    };
    let env = task_env(cfg, a, &release, user, true);
    // 3. pre-deploy hook, in the new release; failure leaves `current` alone.
    if placed.pre {
        log.line("agent", "running pre-deploy hook").await;
        let argv = ["sh".to_string(), "./pre-deploy".to_string()];
        let r = run_process(&argv, &release, &env, who, HOOK_TIMEOUT, log, cancel.clone(), contain).await;
        if r.outcome != Outcome::Completed {
            drop_release(release.clone()).await;
            return TaskOutcome {
                message: Some(format!("pre-deploy hook failed: {}", r.message.unwrap_or_default())),
                ..r
            };
        }
    }
    // 4. Switch `current` atomically.
    let target = PathBuf::from("releases").join(&a.version);
    let switch = |to: PathBuf| {
        let (dir, attempt) = (app_dir.to_path_buf(), a.attempt_id.clone());
        users::as_user(user, move || switch_current(&dir, &to, &attempt))
    };
    if let Err(e) = switch(target.clone()).await.and_then(|r| r) {
        return fail(format!("switching current: {e}"));
    }
    log.line("agent", format!("current -> {}", target.display())).await;
    // 5. post-deploy hook; failure switches back.
    if placed.post {
        log.line("agent", "running post-deploy hook").await;
        let argv = ["sh".to_string(), "./post-deploy".to_string()];
        let r = run_process(&argv, &release, &env, who, HOOK_TIMEOUT, log, cancel, contain).await;
        if r.outcome != Outcome::Completed {
            let back = match placed.previous.clone() {
                Some(p) => {
                    let shown = p.display().to_string();
                    switch(p).await.and_then(|r| r).map(|_| format!("current switched back to {shown}"))
                }
                None => {
                    let cur = app_dir.join("current");
                    users::as_user(user, move || std::fs::remove_file(cur))
                        .await
                        .and_then(|r| r)
                        .map(|_| "current removed".to_string())
                }
            };
            let back = back.unwrap_or_else(|e| format!("switching back failed: {e}"));
            return TaskOutcome {
                message: Some(format!("post-deploy hook failed ({back}): {}", r.message.unwrap_or_default())),
                ..r
            };
        }
    }
    let (releases, current) = (app_dir.join("releases"), release.clone());
    let _ = users::as_user(user, move || prune(&releases, &current)).await;
    ok(format!("{} {} deployed to {}", a.application, a.version, release.display()))
}

async fn fetch(client: &Client, sha256: &str, to: &Path) -> Result<String, String> {
    let (_, mut stream) = client.download(sha256).await.map_err(|e| e.to_string())?;
    let mut f = tokio::fs::File::create(to).await.map_err(|e| e.to_string())?;
    let mut h = Sha256::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        h.update(&chunk);
        f.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    f.sync_all().await.map_err(|e| e.to_string())?;
    Ok(hex::encode(h.finalize()))
}

fn switch_current(app_dir: &Path, target: &Path, attempt: &str) -> std::io::Result<()> {
    let tmp = app_dir.join(format!(".current-{attempt}"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, app_dir.join("current"))?;
    if let Ok(d) = std::fs::File::open(app_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Keeps the newest [`KEEP_RELEASES`] releases and always the current one.
fn prune(releases: &Path, current: &Path) {
    let Ok(rd) = std::fs::read_dir(releases) else { return };
    let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    for (_, d) in dirs.into_iter().skip(KEEP_RELEASES) {
        if d != current {
            let _ = std::fs::remove_dir_all(&d);
        }
    }
}

async fn http_check(
    cfg: &AgentConfig,
    url: &str,
    expect: u16,
    timeout: Duration,
    log: &Logger,
    mut cancel: watch::Receiver<bool>,
) -> TaskOutcome {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(5)).connect_timeout(Duration::from_secs(5));
    // An https check trusts the CA the agent was given (the orchestrator's, by default).
    let tls = match &cfg.ca_cert {
        Some(ca) if url.starts_with("https://") => drover_tls::client_config(ca).map_err(|e| e.to_string()),
        _ => drover_tls::empty_client_config().map_err(|e| e.to_string()),
    };
    match tls {
        Ok(c) => b = b.use_preconfigured_tls(c),
        Err(e) => return fail(format!("TLS set-up for the check: {e}")),
    }
    let http = match b.build() {
        Ok(c) => c,
        Err(e) => return fail(format!("HTTP client: {e}")),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut n = 0u32;
    loop {
        n += 1;
        let last = match http.get(url).send().await {
            Ok(r) if r.status().as_u16() == expect => {
                log.line("agent", format!("GET {url} -> {} (attempt {n})", r.status())).await;
                return ok(format!("GET {url} answered {}", r.status()));
            }
            Ok(r) => format!("answered {}", r.status()),
            // Without the URL: reqwest writes it re-encoded, a form the masker may not know.
            Err(e) => format!("failed: {}", e.without_url()),
        };
        log.line("agent", format!("GET {url} {last}; expecting {expect}")).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = cancel.wait_for(|c| *c) => return fail("cancelled"),
        }
        if tokio::time::Instant::now() >= deadline {
            return fail(format!(
                "GET {url} did not answer {expect} within {}: last {last}",
                humantime::format_duration(timeout)
            ));
        }
    }
}
