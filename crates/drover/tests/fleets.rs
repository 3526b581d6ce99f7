//! Fleet stages (`targets: all | rolling`) against a real orchestrator and real agents, on both
//! backends: batches, the failure threshold, retry of the failed agents only, label selection,
//! and an agent that dies mid-batch.

use std::time::Duration;

use drover_testkit::{Backend, TestServer, wait_for, wait_status};
use drover_types::{Action, DeploymentStatus as DS, TaskStatus, WaitReason};

drover_testkit::on_both_backends!(
    rolling_stops_past_max_failures_and_retry_reruns_only_the_failed,
    all_runs_on_every_agent_and_a_killed_agent_fails_its_attempt
);

async fn rolling_stops_past_max_failures_and_retry_reruns_only_the_failed(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let c = s.admin();
    let marks = s.data_dir().join("marks");
    std::fs::create_dir_all(&marks)?;
    for i in 1..=5 {
        s.labelled_agent(&format!("web-{i}"), "prod", &[("region", "eu")]).await?;
    }
    // Same environment, other region: the selector leaves it out.
    s.labelled_agent("us-1", "prod", &[("region", "us")]).await?;
    for a in ["web-2", "web-3"] {
        std::fs::write(marks.join(format!("fail-{a}")), "")?;
    }
    let m = marks.display();
    c.apply_yaml(&format!(
        "application: shop\nstages:\n  - name: prod\n    environment: prod\n    targets: rolling\n    batch: 2\n    \
         max_failures: 1\n    agents: {{labels: {{region: eu}}}}\n    tasks:\n      - type: run\n        command: \
         'if [ -e {m}/fail-$DROVER_AGENT ]; then echo \"failing on $DROVER_AGENT\"; exit 3; fi; echo \"deployed on $DROVER_AGENT\"'\n      \
         - type: run\n        command: 'echo checked $DROVER_AGENT'\n"
    ))
    .await?;
    let d = c.deploy("shop", "1").await?;
    let d = wait_status(&c, d.id, DS::Error).await?;
    let msg = d.message.clone().unwrap_or_default();
    assert!(msg.contains("2 of 5 agents failed, more than max_failures 1"), "{msg}");
    assert!(msg.contains("web-2 (task 1 (run)") && msg.contains("web-3 (task 1 (run)"), "{msg}");
    let stage = &d.stages[0];
    assert_eq!(stage.failed_agents, ["web-2", "web-3"]);
    let rows = &stage.tasks[0].targets;
    let names: Vec<&str> = rows.iter().map(|r| r.agent.as_deref().unwrap()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3", "web-4", "web-5"], "us-1 is not selected");
    let status = |a: &str, task: usize| {
        d.stages[0].tasks[task].targets.iter().find(|r| r.agent.as_deref() == Some(a)).map(|r| r.status)
    };
    // Batch 1: web-1 passed both tasks, web-2 failed (within the threshold). Batch 2: web-3
    // failed (past it), web-4 finished what it had started. Batch 3 (web-5) never started.
    assert_eq!(status("web-1", 1), Some(TaskStatus::Completed));
    assert_eq!(status("web-2", 0), Some(TaskStatus::Failed));
    assert_eq!(status("web-3", 0), Some(TaskStatus::Failed));
    assert_eq!(status("web-4", 1), Some(TaskStatus::Completed));
    assert_eq!(status("web-5", 0), Some(TaskStatus::Pending));
    assert_eq!(rows.iter().map(|r| r.batch.unwrap()).collect::<Vec<_>>(), [1, 1, 2, 2, 3]);
    let w = d.waiting_for.as_ref().expect("an error says why");
    assert!(matches!(w.reason, WaitReason::Error { .. }), "{w:?}");
    // The logs say which agent printed what.
    let logs = c.logs(d.id, 0).await?;
    let line = logs.lines.iter().find(|l| l.line.contains("failing on web-2")).expect("web-2's output");
    assert_eq!(line.agent.as_deref(), Some("web-2"));
    // `drover logs` names the agent of each line of a fleet stage.
    let pw = s.data_dir().join("admin.pw");
    std::fs::write(&pw, &s.admin_password)?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["logs", &d.id.to_string()])
        .env("DROVER_URL", &s.url)
        .env("DROVER_CA_CERT", &s.ca)
        .env("DROVER_USER", "admin")
        .env("DROVER_PASSWORD_FILE", &pw)
        .env_remove("DROVER_PASSWORD")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[prod 1 web-2] stdout: failing on web-2"), "{text}");
    assert!(logs.lines.iter().all(|l| !l.line.contains("web-5")), "web-5 ran nothing");

    // Retry: only web-2 and web-3 run again; then the last batch.
    for a in ["web-2", "web-3"] {
        std::fs::remove_file(marks.join(format!("fail-{a}")))?;
    }
    c.act(d.id, Action::Retry, None).await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    let attempts: Vec<(String, u32)> =
        d.stages[0].tasks[0].targets.iter().map(|r| (r.agent.clone().unwrap(), r.attempt)).collect();
    assert_eq!(
        attempts,
        [("web-1".into(), 1), ("web-2".into(), 2), ("web-3".into(), 2), ("web-4".into(), 1), ("web-5".into(), 1)]
    );
    assert!(d.stages[0].failed_agents.is_empty());
    let logs = c.logs(d.id, 0).await?;
    let deployed: Vec<_> = logs.lines.iter().filter(|l| l.line.starts_with("deployed on")).collect();
    assert_eq!(deployed.len(), 5, "each agent deployed once");
    assert!(deployed.iter().all(|l| l.line.ends_with(l.agent.as_deref().unwrap())));
    // Labels can change later; a started stage keeps the agents it chose.
    c.set_agent_labels("us-1", &[("region".to_string(), "eu".to_string())].into_iter().collect()).await?;
    let agents = c.agents().await?;
    assert_eq!(agents.iter().find(|a| a.name == "us-1").unwrap().labels.get("region").map(String::as_str), Some("eu"));
    s.shutdown().await;
    Ok(())
}

async fn all_runs_on_every_agent_and_a_killed_agent_fails_its_attempt(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start_with(b, Duration::from_secs(2)).await?;
    let c = s.admin();
    for i in 1..=2 {
        s.agent(&format!("node-{i}"), "qa").await?;
    }
    // node-3 is a real `drover agent` process, to be killed with SIGKILL.
    let cred = c.add_agent("node-3", "qa").await?;
    let secret = s.dir.path().join("node-3.secret");
    std::fs::write(&secret, &cred.secret)?;
    let log = std::fs::File::create(s.dir.path().join("node-3.log"))?;
    let mut node3 = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["agent", "--url", &s.url, "--name", "node-3", "--kill-grace", "1s"])
        .arg("--ca-cert")
        .arg(&s.ca)
        .arg("--secret-file")
        .arg(&secret)
        .arg("--work-dir")
        .arg(s.dir.path().join("work-node-3"))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    // node-3 takes long enough to be killed while it runs.
    c.apply_yaml(
        "application: api\nstages:\n  - name: qa\n    environment: qa\n    targets: all\n    tasks:\n      \
         - type: run\n        command: 'if [ \"$DROVER_AGENT\" = node-3 ]; then sleep 8; fi; echo \"ran on $DROVER_AGENT\"'\n",
    )
    .await?;
    let d = c.deploy("api", "1").await?;
    let d = wait_for(&c, d.id, Duration::from_secs(30), |d| {
        let rows = &d.stages[0].tasks[0].targets;
        rows.len() == 3
            && rows.iter().filter(|r| r.status == TaskStatus::Completed).count() == 2
            && rows.iter().any(|r| r.agent.as_deref() == Some("node-3") && r.status == TaskStatus::InProgress)
    })
    .await?;
    // While it runs, the task says where its fleet is.
    let w = d.stages[0].tasks[0].waiting_for.clone().expect("the task says why");
    let WaitReason::Fleet { running, batch, batches, .. } = &w.reason else { panic!("{w:?}") };
    assert_eq!((running.as_slice(), *batch, *batches), (&["node-3".to_string()][..], 1, 1));
    assert!(w.sentence.contains("running on node-3"), "{}", w.sentence);
    node3.kill()?; // SIGKILL: no result, no more heartbeats
    node3.wait()?;
    let d = wait_status(&c, d.id, DS::Error).await?;
    let msg = d.message.clone().unwrap_or_default();
    assert!(msg.contains("1 of 3 agents failed") && msg.contains("node-3") && msg.contains("heartbeats"), "{msg}");
    assert_eq!(d.stages[0].failed_agents, ["node-3"]);
    s.shutdown().await;
    Ok(())
}
