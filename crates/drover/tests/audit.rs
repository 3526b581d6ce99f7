//! The audit log records who did what from where, and `verify` finds tampering.

use drover_testkit::{Backend, TestServer};
use drover_types::Action;

drover_testkit::on_both_backends!(audit_records_actions_and_detects_tampering);

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
