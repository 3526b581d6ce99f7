//! Text rendering of deployments for the terminal.

use std::collections::HashMap;

use drover_types::{Deployment, LogLine, TaskSpec};

fn task_label(spec: &TaskSpec) -> String {
    match spec {
        TaskSpec::Run { command, .. } => match command {
            drover_types::CommandSpec::Shell(s) => format!("run `{s}`"),
            drover_types::CommandSpec::Exec(v) => format!("run {v:?}"),
        },
        TaskSpec::HttpCheck { url, expect_status, .. } => format!("http-check {url} → {expect_status}"),
        TaskSpec::Webhook { url, method, auth_profile, .. } => format!(
            "webhook {} {url}{}",
            method.as_deref().unwrap_or("POST"),
            auth_profile.as_deref().map(|p| format!(" (profile {p})")).unwrap_or_default()
        ),
        TaskSpec::Approval { role, approvals, allow_self_approval } => {
            let mut parts = Vec::new();
            if let Some(r) = role {
                parts.push(format!("role {r}"));
            }
            if let Some(n) = approvals.filter(|n| *n > 1) {
                parts.push(format!("{n} approvers"));
            }
            if *allow_self_approval == Some(false) {
                parts.push("not by the starter".into());
            }
            if parts.is_empty() { "approval".into() } else { format!("approval ({})", parts.join(", ")) }
        }
        TaskSpec::Wait { duration } => format!("wait {duration}"),
        other => other.kind().to_string(),
    }
}

/// The full view of `drover status ID`.
pub fn deployment(d: &Deployment) -> String {
    let mut s = format!(
        "deployment {}  {} {}  pipeline {}  {}\ncreated {} by {}{}\n",
        d.id,
        d.application,
        d.version,
        d.pipeline,
        d.status,
        d.created_at,
        d.created_by,
        d.finished_at.map(|f| format!(", finished {f}")).unwrap_or_default()
    );
    if let Some(m) = &d.message {
        s.push_str(&format!("message: {m}\n"));
    }
    if let Some(r) = d.rollback_of {
        s.push_str(&format!("rollback of deployment {r}\n"));
    }
    for st in &d.stages {
        s.push_str(
            &format!("  stage {} ({}, {:?}): {}\n", st.name, st.environment, st.progression, st.status)
                .replace("Automatic", "automatic")
                .replace("Manual", "manual"),
        );
        for t in &st.tasks {
            let who = t.agent.as_ref().map(|a| format!(" on {a}")).unwrap_or_default();
            let by = t.decided_by.as_ref().map(|a| format!(" by {a}")).unwrap_or_default();
            s.push_str(&format!("    {}. {:<40} {}{who}{by}\n", t.index + 1, task_label(&t.spec), t.status));
            if let Some(m) = &t.message {
                for line in m.lines().take(12) {
                    s.push_str(&format!("       {line}\n"));
                }
            }
        }
    }
    s
}

/// Prints only what changed between successive views.
#[derive(Default)]
pub struct Follower {
    seen: HashMap<(usize, usize), String>,
    status: Option<String>,
}

impl Follower {
    pub fn changes(&mut self, d: &Deployment) -> Vec<String> {
        let mut out = Vec::new();
        for (si, st) in d.stages.iter().enumerate() {
            for t in &st.tasks {
                let key = (si, t.index);
                let now = t.status.as_str().to_string();
                if self.seen.get(&key) != Some(&now) {
                    if t.status != drover_types::TaskStatus::Pending {
                        let who = t.agent.as_ref().map(|a| format!(" on {a}")).unwrap_or_default();
                        let msg = t
                            .message
                            .as_ref()
                            .map(|m| format!(": {}", m.lines().next().unwrap_or("")))
                            .unwrap_or_default();
                        out.push(format!("[{}] {} → {}{who}{msg}", st.name, task_label(&t.spec), now));
                    }
                    self.seen.insert(key, now);
                }
            }
        }
        let status = d.status.as_str().to_string();
        if self.status.as_ref() != Some(&status) {
            let msg = d.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default();
            out.push(format!("deployment {} is {status}{msg}", d.id));
            self.status = Some(status);
        }
        out
    }

    pub fn log_line(&self, l: &LogLine, d: Option<&Deployment>) -> String {
        let stage = d.and_then(|d| d.stages.get(l.stage_index)).map(|s| s.name.as_str()).unwrap_or("?");
        format!("[{stage}]   | {}", l.line)
    }
}
