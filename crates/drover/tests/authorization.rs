//! Authorization under attack: every hole the hostile review found, as a test (issue 7).
//! - approval gates: every action × task status × role, N approvers, self-approval, override;
//! - application scope does not leak into global power;
//! - grant ceilings (operators, clients, roles, groups; the agent role);
//! - pipeline take-over;
//! - scoped reads (lists filtered, 404 for what cannot be read, 403 for what cannot be done);
//! - operators whose rights come from groups only;
//! - least privilege for machines (artifact downloads, introspection).

use std::time::Duration;

use drover_client::Client;
use drover_testkit::{Backend, TestServer, wait_status};
use drover_types::{AccessGroup, DeploymentStatus as D, NewOperator, Role};
use reqwest::Method;
use serde_json::{Value, json};

const PW: &str = "a-long-test-password";

fn http(s: &TestServer) -> reqwest::Client {
    let tls = drover_tls::client_config(&s.ca).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(30)).build().unwrap()
}

/// A raw call as `user`; returns the status and the JSON body (or null).
async fn call(s: &TestServer, user: &str, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let pw = if user == "admin" { s.admin_password.clone() } else { PW.to_string() };
    let mut rb = http(s).request(m, format!("{}{path}", s.url)).basic_auth(user, Some(pw));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let v = r.json::<Value>().await.unwrap_or(Value::Null);
    (status, v)
}

async fn operator(s: &TestServer, name: &str, roles: &[&str]) -> Client {
    s.admin()
        .add_operator(&NewOperator {
            name: name.into(),
            email: None,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            password: Some(PW.into()),
        })
        .await
        .unwrap();
    s.client(name, PW)
}

async fn group(s: &TestServer, name: &str, roles: &[&str], operators: &[&str], clients: &[&str], apps: &[&str]) {
    let v = |x: &[&str]| x.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    s.admin()
        .put_access_group(&AccessGroup {
            name: name.into(),
            roles: v(roles),
            operators: v(operators),
            clients: v(clients),
            applications: v(apps),
            ineffective_privileges: vec![],
        })
        .await
        .unwrap();
}

fn pipeline(app: &str, env: &str, tasks: &str) -> String {
    format!("application: {app}\nstages:\n  - name: s1\n    environment: {env}\n    tasks: {tasks}\n")
}

// ---- approval gates ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_gates_hold_for_every_action_status_and_role() {
    let mut s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    s.agent("dev-1", "dev").await.unwrap();
    admin
        .apply_yaml(&pipeline(
            "gate",
            "production",
            "[{type: approval, role: approver}, {type: run, command: \"true\"}]",
        ))
        .await
        .unwrap();
    admin.apply_yaml(&pipeline("flaky", "dev", "[{type: run, command: \"false\"}]")).await.unwrap();
    for role in ["viewer", "deployer", "approver", "app-admin", "release-admin"] {
        operator(&s, &format!("op-{role}"), &[role]).await;
    }
    // sam starts the deployments; he also holds the approver role.
    let sam = operator(&s, "sam", &["deployer", "approver"]).await;

    // (setup, caller, action, body, expected status)
    let table: &[(&str, &str, &str, Value, u16)] = &[
        ("approval", "op-viewer", "approve", json!({}), 403),
        ("approval", "op-viewer", "skip", json!({}), 403),
        ("approval", "op-deployer", "approve", json!({}), 403),
        // The hole: skip (and retry) on a pending approval. They apply to failed tasks only.
        ("approval", "op-deployer", "skip", json!({"reason": "in a hurry"}), 409),
        ("approval", "op-deployer", "retry", json!({}), 409),
        ("approval", "op-app-admin", "skip", json!({}), 409),
        ("approval", "op-app-admin", "approve", json!({}), 403),
        ("approval", "op-approver", "approve", json!({"comment": "ok"}), 200),
        ("approval", "op-approver", "reject", json!({"comment": "no"}), 200),
        ("approval", "op-approver", "skip", json!({}), 403),
        // The starter holds the role, but production approvals forbid self-approval.
        ("approval", "sam", "approve", json!({}), 403),
        ("approval", "sam", "reject", json!({"comment": "changed my mind"}), 200),
        // release-admin does not hold the role: it may override, with a reason, recorded.
        ("approval", "op-release-admin", "approve", json!({}), 403),
        ("approval", "op-release-admin", "approve", json!({"override": true}), 422),
        ("approval", "op-release-admin", "approve", json!({"override": true, "reason": "incident 7"}), 200),
        ("approval", "op-release-admin", "reject", json!({"override": true, "reason": "freeze"}), 200),
        ("approval", "op-app-admin", "approve", json!({"override": true, "reason": "x"}), 403),
        ("approval", "op-approver", "approve", json!({"override": true, "reason": "x"}), 403),
        ("failed", "op-viewer", "retry", json!({}), 403),
        ("failed", "op-deployer", "retry", json!({}), 200),
        ("failed", "op-deployer", "skip", json!({"reason": "known flaky"}), 200),
        ("failed", "op-approver", "approve", json!({}), 409),
        ("failed", "op-approver", "skip", json!({}), 403),
        ("failed", "op-release-admin", "approve", json!({"override": true, "reason": "x"}), 409),
    ];
    for (setup, who, action, body, want) in table {
        let d = match *setup {
            "approval" => {
                let d = sam.deploy("gate", "1").await.unwrap();
                wait_status(&admin, d.id, D::PendingInput).await.unwrap()
            }
            _ => {
                let d = sam.deploy("flaky", "1").await.unwrap();
                wait_status(&admin, d.id, D::Error).await.unwrap()
            }
        };
        let path = format!("/api/v1/deployments/{}/{action}", d.id);
        let (got, v) = call(&s, who, Method::POST, &path, Some(body.clone())).await;
        assert_eq!(got, *want, "{setup} × {who} × {action} {body}: {v}");
        let after = admin.deployment(d.id).await.unwrap();
        if got != 200 {
            assert_eq!(after.status, d.status, "{setup} × {who} × {action}: a refused action changes nothing");
        }
        if *setup == "approval" && got == 200 && body["override"] == true {
            let vote = &after.stages[0].tasks[0].approvals[0];
            assert!(vote.overridden, "{vote:?}");
            assert_eq!(vote.by, "op-release-admin");
            assert_eq!(vote.comment.as_deref(), body["reason"].as_str());
            let ev = admin.events(d.id).await.unwrap();
            assert!(ev.iter().any(|e| e.kind == "task.approval" && e.detail["override"] == true), "{ev:?}");
        }
        admin.act(d.id, drover_types::Action::Abort, None).await.ok();
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvals_need_n_distinct_approvers() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    admin
        .apply_yaml(&pipeline(
            "two",
            "staging",
            "[{type: approval, role: approver, approvals: 2}, {type: wait, duration: 1ms}]",
        ))
        .await
        .unwrap();
    let sam = operator(&s, "sam", &["deployer", "approver"]).await;
    let ann = operator(&s, "ann", &["approver"]).await;
    let bob = operator(&s, "bob", &["approver"]).await;
    let d = sam.deploy("two", "1").await.unwrap();
    let d = wait_status(&admin, d.id, D::PendingInput).await.unwrap();
    assert!(d.message.as_deref().unwrap().contains("(0 of 2 approvals)"), "{:?}", d.message);
    // Outside production the starter may approve: one of two.
    let d = sam.act(d.id, drover_types::Action::Approve, Some("mine".into())).await.unwrap();
    assert_eq!(d.status, D::PendingInput);
    assert!(d.message.as_deref().unwrap().contains("(1 of 2 approvals)"), "{:?}", d.message);
    assert_eq!(sam.act(d.id, drover_types::Action::Approve, None).await.unwrap_err().status(), Some(409), "twice");
    ann.act(d.id, drover_types::Action::Approve, None).await.unwrap();
    let d = wait_status(&admin, d.id, D::Completed).await.unwrap();
    let by: Vec<_> = d.stages[0].tasks[0].approvals.iter().map(|v| v.by.as_str()).collect();
    assert_eq!(by, ["sam", "ann"]);
    assert_eq!(bob.act(d.id, drover_types::Action::Approve, None).await.unwrap_err().status(), Some(409));
    s.shutdown().await;
}

// ---- scope does not leak into global power --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scoped_release_admin_has_no_global_power() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    admin.apply_yaml(&pipeline("other", "dev", "[{type: wait, duration: 1ms}]")).await.unwrap();
    // carol: no direct role at all; release-admin through a group scoped to shop.
    let carol = operator(&s, "carol", &[]).await;
    group(&s, "shop-admins", &["release-admin"], &["carol"], &[], &["shop"]).await;
    let g = admin.access_groups().await.unwrap();
    let g = g.iter().find(|g| g.name == "shop-admins").unwrap();
    for p in ["operator.manage", "client.manage", "role.manage", "keystore.manage", "environment.manage", "audit.read"]
    {
        assert!(g.ineffective_privileges.iter().any(|x| x == p), "{p} listed as without effect: {g:?}");
    }
    let attempts: &[(Method, &str, Value)] = &[
        (Method::POST, "/api/v1/operators", json!({"name": "mallory", "roles": ["release-admin"], "password": PW})),
        (Method::POST, "/api/v1/clients", json!({"name": "evil-ci", "roles": ["release-admin"]})),
        (Method::POST, "/api/v1/roles", json!({"name": "god", "privileges": ["operator.manage"]})),
        (
            Method::POST,
            "/api/v1/access-groups",
            json!({"name": "g", "roles": ["release-admin"], "operators": ["carol"]}),
        ),
        (Method::POST, "/api/v1/environments", json!({"name": "prod2"})),
        (Method::POST, "/api/v1/keys/rotate", json!({})),
        (Method::GET, "/api/v1/audit", Value::Null),
        (Method::GET, "/api/v1/operators", Value::Null),
        (Method::POST, "/api/v1/agents", json!({"name": "rogue", "environment": "dev"})),
        (Method::GET, "/api/v1/system/nodes", Value::Null),
    ];
    for (m, path, body) in attempts {
        let (st, v) = call(&s, "carol", m.clone(), path, (!body.is_null()).then(|| body.clone())).await;
        assert_eq!(st, 403, "{m} {path}: {v}");
    }
    assert!(admin.operators().await.unwrap().iter().all(|o| o.name != "mallory"));
    assert!(admin.clients().await.unwrap().iter().all(|c| c.client_id != "evil-ci"));
    // Within shop she is an admin: pipelines (on an existing environment), deployments.
    carol.apply_yaml(&pipeline("shop", "dev", "[{type: wait, duration: 1ms}]")).await.unwrap();
    let d = carol.deploy("shop", "1").await.unwrap();
    wait_status(&carol, d.id, D::Completed).await.unwrap();
    // Not elsewhere; and a pipeline naming a new environment needs environment.manage.
    assert_eq!(carol.deploy("other", "1").await.unwrap_err().status(), Some(404));
    let e = carol.apply_yaml(&pipeline("shop", "brand-new-env", "[{type: wait, duration: 1ms}]")).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("environment.manage"), "{e}");
    assert!(admin.environments().await.unwrap().iter().all(|e| e.name != "brand-new-env"));
    s.shutdown().await;
}

// ---- grant ceilings ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_grants_more_than_they_hold() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    for (name, privileges) in [
        ("client-admin", vec!["client.manage", "pipeline.read"]),
        ("people-admin", vec!["operator.manage", "pipeline.read"]),
        ("role-admin", vec!["role.manage", "pipeline.read"]),
    ] {
        admin
            .create_role(&Role {
                name: name.into(),
                privileges: privileges.into_iter().map(String::from).collect(),
                built_in: false,
                description: None,
            })
            .await
            .unwrap();
        operator(&s, &format!("u-{name}"), &[name]).await;
    }
    let ci = admin.create_client("strong-ci", &["release-admin".into()]).await.unwrap();
    let cases: &[(&str, Method, &str, Value, u16)] = &[
        // client.manage alone: no release-admin client; nothing beyond what it holds.
        ("u-client-admin", Method::POST, "/api/v1/clients", json!({"name": "c1", "roles": ["release-admin"]}), 403),
        ("u-client-admin", Method::POST, "/api/v1/clients", json!({"name": "c2", "roles": ["viewer"]}), 403),
        ("u-client-admin", Method::POST, "/api/v1/clients", json!({"name": "c3", "roles": ["client-admin"]}), 201),
        ("u-client-admin", Method::POST, "/api/v1/clients", json!({"name": "c4", "roles": ["agent"]}), 400),
        // ...and cannot take over a stronger client by re-keying or changing it.
        ("u-client-admin", Method::POST, "/api/v1/clients/strong-ci/regenerate-secret", json!({}), 403),
        ("u-client-admin", Method::PUT, "/api/v1/clients/strong-ci", json!({"disabled": true}), 403),
        ("u-client-admin", Method::DELETE, "/api/v1/clients/strong-ci", Value::Null, 403),
        // ...nor point a client operators sign in through at itself, nor make one: such a
        // client obtains the rights of whoever signs in (up to release-admin).
        (
            "u-client-admin",
            Method::PUT,
            "/api/v1/clients/drover-cli",
            json!({"redirect_uris": ["https://evil.example/cb"]}),
            403,
        ),
        ("u-client-admin", Method::PUT, "/api/v1/clients/drover-cli", json!({"disabled": true}), 403),
        ("u-client-admin", Method::POST, "/api/v1/clients", json!({"name": "c5", "public": true}), 403),
        (
            "u-client-admin",
            Method::POST,
            "/api/v1/clients",
            json!({"name": "c6", "roles": ["client-admin"], "redirect_uris": ["https://evil.example/cb"]}),
            403,
        ),
        // operator.manage alone: no admins, and no password reset of admin.
        (
            "u-people-admin",
            Method::POST,
            "/api/v1/operators",
            json!({"name": "o1", "roles": ["release-admin"], "password": PW}),
            403,
        ),
        (
            "u-people-admin",
            Method::POST,
            "/api/v1/operators",
            json!({"name": "o2", "roles": ["people-admin"], "password": PW}),
            201,
        ),
        (
            "u-people-admin",
            Method::POST,
            "/api/v1/operators/admin/password",
            json!({"password": "hijacked-password!"}),
            403,
        ),
        ("u-people-admin", Method::PUT, "/api/v1/operators/admin", json!({"disabled": true}), 403),
        ("u-people-admin", Method::PUT, "/api/v1/operators/o2", json!({"roles": ["release-admin"]}), 403),
        (
            "u-people-admin",
            Method::POST,
            "/api/v1/operators",
            json!({"name": "o3", "roles": ["agent"], "password": PW}),
            400,
        ),
        // role.manage alone: no role or group conferring what it lacks.
        ("u-role-admin", Method::POST, "/api/v1/roles", json!({"name": "r1", "privileges": ["operator.manage"]}), 403),
        ("u-role-admin", Method::POST, "/api/v1/roles", json!({"name": "r2", "privileges": ["pipeline.read"]}), 201),
        (
            "u-role-admin",
            Method::POST,
            "/api/v1/access-groups",
            json!({"name": "g1", "roles": ["release-admin"], "operators": ["u-role-admin"]}),
            403,
        ),
        (
            "u-role-admin",
            Method::POST,
            "/api/v1/access-groups",
            json!({"name": "g2", "roles": ["release-admin"], "operators": ["u-role-admin"], "applications": ["shop"]}),
            403,
        ),
        (
            "u-role-admin",
            Method::PUT,
            "/api/v1/roles/client-admin",
            json!({"name": "client-admin", "privileges": ["pipeline.read"]}),
            403,
        ),
        (
            "u-role-admin",
            Method::POST,
            "/api/v1/access-groups",
            json!({"name": "g3", "roles": ["r2"], "operators": ["u-role-admin"]}),
            201,
        ),
    ];
    for (who, m, path, body, want) in cases {
        let (st, v) = call(&s, who, m.clone(), path, (!body.is_null()).then(|| body.clone())).await;
        assert_eq!(st, *want, "{who}: {m} {path} {body}: {v}");
    }
    // A deleted client leaves no group membership behind for the next client of its name.
    admin.create_client("gx", &[]).await.unwrap();
    group(&s, "admins-by-group", &["release-admin"], &[], &["gx"], &[]).await;
    admin.delete_client("gx").await.unwrap();
    let g = admin.access_groups().await.unwrap();
    assert!(g.iter().find(|g| g.name == "admins-by-group").unwrap().clients.is_empty());
    let (st, v) = call(
        &s,
        "u-client-admin",
        Method::POST,
        "/api/v1/clients",
        Some(json!({"name": "gx", "roles": ["client-admin"]})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    // The stronger client still works with its secret; admin's password is unchanged.
    s.anonymous().client_credentials_token("strong-ci", &ci.client_secret, None).await.unwrap();
    admin.pipelines().await.unwrap();
    // A token of a client made by client.manage alone cannot create operators.
    let c3 = admin.regenerate_client_secret("c3", Duration::ZERO).await.unwrap();
    let t = s.anonymous().client_credentials_token("c3", &c3.client_secret, None).await.unwrap();
    let c3 = Client::new(
        &s.url,
        Some(&s.ca),
        drover_client::Credentials::Bearer(t["access_token"].as_str().unwrap().into()),
    )
    .unwrap();
    let e = c3
        .add_operator(&NewOperator { name: "x".into(), roles: vec![], email: None, password: Some(PW.into()) })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    s.shutdown().await;
}

// ---- pipeline take-over ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_application_admin_cannot_take_over_another_applications_pipeline() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    admin.apply_yaml(&pipeline("other", "dev", "[{type: wait, duration: 1ms}]")).await.unwrap();
    let before = admin.pipeline("other").await.unwrap();
    let alice = operator(&s, "alice", &[]).await;
    group(&s, "shop-app-admins", &["app-admin"], &["alice"], &[], &["shop"]).await;
    let hijack = "application: shop\npipeline: other\nstages:\n  - name: s1\n    environment: dev\n    tasks: [{type: run, command: \"curl evil\"}]\n";
    let e = alice.apply_yaml(hijack).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("not available") && !e.to_string().contains("exists"), "{e}");
    // PUT and DELETE on it: it does not exist for her.
    let (st, _) = call(&s, "alice", Method::DELETE, "/api/v1/pipelines/other", None).await;
    assert_eq!(st, 404);
    let after = admin.pipeline("other").await.unwrap();
    assert_eq!(after.application, "other");
    assert_eq!(after.stages, before.stages);
    // Her own application works.
    alice.apply_yaml(&pipeline("shop", "dev", "[{type: wait, duration: 1ms}]")).await.unwrap();
    s.shutdown().await;
}

/// What a scoped operator's pipeline names in applications they cannot read is answered for as
/// a missing thing, through the API and the portal's preview alike: an environment that admits
/// only another application, a secret of an environment not listing theirs, a pipeline name
/// another application holds (the name is not free; nothing else is said).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_and_preview_say_nothing_of_what_the_caller_cannot_read() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    admin
        .create_environment(&drover_types::NewEnvironment {
            name: "bank-prod".into(),
            applications: vec!["bank".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    admin.create_environment(&drover_types::NewEnvironment { name: "dev".into(), ..Default::default() }).await.unwrap();
    let secret = drover_types::SetVariable { value: "dev-secret-value".into(), secret: true };
    admin.set_variable("dev", "DEV_PW", &secret).await.unwrap();
    admin.apply_yaml("application: bank\npipeline: payments\nstages:\n  - name: s1\n    environment: bank-prod\n    tasks: [{type: wait, duration: 1ms}]\n").await.unwrap();
    let alice = operator(&s, "alice", &[]).await;
    group(&s, "shop-app-admins", &["app-admin"], &["alice"], &[], &["shop"]).await;
    let (session, token) = drover_testkit::portal::http_sign_in(&s.url, &s.ca, "alice", PW).await.unwrap();
    let c = s.http();
    // The API's answer and the preview's error, with the one name that differs made alike.
    let answers = |yaml: String, name: &'static str| {
        let (alice, c, session, token, url) = (alice.clone(), c.clone(), session.clone(), token.clone(), s.url.clone());
        async move {
            let e = alice.apply_yaml(&yaml).await.unwrap_err();
            let page = c
                .post(format!("{url}/portal/pipelines/preview"))
                .header("cookie", session)
                .form(&[("yaml", yaml.as_str()), ("csrf_token", token.as_str())])
                .send()
                .await
                .unwrap();
            let status = page.status().as_u16();
            let html = page.text().await.unwrap();
            let shown = html
                .split("<strong>Not saved:</strong>")
                .nth(1)
                .and_then(|x| x.split("</p>").next())
                .unwrap_or("")
                .to_string();
            (e.status(), e.to_string().replace(name, "X"), status, shown.replace(name, "X"))
        }
    };
    let wait = "[{type: wait, duration: 1ms}]";
    let hidden = answers(pipeline("shop", "bank-prod", wait), "bank-prod").await;
    let missing = answers(pipeline("shop", "nowhere", wait), "nowhere").await;
    assert_eq!(hidden, missing, "an environment of another application is a missing one");
    assert!(!hidden.3.is_empty(), "the preview shows the error: {hidden:?}");
    let run = |var: &str| format!("[{{type: run, command: \"echo ${{{var}}}\"}}]");
    let secret = answers(pipeline("shop", "dev", &run("DEV_PW")), "DEV_PW").await;
    let unknown = answers(pipeline("shop", "dev", &run("NOPE")), "NOPE").await;
    assert_eq!(secret, unknown, "another environment's secret is an unknown variable");
    assert!(!secret.1.contains("secret"), "{secret:?}");
    // A pipeline's own variable of that name is what its task gets: applying it says nothing
    // of the secret either way.
    let own = |var: &str| {
        format!(
            "application: shop\nvariables:\n  {var}: mine\nstages:\n  - name: s1\n    environment: dev\n    tasks: [{{type: run, command: \"echo ${{{var}}}\"}}]\n"
        )
    };
    assert_eq!(alice.apply_yaml(&own("DEV_PW")).await.unwrap().outcome, "created");
    assert_eq!(alice.apply_yaml(&own("OTHER_NAME")).await.unwrap().outcome, "updated");
    let taken = alice
        .apply_yaml("application: shop\npipeline: payments\nstages:\n  - name: s1\n    environment: dev\n    tasks: [{type: wait, duration: 1ms}]\n")
        .await
        .unwrap_err();
    assert_eq!(taken.status(), Some(409));
    assert!(!taken.to_string().contains("bank"), "{taken}");
    // An administrator, who may read all of it, is told what is wrong.
    let told = admin.apply_yaml(&pipeline("shop", "dev", &run("DEV_PW"))).await.unwrap_err();
    assert!(told.to_string().contains("is a secret variable of environment dev"), "{told}");
    let told = admin.apply_yaml(&pipeline("shop", "bank-prod", wait)).await.unwrap_err();
    assert!(told.to_string().contains("does not accept pipelines of application shop"), "{told}");
    s.shutdown().await;
}

// ---- scoped reads: filtered lists, 404 and 403 --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_are_scoped_with_404_and_403() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    let mut ids = std::collections::HashMap::new();
    for app in ["shop", "other"] {
        admin.apply_yaml(&pipeline(app, "dev", "[{type: deploy}]")).await.unwrap();
        admin.push_artifact_bytes(app, "1", drover_testkit::tarball(&[("index.html", app, 0o644)])).await.unwrap();
        ids.insert(app, admin.deploy(app, "1").await.unwrap().id);
    }
    let vic = operator(&s, "vic", &[]).await;
    group(&s, "shop-viewers", &["viewer"], &["vic"], &[], &["shop"]).await;
    // Lists: only shop.
    let names: Vec<_> = vic.pipelines().await.unwrap().into_iter().map(|p| p.application).collect();
    assert_eq!(names, ["shop"]);
    let deps = vic.deployments(None, None, None).await.unwrap();
    assert!(!deps.is_empty() && deps.iter().all(|d| d.application == "shop"), "{deps:?}");
    assert!(vic.deployments(Some("other"), None, None).await.unwrap().is_empty());
    let arts = vic.artifacts(None).await.unwrap();
    assert!(arts.iter().all(|a| a.application == "shop") && !arts.is_empty());
    // Objects of other: 404, exactly as if they did not exist.
    let other = ids["other"];
    for path in [
        "/api/v1/pipelines/other".to_string(),
        format!("/api/v1/deployments/{other}"),
        format!("/api/v1/deployments/{other}/events"),
        format!("/api/v1/deployments/{other}/logs"),
        format!("/api/v1/deployments/{other}/logs?follow=true"),
        "/api/v1/artifacts/other/1".to_string(),
        "/api/v1/artifacts/other/1/content".to_string(),
    ] {
        let (st, v) = call(&s, "vic", Method::GET, &path, None).await;
        assert_eq!(st, 404, "{path}: {v}");
        let (missing, _) =
            call(&s, "vic", Method::GET, &path.replace("other", "nosuch").replace(&other.to_string(), "999999"), None)
                .await;
        assert_eq!(missing, 404, "{path}: the same answer as for nothing");
    }
    // shop's are readable; acting on them is refused (403), acting on other's is 404.
    let shop = ids["shop"];
    vic.deployment(shop).await.unwrap();
    let dan = operator(&s, "dan", &[]).await;
    group(&s, "shop-deployers", &["deployer"], &["dan"], &[], &["shop"]).await;
    group(&s, "other-viewers", &["viewer"], &["dan"], &[], &["other"]).await;
    assert_eq!(
        dan.act(other, drover_types::Action::Abort, None).await.unwrap_err().status(),
        Some(403),
        "can read, cannot act"
    );
    let eve = operator(&s, "eve", &[]).await;
    group(&s, "eve-shop", &["deployer"], &["eve"], &[], &["shop"]).await;
    assert_eq!(eve.act(other, drover_types::Action::Abort, None).await.unwrap_err().status(), Some(404), "cannot read");
    assert_eq!(eve.deploy("other", "1").await.unwrap_err().status(), Some(404));
    assert!(!admin.deployment(other).await.unwrap().status.is_terminal(), "nothing happened to it");
    eve.act(shop, drover_types::Action::Abort, Some("mine".into())).await.unwrap();
    s.shutdown().await;
}

// ---- machines: least privilege -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_download_only_what_their_attempts_need_and_introspection_needs_its_privilege() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    let art = admin
        .push_artifact_bytes("secret-app", "1", drover_testkit::tarball(&[("key", "hunter2", 0o600)]))
        .await
        .unwrap();
    let agent = admin.add_agent("curious", "dev").await.unwrap();
    let token = s.anonymous().client_credentials_token("curious", &agent.secret, None).await.unwrap();
    let token = token["access_token"].as_str().unwrap().to_string();
    let r =
        http(&s).get(format!("{}/agent/v1/artifacts/{}", s.url, art.sha256)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 404, "no attempt of this agent deploys it");
    // Introspection: an agent and an ordinary API client may not; a client with token.introspect may.
    let introspect = |id: &str, secret: &str| {
        http(&s)
            .post(format!("{}/oauth2/introspect", s.url))
            .basic_auth(id.to_string(), Some(secret.to_string()))
            .form(&[("token", token.as_str())])
            .send()
    };
    assert_eq!(introspect("curious", &agent.secret).await.unwrap().status(), 403);
    let api = admin.create_client("plain-api", &["api".into()]).await.unwrap();
    assert_eq!(introspect("plain-api", &api.client_secret).await.unwrap().status(), 403);
    let rs = admin.create_client("resource-server", &["api-sysadmin".into()]).await.unwrap();
    let r = introspect("resource-server", &rs.client_secret).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environments_accept_only_their_applications() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    let e = admin
        .create_environment(&drover_types::NewEnvironment {
            name: "prod-shop".into(),
            kind: Some(drover_types::EnvironmentKind::Production),
            labels: Default::default(),
            applications: vec!["shop".into()],
        })
        .await
        .unwrap();
    assert_eq!(e.applications, ["shop"]);
    let e = admin.apply_yaml(&pipeline("other", "prod-shop", "[{type: wait, duration: 1ms}]")).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    admin.apply_yaml(&pipeline("shop", "prod-shop", "[{type: wait, duration: 1ms}]")).await.unwrap();
    // Viewers of other do not see it; viewers of shop do.
    operator(&s, "ovi", &[]).await;
    group(&s, "other-viewers", &["viewer"], &["ovi"], &[], &["other"]).await;
    let ovi = s.client("ovi", PW);
    assert!(ovi.environments().await.unwrap().iter().all(|e| e.name != "prod-shop"));
    let (st, _) = call(&s, "ovi", Method::GET, "/api/v1/environments/prod-shop", None).await;
    assert_eq!(st, 404);
    // Closing it to shop later stops new deployments there.
    let d = admin.deploy("shop", "1").await.unwrap();
    wait_status(&admin, d.id, D::Completed).await.unwrap();
    admin
        .put_environment(&drover_types::NewEnvironment {
            name: "prod-shop".into(),
            kind: None,
            labels: Default::default(),
            applications: vec!["billing".into()],
        })
        .await
        .unwrap();
    assert_eq!(admin.deploy("shop", "2").await.unwrap_err().status(), Some(403));
    s.shutdown().await;
}
