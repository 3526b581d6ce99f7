//! Artifacts as an attacker would make them, deployed by a real agent through a real orchestrator.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use drover_testkit::{Backend, TestServer, tarball, tarball_with_links, wait_status};
use drover_types::{Action, DeploymentStatus as DS};

fn current_target(work: &Path, app: &str) -> String {
    std::fs::read_link(work.join(app).join("current")).map(|p| p.display().to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_artifacts_fail_their_deploy_and_touch_nothing_outside() -> anyhow::Result<()> {
    let mut s = TestServer::start(Backend::Sqlite).await?;
    let work = s.agent("dev-1", "dev").await?;
    let c = s.admin();
    c.apply_yaml("application: h\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: deploy}]\n").await?;
    // A setuid binary deploys, without its setuid bit.
    c.push_artifact_bytes("h", "1", tarball(&[("index.html", "1", 0o644), ("bin/su", "#!/bin/sh\n", 0o4755)])).await?;
    wait_status(&c, c.deploy("h", "1").await?.id, DS::Completed).await?;
    let mode = std::fs::metadata(work.join("h/releases/1/bin/su"))?.permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid and setgid never survive unpacking");
    // Where the attacker wants to write: beside the agent's work directory.
    let outside = work.parent().unwrap().join("outside");
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("hook.sh"), "touch \"$(dirname \"$0\")/hook-ran\"\n")?;
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "abs-link",
            tarball_with_links(&[("index.html", "x", 0o644)], &[("etc", "/etc")]),
            "symlink etc -> /etc: points outside the release".into(),
        ),
        (
            "climb-link",
            tarball_with_links(&[("index.html", "x", 0o644)], &[("up", "../../../outside")]),
            "symlink up -> ../../../outside: points outside the release".into(),
        ),
        (
            "hook-outside",
            tarball_with_links(
                &[("index.html", "x", 0o644)],
                &[("pre-deploy", &outside.join("hook.sh").display().to_string())],
            ),
            "symlink pre-deploy".into(),
        ),
        (
            "hook-link",
            tarball_with_links(
                &[("index.html", "x", 0o644), ("scripts/pre.sh", "touch ran\n", 0o755)],
                &[("pre-deploy", "scripts/pre.sh")],
            ),
            "the pre-deploy hook is a symlink; hooks must be regular files inside the release".into(),
        ),
    ];
    for (version, tgz, says) in cases {
        c.push_artifact_bytes("h", version, tgz).await?;
        let d = wait_status(&c, c.deploy("h", version).await?.id, DS::Error).await?;
        let m = d.stages[0].tasks[0].message.clone().unwrap_or_default();
        assert!(m.contains(&says), "{version}: {m:?} should say {says:?}");
        assert_eq!(current_target(&work, "h"), "releases/1", "{version}: current is untouched");
        assert!(!work.join("h/releases").join(version).exists(), "{version}: the refused release is gone");
        c.act(d.id, Action::Abort, None).await?;
    }
    let mut left: Vec<String> =
        std::fs::read_dir(&outside)?.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    left.sort();
    assert_eq!(left, ["hook.sh"], "no hook outside the release ran, nothing was written there");
    s.shutdown().await;
    Ok(())
}

fn files_under(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten().map(|e| if e.path().is_dir() { files_under(&e.path()) } else { 1 }).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn artifacts_have_a_size_limit_a_quota_and_can_be_deleted() -> anyhow::Result<()> {
    use drover_server::artifacts::ByteSize;
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| {
        cfg.artifacts.max_size = ByteSize(1 << 20);
        cfg.artifacts.quota = ByteSize(5 << 19); // 2.5 MiB
    })
    .await?;
    let c = s.admin();
    let store_dir = s.data_dir().join("artifacts");
    // Over max_size, declared: 413 before anything is read; nothing is kept.
    let e = c.push_artifact_bytes("z", "1", vec![0u8; 64 << 20]).await.unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    assert_eq!(e.code(), Some(drover_types::ErrorCode::TooLarge), "{e}");
    // Over max_size, streamed without a length: cut off at the limit.
    let http = reqwest::Client::builder().use_preconfigured_tls(drover_tls::client_config(&s.ca)?).build()?;
    let chunks = futures_util::stream::iter((0..48).map(|_| Ok::<_, std::io::Error>(vec![0u8; 64 * 1024])));
    let r = http
        .put(format!("{}/api/v1/artifacts/z/2", s.url))
        .basic_auth("admin", Some(&s.admin_password))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
        assert!(r.text().await?.contains("[artifacts] max_size"));
    }
    assert!(c.artifacts(Some("z")).await?.is_empty());
    assert_eq!(files_under(&store_dir), 0, "no content and no temp file left");
    // The quota: two versions of 0.9 MiB fit in 2.5 MiB, a third does not.
    let part = |b: u8| vec![b; 900 * 1024];
    c.push_artifact_bytes("q", "1", part(1)).await?;
    c.push_artifact_bytes("q", "2", part(2)).await?;
    let e = c.push_artifact_bytes("q", "3", part(3)).await.unwrap_err();
    assert_eq!(e.code(), Some(drover_types::ErrorCode::QuotaExceeded), "{e}");
    // Another application has a quota of its own.
    c.push_artifact_bytes("other", "1", part(4)).await?;
    // Deleting needs artifact.delete: a deployer may push but not delete.
    c.add_operator(&drover_types::NewOperator {
        name: "dee".into(),
        roles: vec!["deployer".into()],
        password: Some("deployer-password-1".into()),
        email: None,
    })
    .await?;
    let e = s.client("dee", "deployer-password-1").delete_artifact("q", "1").await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // An app-admin of another application: q's versions do not exist for them (404), and
    // nothing is deleted.
    c.add_operator(&drover_types::NewOperator {
        name: "oz".into(),
        roles: vec![],
        password: Some("other-admin-password".into()),
        email: None,
    })
    .await?;
    c.create_access_group(&drover_types::AccessGroup {
        name: "other-admins".into(),
        roles: vec!["app-admin".into()],
        operators: vec!["oz".into()],
        applications: vec!["other".into()],
        ..Default::default()
    })
    .await?;
    let e = s.client("oz", "other-admin-password").delete_artifact("q", "1").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(c.artifacts(Some("q")).await?.iter().any(|a| a.version == "1"));
    // Hostile names: refused, nothing reached the store.
    let e = s.client("oz", "other-admin-password").delete_artifact("other", "..").await.unwrap_err();
    assert!(matches!(e.status(), Some(400) | Some(404)), "{e}");
    // A version a deployment that has not ended uses cannot be deleted (no agent: it waits).
    c.apply_yaml("application: q\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: deploy}]\n").await?;
    let d = c.deploy("q", "1").await?;
    let e = c.delete_artifact("q", "1").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains(&format!("deployment {}", d.id)), "{e}");
    c.act(d.id, Action::Abort, None).await?;
    c.delete_artifact("q", "1").await?;
    assert_eq!(c.delete_artifact("q", "1").await.unwrap_err().status(), Some(404));
    // Room again.
    c.push_artifact_bytes("q", "3", part(3)).await?;
    // Content no version refers to is collected (grace 0 here; 10 minutes in service).
    let state = s.running.as_ref().unwrap().state.clone();
    let before = files_under(&store_dir.join("sha256"));
    let (n, bytes) =
        drover_server::service::artifacts::collect_garbage(&state, std::time::Duration::ZERO).await.unwrap();
    assert_eq!((n, bytes), (1, 900 * 1024), "version 1's content");
    assert_eq!(files_under(&store_dir.join("sha256")), before - 1);
    // What is still referenced stays: every remaining version downloads.
    for (app, v) in [("q", "2"), ("q", "3"), ("other", "1")] {
        let a = c.artifacts(Some(app)).await?.into_iter().find(|a| a.version == v).unwrap();
        assert!(state.artifacts.path_of(&a.sha256).unwrap().exists(), "{app} {v}");
    }
    s.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_the_newest_and_whatever_is_deployed() -> anyhow::Result<()> {
    let mut s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.artifacts.keep_versions = 2).await?;
    s.agent("dev-1", "dev").await?;
    let c = s.admin();
    c.apply_yaml("application: r\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: deploy}]\n  - name: prod\n    environment: prod\n    tasks: [{type: deploy}]\n").await?;
    // Version 1 completes nowhere: its deployment waits for a prod agent (it has not ended).
    c.push_artifact_bytes("r", "1", tarball(&[("v", "1", 0o644)])).await?;
    let d1 = c.deploy("r", "1").await?;
    for v in ["2", "3", "4", "5"] {
        c.push_artifact_bytes("r", v, tarball(&[("v", v, 0o644)])).await?;
    }
    let mut kept: Vec<String> = c.artifacts(Some("r")).await?.into_iter().map(|a| a.version).collect();
    kept.sort();
    assert_eq!(kept, ["1", "4", "5"], "the newest two, and the version a deployment uses");
    let log = c.audit(None, Some("artifact.retention"), None, None).await?;
    assert!(log.iter().any(|e| e.entry.outcome == "started"), "on record before it happens");
    assert!(
        log.iter().any(|e| e.entry.outcome == "success" && e.entry.detail["versions"].to_string().contains("\"2\""))
    );
    c.act(d1.id, Action::Abort, None).await?;
    s.shutdown().await;
    Ok(())
}
