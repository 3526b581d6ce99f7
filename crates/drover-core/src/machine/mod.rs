//! The deployment state machine. Pure: it changes a [`DeploymentState`] in memory and records the
//! side effects it needs (stage lock, agents to wake); the engine commits the result atomically
//! together with the events derived from the difference ([`diff_events`]).

use std::collections::BTreeMap;
use std::time::Duration;

use drover_types::agent::Outcome;
use drover_types::{Action, DeploymentStatus as D, Progression, TaskSpec, TaskStatus as T, Timestamp};
use serde_json::json;

use crate::model::DeploymentState;
use crate::{Error, Result};

/// Who runs orchestrator-side tasks (webhooks), in place of an agent name.
pub const ORCHESTRATOR: &str = "orchestrator";
/// A webhook call's limit when the task gives none.
pub const WEBHOOK_DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Side effects a transition asks for; the engine performs them in the same commit (stage lock)
/// or right after it (wake-ups).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    pub acquire_stage: Option<usize>,
    pub release_stage: Option<usize>,
}

/// What the engine knows about the deployment's pipeline when it steps it.
pub trait StageGate {
    /// May this deployment enter `stage` now (stage free, nobody older waiting for it)?
    fn can_enter(&self, deployment_id: i64, stage: usize) -> bool;
    /// The registered agents of `environment` with their labels, for a fleet stage that
    /// chooses its targets; `None` when not known here (the machine then waits).
    fn agents(&self, _environment: &str) -> Option<Vec<(String, BTreeMap<String, String>)>> {
        None
    }
}

impl<F: Fn(i64, usize) -> bool> StageGate for F {
    fn can_enter(&self, deployment_id: i64, stage: usize) -> bool {
        self(deployment_id, stage)
    }
}

/// A new event to append with the commit.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

fn release(st: &mut DeploymentState, fx: &mut Effects) {
    if st.deployment.holds_stage {
        st.deployment.holds_stage = false;
        fx.release_stage = Some(st.deployment.stage_index);
    }
}

/// Every task that has not ended (or failed) is aborted: no lease, no deadline.
fn abort_open_tasks(st: &mut DeploymentState, now: Timestamp) {
    for t in st.tasks.iter_mut() {
        if matches!(t.status, T::Ready | T::InProgress | T::PendingInput | T::Failed) {
            t.status = T::Aborted;
            t.finished_at = Some(now);
            t.lease_until = None;
            t.due_at = None;
        }
    }
}

fn finish(st: &mut DeploymentState, status: D, now: Timestamp, fx: &mut Effects) {
    release(st, fx);
    st.deployment.status = status;
    st.deployment.finished_at = Some(now);
}

/// Moves the deployment forward as far as it can go without outside input.
pub fn advance(st: &mut DeploymentState, now: Timestamp, gate: &dyn StageGate, fx: &mut Effects) {
    // Bounded: each iteration either breaks or passes a task/stage.
    for _ in 0..(st.tasks.len() * 4 + st.deployment.spec.stages.len() * 4 + 8) {
        let s = st.deployment.stage_index;
        match st.deployment.status {
            D::Queued => {
                if s >= st.deployment.spec.stages.len() {
                    finish(st, D::Completed, now, fx);
                    return;
                }
                if !gate.can_enter(st.deployment.id, s) {
                    return;
                }
                st.deployment.status = D::InProgress;
                st.deployment.holds_stage = true;
                fx.acquire_stage = Some(s);
            }
            D::InProgress => {
                let Some(i) = st.current_task_index() else {
                    // Stage done.
                    release(st, fx);
                    let next = s + 1;
                    if next >= st.deployment.spec.stages.len() {
                        finish(st, D::Completed, now, fx);
                        st.deployment.message = None;
                        return;
                    }
                    st.deployment.stage_index = next;
                    if st.deployment.spec.stages[next].progression == Progression::Manual {
                        st.deployment.status = D::PendingPromotion;
                        return;
                    }
                    st.deployment.status = D::Queued;
                    continue;
                };
                if st.deployment.spec.stages[s].is_fleet() && st.tasks[i].spec.runs_on_agent() {
                    match fleet::step(st, now, gate) {
                        fleet::Step::Passed => continue,
                        fleet::Step::Wait | fleet::Step::Stopped => return,
                    }
                }
                let label = st.tasks[i].label(&st.deployment.spec);
                let dispatch = st.deployment.spec.stages[s].dispatch_timeout();
                let t = &mut st.tasks[i];
                match t.status {
                    T::Pending => t.status = T::Ready,
                    T::Ready => match &t.spec {
                        TaskSpec::Approval { timeout, .. } => {
                            t.status = T::PendingInput;
                            t.started_at = Some(now);
                            t.due_at = timeout.map(|d| now.plus(d.0));
                        }
                        TaskSpec::Wait { duration } => {
                            t.status = T::InProgress;
                            t.started_at = Some(now);
                            t.due_at = Some(now.plus(duration.0));
                            return;
                        }
                        TaskSpec::Webhook { timeout, .. } => {
                            // The orchestrator makes the call (the engine starts it after the
                            // commit); the lease covers a crash of the orchestrator meanwhile.
                            let limit = timeout.map(|t| t.0).unwrap_or(WEBHOOK_DEFAULT_TIMEOUT);
                            t.status = T::InProgress;
                            t.attempt += 1;
                            t.attempt_id = Some(format!(
                                "wh-{}-{}-{}-{}",
                                st.deployment.id, t.stage_index, t.task_index, t.attempt
                            ));
                            t.agent = Some(ORCHESTRATOR.into());
                            t.lease_until = Some(now.plus(limit + std::time::Duration::from_secs(30)));
                            t.started_at = Some(now);
                            t.finished_at = None;
                            t.exit_code = None;
                            t.message = None;
                            return;
                        }
                        _ => {
                            // An agent claims it, before the stage's dispatch timeout.
                            if t.due_at.is_none() {
                                t.due_at = Some(now.plus(dispatch));
                            }
                            return;
                        }
                    },
                    T::InProgress => {
                        if let (TaskSpec::Wait { .. }, Some(due)) = (&t.spec, t.due_at)
                            && due <= now
                        {
                            t.status = T::Completed;
                            t.finished_at = Some(now);
                            t.due_at = None;
                            continue;
                        }
                        return;
                    }
                    T::PendingInput => {
                        if let (None, TaskSpec::Approval { timeout: Some(d), .. }) = (t.due_at, &t.spec) {
                            t.due_at = Some(now.plus(d.0)); // resumed after a pause
                        }
                        let msg = waiting_for_approval(t, &label);
                        st.deployment.status = D::PendingInput;
                        st.deployment.message = Some(msg);
                        return;
                    }
                    T::Failed => {
                        let why = t.message.clone().unwrap_or_else(|| "failed".into());
                        st.deployment.status = D::Error;
                        st.deployment.message = Some(format!("{label} failed: {why}"));
                        return;
                    }
                    T::Rejected => {
                        let who = t.decided_by.clone().unwrap_or_default();
                        let why = t.comment.clone().map(|c| format!(": {c}")).unwrap_or_default();
                        st.deployment.message = Some(format!("{label} rejected by {who}{why}"));
                        finish(st, D::Failed, now, fx);
                        return;
                    }
                    T::Aborted | T::Completed | T::Skipped => return,
                }
            }
            D::PendingInput => {
                // Back to in_progress once nothing waits for input any more.
                match st.current_task_index() {
                    Some(i) if st.tasks[i].status == T::PendingInput => return,
                    _ => {
                        st.deployment.status = D::InProgress;
                        st.deployment.message = None;
                    }
                }
            }
            _ => return,
        }
    }
}

/// The terms of an attempt: its lease (extended by heartbeats) and how long past the task's
/// timeout the orchestrator waits for the agent before failing it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub lease: Duration,
    pub grace: Duration,
}

impl Timing {
    pub const fn new(lease: Duration, grace: Duration) -> Timing {
        Timing { lease, grace }
    }
}

/// Hands the current task to an agent as a new attempt.
/// `at` is the row: (stage, task, the fleet agent it is for).
pub fn claim(
    st: &mut DeploymentState,
    at: (usize, usize, Option<&str>),
    agent: &str,
    attempt_id: &str,
    now: Timestamp,
    timing: Timing,
) -> Result<()> {
    let Timing { lease, grace } = timing;
    let (stage, task, target) = at;
    let current = st.current_task_index();
    let in_progress = st.deployment.status == D::InProgress && st.deployment.stage_index == stage;
    let fleet = st.deployment.spec.stages.get(stage).is_some_and(|s| s.is_fleet());
    let Some(t) = st.row_mut(stage, task, target) else {
        return Err(Error::NotFound("no such task".into()));
    };
    // A fleet stage's attempts are its agents' own; the others' go to any agent of the environment.
    let whose = match target {
        Some(a) => a == agent,
        None => !fleet,
    };
    let is_current = current.is_some();
    if !in_progress || !is_current || !whose || t.status != T::Ready || !t.spec.runs_on_agent() {
        return Err(Error::InvalidState("task is not ready for an agent".into()));
    }
    t.status = T::InProgress;
    t.attempt += 1;
    t.attempt_id = Some(attempt_id.to_string());
    t.agent = Some(agent.to_string());
    t.lease_until = Some(now.plus(lease));
    // The agent stops the task at its timeout; the orchestrator gives up `grace` later.
    t.due_at = t.spec.agent_timeout().map(|d| now.plus(d + grace));
    t.started_at = Some(now);
    t.finished_at = None;
    t.exit_code = None;
    t.message = None;
    Ok(())
}

/// Result of [`record_result`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultStatus {
    Recorded,
    /// The same attempt already has a result.
    Duplicate,
    /// The attempt is no longer current (aborted, lost, retried).
    Stale,
}

pub fn record_result(
    st: &mut DeploymentState,
    attempt_id: &str,
    outcome: Outcome,
    exit_code: Option<i32>,
    message: Option<String>,
    now: Timestamp,
) -> Result<ResultStatus> {
    let Some(t) = st.tasks.iter_mut().find(|t| t.attempt_id.as_deref() == Some(attempt_id)) else {
        return Ok(ResultStatus::Stale);
    };
    match t.status {
        T::InProgress => {}
        T::Completed | T::Failed => return Ok(ResultStatus::Duplicate),
        _ => return Ok(ResultStatus::Stale),
    }
    t.status = match outcome {
        Outcome::Completed => T::Completed,
        Outcome::Failed => T::Failed,
    };
    t.exit_code = exit_code;
    t.message = message;
    t.finished_at = Some(now);
    t.lease_until = None;
    t.due_at = None;
    Ok(ResultStatus::Recorded)
}

/// Fails the attempts an agent holds because its credentials stopped working (client disabled,
/// tokens revoked, agent deleted); returns how many.
pub fn fail_agent_attempts(st: &mut DeploymentState, agent: &str, why: &str, now: Timestamp) -> usize {
    let spec = st.deployment.spec.clone();
    let mut n = 0;
    for t in st.tasks.iter_mut() {
        if t.status == T::InProgress && t.agent.as_deref() == Some(agent) {
            t.message = Some(format!(
                "agent {agent} was cut off during {} (attempt {}): {why}",
                t.label(&spec),
                t.attempt_id.as_deref().unwrap_or("?")
            ));
            t.status = T::Failed;
            t.finished_at = Some(now);
            t.lease_until = None;
            t.due_at = None;
            n += 1;
        }
    }
    n
}

/// Fails every agent attempt whose lease ran out; returns how many.
pub fn expire_leases(st: &mut DeploymentState, now: Timestamp) -> usize {
    let spec = st.deployment.spec.clone();
    let mut n = 0;
    for t in st.tasks.iter_mut() {
        if t.status == T::InProgress && t.lease_until.is_some_and(|l| l < now) {
            let agent = t.agent.clone().unwrap_or_else(|| "?".into());
            t.message = Some(if agent == ORCHESTRATOR {
                format!(
                    "the orchestrator stopped during {} (attempt {}), so the call's outcome is unknown; retry the task",
                    t.label(&spec),
                    t.attempt_id.as_deref().unwrap_or("?")
                )
            } else {
                format!(
                    "agent {agent} stopped sending heartbeats during {} (attempt {}); it may have crashed or lost its connection",
                    t.label(&spec),
                    t.attempt_id.as_deref().unwrap_or("?")
                )
            });
            t.status = T::Failed;
            t.finished_at = Some(now);
            t.lease_until = None;
            t.due_at = None;
            n += 1;
        }
    }
    n
}

/// The prefix of a paused deployment's message, before the name of who paused it.
pub const PAUSED_BY: &str = "paused by ";

/// Who paused a paused deployment.
pub fn paused_by(d: &crate::model::DeploymentRecord) -> Option<&str> {
    (d.status == D::Paused).then(|| d.message.as_deref().and_then(|m| m.strip_prefix(PAUSED_BY))).flatten()
}

/// Ends what is past its deadline (`due_at`): a task for an agent nobody claimed within the
/// stage's dispatch timeout, and one an agent runs past its timeout plus the grace, fail (the
/// agent's next heartbeat tells it to stop); an undecided approval past its `timeout` is
/// rejected or aborts the deployment (`on_timeout`). Returns what it ended, as sentences.
pub fn expire_deadlines(st: &mut DeploymentState, now: Timestamp, fx: &mut Effects) -> Vec<String> {
    let spec = st.deployment.spec.clone();
    let status = st.deployment.status;
    let mut ended = Vec::new();
    let mut abort = None;
    for t in st.tasks.iter_mut() {
        let Some(due) = t.due_at.filter(|d| *d <= now) else { continue };
        let label = t.label(&spec);
        match (t.status, &t.spec) {
            (T::Ready, s) if s.runs_on_agent() && status == D::InProgress => {
                let limit = spec.stages.get(t.stage_index).map(|s| s.dispatch_timeout()).unwrap_or_default();
                let msg = match &t.target {
                    Some(a) => format!(
                        "agent {a} did not claim {label} within {} (the stage's dispatch_timeout); is it running? Retry, or skip or abort",
                        humantime::format_duration(limit)
                    ),
                    None => format!(
                        "no agent of environment {} claimed {label} within {} (the stage's dispatch_timeout); start an agent for {} and retry, or skip or abort",
                        t.environment,
                        humantime::format_duration(limit),
                        t.environment
                    ),
                };
                t.status = T::Failed;
                t.message = Some(msg.clone());
                t.finished_at = Some(now);
                t.due_at = None;
                ended.push(msg);
            }
            (T::InProgress, s) if s.runs_on_agent() => {
                let limit = s.agent_timeout().unwrap_or_default();
                let agent = t.agent.clone().unwrap_or_else(|| "?".into());
                let msg = format!(
                    "{label} ran past its timeout of {} on agent {agent} (attempt {}); the orchestrator stopped waiting at {due} and told the agent to stop",
                    humantime::format_duration(limit),
                    t.attempt_id.as_deref().unwrap_or("?")
                );
                t.status = T::Failed;
                t.message = Some(msg.clone());
                t.finished_at = Some(now);
                t.lease_until = None;
                t.due_at = None;
                ended.push(msg);
            }
            (T::PendingInput, TaskSpec::Approval { timeout, on_timeout, .. }) if status == D::PendingInput => {
                let limit = timeout.map(|d| humantime::format_duration(d.0).to_string()).unwrap_or_default();
                let why = format!("no decision within {limit} (the approval's timeout)");
                t.due_at = None;
                if *on_timeout == Some(drover_types::OnTimeout::Abort) {
                    abort = Some(format!("aborted: {label} had {why}"));
                } else {
                    t.status = T::Rejected;
                    t.decided_by = Some("system".into());
                    t.comment = Some(why.clone());
                    t.finished_at = Some(now);
                    // advance() finishes the deployment as failed.
                    st.deployment.status = D::InProgress;
                }
                ended.push(format!("{label}: {why}"));
            }
            _ => {}
        }
    }
    if let Some(msg) = abort {
        abort_open_tasks(st, now);
        st.deployment.message = Some(msg);
        finish(st, D::Aborted, now, fx);
    }
    ended
}

/// Who asks for an action, and what they may decide.
pub struct Actor<'a> {
    /// As the deployment's `created_by` spells principals (`alice`, `client:ci`).
    pub name: &'a str,
    /// The roles the actor holds on the deployment's application (directly or through access
    /// groups covering it): an approval's `role` is checked against these.
    pub roles: &'a [String],
    /// Holds `approval.override` on the deployment's application.
    pub may_override: bool,
}

/// What comes with an action.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActionInput {
    pub reason: Option<String>,
    /// Decide an approval as an override rather than as one of its approvers.
    pub override_approval: bool,
}

/// The sentence of a deployment waiting at an approval task.
fn waiting_for_approval(t: &crate::model::TaskRecord, label: &str) -> String {
    let TaskSpec::Approval { role, approvals, .. } = &t.spec else {
        return format!("{label} waits for input");
    };
    let by = role.as_ref().map(|r| format!(" by role {r}")).unwrap_or_default();
    let needed = approvals.unwrap_or(1).max(1);
    if needed > 1 {
        let have = approving_votes(t);
        format!("{label} waits for approval{by} ({have} of {needed} approvals)")
    } else {
        format!("{label} waits for approval{by}")
    }
}

/// Distinct approvers so far (overrides complete a task at once and are not counted here).
fn approving_votes(t: &crate::model::TaskRecord) -> u32 {
    let mut by: Vec<&str> =
        t.approvals.iter().filter(|v| v.decision == "approve" && !v.overridden).map(|v| v.by.as_str()).collect();
    by.sort_unstable();
    by.dedup();
    by.len() as u32
}

/// Decides the current approval task: approve or reject, as one of its approvers or by override.
fn decide(
    st: &mut DeploymentState,
    approve: bool,
    actor: &Actor<'_>,
    input: ActionInput,
    now: Timestamp,
) -> Result<()> {
    let created_by = st.deployment.created_by.clone();
    let Some(i) = st.current_task_index() else {
        return Err(Error::InvalidState("no task waits for a decision".into()));
    };
    let label = st.tasks[i].label(&st.deployment.spec);
    let t = &mut st.tasks[i];
    let TaskSpec::Approval { role, approvals, allow_self_approval, .. } = t.spec.clone() else {
        return Err(Error::InvalidState("the current task is not an approval".into()));
    };
    if t.status != T::PendingInput {
        return Err(Error::InvalidState(format!("the approval is {}, not waiting for a decision", t.status)));
    }
    let reason = input.reason.filter(|r| !r.trim().is_empty());
    let decision = if approve { "approve" } else { "reject" };
    let overridden = input.override_approval;
    if overridden {
        if !actor.may_override {
            return Err(Error::Forbidden("overriding an approval needs the privilege approval.override".into()));
        }
        if reason.is_none() {
            return Err(Error::Invalid("an override needs a reason (it is recorded with the decision)".into()));
        }
    } else {
        if let Some(role) = &role
            && !actor.roles.iter().any(|r| r == role)
        {
            return Err(Error::Forbidden(format!("this approval needs the role {role}")));
        }
        if approve && allow_self_approval == Some(false) && actor.name == created_by {
            return Err(Error::Forbidden(format!(
                "{} started this deployment and this approval does not allow self-approval; another approver must decide",
                actor.name
            )));
        }
        if approve && t.approvals.iter().any(|v| v.by == actor.name && v.decision == "approve" && !v.overridden) {
            let needed = approvals.unwrap_or(1).max(1);
            return Err(Error::Conflict(format!(
                "{} has approved already; this approval needs {needed} distinct approvers ({} so far)",
                actor.name,
                approving_votes(t)
            )));
        }
    }
    t.approvals.push(drover_types::ApprovalVote {
        by: actor.name.to_string(),
        at: now,
        decision: decision.into(),
        comment: reason.clone(),
        overridden,
    });
    let needed = approvals.unwrap_or(1).max(1);
    if !approve || overridden || approving_votes(t) >= needed {
        t.status = if approve { T::Completed } else { T::Rejected };
        t.due_at = None;
        t.decided_by = Some(actor.name.to_string());
        t.comment = reason;
        t.finished_at = Some(now);
        // advance() moves on (approved) or finishes the deployment as failed (rejected).
        st.deployment.status = D::InProgress;
        st.deployment.message = None;
    } else {
        let msg = waiting_for_approval(t, &label);
        st.deployment.message = Some(msg);
    }
    Ok(())
}

/// The actions a deployment in `status` answers to ([`apply_action`]'s rules, and rollback's in
/// the engine), for pages that offer them; each is still checked when it is taken.
pub fn actions_in(status: D) -> &'static [Action] {
    match status {
        D::Queued | D::InProgress => &[Action::Pause, Action::Abort],
        D::PendingInput => &[Action::Approve, Action::Reject, Action::Pause, Action::Abort],
        D::Paused => &[Action::Resume, Action::Abort],
        D::PendingPromotion => &[Action::Promote, Action::Rollback, Action::Abort],
        D::Error => &[Action::Retry, Action::Skip, Action::Rollback, Action::Abort],
        D::Completed | D::Failed => &[Action::Rollback],
        D::RollingBack | D::Aborted => &[],
    }
}

/// Applies an operator action (except rollback and promotion's superseding, which span
/// deployments and live in the engine). The caller runs [`advance`] afterwards.
pub fn apply_action(
    st: &mut DeploymentState,
    action: Action,
    actor: &Actor<'_>,
    input: ActionInput,
    now: Timestamp,
    fx: &mut Effects,
) -> Result<()> {
    let status = st.deployment.status;
    let bad = || Error::InvalidState(format!("cannot {action} deployment {} while it is {status}", st.deployment.id));
    if input.override_approval && !matches!(action, Action::Approve | Action::Reject) {
        return Err(Error::Invalid("only approve and reject can be overrides".into()));
    }
    let reason = input.reason.clone();
    match action {
        Action::Abort => {
            if status.is_terminal() {
                return Err(bad());
            }
            abort_open_tasks(st, now);
            st.deployment.message =
                Some(format!("aborted by {}{}", actor.name, reason.map(|r| format!(": {r}")).unwrap_or_default()));
            finish(st, D::Aborted, now, fx);
        }
        Action::Pause => {
            if !matches!(status, D::Queued | D::InProgress | D::PendingInput) {
                return Err(bad());
            }
            st.deployment.status = D::Paused;
            st.deployment.message = Some(format!("{PAUSED_BY}{}", actor.name));
            // No agent may claim a task, and nobody may decide an approval, while paused: their
            // timeouts start again on resume.
            for t in st.tasks.iter_mut() {
                if (t.status == T::Ready && t.spec.runs_on_agent()) || t.status == T::PendingInput {
                    t.due_at = None;
                }
            }
        }
        Action::Resume => {
            if status != D::Paused {
                return Err(bad());
            }
            st.deployment.message = None;
            st.deployment.status = if st.deployment.holds_stage { D::InProgress } else { D::Queued };
        }
        // Retry and skip apply to a failed task only: never to a pending approval (that is
        // answered by approve/reject) nor to a task that is running.
        Action::Retry | Action::Skip => {
            if status != D::Error {
                return Err(bad());
            }
            let i = st.current_task_index().ok_or_else(bad)?;
            if st.tasks[i].status != T::Failed {
                return Err(bad());
            }
            let s = st.deployment.stage_index;
            if st.deployment.spec.stages[s].is_fleet() && st.tasks[i].spec.runs_on_agent() {
                fleet::retry_or_skip(st, i, action == Action::Skip, actor.name, reason, now);
                st.deployment.status = D::InProgress;
                st.deployment.message = None;
                return Ok(());
            }
            let t = &mut st.tasks[i];
            if action == Action::Retry {
                t.reset_for_retry();
            } else {
                t.status = T::Skipped;
                t.decided_by = Some(actor.name.to_string());
                t.comment = reason;
                t.finished_at = Some(now);
            }
            st.deployment.status = D::InProgress;
            st.deployment.message = None;
        }
        Action::Approve | Action::Reject => {
            if status != D::PendingInput {
                return Err(bad());
            }
            decide(st, action == Action::Approve, actor, input, now)?;
        }
        Action::Promote => {
            if status != D::PendingPromotion {
                return Err(bad());
            }
            st.deployment.status = D::Queued;
            st.deployment.message = Some(format!("promoted by {}", actor.name));
        }
        Action::Rollback => return Err(Error::Invalid("rollback is handled by the engine".into())),
    }
    Ok(())
}

/// Marks a deployment that is being rolled back: it stops where it is and gives up its stage.
pub fn begin_rollback(st: &mut DeploymentState, rollback_id: i64, version: &str, now: Timestamp, fx: &mut Effects) {
    if st.deployment.status.is_terminal() {
        return;
    }
    abort_open_tasks(st, now);
    release(st, fx);
    st.deployment.status = D::RollingBack;
    st.deployment.message = Some(format!("rolling back to version {version} (deployment {rollback_id})"));
}

/// Ends a deployment in `rolling_back` once its rollback deployment has finished.
pub fn end_rollback(st: &mut DeploymentState, rollback_id: i64, outcome: D, now: Timestamp, fx: &mut Effects) {
    if st.deployment.status != D::RollingBack {
        return;
    }
    st.deployment.message = Some(format!("rolled back by deployment {rollback_id}, which ended {outcome}"));
    finish(st, D::Aborted, now, fx);
}

/// Events describing what changed between two states of the same deployment.
pub fn diff_events(old: Option<&DeploymentState>, new: &DeploymentState, actor: &str) -> Vec<NewEvent> {
    let mut out = Vec::new();
    let d = &new.deployment;
    let old_status = old.map(|o| o.deployment.status);
    if old_status != Some(d.status) {
        out.push(NewEvent {
            kind: "deployment.status".into(),
            actor: actor.to_string(),
            detail: json!({
                "from": old_status.map(|s| s.as_str()),
                "to": d.status.as_str(),
                "stage_index": d.stage_index,
                "message": d.message,
            }),
        });
    }
    let same_rows = old.is_some_and(|o| o.tasks.len() == new.tasks.len());
    for (k, t) in new.tasks.iter().enumerate() {
        let before = old.and_then(|o| match o.tasks.get(k) {
            Some(x) if same_rows && x.key() == t.key() => Some(x),
            _ => o.tasks.iter().find(|x| x.key() == t.key()),
        });
        let votes_before = before.map(|b| b.approvals.len()).unwrap_or(0);
        for v in t.approvals.iter().skip(votes_before) {
            out.push(NewEvent {
                kind: "task.approval".into(),
                actor: actor.to_string(),
                detail: json!({
                    "stage_index": t.stage_index,
                    "task_index": t.task_index,
                    "by": v.by,
                    "decision": v.decision,
                    "comment": v.comment,
                    "override": v.overridden,
                }),
            });
        }
        if before.map(|b| b.status) != Some(t.status) {
            out.push(NewEvent {
                kind: "task.status".into(),
                actor: actor.to_string(),
                detail: json!({
                    "stage_index": t.stage_index,
                    "task_index": t.task_index,
                    "target": t.target,
                    "type": t.spec.kind(),
                    "from": before.map(|b| b.status.as_str()),
                    "to": t.status.as_str(),
                    "attempt_id": t.attempt_id,
                    "agent": t.agent,
                    "message": t.message,
                }),
            });
        }
    }
    out
}

mod fleet;
pub use fleet::{failures as fleet_failures, segment, select};

#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
