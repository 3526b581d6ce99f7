//! The machine's tests: flows, leases, and every action × task status × actor.
use super::*;
use crate::model::{DeploymentRecord, DeploymentState};
use drover_types::{CommandSpec, DurationSpec, PipelineSpec, StageSpec};

pub(super) fn state(stages: Vec<StageSpec>) -> DeploymentState {
    let spec = PipelineSpec { application: "app".into(), pipeline: None, stages, ..Default::default() };
    DeploymentState {
        tasks: DeploymentState::new_tasks(1, &spec),
        deployment: DeploymentRecord {
            id: 1,
            pipeline: "app".into(),
            application: "app".into(),
            version: "1".into(),
            status: D::Queued,
            stage_index: 0,
            holds_stage: false,
            message: None,
            created_by: "admin".into(),
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            finished_at: None,
            rollback_of: None,
            spec,
            row_version: 0,
        },
    }
}

fn stage(name: &str, progression: Progression, tasks: Vec<TaskSpec>) -> StageSpec {
    StageSpec { name: name.into(), environment: name.into(), progression, tasks, ..Default::default() }
}

fn run() -> TaskSpec {
    TaskSpec::Run { command: CommandSpec::Shell("true".into()), timeout: None }
}

const OPEN: &dyn StageGate = &|_: i64, _: usize| true;
const ADMIN: Actor<'static> = Actor { name: "admin", roles: &[], may_override: false };

fn why(r: &str) -> ActionInput {
    ActionInput { reason: Some(r.into()), override_approval: false }
}

fn complete_current(st: &mut DeploymentState, id: &str) {
    let s = st.deployment.stage_index;
    let i = st.current_task_index().unwrap();
    let ti = st.tasks[i].task_index;
    claim(st, (s, ti, None), "a1", id, Timestamp(1), Timing::new(Duration::from_secs(10), Duration::from_secs(60)))
        .unwrap();
    assert_eq!(record_result(st, id, Outcome::Completed, Some(0), None, Timestamp(2)).unwrap(), ResultStatus::Recorded);
}

#[test]
fn runs_through_stages_and_completes() {
    let mut st = state(vec![
        stage("dev", Progression::Automatic, vec![run(), TaskSpec::Deploy {}]),
        stage("prod", Progression::Automatic, vec![run()]),
    ]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::InProgress);
    assert_eq!(fx.acquire_stage, Some(0));
    assert_eq!(st.tasks[0].status, T::Ready);
    assert_eq!(st.tasks[1].status, T::Pending);
    for id in ["a", "b", "c"] {
        complete_current(&mut st, id);
        advance(&mut st, Timestamp(3), OPEN, &mut fx);
    }
    assert_eq!(st.deployment.status, D::Completed);
    assert!(!st.deployment.holds_stage);
    assert_eq!(st.deployment.finished_at, Some(Timestamp(3)));
}

#[test]
fn busy_stage_keeps_deployment_queued() {
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![run()])]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), &|_: i64, _: usize| false, &mut fx);
    assert_eq!(st.deployment.status, D::Queued);
    assert_eq!(fx, Effects::default());
}

#[test]
fn failure_goes_to_error_then_retry_makes_a_new_attempt() {
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![run()])]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    claim(
        &mut st,
        (0, 0, None),
        "a1",
        "x1",
        Timestamp(1),
        Timing::new(Duration::from_secs(5), Duration::from_secs(60)),
    )
    .unwrap();
    record_result(&mut st, "x1", Outcome::Failed, Some(3), Some("boom".into()), Timestamp(2)).unwrap();
    advance(&mut st, Timestamp(2), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Error);
    assert!(st.deployment.message.as_deref().unwrap().contains("boom"));
    // A duplicate result changes nothing; a stale one is ignored.
    assert_eq!(
        record_result(&mut st, "x1", Outcome::Completed, None, None, Timestamp(3)).unwrap(),
        ResultStatus::Duplicate
    );
    assert_eq!(
        record_result(&mut st, "zz", Outcome::Completed, None, None, Timestamp(3)).unwrap(),
        ResultStatus::Stale
    );
    apply_action(&mut st, Action::Retry, &ADMIN, ActionInput::default(), Timestamp(4), &mut fx).unwrap();
    advance(&mut st, Timestamp(4), OPEN, &mut fx);
    assert_eq!(st.tasks[0].status, T::Ready);
    claim(
        &mut st,
        (0, 0, None),
        "a1",
        "x2",
        Timestamp(5),
        Timing::new(Duration::from_secs(5), Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(st.tasks[0].attempt, 2);
    assert_eq!(
        record_result(&mut st, "x1", Outcome::Completed, None, None, Timestamp(6)).unwrap(),
        ResultStatus::Stale
    );
}

#[test]
fn lost_heartbeats_name_agent_and_task() {
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![run()])]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    claim(
        &mut st,
        (0, 0, None),
        "agent-7",
        "x1",
        Timestamp(1),
        Timing::new(Duration::from_millis(100), Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(expire_leases(&mut st, Timestamp(50)), 0);
    assert_eq!(expire_leases(&mut st, Timestamp(500)), 1);
    advance(&mut st, Timestamp(500), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Error);
    let m = st.deployment.message.clone().unwrap();
    assert!(m.contains("agent-7") && m.contains("task 1 (run) of stage dev"), "{m}");
}

#[test]
fn approval_manual_promotion_and_wait() {
    let mut st = state(vec![
        stage(
            "dev",
            Progression::Automatic,
            vec![TaskSpec::Approval {
                role: Some("approver".into()),
                approvals: None,
                allow_self_approval: None,
                timeout: None,
                on_timeout: None,
            }],
        ),
        stage("prod", Progression::Manual, vec![TaskSpec::Wait { duration: DurationSpec(Duration::from_millis(10)) }]),
    ]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::PendingInput);
    let viewer = Actor { name: "v", roles: &["viewer".to_string()], may_override: false };
    assert!(matches!(
        apply_action(&mut st, Action::Approve, &viewer, ActionInput::default(), Timestamp(1), &mut fx),
        Err(Error::Forbidden(_))
    ));
    let approver = Actor { name: "ann", roles: &["approver".to_string()], may_override: false };
    apply_action(&mut st, Action::Approve, &approver, why("ok"), Timestamp(1), &mut fx).unwrap();
    advance(&mut st, Timestamp(1), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::PendingPromotion);
    assert_eq!(st.deployment.stage_index, 1);
    assert!(!st.deployment.holds_stage);
    apply_action(&mut st, Action::Promote, &ADMIN, ActionInput::default(), Timestamp(2), &mut fx).unwrap();
    advance(&mut st, Timestamp(2), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::InProgress);
    assert_eq!(st.tasks[1].status, T::InProgress);
    advance(&mut st, Timestamp(5), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::InProgress);
    advance(&mut st, Timestamp(12), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Completed);
}

#[test]
fn reject_fails_and_abort_is_final() {
    let mut st = state(vec![stage(
        "dev",
        Progression::Automatic,
        vec![
            TaskSpec::Approval {
                role: None,
                approvals: None,
                allow_self_approval: None,
                timeout: None,
                on_timeout: None,
            },
            run(),
        ],
    )]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    apply_action(&mut st, Action::Reject, &ADMIN, why("not today"), Timestamp(1), &mut fx).unwrap();
    advance(&mut st, Timestamp(1), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Failed);
    assert!(st.deployment.message.clone().unwrap().contains("not today"));
    assert!(apply_action(&mut st, Action::Abort, &ADMIN, ActionInput::default(), Timestamp(2), &mut fx).is_err());

    let mut st = state(vec![stage("dev", Progression::Automatic, vec![run()])]);
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    apply_action(&mut st, Action::Pause, &ADMIN, ActionInput::default(), Timestamp(1), &mut fx).unwrap();
    assert!(
        claim(
            &mut st,
            (0, 0, None),
            "a",
            "x",
            Timestamp(1),
            Timing::new(Duration::from_secs(1), Duration::from_secs(60))
        )
        .is_err()
    );
    apply_action(&mut st, Action::Resume, &ADMIN, ActionInput::default(), Timestamp(1), &mut fx).unwrap();
    assert_eq!(st.deployment.status, D::InProgress);
    let mut fx = Effects::default();
    apply_action(&mut st, Action::Abort, &ADMIN, why("bad build"), Timestamp(2), &mut fx).unwrap();
    assert_eq!(st.deployment.status, D::Aborted);
    assert_eq!(st.tasks[0].status, T::Aborted);
    assert_eq!(fx.release_stage, Some(0));
}

// ---- approvals, retry and skip: every action × task status × actor -------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Setup {
    PendingApproval,
    FailedTask,
    RunningTask,
    Paused,
    PendingPromotion,
    Queued,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Plain(Action),
    Override(Action),
    OverrideWithoutReason,
}

/// The outcome: the deployment's status after the action and `advance`, or the error.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    S(D),
    Bad,
    Deny,
    Invalid,
}
use Out::*;

/// A build stage (one run task), then a manual production stage: an approval for role
/// `approver` without self-approval, then a run task.
fn gated(setup: Setup) -> DeploymentState {
    let approval = TaskSpec::Approval {
        role: Some("approver".into()),
        approvals: None,
        allow_self_approval: Some(false),
        timeout: None,
        on_timeout: None,
    };
    let mut st = state(vec![
        stage("build", Progression::Automatic, vec![run()]),
        stage("production", Progression::Manual, vec![approval, run()]),
    ]);
    st.deployment.created_by = "sam".into();
    let mut fx = Effects::default();
    if setup == Setup::Queued {
        advance(&mut st, Timestamp(0), &|_: i64, _: usize| false, &mut fx);
        assert_eq!(st.deployment.status, D::Queued);
        return st;
    }
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    claim(
        &mut st,
        (0, 0, None),
        "a1",
        "x1",
        Timestamp(1),
        Timing::new(Duration::from_secs(10), Duration::from_secs(60)),
    )
    .unwrap();
    match setup {
        Setup::RunningTask => return st,
        Setup::Paused => {
            apply_action(&mut st, Action::Pause, &ADMIN, ActionInput::default(), Timestamp(1), &mut fx).unwrap();
            return st;
        }
        Setup::FailedTask => {
            record_result(&mut st, "x1", Outcome::Failed, Some(1), Some("boom".into()), Timestamp(2)).unwrap();
            advance(&mut st, Timestamp(2), OPEN, &mut fx);
            assert_eq!(st.deployment.status, D::Error);
            return st;
        }
        _ => {}
    }
    record_result(&mut st, "x1", Outcome::Completed, Some(0), None, Timestamp(2)).unwrap();
    advance(&mut st, Timestamp(2), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::PendingPromotion);
    if setup == Setup::PendingPromotion {
        return st;
    }
    apply_action(&mut st, Action::Promote, &ADMIN, ActionInput::default(), Timestamp(3), &mut fx).unwrap();
    advance(&mut st, Timestamp(3), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::PendingInput);
    st
}

fn outcome(r: Result<()>, st: &DeploymentState) -> Out {
    match r {
        Ok(()) => S(st.deployment.status),
        Err(Error::InvalidState(_)) => Bad,
        Err(Error::Forbidden(_)) => Deny,
        Err(Error::Invalid(_)) => Invalid,
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn every_action_on_every_task_status_by_every_actor() {
    use Act::*;
    use Action::*;
    use Setup::*;
    let approver = ["approver".to_string()];
    let deployer = ["deployer".to_string()];
    let admin = [RELEASE_ADMIN_ROLE.to_string()];
    // ann holds the role; sam holds it too but started the deployment; dan lacks it; root
    // lacks it but may override.
    let actors = [
        Actor { name: "ann", roles: &approver, may_override: false },
        Actor { name: "sam", roles: &approver, may_override: false },
        Actor { name: "dan", roles: &deployer, may_override: false },
        Actor { name: "root", roles: &admin, may_override: true },
    ];
    let all = |o: Out| [o; 4];
    #[rustfmt::skip]
    let table: &[(Setup, Act, [Out; 4])] = &[
        (PendingApproval, Plain(Abort), all(S(D::Aborted))),
        (PendingApproval, Plain(Pause), all(S(D::Paused))),
        (PendingApproval, Plain(Resume), all(Bad)),
        (PendingApproval, Plain(Retry), all(Bad)),
        (PendingApproval, Plain(Skip), all(Bad)),
        (PendingApproval, Plain(Approve), [S(D::InProgress), Deny, Deny, Deny]),
        (PendingApproval, Plain(Reject), [S(D::Failed), S(D::Failed), Deny, Deny]),
        (PendingApproval, Plain(Promote), all(Bad)),
        (PendingApproval, Override(Approve), [Deny, Deny, Deny, S(D::InProgress)]),
        (PendingApproval, Override(Reject), [Deny, Deny, Deny, S(D::Failed)]),
        (PendingApproval, OverrideWithoutReason, [Deny, Deny, Deny, Invalid]),
        (FailedTask, Plain(Abort), all(S(D::Aborted))),
        (FailedTask, Plain(Pause), all(Bad)),
        (FailedTask, Plain(Resume), all(Bad)),
        (FailedTask, Plain(Retry), all(S(D::InProgress))),
        (FailedTask, Plain(Skip), all(S(D::PendingPromotion))),
        (FailedTask, Plain(Approve), all(Bad)),
        (FailedTask, Plain(Reject), all(Bad)),
        (FailedTask, Plain(Promote), all(Bad)),
        (FailedTask, Override(Approve), all(Bad)),
        (FailedTask, Override(Reject), all(Bad)),
        (FailedTask, OverrideWithoutReason, all(Bad)),
        (RunningTask, Plain(Abort), all(S(D::Aborted))),
        (RunningTask, Plain(Pause), all(S(D::Paused))),
        (RunningTask, Plain(Resume), all(Bad)),
        (RunningTask, Plain(Retry), all(Bad)),
        (RunningTask, Plain(Skip), all(Bad)),
        (RunningTask, Plain(Approve), all(Bad)),
        (RunningTask, Plain(Reject), all(Bad)),
        (RunningTask, Plain(Promote), all(Bad)),
        (RunningTask, Override(Approve), all(Bad)),
        (RunningTask, Override(Reject), all(Bad)),
        (RunningTask, OverrideWithoutReason, all(Bad)),
        (Paused, Plain(Abort), all(S(D::Aborted))),
        (Paused, Plain(Pause), all(Bad)),
        (Paused, Plain(Resume), all(S(D::InProgress))),
        (Paused, Plain(Retry), all(Bad)),
        (Paused, Plain(Skip), all(Bad)),
        (Paused, Plain(Approve), all(Bad)),
        (Paused, Plain(Reject), all(Bad)),
        (Paused, Plain(Promote), all(Bad)),
        (Paused, Override(Approve), all(Bad)),
        (Paused, Override(Reject), all(Bad)),
        (Paused, OverrideWithoutReason, all(Bad)),
        (PendingPromotion, Plain(Abort), all(S(D::Aborted))),
        (PendingPromotion, Plain(Pause), all(Bad)),
        (PendingPromotion, Plain(Resume), all(Bad)),
        (PendingPromotion, Plain(Retry), all(Bad)),
        (PendingPromotion, Plain(Skip), all(Bad)),
        (PendingPromotion, Plain(Approve), all(Bad)),
        (PendingPromotion, Plain(Reject), all(Bad)),
        (PendingPromotion, Plain(Promote), all(S(D::PendingInput))),
        (PendingPromotion, Override(Approve), all(Bad)),
        (PendingPromotion, Override(Reject), all(Bad)),
        (PendingPromotion, OverrideWithoutReason, all(Bad)),
        (Queued, Plain(Abort), all(S(D::Aborted))),
        (Queued, Plain(Pause), all(S(D::Paused))),
        (Queued, Plain(Resume), all(Bad)),
        (Queued, Plain(Retry), all(Bad)),
        (Queued, Plain(Skip), all(Bad)),
        (Queued, Plain(Approve), all(Bad)),
        (Queued, Plain(Reject), all(Bad)),
        (Queued, Plain(Promote), all(Bad)),
        (Queued, Override(Approve), all(Bad)),
        (Queued, Override(Reject), all(Bad)),
        (Queued, OverrideWithoutReason, all(Bad)),
    ];
    let setups = [PendingApproval, FailedTask, RunningTask, Paused, PendingPromotion, Queued];
    let acts = [Abort, Pause, Resume, Retry, Skip, Approve, Reject, Promote];
    for s in setups {
        for a in acts.iter().map(|a| Plain(*a)).chain([Override(Approve), Override(Reject), OverrideWithoutReason]) {
            assert!(table.iter().any(|(ts, ta, _)| *ts == s && *ta == a), "no row for {s:?} × {a:?}");
        }
    }
    for (setup, act, want) in table {
        for (actor, want) in actors.iter().zip(want) {
            let mut st = gated(*setup);
            let before = st.clone();
            let mut fx = Effects::default();
            let (action, input) = match act {
                Plain(a) => (*a, why("because")),
                Override(a) => (*a, ActionInput { reason: Some("hotfix".into()), override_approval: true }),
                OverrideWithoutReason => (Approve, ActionInput { reason: None, override_approval: true }),
            };
            let r = apply_action(&mut st, action, actor, input, Timestamp(10), &mut fx);
            let failed = r.is_err();
            if !failed {
                advance(&mut st, Timestamp(10), OPEN, &mut fx);
            }
            let got = outcome(r, &st);
            assert_eq!(got, *want, "{setup:?} × {act:?} by {}", actor.name);
            if failed {
                assert_eq!(st, before, "{setup:?} × {act:?} by {}: a refused action changes nothing", actor.name);
            }
        }
    }
}

const RELEASE_ADMIN_ROLE: &str = crate::rbac::RELEASE_ADMIN;

/// What pages offer ([`actions_in`]) is what [`apply_action`] takes: in every state, an action
/// is refused for the deployment's status exactly when it is not offered.
#[test]
fn offered_actions_are_the_ones_apply_action_takes() {
    use Setup::*;
    let approver = ["approver".to_string()];
    let ann = Actor { name: "ann", roles: &approver, may_override: false };
    let acts = [
        Action::Abort,
        Action::Pause,
        Action::Resume,
        Action::Retry,
        Action::Skip,
        Action::Approve,
        Action::Reject,
        Action::Promote,
    ];
    for setup in [PendingApproval, FailedTask, RunningTask, Paused, PendingPromotion, Queued] {
        let status = gated(setup).deployment.status;
        for a in acts {
            let mut st = gated(setup);
            let r = apply_action(&mut st, a, &ann, why("because"), Timestamp(10), &mut Effects::default());
            let refused = matches!(r, Err(Error::InvalidState(_)));
            assert_eq!(refused, !actions_in(status).contains(&a), "{setup:?} ({status}) × {a}: {r:?}");
        }
        // Rollback is the engine's; offered wherever the deployment can still be rolled back.
        assert_eq!(actions_in(status).contains(&Action::Rollback), matches!(status, D::PendingPromotion | D::Error));
    }
    // Ended or being rolled back: nothing but a rollback of a finished one.
    for ended in [D::Aborted, D::RollingBack] {
        assert!(actions_in(ended).is_empty(), "{ended}");
    }
    for done in [D::Completed, D::Failed] {
        assert_eq!(actions_in(done), &[Action::Rollback], "{done}");
    }
}

#[test]
fn n_distinct_approvers_and_self_approval() {
    let approval = TaskSpec::Approval {
        role: None,
        approvals: Some(2),
        allow_self_approval: Some(true),
        timeout: None,
        on_timeout: None,
    };
    let mut st = state(vec![stage("prod", Progression::Automatic, vec![approval, run()])]);
    st.deployment.created_by = "sam".into();
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    assert_eq!(
        st.deployment.message.as_deref(),
        Some("task 1 (approval) of stage prod waits for approval (0 of 2 approvals)")
    );
    let sam = Actor { name: "sam", roles: &[], may_override: false };
    let ann = Actor { name: "ann", roles: &[], may_override: false };
    apply_action(&mut st, Action::Approve, &sam, why("mine, fine"), Timestamp(1), &mut fx).unwrap();
    advance(&mut st, Timestamp(1), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::PendingInput, "self-approval allowed, but one more is needed");
    assert!(st.deployment.message.as_deref().unwrap().ends_with("(1 of 2 approvals)"));
    let again = apply_action(&mut st, Action::Approve, &sam, ActionInput::default(), Timestamp(2), &mut fx);
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    apply_action(&mut st, Action::Approve, &ann, ActionInput::default(), Timestamp(3), &mut fx).unwrap();
    advance(&mut st, Timestamp(3), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::InProgress);
    assert_eq!(st.tasks[0].status, T::Completed);
    let by: Vec<_> = st.tasks[0].approvals.iter().map(|v| v.by.as_str()).collect();
    assert_eq!(by, ["sam", "ann"]);
    assert_eq!(st.tasks[0].decided_by.as_deref(), Some("ann"));

    // An override completes at once and is recorded as such, with its reason.
    let approval = TaskSpec::Approval {
        role: Some("approver".into()),
        approvals: Some(3),
        allow_self_approval: None,
        timeout: None,
        on_timeout: None,
    };
    let mut st = state(vec![stage("prod", Progression::Automatic, vec![approval])]);
    let before = st.clone();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    let root = Actor { name: "root", roles: &[], may_override: true };
    let input = ActionInput { reason: Some("incident 42".into()), override_approval: true };
    apply_action(&mut st, Action::Approve, &root, input, Timestamp(1), &mut fx).unwrap();
    advance(&mut st, Timestamp(1), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Completed);
    let v = &st.tasks[0].approvals[0];
    assert!(v.overridden && v.by == "root" && v.comment.as_deref() == Some("incident 42"));
    let ev = diff_events(Some(&before), &st, "root");
    let e = ev.iter().find(|e| e.kind == "task.approval").expect("an approval event");
    assert_eq!(e.detail["override"], true);
    assert_eq!(e.detail["comment"], "incident 42");
}

#[test]
fn diff_reports_status_changes_only() {
    let a = state(vec![stage("dev", Progression::Automatic, vec![run()])]);
    let mut b = a.clone();
    let mut fx = Effects::default();
    advance(&mut b, Timestamp(0), OPEN, &mut fx);
    let ev = diff_events(Some(&a), &b, "admin");
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(diff_events(Some(&b), &b, "admin").is_empty());
}

fn approval(timeout_ms: Option<u64>, on_timeout: Option<drover_types::OnTimeout>) -> TaskSpec {
    TaskSpec::Approval {
        role: None,
        approvals: None,
        allow_self_approval: None,
        timeout: timeout_ms.map(|ms| DurationSpec(Duration::from_millis(ms))),
        on_timeout,
    }
}

#[test]
fn an_unclaimed_task_fails_at_its_stage_dispatch_timeout_naming_the_environment() {
    let mut dev = stage("dev", Progression::Automatic, vec![run()]);
    dev.dispatch_timeout = Some(DurationSpec(Duration::from_millis(1000)));
    let mut st = state(vec![dev]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    assert_eq!(st.tasks[0].due_at, Some(Timestamp(1000)));
    // Paused: no agent may claim it, so the clock stops; resumed, it starts again.
    apply_action(&mut st, Action::Pause, &ADMIN, ActionInput::default(), Timestamp(500), &mut fx).unwrap();
    assert_eq!(st.tasks[0].due_at, None);
    assert!(expire_deadlines(&mut st, Timestamp(2000), &mut fx).is_empty());
    apply_action(&mut st, Action::Resume, &ADMIN, ActionInput::default(), Timestamp(2000), &mut fx).unwrap();
    advance(&mut st, Timestamp(2000), OPEN, &mut fx);
    assert_eq!(st.tasks[0].due_at, Some(Timestamp(3000)));
    assert!(expire_deadlines(&mut st, Timestamp(2999), &mut fx).is_empty());
    assert_eq!(expire_deadlines(&mut st, Timestamp(3000), &mut fx).len(), 1);
    advance(&mut st, Timestamp(3000), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Error);
    let m = st.deployment.message.clone().unwrap();
    assert!(m.contains("no agent of environment dev claimed task 1 (run) of stage dev within 1s"), "{m}");
    // Retry gives it a new dispatch deadline; a claim replaces it by the task's own.
    apply_action(&mut st, Action::Retry, &ADMIN, ActionInput::default(), Timestamp(4000), &mut fx).unwrap();
    advance(&mut st, Timestamp(4000), OPEN, &mut fx);
    assert_eq!(st.tasks[0].due_at, Some(Timestamp(5000)));
    claim(
        &mut st,
        (0, 0, None),
        "a1",
        "x1",
        Timestamp(4500),
        Timing::new(Duration::from_secs(5), Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(st.tasks[0].due_at, Some(Timestamp(4500 + 3_660_000)), "1h default run timeout + 60s grace");
}

#[test]
fn a_task_past_its_timeout_and_the_grace_fails_on_the_orchestrator() {
    let t = TaskSpec::Run {
        command: CommandSpec::Shell("sleep 100".into()),
        timeout: Some(DurationSpec(Duration::from_secs(2))),
    };
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![t])]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    claim(
        &mut st,
        (0, 0, None),
        "a1",
        "x1",
        Timestamp(100),
        Timing::new(Duration::from_secs(30), Duration::from_secs(1)),
    )
    .unwrap();
    assert_eq!(st.tasks[0].due_at, Some(Timestamp(3100)));
    // Heartbeats keep the lease alive; the deadline still passes.
    assert!(expire_deadlines(&mut st, Timestamp(3099), &mut fx).is_empty());
    assert_eq!(expire_deadlines(&mut st, Timestamp(3100), &mut fx).len(), 1);
    assert_eq!(st.tasks[0].status, T::Failed);
    // The agent's late result is a duplicate: the task stays failed.
    assert_eq!(
        record_result(&mut st, "x1", Outcome::Completed, Some(0), None, Timestamp(3200)).unwrap(),
        ResultStatus::Duplicate
    );
    advance(&mut st, Timestamp(3200), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Error);
    let m = st.deployment.message.clone().unwrap();
    assert!(m.contains("ran past its timeout of 2s on agent a1 (attempt x1)"), "{m}");
}

#[test]
fn an_undecided_approval_is_rejected_or_aborts_at_its_timeout() {
    use drover_types::OnTimeout;
    for (on, status, says) in [
        (None, D::Failed, "rejected by system: no decision within 1s"),
        (Some(OnTimeout::Reject), D::Failed, "rejected by system: no decision within 1s"),
        (Some(OnTimeout::Abort), D::Aborted, "aborted: task 1 (approval) of stage dev had no decision within 1s"),
    ] {
        let mut st = state(vec![stage("dev", Progression::Automatic, vec![approval(Some(1000), on), run()])]);
        let mut fx = Effects::default();
        advance(&mut st, Timestamp(0), OPEN, &mut fx);
        assert_eq!(st.deployment.status, D::PendingInput);
        assert!(expire_deadlines(&mut st, Timestamp(999), &mut fx).is_empty());
        assert_eq!(expire_deadlines(&mut st, Timestamp(1000), &mut fx).len(), 1);
        advance(&mut st, Timestamp(1000), OPEN, &mut fx);
        assert_eq!(st.deployment.status, status, "{on:?}");
        assert!(st.deployment.message.as_deref().unwrap().contains(says), "{on:?}: {:?}", st.deployment.message);
        assert!(!st.deployment.holds_stage, "the stage is free again");
        assert_eq!(st.tasks[1].status, T::Pending, "the next task never ran");
    }
    // A pause stops an approval's clock; resume starts it again.
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![approval(Some(1000), None)])]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    apply_action(&mut st, Action::Pause, &ADMIN, ActionInput::default(), Timestamp(500), &mut fx).unwrap();
    assert_eq!(st.tasks[0].due_at, None);
    assert!(expire_deadlines(&mut st, Timestamp(5000), &mut fx).is_empty());
    apply_action(&mut st, Action::Resume, &ADMIN, ActionInput::default(), Timestamp(5000), &mut fx).unwrap();
    advance(&mut st, Timestamp(5000), OPEN, &mut fx);
    assert_eq!((st.deployment.status, st.tasks[0].due_at), (D::PendingInput, Some(Timestamp(6000))));
    // Without a timeout, an approval waits.
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![approval(None, None)])]);
    let mut fx = Effects::default();
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    assert_eq!(st.tasks[0].due_at, None);
    // Approved before the deadline: nothing expires.
    let mut st = state(vec![stage("dev", Progression::Automatic, vec![approval(Some(1000), None)])]);
    advance(&mut st, Timestamp(0), OPEN, &mut fx);
    apply_action(&mut st, Action::Approve, &ADMIN, ActionInput::default(), Timestamp(500), &mut fx).unwrap();
    assert!(expire_deadlines(&mut st, Timestamp(5000), &mut fx).is_empty());
    advance(&mut st, Timestamp(5000), OPEN, &mut fx);
    assert_eq!(st.deployment.status, D::Completed);
}
