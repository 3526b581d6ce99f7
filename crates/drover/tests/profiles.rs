//! Authentication profiles and the `webhook` task, against a test double of an external system
//! with an OAuth 2.0 token endpoint (a Jenkins-like service cannot run here): secrets are sealed
//! and never returned, tokens are cached, refreshed before expiry, and fetched again once on a
//! 401. Both backends.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use drover_testkit::{Backend, TestServer, wait_status};
use drover_types::{AuthProfile, DeploymentStatus as DS};
use serde_json::json;

drover_testkit::on_both_backends!(oauth_profiles_cache_refresh_and_retry, profile_secrets_never_leave);

const SECRET: &str = "jenkins-client-secret-0123456789";

#[derive(Default)]
struct Double {
    issued: AtomicU64,
    expires_in: AtomicU64,
    valid: Mutex<HashSet<String>>,
    builds: Mutex<Vec<String>>,
    refused: AtomicU64,
}

async fn token(State(d): State<Arc<Double>>, headers: HeaderMap) -> (StatusCode, axum::Json<serde_json::Value>) {
    use base64::Engine as _;
    let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("jenkins:{SECRET}")));
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})));
    }
    let n = d.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let t = format!("tok-{n}");
    d.valid.lock().unwrap().insert(t.clone());
    let exp = d.expires_in.load(Ordering::SeqCst);
    (StatusCode::OK, axum::Json(json!({"access_token": t, "token_type": "Bearer", "expires_in": exp})))
}

async fn build(State(d): State<Arc<Double>>, headers: HeaderMap, body: String) -> StatusCode {
    let t = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if t.is_none_or(|t| !d.valid.lock().unwrap().contains(t)) {
        d.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    d.builds.lock().unwrap().push(body);
    StatusCode::CREATED
}

async fn start_double() -> (Arc<Double>, String) {
    let d = Arc::new(Double::default());
    d.expires_in.store(300, Ordering::SeqCst);
    let app = axum::Router::new()
        .route("/token", post(token))
        .route("/job/deploy/build", post(build))
        .route("/broken", post(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .with_state(d.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (d, url)
}

fn oauth_profile(name: &str, base: &str, secret: &str) -> AuthProfile {
    AuthProfile {
        name: name.into(),
        kind: "oauth2-client-credentials".into(),
        username: None,
        client_id: Some("jenkins".into()),
        token_endpoint: Some(format!("{base}/token")),
        scope: Some("build".into()),
        revocation_endpoint: None,
        ca_file: None,
        environment: None,
        allowed_urls: vec![format!("{base}/job/")],
        has_secret: false,
        secret: Some(secret.into()),
    }
}

fn pipeline(app: &str, base: &str, profile: &str) -> String {
    format!(
        "application: {app}\nstages:\n  - name: ci\n    environment: ci\n    tasks:\n      - type: webhook\n        url: {base}/job/deploy/build\n        auth_profile: {profile}\n        body: '{{\"version\": \"{{{{version}}}}\", \"by\": \"{{{{started_by}}}}\"}}'\n        expect_status: 201\n"
    )
}

async fn oauth_profiles_cache_refresh_and_retry(b: Backend) -> anyhow::Result<()> {
    let (double, base) = start_double().await;
    let allowed = format!("{base}/");
    let s = TestServer::start_configured(b, |cfg| cfg.outbound.allowed_urls = vec![allowed]).await?;
    let admin = s.admin();
    let http = reqwest::Client::builder().use_preconfigured_tls(drover_tls::client_config(&s.ca)?).build()?;
    let put = |p: AuthProfile| {
        let (http, url, pw) = (http.clone(), s.url.clone(), s.admin_password.clone());
        async move {
            http.post(format!("{url}/api/v1/auth-profiles"))
                .basic_auth("admin", Some(pw))
                .json(&p)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(put(oauth_profile("jenkins", &base, SECRET)).await.status().as_u16(), 201);
    admin.apply_yaml(&pipeline("svc", &base, "jenkins")).await?;

    // Two deployments, one token: it is cached.
    for v in ["1", "2"] {
        let d = admin.deploy("svc", v).await?;
        wait_status(&admin, d.id, DS::Completed).await?;
    }
    assert_eq!(double.issued.load(Ordering::SeqCst), 1);
    let builds = double.builds.lock().unwrap().clone();
    assert_eq!(builds.len(), 2);
    assert!(builds[1].contains("\"version\": \"2\"") && builds[1].contains("\"by\": \"admin\""), "{builds:?}");

    // The external system revokes its tokens (and the next one lives 2 s): the call gets 401,
    // the profile fetches a new token and tries once more; the deployment never notices.
    double.valid.lock().unwrap().clear();
    double.expires_in.store(2, Ordering::SeqCst);
    let d = admin.deploy("svc", "3").await?;
    wait_status(&admin, d.id, DS::Completed).await?;
    assert_eq!((double.issued.load(Ordering::SeqCst), double.refused.load(Ordering::SeqCst)), (2, 1));
    // A token about to expire is replaced before the call, without a 401.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let d = admin.deploy("svc", "4").await?;
    wait_status(&admin, d.id, DS::Completed).await?;
    assert_eq!((double.issued.load(Ordering::SeqCst), double.refused.load(Ordering::SeqCst)), (3, 1));

    // A wrong client secret: the task fails with a clear message that carries no secret.
    assert_eq!(put(oauth_profile("wrong", &base, "not-the-secret-xyz")).await.status().as_u16(), 201);
    admin.apply_yaml(&pipeline("svc2", &base, "wrong")).await?;
    let d = admin.deploy("svc2", "1").await?;
    let e = wait_status(&admin, d.id, DS::Error).await?;
    let m = e.message.unwrap_or_default();
    assert!(m.contains("token request") && m.contains("invalid_client"), "{m}");
    assert!(!m.contains("not-the-secret"), "{m}");
    // A failing endpoint, without a profile.
    admin
        .apply_yaml(&format!(
            "application: svc3\nstages:\n  - name: ci\n    environment: ci\n    tasks: [{{type: webhook, url: \"{base}/broken\"}}]\n"
        ))
        .await?;
    let d = admin.deploy("svc3", "1").await?;
    let e = wait_status(&admin, d.id, DS::Error).await?;
    assert!(e.message.unwrap_or_default().contains("answered 500, expected 2xx"));
    // A pipeline cannot send a profile's credentials anywhere else: refused when applied, and
    // when the profile is narrowed after the pipeline was applied, refused when called.
    let svc4 = format!(
        "application: svc4\nstages:\n  - name: ci\n    environment: ci\n    tasks: [{{type: webhook, url: \"{base}/broken?x=secret-in-query\", auth_profile: jenkins}}]\n"
    );
    let e = admin.apply_yaml(&svc4).await.unwrap_err();
    assert_eq!(e.status(), Some(422), "{e}");
    assert!(
        e.to_string().contains("stages[0].tasks[0].url") && e.to_string().contains("profile's allowed_urls"),
        "{e}"
    );
    let mut wide = oauth_profile("jenkins", &base, SECRET);
    wide.allowed_urls.push(format!("{base}/broken"));
    assert_eq!(put_update(&http, &s, wide).await, 200);
    admin.apply_yaml(&svc4).await?;
    assert_eq!(put_update(&http, &s, oauth_profile("jenkins", &base, SECRET)).await, 200);
    let d = admin.deploy("svc4", "1").await?;
    let e = wait_status(&admin, d.id, DS::Error).await?;
    let m = e.message.unwrap_or_default();
    assert!(m.contains("not among the profile's allowed_urls"), "{m}");
    assert!(!m.contains("secret-in-query"), "{m}");
    s.shutdown().await;
    Ok(())
}

async fn put_update(http: &reqwest::Client, s: &TestServer, p: AuthProfile) -> u16 {
    let r = http
        .put(format!("{}/api/v1/auth-profiles/{}", s.url, p.name))
        .basic_auth("admin", Some(&s.admin_password))
        .json(&p)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

async fn profile_secrets_never_leave(b: Backend) -> anyhow::Result<()> {
    let s =
        TestServer::start_configured(b, |cfg| cfg.outbound.allowed_urls = vec!["http://127.0.0.1:9/".into()]).await?;
    let http = reqwest::Client::builder().use_preconfigured_tls(drover_tls::client_config(&s.ca)?).build()?;
    let api = |m: reqwest::Method, path: &str| {
        http.request(m, format!("{}/api/v1/auth-profiles{path}", s.url)).basic_auth("admin", Some(&s.admin_password))
    };
    let mut p = oauth_profile("ci", "http://127.0.0.1:9", SECRET);
    let r = api(reqwest::Method::POST, "").json(&p).send().await?;
    assert_eq!(r.status().as_u16(), 201);
    let text = r.text().await?;
    assert!(!text.contains(SECRET) && text.contains("\"has_secret\":true"), "{text}");
    for path in ["", "/ci"] {
        let text = api(reqwest::Method::GET, path).send().await?.text().await?;
        assert!(!text.contains(SECRET), "{text}");
        assert!(text.contains("\"client_id\":\"jenkins\""), "{text}");
    }
    // Sealed at rest.
    let state = s.running.as_ref().unwrap().state.clone();
    let (body, _) = state.store.record_get("auth_profile", "ci").await?.unwrap();
    assert!(!body.contains(SECRET) && body.contains("\"sealed_secret\":\"v1."), "{body}");
    // An update without a secret keeps it; bad input is refused with the reason.
    p.secret = None;
    p.scope = Some("deploy".into());
    let r = api(reqwest::Method::PUT, "/ci").json(&p).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await?.contains("\"has_secret\":true"));
    let mut bad = p.clone();
    bad.name = "bad".into();
    bad.kind = "kerberos".into();
    assert_eq!(api(reqwest::Method::POST, "").json(&bad).send().await?.status().as_u16(), 400);
    bad.kind = "basic".into();
    let r = api(reqwest::Method::POST, "").json(&bad).send().await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("needs username"));
    // A token endpoint the orchestrator may not call is refused when the profile is saved.
    let mut far = oauth_profile("far", "http://127.0.0.1:10", SECRET);
    far.allowed_urls = vec!["http://127.0.0.1:9/job/".into()];
    let r = api(reqwest::Method::POST, "").json(&far).send().await?;
    assert_eq!(r.status().as_u16(), 400);
    assert!(r.text().await?.contains("token_endpoint"));
    // Viewers cannot read profiles at all.
    let pw = "viewer-password-123";
    s.admin()
        .add_operator(&drover_types::NewOperator {
            name: "v".into(),
            email: None,
            roles: vec!["viewer".into()],
            password: Some(pw.into()),
        })
        .await?;
    let r = http.get(format!("{}/api/v1/auth-profiles", s.url)).basic_auth("v", Some(pw)).send().await?;
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(api(reqwest::Method::DELETE, "/ci").send().await?.status().as_u16(), 204);
    s.shutdown().await;
    Ok(())
}
