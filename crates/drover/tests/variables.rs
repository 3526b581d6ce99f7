//! Variables and secret variables against a real orchestrator and real agents, on both
//! backends: precedence, errors at apply and at start, who may set and read them, and a secret
//! a command prints (plain, base64, percent-encoded) stored and streamed only as `***`.

use drover_testkit::{Backend, TestServer, wait_status};
use drover_types::{DeploymentStatus as DS, NewEnvironment, SetVariable};
use futures_util::StreamExt;

drover_testkit::on_both_backends!(precedence_and_errors_at_apply_and_start, secrets_are_write_only_and_masked);

fn plain(v: &str) -> SetVariable {
    SetVariable { value: v.into(), secret: false }
}

async fn precedence_and_errors_at_apply_and_start(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let c = s.admin();
    s.agent("dev-1", "dev").await?;
    c.set_variable("dev", "B", &plain("environment")).await?;
    c.set_variable("dev", "C", &plain("environment")).await?;
    // A value with quotes and a `;` does not change the shell command it is used in.
    c.set_variable("dev", "TRICKY", &plain("a\"; echo INJECTED; \"")).await?;
    c.set_variable("dev", "ONLY_ENV", &plain("e")).await?;
    // A secret the task does not refer to is not handed to it (and dev, open to every
    // application, could not give it to this one).
    c.set_variable("dev", "UNUSED_SECRET", &SetVariable { value: "not-for-you".into(), secret: true }).await?;
    let pipeline = "application: vars\nvariables:\n  A: pipeline\n  B: pipeline\n  C: pipeline\nstages:\n  - name: dev\n    \
                    environment: dev\n    variables:\n      C: stage\n    tasks:\n      - type: run\n        command: \
                    'echo \"A=${A} B=${B} C=${C} env=$C tricky=${TRICKY} only=${ONLY_ENV} unused=[$UNUSED_SECRET] escaped=$${HOME:+set}\"'\n";
    c.apply_yaml(pipeline).await?;
    let d = c.deploy("vars", "1").await?;
    let d = wait_status(&c, d.id, DS::Completed).await?;
    let logs = c.logs(d.id, 0).await?;
    let out: Vec<&str> = logs.lines.iter().filter(|l| l.stream == "stdout").map(|l| l.line.as_str()).collect();
    assert_eq!(
        out,
        ["A=pipeline B=environment C=stage env=stage tricky=a\"; echo INJECTED; \" only=e unused=[] escaped=set"],
        "stage > environment > pipeline; values are environment variables too"
    );

    // Unknown references are refused at apply, with their line; a name Drover owns too.
    let e = c.apply_yaml(&pipeline.replace("${B}", "${NOPE}")).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    let m = e.to_string();
    assert!(m.contains("stages[0].tasks[0].command: unknown variable ${NOPE}") && m.contains("at line 13"), "{m}");
    let e = c.apply_yaml(&pipeline.replace("  A: pipeline", "  DROVER_X: pipeline")).await.unwrap_err();
    assert!(e.to_string().contains("at line 3"), "{e}");
    for (name, why) in [("DROVER_AGENT", "Drover's own"), ("1X", "invalid variable name"), ("A-B", "invalid")] {
        let e = c.set_variable("dev", name, &plain("x")).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{name}: {e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    let e = c.set_variable("nowhere", "A", &plain("x")).await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    // An environment's variables are bounded together (they all go into every task's
    // environment): 16 KiB values, 64 KiB in all.
    let big = "v".repeat(16 * 1024);
    c.create_environment(&NewEnvironment { name: "big".into(), ..Default::default() }).await?;
    for i in 0..3 {
        c.set_variable("big", &format!("BIG_{i}"), &plain(&big)).await?;
    }
    let e = c.set_variable("big", "BIG_3", &plain(&big)).await.unwrap_err();
    assert!(e.status() == Some(400) && e.to_string().contains("more than 64 KiB"), "{e}");
    assert_eq!(c.set_variable("big", "BIG_0", &plain(&big)).await?.name, "BIG_0", "replacing one fits");
    assert_eq!(c.set_variable("big", "LONG", &plain(&format!("{big}v"))).await.unwrap_err().status(), Some(400));
    assert_eq!(c.variables("big").await?.len(), 3);
    // Deleted after apply: the next start says which variable is missing.
    // (B is the pipeline's again without the environment's.)
    c.delete_variable("dev", "B").await?;
    c.delete_variable("dev", "ONLY_ENV").await?;
    let e = c.deploy("vars", "2").await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(e.to_string().contains("${ONLY_ENV}, which is not defined for environment dev"), "{e}");
    assert_eq!(c.delete_variable("dev", "B").await.unwrap_err().status(), Some(404));
    s.shutdown().await;
    Ok(())
}

/// The secret, and what printing it in other forms gives.
const SECRET: &str = "Pa55/w0rd+with spaces&more";

async fn secrets_are_write_only_and_masked(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let c = s.admin();
    c.create_environment(&NewEnvironment {
        name: "prod".into(),
        applications: vec!["shop".into()],
        ..Default::default()
    })
    .await?;
    s.agent("prod-1", "prod").await?;
    let set = c.set_variable("prod", "DB_PASSWORD", &SetVariable { value: SECRET.into(), secret: true }).await?;
    assert!(set.secret && set.has_value && set.value.is_none(), "{set:?}");
    let listed = c.variables("prod").await?;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].value.is_none() && listed[0].has_value);
    let e = c.set_variable("prod", "SHORT", &SetVariable { value: "abc".into(), secret: true }).await.unwrap_err();
    assert!(e.to_string().contains("at least 4 characters"), "{e}");

    // Setting and listing are global privileges: an app-admin of shop has neither.
    c.add_operator(&drover_types::NewOperator {
        name: "ann".into(),
        roles: vec![],
        password: Some("shop-admin-password".into()),
        email: None,
    })
    .await?;
    c.create_access_group(&drover_types::AccessGroup {
        name: "shop-admins".into(),
        roles: vec!["app-admin".into()],
        operators: vec!["ann".into()],
        applications: vec!["shop".into()],
        ..Default::default()
    })
    .await?;
    let ann = s.client("ann", "shop-admin-password");
    assert_eq!(ann.variables("prod").await.unwrap_err().status(), Some(403));
    let taken = SetVariable { value: "taken-over".into(), secret: true };
    assert_eq!(ann.set_variable("prod", "DB_PASSWORD", &taken).await.unwrap_err().status(), Some(403));
    assert_eq!(ann.delete_variable("prod", "DB_PASSWORD").await.unwrap_err().status(), Some(403));

    // Another application's pipeline cannot use prod's secrets (prod lists shop only) ...
    let task = "      - type: run\n        command: |\n          printf '%s\\n' \"${DB_PASSWORD}\"\n          \
                printf 'the password is %s.\\n' \"$DB_PASSWORD\"\n          \
                printf '%s' \"$DB_PASSWORD\" | base64\n          printf 'x%s' \"$DB_PASSWORD\" | base64\n          \
                printf 'xy%s' \"$DB_PASSWORD\" | base64\n          \
                python3 -c 'import os, urllib.parse; print(\"url:\", urllib.parse.quote(os.environ[\"DB_PASSWORD\"], safe=\"\"))'\n          \
                python3 -c 'import os, urllib.parse; print(\"form:\", urllib.parse.quote_plus(os.environ[\"DB_PASSWORD\"]))'\n          \
                echo \"failing with ${DB_PASSWORD}\" >&2\n          exit 3\n";
    let doc =
        |app: &str| format!("application: {app}\nstages:\n  - name: prod\n    environment: prod\n    tasks:\n{task}");
    c.put_environment(&NewEnvironment {
        name: "prod".into(),
        applications: vec!["shop".into(), "other".into()],
        ..Default::default()
    })
    .await?;
    c.apply_yaml(&doc("other")).await?;
    // ... and an environment open to every application does not count as listing it.
    c.put_environment(&NewEnvironment { name: "prod".into(), applications: vec![], ..Default::default() }).await?;
    let e = c.deploy("other", "1").await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("does not list application other"), "{e}");
    let e = c.apply_yaml(&doc("other")).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    c.put_environment(&NewEnvironment { name: "prod".into(), applications: vec!["shop".into()], ..Default::default() })
        .await?;
    c.apply_yaml(&doc("shop")).await?;

    let d = c.deploy("shop", "1").await?;
    let mut sse = Box::pin(c.follow(d.id, 0).await?);
    let mut streamed = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    // Until the task's last line and its end (a deployment in `error` stays open to a retry).
    while !(streamed.contains("failing with") && streamed.contains("\"error\"")) {
        let Ok(Some(ev)) = tokio::time::timeout_at(deadline, sse.next()).await else { break };
        streamed.push_str(&ev?.data);
        streamed.push('\n');
    }
    let d = wait_status(&c, d.id, DS::Error).await?;
    let logs = c.logs(d.id, 0).await?;
    let lines: Vec<&str> = logs.lines.iter().map(|l| l.line.as_str()).collect();
    let of = |stream: &str| -> Vec<&str> {
        logs.lines.iter().filter(|l| l.stream == stream).map(|l| l.line.as_str()).collect()
    };
    let printed = of("stdout");
    assert_eq!(printed.len(), 7, "{lines:#?}");
    assert_eq!(printed[0], "***");
    assert_eq!(printed[1], "the password is ***.");
    assert!(printed[2..5].iter().all(|l| l.contains("***")), "base64 at each alignment: {printed:#?}");
    assert_eq!(&printed[5..7], ["url: ***", "form: ***"]);
    assert_eq!(of("stderr"), ["failing with ***"]);
    let view = serde_json::to_string(&c.deployment(d.id).await?)?;
    let events = serde_json::to_string(&c.events(d.id).await?)?;
    for (what, text) in
        [("logs", lines.join("\n")), ("SSE", streamed.clone()), ("deployment", view), ("events", events)]
    {
        for form in forms() {
            assert!(!text.contains(&form), "{what} holds {form:?}:\n{text}");
        }
    }
    assert!(streamed.contains("failing with ***"), "the stream carries the masked lines: {streamed}");

    // prod stops listing shop: a retry gets no secret, and says why.
    c.put_environment(&NewEnvironment {
        name: "prod".into(),
        applications: vec!["other".into()],
        ..Default::default()
    })
    .await?;
    c.act(d.id, drover_types::Action::Retry, None).await?;
    let d = wait_status(&c, d.id, DS::Error).await?;
    let m = d.message.clone().unwrap_or_default();
    assert!(m.contains("environment prod no longer lists application shop"), "{m}");
    assert_eq!(c.logs(d.id, 0).await?.lines.len(), lines.len(), "the retry ran nothing");

    // Another environment's output is masked with its own secrets only: printing guesses of
    // prod's secret in dev does not tell which one is right.
    s.agent("dev-1", "dev").await?;
    c.apply_yaml("application: guess\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: run\n        command: \"echo 'guess: Pa55/w0rd+with spaces&more'\"\n").await?;
    let g = c.deploy("guess", "1").await?;
    wait_status(&c, g.id, DS::Completed).await?;
    let out = c.logs(g.id, 0).await?;
    assert!(out.lines.iter().any(|l| l.line == format!("guess: {SECRET}")), "{:?}", out.lines);
    s.shutdown().await;
    Ok(())
}

/// The secret and the forms the task prints it in, as a reader could find them.
fn forms() -> Vec<String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        SECRET.to_string(),
        b64.encode(SECRET).trim_end_matches('=').to_string(),
        // The middle of each alignment's encoding: what only the secret decides.
        b64.encode(format!("x{SECRET}"))[4..24].to_string(),
        b64.encode(format!("xy{SECRET}"))[4..24].to_string(),
        "Pa55%2Fw0rd%2Bwith%20spaces%26more".to_string(),
        "Pa55%2Fw0rd%2Bwith+spaces%26more".to_string(),
    ]
}
