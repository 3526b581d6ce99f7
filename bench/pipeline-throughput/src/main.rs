//! Pipeline throughput benchmark: N deployments of a 4-stage pipeline whose tasks are no-op
//! `run` tasks, against 4 agents on loopback, SQLite backend. Deployments are started at a fixed
//! rate (open loop), round-robin over K applications so that every stage stays busy. Prints
//! deployments/s (N / first created → last finished), p50/p99 of one deployment's end-to-end
//! time (the orchestrator's created_at → finished_at), the dispatch latency of the first task
//! (created_at → its started_at), and the orchestrator's peak RSS.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use drover_client::Client;
use drover_types::DeploymentStatus;
use pipeline_throughput::{peak_rss_mib, percentile, spawn};

#[derive(Parser)]
struct Args {
    /// Deployments to measure (after the warm-up).
    #[arg(long, default_value_t = 1500)]
    deployments: usize,
    /// Applications (pipelines) deploying in parallel.
    #[arg(long, default_value_t = 16)]
    apps: usize,
    /// Deployments started per second.
    #[arg(long, default_value_t = 110.0)]
    rate: f64,
    /// Agents (1 to 4); with fewer than 4, stages share environments (`--agents 1` is the
    /// Buildbot peer's shape: N deployments x 4 no-op tasks on one agent).
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Tasks each agent runs at once.
    #[arg(long, default_value_t = 16)]
    capacity: u32,
    /// Warm-up deployments, not counted.
    #[arg(long, default_value_t = 32)]
    warmup: usize,
    /// The drover binary (default: target/release/drover).
    #[arg(long, env = "DROVER_BIN", default_value = "target/release/drover")]
    bin: PathBuf,
    /// Append the figures to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// What each task prints: `none` (`true`, the default), `plain` (two lines through `sh`,
    /// one with a token in it), `secret` (the same, the token a secret variable of the
    /// environment: masking's cost is `secret` against `plain`).
    #[arg(long, default_value = "none", value_parser = ["none", "plain", "secret"])]
    output: String,
    /// Run each agent as root with `capacity` task users of its own (`UID:GID` from 61000 up,
    /// no entries in the user database needed): tasks then change uid and every process of the
    /// user is looked for after each task. Needs root.
    #[arg(long)]
    task_users: bool,
}

/// The token the tasks print (`--output plain|secret`).
const TOKEN: &str = "tok-0123456789abcdef";

/// Starts `count` deployments at `rate`/s round-robin over `apps` applications; waits until all
/// are final; returns them.
async fn run(
    admin: &Client,
    count: usize,
    apps: usize,
    rate: f64,
    tag: &str,
) -> anyhow::Result<Vec<drover_types::Deployment>> {
    let t0 = tokio::time::Instant::now();
    let mut starts = Vec::new();
    for k in 0..count {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(k as f64 / rate)).await;
        let c = admin.clone();
        let (app, version) = (format!("app{}", k % apps), format!("{tag}.{k}"));
        starts.push(tokio::spawn(async move { c.deploy(&app, &version).await }));
    }
    let mut ids = Vec::new();
    for s in starts {
        ids.push(s.await??.id);
    }
    // Deployments of one application finish in order: wait for each application's last one.
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(120) + Duration::from_secs_f64(count as f64 / rate * 4.0);
    for last in ids.iter().rev().take(apps) {
        loop {
            let d = admin.deployment(*last).await?;
            if d.status.is_terminal() || d.status == DeploymentStatus::Error {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("deployment {last} still {} at the deadline", d.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut out = Vec::new();
    for chunk in ids.chunks(64) {
        let fs: Vec<_> = chunk.iter().map(|id| admin.deployment(*id)).collect();
        for d in futures_util::future::join_all(fs).await {
            let d = d?;
            if d.status != DeploymentStatus::Completed {
                bail!("deployment {} ended {}: {:?}", d.id, d.status, d.message);
            }
            out.push(d);
        }
    }
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = tempfile::tempdir()?;
    let o = pipeline_throughput::Orchestrator::start(&a.bin, dir.path()).await?;
    let (serve, url, ca, admin) = (o.proc, o.url, o.ca, o.admin);
    let stages = ["s1", "s2", "s3", "s4"];
    let n_agents = a.agents.clamp(1, 4);
    let mut agents = Vec::new();
    // Task users must reach their work dirs: not under the 0700 temp dir.
    let reachable = tempfile::Builder::new().prefix("drover-bench-").tempdir_in("/tmp")?;
    if a.task_users {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(reachable.path(), std::fs::Permissions::from_mode(0o755))?;
    }
    for (i, s) in stages[..n_agents].iter().enumerate() {
        let name = format!("agent-{s}");
        let cred = admin.add_agent(&name, s).await?;
        let secret = dir.path().join(format!("{name}.secret"));
        std::fs::write(&secret, &cred.secret)?;
        // The agent's alone (an agent with task users refuses a secret they could read).
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let work = if a.task_users { reachable.path().join(&name) } else { dir.path().join("work").join(&name) };
        let capacity = a.capacity.to_string();
        let mut args = vec![
            "agent".to_string(),
            "--url".into(),
            url.clone(),
            "--ca-cert".into(),
            ca.to_str().unwrap().into(),
            "--name".into(),
            name.clone(),
            "--secret-file".into(),
            secret.to_str().unwrap().into(),
            "--work-dir".into(),
            work.to_str().unwrap().into(),
            "--capacity".into(),
            capacity,
        ];
        if a.task_users {
            for k in 0..a.capacity {
                let uid = 61_000 + i as u32 * a.capacity + k;
                args.extend(["--task-user".to_string(), format!("{uid}:{uid}")]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agents.push(spawn(&a.bin, &args, &dir.path().join(format!("{name}.log")))?);
    }
    if a.output == "secret" {
        // Secrets need environments that list the applications.
        let applications: Vec<String> = (0..a.apps).map(|i| format!("app{i}")).collect();
        for env in &stages[..n_agents] {
            let e = drover_types::NewEnvironment {
                name: env.to_string(),
                applications: applications.clone(),
                ..Default::default()
            };
            admin.put_environment(&e).await?;
            let v = drover_types::SetVariable { value: TOKEN.into(), secret: true };
            admin.set_variable(env, "TOKEN", &v).await?;
        }
    }
    let task = match a.output.as_str() {
        "plain" => format!("[{{type: run, command: \"echo deploying with {TOKEN}; echo done\"}}]"),
        "secret" => "[{type: run, command: \"echo deploying with ${TOKEN}; echo done\"}]".to_string(),
        _ => "[{type: run, command: [\"true\"]}]".to_string(),
    };
    for i in 0..a.apps {
        let mut yaml = format!("application: app{i}\nstages:\n");
        for (k, s) in stages.iter().enumerate() {
            let env = stages[k % n_agents];
            yaml.push_str(&format!("  - name: {s}\n    environment: {env}\n    tasks: {task}\n"));
        }
        admin.apply_yaml(&yaml).await?;
    }
    run(&admin, a.warmup, a.apps, a.rate, "warm").await?;
    let done = run(&admin, a.deployments, a.apps, a.rate, "run").await?;
    let first = done.iter().map(|d| d.created_at.0).min().context("no deployments")?;
    let last = done.iter().filter_map(|d| d.finished_at.map(|f| f.0)).max().context("none finished")?;
    let wall = (last - first) as f64 / 1000.0;
    let mut e2e: Vec<f64> = done.iter().filter_map(|d| Some((d.finished_at?.0 - d.created_at.0) as f64)).collect();
    let mut dispatch: Vec<f64> = done
        .iter()
        .filter_map(|d| Some((d.stages.first()?.tasks.first()?.started_at?.0 - d.created_at.0) as f64))
        .collect();
    dispatch.sort_by(|x, y| x.partial_cmp(y).unwrap());
    e2e.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let rss = peak_rss_mib(serve.0.id());
    let report = format!(
        "pipeline-throughput: {} deployments x 4 stages x 1 run task (output: {}); {} agent(s) (capacity {}{}), {} applications, started at {}/s, SQLite\n\
         deployments/s: {:.1}\n\
         end-to-end ms: p50 {:.0}, p99 {:.0}, max {:.0}\n\
         first-task dispatch ms: p50 {:.0}, p99 {:.0}\n\
         orchestrator peak RSS: {:.1} MiB\n",
        done.len(),
        a.output,
        n_agents,
        a.capacity,
        if a.task_users { ", task users" } else { "" },
        a.apps,
        a.rate,
        done.len() as f64 / wall,
        percentile(&e2e, 0.5),
        percentile(&e2e, 0.99),
        e2e.last().copied().unwrap_or(f64::NAN),
        percentile(&dispatch, 0.5),
        percentile(&dispatch, 0.99),
        rss
    );
    print!("{report}");
    if let Some(p) = &a.results {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
        writeln!(f, "## {}\n{report}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()))?;
    }
    drop(agents);
    drop(serve);
    drop(reachable);
    Ok(())
}
