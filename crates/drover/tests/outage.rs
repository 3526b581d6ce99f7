//! A database outage (issue 8): PostgreSQL behind a TCP relay that the test cuts. Callers get
//! 503 `unavailable` with `Retry-After` — never 401 — with the same credentials, no
//! authentication failure is recorded for it, and the orchestrator recovers by itself once the
//! database is reachable again.

use std::time::Duration;

use drover_testkit::relay::Relay;
use drover_testkit::{Backend, TestServer};

fn http(s: &TestServer) -> reqwest::Client {
    let tls = drover_tls::client_config(&s.ca).unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(Duration::from_secs(60)).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_503_with_the_same_token_and_heals() {
    let relay = Relay::start().await;
    let (schema, url) = relay.fresh_schema().await;
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.database_url = Some(url.clone())).await.unwrap();
    let admin = s.admin();
    let ci = admin.create_client("ci", &["api".into()]).await.unwrap();
    let t = s.anonymous().client_credentials_token("ci", &ci.client_secret, None).await.unwrap();
    let token = t["access_token"].as_str().unwrap().to_string();
    // An operations client with a token, so that its calls reach the handlers in the outage.
    let ops = admin.create_client("ops", &["release-admin".into()]).await.unwrap();
    let t = s.anonymous().client_credentials_token("ops", &ops.client_secret, None).await.unwrap();
    let ops = drover_client::Client::new(
        &s.url,
        Some(&s.ca),
        drover_client::Credentials::Bearer(t["access_token"].as_str().unwrap().into()),
    )
    .unwrap();
    admin.create_environment(&drover_types::NewEnvironment { name: "dev".into(), ..Default::default() }).await.unwrap();
    admin.add_agent("web-1", "dev").await.unwrap();
    let secret = drover_types::SetVariable { value: "outage-secret".into(), secret: true };
    let labels: std::collections::BTreeMap<String, String> = [("region".to_string(), "eu".to_string())].into();
    let c = http(&s);
    let get = |auth: &'static str| {
        let rb = c.get(format!("{}/api/v1/pipelines", s.url));
        let rb =
            if auth == "bearer" { rb.bearer_auth(&token) } else { rb.basic_auth("admin", Some(&s.admin_password)) };
        async move { rb.send().await.unwrap() }
    };
    assert_eq!(get("bearer").await.status(), 200);
    assert_eq!(get("basic").await.status(), 200);

    relay.cut();
    for auth in ["bearer", "basic"] {
        let r = get(auth).await;
        assert_eq!(r.status(), 503, "{auth}: the database is down, the credentials are fine");
        assert_eq!(r.headers()["retry-after"], "5");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
    }
    // The token endpoint says the same in RFC 6749 terms.
    let r = c
        .post(format!("{}/oauth2/token", s.url))
        .basic_auth("ci", Some(&ci.client_secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "temporarily_unavailable");
    // Variables and labels: 503, nothing half-done.
    assert_eq!(ops.variables("dev").await.unwrap_err().status(), Some(503));
    assert_eq!(ops.set_variable("dev", "TOKEN", &secret).await.unwrap_err().status(), Some(503));
    assert_eq!(ops.set_agent_labels("web-1", &labels).await.unwrap_err().status(), Some(503));
    // The client library reports the code the CLI turns into exit code 9.
    let e = admin.pipelines().await.unwrap_err();
    assert_eq!(e.code(), Some(drover_types::ErrorCode::Unavailable));
    assert_eq!(e.code().unwrap().exit_code(), 9);

    relay.restore();
    let mut healed = false;
    for _ in 0..120 {
        if get("bearer").await.status() == 200 {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(healed, "the orchestrator reconnects by itself");
    assert_eq!(get("basic").await.status(), 200);
    assert!(ops.variables("dev").await.unwrap().is_empty(), "the refused set left nothing");
    ops.set_variable("dev", "TOKEN", &secret).await.unwrap();
    assert!(ops.variables("dev").await.unwrap()[0].has_value);
    assert_eq!(ops.set_agent_labels("web-1", &labels).await.unwrap().labels, labels);
    // No authentication failure was recorded for the outage.
    let failed = admin.audit(None, Some("auth.failed"), None, None).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    s.shutdown().await;
    drover_store::testing::drop_schema(&schema).await;
}
