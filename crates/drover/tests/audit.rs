//! The audit log records who did what from where, and `verify` finds tampering.

use drover_testkit::{Backend, TestServer};
use drover_types::Action;

drover_testkit::on_both_backends!(
    audit_records_actions_and_detects_tampering,
    no_change_without_its_entry,
    checkpoints_and_exports_catch_rechaining_and_truncation
);

async fn tamper(s: &TestServer, sql_sqlite: &str, sql_pg: &[&str]) -> anyhow::Result<()> {
    match s.pg_url() {
        None => {
            let c = rusqlite::Connection::open(s.data_dir().join("drover.db"))?;
            c.execute_batch(sql_sqlite)?;
        }
        Some(url) => {
            let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(opts).await?;
            for q in sql_pg {
                sqlx::query(q).execute(&pool).await?;
            }
            pool.close().await;
        }
    }
    Ok(())
}

async fn audit_records_actions_and_detects_tampering(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let c = s.admin();
    c.apply_yaml("application: au\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: approval}]\n")
        .await?;
    let d = c.deploy("au", "1").await?;
    c.act(d.id, Action::Approve, Some("ok".into())).await?;
    assert!(s.client("admin", "hunter2-not-it").pipelines().await.is_err());
    let cred = c.add_agent("a1", "dev").await?;
    // Agents hold client credentials, not logins: Basic is refused, a token works but only for
    // the agent protocol.
    assert_eq!(s.client("a1", &cred.secret).pipelines().await.unwrap_err().status(), Some(401));
    let agent = drover_client::Client::new(
        &s.url,
        Some(&s.ca),
        drover_client::Credentials::ClientCredentials {
            client_id: "a1".into(),
            auth: drover_client::ClientAuth::Secret(cred.secret.clone()),
        },
    )?;
    assert_eq!(agent.pipelines().await.unwrap_err().status(), Some(403));

    let all = c.audit(None, None, None, Some(100)).await?;
    let find = |action: &str| all.iter().find(|a| a.entry.action.contains(action)).cloned();
    let login = find("auth.login").expect("fresh login audited");
    assert_eq!(login.entry.principal, "operator:admin");
    let dep =
        all.iter().find(|a| a.entry.action == "POST /api/v1/deployments").cloned().expect("deployment start audited");
    assert_eq!(dep.entry.outcome, "success");
    assert_eq!(dep.entry.detail["status"], 201);
    assert!(dep.entry.source.starts_with("127.0.0.1:"), "{:?}", dep.entry.source);
    assert_eq!(dep.entry.request_id.len(), 16);
    let approve = find("/approve").expect("approval audited");
    assert_eq!(approve.entry.target, format!("/api/v1/deployments/{}/approve", d.id));
    let failed = all
        .iter()
        .find(|a| a.entry.action == "auth.failed" && a.entry.target == "admin")
        .cloned()
        .expect("failed login audited");
    assert_eq!((failed.entry.principal.as_str(), failed.entry.target.as_str()), ("anonymous", "admin"));
    assert!(!serde_json::to_string(&all)?.contains("hunter2"), "no password in the audit log");
    assert_eq!(failed.entry.detail["reason"], "wrong_password");
    let denied = find("permission.denied").expect("denial audited");
    assert_eq!(denied.entry.principal, "agent:a1");
    assert_eq!(denied.entry.detail["privilege"], "pipeline.read");
    let mine = c.audit(Some("agent:a1"), None, None, None).await?;
    assert!(mine.iter().all(|a| a.entry.principal == "agent:a1") && !mine.is_empty());

    let v = c.verify_audit().await?;
    assert!(v.ok, "{v:?}");
    assert!(v.entries >= 6);

    // The database refuses changes; past the refusal, verify finds them.
    let target = dep.seq;
    let e = tamper(
        &s,
        &format!("UPDATE audit_log SET outcome = 'failure' WHERE seq = {target}"),
        &[&format!("UPDATE audit_log SET outcome = 'failure' WHERE seq = {target}")],
    )
    .await;
    assert!(e.is_err(), "the append-only trigger refuses updates");
    tamper(
        &s,
        &format!("DROP TRIGGER audit_log_no_update; UPDATE audit_log SET outcome = 'failure' WHERE seq = {target};"),
        &[
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change",
            &format!("UPDATE audit_log SET outcome = 'failure' WHERE seq = {target}"),
        ],
    )
    .await?;
    let v = c.verify_audit().await?;
    assert!(!v.ok);
    let broken = v.broken.unwrap();
    assert_eq!(broken.seq, target);
    assert!(broken.reason.contains("altered"), "{}", broken.reason);
    assert_eq!(v.entries, target - 1);
    // Removing an entry is found too.
    tamper(
        &s,
        &format!("UPDATE audit_log SET outcome = 'success' WHERE seq = {target}; DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 2;"),
        &[&format!("UPDATE audit_log SET outcome = 'success' WHERE seq = {target}"), "DELETE FROM audit_log WHERE seq = 2"],
    )
    .await?;
    let v = c.verify_audit().await?;
    let broken = v.broken.unwrap();
    assert_eq!(broken.seq, 2);
    assert!(broken.reason.contains("missing"), "{}", broken.reason);
    s.shutdown().await;
    Ok(())
}

/// With the audit log refusing inserts, a change is refused (503) and absent, a token is not
/// handed out; once the log accepts entries again, both work and are recorded.
async fn no_change_without_its_entry(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    let admin = s.admin();
    admin.pipelines().await?; // admin's sign-in is on record (and remembered) before the log fails
    let ci = admin.create_client("ci", &["api".into()]).await?;
    tamper(
        &s,
        "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ],
    )
    .await?;
    let op = drover_types::NewOperator {
        name: "mallory".into(),
        roles: vec!["release-admin".into()],
        password: Some("a-long-password-123".into()),
        email: None,
    };
    let e = admin.add_operator(&op).await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e}");
    let e = s.anonymous().client_credentials_token("ci", &ci.client_secret, None).await.unwrap_err();
    assert_eq!(e.status(), Some(503), "no token without its token.issued entry: {e}");
    let state = s.running.as_ref().unwrap().state.clone();
    assert!(state.store.get_operator("mallory").await?.is_none(), "the refused change is not there");
    // Reads still work (they are not audited).
    admin.pipelines().await?;

    tamper(&s, "DROP TRIGGER refuse_audit;", &["DROP TRIGGER refuse_audit ON audit_log"]).await?;
    admin.add_operator(&op).await?;
    s.anonymous().client_credentials_token("ci", &ci.client_secret, None).await?;
    let all = admin.audit(None, None, None, Some(50)).await?;
    let created: Vec<_> = all.iter().filter(|a| a.entry.action == "POST /api/v1/operators").collect();
    assert_eq!(created.len(), 2, "started and its outcome: {created:?}");
    assert_eq!(created[0].entry.outcome, "success");
    assert_eq!(created[1].entry.outcome, "started");
    assert!(all.iter().any(|a| a.entry.action == "token.issued" && a.entry.target == "ci"));
    assert!(admin.verify_audit().await?.ok);
    s.shutdown().await;
    Ok(())
}

/// Exports the log and runs the third-party script on it: (exit code, what it printed).
async fn export_and_check(s: &TestServer, name: &str) -> anyhow::Result<(i32, String)> {
    let out = s.dir.path().join(name);
    let mut stream = Box::pin(s.admin().audit_export().await?);
    let mut text = Vec::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        text.extend_from_slice(&chunk?);
    }
    std::fs::write(&out, &text)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/verify-audit-export.py");
    let public = std::fs::read_to_string(s.data_dir().join("audit/checkpoint.pub"))?;
    let r =
        std::process::Command::new("python3").arg(script).arg(&out).arg("--public-key").arg(public.trim()).output()?;
    Ok((
        r.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr),
    ))
}

async fn some_activity(s: &TestServer) -> anyhow::Result<()> {
    let c = s.admin();
    for i in 0..4 {
        c.apply_yaml(&format!("application: ck{i}\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{{type: wait, duration: 1ms}}]\n")).await?;
    }
    Ok(())
}

/// Signed checkpoints kept outside the database catch what the chain alone cannot: an entry
/// rewritten and the chain recomputed (without the key: the HMAC fails; with it: the
/// checkpoint differs), and a truncated tail. The export shows the same to a third party.
async fn checkpoints_and_exports_catch_rechaining_and_truncation(b: Backend) -> anyhow::Result<()> {
    let s = TestServer::start(b).await?;
    some_activity(&s).await?;
    let state = s.running.as_ref().unwrap().state.clone();
    let cp = state.audit_keys.checkpoint(state.store.as_ref()).await?.expect("a checkpoint of the head");
    let (code, out) = export_and_check(&s, "clean.jsonl").await?;
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("OK: ") && out.contains("signatures checked with the given key"), "{out}");
    let v = s.admin().verify_audit().await?;
    // The periodic checkpoint (every 2 s) may have signed a later head meanwhile (the export's
    // own entries): at least the one taken here.
    assert!(v.ok && v.checkpoints >= 1 && v.last_checkpoint_seq.is_some_and(|seq| seq >= cp.seq), "{v:?}");

    // Re-chained: entry 3 rewritten and every hash from it on recomputed, as someone who can
    // write the database but has no chain key would.
    let entries = state.store.audit_entries(0, 10_000).await?;
    let mut prev = entries[1].hash.clone();
    let mut sql = Vec::new();
    for a in &entries[2..] {
        let mut e = a.entry.clone();
        if a.seq == 3 {
            e.target = "nothing happened".into();
        }
        let hash = drover_core::audit::chain_hash(&prev, a.seq, &e);
        sql.push(format!(
            "UPDATE audit_log SET target = '{}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {}",
            e.target.replace('\'', "''"),
            a.seq
        ));
        prev = hash;
    }
    let mut sqlite = String::from("DROP TRIGGER audit_log_no_update;");
    for q in &sql {
        sqlite.push_str(q);
        sqlite.push(';');
    }
    let mut pg = vec!["ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change".to_string()];
    pg.extend(sql.iter().cloned());
    tamper(&s, &sqlite, &pg.iter().map(String::as_str).collect::<Vec<_>>()).await?;
    let v = s.admin().verify_audit().await?;
    assert_eq!(v.broken.as_ref().map(|b| b.seq), Some(3), "{v:?}");
    let (code, out) = export_and_check(&s, "rechained.jsonl").await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("BROKEN at entry 3:"), "{out}");
    s.shutdown().await;

    // Truncated: the newest entries deleted (a chain that ends early is still a valid chain).
    let s = TestServer::start(b).await?;
    some_activity(&s).await?;
    let state = s.running.as_ref().unwrap().state.clone();
    let cp = state.audit_keys.checkpoint(state.store.as_ref()).await?.expect("a checkpoint");
    let keep = cp.seq - 3;
    tamper(
        &s,
        &format!("DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq > {keep};"),
        &[
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change",
            &format!("DELETE FROM audit_log WHERE seq > {keep}"),
        ],
    )
    .await?;
    let v = s.admin().verify_audit().await?;
    let broken = v.broken.clone().expect("truncation found");
    assert_eq!(broken.seq, keep + 1, "{v:?}");
    assert!(broken.reason.contains("truncated"), "{}", broken.reason);
    let (code, out) = export_and_check(&s, "truncated.jsonl").await?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN at entry"), "{out}");
    s.shutdown().await;
    Ok(())
}

/// With `[audit] checkpoint_webhook`, each checkpoint also goes to another system.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checkpoints_go_to_the_webhook() {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/cp",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| {
        cfg.audit.checkpoint_webhook = Some(format!("http://127.0.0.1:{port}/cp"));
    })
    .await
    .unwrap();
    some_activity(&s).await.unwrap();
    let mut first = None;
    for _ in 0..200 {
        if let Some(v) = got.lock().unwrap().first().cloned() {
            first = Some(v);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let v = first.expect("a checkpoint reached the webhook");
    let file = std::fs::read_to_string(s.data_dir().join("audit/checkpoints")).unwrap();
    let line: serde_json::Value = serde_json::from_str(file.lines().next().unwrap()).unwrap();
    assert_eq!((&v["seq"], &v["hash"], &v["sig"]), (&line["seq"], &line["hash"], &line["sig"]));
    let public = std::fs::read_to_string(s.data_dir().join("audit/checkpoint.pub")).unwrap();
    assert_eq!(v["public_key"], public.trim());
    s.shutdown().await;
}
