//! The orchestrator's own calls (webhook tasks, profile token fetches) go only where
//! `[outbound] allowed_urls` says, are checked again after DNS, and fail with the host and a
//! generic cause — a pipeline cannot turn the orchestrator into a port scanner.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use drover_client::{Client, Credentials};
use drover_testkit::{Backend, TestServer, wait_status};
use drover_types::{DeploymentStatus as DS, NewEnvironment};

fn webhook(app: &str, url: &str, method: &str) -> String {
    format!(
        "application: {app}\nstages:\n  - name: ci\n    environment: ci\n    tasks:\n      - type: webhook\n        method: {method}\n        url: \"{url}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_go_only_where_outbound_allows() -> anyhow::Result<()> {
    // The system the admin allowed, and one beside it the attacker would like to reach.
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let allowed = vec![
        format!("http://127.0.0.1:{port}/hooks/"),
        format!("http://localhost:{port}/hooks/"),
        format!("http://127.0.0.1:{closed}/hooks/"),
    ];
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.outbound.allowed_urls = allowed).await?;
    let admin = s.admin();
    admin
        .create_environment(&NewEnvironment {
            name: "ci".into(),
            kind: None,
            labels: Default::default(),
            applications: vec![],
        })
        .await?;
    // The attacker: a CI client with the `api` role.
    let ci = admin.create_client("ci", &["api".into()]).await?;
    let t = s.anonymous().client_credentials_token("ci", &ci.client_secret, None).await?;
    let ci = Client::new(&s.url, Some(&s.ca), Credentials::Bearer(t["access_token"].as_str().unwrap().into()))?;

    // Refused at apply time, naming the task's key: another port, another path, the metadata
    // address, user information, placeholders in the host, a non-http scheme.
    for (url, says) in [
        (format!("http://127.0.0.1:{}/", port + 1), "[outbound] allowed_urls"),
        (format!("http://127.0.0.1:{port}/admin"), "[outbound] allowed_urls"),
        (format!("http://127.0.0.1:{port}/hooks/../admin"), "[outbound] allowed_urls"),
        ("http://169.254.169.254/latest/meta-data/".to_string(), "[outbound] allowed_urls"),
        (format!("http://x@127.0.0.1:{port}/hooks/"), "user information"),
        ("http://{{environment}}.internal/hooks/".to_string(), "placeholders"),
        ("file:///etc/passwd".to_string(), "must be an http:// or https:// URL"),
    ] {
        let e = ci.apply_yaml(&webhook("scan", &url, "DELETE")).await.unwrap_err();
        assert_eq!(e.status(), Some(422), "{url}: {e}");
        let m = e.to_string();
        assert!(m.contains("stages[0].tasks") && m.contains(says), "{url}: {m}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was called");

    // Allowed by text, but the name resolves to loopback: refused at call time, nothing called.
    ci.apply_yaml(&webhook("by-name", &format!("http://localhost:{port}/hooks/x"), "POST")).await?;
    let d = wait_status(&admin, ci.deploy("by-name", "1").await?.id, DS::Error).await?;
    let m = d.stages[0].tasks[0].message.clone().unwrap_or_default();
    assert!(m.contains(&format!("http://localhost:{port} resolves to a loopback address")), "{m}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // Named by address, it is called.
    ci.apply_yaml(&webhook("ok", &format!("http://127.0.0.1:{port}/hooks/deploy?v={{{{version}}}}"), "POST")).await?;
    wait_status(&admin, ci.deploy("ok", "1").await?.id, DS::Completed).await?;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // A closed port: the viewer sees the host and a generic cause, not the socket error.
    ci.apply_yaml(&webhook("closed", &format!("http://127.0.0.1:{closed}/hooks/x"), "DELETE")).await?;
    let d = wait_status(&admin, ci.deploy("closed", "1").await?.id, DS::Error).await?;
    let m = d.stages[0].tasks[0].message.clone().unwrap_or_default();
    assert_eq!(m, format!("DELETE http://127.0.0.1:{closed}: could not connect"));
    s.shutdown().await;
    Ok(())
}
