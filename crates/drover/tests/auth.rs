//! The authentication layer: every route declares a privilege; no credentials means 401; each
//! built-in role gets exactly its privileges on every route.

use std::time::Duration;

use drover_core::rbac::{BUILT_IN_ROLES, role_privileges};
use drover_core::store::OperatorRecord;
use drover_testkit::{Backend, TestServer};
use drover_types::Timestamp;
use reqwest::Method;

fn http(s: &TestServer) -> reqwest::Client {
    let tls = drover_tls::client_config(&s.ca).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(30)).build().unwrap()
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "nothing-here")
        .replace("{id}", "999999")
        .replace("{application}", "authtest")
        .replace("{version}", "0.0.1")
        .replace("{attempt}", "0000")
        .replace("{sha256}", &"0".repeat(64))
}

async fn call(
    c: &reqwest::Client,
    s: &TestServer,
    m: &Method,
    path: &str,
    auth: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut rb = c.request(m.clone(), format!("{}{}", s.url, concrete(path)));
    match auth {
        // An access token.
        Some(("bearer", t)) => rb = rb.bearer_auth(t),
        Some((u, p)) => rb = rb.basic_auth(u, Some(p)),
        None => {}
    }
    if *m == Method::POST || *m == Method::PUT {
        rb = rb.header("content-type", "application/json").body("{}");
    }
    rb.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_is_guarded_and_roles_get_exactly_their_privileges() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let state = s.running.as_ref().unwrap().state.clone();
    let (_, table) = drover_server::api::routes(state.clone());
    // The table is complete and unambiguous.
    let mut seen = std::collections::HashSet::new();
    for r in &table {
        assert!(seen.insert((r.method.clone(), r.path.clone())), "route twice: {r:?}");
    }
    assert!(table.len() >= 35, "{}", table.len());
    let c = http(&s);
    let agent = s.admin().add_agent("auth-agent", "dev").await.unwrap();
    // Agents use access tokens (client credentials), never Basic.
    let agent_token =
        s.anonymous().client_credentials_token("auth-agent", &agent.secret, None).await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string();

    // No credentials, wrong credentials: 401 with a challenge, on every route.
    for r in &table {
        let resp = call(&c, &s, &r.method, &r.path, None).await;
        assert_eq!(resp.status(), 401, "{} {} without credentials", r.method, r.path);
        assert_eq!(
            resp.headers()["cache-control"],
            "no-store",
            "{} {}: every API answer is per caller",
            r.method,
            r.path
        );
        assert!(resp.headers().get("www-authenticate").is_some(), "{} {}", r.method, r.path);
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        let resp = call(&c, &s, &r.method, &r.path, Some(("admin", "wrong-password"))).await;
        assert_eq!(resp.status(), 401, "{} {} with a wrong password", r.method, r.path);
        let resp = call(&c, &s, &r.method, &r.path, Some(("auth-agent", &"0".repeat(64)))).await;
        assert_eq!(resp.status(), 401, "{} {} with a wrong agent secret", r.method, r.path);
    }

    // One operator per built-in role; each route allows exactly the roles holding its privilege.
    let hash = drover_server::secrets::hash_password("role-password-123").unwrap();
    for role in BUILT_IN_ROLES.iter().filter(|r| **r != "agent") {
        state
            .store
            .insert_operator(&OperatorRecord {
                name: format!("op-{role}"),
                password_hash: hash.clone(),
                roles: vec![role.to_string()],
                disabled: false,
                created_at: Timestamp::now(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for r in &table {
        for role in BUILT_IN_ROLES {
            let allowed = role_privileges(role).unwrap().contains(&r.privilege);
            let (user, pw) = if *role == "agent" {
                ("bearer".to_string(), agent_token.clone())
            } else {
                (format!("op-{role}"), "role-password-123".to_string())
            };
            let resp = call(&c, &s, &r.method, &r.path, Some((&user, &pw))).await;
            let st = resp.status().as_u16();
            assert_eq!(resp.headers()["cache-control"], "no-store", "{role} {} {} ({st})", r.method, r.path);
            if allowed {
                assert!(st != 401 && st != 403, "{role} should reach {} {} (got {st})", r.method, r.path);
            } else {
                assert_eq!(st, 403, "{role} must be denied {} {} (needs {})", r.method, r.path, r.privilege);
            }
        }
    }

    // Disabled operators are refused like unknown ones.
    state
        .store
        .insert_operator(&OperatorRecord {
            name: "gone".into(),
            password_hash: hash.clone(),
            roles: vec!["release-admin".into()],
            disabled: true,
            created_at: Timestamp::now(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        call(&c, &s, &Method::GET, "/api/v1/pipelines", Some(("gone", "role-password-123"))).await.status(),
        401
    );

    // Health needs no credentials; unknown routes get a JSON 404.
    assert_eq!(c.get(format!("{}/healthz", s.url)).send().await.unwrap().status(), 200);
    let resp = c.get(format!("{}/api/v1/nope", s.url)).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_roles_are_enforced() {
    let mut s = TestServer::start(Backend::Sqlite).await.unwrap();
    let state = s.running.as_ref().unwrap().state.clone();
    let hash = drover_server::secrets::hash_password("pw-approver-1").unwrap();
    for (name, role) in [("ann", "approver"), ("dan", "deployer"), ("aa", "app-admin")] {
        state
            .store
            .insert_operator(&OperatorRecord {
                name: name.into(),
                password_hash: hash.clone(),
                roles: vec![role.into()],
                disabled: false,
                created_at: Timestamp::now(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    s.agent("dev-1", "dev").await.unwrap();
    let admin = s.admin();
    admin
        .apply_yaml("application: ap\nstages:\n  - name: prod\n    environment: dev\n    tasks: [{type: approval, role: approver}, {type: run, command: \"true\"}]\n")
        .await
        .unwrap();
    let dan = s.client("dan", "pw-approver-1");
    let d = dan.deploy("ap", "1").await.unwrap();
    assert_eq!(d.created_by, "dan");
    drover_testkit::wait_status(&admin, d.id, drover_types::DeploymentStatus::PendingInput).await.unwrap();
    // A deployer lacks task.approve; an app-admin has it but not the approver role the task asks for.
    let e = dan.act(d.id, drover_types::Action::Approve, None).await.unwrap_err();
    assert_eq!(e.status(), Some(403));
    let e = s.client("aa", "pw-approver-1").act(d.id, drover_types::Action::Approve, None).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("approver"));
    s.client("ann", "pw-approver-1").act(d.id, drover_types::Action::Approve, Some("ok".into())).await.unwrap();
    let d = drover_testkit::wait_status(&admin, d.id, drover_types::DeploymentStatus::Completed).await.unwrap();
    assert_eq!(d.stages[0].tasks[0].decided_by.as_deref(), Some("ann"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| {
        cfg.cors = drover_server::cors::CorsConfig {
            allowed_origins: vec!["https://portal.example.com".into()],
            allow_credentials: true,
            max_age_secs: 120,
            ..Default::default()
        };
    })
    .await
    .unwrap();
    let c = http(&s);
    let preflight = |origin: &str, method: &str, headers: &str| {
        c.request(Method::OPTIONS, format!("{}/api/v1/pipelines", s.url))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let r = preflight("https://portal.example.com", "POST", "authorization, content-type").await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://portal.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "120");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    // Another origin, a method or a header not allowed: denied, no CORS headers.
    for (o, m, hd) in [
        ("https://evil.example.com", "GET", "authorization"),
        ("https://portal.example.com", "PATCH", "authorization"),
        ("https://portal.example.com", "GET", "x-custom"),
    ] {
        let r = preflight(o, m, hd).await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{o} {m} {hd}");
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    // Actual requests: the allowed origin gets the headers; another origin is refused before the
    // request runs; no Origin (CLI, agents) is unaffected.
    let r = c
        .get(format!("{}/api/v1/pipelines", s.url))
        .header("origin", "https://portal.example.com")
        .basic_auth("admin", Some(&s.admin_password))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "https://portal.example.com");
    assert_eq!(r.headers()["access-control-expose-headers"], "x-request-id");
    let r = c
        .post(format!("{}/api/v1/environments", s.url))
        .header("origin", "https://evil.example.com")
        .basic_auth("admin", Some(&s.admin_password))
        .json(&serde_json::json!({"name": "cors-env"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert!(s.admin().environments().await.unwrap().iter().all(|e| e.name != "cors-env"), "nothing happened");
    // The portal is never readable from another origin, not even an allowed one.
    let r = c.get(format!("{}/portal/signed-out", s.url)).header("origin", "https://portal.example.com").send().await;
    let r = r.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none(), "no CORS on the portal");
    assert_eq!(r.headers()["cross-origin-resource-policy"], "same-origin");
    let r = c
        .request(Method::OPTIONS, format!("{}/portal/", s.url))
        .header("origin", "https://portal.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "no preflight passes for the portal");
    s.admin().pipelines().await.unwrap();
    s.shutdown().await;
}
