//! Text rendering of deployments for the terminal.

use std::collections::HashMap;

use drover_types::{Action, Deployment, LogLine, TaskSpec};

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
        TaskSpec::Approval { role, approvals, allow_self_approval, timeout, on_timeout } => {
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
            if let Some(t) = timeout {
                let then = if *on_timeout == Some(drover_types::OnTimeout::Abort) { "abort" } else { "reject" };
                parts.push(format!("{then} after {t}"));
            }
            if parts.is_empty() { "approval".into() } else { format!("approval ({})", parts.join(", ")) }
        }
        TaskSpec::Wait { duration } => format!("wait {duration}"),
        other => other.kind().to_string(),
    }
}

/// Text a task (or anyone) wrote, made safe for a terminal: control characters (ESC, BEL, the
/// C1 set, DEL, a carriage return that would overwrite the line...) are shown as visible escapes
/// (`\x1b`), tabs kept. A task's output can then neither retitle nor repaint the operator's
/// terminal, nor hide a line behind another.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    // Controls, and the bidirectional overrides that reorder what a line seems to say.
    let hidden =
        |c: char| (c.is_control() && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if hidden(c) && (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
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
        s.push_str(&format!("message: {}\n", visible(m)));
    }
    if let Some(r) = d.rollback_of {
        s.push_str(&format!("rollback of deployment {r}\n"));
    }
    if let Some(w) = &d.waiting_for {
        s.push_str(&format!("waiting: {}\n", w.sentence));
        for c in next_commands(d) {
            s.push_str(&format!("  to continue: {c}\n"));
        }
    }
    for st in &d.stages {
        let targets = if st.targets.is_one() { String::new() } else { format!(", {} agents", st.targets.as_str()) };
        s.push_str(
            &format!("  stage {} ({}, {:?}{targets}): {}\n", st.name, st.environment, st.progression, st.status)
                .replace("Automatic", "automatic")
                .replace("Manual", "manual"),
        );
        for t in &st.tasks {
            let who = t.agent.as_ref().map(|a| format!(" on {a}")).unwrap_or_default();
            let by = t.decided_by.as_ref().map(|a| format!(" by {a}")).unwrap_or_default();
            s.push_str(&format!("    {}. {:<40} {}{who}{by}\n", t.index + 1, task_label(&t.spec), t.status));
            if let Some(m) = &t.message {
                for line in m.lines().take(12) {
                    s.push_str(&format!("       {}\n", visible(line)));
                }
            }
            // A fleet stage: one line per agent (the first 50; the rest counted).
            for r in t.targets.iter().take(50) {
                let agent = r.agent.as_deref().unwrap_or("?");
                let batch = r.batch.map(|b| format!("batch {b}")).unwrap_or_default();
                let why = r
                    .message
                    .as_deref()
                    .and_then(|m| m.lines().next())
                    .map(|m| format!("  {}", visible(m)))
                    .unwrap_or_default();
                s.push_str(&format!("       {agent:<24} {batch:<9} {}{why}\n", r.status));
            }
            if t.targets.len() > 50 {
                s.push_str(&format!("       ... and {} more agents\n", t.targets.len() - 50));
            }
        }
    }
    s
}

/// The commands that would move a waiting deployment on (for the caller to choose from; the
/// server still checks who may).
pub fn next_commands(d: &Deployment) -> Vec<String> {
    use drover_types::{AgentAvailability, WaitReason as W};
    let Some(w) = &d.waiting_for else { return vec![] };
    let on = |id: i64, actions: &[Action]| actions.iter().map(|a| format!("drover {a} {id}")).collect();
    match &w.reason {
        W::Promotion { .. } => vec![format!("drover promote {}", d.id)],
        W::Approval { .. } => vec![format!("drover approve {}", d.id), format!("drover reject {} --reason TEXT", d.id)],
        W::Paused { .. } => vec![format!("drover resume {}", d.id)],
        W::Error { actions, .. } => on(d.id, actions),
        W::Stage { deployment, actions, .. } if *deployment != d.id => on(*deployment, actions),
        W::Agent { environment, availability: AgentAvailability::NoneRegistered, .. } => {
            vec![format!("drover agents add NAME --environment {environment}  (then start `drover agent` on the host)")]
        }
        W::Agent { environment, availability: AgentAvailability::NoneOnline, .. } => {
            vec![format!("start `drover agent` for environment {environment}")]
        }
        W::Agent { agents: Some(seen), availability: AgentAvailability::PendingApproval, .. } => {
            seen.iter().map(|a| format!("drover agents approve {}", a.name)).collect()
        }
        _ => vec![],
    }
}

/// Prints only what changed between successive views.
#[derive(Default)]
pub struct Follower {
    seen: HashMap<(usize, usize), String>,
    status: Option<String>,
    waiting: Option<String>,
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
                            .map(|m| format!(": {}", visible(m.lines().next().unwrap_or(""))))
                            .unwrap_or_default();
                        out.push(format!("[{}] {} → {}{who}{msg}", st.name, task_label(&t.spec), now));
                    }
                    self.seen.insert(key, now);
                }
            }
        }
        let status = d.status.as_str().to_string();
        if self.status.as_ref() != Some(&status) {
            let msg = d.message.as_ref().map(|m| format!(" — {}", visible(m))).unwrap_or_default();
            out.push(format!("deployment {} is {status}{msg}", d.id));
            self.status = Some(status);
        }
        let waiting = d.waiting_for.as_ref().map(|w| w.sentence.clone());
        if waiting != self.waiting {
            if let Some(w) = &waiting {
                out.push(format!("  waiting: {w}"));
                for c in next_commands(d) {
                    out.push(format!("  to continue: {c}"));
                }
            }
            self.waiting = waiting;
        }
        out
    }

    pub fn log_line(&self, l: &LogLine, d: Option<&Deployment>) -> String {
        let stage = d.and_then(|d| d.stages.get(l.stage_index)).map(|s| s.name.as_str()).unwrap_or("?");
        match &l.agent {
            Some(a) => format!("[{stage} {a}]   | {}", visible(&l.line)),
            None => format!("[{stage}]   | {}", visible(&l.line)),
        }
    }
}

/// A line of `drover logs`: time, stage and task (and the agent, on a fleet stage), stream, text.
pub fn log_line(l: &LogLine, d: &Deployment) -> String {
    let stage = d.stages.get(l.stage_index).map(|s| s.name.as_str()).unwrap_or("?");
    let agent = l.agent.as_deref().map(|a| format!(" {a}")).unwrap_or_default();
    format!("{} [{stage} {}{agent}] {}: {}", l.ts, l.task_index + 1, l.stream, visible(&l.line))
}

pub fn operator_line(o: &drover_types::Operator) -> String {
    let state = if o.disabled {
        "disabled".to_string()
    } else if let Some(t) = o.locked_until {
        format!("locked until {t}")
    } else {
        "active".to_string()
    };
    format!("{:<20} {:<28} {:<24} {}", o.name, o.roles.join(","), o.email.as_deref().unwrap_or("-"), state)
}

pub fn client_line(c: &drover_types::Client) -> String {
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

/// The table of `drover deployments`.
pub fn deployments(v: &[Deployment]) -> String {
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
}

/// The table of `drover artifact list`.
pub fn artifacts(v: &[drover_types::Artifact]) -> String {
    let mut s = format!("{:<20} {:<16} {:>12}  SHA256\n", "APPLICATION", "VERSION", "SIZE");
    for a in v {
        s.push_str(&format!("{:<20} {:<16} {:>12}  {}\n", a.application, a.version, a.size, a.sha256));
    }
    s
}

/// The table of `drover agents`.
pub fn agents(v: &[drover_types::Agent]) -> String {
    let mut s = format!(
        "{:<24} {:<16} {:<9} {:<8} {:<10} {:<12} LAST SEEN\n",
        "NAME", "ENVIRONMENT", "STATUS", "ONLINE", "ISOLATION", "VERSION"
    );
    for a in v {
        let seen = a.last_seen_at.map(|t| t.to_string()).unwrap_or_else(|| "never".into());
        s.push_str(&format!(
            "{:<24} {:<16} {:<9} {:<8} {:<10} {:<12} {}\n",
            a.name,
            a.environment,
            a.status.as_str(),
            if a.online { "yes" } else { "no" },
            a.isolation.as_deref().unwrap_or("-"),
            a.version.as_deref().unwrap_or("-"),
            seen
        ));
    }
    s
}

/// The table of `drover keys list`.
pub fn keys(v: &[drover_types::SigningKey]) -> String {
    let mut s =
        format!("{:<18} {:<6} {:<8} {:<8} {:<24} CREATED\n", "KID", "ALG", "ACTIVE", "IN JWKS", "CERTIFICATE UNTIL");
    for k in v {
        s.push_str(&format!(
            "{:<18} {:<6} {:<8} {:<8} {:<24} {}{}\n",
            k.kid,
            k.alg,
            if k.active { "yes" } else { "no" },
            if k.in_jwks { "yes" } else { "no" },
            k.certificate.as_ref().map(|c| c.not_after.to_string()).unwrap_or_else(|| "-".into()),
            k.created_at,
            k.retired_at.map(|r| format!(" (retired {r})")).unwrap_or_default()
        ));
    }
    s
}

/// The table of `drover operators`.
pub fn operators(v: &[drover_types::Operator]) -> String {
    let mut s = format!("{:<20} {:<28} {:<24} STATE\n", "NAME", "ROLES", "EMAIL");
    for o in v {
        s.push_str(&operator_line(o));
        s.push('\n');
    }
    s
}

/// The table of `drover pipelines`.
pub fn pipelines(v: &[drover_types::Pipeline]) -> String {
    let mut s = format!("{:<24} {:<16} STAGES\n", "NAME", "APPLICATION");
    for p in v {
        let stages: Vec<_> = p.stages.iter().map(|s| s.name.as_str()).collect();
        s.push_str(&format!("{:<24} {:<16} {}\n", p.name, p.application, stages.join(" → ")));
    }
    s
}

fn duration_of(s: Option<f64>) -> String {
    match s.map(drover_types::report::readable_duration) {
        None => "-".into(),
        Some((v, "s")) => format!("{v:.0}s"),
        Some((v, "min")) => format!("{v:.1}m"),
        Some((v, "days")) => format!("{v:.1}d"),
        Some((v, unit)) => format!("{v:.1}{unit}"),
    }
}

fn percent(r: Option<f64>) -> String {
    r.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_else(|| "-".into())
}

pub fn report(r: &drover_types::report::PipelineReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let day = |t: drover_types::Timestamp| t.to_string().get(..10).unwrap_or_default().to_string();
    let _ = writeln!(out, "pipeline {} ({}), {} to {}", r.pipeline, r.application, day(r.from), day(r.to));
    let _ = writeln!(
        out,
        "deployments          {} started: {} completed, {} failed, {} aborted, {} rolled back{}",
        r.deployments,
        r.completed,
        r.failed,
        r.aborted,
        r.rolled_back,
        if r.truncated { " (the newest only: the range has more)" } else { "" }
    );
    let _ = writeln!(out, "deployment frequency {:.2} completed a day", r.deployments_per_day.unwrap_or(0.0));
    let _ = writeln!(
        out,
        "lead time            p50 {}  avg {}  max {}  ({} deployments; artifact pushed -> completed)",
        duration_of(r.lead_time.p50_secs),
        duration_of(r.lead_time.avg_secs),
        duration_of(r.lead_time.max_secs),
        r.lead_time.count
    );
    let _ = writeln!(out, "change failure rate  {}", percent(r.change_failure_rate));
    let _ = writeln!(
        out,
        "time to restore      p50 {}  max {}  ({} failures restored)",
        duration_of(r.time_to_restore.p50_secs),
        duration_of(r.time_to_restore.max_secs),
        r.time_to_restore.count
    );
    let _ = writeln!(out, "success rate         {}", percent(r.success_rate));
    let _ = writeln!(out, "\nstage                avg      p50      runs");
    for s in &r.stages {
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<8} {}",
            s.stage,
            duration_of(s.time.avg_secs),
            duration_of(s.time.p50_secs),
            s.time.count
        );
    }
    let _ = writeln!(out, "\ntask                         failures avg      runs");
    for t in &r.tasks {
        let _ = writeln!(
            out,
            "{:<28} {:<8} {:<8} {}",
            format!("{} task {} ({})", t.stage, t.task, t.kind),
            t.failures,
            duration_of(t.time.avg_secs),
            t.time.count
        );
    }
    out
}
