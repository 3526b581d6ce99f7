//! The SysOps API (issue 8): observers read nodes, caches, pools and queues; admins clear a
//! cache, drain a node (no new work until resumed) and resize the database pool (PostgreSQL).

use std::time::Duration;

use drover_testkit::{Backend, TestServer, wait_status};
use drover_types::{DeploymentStatus as D, NewOperator, TaskStatus};

drover_testkit::on_both_backends!(sysops_observe_and_manage);

async fn sysops_observe_and_manage(b: Backend) -> anyhow::Result<()> {
    let mut s = TestServer::start(b).await?;
    let admin = s.admin();
    for (name, role) in [("obs", "sysops-observer"), ("ops", "sysops-admin")] {
        admin
            .add_operator(&NewOperator {
                name: name.into(),
                roles: vec![role.into()],
                password: Some("sysops-password-1".into()),
                email: None,
            })
            .await?;
    }
    let obs = s.client("obs", "sysops-password-1");
    let ops = s.client("ops", "sysops-password-1");
    let nodes = obs.system("nodes").await?;
    let me = nodes.as_array().unwrap().iter().find(|n| n["this"] == true).expect("this node is listed").clone();
    assert_eq!(me["version"], env!("CARGO_PKG_VERSION"));
    assert!(me["last_heartbeat"].as_str().is_some_and(|t| t.starts_with("20")) && me["draining"] == false);
    let node = me["id"].as_str().unwrap().to_string();
    let pools = obs.system("pools").await?;
    assert_eq!(pools[0]["name"], "database");
    assert_eq!(pools[0]["resizable"], b == Backend::Postgres);
    obs.system("queues").await?;
    // Observers may not pull the levers.
    assert_eq!(obs.clear_cache("verified_tokens").await.unwrap_err().status(), Some(403));
    assert_eq!(obs.drain_node(&node, true).await.unwrap_err().status(), Some(403));
    assert_eq!(obs.resize_pool(4).await.unwrap_err().status(), Some(403));

    // A bearer call fills the verified-token cache; clearing it empties it.
    let ci = admin.create_client("ci", &["viewer".into()]).await?;
    let t = s.anonymous().client_credentials_token("ci", &ci.client_secret, None).await?;
    let bearer = drover_client::Client::new(
        &s.url,
        Some(&s.ca),
        drover_client::Credentials::Bearer(t["access_token"].as_str().unwrap().into()),
    )?;
    bearer.pipelines().await?;
    bearer.pipelines().await?;
    let caches = obs.system("caches").await?;
    let vt = caches.as_array().unwrap().iter().find(|c| c["name"] == "verified_tokens").unwrap().clone();
    assert!(vt["entries"].as_u64().unwrap() >= 1 && vt["hits"].as_u64().unwrap() >= 1, "{vt}");
    let cleared = ops.clear_cache("verified_tokens").await?;
    assert!(cleared["cleared"].as_u64().unwrap() >= 1);
    let caches = obs.system("caches").await?;
    assert_eq!(caches[0]["entries"], 0);
    bearer.pipelines().await?; // verified again, still valid
    assert_eq!(ops.clear_cache("nope").await.unwrap_err().status(), Some(404));

    // Draining: the agent's polls get no new work until the drain ends.
    s.agent("dev-1", "dev").await?;
    admin.apply_yaml("application: dr\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"true\"}]\n").await?;
    ops.drain_node(&node, true).await?;
    assert_eq!(
        obs.system("nodes").await?.as_array().unwrap().iter().find(|n| n["id"] == node.as_str()).unwrap()["draining"],
        true
    );
    let d = admin.deploy("dr", "1").await?;
    let mut held = false;
    for _ in 0..400 {
        if obs.system("pools").await?[1]["waiting"].as_u64().unwrap() >= 1 {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(held, "the agent's poll is held");
    let now = admin.deployment(d.id).await?;
    assert_eq!(now.stages[0].tasks[0].status, TaskStatus::Ready, "nothing handed out while draining");
    ops.drain_node(&node, false).await?;
    wait_status(&admin, d.id, D::Completed).await?;
    assert_eq!(ops.drain_node("no-such-node", true).await.unwrap_err().status(), Some(404));

    // The database pool: resized on PostgreSQL, refused clearly on SQLite.
    match b {
        Backend::Postgres => {
            let r = ops.resize_pool(3).await?;
            assert_eq!(r["max"], 3);
            admin.pipelines().await?;
            assert_eq!(obs.system("pools").await?[0]["max"], 3);
            assert_eq!(ops.resize_pool(0).await.unwrap_err().status(), Some(400));
        }
        Backend::Sqlite => assert_eq!(ops.resize_pool(3).await.unwrap_err().status(), Some(422)),
    }
    s.shutdown().await;
    Ok(())
}
