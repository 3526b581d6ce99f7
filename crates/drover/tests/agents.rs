//! Agents on tokens: client credentials or private_key_jwt, automatic re-fetch after a revoked
//! token, and a clear `error` for the in-flight task when an agent is cut off. Both backends.

use drover_testkit::{Backend, TestServer, TestUser, free_uid, reachable_dir, tarball, wait_for, wait_status};
use drover_types::{Action, DeploymentStatus as DS, NewEnvironment, SetVariable, TaskStatus};
use serde_json::json;

drover_testkit::on_both_backends!(
    agent_with_a_key_runs_tasks_and_names_the_operator,
    cut_off_agents_fail_their_task_clearly,
    hostile_labels_are_refused_and_change_nothing,
    agents_report_their_version,
    a_poll_held_across_the_agents_removal_takes_no_work,
    agents_are_placed_under_the_grant_ceiling_and_approved
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

/// The agent's secret in a file of its own, readable by root alone (as the portal and
/// `drover agents add --secret-out` tell operators to keep it).
fn secret_file(dir: &std::path::Path, secret: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("agent.secret");
    std::fs::write(&f, secret)?;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// The hostile review's first attack: a deployer's artifact whose hooks and tasks try to become
/// their agent — read its secret file (in hex, which masking would not know), its environment
/// through `/proc/$PPID`, its journal — and whose hook looks for the stage's secrets. With a
/// task user, each gets nothing; the run task gets its secret, masked in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_cannot_become_its_agent() -> anyhow::Result<()> {
    let user = TestUser::create("drt")?;
    let mut s = TestServer::start(Backend::Sqlite).await?;
    let admin = s.admin();
    const PW: &str = "Shop/Secret+Pw:42";
    admin
        .create_environment(&NewEnvironment {
            name: "prod".into(),
            applications: vec!["shop".into()],
            ..Default::default()
        })
        .await?;
    admin.set_variable("prod", "SHOP_PW", &SetVariable { value: PW.into(), secret: true }).await?;
    let cred = admin.add_agent("prod-1", "prod").await?;
    let keep = reachable_dir()?;
    let work = keep.path().join("work");
    let secret = secret_file(keep.path(), &cred.secret)?;
    // One variable of this process's environment goes through on purpose; the others must not.
    let vars: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| {
            !["PATH", "HOME", "LANG"].contains(&k.as_str())
                && !k.starts_with("DROVER_")
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect();
    assert!(vars.len() >= 2, "the test process has an environment: {vars:?}");
    let (passed, withheld) = (vars[0].clone(), vars[1..].to_vec());
    let task_user = drover_agent::users::TaskUser::parse(&user.name).map_err(anyhow::Error::msg)?;
    let (creds, env_name) = (secret.clone(), passed.clone());
    s.run_agent_tuned("prod-1", drover_client::ClientAuth::Secret(cred.secret.clone()), &work, 4, move |cfg| {
        cfg.task_users = vec![task_user];
        cfg.task_env = vec![env_name];
        cfg.credential_files = vec![creds];
        // Task processes started by the task spawner, as `drover agent` starts them (the
        // symlink test below has the agent start them itself).
        cfg.spawner = Some(env!("CARGO_BIN_EXE_drover").into());
    })?;
    let probe = format!(
        "echo \"uid=$(id -u) groups=$(id -G)\"\n\
         grep -E '^(Uid|Gid|Groups):' /proc/self/status\n\
         if od -An -tx1 {secret} >/dev/null 2>&1; then echo LEAK: secret file; od -An -tx1 {secret}; else echo 'secret file: denied'; fi\n\
         if tr '\\0' '\\n' < /proc/$PPID/environ >/dev/null 2>&1; then echo LEAK: agent environment; else echo 'agent environment: denied'; fi\n\
         if ls {work}/.drover/attempts >/dev/null 2>&1; then echo LEAK: journal; else echo 'journal: denied'; fi\n\
         if ls /proc/$PPID/fd >/dev/null 2>&1; then echo LEAK: agent fds; else echo 'agent fds: denied'; fi\n\
         if tr '\\0' '\\n' < /proc/{agent}/environ >/dev/null 2>&1; then echo LEAK: agent process; else echo 'agent process: denied'; fi\n\
         if ls /proc/{agent}/fd >/dev/null 2>&1; then echo LEAK: agent process fds; else echo 'agent process fds: denied'; fi\n\
         echo \"parent: $(tr '\\0' ' ' < /proc/$PPID/cmdline)\"\n\
         echo \"hook secret: ${{SHOP_PW:-none}}\"\n",
        secret = secret.display(),
        work = work.display(),
        agent = std::process::id()
    );
    let artifact = tarball(&[("index.html", "1", 0o644), ("post-deploy", &probe, 0o755)]);
    admin.push_artifact_bytes("shop", "1", artifact).await?;
    admin
        .apply_yaml(
            "application: shop\nstages:\n  - name: prod\n    environment: prod\n    tasks:\n      - type: deploy\n      - type: run\n        command: [env]\n      - type: run\n        command: \"echo run secret: ${SHOP_PW}; echo home=$HOME\"\n",
        )
        .await?;
    let d = admin.deploy("shop", "1").await?;
    let d = wait_status(&admin, d.id, DS::Completed).await?;
    let lines: Vec<String> = admin.logs(d.id, 0).await?.lines.into_iter().map(|l| l.line).collect();
    let all = lines.join("\n");
    assert!(!all.contains("LEAK"), "{all}");
    for denied in [
        "secret file: denied",
        "agent environment: denied",
        "journal: denied",
        "agent fds: denied",
        "agent process: denied",
        "agent process fds: denied",
    ] {
        assert!(lines.iter().any(|l| l == denied), "{denied}: {all}");
    }
    assert!(lines.iter().any(|l| *l == format!("uid={} groups={}", user.uid, user.gid)), "{all}");
    // Real, effective, saved and filesystem ids all the task user's; no supplementary group.
    let (u, g) = (user.uid, user.gid);
    assert!(lines.iter().any(|l| *l == format!("Uid:\t{u}\t{u}\t{u}\t{u}")), "{all}");
    assert!(lines.iter().any(|l| *l == format!("Gid:\t{g}\t{g}\t{g}\t{g}")), "{all}");
    assert!(lines.iter().any(|l| l.trim_end() == "Groups:"), "{all}");
    assert!(lines.iter().any(|l| l == "hook secret: none"), "hooks get no secret: {all}");
    assert!(
        lines.iter().any(|l| l.starts_with("parent: ") && l.contains("task-spawner")),
        "started by the spawner: {all}"
    );
    assert!(lines.iter().any(|l| l == "run secret: ***"), "a run task gets it, masked: {all}");
    assert!(lines.iter().any(|l| l == "home=/nonexistent"), "the task user's HOME: {all}");
    assert!(!all.contains(&cred.secret) && !all.contains(&hex::encode(&cred.secret)[..16]), "{all}");
    // The exec'd `env` shows the whole environment a task starts with.
    let names: Vec<&str> = lines.iter().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    for expected in ["PATH", "HOME", "LANG", "DROVER_APPLICATION", "DROVER_RELEASE_DIR", passed.as_str()] {
        assert!(names.contains(&expected), "{expected}: {names:?}");
    }
    assert!(!names.contains(&"SHOP_PW"), "a task gets only the secrets it refers to: {names:?}");
    assert!(lines.iter().any(|l| l == "PATH=/usr/local/bin:/usr/bin:/bin"), "{all}");
    for w in &withheld {
        assert!(!names.contains(&w.as_str()), "{w} of the agent's environment reached the task: {names:?}");
    }
    // The agent says how it keeps its tasks, and the release tree is the task user's.
    let a = admin.agents().await?.into_iter().find(|a| a.name == "prod-1").expect("listed");
    assert_eq!(a.isolation.as_deref(), Some("task-user"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(work.join("shop/releases/1/index.html"))?.uid(), user.uid);
    assert_eq!(std::fs::metadata(work.join(".drover"))?.mode() & 0o777, 0o700);
    s.shutdown().await;
    Ok(())
}

/// A task that swaps its release tree for a symlink to a directory of root's does not make the
/// agent unpack into it or prune it: the next deploy fails as the task user would, and nothing
/// outside the tree is touched. A `setsid` child is gone after its task, and an agent without
/// task users says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planted_symlink_does_not_steer_the_agent_and_nothing_outlives_its_task() -> anyhow::Result<()> {
    let uid = free_uid();
    let mut s = TestServer::start(Backend::Sqlite).await?;
    let admin = s.admin();
    let cred = admin.add_agent("dev-1", "dev").await?;
    let keep = reachable_dir()?;
    let (work, victim) = (keep.path().join("work"), keep.path().join("victim"));
    for i in 0..7 {
        std::fs::create_dir_all(victim.join(format!("r{i}")))?;
    }
    std::fs::write(victim.join("keep.txt"), "precious")?;
    let secret = secret_file(keep.path(), &cred.secret)?;
    s.run_agent_tuned("dev-1", drover_client::ClientAuth::Secret(cred.secret.clone()), &work, 4, move |cfg| {
        cfg.task_users = vec![drover_agent::users::TaskUser::parse(&format!("{uid}:{uid}")).unwrap()];
        cfg.credential_files = vec![secret];
    })?;
    admin
        .apply_yaml(&format!(
            "application: trap\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: deploy\n      - type: run\n        command: \"cd ../.. && rm -rf releases && ln -s {} releases; setsid sleep 300 & echo planted\"\n",
            victim.display()
        ))
        .await?;
    for v in 1..=2 {
        admin.push_artifact_bytes("trap", &v.to_string(), tarball(&[("index.html", "x", 0o644)])).await?;
    }
    let first = admin.deploy("trap", "1").await?;
    wait_status(&admin, first.id, DS::Completed).await?;
    assert!(std::fs::symlink_metadata(work.join("trap/releases"))?.file_type().is_symlink(), "planted");
    // Nothing of the task's uid survives it: the setsid child was killed with the rest.
    assert_eq!(drover_agent::users::processes_of(uid), Vec::<i32>::new());
    let second = admin.deploy("trap", "2").await?;
    let d = wait_status(&admin, second.id, DS::Error).await?;
    let m = d.stages[0].tasks[0].message.clone().unwrap_or_default();
    assert!(m.contains("Permission denied"), "refused as the task user would be: {m}");
    let mut left: Vec<String> = std::fs::read_dir(&victim)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    left.sort();
    assert_eq!(left, ["keep.txt", "r0", "r1", "r2", "r3", "r4", "r5", "r6"], "nothing outside the tree was touched");
    assert_eq!(std::fs::read_to_string(victim.join("keep.txt"))?, "precious");
    admin.act(d.id, Action::Abort, None).await?;
    // An agent without task users runs tasks as itself, and says so.
    let plain = admin.add_agent("plain", "dev").await?;
    s.run_agent("plain", &plain.secret, &s.dir.path().join("plain"), 1)?;
    let mut isolation = None;
    for _ in 0..200 {
        isolation = admin.agents().await?.into_iter().find(|a| a.name == "plain").and_then(|a| a.isolation);
        if isolation.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(isolation.as_deref(), Some("none"));
    s.shutdown().await;
    Ok(())
}

/// The agent refuses to start, naming the path or user, when a task could reach what is the
/// agent's: it is not root, the work dir is out of the task user's reach or in its hands, or a
/// task user can read the credentials.
#[tokio::test]
async fn an_agent_refuses_to_start_when_its_tasks_could_reach_it() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let uid = free_uid();
    let user = drover_agent::users::TaskUser::parse(&format!("{uid}:{uid}")).map_err(anyhow::Error::msg)?;
    let keep = reachable_dir()?;
    let start = |work: std::path::PathBuf, creds: Vec<std::path::PathBuf>| {
        let user = user.clone();
        async move {
            let cfg = drover_agent::AgentConfig {
                url: "https://127.0.0.1:9".into(),
                ca_cert: None,
                name: "x".into(),
                secret: "s".into(),
                auth: None,
                work_dir: work,
                capacity: 1,
                kill_grace: std::time::Duration::from_secs(1),
                task_users: vec![user],
                task_env: vec![],
                credential_files: creds,
                spawner: None,
            };
            let (_tx, rx) = tokio::sync::watch::channel(false);
            match tokio::time::timeout(std::time::Duration::from_secs(30), drover_agent::run(cfg, rx)).await {
                Ok(Err(e)) => e.to_string(),
                other => panic!("the agent started: {other:?}"),
            }
        }
    };
    // Out of reach: under a directory only root may enter.
    let closed = keep.path().join("closed");
    std::fs::create_dir(&closed)?;
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700))?;
    let e = start(closed.join("work"), vec![]).await;
    assert!(e.contains("cannot reach the work dir") && e.contains(&closed.join("work").display().to_string()), "{e}");
    // In the task user's hands.
    let theirs = keep.path().join("theirs");
    std::fs::create_dir(&theirs)?;
    std::os::unix::fs::chown(&theirs, Some(uid), Some(uid))?;
    let e = start(theirs.join("work"), vec![]).await;
    assert!(e.contains(&theirs.display().to_string()) && e.contains("can be changed by task user"), "{e}");
    // Credentials a task user can read.
    let open = keep.path().join("agent.secret");
    std::fs::write(&open, "secret")?;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644))?;
    let e = start(keep.path().join("work"), vec![open.clone()]).await;
    assert!(e.contains(&open.display().to_string()) && e.contains("can read it"), "{e}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The hostile review's second attack: whoever manages agents (sysops-admin, api-sysadmin)
/// registers a rogue agent in an environment with secrets. Refused, naming variable.manage;
/// where there are no secrets they may, and in a production environment the agent waits for a
/// holder of variable.manage to approve it, receiving nothing until then.
async fn agents_are_placed_under_the_grant_ceiling_and_approved(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let admin = s.admin();
    admin
        .create_environment(&NewEnvironment {
            name: "bank-prod".into(),
            applications: vec!["bank".into()],
            ..Default::default()
        })
        .await?;
    admin.set_variable("bank-prod", "BANK_PW", &SetVariable { value: "Bank-Secret-99".into(), secret: true }).await?;
    admin
        .create_environment(&NewEnvironment {
            name: "shop-prod".into(),
            kind: Some(drover_types::EnvironmentKind::Production),
            ..Default::default()
        })
        .await?;
    let pw = s.add_operator("sys", &["sysops-admin"]).await;
    let sys = s.client("sys", &pw);

    // Refused in the environment with secrets: nothing created.
    let e = sys.add_agent("rogue", "bank-prod").await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("variable.manage"), "{e}");
    assert!(admin.agents().await?.iter().all(|a| a.name != "rogue"));
    assert!(admin.clients().await?.iter().all(|c| c.client_id != "rogue"), "no client either");
    // The same for a client holding api-sysadmin.
    let ci = admin.create_client("ops-bot", &["api-sysadmin".to_string()]).await?;
    let bot = drover_client::Client::new(
        &s.url,
        Some(&s.ca),
        drover_client::Credentials::ClientCredentials {
            client_id: ci.client_id.clone(),
            auth: drover_client::ClientAuth::Secret(ci.client_secret.clone()),
        },
    )?;
    assert_eq!(bot.add_agent("rogue2", "bank-prod").await.unwrap_err().status(), Some(403));
    // Relabelling one there is placing it too.
    let bank = admin.add_agent("bank-1", "bank-prod").await?;
    assert_eq!(bank.status, drover_types::AgentStatus::Approved, "registered by a holder of variable.manage");
    let labels = std::collections::BTreeMap::from([("tier".to_string(), "web".to_string())]);
    assert_eq!(sys.set_agent_labels("bank-1", &labels).await.unwrap_err().status(), Some(403));
    assert!(admin.agents().await?.iter().find(|a| a.name == "bank-1").unwrap().labels.is_empty());

    // No secrets: allowed, but a production environment's new agent waits for approval.
    let cred = sys.add_agent("shop-1", "shop-prod").await?;
    assert_eq!(cred.status, drover_types::AgentStatus::Pending);
    s.run_agent("shop-1", &cred.secret, &s.dir.path().join("shop-1"), 1)?;
    admin
        .apply_yaml("application: shop\nstages:\n  - name: p\n    environment: shop-prod\n    tasks: [{type: run, command: \"echo ran\"}]\n")
        .await?;
    let d = admin.deploy("shop", "1").await?;
    // It polls (it is seen) and is handed nothing; the deployment says what it waits for.
    let d = wait_for(&admin, d.id, std::time::Duration::from_secs(30), |d| {
        d.waiting_for
            .as_ref()
            .is_some_and(|w| w.sentence.contains("wait for approval") && w.sentence.contains("shop-1"))
    })
    .await?;
    let seen = |admin: drover_client::Client| async move {
        admin.agents().await.unwrap().into_iter().find(|a| a.name == "shop-1").unwrap()
    };
    for _ in 0..200 {
        if seen(admin.clone()).await.last_seen_at.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let a = seen(admin.clone()).await;
    assert!(a.last_seen_at.is_some() && a.status == drover_types::AgentStatus::Pending, "{a:?}");
    let d = admin.deployment(d.id).await?;
    assert_eq!(d.stages[0].tasks[0].status, TaskStatus::Ready, "a pending agent receives nothing");
    assert!(d.stages[0].tasks[0].agent.is_none());
    // Approving needs variable.manage.
    assert_eq!(sys.approve_agent("shop-1").await.unwrap_err().status(), Some(403));
    assert_eq!(admin.approve_agent("shop-1").await?.status, drover_types::AgentStatus::Approved);
    wait_status(&admin, d.id, DS::Completed).await?;
    let audit = admin.audit(None, Some("POST /api/v1/agents/{name}/approve"), None, Some(50)).await?;
    assert!(
        audit.iter().any(|e| e.entry.principal.contains("admin")
            && e.entry.target.contains("shop-1")
            && e.entry.outcome == "success"),
        "the approval is on record: {audit:?}"
    );
    // A development environment without secrets: approved at once. Once secrets are set there,
    // an agent nobody with variable.manage registered or approved gets no work until one does.
    admin.create_environment(&NewEnvironment { name: "dev".into(), ..Default::default() }).await?;
    assert_eq!(sys.add_agent("dev-1", "dev").await?.status, drover_types::AgentStatus::Approved);
    admin.set_variable("dev", "DEV_PW", &SetVariable { value: "dev-secret-42".into(), secret: true }).await?;
    let status = |admin: drover_client::Client| async move {
        admin.agents().await.unwrap().into_iter().find(|a| a.name == "dev-1").unwrap().status
    };
    assert_eq!(status(admin.clone()).await, drover_types::AgentStatus::Pending);
    admin.approve_agent("dev-1").await?;
    assert_eq!(status(admin.clone()).await, drover_types::AgentStatus::Approved);

    // Re-keying an agent's client is placing it too: a role holding client.manage and
    // agent.manage, without variable.manage, gives no new secret or key to an agent in an
    // environment with secrets.
    admin
        .create_role(&drover_types::Role {
            name: "agent-keeper".into(),
            privileges: vec!["agent.manage".into(), "client.manage".into(), "agent.read".into()],
            built_in: false,
            description: None,
        })
        .await?;
    let kpw = s.add_operator("keeper", &["agent-keeper"]).await;
    let keeper = s.client("keeper", &kpw);
    let e = keeper.regenerate_client_secret("bank-1", std::time::Duration::from_secs(3600)).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let jwks = drover_types::ClientUpdate { jwks: Some(json!({"keys": []})), ..Default::default() };
    assert_eq!(keeper.update_client("bank-1", &jwks).await.unwrap_err().status(), Some(403));
    s.shutdown().await;
    Ok(())
}

/// The task spawner starts processes as the task user, with exactly the environment asked for,
/// and says who the leader was even of a process that is over before the agent could look (the
/// group journal needs it: the benchmark's `true` tasks found this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_task_spawner_starts_processes_as_their_user() -> anyhow::Result<()> {
    use std::os::fd::OwnedFd;
    use tokio::io::AsyncReadExt;
    let uid = free_uid();
    let spawner = drover_agent::spawner::Spawner::new(std::path::Path::new(env!("CARGO_BIN_EXE_drover")));
    let pipes = || -> anyhow::Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
        use rustix::pipe::{PipeFlags, pipe_with};
        Ok((pipe_with(PipeFlags::CLOEXEC)?, pipe_with(PipeFlags::CLOEXEC)?))
    };
    for _ in 0..50 {
        let ((_out_r, out_w), (_err_r, err_w)) = pipes()?;
        let env = [("PATH".to_string(), "/usr/bin:/bin".to_string())];
        let mut p =
            spawner.spawn(uid, uid, "/bin/true".into(), vec![], std::path::Path::new("/"), &env, out_w, err_w).await?;
        assert!(p.leader.start > 0 && p.leader.pid == p.pid as i32, "{:?}", p.leader);
        assert!(p.wait().await?.success());
    }
    let ((out_r, out_w), (_err_r, err_w)) = pipes()?;
    let env = [("ONLY".to_string(), "this".to_string())];
    let args = vec!["-c".to_string(), "id -u; id -G; env".to_string()];
    let mut p = spawner.spawn(uid, uid, "/bin/sh".into(), args, std::path::Path::new("/"), &env, out_w, err_w).await?;
    let mut text = String::new();
    tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?.read_to_string(&mut text).await?;
    assert!(p.wait().await?.success());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], [uid.to_string(), uid.to_string()], "{text}");
    assert!(lines.contains(&"ONLY=this") && !lines.iter().any(|l| l.starts_with("HOME=")), "{text}");
    // Root is refused.
    let ((_r, w), (_r2, w2)) = pipes()?;
    assert!(spawner.spawn(0, 0, "/bin/true".into(), vec![], std::path::Path::new("/"), &[], w, w2).await.is_err());
    Ok(())
}
