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
