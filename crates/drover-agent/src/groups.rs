//! Process groups of running attempts. Each process an attempt starts (a `run` command, a
//! hook) leads its own process group; the group is journaled — id, boot id, the leader's start
//! time and session — in `WORK_DIR/.drover/attempts/<attempt>.group` right after the
//! spawn (an agent killed in that instant leaves its group unjournaled), and the record goes
//! once the whole group has ended. A process that leaves the group (`setsid`) escapes this.
//!
//! Ending a group: SIGTERM to the group, then SIGKILL to whatever is left after the grace.
//! An agent restarted after a crash ends the groups its cut-off attempts left (`reap`), but
//! only when the boot id is the same and the leader is the same process (same start time), or,
//! with the leader gone, members of that group in the same session started no earlier than it:
//! a reused process id is never signalled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// What identifies a process group across a restart of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    pub pgid: i32,
    pub boot_id: String,
    /// The leader's start time (clock ticks since boot, `/proc/PID/stat` field 22).
    pub start: u64,
    pub session: i32,
}

impl GroupRecord {
    fn line(&self) -> String {
        format!("{} {} {} {}\n", self.pgid, self.boot_id, self.start, self.session)
    }
    fn parse(s: &str) -> Option<GroupRecord> {
        let mut it = s.split_whitespace();
        Some(GroupRecord {
            pgid: it.next()?.parse().ok()?,
            boot_id: it.next()?.to_string(),
            start: it.next()?.parse().ok()?,
            session: it.next()?.parse().ok()?,
        })
    }
}

/// This boot's id.
pub fn boot_id() -> Option<String> {
    static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string()))
        .clone()
}

/// A process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
    pub start: u64,
}

pub fn stat(pid: i32) -> Option<ProcStat> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field n is f[n - 3].
    Some(ProcStat {
        pid,
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// Is this process alive? Not a zombie — or a zombie only in name: a leader thread that exited
/// while other threads of the process run on shows as `Z` (`pthread_exit` in the main thread).
pub fn alive(p: &ProcStat) -> bool {
    if p.state != 'Z' && p.state != 'X' {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok().is_some_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .is_some_and(|n| n > 1)
    })
}

/// Live members of a process group ([`alive`]).
pub fn members(pgid: i32) -> Vec<ProcStat> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .filter(|p| p.pgrp == pgid && alive(p))
        .collect()
}

/// Where an attempt's group is journaled.
pub fn record_path(journal: &Path, attempt: &str) -> PathBuf {
    journal.join(format!("{attempt}.group"))
}

/// Journals the group a just-started leader `pid` leads. Not fsynced: the record matters only
/// within this boot (an agent killed, even with -9, leaves the page cache; after a power loss
/// the boot id differs and nothing of the group survived anyway).
pub fn record(path: &Path, pid: i32) -> std::io::Result<GroupRecord> {
    let me = stat(pid).ok_or_else(|| std::io::Error::other(format!("process {pid} is gone")))?;
    record_stat(path, &me)
}

/// Journals the group led by the process `leader` describes (read by whoever could still
/// read it: the task spawner reads it before it reaps the process).
pub fn record_stat(path: &Path, leader: &ProcStat) -> std::io::Result<GroupRecord> {
    let r = GroupRecord {
        pgid: leader.pid,
        boot_id: boot_id().unwrap_or_default(),
        start: leader.start,
        session: leader.session,
    };
    std::fs::write(path, r.line())?;
    Ok(r)
}

pub fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
}

/// Does any process of the group exist (zombies included)? One syscall, no /proc scan.
fn any_member(pgid: i32) -> bool {
    pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Ends a group: SIGTERM, then SIGKILL to what is left after `grace`. Returns how many
/// processes it found alive when it began.
pub async fn end(pgid: i32, grace: Duration, why: &str) -> usize {
    // The common case — the task's process ended and left nothing — costs one syscall.
    if !any_member(pgid) {
        return 0;
    }
    let alive = members(pgid).len();
    if alive == 0 {
        return 0;
    }
    tracing::warn!(pgid, processes = alive, "{why}: ending the process group (TERM, then KILL after {grace:?})");
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        if !any_member(pgid) || members(pgid).is_empty() {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = members(pgid).len();
    if left > 0 {
        tracing::warn!(pgid, processes = left, "{why}: killing what ignored TERM");
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
    alive
}

/// Is the journaled group still the one this agent started (and not a reused id)? Never the
/// agent's own group, nor init's or the kernel's, whatever a record says.
fn still_ours(r: &GroupRecord) -> bool {
    let me = std::process::id() as i32;
    let own_group = nix::unistd::getpgrp().as_raw();
    if r.pgid <= 1 || r.pgid == me || r.pgid == own_group {
        return false;
    }
    if boot_id().as_deref() != Some(r.boot_id.as_str()) {
        return false; // rebooted since: nothing of it survived
    }
    match stat(r.pgid) {
        Some(leader) => leader.start == r.start && leader.pgrp == r.pgid && leader.session == r.session,
        // Leader gone: while members live, the id cannot be given to a new process; members of
        // another group with that id would not share the session and start time.
        None => members(r.pgid).iter().any(|m| m.session == r.session && m.start >= r.start),
    }
}

/// On start: ends the groups of attempts a crash cut off, and forgets their records.
/// Returns the number of groups ended.
pub async fn reap(journal: &Path, grace: Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(journal) else { return 0 };
    let mut ended = 0;
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("group") {
            continue;
        }
        let rec = std::fs::read_to_string(&path).ok().and_then(|s| GroupRecord::parse(&s));
        // Forgotten first: a record that made this fail would not do it again at the next start.
        forget(&path);
        if let Some(r) = rec
            && still_ours(&r)
        {
            let attempt = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
            tracing::warn!(attempt, pgid = r.pgid, "an attempt cut off by a restart left processes running");
            if end(r.pgid, grace, "cut-off attempt").await > 0 {
                ended += 1;
            }
        }
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_garbage() {
        let r = GroupRecord { pgid: 4242, boot_id: "b0-1".into(), start: 123456, session: 77 };
        assert_eq!(GroupRecord::parse(&r.line()), Some(r));
        for bad in ["", "x y z w", "1 b 2", "1 b x 4"] {
            assert_eq!(GroupRecord::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stat_reads_this_process() {
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(me.start > 0);
        assert!(boot_id().is_some_and(|b| b.len() >= 32));
    }

    #[tokio::test]
    async fn a_reused_id_is_never_signalled() {
        // A record naming this very process, but with another start time: not ours.
        let me = stat(std::process::id() as i32).unwrap();
        let forged =
            GroupRecord { pgid: me.pid, boot_id: boot_id().unwrap(), start: me.start + 1, session: me.session };
        assert!(!still_ours(&forged));
        let other_boot = GroupRecord { pgid: me.pid, boot_id: "another-boot".into(), start: me.start, session: 1 };
        assert!(!still_ours(&other_boot));
        // Never the agent itself, its group, init or the kernel, even with matching facts.
        let b = boot_id().unwrap();
        for pgid in [0, 1, me.pid, me.pgrp] {
            let r = GroupRecord { pgid, boot_id: b.clone(), start: me.start, session: me.session };
            assert!(!still_ours(&r), "pgid {pgid}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.group"), forged.line()).unwrap();
        assert_eq!(reap(dir.path(), Duration::from_millis(10)).await, 0);
        assert!(!dir.path().join("x.group").exists(), "the record is forgotten");
    }

    #[tokio::test]
    async fn a_group_that_ignores_term_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "trap '' TERM; sleep 300 & wait"])
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap() as i32;
        // Let the shell set its trap and start its child.
        for _ in 0..100 {
            if members(pid).len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let path = record_path(dir.path(), "a1");
        let rec = record(&path, pid).unwrap();
        assert!(still_ours(&rec));
        assert_eq!(reap(dir.path(), Duration::from_millis(300)).await, 1);
        let _ = child.wait().await;
        for _ in 0..100 {
            if members(pid).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(members(pid).is_empty(), "nothing of the group is left");
        assert!(!path.exists());
    }
}
