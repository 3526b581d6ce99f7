//! Agents on tokens: client credentials or private_key_jwt, automatic re-fetch after a revoked
//! token, and a clear `error` for the in-flight task when an agent is cut off. Both backends.

use drover_testkit::{Backend, TestServer, wait_for, wait_status};
use drover_types::{Action, DeploymentStatus as DS, TaskStatus};
use serde_json::json;

drover_testkit::on_both_backends!(
    agent_with_a_key_runs_tasks_and_names_the_operator,
    cut_off_agents_fail_their_task_clearly,
    hostile_labels_are_refused_and_change_nothing,
    agents_report_their_version,
    a_poll_held_across_the_agents_removal_takes_no_work
);

const SLOW: &str = "application: slow\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"sleep 30\", timeout: 60s}]\n";

async fn agent_with_a_key_runs_tasks_and_names_the_operator(b: Backend) -> anyhow::Result<()> {
    use drover_server::oauth::jwt::{Alg, SigningKey, generate};
    let mut s = TestServer::start(b).await?;
    let admin = s.admin();
    let der = generate(Alg::EdDSA).map_err(anyhow::Error::msg)?;
    let key = SigningKey::from_pkcs8(&der, None).map_err(anyhow::Error::msg)?;
    let cred = admin
        .register_agent(&drover_types::NewAgent {
            name: "keyed".into(),
            environment: "dev".into(),
            labels: Default::default(),
            jwks: Some(json!({"keys": [key.public_jwk()]})),
        })
        .await?;
    assert!(cred.secret.is_empty(), "a key-authenticated agent has no secret");
    let clients = admin.clients().await?;
    let c = clients.iter().find(|c| c.client_id == "keyed").expect("the agent is a client");
    assert_eq!((c.agent.as_deref(), c.roles.clone()), (Some("keyed"), vec!["agent".to_string()]));
    let work = s.dir.path().join("keyed");
    s.run_agent_with(
        "keyed",
        drover_client::ClientAuth::PrivateKey { pkcs8_der: der, kid: Some(key.kid.clone()) },
        &work,
        2,
    )?;
    admin
        .apply_yaml(
            "application: k\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"echo by=$DROVER_STARTED_BY\"}]\n",
        )
        .await?;
    let d = admin.deploy("k", "1").await?;
    let d = wait_status(&admin, d.id, DS::Completed).await?;
    assert_eq!(d.created_by, "admin");
    let logs = admin.logs(d.id, 0).await?;
    assert!(logs.lines.iter().any(|l| l.line.contains("by=admin")), "{:?}", logs.lines);
    s.shutdown().await;
    Ok(())
}

async fn cut_off_agents_fail_their_task_clearly(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let admin = s.admin();
    let cred = admin.add_agent("worker", "dev").await?;
    let work = s.dir.path().join("worker");
    s.run_agent("worker", &cred.secret, &work, 2)?;
    admin.apply_yaml(SLOW).await?;

    // Revoked tokens: the running task ends in a clear error; the agent fetches a new token by
    // itself (its secret still works), so a retry runs.
    let d = admin.deploy("slow", "1").await?;
    wait_for(&admin, d.id, std::time::Duration::from_secs(30), |d| {
        d.stages[0].tasks[0].status == TaskStatus::InProgress
    })
    .await?;
    admin.revoke_client_tokens("worker").await?;
    let e = wait_status(&admin, d.id, DS::Error).await?;
    let m = e.message.clone().unwrap_or_default();
    assert!(m.contains("agent worker was cut off") && m.contains("tokens were revoked"), "{m}");
    admin.act(d.id, Action::Abort, None).await?;
    let d2 = admin.deploy("slow", "2").await?;
    wait_for(&admin, d2.id, std::time::Duration::from_secs(30), |d| {
        d.stages[0].tasks[0].status == TaskStatus::InProgress
    })
    .await?;

    // Disabled: the task fails at once, naming the agent and why; the agent is refused from then on.
    admin.update_client("worker", &drover_types::ClientUpdate { disabled: Some(true), ..Default::default() }).await?;
    let e = wait_status(&admin, d2.id, DS::Error).await?;
    let m = e.message.clone().unwrap_or_default();
    assert!(m.contains("agent worker was cut off") && m.contains("disabled"), "{m}");
    let again = s.agent_client("worker", &cred.secret);
    let err = again
        .poll(&drover_types::agent::PollRequest { running: vec![], capacity: 1, wait_ms: 0, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    // Enabled again, it picks up the retry.
    admin.update_client("worker", &drover_types::ClientUpdate { disabled: Some(false), ..Default::default() }).await?;
    admin.act(d2.id, Action::Retry, None).await?;
    wait_for(&admin, d2.id, std::time::Duration::from_secs(30), |d| {
        d.stages[0].tasks[0].status == TaskStatus::InProgress
    })
    .await?;
    admin.act(d2.id, Action::Abort, None).await?;
    s.shutdown().await;
    Ok(())
}

/// Alive, and not a zombie.
fn running(pid: i32) -> bool {
    drover_agent::groups::stat(pid).is_some_and(|p| p.state != 'Z' && p.state != 'X')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abort_ends_the_whole_process_group_term_then_kill() -> anyhow::Result<()> {
    let mut s = TestServer::start(Backend::Sqlite).await?;
    s.agent("dev-1", "dev").await?;
    let c = s.admin();
    let pids = s.data_dir().join("pids");
    // A child that ignores TERM, and one that does not; the leader waits for both.
    c.apply_yaml(&format!(
        "application: g\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{{type: run, command: \"(trap '' TERM; exec sleep 300) & echo $! > {p}.tmp; sleep 301 & echo $! >> {p}.tmp; mv {p}.tmp {p}; wait\"}}]\n",
        p = pids.display()
    ))
    .await?;
    let d = c.deploy("g", "1").await?;
    let mut started: Vec<i32> = Vec::new();
    for _ in 0..500 {
        if let Ok(t) = std::fs::read_to_string(&pids) {
            started = t.lines().filter_map(|l| l.trim().parse().ok()).collect();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(started.len(), 2);
    c.act(d.id, Action::Abort, None).await?;
    // The agent hears it at its next heartbeat, sends TERM, and KILL after its grace (2 s here).
    for _ in 0..500 {
        if started.iter().all(|p| !running(*p)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(started.iter().all(|p| !running(*p)), "{started:?} outlived the aborted task");
    s.shutdown().await;
    Ok(())
}

async fn hostile_labels_are_refused_and_change_nothing(b: Backend) -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let good = labels(&[("region", "eu"), ("k8s.io/zone", "eu-1a")]);
    let mut new =
        drover_types::NewAgent { name: "web-1".into(), environment: "prod".into(), labels: good.clone(), jwks: None };
    admin.register_agent(&new).await?;
    let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), "v".to_string())).collect();
    let long_key = "k".repeat(64);
    let long_value = "v".repeat(254);
    let hostile: Vec<(&str, BTreeMap<String, String>)> = vec![
        ("33 labels", many),
        ("an empty key", labels(&[("", "v")])),
        ("a key with a space", labels(&[("re gion", "eu")])),
        ("a key of 64 characters", labels(&[(&long_key, "v")])),
        ("a non-ASCII key", labels(&[("régión", "eu")])),
        ("a key with a quote", labels(&[("a\"b", "eu")])),
        ("a value with a newline", labels(&[("region", "eu\nus")])),
        ("a value with NUL", labels(&[("region", "eu\0")])),
        ("a value of 254 characters", labels(&[("region", &long_value)])),
    ];
    for (what, l) in &hostile {
        let e = admin.set_agent_labels("web-1", l).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{what}: {e}");
        new.name = "web-2".into();
        new.labels = l.clone();
        let e = admin.register_agent(&new).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "registering with {what}: {e}");
    }
    let agents = admin.agents().await?;
    assert_eq!(agents.len(), 1, "nothing registered: {agents:?}");
    assert_eq!(agents[0].labels, good, "the labels are unchanged");
    assert_eq!(admin.set_agent_labels("nobody", &good).await.unwrap_err().status(), Some(404));
    // agent.manage is global: an app-admin of an application cannot relabel agents.
    admin
        .add_operator(&drover_types::NewOperator {
            name: "ann".into(),
            roles: vec!["app-admin".into()],
            password: Some("app-admin-password".into()),
            email: None,
        })
        .await?;
    let e = s.client("ann", "app-admin-password").set_agent_labels("web-1", &labels(&[("region", "us")])).await;
    assert_eq!(e.unwrap_err().status(), Some(403));
    assert_eq!(admin.agents().await?[0].labels, good);
    // Within the bounds, labels are replaced as a whole (none: removed).
    admin.set_agent_labels("web-1", &labels(&[("region", &"v".repeat(253))])).await?;
    admin.set_agent_labels("web-1", &BTreeMap::new()).await?;
    assert!(admin.agents().await?[0].labels.is_empty());
    s.shutdown().await;
    Ok(())
}

/// The version an agent reports at its polls is listed with it; one that is not a version is
/// refused and changes nothing.
async fn agents_report_their_version(b: Backend) -> anyhow::Result<()> {
    use drover_types::agent::PollRequest;
    let mut s = TestServer::start(b).await?;
    let admin = s.admin();
    let cred = admin.add_agent("worker", "dev").await?;
    let raw = admin.add_agent("raw", "dev").await?;
    assert!(admin.agents().await?.iter().all(|a| a.version.is_none()), "none before a poll");
    s.run_agent("worker", &cred.secret, &s.dir.path().join("worker"), 1)?;
    admin
        .apply_yaml("application: v\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"true\"}]\n")
        .await?;
    let d = admin.deploy("v", "1").await?;
    wait_status(&admin, d.id, DS::Completed).await?;
    let version = |name: &'static str| {
        let admin = admin.clone();
        async move { admin.agents().await.unwrap().into_iter().find(|a| a.name == name).unwrap().version }
    };
    assert_eq!(version("worker").await.as_deref(), Some(env!("CARGO_PKG_VERSION")));

    let raw_client = s.agent_client("raw", &raw.secret);
    let poll = |v: &str| PollRequest {
        running: vec![],
        capacity: 1,
        wait_ms: 0,
        agent_version: Some(v.into()),
        ..Default::default()
    };
    raw_client.poll(&poll("2.0.0-rc.1+build.5")).await?;
    assert_eq!(version("raw").await.as_deref(), Some("2.0.0-rc.1+build.5"));
    let long = "1".repeat(65);
    for hostile in ["1.0; rm -rf /", "<script>", "", "1.0\n", &long, "versión"] {
        let e = raw_client.poll(&poll(hostile)).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{hostile:?}: {e}");
    }
    assert_eq!(version("raw").await.as_deref(), Some("2.0.0-rc.1+build.5"), "unchanged");
    // Another change within the minute is not written yet (an agent flipping its version
    // cannot turn its polls into writes).
    raw_client.poll(&poll("3.0.0")).await?;
    assert_eq!(version("raw").await.as_deref(), Some("2.0.0-rc.1+build.5"), "at most one write a minute");
    // Without one (an older agent), the last reported stays.
    raw_client.poll(&PollRequest { running: vec![], capacity: 1, wait_ms: 0, ..Default::default() }).await?;
    assert_eq!(version("raw").await.as_deref(), Some("2.0.0-rc.1+build.5"));
    s.shutdown().await;
    Ok(())
}

/// A long poll is held for seconds: an agent removed (or disabled) meanwhile gets no work from
/// it. The task stays ready and another agent of the environment runs it.
async fn a_poll_held_across_the_agents_removal_takes_no_work(b: Backend) -> anyhow::Result<()> {
    use drover_types::agent::PollRequest;
    let mut s = TestServer::start(b).await?;
    let admin = s.admin();
    admin.create_environment(&drover_types::NewEnvironment { name: "qa".into(), ..Default::default() }).await?;
    let gone = admin.add_agent("gone", "qa").await?;
    let held = s.agent_client("gone", &gone.secret);
    let poll = tokio::spawn(async move {
        held.poll(&PollRequest { running: vec![], capacity: 1, wait_ms: 20_000, ..Default::default() }).await
    });
    // Until the orchestrator holds it (bounded: 10 s).
    let mut holding = false;
    for _ in 0..200 {
        let pools: serde_json::Value = s
            .http()
            .get(format!("{}/api/v1/system/pools", s.url))
            .basic_auth("admin", Some(&s.admin_password))
            .send()
            .await?
            .json()
            .await?;
        if pools
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "agent_polls" && p["waiting"].as_u64() >= Some(1))
        {
            holding = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(holding, "the poll is held");
    admin.delete_agent("gone").await?;
    admin
        .apply_yaml(
            "application: q\nstages:\n  - name: qa\n    environment: qa\n    tasks: [{type: run, command: \"true\"}]\n",
        )
        .await?;
    let d = admin.deploy("q", "1").await?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), poll).await??;
    match answer {
        Ok(r) => assert!(r.tasks.is_empty(), "a removed agent was handed {:?}", r.tasks.len()),
        Err(e) => assert_eq!(e.status(), Some(403), "{e}"),
    }
    // The task is still there for an agent that exists.
    let fresh = admin.add_agent("fresh", "qa").await?;
    s.run_agent("fresh", &fresh.secret, &s.dir.path().join("fresh"), 1)?;
    let done = wait_status(&admin, d.id, DS::Completed).await?;
    assert_eq!(done.stages[0].tasks[0].agent.as_deref(), Some("fresh"));
    s.shutdown().await;
    Ok(())
}
