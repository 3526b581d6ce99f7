//! Deployment flows against a real orchestrator (in-process, HTTPS on loopback) and real
//! agents, on both SQLite and PostgreSQL.

use std::path::Path;
use std::time::Duration;

use drover_client::Client;
use drover_testkit::{Backend, TestServer, tarball, unique, wait_for, wait_status};
use drover_types::agent::PollRequest;
use drover_types::{Action, DeploymentStatus as DS, TaskStatus};

drover_testkit::on_both_backends!(
    approval_promotion_and_rollback,
    failure_retry_skip_abort,
    one_deployment_per_stage_in_order,
    manual_promotion_supersedes_older,
    pause_resume_and_wait,
    hooks_keep_current_and_releases_are_pruned,
    lost_heartbeats_move_to_error,
    redelivered_attempts_never_run_twice,
    apply_is_idempotent_and_errors_name_lines,
    artifacts_are_immutable,
    http_check_passes_and_fails,
);

fn app_tar(version: &str) -> Vec<u8> {
    tarball(&[("index.html", &format!("version {version}\n"), 0o644), ("bin/run.sh", "#!/bin/sh\necho hi\n", 0o755)])
}

async fn apply(c: &Client, yaml: &str) -> anyhow::Result<()> {
    c.apply_yaml(yaml).await?;
    Ok(())
}

fn current_target(work: &Path, app: &str) -> String {
    std::fs::read_link(work.join(app).join("current")).map(|p| p.display().to_string()).unwrap_or_default()
}

async fn approval_promotion_and_rollback(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let dev = s.agent("dev-1", "dev").await?;
    let prod = s.agent("prod-1", "production").await?;
    let c = s.admin();
    // Approvals are answered by holders of their role (admin would have to override).
    c.add_operator(&drover_types::NewOperator {
        name: "ann".into(),
        roles: vec!["approver".into()],
        password: Some("ann-password-123".into()),
        email: None,
    })
    .await?;
    let ann = s.client("ann", "ann-password-123");
    apply(
        &c,
        r#"
application: shop
stages:
  - name: dev
    environment: dev
    tasks:
      - type: deploy
      - type: run
        command: grep -q "$DROVER_VERSION" index.html && echo "checked $DROVER_APPLICATION $DROVER_VERSION in $DROVER_ENVIRONMENT"
  - name: production
    environment: production
    tasks:
      - type: approval
        role: approver
      - type: deploy
"#,
    )
    .await?;
    for v in ["1.0", "2.0"] {
        c.push_artifact_bytes("shop", v, app_tar(v)).await?;
        let d = c.deploy("shop", v).await?;
        assert_eq!(d.created_by, "admin");
        let d = wait_status(&c, d.id, DS::PendingInput).await?;
        assert_eq!(d.stages[0].status, "completed");
        assert_eq!(d.stages[1].tasks[0].status, TaskStatus::PendingInput);
        let e = c.act(d.id, Action::Approve, None).await.unwrap_err();
        assert_eq!(e.status(), Some(403), "admin lacks the approver role: {e}");
        let d = ann.act(d.id, Action::Approve, Some("looks good".into())).await?;
        assert_eq!(d.stages[1].tasks[0].decided_by.as_deref(), Some("ann"));
        assert_eq!(d.stages[1].tasks[0].comment.as_deref(), Some("looks good"));
        let d = wait_status(&c, d.id, DS::Completed).await?;
        assert!(d.finished_at.is_some());
        assert_eq!(current_target(&prod, "shop"), format!("releases/{v}"));
        assert_eq!(std::fs::read_to_string(prod.join("shop/current/index.html"))?, format!("version {v}\n"));
        let logs = c.logs(d.id, 0).await?;
        assert!(logs.lines.iter().any(|l| l.line == format!("checked shop {v} in dev")), "{:?}", logs.lines);
    }
    assert_eq!(current_target(&dev, "shop"), "releases/2.0");
    // Roll back deployment 2: version 1.0 again, through the same stages.
    let list = c.deployments(Some("shop"), Some("completed"), None).await?;
    let second = list.iter().find(|d| d.version == "2.0").unwrap().id;
    let r = c.act(second, Action::Rollback, Some("bad release".into())).await?;
    assert_eq!(r.version, "1.0");
    assert_eq!(r.rollback_of, Some(second));
    wait_status(&c, r.id, DS::PendingInput).await?;
    ann.act(r.id, Action::Approve, None).await?;
    wait_status(&c, r.id, DS::Completed).await?;
    assert_eq!(current_target(&prod, "shop"), "releases/1.0");
    // The events tell who did what.
    let ev = c.events(r.id).await?;
    assert_eq!(ev[0].kind, "deployment.created");
    assert!(ev.iter().any(|e| e.kind == "task.status" && e.actor == "ann" && e.detail["to"] == "completed"));
    assert!(ev.iter().any(|e| e.kind == "task.approval" && e.detail["by"] == "ann"));
    assert!(ev.iter().any(|e| e.actor == "agent:prod-1"));
    // A deployment that cannot roll back (nothing earlier) says so.
    let first = list.iter().find(|d| d.version == "1.0").unwrap().id;
    let e = c.act(first, Action::Rollback, None).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    s.shutdown().await;
    Ok(())
}

async fn failure_retry_skip_abort(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    s.agent("dev-1", "dev").await?;
    let c = s.admin();
    let flag = s.dir.path().join("flag");
    apply(
        &c,
        &format!(
            r#"
application: api
stages:
  - name: dev
    environment: dev
    tasks:
      - type: run
        command: echo trying; echo oops >&2; test -f {}
      - type: run
        command: [echo, done]
"#,
            flag.display()
        ),
    )
    .await?;
    // Fails, then retry succeeds with a new attempt.
    let d = c.deploy("api", "1").await?;
    let d = wait_status(&c, d.id, DS::Error).await?;
    let t = &d.stages[0].tasks[0];
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.exit_code, Some(1));
    assert!(t.message.as_deref().unwrap().contains("exit code 1"), "{t:?}");
    // The message says what happened, not what the task printed: output is read (and audited)
    // through the log only.
    assert!(!t.message.as_deref().unwrap().contains("oops"), "no output in the message: {t:?}");
    let log = c.logs(d.id, 0).await?;
    assert!(log.lines.iter().any(|l| l.line == "oops" && l.stream == "stderr"), "{:?}", log.lines);
    assert!(d.message.as_deref().unwrap().contains("task 1 (run) of stage dev failed"), "{:?}", d.message);
    let first_attempt = t.attempt_id.clone();
    std::fs::write(&flag, "")?;
    c.act(d.id, Action::Retry, None).await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    assert_eq!(d.stages[0].tasks[0].attempt, 2);
    assert_ne!(d.stages[0].tasks[0].attempt_id, first_attempt);
    // Fails, then skip.
    std::fs::remove_file(&flag)?;
    let d = c.deploy("api", "2").await?;
    wait_status(&c, d.id, DS::Error).await?;
    let e = c.act(d.id, Action::Promote, None).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "promote does not apply in error: {e}");
    c.act(d.id, Action::Skip, Some("known flaky".into())).await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    assert_eq!(d.stages[0].tasks[0].status, TaskStatus::Skipped);
    assert_eq!(d.stages[0].tasks[0].comment.as_deref(), Some("known flaky"));
    assert_eq!(d.stages[0].tasks[1].status, TaskStatus::Completed);
    // Fails, then abort; abort again is refused.
    let d = c.deploy("api", "3").await?;
    wait_status(&c, d.id, DS::Error).await?;
    let d = c.act(d.id, Action::Abort, Some("giving up".into())).await?;
    assert_eq!(d.status, DS::Aborted);
    assert!(d.message.as_deref().unwrap().contains("giving up"));
    assert_eq!(c.act(d.id, Action::Abort, None).await.unwrap_err().status(), Some(409));
    assert_eq!(c.act(999_999, Action::Abort, None).await.unwrap_err().status(), Some(404));
    s.shutdown().await;
    Ok(())
}

async fn one_deployment_per_stage_in_order(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    s.agent("dev-1", "dev").await?;
    s.agent("dev-2", "dev").await?;
    let c = s.admin();
    apply(
        &c,
        r#"
application: q
stages:
  - name: only
    environment: dev
    tasks:
      - type: run
        command: sleep 0.2
"#,
    )
    .await?;
    let mut ids = Vec::new();
    for v in 1..=4 {
        ids.push(c.deploy("q", &v.to_string()).await?.id);
    }
    // Bounded watch: never two deployments in the stage at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = c.deployments(Some("q"), None, None).await?;
        let active = all.iter().filter(|d| d.status == DS::InProgress).count();
        assert!(active <= 1, "two deployments in one stage: {all:#?}");
        if all.iter().all(|d| d.status == DS::Completed) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not done: {all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut finished = Vec::new();
    for id in &ids {
        finished.push(c.deployment(*id).await?.finished_at.unwrap());
    }
    assert!(finished.windows(2).all(|w| w[0] <= w[1]), "finished out of order: {finished:?}");
    s.shutdown().await;
    Ok(())
}

async fn manual_promotion_supersedes_older(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    s.agent("dev-1", "dev").await?;
    s.agent("prod-1", "production").await?;
    let c = s.admin();
    apply(
        &c,
        r#"
application: m
stages:
  - name: dev
    environment: dev
    tasks: [{type: run, command: "true"}]
  - name: production
    environment: production
    progression: manual
    tasks: [{type: run, command: "true"}]
"#,
    )
    .await?;
    let a = c.deploy("m", "1").await?.id;
    wait_status(&c, a, DS::PendingPromotion).await?;
    let b2 = c.deploy("m", "2").await?.id;
    wait_status(&c, b2, DS::PendingPromotion).await?;
    c.act(b2, Action::Promote, None).await?;
    wait_status(&c, b2, DS::Completed).await?;
    let old = c.deployment(a).await?;
    assert_eq!(old.status, DS::Aborted);
    assert_eq!(old.message.as_deref(), Some(format!("superseded by deployment {b2}").as_str()));
    assert_eq!(c.act(a, Action::Promote, None).await.unwrap_err().status(), Some(409));
    s.shutdown().await;
    Ok(())
}

async fn pause_resume_and_wait(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    s.agent("dev-1", "dev").await?;
    let c = s.admin();
    apply(
        &c,
        r#"
application: w
stages:
  - name: dev
    environment: dev
    tasks:
      - type: wait
        duration: 300ms
      - type: run
        command: echo after-wait
"#,
    )
    .await?;
    let d = c.deploy("w", "1").await?;
    assert_eq!(d.stages[0].tasks[0].status, TaskStatus::InProgress);
    let d = c.act(d.id, Action::Pause, None).await?;
    assert_eq!(d.status, DS::Paused);
    // While paused, the due wait does not move it on.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p = c.deployment(d.id).await?;
    assert_eq!(p.status, DS::Paused);
    assert_eq!(p.stages[0].tasks[1].status, TaskStatus::Pending);
    c.act(d.id, Action::Resume, None).await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    assert_eq!(d.stages[0].tasks[0].status, TaskStatus::Completed);
    assert_eq!(c.act(d.id, Action::Resume, None).await.unwrap_err().status(), Some(409));
    s.shutdown().await;
    Ok(())
}

async fn hooks_keep_current_and_releases_are_pruned(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let work = s.agent("dev-1", "dev").await?;
    let c = s.admin();
    apply(&c, "application: h\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: deploy}]\n").await?;
    c.push_artifact_bytes("h", "1", app_tar("1")).await?;
    wait_status(&c, c.deploy("h", "1").await?.id, DS::Completed).await?;
    assert_eq!(current_target(&work, "h"), "releases/1");
    // A failing pre-deploy hook fails the task and leaves current alone.
    let bad_pre = tarball(&[
        ("index.html", "2", 0o644),
        ("pre-deploy", "echo checking; echo missing config >&2; exit 3\n", 0o755),
    ]);
    c.push_artifact_bytes("h", "2", bad_pre).await?;
    let d = wait_status(&c, c.deploy("h", "2").await?.id, DS::Error).await?;
    let m = d.stages[0].tasks[0].message.clone().unwrap();
    assert!(m.contains("pre-deploy hook failed") && m.contains("exit code 3") && !m.contains("missing config"), "{m}");
    assert!(c.logs(d.id, 0).await?.lines.iter().any(|l| l.line == "missing config"), "the hook's output is in the log");
    assert_eq!(current_target(&work, "h"), "releases/1");
    c.act(d.id, Action::Abort, None).await?;
    // A failing post-deploy hook switches current back.
    let bad_post = tarball(&[("index.html", "3", 0o644), ("post-deploy", "exit 4\n", 0o755)]);
    c.push_artifact_bytes("h", "3", bad_post).await?;
    let d = wait_status(&c, c.deploy("h", "3").await?.id, DS::Error).await?;
    assert!(d.stages[0].tasks[0].message.clone().unwrap().contains("switched back to releases/1"));
    assert_eq!(current_target(&work, "h"), "releases/1");
    c.act(d.id, Action::Abort, None).await?;
    // A corrupt artifact fails clearly.
    c.push_artifact_bytes("h", "junk", b"not a tarball".to_vec()).await?;
    let d = wait_status(&c, c.deploy("h", "junk").await?.id, DS::Error).await?;
    assert!(d.stages[0].tasks[0].message.clone().unwrap().contains("unpacking"), "{:?}", d.stages[0].tasks[0].message);
    c.act(d.id, Action::Abort, None).await?;
    // Seven more releases: five are kept, current among them.
    for v in 10..17 {
        c.push_artifact_bytes("h", &v.to_string(), app_tar(&v.to_string())).await?;
        wait_status(&c, c.deploy("h", &v.to_string()).await?.id, DS::Completed).await?;
    }
    let mut kept: Vec<String> = std::fs::read_dir(work.join("h/releases"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    kept.sort();
    assert_eq!(kept, vec!["12", "13", "14", "15", "16"]);
    assert_eq!(current_target(&work, "h"), "releases/16");
    s.shutdown().await;
    Ok(())
}

async fn lost_heartbeats_move_to_error(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start_with(b, Duration::from_millis(800)).await?;
    let c = s.admin();
    let cred = c.add_agent("ghost", "dev").await?;
    apply(
        &c,
        "application: g\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"true\"}]\n",
    )
    .await?;
    let d = c.deploy("g", "1").await?;
    // An agent that takes the task and then goes silent.
    let ghost = s.agent_client("ghost", &cred.secret);
    let got = ghost.poll(&PollRequest { running: vec![], capacity: 1, wait_ms: 5000, ..Default::default() }).await?;
    assert_eq!(got.tasks.len(), 1);
    let d = wait_status(&c, d.id, DS::Error).await?;
    let m = d.message.clone().unwrap();
    assert!(
        m.contains("agent ghost") && m.contains("task 1 (run) of stage dev") && m.contains(&got.tasks[0].attempt_id),
        "{m}"
    );
    // The ghost's late result is ignored; a live agent finishes the retry.
    let late = ghost
        .attempt_result(
            &got.tasks[0].attempt_id,
            &drover_types::agent::AttemptResult {
                outcome: drover_types::agent::Outcome::Completed,
                exit_code: Some(0),
                message: None,
                logs: vec![],
            },
        )
        .await?;
    assert_eq!(late.status, "duplicate");
    c.act(d.id, Action::Retry, None).await?;
    s.agent("live", "dev").await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    assert_eq!(d.stages[0].tasks[0].agent.as_deref(), Some("live"));
    s.shutdown().await;
    Ok(())
}

async fn redelivered_attempts_never_run_twice(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let c = s.admin();
    let cred = c.add_agent("a1", "dev").await?;
    let marker = s.dir.path().join("runs.log");
    for app in ["r1", "r2"] {
        apply(
            &c,
            &format!(
                "application: {app}\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{{type: run, command: \"echo $DROVER_ATTEMPT_ID >> {}\"}}]\n",
                marker.display()
            ),
        )
        .await?;
    }
    let raw = s.agent_client("a1", &cred.secret);
    // Case 1: the poll response was lost: the agent never saw the attempt, so it runs it once.
    let d1 = c.deploy("r1", "1").await?;
    let lost = raw
        .poll(&PollRequest { running: vec![], capacity: 1, wait_ms: 5000, ..Default::default() })
        .await?
        .tasks
        .remove(0);
    let work = s.dir.path().join("agents/a1");
    // Case 2: the agent had started attempt 2 when it died: it must not run it again.
    let d2 = c.deploy("r2", "2").await?;
    let cut = raw
        .poll(&PollRequest { running: vec![lost.attempt_id.clone()], capacity: 1, wait_ms: 5000, ..Default::default() })
        .await?
        .tasks
        .remove(0);
    std::fs::create_dir_all(work.join(".drover/attempts"))?;
    std::fs::write(work.join(".drover/attempts").join(&cut.attempt_id), "started\n")?;
    s.run_agent("a1", &cred.secret, &work, 2)?;
    let done = wait_status(&c, d1.id, DS::Completed).await?;
    assert_eq!(done.stages[0].tasks[0].attempt_id.as_deref(), Some(lost.attempt_id.as_str()));
    let e = wait_status(&c, d2.id, DS::Error).await?;
    assert!(e.message.clone().unwrap().contains("restarted while running this attempt"), "{:?}", e.message);
    let runs = std::fs::read_to_string(&marker)?;
    assert_eq!(runs.lines().collect::<Vec<_>>(), vec![lost.attempt_id.as_str()], "each attempt ran at most once");
    s.shutdown().await;
    Ok(())
}

async fn apply_is_idempotent_and_errors_name_lines(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let c = s.admin();
    let yaml = "application: shop\npipeline: shop-release\nstages:\n  - name: dev\n    environment: dev-eu\n    tasks:\n      - type: deploy\n";
    let r1 = c.apply_yaml(yaml).await?;
    assert_eq!(r1.outcome, "created");
    assert_eq!(r1.created_environments, vec!["dev-eu".to_string()]);
    let r2 = c.apply_yaml(yaml).await?;
    assert_eq!(r2.outcome, "unchanged");
    assert!(r2.created_environments.is_empty());
    assert_eq!(r2.pipeline.updated_at, r1.pipeline.updated_at);
    // Deploying a version without its artifact names what is missing.
    let e = c.deploy("shop-release", "9.9").await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(e.to_string().contains("artifact shop 9.9 not found"), "{e}");
    let r3 = c.apply_yaml(&yaml.replace("- type: deploy", "- type: wait\n        duration: 1s")).await?;
    assert_eq!(r3.outcome, "updated");
    let bad = yaml.replace("      - type: deploy", "      - type: deploy\n        colour: blue");
    let e = c.apply_yaml(&bad).await.unwrap_err();
    match &e {
        drover_client::Error::Api { status, message, .. } => {
            assert_eq!(*status, 422);
            assert!(message.contains("colour") && message.contains("line 8"), "{message}");
        }
        other => panic!("{other}"),
    }
    // Semantic errors, found after parsing (some by the orchestrator, against what exists),
    // name their line as well.
    let base =
        "application: shop\npipeline: shop-release\nstages:\n  - name: dev\n    environment: dev-eu\n    tasks:\n";
    let table: &[(&str, &str, usize)] = &[
        ("      - type: approval\n        role: aprover\n", "unknown role \"aprover\"", 8),
        (
            "      - type: webhook\n        url: https://ci.example.com/job\n        auth_profile: jenkins\n",
            "no authentication profile \"jenkins\"",
            9,
        ),
        ("      - type: webhook\n        url: http://127.0.0.1:9/hook\n", "stages[0].tasks[0].url", 8),
        (
            "      - type: wait\n        duration: 1s\n  - name: dev\n    environment: x\n    tasks: [{type: deploy}]\n",
            "duplicate stage name",
            9,
        ),
        ("      - type: wait\n        duration: soon\n", "invalid duration", 8),
        (
            "      - type: wait\n        duration: 1s\n        role: x\n",
            "field `role` is not valid for a `wait` task",
            9,
        ),
    ];
    for (tasks, says, line) in table {
        let e = c.apply_yaml(&format!("{base}{tasks}")).await.unwrap_err();
        assert_eq!(e.status(), Some(422), "{e}");
        let m = e.to_string();
        assert!(m.contains(says) && m.contains(&format!("line {line}")), "{says}: {m}");
    }
    assert_eq!(c.pipelines().await?.len(), 1);
    s.shutdown().await;
    Ok(())
}

async fn artifacts_are_immutable(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let c = s.admin();
    let name = unique("art");
    let a = c.push_artifact_bytes(&name, "1.0", b"first".to_vec()).await?;
    assert_eq!(a.size, 5);
    assert_eq!(a.sha256, "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e");
    let again = c.push_artifact_bytes(&name, "1.0", b"first".to_vec()).await?;
    assert_eq!(again.created_at, a.created_at, "same content: unchanged");
    let e = c.push_artifact_bytes(&name, "1.0", b"second".to_vec()).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert_eq!(c.artifacts(Some(&name)).await?.len(), 1);
    // A wrong checksum header is refused and nothing is stored.
    let f = s.dir.path().join("blob");
    std::fs::write(&f, b"payload")?;
    let e = c.push_artifact(&name, "2.0", &f, Some(&"0".repeat(64)), |_| {}).await.unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert_eq!(c.artifacts(Some(&name)).await?.len(), 1);
    let e = c.push_artifact_bytes(&name, "../evil", b"x".to_vec()).await.unwrap_err();
    assert!(matches!(e.status(), Some(404) | Some(422) | Some(400)), "{e}");
    s.shutdown().await;
    Ok(())
}

async fn http_check_passes_and_fails(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    s.agent("dev-1", "dev").await?;
    let c = s.admin();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "fine" }))
        .route("/bad", axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for (path, want) in [("ok", DS::Completed), ("bad", DS::Error)] {
        let app = unique("hc");
        apply(
            &c,
            &format!(
                "application: {app}\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{{type: http-check, url: \"http://127.0.0.1:{port}/{path}\", expect_status: 200, timeout: 1s}}]\n"
            ),
        )
        .await?;
        let d = wait_for(&c, c.deploy(&app, "1").await?.id, Duration::from_secs(30), |d| d.status == want).await?;
        if want == DS::Error {
            let m = d.stages[0].tasks[0].message.clone().unwrap();
            assert!(m.contains("did not answer 200") && m.contains("500"), "{m}");
        }
    }
    s.shutdown().await;
    Ok(())
}

/// A line that is not UTF-8 is logged with replacement characters and the output after it is
/// still read: 20,000 more lines (over a pipe's buffer) and the task ends on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_not_utf8_does_not_stop_the_reading() -> anyhow::Result<()> {
    let mut s = TestServer::start(Backend::Sqlite).await?;
    let c = s.admin();
    s.agent("dev-1", "dev").await?;
    c.apply_yaml(
        "application: bytes\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: run\n        \
         timeout: 60s\n        command: \"printf 'bad \\\\377 byte\\\\n'; seq 1 20000; echo done-reading\"\n",
    )
    .await?;
    let d = c.deploy("bytes", "1").await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    let mut lines = Vec::new();
    let mut after = 0;
    loop {
        let page = c.logs(d.id, after).await?;
        if page.lines.is_empty() {
            break;
        }
        after = page.next;
        lines.extend(page.lines.into_iter().filter(|l| l.stream == "stdout").map(|l| l.line));
    }
    assert_eq!(lines.first().map(String::as_str), Some("bad \u{FFFD} byte"), "{:?}", lines.first());
    assert_eq!(lines.last().map(String::as_str), Some("done-reading"));
    assert_eq!(lines.len(), 20_002);
    s.shutdown().await;
    Ok(())
}
