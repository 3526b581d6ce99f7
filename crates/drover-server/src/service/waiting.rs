//! `waiting_for`: why a deployment, and each of its tasks that has not ended, is where it is.
//! Computed when a deployment is read, from its state and the facts around it (who holds the
//! stage, which agents serve the environment, who may approve or promote); never stored.
//!
//! Agent names and last-seen times appear only for callers holding `agent.read`.

use std::collections::HashMap;

use drover_core::Result;
use drover_core::machine;
use drover_core::model::{DeploymentRecord, DeploymentState, TaskRecord};
use drover_core::rbac::{PrincipalKind, Privilege};
use drover_types::{
    Action, AgentAvailability, AgentSeen, Deployment, DeploymentStatus as D, TaskSpec, TaskStatus as T, Timestamp,
    WaitReason, WaitingFor,
};

use super::Ctx;

/// Agents looked at for one environment (the rest are counted, not listed).
const AGENTS_SHOWN: usize = 20;

/// Fills `waiting_for` in the view of a deployment that has not ended, and in its tasks.
pub async fn annotate(c: &Ctx<'_>, st: &DeploymentState, view: &mut Deployment) -> Result<()> {
    annotate_with(c, st, view, &mut Facts::default()).await
}

/// [`annotate`], sharing what it looked up (agents, approvers) across the deployments of one
/// request.
pub async fn annotate_with(c: &Ctx<'_>, st: &DeploymentState, view: &mut Deployment, facts: &mut Facts) -> Result<()> {
    let d = &st.deployment;
    if d.status.is_terminal() {
        return Ok(());
    }
    // Tasks first: the deployment's own reason is often its current task's.
    let current = st.current_task_index();
    let mut current_reason = None;
    for (i, t) in st.tasks.iter().enumerate() {
        if matches!(t.status, T::Completed | T::Skipped | T::Rejected | T::Aborted) {
            continue;
        }
        if t.target.is_some() {
            if let Some(w) = target_reason(c, st, t, facts).await?
                && let Some(own) = view.stages.get_mut(t.stage_index).and_then(|s| s.tasks.get_mut(t.task_index))
                && let Some(run) = own.targets.iter_mut().find(|r| r.agent == t.target)
            {
                run.waiting_for = Some(w);
            }
            continue;
        }
        if t.status == T::Failed && d.status != D::Error {
            continue;
        }
        let w = task_reason(c, st, i, facts).await?;
        if Some(i) == current {
            current_reason = w.clone();
        }
        if let Some(run) = view.stages.get_mut(t.stage_index).and_then(|s| s.tasks.get_mut(t.task_index)) {
            run.waiting_for = w;
        }
    }
    view.waiting_for = match d.status {
        D::Queued => queued(c, d).await?,
        D::PendingPromotion => Some(promotion(c, d)),
        D::Paused => Some(paused(d)),
        D::RollingBack => rollback(d),
        _ => current_reason,
    };
    Ok(())
}

/// What one request looked up already.
#[derive(Default)]
pub struct Facts {
    agents: HashMap<String, WaitReason>,
    approvers: HashMap<(String, Option<String>), usize>,
    registered: Option<Vec<drover_core::store::AgentRecord>>,
}

/// A fleet stage's task: its batch, who runs it, who has not claimed it, who failed.
fn fleet_reason(st: &DeploymentState, t: &TaskRecord, label: &str) -> WaitingFor {
    let d = &st.deployment;
    let spec = d.spec.stages.get(t.stage_index);
    let rows: Vec<&TaskRecord> = st
        .tasks
        .iter()
        .filter(|r| r.stage_index == t.stage_index && r.task_index == t.task_index && r.target.is_some())
        .collect();
    let name = |r: &&TaskRecord| r.target.clone().unwrap_or_default();
    let running: Vec<String> = rows.iter().filter(|r| r.status == T::InProgress).map(name).collect();
    let unclaimed: Vec<String> = rows.iter().filter(|r| r.status == T::Ready).map(name).collect();
    let failed: Vec<String> = machine::fleet_failures(st, t.stage_index).into_iter().map(|(n, _)| n).collect();
    let waiting = rows.iter().filter(|r| r.status == T::Pending && !failed.contains(&name(r))).count();
    let batches = rows.iter().filter_map(|r| r.batch).max().map(|b| b + 1).unwrap_or(1);
    let batch = rows.iter().filter(|r| !r.status.is_passed() && r.status != T::Failed).filter_map(|r| r.batch).min();
    let batch = batch.map(|b| b + 1).unwrap_or(batches);
    let max_failures = spec.map(|s| s.max_failures()).unwrap_or(0) as u32;
    let shown = |v: &[String]| {
        let mut s = v.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
        if v.len() > 10 {
            s.push_str(&format!(" and {} more", v.len() - 10));
        }
        s
    };
    let mut parts = vec![format!("batch {batch} of {batches}")];
    if !running.is_empty() {
        parts.push(format!("running on {}", shown(&running)));
    }
    if !unclaimed.is_empty() {
        parts.push(format!("not yet claimed by {}", shown(&unclaimed)));
    }
    if waiting > 0 {
        parts.push(format!("{waiting} agents wait for later batches"));
    }
    if !failed.is_empty() {
        parts.push(format!("failed on {} (max_failures {max_failures})", shown(&failed)));
    }
    WaitingFor {
        sentence: format!("{label}: {}", parts.join("; ")),
        reason: WaitReason::Fleet {
            stage: stage_name(d, t.stage_index),
            task_index: t.task_index,
            batch,
            batches,
            running,
            unclaimed,
            waiting,
            failed,
            max_failures,
        },
    }
}

/// A fleet stage's row for one agent: running, or not claimed yet by that agent.
async fn target_reason(
    c: &Ctx<'_>,
    st: &DeploymentState,
    t: &TaskRecord,
    facts: &mut Facts,
) -> Result<Option<WaitingFor>> {
    let label = t.label(&st.deployment.spec);
    let agent = t.target.clone().unwrap_or_default();
    Ok(Some(match t.status {
        T::Ready if st.deployment.status == D::Paused => paused(&st.deployment),
        T::Ready => {
            if facts.registered.is_none() {
                facts.registered = Some(c.state.store.list_agents().await?);
            }
            let known = facts.registered.as_ref().and_then(|v| v.iter().find(|a| a.name == agent));
            let online = known.is_some_and(|a| super::agents::is_online(c, a));
            let last_seen_at = known.and_then(|a| a.last_seen_at);
            let state = match (known, online, last_seen_at) {
                (None, _, _) => "it is no longer registered".to_string(),
                (Some(_), true, _) => "it claims it at its next poll".to_string(),
                (Some(_), false, Some(at)) => format!("it is offline, last seen {at}"),
                (Some(_), false, None) => "it has never been seen".to_string(),
            };
            let by = t.due_at.map(|d| format!("; it fails if not claimed by {d}")).unwrap_or_default();
            WaitingFor {
                sentence: format!("{label} waits for agent {agent}: {state}{by}"),
                reason: WaitReason::Claim { agent, online, last_seen_at, deadline: t.due_at },
            }
        }
        T::InProgress => {
            let by = t.due_at.map(|due| format!("; the orchestrator fails it if it has not ended by {due}"));
            WaitingFor {
                sentence: format!("{label} is running{}", by.unwrap_or_default()),
                reason: WaitReason::Running { agent, attempt_id: t.attempt_id.clone(), deadline: t.due_at },
            }
        }
        T::Failed if st.deployment.status == D::Error => {
            let message = t.message.clone().unwrap_or_else(|| "failed".into());
            WaitingFor {
                sentence: format!("{label} failed: {message}"),
                reason: WaitReason::Error {
                    stage: stage_name(&st.deployment, t.stage_index),
                    task_index: t.task_index,
                    message,
                    actions: vec![Action::Retry, Action::Skip, Action::Abort],
                },
            }
        }
        _ => return Ok(None),
    }))
}

fn stage_name(d: &DeploymentRecord, s: usize) -> String {
    d.spec.stages.get(s).map(|s| s.name.clone()).unwrap_or_else(|| format!("#{s}"))
}

fn list(actions: &[Action]) -> String {
    let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    match names.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

async fn task_reason(c: &Ctx<'_>, st: &DeploymentState, i: usize, facts: &mut Facts) -> Result<Option<WaitingFor>> {
    let d = &st.deployment;
    let t = &st.tasks[i];
    let label = t.label(&d.spec);
    let stage = stage_name(d, t.stage_index);
    let fleet = d.spec.stages.get(t.stage_index).is_some_and(|s| s.is_fleet()) && t.spec.runs_on_agent();
    if fleet && t.status == T::InProgress {
        if d.status == D::Paused {
            return Ok(Some(paused(d)));
        }
        return Ok(Some(fleet_reason(st, t, &label)));
    }
    Ok(Some(match t.status {
        T::Pending => {
            // The task before it, in this stage or the one before.
            let Some(prev) = st.tasks[..i].iter().rev().find(|p| p.target.is_none()) else {
                return Ok(None);
            };
            let prev_label = prev.label(&d.spec);
            WaitingFor {
                sentence: format!("{label} waits for {prev_label}"),
                reason: WaitReason::Task { stage: stage_name(d, prev.stage_index), task_index: prev.task_index },
            }
        }
        T::Ready if t.spec.runs_on_agent() => {
            if d.status == D::Paused {
                return Ok(Some(paused(d)));
            }
            let reason = match facts.agents.get(&t.environment) {
                Some(r) => r.clone(),
                None => {
                    let r = agents(c, &t.environment).await?;
                    facts.agents.insert(t.environment.clone(), r.clone());
                    r
                }
            };
            let WaitReason::Agent { environment, availability, agents, .. } = reason else { unreachable!() };
            let sentence = agent_sentence(&label, &environment, availability, agents.as_deref(), t.due_at);
            WaitingFor { reason: WaitReason::Agent { environment, availability, agents, deadline: t.due_at }, sentence }
        }
        T::Ready => return Ok(None), // the machine moves it on at once
        T::InProgress => match &t.spec {
            TaskSpec::Wait { .. } => {
                let until = t.due_at.unwrap_or(Timestamp::now());
                WaitingFor { sentence: format!("{label} waits until {until}"), reason: WaitReason::Timer { until } }
            }
            TaskSpec::Webhook { url, .. } => {
                let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
                WaitingFor {
                    sentence: format!("{label}: the orchestrator is calling {host}"),
                    reason: WaitReason::Call { host },
                }
            }
            _ => {
                let agent = t.agent.clone().unwrap_or_default();
                let by = t.due_at.map(|due| format!("; the orchestrator fails it if it has not ended by {due}"));
                WaitingFor {
                    sentence: format!("{label} is running on agent {agent}{}", by.unwrap_or_default()),
                    reason: WaitReason::Running { agent, attempt_id: t.attempt_id.clone(), deadline: t.due_at },
                }
            }
        },
        T::PendingInput => {
            if d.status == D::Paused {
                return Ok(Some(paused(d)));
            }
            approval(c, d, t, &label, &stage, facts).await
        }
        T::Failed => {
            let message = t.message.clone().unwrap_or_else(|| "failed".into());
            let actions = vec![Action::Retry, Action::Skip, Action::Abort];
            WaitingFor {
                sentence: format!("{label} failed: {message}; {} it", list(&actions)),
                reason: WaitReason::Error { stage, task_index: t.task_index, message, actions },
            }
        }
        _ => return Ok(None),
    }))
}

/// What serves an environment: nobody registered, nobody online, all busy, or someone free.
/// Busy: an online agent holds attempts and has no poll open on this node (agents poll only
/// with room for more); free: one has a poll open, or holds nothing (it polls again shortly).
async fn agents(c: &Ctx<'_>, environment: &str) -> Result<WaitReason> {
    let snap = c.state.variables.snapshot().await?;
    let (registered, pending): (Vec<_>, Vec<_>) = c
        .state
        .store
        .list_agents()
        .await?
        .into_iter()
        .filter(|a| a.environment == environment)
        .partition(|a| crate::engine::agent_gets_work(a, &snap));
    let online: Vec<_> = registered.iter().filter(|a| super::agents::is_online(c, a)).collect();
    // An open poll settles it at no cost; else what the online agents hold does.
    let mut free = online.iter().any(|a| c.state.engine.is_polling(&a.name));
    let mut seen = Vec::new();
    for a in registered.iter().take(AGENTS_SHOWN) {
        let on = online.iter().any(|o| o.name == a.name);
        let running = if on && !free { Some(c.state.store.owned_attempts(&a.name).await?.len()) } else { None };
        free |= running == Some(0);
        seen.push(AgentSeen { name: a.name.clone(), online: on, last_seen_at: a.last_seen_at, running });
    }
    let availability = if registered.is_empty() && !pending.is_empty() {
        seen.extend(pending.iter().take(AGENTS_SHOWN).map(|a| AgentSeen {
            name: a.name.clone(),
            online: super::agents::is_online(c, a),
            last_seen_at: a.last_seen_at,
            running: None,
        }));
        AgentAvailability::PendingApproval
    } else if registered.is_empty() {
        AgentAvailability::NoneRegistered
    } else if online.is_empty() {
        AgentAvailability::NoneOnline
    } else if free || online.len() > AGENTS_SHOWN {
        AgentAvailability::Available
    } else {
        AgentAvailability::AllBusy
    };
    let agents = c.caller.holds_globally(Privilege::AgentRead).then_some(seen);
    Ok(WaitReason::Agent { environment: environment.to_string(), availability, agents, deadline: None })
}

fn agent_sentence(
    label: &str,
    env: &str,
    availability: AgentAvailability,
    agents: Option<&[AgentSeen]>,
    deadline: Option<Timestamp>,
) -> String {
    let names = |f: &dyn Fn(&AgentSeen) -> String| {
        agents.map(|a| format!(" ({})", a.iter().map(f).collect::<Vec<_>>().join(", "))).unwrap_or_default()
    };
    let why = match availability {
        AgentAvailability::NoneRegistered => {
            format!(
                "no agent is registered for environment {env} (drover agents add NAME --environment {env}, then start it)"
            )
        }
        AgentAvailability::NoneOnline => format!(
            "agents are registered for environment {env} but none is online{}",
            names(&|a| match a.last_seen_at {
                Some(t) => format!("{} last seen {t}", a.name),
                None => format!("{} never seen", a.name),
            })
        ),
        AgentAvailability::AllBusy => format!(
            "every online agent of environment {env} is busy{}",
            names(&|a| format!("{} running {}", a.name, a.running.unwrap_or_default()))
        ),
        AgentAvailability::Available => format!("an agent of environment {env} will claim it at its next poll"),
        AgentAvailability::PendingApproval => format!(
            "the agents registered for environment {env} wait for approval{} (drover agents approve NAME, by a holder of variable.manage)",
            names(&|a| a.name.clone())
        ),
    };
    let by = deadline.map(|d| format!("; it fails if no agent claims it by {d}")).unwrap_or_default();
    format!("{label} waits for an agent: {why}{by}")
}

async fn approval(
    c: &Ctx<'_>,
    d: &DeploymentRecord,
    t: &TaskRecord,
    label: &str,
    stage: &str,
    facts: &mut Facts,
) -> WaitingFor {
    let TaskSpec::Approval { role, approvals, on_timeout, .. } = &t.spec else {
        return WaitingFor {
            sentence: format!("{label} waits for input"),
            reason: WaitReason::Task { stage: stage.to_string(), task_index: t.task_index },
        };
    };
    let needed = approvals.unwrap_or(1).max(1);
    let mut by: Vec<&str> =
        t.approvals.iter().filter(|v| v.decision == "approve" && !v.overridden).map(|v| v.by.as_str()).collect();
    by.sort_unstable();
    by.dedup();
    let have = by.len() as u32;
    let key = (d.application.clone(), role.clone());
    let holders = match facts.approvers.get(&key) {
        Some(n) => *n,
        None => {
            let n = approvers(c, &d.application, role.as_deref()).await;
            facts.approvers.insert(key, n);
            n
        }
    };
    let who = match role {
        Some(r) => format!("an operator with role {r} on {} ({holders} hold it)", d.application),
        None => format!("an operator with task.approve on {} ({holders} hold it)", d.application),
    };
    let count = if needed > 1 { format!(" ({have} of {needed} approvals)") } else { String::new() };
    let deadline = t.due_at;
    let then = match (deadline, on_timeout) {
        (Some(due), Some(drover_types::OnTimeout::Abort)) => format!("; undecided by {due}, the deployment is aborted"),
        (Some(due), _) => format!("; undecided by {due}, it is rejected"),
        _ => String::new(),
    };
    WaitingFor {
        sentence: format!("{label} waits for approval by {who}{count}{then}"),
        reason: WaitReason::Approval {
            stage: stage.to_string(),
            task_index: t.task_index,
            role: role.clone(),
            holders,
            needed,
            have,
            deadline,
            on_timeout: deadline.map(|_| on_timeout.unwrap_or(drover_types::OnTimeout::Reject)),
        },
    }
}

/// Enabled operators who could decide an approval of `app` (with `role`, when it names one).
async fn approvers(c: &Ctx<'_>, app: &str, role: Option<&str>) -> usize {
    let Ok(ops) = c.state.store.list_operators().await else { return 0 };
    ops.into_iter()
        .filter(|o| !o.disabled)
        .filter(|o| {
            let p = c.state.principals.resolve(PrincipalKind::Operator, &o.name, o.roles.clone());
            p.can(Privilege::TaskApprove, app) && role.is_none_or(|r| p.roles_on(app).iter().any(|x| x == r))
        })
        .count()
}

fn promotion(c: &Ctx<'_>, d: &DeploymentRecord) -> WaitingFor {
    let stage = stage_name(d, d.stage_index);
    let roles = c.state.principals.roles_with(Privilege::DeploymentPromote);
    WaitingFor {
        sentence: format!(
            "waits for promotion to stage {stage} (manual) by a holder of {} on {}",
            roles.join(", "),
            d.application
        ),
        reason: WaitReason::Promotion { stage, roles },
    }
}

fn paused(d: &DeploymentRecord) -> WaitingFor {
    let by = machine::paused_by(d).unwrap_or("?").to_string();
    WaitingFor { sentence: format!("paused by {by}; resume or abort it"), reason: WaitReason::Paused { by } }
}

fn rollback(d: &DeploymentRecord) -> Option<WaitingFor> {
    let m = d.message.as_deref()?;
    let rest = &m[m.find("(deployment ")? + "(deployment ".len()..];
    let id: i64 = rest[..rest.find(')')?].parse().ok()?;
    Some(WaitingFor {
        sentence: format!("being rolled back by deployment {id}; it ends when that one does"),
        reason: WaitReason::Rollback { deployment: id },
    })
}

/// A queued deployment: who holds its stage, or who is ahead of it in line.
async fn queued(c: &Ctx<'_>, d: &DeploymentRecord) -> Result<Option<WaitingFor>> {
    let s = d.stage_index;
    let stage = stage_name(d, s);
    let (locks, queue) = c.state.store.stage_gate(&d.pipeline).await?;
    let holder = locks.iter().find(|(ls, h)| *ls == s && *h != d.id).map(|(_, h)| *h);
    let ahead = queue.iter().find(|(qs, oldest)| *qs == s && *oldest < d.id).map(|(_, o)| *o);
    let Some(other) = holder.or(ahead) else {
        return Ok(Some(WaitingFor {
            sentence: format!("about to enter stage {stage}"),
            reason: WaitReason::Stage { stage, deployment: d.id, status: D::Queued, actions: vec![] },
        }));
    };
    let status = c.state.store.load_deployment(other).await?.map(|o| o.deployment.status).unwrap_or(D::Queued);
    let actions = match status {
        D::Error => vec![Action::Retry, Action::Skip, Action::Abort],
        D::Paused => vec![Action::Resume, Action::Abort],
        D::PendingInput => vec![Action::Approve, Action::Reject, Action::Abort],
        D::InProgress => vec![Action::Abort],
        _ => vec![],
    };
    let how = if actions.is_empty() {
        "it moves on by itself".to_string()
    } else if status == D::InProgress {
        "it frees the stage when it moves on, or abort it".to_string()
    } else {
        format!("{} it to free the stage", list(&actions))
    };
    let sentence = if holder.is_some() {
        format!("queued behind deployment {other}, which holds stage {stage} and is {status}: {how}")
    } else {
        format!("queued behind deployment {other}, which is older and waits for stage {stage} too")
    };
    Ok(Some(WaitingFor { sentence, reason: WaitReason::Stage { stage, deployment: other, status, actions } }))
}
