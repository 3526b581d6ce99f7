//! Every portal page is guarded like the API's routes: without a session a read goes to
//! sign-in and a post is refused; with one, each built-in role reaches exactly the pages of its
//! privileges (the server decides, whatever the page shows); docs/portal.md lists the same
//! table. Sessions here are made by an HTTP client going through the real sign-in (the
//! authorization server's page, the code exchanged by the portal), no browser.

use std::time::Duration;

use drover_core::rbac::{BUILT_IN_ROLES, role_privileges};
use drover_server::portal::guard::Need;
use drover_testkit::{Backend, TestServer};
use reqwest::Method;

fn concrete(path: &str) -> String {
    path.replace("{name}", "nothing-here").replace("{id}", "999999")
}

/// A page's HTML, as the signed-in session sees it.
async fn page_text(s: &TestServer, session: &str, path: &str) -> String {
    s.http().get(format!("{}{path}", s.url)).header("cookie", session).send().await.unwrap().text().await.unwrap()
}

/// A form posted as a signed-in session, with its CSRF token.
fn portal_post<'a>(
    c: &reqwest::Client,
    base: &str,
    session: &str,
    token: &'a str,
    path: &str,
    mut form: Vec<(&'a str, &'a str)>,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + use<> {
    form.push(("csrf_token", token));
    c.post(format!("{base}{path}")).header("cookie", session).form(&form).send()
}

async fn http_sign_in(s: &TestServer, user: &str, password: &str) -> (String, String) {
    drover_testkit::portal::http_sign_in(&s.url, &s.ca, user, password).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_page_is_guarded_and_roles_get_exactly_their_privileges() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let state = s.running.as_ref().unwrap().state.clone();
    let (_, table) = drover_server::portal::pages(state.clone());
    let mut seen = std::collections::HashSet::new();
    for p in &table {
        assert!(seen.insert((p.method.clone(), p.path.clone())), "page twice: {p:?}");
    }
    assert!(table.len() >= 15, "{}", table.len());
    let c = s.http();
    let port = s.running.as_ref().unwrap().addr.port();
    // No session: reads go to sign-in (and come back), posts are refused. Every answer carries
    // the portal's CSP (forms to this origin only), and HSTS when reached by a name (not by
    // localhost or an address, where it would pin every port of the host).
    for p in &table {
        let url = format!("{}{}", s.url, concrete(&p.path));
        let by_name =
            c.request(p.method.clone(), &url).header("host", format!("drover.example:{port}")).send().await.unwrap();
        assert_eq!(by_name.headers()["strict-transport-security"], "max-age=31536000", "{} {}", p.method, p.path);
        let r = c.request(p.method.clone(), url).send().await.unwrap();
        assert!(r.headers().get("strict-transport-security").is_none(), "{} {} by address", p.method, p.path);
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("form-action 'self'") && csp.contains("frame-ancestors 'none'"),
            "{} {}: {csp}",
            p.method,
            p.path
        );
        if p.method == Method::GET {
            assert_eq!(r.status(), 303, "{} {}", p.method, p.path);
            assert!(r.headers()["location"].to_str().unwrap().starts_with("/portal/signin?next="));
        } else {
            assert_eq!(r.status(), 401, "{} {}", p.method, p.path);
        }
    }
    // One operator per built-in role, each signed in through the portal.
    for role in BUILT_IN_ROLES.iter().filter(|r| **r != "agent") {
        let name = format!("op-{role}");
        s.admin()
            .add_operator(&drover_types::NewOperator {
                name: name.clone(),
                email: None,
                roles: vec![role.to_string()],
                password: Some("role-password-123".into()),
            })
            .await
            .unwrap();
        let (session, token) = http_sign_in(&s, &name, "role-password-123").await;
        for p in &table {
            if p.path == "/portal/signout" {
                continue;
            }
            let url = format!("{}{}", s.url, concrete(&p.path));
            let rb = c.request(p.method.clone(), url).header("cookie", &session);
            let rb = if p.method == Method::POST { rb.form(&[("csrf_token", token.as_str())]) } else { rb };
            let resp = rb.send().await.unwrap();
            let st = resp.status().as_u16();
            let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_string();
            assert!(csp.contains("form-action 'self'"), "{role} {} {}: {csp}", p.method, p.path);
            assert_eq!(resp.headers()["cache-control"], "no-store", "{role} {} {}", p.method, p.path);
            let body = resp.text().await.unwrap();
            let allowed = match p.need {
                Need::SignedIn => true,
                Need::Privilege(x) => role_privileges(role).unwrap().contains(&x),
            };
            if allowed {
                assert!(st != 401 && st != 403, "{role} should reach {} {} (got {st}): {body}", p.method, p.path);
            } else {
                assert_eq!(st, 403, "{role} must be denied {} {} (needs {:?})", p.method, p.path, p.need);
            }
        }
    }
    s.shutdown().await;
}

/// docs/portal.md's page table is the router's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_list_every_page_with_what_it_needs() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let (_, table) = drover_server::portal::pages(s.running.as_ref().unwrap().state.clone());
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/portal.md")).unwrap();
    let rows: Vec<String> = doc
        .lines()
        .filter(|l| l.starts_with("| `GET") || l.starts_with("| `POST"))
        .map(|l| l.split('|').take(3).collect::<Vec<_>>().join("|"))
        .collect();
    let want: Vec<String> = table
        .iter()
        .map(|p| {
            let need = match p.need {
                Need::SignedIn => "signed in".to_string(),
                Need::Privilege(x) => format!("`{x}`"),
            };
            format!("| `{} {}` | {need} ", p.method, p.path)
        })
        .collect();
    assert_eq!(rows, want, "docs/portal.md lists every page, in order, with what it needs");
    s.shutdown().await;
}

/// A live stream ends with its session: signing out in another tab stops the log and the
/// changes from flowing to this one. Opening the stream is audited like a log download.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_stream_ends_with_its_session() {
    use futures_util::StreamExt;
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    admin
        .apply_yaml(
            "application: web\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: approval\n",
        )
        .await
        .unwrap();
    admin.push_artifact_bytes("web", "1", drover_testkit::tarball(&[("a", "b", 0o644)])).await.unwrap();
    let d = admin.deploy("web", "1").await.unwrap();
    drover_testkit::wait_status(&admin, d.id, drover_types::DeploymentStatus::PendingInput).await.unwrap();
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let live =
        c.get(format!("{}/portal/deployments/{}/live", s.url, d.id)).header("cookie", &session).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let mut body = live.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: deployment"), "{first:?}");
    let out = c
        .post(format!("{}/portal/signout", s.url))
        .header("cookie", &session)
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    // The stream checks its session at its next wake-up (a change, or the 15 s keep-alive).
    let ended = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended after sign-out");
    let audit = admin.audit(Some("operator:admin via client:drover-portal"), None, None, Some(200)).await.unwrap();
    assert!(
        audit.iter().any(|e| e.entry.action == "GET /portal/deployments/{id}/live" && e.entry.outcome == "started"),
        "following a log is audited"
    );
    s.shutdown().await;
}

/// A log stream re-checks its reader: once the operator's access to the application is taken
/// away, the API's stream (Basic) and the portal's live stream both end within seconds, with
/// the task still printing; and the portal's checks do not keep its session from idling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_ends_once_its_reader_loses_the_application() {
    use futures_util::StreamExt;
    let mut s = TestServer::start(Backend::Sqlite).await.unwrap();
    s.agent("dev-1", "dev").await.unwrap();
    let admin = s.admin();
    admin
        .apply_yaml(
            "application: shop\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: run\n        command: \"for i in $(seq 1 600); do echo tick $i; sleep 0.1; done\"\n        timeout: 5m\n",
        )
        .await
        .unwrap();
    let pw = s.add_operator("watcher", &[]).await;
    let group = drover_types::AccessGroup {
        name: "shop-viewers".into(),
        roles: vec!["viewer".into()],
        operators: vec!["watcher".into()],
        applications: vec!["shop".into()],
        ..Default::default()
    };
    admin.create_access_group(&group).await.unwrap();
    let d = admin.deploy("shop", "1").await.unwrap();
    drover_testkit::wait_for(&admin, d.id, Duration::from_secs(30), |d| {
        d.stages[0].tasks[0].status == drover_types::TaskStatus::InProgress
    })
    .await
    .unwrap();
    let c = s.http();
    let api = c
        .get(format!("{}/api/v1/deployments/{}/logs?follow=true", s.url, d.id))
        .basic_auth("watcher", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    assert_eq!(api.headers()["cache-control"], "no-store");
    let (session, _) = http_sign_in(&s, "watcher", &pw).await;
    let live =
        c.get(format!("{}/portal/deployments/{}/live", s.url, d.id)).header("cookie", &session).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let (mut api, mut live) = (api.bytes_stream(), live.bytes_stream());
    // Both stream the task's lines while the operator may read them.
    for stream in [&mut api, &mut live] {
        let mut got = String::new();
        while !got.contains("tick") {
            let chunk = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap().unwrap().unwrap();
            got.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    // The grant goes; the task goes on printing.
    admin.delete_access_group("shop-viewers").await.unwrap();
    for (name, stream) in [("api", &mut api), ("portal", &mut live)] {
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            let mut after = 0usize;
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(b) => after += b.len(),
                    Err(_) => break,
                }
            }
            after
        })
        .await;
        assert!(ended.is_ok(), "the {name} stream ended after the grant was removed");
    }
    let d = admin.deployment(d.id).await.unwrap();
    assert_eq!(d.status, drover_types::DeploymentStatus::InProgress, "it ended for the reader, not with the task");
    // A new stream is refused: the operator holds pipeline.read nowhere now.
    let again = c
        .get(format!("{}/api/v1/deployments/{}/logs?follow=true", s.url, d.id))
        .basic_auth("watcher", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 403);
    // A stream opened with a password ends when the password changes.
    admin.create_access_group(&group).await.unwrap();
    let api = c
        .get(format!("{}/api/v1/deployments/{}/logs?follow=true", s.url, d.id))
        .basic_auth("watcher", Some(&pw))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
    let mut api = api.bytes_stream();
    tokio::time::timeout(Duration::from_secs(20), api.next()).await.unwrap().unwrap().unwrap();
    admin.set_operator_password("watcher", "a-brand-new-password-99").await.unwrap();
    let ended =
        tokio::time::timeout(Duration::from_secs(30), async { while let Some(Ok(_)) = api.next().await {} }).await;
    assert!(ended.is_ok(), "the password's stream ended with it");
    admin.act(d.id, drover_types::Action::Abort, Some("test over".into())).await.unwrap();
    s.shutdown().await;
}

/// Administration through the portal: a secret variable set there is never shown again, and an
/// operator added without a password gets one, shown once, that signs them in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_variables_are_write_only_and_new_operators_get_a_password_once() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    s.admin()
        .create_environment(&drover_types::NewEnvironment { name: "dev".into(), ..Default::default() })
        .await
        .unwrap();
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let post = |path: &str, form: Vec<(&str, &str)>| portal_post(&c, &s.url, &session, &token, path, form);
    let secret = "s3cr3t-value-in-the-portal";
    let r =
        post("/portal/environments/dev/variables", vec![("name", "DEPLOY_TOKEN"), ("value", secret), ("secret", "1")])
            .await
            .unwrap();
    assert_eq!(r.status(), 303);
    let r = post("/portal/environments/dev/variables", vec![("name", "REGION"), ("value", "eu-west-1")]).await.unwrap();
    assert_eq!(r.status(), 303);
    let page = page_text(&s, &session, "/portal/environments/dev/variables").await;
    assert!(page.contains("DEPLOY_TOKEN") && page.contains("(set)") && page.contains("eu-west-1"), "{page}");
    assert!(!page.contains(secret), "a secret's value is never shown");
    let vars = s.admin().variables("dev").await.unwrap();
    assert!(vars.iter().any(|v| v.name == "DEPLOY_TOKEN" && v.secret && v.value.is_none()));
    // A bad name is refused with the service's message, nothing stored.
    let r = post("/portal/environments/dev/variables", vec![("name", "DROVER_X"), ("value", "v")]).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("DROVER_"), "the reason is shown");
    // An operator without a password gets a generated one, shown once, that signs them in.
    let r = post("/portal/settings/operators", vec![("name", "olga"), ("role", "viewer")]).await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let at = html.find("with the password <code>").unwrap() + "with the password <code>".len();
    let password = html[at..].split('<').next().unwrap().to_string();
    assert!(password.len() >= 16, "{password}");
    let again = page_text(&s, &session, "/portal/settings/operators").await;
    assert!(again.contains("olga") && !again.contains(&password), "shown once");
    let (olga, _) = http_sign_in(&s, "olga", &password).await;
    assert!(!olga.is_empty());
    // "Regenerate secret" posted twice within a grace period (a double click): the secret the
    // systems use keeps working, not the first new one nobody saved.
    let created = s.admin().create_client("ci", &["viewer".to_string()]).await.unwrap();
    for _ in 0..2 {
        let r = post("/portal/settings/clients/ci/regenerate-secret", vec![("grace_secs", "3600")]).await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let t = s.anonymous().client_credentials_token("ci", &created.client_secret, None).await;
    assert!(t.is_ok(), "the original secret still works in the grace period: {t:?}");
    // keystore.manage alone does not let one bring a signing key (it could sign any token).
    let r = c
        .post(format!("{}/api/v1/roles", s.url))
        .basic_auth("admin", Some(&s.admin_password))
        .json(&serde_json::json!({"name": "keys-only", "privileges": ["keystore.manage"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    s.admin()
        .add_operator(&drover_types::NewOperator {
            name: "kim".into(),
            email: None,
            roles: vec!["keys-only".into()],
            password: Some("kim-password-123456".into()),
        })
        .await
        .unwrap();
    let r = c
        .post(format!("{}/api/v1/keys/import", s.url))
        .basic_auth("kim", Some("kim-password-123456"))
        .json(&serde_json::json!({"pkcs8_base64": "AAAA", "activate": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "importing a key needs every privilege");
    let r = c.get(format!("{}/api/v1/keys", s.url)).basic_auth("kim", Some("kim-password-123456")).send().await;
    assert_eq!(r.unwrap().status(), 200, "listing and rotating stay keystore.manage's");
    s.shutdown().await;
}

/// The environments page says what each agent runs now, and its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_environments_page_shows_what_each_agent_runs() {
    let mut s = TestServer::start(Backend::Sqlite).await.unwrap();
    s.agent("dev-1", "dev").await.unwrap();
    let admin = s.admin();
    admin
        .apply_yaml("application: busy\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: run\n        command: sleep 30\n")
        .await
        .unwrap();
    admin.push_artifact_bytes("busy", "7", drover_testkit::tarball(&[("a", "b", 0o644)])).await.unwrap();
    let d = admin.deploy("busy", "7").await.unwrap();
    drover_testkit::wait_for(&admin, d.id, Duration::from_secs(20), |d| {
        d.stages[0].tasks[0].status == drover_types::TaskStatus::InProgress
    })
    .await
    .unwrap();
    let (session, _) = http_sign_in(&s, "admin", &s.admin_password).await;
    let page = page_text(&s, &session, "/portal/environments").await;
    let want = format!("deployment {} (busy 7): stage dev task 1 (run)", d.id);
    assert!(page.contains("dev-1") && page.contains(&want) && page.contains("online"), "{page}");
    assert!(page.contains(&format!("<td class=\"version\">{}</td>", env!("CARGO_PKG_VERSION"))), "{page}");
    admin.act(d.id, drover_types::Action::Abort, Some("test over".into())).await.unwrap();
    s.shutdown().await;
}

/// An operator whose rights are scoped to one application sees nothing of another through the
/// portal: its pipeline and deployments are "not found", it is not on the dashboard, and a post
/// on its deployment (with a valid token) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scoped_operator_sees_only_their_application() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    for app in ["mine", "theirs"] {
        admin
            .apply_yaml(&format!(
                "application: {app}\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: approval\n"
            ))
            .await
            .unwrap();
        admin.push_artifact_bytes(app, "1", drover_testkit::tarball(&[("a", "b", 0o644)])).await.unwrap();
    }
    let theirs = admin.deploy("theirs", "1").await.unwrap();
    drover_testkit::wait_status(&admin, theirs.id, drover_types::DeploymentStatus::PendingInput).await.unwrap();
    let pw = s.add_operator("sam", &[]).await;
    let r = s
        .http()
        .post(format!("{}/api/v1/access-groups", s.url))
        .basic_auth("admin", Some(&s.admin_password))
        .json(&serde_json::json!({"name": "mine-team", "roles": ["deployer", "approver"], "operators": ["sam"], "applications": ["mine"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (session, token) = http_sign_in(&s, "sam", &pw).await;
    let dash = page_text(&s, &session, "/portal/").await;
    assert!(dash.contains("/portal/pipelines/mine") && !dash.contains("theirs"), "{dash}");
    let c = s.http();
    for path in ["/portal/pipelines/theirs".to_string(), format!("/portal/deployments/{}", theirs.id)] {
        let r = c.get(format!("{}{path}", s.url)).header("cookie", &session).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}: another application's does not exist for sam");
    }
    let r = c
        .post(format!("{}/portal/deployments/{}/approve", s.url, theirs.id))
        .header("cookie", &session)
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(admin.deployment(theirs.id).await.unwrap().status, drover_types::DeploymentStatus::PendingInput);
    let r =
        c.get(format!("{}/portal/pipelines/theirs/reports", s.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(r.status(), 404, "nor its reports");
    s.shutdown().await;
}

/// Roles, access groups, operators' roles and passwords, and authentication profiles are
/// managed in the portal through the service layer: what is saved is what the API shows, a
/// profile's secret is never shown back, and nobody grants beyond what they hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_operators_and_profiles_are_managed_in_the_portal() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    let ann_password = s.add_operator("ann", &["viewer"]).await;
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let post = |session: String, token: String, path: String, form: Vec<(&'static str, String)>| {
        let mut form = form;
        form.push(("csrf_token", token));
        c.post(format!("{}{path}", s.url)).header("cookie", session).form(&form).send()
    };
    let as_admin = |path: &str, form: Vec<(&'static str, &str)>| {
        post(session.clone(), token.clone(), path.into(), form.into_iter().map(|(k, v)| (k, v.to_string())).collect())
    };

    // A custom role, then an access group giving it to ann on one application.
    let r = as_admin(
        "/portal/settings/roles",
        vec![
            ("name", "release-notes"),
            ("description", "writes release notes"),
            ("privilege", "pipeline.read"),
            ("privilege", "deployment.start"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    let role = admin.roles().await.unwrap().into_iter().find(|r| r.name == "release-notes").unwrap();
    assert_eq!(role.privileges, vec!["deployment.start", "pipeline.read"]);
    assert_eq!(role.description.as_deref(), Some("writes release notes"));
    let r = as_admin(
        "/portal/settings/access-groups",
        vec![("name", "web-team"), ("role", "release-notes"), ("operators", "ann"), ("applications", "web, shop")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    let g = admin.access_groups().await.unwrap().into_iter().find(|g| g.name == "web-team").unwrap();
    assert_eq!(
        (g.roles, g.operators, g.applications),
        (vec!["release-notes".into()], vec!["ann".into()], vec!["shop".into(), "web".into()])
    );
    let page = page_text(&s, &session, "/portal/settings/access?group=web-team").await;
    assert!(page.contains("Change access group web-team") && page.contains("value=\"ann\""), "{page}");
    // A member that does not exist is refused, the group unchanged.
    let r = as_admin(
        "/portal/settings/access-groups",
        vec![("name", "web-team"), ("role", "viewer"), ("operators", "ghost")],
    );
    let r = r.await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("operator ghost does not exist"));
    assert_eq!(admin.access_groups().await.unwrap()[0].roles, vec!["release-notes".to_string()]);
    // A group listing more than 500 of anything is refused before any lookup.
    let many = (0..501).map(|i| format!("app-{i}")).collect::<Vec<_>>().join(",");
    let r =
        as_admin("/portal/settings/access-groups", vec![("name", "huge"), ("role", "viewer"), ("applications", &many)]);
    let r = r.await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at most 500 applications"));
    // A role in use is not deleted; once its group is gone, it is.
    let r = as_admin("/portal/settings/roles/release-notes/delete", vec![]).await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(as_admin("/portal/settings/access-groups/web-team/delete", vec![]).await.unwrap().status(), 303);
    assert_eq!(as_admin("/portal/settings/roles/release-notes/delete", vec![]).await.unwrap().status(), 303);
    assert!(admin.roles().await.unwrap().iter().all(|r| r.name != "release-notes"));
    assert!(admin.access_groups().await.unwrap().is_empty());

    // An operator's roles and e-mail, then a new password that ends their sessions.
    let (ann_session, _) = http_sign_in(&s, "ann", &ann_password).await;
    let r = as_admin(
        "/portal/settings/operators/ann",
        vec![("roles_shown", "1"), ("role", "approver"), ("email", "ann@example.com")],
    );
    let r = r.await.unwrap();
    assert_eq!(r.status(), 200);
    let ann = admin.operators().await.unwrap().into_iter().find(|o| o.name == "ann").unwrap();
    assert_eq!((ann.roles, ann.email.as_deref()), (vec!["approver".to_string()], Some("ann@example.com")));
    // An e-mail that is not one, or too long, is refused; nothing changes.
    let long = format!("{}@example.com", "a".repeat(250));
    for bad in ["not-an-address", "two@@example.com", "a b@example.com", "@example.com", long.as_str()] {
        let r = as_admin("/portal/settings/operators/ann", vec![("email", bad)]).await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    let ann = admin.operators().await.unwrap().into_iter().find(|o| o.name == "ann").unwrap();
    assert_eq!(ann.email.as_deref(), Some("ann@example.com"));
    // A post without the role list or the e-mail field leaves them as they are.
    assert_eq!(as_admin("/portal/settings/operators/ann", vec![]).await.unwrap().status(), 200);
    let ann = admin.operators().await.unwrap().into_iter().find(|o| o.name == "ann").unwrap();
    assert_eq!((ann.roles, ann.email.as_deref()), (vec!["approver".to_string()], Some("ann@example.com")));
    let r = as_admin("/portal/settings/operators/ann/password", vec![("password", "short")]).await.unwrap();
    assert_eq!(r.status(), 400);
    let r =
        as_admin("/portal/settings/operators/ann/password", vec![("password", "a-new-long-password-1")]).await.unwrap();
    assert!(r.text().await.unwrap().contains("their sessions have ended"));
    let r = c.get(format!("{}/portal/", s.url)).header("cookie", &ann_session).send().await.unwrap();
    assert_eq!(r.status(), 303, "ann's portal session ended with the password change");
    http_sign_in(&s, "ann", "a-new-long-password-1").await;
    assert!(drover_testkit::portal::http_sign_in(&s.url, &s.ca, "ann", &ann_password).await.is_err());

    // An authentication profile: its secret is sealed and never shown, kept when a change
    // leaves it empty; a URL outside what the profile allows is the service's to refuse.
    let secret = "jenkins-api-token-value-42";
    let form = |secret: &'static str| {
        vec![
            ("name", "jenkins"),
            ("kind", "basic"),
            ("username", "ci"),
            ("allowed_urls", "https://jenkins.example.com/job/\n"),
            ("secret", secret),
        ]
    };
    assert_eq!(
        as_admin("/portal/settings/auth-profiles", form("jenkins-api-token-value-42")).await.unwrap().status(),
        303
    );
    let api = |path: &str| c.get(format!("{}{path}", s.url)).basic_auth("admin", Some(&s.admin_password)).send();
    let profile: serde_json::Value = api("/api/v1/auth-profiles/jenkins").await.unwrap().json().await.unwrap();
    assert_eq!((profile["username"].as_str(), profile["has_secret"].as_bool()), (Some("ci"), Some(true)));
    assert_eq!(profile["allowed_urls"], serde_json::json!(["https://jenkins.example.com/job/"]));
    assert_eq!(as_admin("/portal/settings/auth-profiles", form("")).await.unwrap().status(), 303);
    let profile: serde_json::Value = api("/api/v1/auth-profiles/jenkins").await.unwrap().json().await.unwrap();
    assert_eq!(profile["has_secret"], true, "an empty secret keeps the one set");
    // A kept secret is not sent anywhere new: changing where it goes needs the secret again.
    let mut moved = form("");
    moved[3] = ("allowed_urls", "https://attacker.example.net/\n");
    let r = as_admin("/portal/settings/auth-profiles", moved).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("allowed_urls changed: give the secret again"));
    let profile: serde_json::Value = api("/api/v1/auth-profiles/jenkins").await.unwrap().json().await.unwrap();
    assert_eq!(profile["allowed_urls"], serde_json::json!(["https://jenkins.example.com/job/"]), "unchanged");
    let mut moved = form("jenkins-api-token-value-43");
    moved[3] = ("allowed_urls", "https://jenkins2.example.com/job/\n");
    assert_eq!(
        as_admin("/portal/settings/auth-profiles", moved).await.unwrap().status(),
        303,
        "with the secret: moved"
    );
    for page in ["/portal/settings/auth-profiles", "/portal/settings/auth-profiles?profile=jenkins"] {
        let html = page_text(&s, &session, page).await;
        let shown = html.contains(secret) || html.contains("jenkins-api-token-value-43");
        assert!(html.contains("jenkins2.example.com") && !shown, "{page}: {html}");
    }
    let r =
        as_admin("/portal/settings/auth-profiles", vec![("name", "hook"), ("kind", "bearer"), ("allowed_urls", "")]);
    assert_eq!(r.await.unwrap().status(), 400, "no URL, no secret: refused");
    assert_eq!(as_admin("/portal/settings/auth-profiles/jenkins/delete", vec![]).await.unwrap().status(), 303);
    assert_eq!(api("/api/v1/auth-profiles/jenkins").await.unwrap().status(), 404);

    // The ceiling: pat manages operators and roles but holds little else.
    admin
        .create_role(&drover_types::Role {
            name: "people".into(),
            privileges: vec!["operator.manage".into(), "role.manage".into(), "pipeline.read".into()],
            built_in: false,
            description: None,
        })
        .await
        .unwrap();
    let pat_password = s.add_operator("pat", &["people"]).await;
    let (pat_session, pat_token) = http_sign_in(&s, "pat", &pat_password).await;
    let as_pat = |path: &str, form: Vec<(&'static str, &str)>| {
        post(
            pat_session.clone(),
            pat_token.clone(),
            path.into(),
            form.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        )
    };
    let attempts = [
        ("/portal/settings/roles", vec![("name", "keys"), ("privilege", "keystore.manage")]),
        ("/portal/settings/operators/ann", vec![("roles_shown", "1"), ("role", "release-admin")]),
        ("/portal/settings/operators/admin/password", vec![("password", "taken-over-password-1")]),
        ("/portal/settings/operators/admin", vec![("roles_shown", "1"), ("role", "viewer")]),
        ("/portal/settings/access-groups", vec![("name", "mine"), ("role", "release-admin"), ("operators", "pat")]),
    ];
    for (path, form) in attempts {
        let r = as_pat(path, form).await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
    let ann = admin.operators().await.unwrap().into_iter().find(|o| o.name == "ann").unwrap();
    assert_eq!(ann.roles, vec!["approver".to_string()], "unchanged");
    assert!(admin.roles().await.unwrap().iter().all(|r| r.name != "keys"));
    assert!(admin.access_groups().await.unwrap().is_empty());
    // What pat holds, pat may give; nothing beyond, even to someone within pat's reach.
    s.add_operator("newbie", &[]).await;
    let r = as_pat("/portal/settings/operators/newbie", vec![("roles_shown", "1"), ("role", "release-admin")]).await;
    assert_eq!(r.unwrap().status(), 403);
    let newbie = admin.operators().await.unwrap().into_iter().find(|o| o.name == "newbie").unwrap();
    assert!(newbie.roles.is_empty(), "unchanged");
    let r = as_pat("/portal/settings/operators/newbie", vec![("roles_shown", "1"), ("role", "people")]).await.unwrap();
    assert_eq!(r.status(), 200);
    let newbie = admin.operators().await.unwrap().into_iter().find(|o| o.name == "newbie").unwrap();
    assert_eq!(newbie.roles, vec!["people".to_string()]);
    s.shutdown().await;
}

/// Environments and agents are managed in the portal: an agent registered there gets a secret,
/// shown once, that a real agent runs with; labels are bounded; nothing in use is deleted.
/// Clients with redirect URIs, public clients and clients with keys are registered there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn environments_agents_and_clients_are_managed_in_the_portal() {
    let mut s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let url = s.url.clone();
    let post = |path: &str, form: Vec<(&str, &str)>| portal_post(&c, &url, &session, &token, path, form);
    let r = post("/portal/environments", vec![("name", "qa-eu"), ("kind", "qa"), ("applications", "web, shop")]).await;
    assert_eq!(r.unwrap().status(), 303);
    let env = admin.environments().await.unwrap().into_iter().find(|e| e.name == "qa-eu").unwrap();
    assert_eq!((env.kind.as_str(), env.applications.clone()), ("qa", vec!["shop".to_string(), "web".to_string()]));
    // Its form comes filled in, so a change keeps what is not changed on purpose.
    let page = page_text(&s, &session, "/portal/environments?environment=qa-eu").await;
    assert!(page.contains("Change environment qa-eu") && page.contains("value=\"shop, web\""), "{page}");
    assert!(page.contains("<option selected>qa</option>"), "{page}");
    // The same name changes it: any application now (the field emptied), the kind kept.
    assert_eq!(
        post("/portal/environments", vec![("name", "qa-eu"), ("applications", "")]).await.unwrap().status(),
        303
    );
    let env = admin.environments().await.unwrap().into_iter().find(|e| e.name == "qa-eu").unwrap();
    assert_eq!((env.kind.as_str(), env.applications.len()), ("qa", 0));
    let r = post("/portal/environments", vec![("name", "x"), ("kind", "moon")]).await.unwrap();
    assert_eq!(r.status(), 400);

    // An agent: its secret shown once, and a real agent runs a deployment with it.
    let r = post("/portal/agents", vec![("name", "qa-1"), ("environment", "qa-eu"), ("labels", "region=eu")]).await;
    let html = r.unwrap().text().await.unwrap();
    let at = html.find("<code id=\"agent-secret\">").unwrap() + "<code id=\"agent-secret\">".len();
    let secret = html[at..].split('<').next().unwrap().to_string();
    assert_eq!(secret.len(), 64, "{html}");
    assert!(html.contains("--secret-file qa-1.secret") && html.contains("data-filename=\"qa-1.secret\""));
    let work = s.dir.path().join("qa-1");
    s.run_agent("qa-1", &secret, &work, 1).unwrap();
    admin
        .apply_yaml("application: web\nstages:\n  - name: qa\n    environment: qa-eu\n    tasks: [{type: run, command: \"true\"}]\n")
        .await
        .unwrap();
    let d = admin.deploy("web", "1").await.unwrap();
    drover_testkit::wait_status(&admin, d.id, drover_types::DeploymentStatus::Completed).await.unwrap();
    let page = page_text(&s, &session, "/portal/environments").await;
    assert!(page.contains("data-agent=\"qa-1\"") && !page.contains(&secret), "the secret is not shown again");
    // Labels: replaced as a whole; malformed or hostile ones refused, nothing changed.
    let r = post("/portal/agents/qa-1/labels", vec![("labels", "region=us, tier=web")]).await.unwrap();
    assert_eq!(r.status(), 303);
    let labels = |a: &[drover_types::Agent]| a.iter().find(|a| a.name == "qa-1").unwrap().labels.clone();
    let want: std::collections::BTreeMap<String, String> =
        [("region".to_string(), "us".to_string()), ("tier".to_string(), "web".to_string())].into();
    assert_eq!(labels(&admin.agents().await.unwrap()), want);
    for bad in ["region", "re gion=us", "region=<b>\u{0}"] {
        let r = post("/portal/agents/qa-1/labels", vec![("labels", bad)]).await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
    }
    assert_eq!(labels(&admin.agents().await.unwrap()), want);
    // A value the text field cannot carry (a comma) is shown, not offered for editing here.
    let odd: std::collections::BTreeMap<String, String> = [("zones".to_string(), "a,b".to_string())].into();
    admin.set_agent_labels("qa-1", &odd).await.unwrap();
    let page = page_text(&s, &session, "/portal/environments").await;
    assert!(page.contains("zones=a,b") && !page.contains("id=\"labels-qa-1\""), "{page}");
    // Nothing in use is deleted: the environment has a pipeline and an agent.
    let r = post("/portal/environments/qa-eu/delete", vec![]).await.unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("used by pipeline web"));
    admin.delete_pipeline("web").await.unwrap();
    assert_eq!(post("/portal/environments/qa-eu/delete", vec![]).await.unwrap().status(), 409, "it has an agent");
    assert_eq!(post("/portal/agents/qa-1/delete", vec![]).await.unwrap().status(), 303);
    assert_eq!(post("/portal/environments/qa-eu/delete", vec![]).await.unwrap().status(), 303);
    assert!(admin.environments().await.unwrap().iter().all(|e| e.name != "qa-eu"));
    assert!(admin.agents().await.unwrap().is_empty());

    // An agent with public keys instead of a secret: registered, no secret page, a real agent
    // signs in with its key (private_key_jwt) and runs a deployment.
    use drover_server::oauth::jwt::{Alg, SigningKey, generate};
    let der = generate(Alg::ES256).unwrap();
    let key = SigningKey::from_pkcs8(&der, None).unwrap();
    let jwks = serde_json::json!({"keys": [key.public_jwk()]}).to_string();
    assert_eq!(post("/portal/environments", vec![("name", "qa-eu")]).await.unwrap().status(), 303);
    let r = post("/portal/agents", vec![("name", "qa-k"), ("environment", "qa-eu"), ("jwks", &jwks)]).await.unwrap();
    assert_eq!(r.status(), 303, "no secret to show");
    let work = s.dir.path().join("qa-k");
    s.run_agent_with(
        "qa-k",
        drover_client::ClientAuth::PrivateKey { pkcs8_der: der, kid: Some(key.kid.clone()) },
        &work,
        1,
    )
    .unwrap();
    admin
        .apply_yaml("application: web\nstages:\n  - name: qa\n    environment: qa-eu\n    tasks: [{type: run, command: \"true\"}]\n")
        .await
        .unwrap();
    let d = admin.deploy("web", "2").await.unwrap();
    drover_testkit::wait_status(&admin, d.id, drover_types::DeploymentStatus::Completed).await.unwrap();
    let r = post("/portal/agents", vec![("name", "qa-x"), ("environment", "qa-eu"), ("jwks", "{\"keys\": [")]).await;
    assert_eq!(r.unwrap().status(), 400);
    assert!(admin.agents().await.unwrap().iter().all(|a| a.name != "qa-x"));

    // Clients: a public one with a redirect URI (no secret page), and a JWKS that is not JSON.
    let r = post(
        "/portal/settings/clients",
        vec![("name", "tool"), ("public", "1"), ("redirect_uris", "https://tool.example.com/callback\n")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    let tool = admin.client_registration("tool").await.unwrap();
    assert!(tool.public && tool.redirect_uris == vec!["https://tool.example.com/callback".to_string()], "{tool:?}");
    let r = post("/portal/settings/clients", vec![("name", "keyed"), ("role", "api"), ("jwks", "{not json")]).await;
    assert_eq!(r.unwrap().status(), 400);
    assert!(admin.client_registration("keyed").await.is_err(), "nothing registered");
    s.shutdown().await;
}

/// The system page's levers: drain and resume a node, clear a cache, resize the pool
/// (PostgreSQL); what they did is what the SysOps API shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_system_page_drains_clears_and_resizes() {
    let s = TestServer::start(Backend::Postgres).await.unwrap();
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let post = |path: &str, form: Vec<(&str, &str)>| portal_post(&c, &s.url, &session, &token, path, form);
    let api = |path: &str| c.get(format!("{}{path}", s.url)).basic_auth("admin", Some(&s.admin_password)).send();
    let nodes: serde_json::Value = api("/api/v1/system/nodes").await.unwrap().json().await.unwrap();
    let node = nodes[0]["id"].as_str().unwrap().to_string();
    let page = page_text(&s, &session, "/portal/system").await;
    assert!(page.contains(&format!("<tr data-key=\"{node}\">")) && page.contains(">Drain</button>"), "{page}");
    assert_eq!(post("/portal/system/drain", vec![("node", &node), ("drain", "1")]).await.unwrap().status(), 303);
    let nodes: serde_json::Value = api("/api/v1/system/nodes").await.unwrap().json().await.unwrap();
    assert_eq!(nodes[0]["draining"], true);
    assert!(page_text(&s, &session, "/portal/system").await.contains(">Resume</button>"));
    assert_eq!(post("/portal/system/drain", vec![("node", &node), ("drain", "0")]).await.unwrap().status(), 303);
    let nodes: serde_json::Value = api("/api/v1/system/nodes").await.unwrap().json().await.unwrap();
    assert_eq!(nodes[0]["draining"], false);
    assert_eq!(
        post("/portal/system/drain", vec![("node", "ghost@nowhere"), ("drain", "1")]).await.unwrap().status(),
        404
    );
    // A cache, then the pool.
    assert_eq!(post("/portal/system/clear-cache", vec![("cache", "sign_ins")]).await.unwrap().status(), 303);
    let caches: serde_json::Value = api("/api/v1/system/caches").await.unwrap().json().await.unwrap();
    let sign_ins = caches.as_array().unwrap().iter().find(|c| c["name"] == "sign_ins").unwrap();
    assert!(sign_ins["entries"].as_u64().unwrap() <= 1, "{sign_ins}");
    assert_eq!(post("/portal/system/clear-cache", vec![("cache", "everything")]).await.unwrap().status(), 404);
    assert_eq!(post("/portal/system/pool-size", vec![("max", "7")]).await.unwrap().status(), 303);
    let pools: serde_json::Value = api("/api/v1/system/pools").await.unwrap().json().await.unwrap();
    assert_eq!(pools[0]["max"], 7);
    for bad in ["0", "257", "many", ""] {
        assert_eq!(post("/portal/system/pool-size", vec![("max", bad)]).await.unwrap().status(), 400, "{bad:?}");
    }
    let pools: serde_json::Value = api("/api/v1/system/pools").await.unwrap().json().await.unwrap();
    assert_eq!(pools[0]["max"], 7, "unchanged");
    s.shutdown().await;
}

/// The form editor has the pipeline's and stages' variables and a stage's fleet settings: what
/// they say reaches the YAML `drover apply` reads, and what the form leaves alone is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_form_editor_sets_variables_and_fleet_settings() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let admin = s.admin();
    admin
        .apply_yaml("application: fleet\nstages:\n  - name: prod\n    environment: production\n    dispatch_timeout: 5m\n    tasks: [{type: run, command: \"true\"}]\n")
        .await
        .unwrap();
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let form_page = page_text(&s, &session, "/portal/pipelines/fleet/form").await;
    let at = form_page.find("name=\"base\" value=\"").unwrap() + "name=\"base\" value=\"".len();
    let base = form_page[at..].split('"').next().unwrap().replace("&quot;", "\"").replace("&#x22;", "\"");
    let base = base.replace("&#34;", "\"");
    let post = |extra: Vec<(&'static str, &'static str)>| {
        let mut form: Vec<(&str, String)> = vec![
            ("csrf_token", token.clone()),
            ("name", "fleet".into()),
            ("base", base.clone()),
            ("application", "fleet".into()),
            ("stages", "1".into()),
            ("s0.name", "prod".into()),
            ("s0.environment", "production".into()),
            ("s0.tasks", "1".into()),
            ("s0.t0.type", "run".into()),
            ("s0.t0.command", "true".into()),
            ("op", "check".into()),
        ];
        form.extend(extra.into_iter().map(|(k, v)| (k, v.to_string())));
        c.post(format!("{}/portal/pipelines/form", s.url)).header("cookie", &session).form(&form).send()
    };
    let r = post(vec![
        ("variables", "REGION=eu-west-1\nTIER=web"),
        ("s0.targets", "rolling"),
        ("s0.batch", "25%"),
        ("s0.max_failures", "1"),
        ("s0.agents", "region=eu, tier=web"),
        ("s0.variables", "COLOR=blue"),
    ])
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    for want in [
        "REGION: eu-west-1",
        "targets: rolling",
        "batch: 25%",
        "max_failures: 1",
        "region: eu",
        "COLOR: blue",
        "dispatch_timeout: 5m",
    ] {
        assert!(html.contains(want), "{want}: {html}");
    }
    // A line that is not NAME=value is refused, saying which.
    let r = post(vec![("s0.agents", "region")]).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("agent labels"));
    // An error about one field is shown at that field, in the form.
    let r = post(vec![("s0.targets", "rolling"), ("s0.batch", "0")]).await.unwrap();
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"s0-batch\"") && html.contains("aria-invalid=\"true\""), "{html}");
    let at = html.find("id=\"s0-batch\"").unwrap();
    assert!(html[at..].split('>').next().unwrap().contains("aria-invalid"), "the batch input is the one marked");
    let r = post(vec![("s0.t0.type", "http-check"), ("s0.t0.url", "ftp://example.com/")]).await.unwrap();
    let html = r.text().await.unwrap();
    let at = html.find("id=\"s0-t0-url\"").expect("the url field");
    assert!(html[at..].split('>').next().unwrap().contains("aria-invalid"), "{html}");
    assert!(html.contains("class=\"field-error\""), "the message is beside the field");
    // One the service finds (an unknown role) is shown at its field too.
    let r = post(vec![("s0.t0.type", "approval"), ("s0.t0.role", "no-such-role")]).await.unwrap();
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    let at = html.find("id=\"s0-t0-role\"").expect("the role field");
    assert!(html[at..].split('>').next().unwrap().contains("aria-invalid") && html.contains("unknown role"), "{html}");
    // A value the text field cannot carry (several lines) is shown, not sent, and kept.
    admin
        .apply_yaml("application: multi\nvariables:\n  BANNER: \"line one\\nline two\"\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"true\"}]\n")
        .await
        .unwrap();
    let page = page_text(&s, &session, "/portal/pipelines/multi/form").await;
    assert!(
        page.contains("id=\"variables-note\"") && page.contains("disabled aria-describedby=\"variables-note\""),
        "{page}"
    );
    // Timeouts: the stage's dispatch timeout, an approval's timeout and what then happens.
    let html = post(vec![
        ("s0.dispatch_timeout", "10m"),
        ("s0.t0.type", "approval"),
        ("s0.t0.timeout", "4h"),
        ("s0.t0.on_timeout", "abort"),
    ])
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    for want in ["dispatch_timeout: 10m", "timeout: 4h", "on_timeout: abort"] {
        assert!(html.contains(want), "{want}: {html}");
    }
    // `one` leaves targets out, as drover apply writes it.
    let html = post(vec![("s0.targets", "one")]).await.unwrap().text().await.unwrap();
    assert!(!html.contains("targets:") && html.contains("dispatch_timeout: 5m"), "{html}");
    s.shutdown().await;
}

/// With the database unreachable, every page answers 503 ("try again"), never a sign-out or a
/// sign-in redirect, and changes nothing; the same session works once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_page_is_503_while_the_database_is_down() {
    let relay = drover_testkit::relay::Relay::start().await;
    let (schema, url) = relay.fresh_schema().await;
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.database_url = Some(url.clone())).await.unwrap();
    let (_, table) = drover_server::portal::pages(s.running.as_ref().unwrap().state.clone());
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    relay.cut();
    for p in table.iter().filter(|p| p.path != "/portal/signout") {
        let rb = c.request(p.method.clone(), format!("{}{}", s.url, concrete(&p.path))).header("cookie", &session);
        let rb = if p.method == Method::POST { rb.form(&[("csrf_token", token.as_str())]) } else { rb };
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 503, "{} {}", p.method, p.path);
        assert!(r.headers().get("set-cookie").is_none(), "{} {}: the session cookie is left alone", p.method, p.path);
        assert!(r.text().await.unwrap().contains("You are still signed in"), "{} {}", p.method, p.path);
    }
    relay.restore();
    let mut back = false;
    for _ in 0..100 {
        let r = c.get(format!("{}/portal/", s.url)).header("cookie", &session).send().await.unwrap();
        if r.status() == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "the same session works once the database is back");
    s.shutdown().await;
    drover_store::testing::drop_schema(&schema).await;
}

/// A form larger than a portal form can be (64 KiB; an upload 256 KiB) is refused with 413
/// before anything reads it; within the bound, the page's own checks answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_forms_are_refused() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let (session, token) = http_sign_in(&s, "admin", &s.admin_password).await;
    let c = s.http();
    let big = "x".repeat(70 * 1024);
    let r = c
        .post(format!("{}/portal/settings/operators", s.url))
        .header("cookie", &session)
        .form(&[("csrf_token", token.as_str()), ("name", "big"), ("email", big.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(s.admin().operators().await.unwrap().iter().all(|o| o.name != "big"), "nothing created");
    let upload = |size: usize| {
        let boundary = "drover-test-boundary";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"alias\"\r\n\r\njwt\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"keystore\"; filename=\"k.p12\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .into_bytes();
        body.extend(std::iter::repeat_n(0x30u8, size));
        body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
        c.post(format!("{}/portal/settings/keys/import", s.url))
            .header("cookie", &session)
            .header("content-type", format!("multipart/form-data; boundary={boundary}"))
            .body(body)
            .send()
    };
    assert_eq!(upload(300 * 1024).await.unwrap().status(), 413);
    let r = upload(200 * 1024).await.unwrap();
    assert_eq!(r.status(), 422, "within the bound: read, and refused as no keystore");
    assert!(r.text().await.unwrap().contains("could not be read"));
    assert_eq!(s.admin().keys().await.unwrap().len(), 1, "nothing imported");
    s.shutdown().await;
}

/// Release-admin granted only on one application confers none of the global privileges the
/// settings pages need: every settings, environment, agent and system page and post is 403 for
/// it, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scoped_release_admin_reaches_no_settings_page() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let (_, table) = drover_server::portal::pages(s.running.as_ref().unwrap().state.clone());
    let pw = s.add_operator("rita", &[]).await;
    let r = s
        .http()
        .post(format!("{}/api/v1/access-groups", s.url))
        .basic_auth("admin", Some(&s.admin_password))
        .json(&serde_json::json!({"name": "web-admins", "roles": ["release-admin"], "operators": ["rita"], "applications": ["web"]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (session, token) = http_sign_in(&s, "rita", &pw).await;
    let c = s.http();
    let before = (s.admin().roles().await.unwrap().len(), s.admin().environments().await.unwrap().len());
    let global = table.iter().filter(|p| matches!(p.need, Need::Privilege(x) if x.is_global()));
    let mut n = 0;
    for p in global {
        n += 1;
        let rb = c.request(p.method.clone(), format!("{}{}", s.url, concrete(&p.path))).header("cookie", &session);
        let rb = if p.method == Method::POST {
            rb.form(&[("csrf_token", token.as_str()), ("name", "made-by-rita"), ("node", "x"), ("cache", "sign_ins")])
        } else {
            rb
        };
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 403, "{} {}", p.method, p.path);
    }
    assert!(n >= 20, "{n} global pages");
    let after = (s.admin().roles().await.unwrap().len(), s.admin().environments().await.unwrap().len());
    assert_eq!(before, after, "nothing created");
    s.shutdown().await;
}
