//! Portal benchmark: with P pipelines and N deployments in the store (SQLite), how long the
//! dashboard and a pipeline view take to render (the time from request to the last byte over
//! loopback HTTPS with keep-alive: server time plus well under a millisecond), p50/p99 over R
//! requests each; and what the portal adds to the orchestrator's memory (its RSS once seeded and
//! idle, against after the sign-in and the R requests of each page).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use drover_types::DeploymentStatus;
use pipeline_throughput::{Orchestrator, percentile};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    pipelines: usize,
    #[arg(long, default_value_t = 10_000)]
    deployments: usize,
    /// Requests per page measured.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Live-update runs measured (a deployment page open while its approval is decided).
    #[arg(long, default_value_t = 50)]
    live: usize,
    #[arg(long, env = "DROVER_BIN", default_value = "target/release/drover")]
    bin: PathBuf,
    #[arg(long)]
    results: Option<PathBuf>,
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn measure(c: &reqwest::Client, url: &str, cookie: &str, n: usize) -> anyhow::Result<(f64, f64, usize)> {
    let mut ms = Vec::with_capacity(n);
    let mut bytes = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = c.get(url).header("cookie", cookie).send().await?;
        if r.status() != 200 {
            bail!("{url}: {}", r.status());
        }
        bytes = r.bytes().await?.len();
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99), bytes))
}

/// How long after a change its open deployment page hears of it: a deployment waits for
/// approval, its page's live stream is open; the approval is sent, and the time until the stream
/// carries the completed deployment and the page's fragment is fetched is measured.
async fn live_latency(
    o: &Orchestrator,
    c: &reqwest::Client,
    cookie: &str,
    runs: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    use futures_util::StreamExt;
    let yaml =
        "application: live\nstages:\n  - name: dev\n    environment: bench-dev\n    tasks:\n      - type: approval\n";
    o.admin.apply_yaml(yaml).await?;
    o.admin.push_artifact_bytes("live", "1", b"live".to_vec()).await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let d = o.admin.deploy("live", "1").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while o.admin.deployment(d.id).await?.status != DeploymentStatus::PendingInput {
            if Instant::now() > deadline {
                bail!("deployment {} never waited for approval", d.id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let url = format!("{}/portal/deployments/{}/live", o.url, d.id);
        let resp = c.get(&url).header("cookie", cookie).send().await?;
        let mut body = resp.bytes_stream();
        // The current state first.
        let mut seen = String::new();
        while !seen.contains("event: deployment") {
            seen.push_str(&String::from_utf8_lossy(&body.next().await.context("stream ended")??));
        }
        let t = Instant::now();
        o.admin.act(d.id, drover_types::Action::Approve, None).await?;
        let mut text = String::new();
        while !text.contains("\"status\":\"completed\"") {
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next()).await?.context("stream ended")??;
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        let fragment = format!("{}/portal/deployments/{}?fragment=1", o.url, d.id);
        c.get(&fragment).header("cookie", cookie).send().await?.bytes().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99), *ms.last().unwrap_or(&0.0)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = tempfile::tempdir()?;
    let o = Orchestrator::start(&a.bin, dir.path()).await?;
    let pid = o.proc.0.id();
    let seed = Instant::now();
    for i in 0..a.pipelines {
        let app = format!("app-{i:03}");
        let yaml = format!(
            "application: {app}\nstages:\n  - name: build\n    environment: bench-dev\n    tasks:\n      - type: wait\n        duration: 1ms\n  - name: release\n    environment: bench-prod\n    tasks:\n      - type: wait\n        duration: 1ms\n"
        );
        o.admin.apply_yaml(&yaml).await?;
        o.admin.push_artifact_bytes(&app, "1.0", b"bench".to_vec()).await?;
    }
    // Started 16 at a time; each pipeline's deployments run one after the other (stage locks).
    let per = a.deployments / a.pipelines;
    let mut started = 0;
    let mut ids = Vec::new();
    for round in 0..per {
        let mut batch = futures_util::stream::FuturesUnordered::new();
        for i in 0..a.pipelines {
            let admin = o.admin.clone();
            batch.push(async move { admin.deploy(&format!("app-{i:03}"), "1.0").await });
            if batch.len() >= 16
                && let Some(r) = futures_util::StreamExt::next(&mut batch).await
            {
                ids.push(r?.id);
            }
        }
        while let Some(r) = futures_util::StreamExt::next(&mut batch).await {
            ids.push(r?.id);
        }
        started += a.pipelines;
        if round % 10 == 9 {
            eprintln!("  {started} deployments started");
        }
    }
    // Wait until every one has ended.
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let open = o.admin.deployments(None, None, Some(10_000)).await?;
        let running = open.iter().filter(|d| !d.status.is_terminal()).count();
        if running == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{running} deployments still running after 30 min");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let completed = o.admin.deployments(None, Some(DeploymentStatus::Completed.as_str()), Some(10_000)).await?.len();
    let seeded_s = seed.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = rss_mib(pid);
    let (cookie, _) = drover_testkit::portal::http_sign_in(&o.url, &o.ca, "admin", &o.admin_password).await?;
    let c = reqwest::Client::builder()
        .use_preconfigured_tls(drover_tls::client_config(&o.ca)?)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let dash = measure(&c, &format!("{}/portal/", o.url), &cookie, a.requests).await?;
    let view = measure(&c, &format!("{}/portal/pipelines/app-042", o.url), &cookie, a.requests).await?;
    let one = *ids.last().unwrap_or(&1);
    let dep = measure(&c, &format!("{}/portal/deployments/{one}", o.url), &cookie, a.requests.min(100)).await?;
    let live = live_latency(&o, &c, &cookie, a.live.max(1)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_mib(pid);
    let report = format!(
        "portal: {} pipelines, {} deployments ({completed} completed; seeded in {seeded_s:.0} s), {} requests per page, SQLite\n\
         \x20 dashboard      p50 {:.1} ms  p99 {:.1} ms  ({} bytes)\n\
         \x20 pipeline view  p50 {:.1} ms  p99 {:.1} ms  ({} bytes)\n\
         \x20 deployment     p50 {:.1} ms  p99 {:.1} ms  ({} bytes)\n\
         \x20 live update    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (approve sent → the open page's stream says so, and its fragment is fetched; {} runs)\n\
         \x20 RSS idle after seeding {idle:.1} MiB, after sign-in and the requests {after:.1} MiB ({:+.1} MiB)\n",
        a.pipelines,
        ids.len(),
        a.requests,
        dash.0,
        dash.1,
        dash.2,
        view.0,
        view.1,
        view.2,
        dep.0,
        dep.1,
        dep.2,
        live.0,
        live.1,
        live.2,
        a.live,
        after - idle,
    );
    print!("{report}");
    if let Some(p) = a.results {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
        writeln!(f, "\n## {}\n\n```\n{report}```", humantime::format_rfc3339_seconds(std::time::SystemTime::now()))?;
    }
    Ok(())
}
