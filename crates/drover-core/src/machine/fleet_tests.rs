//! Fleet stages as tables: batch sizes, failure thresholds, agents leaving, segments around
//! orchestrator-side tasks, retry and skip of the failed agents only.
use std::collections::BTreeMap;

use super::*;
use crate::model::DeploymentState;
use drover_types::{AgentSelector, BatchSize, CommandSpec, StageSpec, Targets};

struct Fleet(Vec<(String, BTreeMap<String, String>)>);

impl StageGate for Fleet {
    fn can_enter(&self, _: i64, _: usize) -> bool {
        true
    }
    fn agents(&self, _: &str) -> Option<Vec<(String, BTreeMap<String, String>)>> {
        Some(self.0.clone())
    }
}

fn fleet(n: usize) -> Fleet {
    Fleet((1..=n).map(|i| (format!("a{i}"), BTreeMap::new())).collect())
}

fn run(cmd: &str) -> TaskSpec {
    TaskSpec::Run { command: CommandSpec::Shell(cmd.into()), timeout: None }
}

fn state(stage: StageSpec) -> DeploymentState {
    super::tests::state(vec![stage])
}

fn stage(targets: Targets, batch: Option<BatchSize>, max_failures: Option<u32>, tasks: Vec<TaskSpec>) -> StageSpec {
    StageSpec {
        name: "prod".into(),
        environment: "prod".into(),
        targets,
        batch,
        max_failures,
        tasks,
        ..Default::default()
    }
}

const T10: Timing = Timing::new(Duration::from_secs(10), Duration::from_secs(60));
const ADMIN: Actor<'static> = Actor { name: "admin", roles: &[], may_override: false };

/// (task index, agent) of every row an agent may claim now.
fn ready(st: &DeploymentState) -> Vec<(usize, String)> {
    st.tasks
        .iter()
        .filter(|t| t.status == T::Ready && t.spec.runs_on_agent())
        .map(|t| (t.task_index, t.target.clone().unwrap_or_default()))
        .collect()
}

fn step(st: &mut DeploymentState, gate: &dyn StageGate, now: i64) {
    let mut fx = Effects::default();
    advance(st, Timestamp(now), gate, &mut fx);
}

/// Claims and finishes every ready row: the agents in `failing` fail.
fn finish_ready(st: &mut DeploymentState, gate: &dyn StageGate, failing: &[&str], now: i64) -> Vec<String> {
    let rows = ready(st);
    let mut names = Vec::new();
    for (ti, agent) in &rows {
        let id = format!("{agent}-{ti}-{now}");
        claim(st, (0, *ti, Some(agent)), agent, &id, Timestamp(now), T10).unwrap();
        let outcome = if failing.contains(&agent.as_str()) { Outcome::Failed } else { Outcome::Completed };
        record_result(st, &id, outcome, Some(if outcome == Outcome::Failed { 1 } else { 0 }), None, Timestamp(now))
            .unwrap();
        names.push(agent.clone());
    }
    step(st, gate, now);
    names
}

#[test]
fn batch_sizes() {
    // (agents, targets, batch) -> agents per batch
    let table: &[(usize, Targets, Option<BatchSize>, usize)] = &[
        (5, Targets::Rolling, Some(BatchSize::Agents(2)), 2),
        (5, Targets::Rolling, None, 1),
        (10, Targets::Rolling, Some(BatchSize::Percent(25)), 3),
        (3, Targets::Rolling, Some(BatchSize::Percent(1)), 1),
        (3, Targets::Rolling, Some(BatchSize::Percent(100)), 3),
        (3, Targets::Rolling, Some(BatchSize::Agents(10)), 10),
        (7, Targets::All, None, 7),
    ];
    for &(n, targets, batch, want) in table {
        assert_eq!(stage(targets, batch, None, vec![]).batch_size(n), want, "{n} {targets:?} {batch:?}");
    }
    // The batches a rolling stage over 5 agents runs, 2 at a time.
    let mut st = state(stage(Targets::Rolling, Some(BatchSize::Agents(2)), None, vec![run("true")]));
    let gate = fleet(5);
    step(&mut st, &gate, 0);
    let mut batches = Vec::new();
    for now in 1..10 {
        let b = finish_ready(&mut st, &gate, &[], now);
        if b.is_empty() {
            break;
        }
        batches.push(b);
    }
    assert_eq!(batches, vec![vec!["a1", "a2"], vec!["a3", "a4"], vec!["a5"]]);
    assert_eq!(st.deployment.status, D::Completed);
}

#[test]
fn rolling_stops_after_the_batch_with_one_failure_too_many_and_retry_reruns_only_the_failed() {
    let mut st = state(stage(Targets::Rolling, Some(BatchSize::Agents(2)), Some(1), vec![run("deploy"), run("check")]));
    let gate = fleet(5);
    step(&mut st, &gate, 0);
    assert_eq!(ready(&st), vec![(0, "a1".into()), (0, "a2".into())]);
    // a2 fails its first task: one failure is within max_failures; a1 goes on to its second.
    finish_ready(&mut st, &gate, &["a2"], 1);
    assert_eq!(ready(&st), vec![(1, "a1".into())]);
    finish_ready(&mut st, &gate, &[], 2);
    // The next batch starts; a3 fails: two failures, more than 1. a4 finishes what it started.
    assert_eq!(ready(&st), vec![(0, "a3".into()), (0, "a4".into())]);
    finish_ready(&mut st, &gate, &["a3"], 3);
    assert_eq!(st.deployment.status, D::InProgress);
    assert_eq!(ready(&st), vec![(1, "a4".into())], "a started agent finishes; nothing new starts");
    finish_ready(&mut st, &gate, &[], 4);
    assert_eq!(st.deployment.status, D::Error);
    let msg = st.deployment.message.clone().unwrap();
    assert!(msg.contains("2 of 5 agents failed") && msg.contains("a2 (task 1") && msg.contains("a3 (task 1"), "{msg}");
    assert!(!msg.contains("a5"), "{msg}");
    assert_eq!(fleet_failures(&st, 0).len(), 2);
    // a5 never started.
    assert!(st.tasks.iter().filter(|t| t.target.as_deref() == Some("a5")).all(|t| t.status == T::Pending));
    // Retry: only the failed agents' tasks run again.
    apply_action(&mut st, Action::Retry, &ADMIN, ActionInput::default(), Timestamp(5), &mut Effects::default())
        .unwrap();
    step(&mut st, &gate, 5);
    assert_eq!(ready(&st), vec![(0, "a2".into()), (0, "a3".into())]);
    finish_ready(&mut st, &gate, &[], 6);
    assert_eq!(ready(&st), vec![(1, "a2".into()), (1, "a3".into())]);
    finish_ready(&mut st, &gate, &[], 7);
    assert_eq!(ready(&st), vec![(0, "a5".into())]);
    finish_ready(&mut st, &gate, &[], 8);
    finish_ready(&mut st, &gate, &[], 9);
    assert_eq!(st.deployment.status, D::Completed, "{:?}", st.deployment.message);
    // Every agent ran each task once, the failed ones twice.
    let attempts: Vec<(String, u32)> = st
        .tasks
        .iter()
        .filter(|t| t.task_index == 0 && t.target.is_some())
        .map(|t| (t.target.clone().unwrap(), t.attempt))
        .collect();
    assert_eq!(
        attempts,
        vec![("a1".into(), 1), ("a2".into(), 2), ("a3".into(), 2), ("a4".into(), 1), ("a5".into(), 1)]
    );
}

#[test]
fn failures_within_the_threshold_complete_the_stage_and_skip_the_failed_agents_rest() {
    let table: &[(Targets, Option<u32>, &[&str], D)] = &[
        (Targets::All, None, &[], D::Completed),
        (Targets::All, None, &["a2"], D::Error),
        (Targets::All, Some(1), &["a2"], D::Completed),
        (Targets::All, Some(1), &["a1", "a3"], D::Error),
        (Targets::All, Some(2), &["a1", "a3"], D::Completed),
        (Targets::Rolling, Some(3), &["a1", "a2", "a3"], D::Completed),
    ];
    for &(targets, max, failing, want) in table {
        let mut st = state(stage(targets, Some(BatchSize::Agents(1)), max, vec![run("a"), run("b")]));
        let gate = fleet(3);
        step(&mut st, &gate, 0);
        if targets == Targets::All {
            assert_eq!(ready(&st).len(), 3, "all: every agent at once");
        }
        for now in 1..20 {
            if finish_ready(&mut st, &gate, failing, now).is_empty() {
                break;
            }
        }
        assert_eq!(st.deployment.status, want, "{targets:?} max {max:?} failing {failing:?}");
        if want == D::Completed {
            for t in
                st.tasks.iter().filter(|t| t.task_index == 1 && failing.contains(&t.target.as_deref().unwrap_or("")))
            {
                assert_eq!(t.status, T::Skipped, "{t:?}");
            }
            let view = st.to_view();
            assert_eq!(view.stages[0].failed_agents, failing.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(view.stages[0].status, "completed");
            assert_eq!(view.stages[0].tasks[0].targets.len(), 3);
        }
    }
}

#[test]
fn orchestrator_tasks_run_once_after_the_whole_fleet() {
    let approval =
        TaskSpec::Approval { role: None, approvals: None, allow_self_approval: None, timeout: None, on_timeout: None };
    let mut st = state(stage(Targets::Rolling, Some(BatchSize::Agents(2)), None, vec![run("a"), approval, run("b")]));
    let gate = fleet(3);
    step(&mut st, &gate, 0);
    finish_ready(&mut st, &gate, &[], 1);
    assert_eq!(st.deployment.status, D::InProgress, "the approval waits for the whole fleet");
    assert_eq!(ready(&st), vec![(0, "a3".into())]);
    finish_ready(&mut st, &gate, &[], 2);
    assert_eq!(st.deployment.status, D::PendingInput);
    assert!(ready(&st).is_empty());
    assert_eq!(st.tasks.iter().filter(|t| t.task_index == 1).count(), 1, "one approval for the stage");
    apply_action(&mut st, Action::Approve, &ADMIN, ActionInput::default(), Timestamp(3), &mut Effects::default())
        .unwrap();
    step(&mut st, &gate, 3);
    // The next segment starts again from the first batch.
    assert_eq!(ready(&st), vec![(2, "a1".into()), (2, "a2".into())]);
    finish_ready(&mut st, &gate, &[], 4);
    finish_ready(&mut st, &gate, &[], 5);
    assert_eq!(st.deployment.status, D::Completed);
}

#[test]
fn an_agent_that_goes_away_fails_its_attempt_by_its_lease() {
    let mut st = state(stage(Targets::All, None, None, vec![run("a")]));
    let gate = fleet(3);
    step(&mut st, &gate, 0);
    for (ti, agent) in ready(&st) {
        claim(&mut st, (0, ti, Some(&agent)), &agent, &format!("x-{agent}"), Timestamp(1), T10).unwrap();
    }
    record_result(&mut st, "x-a1", Outcome::Completed, Some(0), None, Timestamp(2)).unwrap();
    record_result(&mut st, "x-a3", Outcome::Completed, Some(0), None, Timestamp(2)).unwrap();
    step(&mut st, &gate, 2);
    assert_eq!(st.deployment.status, D::InProgress);
    // a2 sends no heartbeat: its lease (10 s) passes.
    assert_eq!(expire_leases(&mut st, Timestamp(20_000)), 1);
    step(&mut st, &gate, 20_000);
    assert_eq!(st.deployment.status, D::Error);
    let msg = st.deployment.message.clone().unwrap();
    assert!(msg.contains("a2") && msg.contains("heartbeats"), "{msg}");
}

#[test]
fn the_agent_set_is_fixed_when_the_stage_starts_and_attempts_are_their_agents_own() {
    let mut st = state(stage(Targets::All, None, None, vec![run("a")]));
    step(&mut st, &fleet(2), 0);
    // A third agent registered later is not included.
    step(&mut st, &fleet(3), 1);
    assert_eq!(ready(&st), vec![(0, "a1".into()), (0, "a2".into())]);
    // Another agent cannot take a1's attempt, nor the task's own row.
    assert!(claim(&mut st, (0, 0, Some("a1")), "a2", "x", Timestamp(1), T10).is_err());
    assert!(claim(&mut st, (0, 0, None), "a2", "x", Timestamp(1), T10).is_err());
    assert!(claim(&mut st, (0, 0, Some("a3")), "a3", "x", Timestamp(1), T10).is_err());
    claim(&mut st, (0, 0, Some("a1")), "a1", "x", Timestamp(1), T10).unwrap();
    assert!(claim(&mut st, (0, 0, Some("a1")), "a1", "y", Timestamp(1), T10).is_err(), "never twice");
}

#[test]
fn labels_select_agents_and_no_match_is_an_error_that_retry_reconsiders() {
    let labelled =
        |n: &str, region: &str| (n.to_string(), BTreeMap::from([("region".to_string(), region.to_string())]));
    let gate = Fleet(vec![
        labelled("eu-1", "eu"),
        labelled("us-1", "us"),
        labelled("eu-2", "eu"),
        ("bare".into(), BTreeMap::new()),
    ]);
    type Labels = &'static [(&'static str, &'static str)];
    let table: &[(Labels, &[&str])] = &[
        (&[], &["bare", "eu-1", "eu-2", "us-1"]),
        (&[("region", "eu")], &["eu-1", "eu-2"]),
        (&[("region", "ap")], &[]),
        (&[("region", "eu"), ("tier", "web")], &[]),
    ];
    for (labels, want) in table {
        let mut s = stage(Targets::All, None, None, vec![run("a")]);
        s.agents = Some(AgentSelector { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() });
        assert_eq!(select(&s, &gate.0), want.iter().map(|w| w.to_string()).collect::<Vec<_>>(), "{labels:?}");
    }
    let mut s = stage(Targets::All, None, None, vec![run("a")]);
    s.agents = Some(AgentSelector { labels: BTreeMap::from([("region".into(), "ap".into())]) });
    let mut st = state(s);
    step(&mut st, &gate, 0);
    assert_eq!(st.deployment.status, D::Error);
    assert!(st.deployment.message.clone().unwrap().contains("with labels region=ap"), "{:?}", st.deployment.message);
    // An agent labelled region=ap registers; retry chooses the stage's agents again.
    let mut more = gate.0.clone();
    more.push(labelled("ap-1", "ap"));
    apply_action(&mut st, Action::Retry, &ADMIN, ActionInput::default(), Timestamp(1), &mut Effects::default())
        .unwrap();
    step(&mut st, &Fleet(more), 1);
    assert_eq!(ready(&st), vec![(0, "ap-1".into())]);
}

#[test]
fn skip_applies_to_the_failed_agents_task_and_they_go_on() {
    let mut st = state(stage(Targets::All, None, None, vec![run("a"), run("b")]));
    let gate = fleet(2);
    step(&mut st, &gate, 0);
    finish_ready(&mut st, &gate, &["a2"], 1);
    finish_ready(&mut st, &gate, &[], 2);
    assert_eq!(st.deployment.status, D::Error);
    apply_action(&mut st, Action::Skip, &ADMIN, ActionInput::default(), Timestamp(3), &mut Effects::default()).unwrap();
    step(&mut st, &gate, 3);
    assert_eq!(ready(&st), vec![(1, "a2".into())], "a2 goes on with its next task");
    finish_ready(&mut st, &gate, &[], 4);
    assert_eq!(st.deployment.status, D::Completed);
    let a2: Vec<T> = st.tasks.iter().filter(|t| t.target.as_deref() == Some("a2")).map(|t| t.status).collect();
    assert_eq!(a2, vec![T::Skipped, T::Completed]);
}

#[test]
fn an_unclaimed_attempt_fails_at_the_dispatch_timeout_naming_its_agent() {
    let mut s = stage(Targets::All, None, None, vec![run("a")]);
    s.dispatch_timeout = Some(drover_types::DurationSpec(Duration::from_secs(5)));
    let mut st = state(s);
    let gate = fleet(2);
    step(&mut st, &gate, 0);
    claim(&mut st, (0, 0, Some("a1")), "a1", "x", Timestamp(1), T10).unwrap();
    record_result(&mut st, "x", Outcome::Completed, Some(0), None, Timestamp(2)).unwrap();
    let ended = expire_deadlines(&mut st, Timestamp(6000), &mut Effects::default());
    assert_eq!(ended.len(), 1);
    assert!(ended[0].contains("agent a2 did not claim"), "{ended:?}");
    step(&mut st, &gate, 6000);
    assert_eq!(st.deployment.status, D::Error);
}

#[test]
fn pause_stops_the_dispatch_clock_of_every_agents_row_and_abort_ends_them() {
    let mut st = state(stage(Targets::All, None, None, vec![run("a")]));
    let gate = fleet(3);
    step(&mut st, &gate, 0);
    let mut fx = Effects::default();
    apply_action(&mut st, Action::Pause, &ADMIN, ActionInput::default(), Timestamp(1), &mut fx).unwrap();
    assert!(st.tasks.iter().all(|t| t.due_at.is_none()));
    assert!(claim(&mut st, (0, 0, Some("a1")), "a1", "x", Timestamp(1), T10).is_err());
    apply_action(&mut st, Action::Resume, &ADMIN, ActionInput::default(), Timestamp(2), &mut fx).unwrap();
    step(&mut st, &gate, 2);
    assert!(st.tasks.iter().filter(|t| t.status == T::Ready).all(|t| t.due_at.is_some()));
    apply_action(&mut st, Action::Abort, &ADMIN, ActionInput::default(), Timestamp(3), &mut fx).unwrap();
    assert!(st.tasks.iter().filter(|t| t.target.is_some()).all(|t| t.status == T::Aborted));
}
