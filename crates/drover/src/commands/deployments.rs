//! `deploy`, `status`, `logs`, `deployments` and the actions (`approve`, `abort`, ...).

use super::*;

/// `follow`: `Some(until)` to follow, stopping at `until` when given.
pub async fn deploy(
    conn: &Conn,
    app: &str,
    version: &str,
    pipeline: Option<&str>,
    follow: Option<Option<DeploymentStatus>>,
) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let pipeline = match pipeline {
        Some(p) => p.to_string(),
        None => {
            let all = c.pipelines().await?;
            let mine: Vec<_> = all.iter().filter(|p| p.application == app).collect();
            match mine.as_slice() {
                [one] => one.name.clone(),
                [] => bail!("application {app} has no pipeline; apply one first (drover apply -f pipeline.yaml)"),
                many => match many.iter().find(|p| p.name == app) {
                    Some(p) => p.name.clone(),
                    None => bail!(
                        "application {app} has several pipelines ({}); choose one with --pipeline",
                        many.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                },
            }
        }
    };
    let d = c.deploy(&pipeline, version).await?;
    if let Some(until) = follow {
        if conn.output == Output::Text {
            println!("deployment {} of {} {} started", d.id, d.application, d.version);
        }
        return follow_deployment(&c, conn.output, d.id, until).await;
    }
    print(conn.output, &d, |d| {
        format!("deployment {} of {} {} on pipeline {}: {}", d.id, d.application, d.version, d.pipeline, d.status)
    })
}

/// `drover report PIPELINE [--from D] [--to D]`.
pub async fn report(conn: &Conn, pipeline: &str, from: Option<&str>, to: Option<&str>) -> anyhow::Result<u8> {
    let r = client(conn).await?.report(pipeline, from, to).await?;
    print(conn.output, &r, render::report)
}

pub async fn status(conn: &Conn, id: i64, follow: Option<Option<DeploymentStatus>>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    if let Some(until) = follow {
        return follow_deployment(&c, conn.output, id, until).await;
    }
    let d = c.deployment(id).await?;
    print(conn.output, &d, render::deployment)
}

/// Streams a deployment until it ends or stops in error, through every wait (queued,
/// promotion, approval, pause), saying what it waits for and what would continue it; exit 0
/// only if it completed. The server ends a stream after an hour: it is followed on from the
/// last log line seen.
pub async fn follow_deployment(
    c: &Client,
    output: Output,
    id: i64,
    until: Option<DeploymentStatus>,
) -> anyhow::Result<u8> {
    let mut r = render::Follower::default();
    // Known before the first event, so that replayed log lines show their stage.
    let mut last: Option<drover_types::Deployment> = c.deployment(id).await.ok();
    let mut after = 0;
    // Bounded: each stream lasts up to an hour.
    'streams: for _ in 0..10_000 {
        let mut stream = Box::pin(c.follow(id, after).await?);
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"event": ev.event, "data": serde_json::from_str::<serde_json::Value>(&ev.data).unwrap_or_default()})
                );
            }
            match ev.event.as_str() {
                "deployment" => {
                    let d: drover_types::Deployment = serde_json::from_str(&ev.data)?;
                    if output == Output::Text {
                        for line in r.changes(&d) {
                            println!("{line}");
                        }
                    }
                    // In error it waits for an operator (retry, skip, abort): stop here, with
                    // the commands printed above.
                    let stop = d.status == DeploymentStatus::Error;
                    let reached = until == Some(d.status);
                    last = Some(d);
                    if reached {
                        return Ok(exit::OK);
                    }
                    if stop {
                        break 'streams;
                    }
                }
                "log" => {
                    let l: drover_types::LogLine = serde_json::from_str(&ev.data)?;
                    after = after.max(l.id);
                    if output == Output::Text {
                        println!("{}", r.log_line(&l, last.as_ref()));
                    }
                }
                "end" => break 'streams,
                _ => {}
            }
        }
        if last.as_ref().is_some_and(|d| d.status.is_terminal()) {
            break;
        }
    }
    let d = c.deployment(id).await?;
    Ok(if d.status == DeploymentStatus::Completed { exit::OK } else { exit::DEPLOYMENT_NOT_COMPLETED })
}

/// A deployment's log, each line with its stage and task; `--follow` keeps printing new lines
/// until the deployment ends (reconnecting when the server ends a stream).
pub async fn logs(conn: &Conn, id: i64, follow: bool) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let d = c.deployment(id).await?;
    let mut after = 0;
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let page = c.logs(id, after).await?;
        if page.lines.is_empty() {
            break;
        }
        after = page.next;
        all.extend(page.lines);
    }
    if !follow {
        return print(conn.output, &all, |v| v.iter().map(|l| render::log_line(l, &d) + "\n").collect());
    }
    let show = |l: &drover_types::LogLine| match conn.output {
        Output::Json => serde_json::to_string(l).unwrap_or_default(),
        Output::Text => render::log_line(l, &d),
    };
    for l in &all {
        println!("{}", show(l));
    }
    // Bounded: each stream lasts up to an hour.
    'streams: for _ in 0..10_000 {
        let mut stream = Box::pin(c.follow(id, after).await?);
        while let Some(ev) = stream.next().await {
            let ev = ev?;
            match ev.event.as_str() {
                "log" => {
                    let l: drover_types::LogLine = serde_json::from_str(&ev.data)?;
                    after = after.max(l.id);
                    println!("{}", show(&l));
                }
                "end" => break 'streams,
                _ => {}
            }
        }
        if c.deployment(id).await?.status.is_terminal() {
            break;
        }
    }
    Ok(exit::OK)
}

pub async fn list(conn: &Conn, pipeline: Option<&str>, status: Option<&str>, limit: u32) -> anyhow::Result<u8> {
    let v = client(conn).await?.deployments(pipeline, status, Some(limit)).await?;
    print(conn.output, &v, |v| render::deployments(v))
}

#[derive(Args, Debug)]
pub struct ActionArgs {
    /// Deployment id.
    pub id: i64,
    /// Why (recorded with the action).
    #[arg(long, alias = "comment")]
    pub reason: Option<String>,
    /// Approve or reject as an override, not as one of the approvers (needs
    /// approval.override and --reason; recorded as an override).
    #[arg(long = "override")]
    pub override_approval: bool,
}

pub async fn action(conn: &Conn, a: ActionArgs, action: Action) -> anyhow::Result<u8> {
    if a.override_approval && !matches!(action, Action::Approve | Action::Reject) {
        anyhow::bail!("--override applies to approve and reject only");
    }
    if a.override_approval && a.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        anyhow::bail!("an override needs --reason (it is recorded with the decision)");
    }
    let req = drover_types::ActionRequest { reason: a.reason, comment: None, override_approval: a.override_approval };
    let d = client(conn).await?.act_with(a.id, action, &req).await?;
    print(conn.output, &d, |d| {
        if action == Action::Rollback {
            format!("rollback deployment {} of {} {} started ({})", d.id, d.application, d.version, d.status)
        } else {
            format!(
                "deployment {}: {}{}",
                d.id,
                d.status,
                d.message.as_ref().map(|m| format!(" — {m}")).unwrap_or_default()
            )
        }
    })
}

impl ActionArgs {
    pub async fn run(self, conn: &Conn, act: Action) -> anyhow::Result<u8> {
        action(conn, self, act).await
    }
}
