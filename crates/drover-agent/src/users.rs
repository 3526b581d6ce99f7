//! Task users: the uids an agent's tasks run as, so that whoever may deploy to an environment
//! runs code on its agents without becoming the agent (reading its credentials, its journal,
//! the artifacts of other attempts, or reporting results).
//!
//! Rules this module owns:
//! - A task process (a `run` command, a hook) runs with the task user's uid and gid and no
//!   supplementary groups (std drops them when it changes the uid as root).
//! - Every file operation the agent makes under `WORK_DIR/<application>/` (create, unpack,
//!   rename, the `current` switch, prune) runs on a thread of its own whose *filesystem* uid and
//!   gid are the task user's ([`as_user`]): the kernel then resolves every path and checks every
//!   permission as that user (root's file capabilities go with the fsuid), so a symlink a task
//!   plants cannot steer the agent anywhere the task user could not go itself.
//! - An application's directory belongs to one task user (made by the agent for a free one the
//!   first time); the application's tasks run as that user, one at a time. Each task user runs
//!   one task at a time, and when it ends, every process of its uid is killed ([`kill_all`]),
//!   whatever session or process group it moved to.
//! - The agent refuses to start when it cannot change uid, when a task user could reach the
//!   agent's own files, or when a task user cannot reach the work dir ([`check_start`]).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};
use tokio::sync::{Notify, watch};

/// A user tasks run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskUser {
    /// As given (`deploy1`, `2001:2001`), for messages.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// From the user database; `/` for a `uid:gid` without an entry.
    pub home: PathBuf,
}

impl TaskUser {
    /// `NAME` (looked up in the user database) or `UID:GID`. Never root.
    pub fn parse(spec: &str) -> Result<TaskUser, String> {
        let spec = spec.trim();
        let user = if let Some((u, g)) = spec.split_once(':') {
            let num = |x: &str, what: &str| {
                x.parse::<u32>()
                    .map_err(|_| format!("task user {spec:?}: {what} {x:?} is not a number (write NAME or UID:GID)"))
            };
            let (uid, gid) = (num(u, "uid")?, num(g, "gid")?);
            let home = User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.dir).unwrap_or_else(|| "/".into());
            TaskUser { name: spec.to_string(), uid, gid, home }
        } else {
            let u = User::from_name(spec)
                .map_err(|e| format!("task user {spec:?}: reading the user database: {e}"))?
                .ok_or_else(|| format!("task user {spec:?}: no such user (write NAME or UID:GID)"))?;
            TaskUser { name: spec.to_string(), uid: u.uid.as_raw(), gid: u.gid.as_raw(), home: u.dir }
        };
        if user.uid == 0 || user.gid == 0 {
            return Err(format!("task user {spec:?}: tasks never run as root (uid or gid 0)"));
        }
        Ok(user)
    }
}

/// The home directory of whoever runs a task without a task user (the agent's own user),
/// looked up once.
pub fn own_home() -> &'static Path {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.dir).unwrap_or_else(|| "/".into())
    })
}

/// Runs `f` on a thread of its own whose filesystem uid and gid are `user`'s (or on the
/// blocking pool, as the agent, without a task user). The thread ends with `f`, and its
/// credentials with it.
pub async fn as_user<T: Send + 'static>(
    user: Option<&TaskUser>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<T> {
    let Some(u) = user else {
        return tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other);
    };
    let (uid, gid) = (Uid::from_raw(u.uid), Gid::from_raw(u.gid));
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("drover-task-fs".into()).spawn(move || {
        nix::unistd::setfsgid(gid);
        nix::unistd::setfsuid(uid);
        // Both calls answer with the previous value, success or not: asking again tells.
        if nix::unistd::setfsgid(gid) != gid || nix::unistd::setfsuid(uid) != uid {
            let _ = tx.send(Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "cannot take the task user's filesystem uid (the agent must run as root)",
            )));
            return;
        }
        let _ = tx.send(Ok(f()));
    })?;
    rx.await.map_err(|_| std::io::Error::other("the task user's file operation panicked"))?
}

/// Can `user` change entries of a directory with this metadata (rename, replace, delete)?
fn writable_by(m: &std::fs::Metadata, user: &TaskUser) -> bool {
    let mode = m.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    m.uid() == user.uid || (!sticky && mode & 0o002 != 0) || (!sticky && m.gid() == user.gid && mode & 0o020 != 0)
}

/// Checks made before an agent with task users starts; each refusal names the path or user.
pub async fn check_start(users: &[TaskUser], work_dir: &Path, credentials: &[PathBuf]) -> Result<(), String> {
    if users.is_empty() {
        return Ok(());
    }
    let me = nix::unistd::geteuid();
    if !me.is_root() {
        return Err(format!(
            "--task-user needs the agent to run as root (it starts tasks as other users); this agent runs as uid {me}"
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for u in users {
        if !seen.insert(u.uid) {
            return Err(format!("task user {} (uid {}) is given twice", u.name, u.uid));
        }
    }
    // The work dir and every directory above it: no task user may swap them.
    let mut at = Some(work_dir);
    while let Some(dir) = at {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(u) = users.iter().find(|u| writable_by(&m, u)) {
            return Err(format!(
                "{} can be changed by task user {} (uid {}): the work dir and the directories above it must belong to the agent's user and not be writable by task users",
                dir.display(),
                u.name,
                u.uid
            ));
        }
        at = dir.parent();
    }
    for u in users {
        let (probe, creds) = (work_dir.join(".drover-reach"), credentials.to_vec());
        let (reach, readable) = as_user(Some(u), move || {
            let reach = match std::fs::symlink_metadata(&probe) {
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(e),
                _ => Ok(()),
            };
            (reach, creds.into_iter().find(|f| std::fs::File::open(f).is_ok()))
        })
        .await
        .map_err(|e| format!("task user {} (uid {}): {e}", u.name, u.uid))?;
        if let Err(e) = reach {
            return Err(format!(
                "task user {} (uid {}) cannot reach the work dir {} ({e}): every directory on the way needs search permission for it",
                u.name,
                u.uid,
                work_dir.display()
            ));
        }
        if let Some(f) = readable {
            return Err(format!(
                "{} holds the agent's credentials and task user {} (uid {}) can read it: make it the agent user's alone (chmod 600)",
                f.display(),
                u.name,
                u.uid
            ));
        }
    }
    Ok(())
}

/// The uids of processes already read, by pid and the inode of their `/proc/PID` (a new
/// process under a reused pid gets a new inode; the directory listing gives the inode without
/// a `stat`): each process's `status` is read once in its life, so a scan costs one listing of
/// `/proc`. Pruned to the live pids at every scan.
static SEEN: std::sync::LazyLock<Mutex<Seen>> = std::sync::LazyLock::new(Default::default);

/// pid → (inode of `/proc/PID`, real, effective and saved uid).
type Seen = std::collections::HashMap<i32, (u64, [u32; 3])>;

/// Real, effective and saved uid of a process, from `/proc/PID/status`.
fn uids_of(pid: i32) -> Option<[u32; 3]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().filter_map(|x| x.parse::<u32>().ok());
    Some([ids.next()?, ids.next()?, ids.next()?])
}

/// Live (not zombie, [`crate::groups::alive`]) processes whose real, effective or saved uid is
/// `uid` (a setuid program a task ran keeps its real uid). A process's uids are read once and
/// remembered ([`SEEN`]): an unprivileged process cannot take another uid, and only the agent
/// (or its spawner) changes a process to a task user's uid — the task's own first process,
/// which has ended when its user's processes are looked for.
pub fn processes_of(uid: u32) -> Vec<i32> {
    use std::os::unix::fs::DirEntryExt;
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    let mut seen = SEEN.lock().expect("poisoned");
    let mut live = std::collections::HashMap::with_capacity(seen.len());
    let mut found = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let ino = e.ino();
        let uids = match seen.get(&pid) {
            Some((known, uids)) if *known == ino => Some(*uids),
            _ => uids_of(pid),
        };
        let Some(uids) = uids else { continue };
        live.insert(pid, (ino, uids));
        if uids.contains(&uid) && crate::groups::stat(pid).is_some_and(|p| crate::groups::alive(&p)) {
            found.push(pid);
        }
    }
    *seen = live;
    found
}

/// Kills every process of the task user's uid: `kill(-1, SIGKILL)` from a process running as
/// that uid (the kernel signals them all in one pass, so a fork cannot slip between), then, for
/// whatever a scan still finds (one that killed the helper first, say), SIGSTOP to each (a
/// stopped process forks no more) and SIGKILL. Bounded: 50 rounds. Returns how many processes
/// were found at first and how many are still alive (a user with survivors must not be given
/// another task: [`Pool`] holds it back).
pub fn kill_all(user: &TaskUser) -> (usize, usize) {
    let first = processes_of(user.uid);
    if first.is_empty() {
        return (0, 0);
    }
    let _ = std::process::Command::new("/bin/sh")
        .args(["-c", "kill -KILL -1"])
        .env_clear()
        .current_dir("/")
        .uid(user.uid)
        .gid(user.gid)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    for round in 0..50u64 {
        let left = processes_of(user.uid);
        if left.is_empty() {
            return (first.len(), 0);
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGSTOP);
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(2 * (round + 1)));
    }
    let left = processes_of(user.uid).len();
    if left > 0 {
        tracing::error!(user = %user.name, uid = user.uid, processes = left, "processes of the task user survived being killed; the user gets no task until they are gone");
    }
    (first.len(), left)
}

/// Task users and who is busy. One task per task user at a time; a user whose processes
/// survived the end of its task stays busy until they are gone.
pub struct Pool {
    users: Vec<TaskUser>,
    busy: std::sync::Arc<Busy>,
}

/// Which task users are busy, and a wake-up for those waiting for one.
struct Busy {
    flags: Mutex<Vec<bool>>,
    freed: Notify,
}

impl Busy {
    fn free(&self, i: usize) {
        self.flags.lock().expect("poisoned")[i] = false;
        self.freed.notify_waiters();
    }
}

/// How long a task user with survivors is retried before the agent gives up on it (and says
/// so): it stays busy either way.
const QUARANTINE_TRIES: u32 = 600;

/// A task user held for one task; [`Lease::end`] kills what the task left and frees the user.
pub struct Lease<'a> {
    pool: &'a Pool,
    index: usize,
    ended: bool,
}

impl Lease<'_> {
    pub fn user(&self) -> &TaskUser {
        &self.pool.users[self.index]
    }

    /// Kills every process of the user, then frees it — or, when some survived, keeps it busy
    /// and tries again every second, freeing it once nothing of it is left. Returns how many
    /// processes the task left.
    pub async fn end(mut self) -> usize {
        let user = self.user().clone();
        let (found, left) = tokio::task::spawn_blocking(move || kill_all(&user)).await.unwrap_or((0, 1));
        self.ended = true;
        if left == 0 {
            self.pool.free(self.index);
        } else {
            self.pool.quarantine(self.index);
        }
        found
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if !self.ended {
            // Not ended on purpose (a panic): nothing of the task may outlive it all the same.
            match kill_all(&self.pool.users[self.index]) {
                (_, 0) => self.pool.free(self.index),
                _ => self.pool.quarantine(self.index),
            }
        }
    }
}

/// An application's directory is `WORK_DIR/<application>`: a plain name, never hidden (the
/// orchestrator allows no other; the agent does not rely on it).
pub fn application_dir(work_dir: &Path, application: &str) -> Result<PathBuf, String> {
    let plain = !application.is_empty()
        && !application.starts_with('.')
        && application.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !plain {
        return Err(format!("application name {application:?} cannot be a directory name"));
    }
    Ok(work_dir.join(application))
}

impl Pool {
    pub fn new(users: Vec<TaskUser>) -> Pool {
        let n = users.len();
        Pool { users, busy: std::sync::Arc::new(Busy { flags: Mutex::new(vec![false; n]), freed: Notify::new() }) }
    }

    pub fn users(&self) -> &[TaskUser] {
        &self.users
    }

    fn free(&self, i: usize) {
        self.busy.free(i);
    }

    /// Keeps user `i` busy while processes of it live: a thread of its own retries the kill
    /// every second (bounded) and frees the user once they are gone.
    fn quarantine(&self, i: usize) {
        let (user, busy) = (self.users[i].clone(), self.busy.clone());
        let retry = std::thread::Builder::new().name("drover-task-user-quarantine".into()).spawn(move || {
            for _ in 0..QUARANTINE_TRIES {
                std::thread::sleep(Duration::from_secs(1));
                if kill_all(&user).1 == 0 {
                    busy.free(i);
                    return;
                }
            }
            tracing::error!(user = %user.name, uid = user.uid, "giving up on ending the task user's processes: it gets no task until the agent restarts");
        });
        if let Err(e) = retry {
            tracing::error!(error = %e, user = %self.users[i].name, "cannot watch the task user's survivors; it stays busy");
        }
    }

    /// The task user who owns `app_dir` (made, for a free user, when missing), once it is free.
    /// `waiting` is told once whom it waits for; `cancel` ends the wait.
    pub async fn acquire(
        &self,
        app_dir: &Path,
        mut cancel: watch::Receiver<bool>,
        waiting: impl FnOnce(String),
    ) -> Result<Lease<'_>, String> {
        let mut waiting = Some(waiting);
        loop {
            let freed = self.busy.freed.notified();
            let wait_for = {
                let mut busy = self.busy.flags.lock().expect("poisoned");
                match std::fs::symlink_metadata(app_dir) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => match busy.iter().position(|b| !b) {
                        Some(i) => {
                            make_application_dir(app_dir, &self.users[i])?;
                            busy[i] = true;
                            return Ok(Lease { pool: self, index: i, ended: false });
                        }
                        None => "a free task user".to_string(),
                    },
                    Err(e) => return Err(format!("{}: {e}", app_dir.display())),
                    Ok(m) if !m.file_type().is_dir() => {
                        return Err(format!("{} is not a directory; remove it", app_dir.display()));
                    }
                    Ok(m) => match self.users.iter().position(|u| u.uid == m.uid()) {
                        None => {
                            return Err(format!(
                                "{} belongs to uid {}, which is not a task user of this agent ({}); give it to one of them (chown -R) or remove it",
                                app_dir.display(),
                                m.uid(),
                                self.users
                                    .iter()
                                    .map(|u| format!("{} uid {}", u.name, u.uid))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                        }
                        Some(i) if !busy[i] => {
                            busy[i] = true;
                            return Ok(Lease { pool: self, index: i, ended: false });
                        }
                        Some(i) => format!(
                            "task user {} (it owns {} and runs another task of it)",
                            self.users[i].name,
                            app_dir.display()
                        ),
                    },
                }
            };
            if let Some(w) = waiting.take() {
                w(wait_for);
            }
            tokio::select! {
                _ = freed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = cancel.wait_for(|c| *c) => return Err("cancelled while waiting for a task user".into()),
            }
        }
    }
}

/// Makes `WORK_DIR/<application>` for `user`. Safe as the agent: the work dir is the agent's
/// and no task user can write in it ([`check_start`]), so nothing can be put at that name
/// between the `mkdir` and the `lchown`.
fn make_application_dir(dir: &Path, user: &TaskUser) -> Result<(), String> {
    let at = |e: std::io::Error| format!("making {}: {e}", dir.display());
    std::fs::create_dir(dir).map_err(at)?;
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid)).map_err(at)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(at)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command run as `u`, from nothing of this process's environment.
    fn as_task_user(u: &TaskUser, program: &str, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.args(args).uid(u.uid).gid(u.gid).env_clear().current_dir("/").kill_on_drop(true);
        c
    }

    #[test]
    fn parsing_names_and_ids() {
        let u = TaskUser::parse("45001:45002").unwrap();
        assert_eq!((u.uid, u.gid), (45001, 45002));
        for bad in ["0:100", "100:0", "root", "x:1", "1:", "no-such-user-here"] {
            assert!(TaskUser::parse(bad).is_err(), "{bad}");
        }
        let nobody = TaskUser::parse("nobody").unwrap();
        assert!(nobody.uid > 0);
    }

    #[test]
    fn application_dirs_are_plain_names() {
        let w = Path::new("/w");
        assert_eq!(application_dir(w, "shop").unwrap(), Path::new("/w/shop"));
        for bad in ["", ".drover", "..", "a/b", "../x", "a b"] {
            assert!(application_dir(w, bad).is_err(), "{bad:?}");
        }
    }

    /// The filesystem uid is the thread's own: the rest of the agent stays root.
    #[tokio::test]
    async fn the_filesystem_uid_is_per_thread() {
        if !nix::unistd::geteuid().is_root() {
            return; // tests run as root here and in CI
        }
        let u = TaskUser::parse("45011:45011").unwrap();
        let (inside, other) = as_user(Some(&u), || {
            let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
            let me = status.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string();
            let pid = std::process::id();
            let main = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
            (me, main.lines().find(|l| l.starts_with("Uid:")).unwrap().to_string())
        })
        .await
        .unwrap();
        assert!(inside.ends_with("45011"), "{inside}");
        assert!(other.ends_with("\t0"), "{other}");
        // As that user, root's files are closed.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let p = dir.path().join("x");
        let denied = as_user(Some(&u), move || std::fs::write(p, "x")).await.unwrap();
        assert_eq!(denied.unwrap_err().kind(), std::io::ErrorKind::PermissionDenied);
    }

    /// A process whose `/proc` entry belongs to another user (it ran a program that is setuid
    /// to someone else) is found by its real uid, also after a scan remembered it.
    #[tokio::test]
    async fn a_process_running_a_setuid_program_is_killed_too() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let (u, other) = (TaskUser::parse("45013:45013").unwrap(), 45015u32);
        let dir = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = dir.path().join("sleeper");
        std::fs::copy("/bin/sleep", &prog).unwrap();
        std::os::unix::fs::chown(&prog, Some(other), Some(other)).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let mut child = as_task_user(&u, prog.to_str().unwrap(), &["300"]).spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        let mut owner = 0;
        for _ in 0..200 {
            owner = std::fs::symlink_metadata(format!("/proc/{pid}")).map(|m| m.uid()).unwrap_or(0);
            if owner == other {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(owner, other, "the entry is the setuid owner's");
        // Twice: the second scan answers from what the first remembered.
        assert_eq!(processes_of(u.uid), vec![pid]);
        assert_eq!(processes_of(u.uid), vec![pid]);
        assert_eq!(kill_all(&u), (1, 0));
        let _ = child.wait().await;
        assert!(processes_of(u.uid).is_empty());
    }

    /// A process whose main thread exited while another runs on shows as a zombie: it is
    /// found and killed all the same.
    #[tokio::test]
    async fn a_process_that_looks_like_a_zombie_is_killed_too() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let u = TaskUser::parse("45014:45014").unwrap();
        let trick = "import ctypes, os, threading, time\nos.setsid()\nthreading.Thread(target=lambda: time.sleep(300)).start()\nprint('gone', flush=True)\nctypes.CDLL(None).pthread_exit(None)\n";
        let mut child =
            as_task_user(&u, "python3", &["-c", trick]).stdout(std::process::Stdio::piped()).spawn().unwrap();
        let pid = child.id().unwrap() as i32;
        let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line).await.unwrap();
        let mut looks_dead = false;
        for _ in 0..200 {
            if crate::groups::stat(pid).is_some_and(|p| p.state == 'Z') {
                looks_dead = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(looks_dead, "the main thread exited");
        assert!(crate::groups::alive(&crate::groups::stat(pid).unwrap()), "its other thread runs on");
        assert_eq!(processes_of(u.uid), vec![pid]);
        assert_eq!(kill_all(&u), (1, 0));
        let _ = child.wait().await;
    }

    #[tokio::test]
    async fn every_process_of_the_user_is_killed_whatever_its_session() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let u = TaskUser::parse("45012:45012").unwrap();
        let mut child =
            as_task_user(&u, "sh", &["-c", "setsid sleep 300 & sleep 300 & trap '' TERM; wait"]).spawn().unwrap();
        for _ in 0..200 {
            if processes_of(u.uid).len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(processes_of(u.uid).len() >= 3);
        let (found, left) = kill_all(&u);
        assert!(found >= 3 && left == 0, "{found} {left}");
        let _ = child.wait().await;
        assert!(processes_of(u.uid).is_empty());
    }
}
