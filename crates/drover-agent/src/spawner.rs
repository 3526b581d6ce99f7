//! The task spawner: a small helper process, started once by an agent with task users, that
//! starts task processes as those users.
//!
//! Why: a process that changes its uid before `exec` cannot be started with `posix_spawn`; the
//! standard library then forks the whole agent for every task, and the copy of its memory and
//! the copy-on-write faults after it cost a sixth of the pipeline benchmark's throughput. The
//! spawner is small (no runtime, a few threads), so its fork is cheap.
//!
//! Protocol, over a `SOCK_SEQPACKET` socket pair only the agent and the spawner hold (never
//! inherited by a task: the spawner's end is its stdin, replaced in every child):
//! - agent → spawner: a [`Request`] as JSON, with the task's stdout and stderr (write ends of
//!   pipes the agent reads) as `SCM_RIGHTS`;
//! - spawner → agent: [`Reply::Started`] with the process id (or [`Reply::Failed`]), later
//!   [`Reply::Exited`] with its raw wait status.
//!
//! The spawner refuses uid or gid 0, starts each process in a process group of its own, with
//! exactly the environment asked for and no supplementary groups, and ends when the agent's
//! end closes (the agent's restart ends whatever tasks were left, as it always does).

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The largest request: a task's environment is bounded (64 KiB of an environment's variables,
/// a deployment's plain values); a larger one is started by the agent itself.
pub const MAX_REQUEST: usize = 192 * 1024;

/// What the agent asks for.
#[derive(Serialize, Deserialize)]
pub struct Request {
    pub id: u64,
    pub uid: u32,
    pub gid: u32,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

/// What the spawner answers.
#[derive(Serialize, Deserialize)]
pub enum Reply {
    /// With the leader's start time and session, read before the spawner reaps it (a quick
    /// process may be gone by the time the agent looks).
    Started {
        id: u64,
        pid: u32,
        start: u64,
        session: i32,
    },
    Failed {
        id: u64,
        error: String,
    },
    Exited {
        id: u64,
        status: i32,
    },
}

fn send(sock: impl AsFd, bytes: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) -> std::io::Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many descriptors"));
    }
    rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut control, SendFlags::empty())?;
    Ok(())
}

/// One message and the descriptors it carried (close-on-exec); `None` once the peer is gone.
fn recv(sock: impl AsFd, buf: &mut [u8]) -> std::io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(sock, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = m {
            fds.extend(rights);
        }
    }
    if got.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    if got.flags.contains(rustix::net::ReturnFlags::TRUNC) {
        return Err(std::io::Error::other("message too long"));
    }
    Ok(Some((got.bytes, fds)))
}

/// The spawner's side: serves the socket that is its stdin until the agent closes it.
pub fn serve_stdin() -> std::io::Result<()> {
    let sock: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let out = Arc::new(Mutex::new(sock.try_clone()?));
    let reply = move |out: &Mutex<OwnedFd>, r: &Reply| {
        let json = serde_json::to_vec(r).unwrap_or_default();
        let _ = send(&*out.lock().expect("poisoned"), &json, &[]);
    };
    let mut buf = vec![0u8; MAX_REQUEST + 1024];
    while let Some((n, mut fds)) = recv(&sock, &mut buf)? {
        let Ok(req) = serde_json::from_slice::<Request>(&buf[..n]) else { continue };
        let id = req.id;
        if req.uid == 0 || req.gid == 0 || fds.len() != 2 {
            reply(&out, &Reply::Failed { id, error: "refused: root, or no output pipes".into() });
            continue;
        }
        let (stderr, stdout) = (fds.pop().expect("two"), fds.pop().expect("two"));
        let child = std::process::Command::new(&req.program)
            .args(&req.args)
            .current_dir(&req.cwd)
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .uid(req.uid)
            .gid(req.gid)
            .process_group(0)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn();
        match child {
            Ok(mut c) => {
                let pid = c.id();
                // Not reaped yet: its /proc entry is there, a zombie at worst.
                let (start, session) =
                    crate::groups::stat(pid as i32).map(|p| (p.start, p.session)).unwrap_or_default();
                reply(&out, &Reply::Started { id, pid, start, session });
                let out = out.clone();
                std::thread::spawn(move || {
                    use std::os::unix::process::ExitStatusExt;
                    let status = c.wait().map(|s| s.into_raw()).unwrap_or(-1);
                    reply(&out, &Reply::Exited { id, status });
                });
            }
            Err(e) => reply(&out, &Reply::Failed { id, error: e.to_string() }),
        }
    }
    Ok(())
}

/// A started process: its id, and its leader's start time and session.
type Started = Result<(u32, u64, i32), String>;

/// What the agent waits for, per request.
#[derive(Default)]
struct Waiting {
    started: HashMap<u64, oneshot::Sender<Started>>,
    exited: HashMap<u64, oneshot::Sender<i32>>,
}

/// The agent's side: one spawner process, started again when it is gone.
pub struct Spawner {
    exe: PathBuf,
    live: Mutex<Option<Arc<Link>>>,
    next: std::sync::atomic::AtomicU64,
}

/// A running spawner: the socket, and who waits for what (shared with the thread that reads
/// the replies).
struct Link {
    sock: OwnedFd,
    waiting: Arc<Mutex<Waiting>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
    process: Mutex<std::process::Child>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The reader and the spawner both see the end of the socket and stop.
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Both);
        let mut p = self.process.lock().expect("poisoned");
        let _ = p.kill();
        let _ = p.wait();
    }
}

/// A task process the spawner started.
pub struct Spawned {
    pub pid: u32,
    /// The leader as it was when it started (for the group journal).
    pub leader: crate::groups::ProcStat,
    exited: Option<oneshot::Receiver<i32>>,
}

impl Spawned {
    /// Waits for the process to end.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        let Some(rx) = self.exited.as_mut() else { return Err(std::io::Error::other("already waited for")) };
        let status = rx.await.map_err(|_| std::io::Error::other("the task spawner stopped"))?;
        self.exited = None;
        Ok(ExitStatus::from_raw(status))
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Not waited for to its end (the agent's task was dropped): the process goes with it.
        if self.exited.is_some() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

impl Spawner {
    /// A spawner run as `EXE task-spawner` (the drover binary), started at the first task.
    pub fn new(exe: &Path) -> Spawner {
        Spawner { exe: exe.to_path_buf(), live: Mutex::new(None), next: Default::default() }
    }

    fn link(&self) -> std::io::Result<Arc<Link>> {
        let mut live = self.live.lock().expect("poisoned");
        if let Some(l) = live.as_ref().filter(|l| !l.gone.load(std::sync::atomic::Ordering::Acquire)) {
            return Ok(l.clone());
        }
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
        let process = std::process::Command::new(&self.exe)
            .arg("task-spawner")
            .env_clear()
            .current_dir("/")
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let link = Arc::new(Link {
            sock: ours.try_clone()?,
            waiting: Default::default(),
            gone: Default::default(),
            process: Mutex::new(process),
        });
        let (waiting, gone) = (link.waiting.clone(), link.gone.clone());
        std::thread::Builder::new()
            .name("drover-task-spawner".into())
            .spawn(move || read_replies(&ours, &waiting, &gone))?;
        tracing::info!(exe = %self.exe.display(), "task spawner started");
        *live = Some(link.clone());
        Ok(link)
    }

    /// Starts `program` as `uid:gid` with exactly `env`, its output into the two pipes.
    #[allow(clippy::too_many_arguments)]
    pub async fn spawn(
        &self,
        uid: u32,
        gid: u32,
        program: PathBuf,
        args: Vec<String>,
        cwd: &Path,
        env: &[(String, String)],
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> std::io::Result<Spawned> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = Request { id, uid, gid, program, args, cwd: cwd.to_path_buf(), env: env.to_vec() };
        let json = serde_json::to_vec(&req).map_err(std::io::Error::other)?;
        let link = self.link()?;
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, exited) = oneshot::channel();
        {
            let mut w = link.waiting.lock().expect("poisoned");
            w.started.insert(id, started_tx);
            w.exited.insert(id, exited_tx);
        }
        let sent = send(&link.sock, &json, &[stdout.as_fd(), stderr.as_fd()]);
        // Our ends go now: the process holds them, and EOF must come when it (and what it
        // started) is done with them.
        drop((stdout, stderr));
        if let Err(e) = sent {
            let mut w = link.waiting.lock().expect("poisoned");
            w.started.remove(&id);
            w.exited.remove(&id);
            link.gone.store(true, std::sync::atomic::Ordering::Release);
            return Err(e);
        }
        match started.await {
            Ok(Ok((pid, start, session))) => {
                let leader = crate::groups::ProcStat { pid: pid as i32, state: 'R', pgrp: pid as i32, session, start };
                Ok(Spawned { pid, leader, exited: Some(exited) })
            }
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other("the task spawner stopped")),
        }
    }
}

/// Hands each reply to whoever waits for it; when the spawner is gone, every waiter learns so
/// (its sender is dropped) and the next task starts a new spawner.
fn read_replies(sock: &OwnedFd, waiting: &Mutex<Waiting>, gone: &std::sync::atomic::AtomicBool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let r = match recv(sock, &mut buf) {
            Ok(Some((n, _))) => serde_json::from_slice::<Reply>(&buf[..n]).ok(),
            Ok(None) | Err(_) => break,
        };
        let mut w = waiting.lock().expect("poisoned");
        match r {
            Some(Reply::Started { id, pid, start, session }) => {
                if let Some(tx) = w.started.remove(&id) {
                    let _ = tx.send(Ok((pid, start, session)));
                }
            }
            Some(Reply::Failed { id, error }) => {
                w.exited.remove(&id);
                if let Some(tx) = w.started.remove(&id) {
                    let _ = tx.send(Err(error));
                }
            }
            Some(Reply::Exited { id, status }) => {
                if let Some(tx) = w.exited.remove(&id) {
                    let _ = tx.send(status);
                }
            }
            None => {}
        }
    }
    gone.store(true, std::sync::atomic::Ordering::Release);
    let mut w = waiting.lock().expect("poisoned");
    w.started.clear();
    w.exited.clear();
    tracing::info!("the task spawner stopped");
}
