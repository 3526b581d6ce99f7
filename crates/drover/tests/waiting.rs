//! Every waiting thing says why (`waiting_for`), and every wait has a deadline: the dispatch
//! timeout of a task no agent claims, the orchestrator's own enforcement of a task's timeout,
//! and approval timeouts. Against a real orchestrator, on both backends.

use std::time::Duration;

use drover_client::Client;
use drover_testkit::{Backend, TestServer, tarball, wait_for, wait_status};
use drover_types::agent::{AttemptEvents, PollRequest};
use drover_types::{
    Action, AgentAvailability, Deployment, DeploymentStatus as DS, NewOperator, TaskStatus, WaitReason,
};

drover_testkit::on_both_backends!(every_wait_says_why, every_wait_has_a_deadline);

fn reason(d: &Deployment) -> &WaitReason {
    &d.waiting_for.as_ref().unwrap_or_else(|| panic!("deployment {} says nothing: {d:#?}", d.id)).reason
}

fn sentence(d: &Deployment) -> &str {
    &d.waiting_for.as_ref().unwrap().sentence
}

async fn push(c: &Client, app: &str, v: &str) -> anyhow::Result<()> {
    c.push_artifact_bytes(app, v, tarball(&[("index.html", v, 0o644)])).await?;
    Ok(())
}

async fn every_wait_says_why(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let c = s.admin();
    s.agent("dev-1", "dev").await?;
    // A viewer of application w only (through a scoped group): no agent.read.
    c.add_operator(&NewOperator {
        name: "vera".into(),
        roles: vec![],
        password: Some("viewer-password-1".into()),
        email: None,
    })
    .await?;
    c.create_access_group(&drover_types::AccessGroup {
        name: "w-viewers".into(),
        roles: vec!["viewer".into()],
        operators: vec!["vera".into()],
        applications: vec!["w".into()],
        ..Default::default()
    })
    .await?;
    let viewer = s.client("vera", "viewer-password-1");
    c.apply_yaml(
        "application: w\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: deploy}]\n  \
         - name: production\n    environment: production\n    progression: manual\n    tasks:\n      \
         - {type: approval, role: approver}\n      - {type: deploy}\n",
    )
    .await?;
    push(&c, "w", "1").await?;
    let d = c.deploy("w", "1").await?;
    // Pending promotion: who may promote.
    let d = wait_status(&c, d.id, DS::PendingPromotion).await?;
    let WaitReason::Promotion { stage, roles } = reason(&d) else { panic!("{d:#?}") };
    assert_eq!(stage, "production");
    assert!(roles.iter().any(|r| r == "release-admin") && roles.iter().any(|r| r == "deployer"), "{roles:?}");
    assert!(!roles.iter().any(|r| r == "viewer"), "{roles:?}");
    // Pending approval: the role and how many hold it (nobody yet, then one operator).
    c.act(d.id, Action::Promote, None).await?;
    let d = wait_status(&c, d.id, DS::PendingInput).await?;
    let WaitReason::Approval { role, holders, needed, .. } = reason(&d) else { panic!("{d:#?}") };
    assert_eq!((role.as_deref(), *holders, *needed), (Some("approver"), 0, 1));
    assert!(sentence(&d).contains("role approver on w (0 hold it)"), "{}", sentence(&d));
    c.add_operator(&NewOperator {
        name: "amy".into(),
        roles: vec!["approver".into()],
        password: Some("approver-password-1".into()),
        email: None,
    })
    .await?;
    let d = c.deployment(d.id).await?;
    let WaitReason::Approval { holders, .. } = reason(&d) else { panic!("{d:#?}") };
    assert_eq!(*holders, 1);
    // The task itself carries it too; the tasks after it wait for it.
    let prod = &d.stages[1];
    assert_eq!(prod.tasks[0].waiting_for.as_ref().map(|w| &w.reason), d.waiting_for.as_ref().map(|w| &w.reason));
    assert!(matches!(prod.tasks[1].waiting_for.as_ref().unwrap().reason, WaitReason::Task { task_index: 0, .. }));
    // Paused: by whom.
    c.act(d.id, Action::Pause, None).await?;
    let d = c.deployment(d.id).await?;
    assert_eq!(reason(&d), &WaitReason::Paused { by: "admin".into() });
    c.act(d.id, Action::Resume, None).await?;
    // Approved: the production deploy waits for an agent — none registered for production.
    s.client("amy", "approver-password-1").act(d.id, Action::Approve, None).await?;
    let d = wait_for(&c, d.id, Duration::from_secs(30), |d| d.stages[1].tasks[1].status == TaskStatus::Ready).await?;
    let WaitReason::Agent { environment, availability, deadline, .. } = reason(&d) else { panic!("{d:#?}") };
    assert_eq!((environment.as_str(), *availability), ("production", AgentAvailability::NoneRegistered));
    assert!(deadline.is_some(), "the dispatch timeout");
    assert!(sentence(&d).contains("no agent is registered for environment production"), "{}", sentence(&d));
    assert_eq!(d.status, DS::InProgress);
    // Registered but never started: none online; names only for callers with agent.read.
    c.add_agent("prod-1", "production").await?;
    let d = c.deployment(d.id).await?;
    let WaitReason::Agent { availability, agents, .. } = reason(&d) else { panic!("{d:#?}") };
    assert_eq!(*availability, AgentAvailability::NoneOnline);
    assert_eq!(agents.as_ref().unwrap()[0].name, "prod-1");
    assert!(sentence(&d).contains("prod-1 never seen"), "{}", sentence(&d));
    let seen_by_viewer = viewer.deployment(d.id).await?;
    let WaitReason::Agent { availability, agents, .. } = reason(&seen_by_viewer) else { panic!() };
    assert_eq!((*availability, agents.is_none()), (AgentAvailability::NoneOnline, true));
    assert!(!sentence(&seen_by_viewer).contains("prod-1"), "{}", sentence(&seen_by_viewer));
    // Lists carry it as well.
    let listed = c.deployments(None, None, Some(10)).await?;
    let mine = listed.iter().find(|x| x.id == d.id).unwrap();
    assert!(matches!(reason(mine), WaitReason::Agent { .. }));
    c.act(d.id, Action::Abort, None).await?;
    let done = wait_status(&c, d.id, DS::Aborted).await?;
    assert!(done.waiting_for.is_none(), "an ended deployment waits for nothing");

    // Queued behind a deployment left in error, which keeps its stage: which one, and how to
    // free it.
    c.apply_yaml(
        "application: q\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"exit 3\"}]\n",
    )
    .await?;
    let first = c.deploy("q", "1").await?;
    let first = wait_status(&c, first.id, DS::Error).await?;
    let WaitReason::Error { stage, task_index, message, actions } = reason(&first) else { panic!("{first:#?}") };
    assert_eq!((stage.as_str(), *task_index), ("dev", 0));
    assert!(message.contains("exit code 3"), "{message}");
    assert_eq!(actions, &[Action::Retry, Action::Skip, Action::Abort]);
    let second = c.deploy("q", "2").await?;
    let second = c.deployment(second.id).await?;
    assert_eq!(second.status, DS::Queued);
    let WaitReason::Stage { stage, deployment, status, actions } = reason(&second) else { panic!("{second:#?}") };
    assert_eq!((stage.as_str(), *deployment, *status), ("dev", first.id, DS::Error));
    assert_eq!(actions, &[Action::Retry, Action::Skip, Action::Abort]);
    assert!(
        sentence(&second)
            .contains(&format!("queued behind deployment {}, which holds stage dev and is error", first.id)),
        "{}",
        sentence(&second)
    );
    c.act(first.id, Action::Abort, None).await?;
    wait_status(&c, second.id, DS::Error).await?;
    s.shutdown().await;
    Ok(())
}

async fn every_wait_has_a_deadline(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start_configured(b, |cfg| cfg.task_timeout_grace = Duration::from_millis(500)).await?;
    let c = s.admin();
    // No agent ever claims the task: the stage's dispatch timeout fails it, naming the environment.
    c.apply_yaml(
        "application: nd\nstages:\n  - name: prod\n    environment: nowhere\n    dispatch_timeout: 1s\n    \
         tasks: [{type: run, command: \"true\"}]\n",
    )
    .await?;
    let d = c.deploy("nd", "1").await?;
    let d = wait_status(&c, d.id, DS::Error).await?;
    let m = d.message.clone().unwrap();
    assert!(m.contains("no agent of environment nowhere claimed task 1 (run) of stage prod within 1s"), "{m}");
    assert!(matches!(reason(&d), WaitReason::Error { .. }));
    c.act(d.id, Action::Abort, None).await?;

    // An agent runs a task past its timeout (it hangs and keeps heartbeating): the orchestrator
    // fails it after the grace and tells the agent to stop.
    let cred = c.add_agent("stuck", "dev").await?;
    c.apply_yaml(
        "application: to\nstages:\n  - name: dev\n    environment: dev\n    \
         tasks: [{type: run, command: \"sleep 600\", timeout: 1s}]\n",
    )
    .await?;
    let d = c.deploy("to", "1").await?;
    let stuck = s.agent_client("stuck", &cred.secret);
    let got = stuck.poll(&PollRequest { running: vec![], capacity: 1, wait_ms: 5000, ..Default::default() }).await?;
    let attempt = got.tasks[0].attempt_id.clone();
    let running = c.deployment(d.id).await?;
    let WaitReason::Running { agent, deadline, .. } = reason(&running) else { panic!("{running:#?}") };
    assert_eq!(agent, "stuck");
    assert!(deadline.is_some());
    let mut told_to_stop = false;
    for _ in 0..200 {
        let r = stuck.attempt_events(&attempt, &AttemptEvents { logs: vec![] }).await?;
        if r.cancel {
            told_to_stop = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(told_to_stop, "the heartbeat answers cancel once the orchestrator gave up");
    let d = wait_status(&c, d.id, DS::Error).await?;
    let m = d.message.clone().unwrap();
    assert!(m.contains("ran past its timeout of 1s on agent stuck"), "{m}");
    c.act(d.id, Action::Abort, None).await?;

    // Approvals: rejected or aborted when undecided.
    c.apply_yaml(
        "application: ap\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      \
         - {type: approval, timeout: 1s}\n",
    )
    .await?;
    c.apply_yaml(
        "application: ab\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      \
         - {type: approval, timeout: 1s, on_timeout: abort}\n",
    )
    .await?;
    let rejected = c.deploy("ap", "1").await?;
    let aborted = c.deploy("ab", "1").await?;
    let pending = c.deployment(aborted.id).await?;
    let WaitReason::Approval { deadline, on_timeout, .. } = reason(&pending) else { panic!("{pending:#?}") };
    assert!(deadline.is_some());
    assert_eq!(*on_timeout, Some(drover_types::OnTimeout::Abort));
    let r = wait_status(&c, rejected.id, DS::Failed).await?;
    assert!(r.message.as_deref().unwrap().contains("rejected by system: no decision within 1s"), "{:?}", r.message);
    let a = wait_status(&c, aborted.id, DS::Aborted).await?;
    assert!(a.message.as_deref().unwrap().contains("had no decision within 1s"), "{:?}", a.message);
    s.shutdown().await;
    Ok(())
}
