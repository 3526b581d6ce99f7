//! Fleet stages (`targets: all | rolling`): each agent task becomes one row per selected agent.
//!
//! A stage's tasks fall into *segments*: runs of agent tasks between orchestrator-side tasks
//! (approval, wait, webhook), which run once for the stage at their place. Within a segment,
//! each agent of a batch runs the segment's tasks in order; a batch starts once every agent of
//! the batches before it has finished the segment (passed all its tasks, or failed one). An
//! agent that fails is out of the rest of the stage; more failed agents than `max_failures`
//! stop the stage: no new batch starts (the agents that started the segment finish it), and once nothing runs the
//! deployment goes to `error` naming the failed agents. Within the threshold, the segment
//! completes when every agent has finished it, and the failed agents' remaining tasks are
//! skipped. The set of agents is chosen once, when the stage first steps, and kept in the rows.
//!
//! Everything here is pure: the rows are the state, `now` is passed in.

use std::collections::BTreeMap;

use drover_types::{StageSpec, TaskStatus as T, Timestamp};

use super::StageGate;
use crate::model::{DeploymentState, TaskRecord};

/// What a fleet step leaves the deployment doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Attempts run or wait to be claimed (or the agent set is not known yet).
    Wait,
    /// The segment is complete: the machine goes on with the next task.
    Passed,
    /// Too many agents failed (or none matched): the deployment is in `error`.
    Stopped,
}

/// The segment of agent tasks `task` belongs to: `[start, end)` task indexes.
pub fn segment(stage: &StageSpec, task: usize) -> (usize, usize) {
    let on_agent = |i: usize| stage.tasks.get(i).is_some_and(|t| t.runs_on_agent());
    let mut start = task;
    while start > 0 && on_agent(start - 1) {
        start -= 1;
    }
    let mut end = task;
    while on_agent(end) {
        end += 1;
    }
    (start, end)
}

/// The agents a fleet stage selects from its environment's agents (name, labels), by name.
pub fn select(stage: &StageSpec, agents: &[(String, BTreeMap<String, String>)]) -> Vec<String> {
    let mut out: Vec<String> = agents
        .iter()
        .filter(|(_, labels)| stage.agents.as_ref().is_none_or(|sel| sel.matches(labels)))
        .map(|(n, _)| n.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Adds a row per selected agent for every agent task of stage `s`, batches in name order.
fn expand(st: &mut DeploymentState, s: usize, stage: &StageSpec, agents: &[String]) {
    let size = stage.batch_size(agents.len());
    let id = st.deployment.id;
    for (ti, spec) in stage.tasks.iter().enumerate().filter(|(_, t)| t.runs_on_agent()) {
        for (k, agent) in agents.iter().enumerate() {
            let mut row = TaskRecord::new(id, s, ti, &stage.environment, spec.clone());
            row.target = Some(agent.clone());
            row.batch = Some((k / size) as u32);
            st.tasks.push(row);
        }
    }
    st.sort_rows();
}

/// One agent's rows in the stage (positions in `st.tasks`, by task index).
struct Member {
    name: String,
    batch: u32,
    rows: Vec<usize>,
}

fn members(st: &DeploymentState, s: usize) -> Vec<Member> {
    let mut by: BTreeMap<&str, Member> = BTreeMap::new();
    for (k, t) in st.tasks.iter().enumerate() {
        if t.stage_index != s {
            continue;
        }
        if let Some(a) = &t.target {
            let m = by.entry(a).or_insert_with(|| Member {
                name: a.clone(),
                batch: t.batch.unwrap_or(0),
                rows: Vec::new(),
            });
            m.rows.push(k);
        }
    }
    let mut out: Vec<Member> = by.into_values().collect();
    out.sort_by(|a, b| (a.batch, &a.name).cmp(&(b.batch, &b.name)));
    out
}

/// The failed agents of stage `s`, with what failed, in name order.
pub fn failures(st: &DeploymentState, s: usize) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in st.tasks.iter().filter(|t| t.stage_index == s && t.status == T::Failed) {
        if let Some(a) = &t.target
            && !out.iter().any(|(n, _)| n == a)
        {
            let why = t.message.clone().or_else(|| t.exit_code.map(|c| format!("exit code {c}")));
            let what = format!(
                "task {} ({}){}",
                t.task_index + 1,
                t.spec.kind(),
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
            out.push((a.clone(), what));
        }
    }
    out.sort();
    out
}

/// Steps the current segment of the deployment's (fleet) stage.
pub(super) fn step(st: &mut DeploymentState, now: Timestamp, gate: &dyn StageGate) -> Step {
    let s = st.deployment.stage_index;
    let stage = &st.deployment.spec.stages[s];
    let Some(current) = st.current_task_index() else { return Step::Passed };
    let (a, b) = segment(stage, st.tasks[current].task_index);
    if !st.tasks.iter().any(|t| t.stage_index == s && t.target.is_some()) {
        let Some(all) = gate.agents(&stage.environment) else { return Step::Wait };
        let selected = select(stage, &all);
        if selected.is_empty() {
            let which = match &stage.agents {
                Some(sel) if !sel.labels.is_empty() => {
                    let l: Vec<String> = sel.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(" with labels {}", l.join(", "))
                }
                _ => String::new(),
            };
            let msg = format!(
                "no agent of environment {}{which} is registered, so the stage has no targets (they are chosen when the stage starts); register one and retry",
                stage.environment
            );
            let label = st.tasks[current].label(&st.deployment.spec);
            return stop(st, current, msg.clone(), format!("{label} failed: {msg}"), now);
        }
        let stage = stage.clone();
        expand(st, s, &stage, &selected);
        return step(st, now, gate);
    }
    let stage = &st.deployment.spec.stages[s];
    let dispatch = stage.dispatch_timeout();
    let max_failures = stage.max_failures();
    let members = members(st, s);
    let in_segment = |t: &TaskRecord| (a..b).contains(&t.task_index);
    let failed = |m: &Member, st: &DeploymentState| m.rows.iter().any(|&k| st.tasks[k].status == T::Failed);
    let n_failed = members.iter().filter(|m| failed(m, st)).count();
    let halted = n_failed > max_failures;
    let done = |m: &Member, st: &DeploymentState| {
        failed(m, st) || m.rows.iter().filter(|&&k| in_segment(&st.tasks[k])).all(|&k| st.tasks[k].status.is_passed())
    };
    let first_open = members.iter().filter(|m| !done(m, st)).map(|m| m.batch).min();
    let mut running = false;
    for m in &members {
        if done(m, st) {
            continue;
        }
        let seg: Vec<usize> = m.rows.iter().copied().filter(|&k| in_segment(&st.tasks[k])).collect();
        let started = seg.iter().any(|&k| st.tasks[k].status != T::Pending);
        if !started && (halted || Some(m.batch) != first_open) {
            continue;
        }
        let Some(&k) = seg.iter().find(|&&k| !st.tasks[k].status.is_passed()) else { continue };
        let t = &mut st.tasks[k];
        match t.status {
            // An agent that started the segment finishes it, even past the threshold.
            T::Pending => {
                t.status = T::Ready;
                t.due_at = Some(now.plus(dispatch));
                running = true;
            }
            T::Ready => {
                if t.due_at.is_none() {
                    t.due_at = Some(now.plus(dispatch)); // resumed after a pause
                }
                running = true;
            }
            T::InProgress => running = true,
            _ => {}
        }
    }
    let all_done = members.iter().all(|m| done(m, st));
    if all_done && !halted {
        let failed_names: Vec<String> = failures(st, s).into_iter().map(|(n, _)| n).collect();
        for m in members.iter().filter(|m| failed_names.contains(&m.name)) {
            for &k in &m.rows {
                let t = &mut st.tasks[k];
                if in_segment(t) && t.status == T::Pending {
                    t.status = T::Skipped;
                    t.message = Some(format!("not run: agent {} failed an earlier task of this stage", m.name));
                    t.finished_at = Some(now);
                }
            }
        }
        let note = (!failed_names.is_empty()).then(|| {
            format!(
                "failed on {} of {} agents ({}), within max_failures {max_failures}",
                failed_names.len(),
                members.len(),
                failed_names.join(", ")
            )
        });
        for t in st.tasks.iter_mut().filter(|t| t.stage_index == s && t.target.is_none() && in_segment(t)) {
            if !t.status.is_passed() {
                t.status = T::Completed;
                t.finished_at = Some(now);
                t.message = note.clone();
            }
        }
        return Step::Passed;
    }
    if halted && !running {
        let list = failures(st, s);
        let names: Vec<String> = list.iter().map(|(n, w)| format!("{n} ({w})")).collect();
        let msg = format!(
            "{} of {} agents failed, more than max_failures {max_failures}: {}; no further batch was started. Retry re-runs the failed agents' tasks, skip skips them",
            list.len(),
            members.len(),
            names.join("; ")
        );
        let label = st.tasks[current].label(&st.deployment.spec);
        let whole = format!("stage {} stopped at {label}: {msg}", stage_name(st, s));
        return stop(st, current, msg, whole, now);
    }
    // The task rows sum up their agents' rows.
    let mut started: BTreeMap<usize, Timestamp> = BTreeMap::new();
    for t in st.tasks.iter().filter(|t| t.stage_index == s && t.target.is_some() && in_segment(t)) {
        if let Some(at) = t.started_at.or((t.status != T::Pending).then_some(now)) {
            let e = started.entry(t.task_index).or_insert(at);
            *e = (*e).min(at);
        }
    }
    for t in st.tasks.iter_mut().filter(|t| t.stage_index == s && t.target.is_none() && in_segment(t)) {
        if let Some(at) = started.get(&t.task_index)
            && t.status == T::Pending
        {
            t.status = T::InProgress;
            t.started_at = Some(*at);
        }
    }
    Step::Wait
}

/// The task's own row fails with `msg`; the deployment goes to `error` saying `whole`.
fn stop(st: &mut DeploymentState, current: usize, msg: String, whole: String, now: Timestamp) -> Step {
    let t = &mut st.tasks[current];
    t.status = T::Failed;
    t.message = Some(msg);
    t.finished_at = Some(now);
    st.deployment.status = drover_types::DeploymentStatus::Error;
    st.deployment.message = Some(whole);
    Step::Stopped
}

fn stage_name(st: &DeploymentState, s: usize) -> String {
    st.deployment.spec.stages.get(s).map(|x| x.name.clone()).unwrap_or_default()
}

/// Retry (`skip == false`) or skip the failed agents' tasks of the current segment; the task's
/// own row goes back to `in_progress`. Returns how many agents' tasks it changed.
pub(super) fn retry_or_skip(
    st: &mut DeploymentState,
    current: usize,
    skip: bool,
    by: &str,
    reason: Option<String>,
    now: Timestamp,
) -> usize {
    let s = st.deployment.stage_index;
    let (a, b) = segment(&st.deployment.spec.stages[s], st.tasks[current].task_index);
    let mut n = 0;
    for t in st.tasks.iter_mut().filter(|t| t.stage_index == s && t.target.is_some() && (a..b).contains(&t.task_index))
    {
        if t.status != T::Failed {
            continue;
        }
        n += 1;
        if skip {
            t.status = T::Skipped;
            t.decided_by = Some(by.to_string());
            t.comment = reason.clone();
            t.finished_at = Some(now);
        } else {
            t.reset_for_retry();
        }
    }
    let has_targets = st.tasks.iter().any(|t| t.stage_index == s && t.target.is_some());
    let t = &mut st.tasks[current];
    if skip && !has_targets {
        // No agent matched: skipping skips the task itself.
        t.status = T::Skipped;
        t.decided_by = Some(by.to_string());
        t.comment = reason;
        t.finished_at = Some(now);
        return n;
    }
    t.status = if has_targets { T::InProgress } else { T::Pending };
    t.message = None;
    t.finished_at = None;
    n
}
