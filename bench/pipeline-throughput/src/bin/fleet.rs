//! Fleet benchmark: one stage with `targets: all` over N real `drover agent` processes (default
//! 300) on loopback, SQLite backend, each running a no-op `run` task. Figures come from the
//! orchestrator's own records, per round: how long after the stage started the last of the N
//! attempts was claimed (dispatch spread), and how long after the slowest attempt ended the
//! stage (here: the deployment) was complete.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use drover_types::DeploymentStatus;
use pipeline_throughput::{Orchestrator, Proc, peak_rss_mib, percentile, spawn};

#[derive(Parser)]
struct Args {
    /// Agents in the fleet.
    #[arg(long, default_value_t = 300)]
    agents: usize,
    /// Deployments measured, one after the other.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The drover binary (default: target/release/drover).
    #[arg(long, env = "DROVER_BIN", default_value = "target/release/drover")]
    bin: PathBuf,
    /// Append the figures to this file.
    #[arg(long)]
    results: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = tempfile::tempdir()?;
    let o = Orchestrator::start(&a.bin, dir.path()).await?;
    let admin = &o.admin;
    let mut agents: Vec<Proc> = Vec::new();
    for i in 0..a.agents {
        let name = format!("node-{i:03}");
        let cred = admin.add_agent(&name, "fleet").await?;
        let secret = dir.path().join(format!("{name}.secret"));
        std::fs::write(&secret, &cred.secret)?;
        let work = dir.path().join("work").join(&name);
        let args = [
            "agent",
            "--url",
            &o.url,
            "--ca-cert",
            o.ca.to_str().unwrap(),
            "--name",
            &name,
            "--secret-file",
            secret.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--capacity",
            "1",
        ];
        agents.push(spawn(&a.bin, &args, &dir.path().join(format!("{name}.log")))?);
    }
    // Every agent online (it has polled) before the first round, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let online = admin.agents().await?.iter().filter(|x| x.online).count();
        if online == a.agents {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("only {online} of {} agents came online", a.agents);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    admin
        .apply_yaml(
            "application: fleet\nstages:\n  - name: fleet\n    environment: fleet\n    targets: all\n    \
             tasks: [{type: run, command: [\"true\"]}]\n",
        )
        .await?;
    let (mut spreads, mut tails) = (Vec::new(), Vec::new());
    let mut lines = Vec::new();
    for round in 0..a.rounds {
        let d = admin.deploy("fleet", &format!("{round}")).await?;
        let end = tokio::time::Instant::now() + Duration::from_secs(120);
        let d = loop {
            let d = admin.deployment(d.id).await?;
            if d.status.is_terminal() || d.status == DeploymentStatus::Error {
                break d;
            }
            if tokio::time::Instant::now() > end {
                bail!("deployment {} still {} after 120 s", d.id, d.status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if d.status != DeploymentStatus::Completed {
            bail!("deployment {} ended {}: {:?}", d.id, d.status, d.message);
        }
        let events = admin.events(d.id).await?;
        let started = events
            .iter()
            .find(|e| e.kind == "deployment.status" && e.detail["to"] == "in_progress")
            .map(|e| e.ts.0)
            .context("no stage start")?;
        let claims: Vec<i64> = events
            .iter()
            .filter(|e| e.kind == "task.status" && !e.detail["target"].is_null() && e.detail["to"] == "in_progress")
            .map(|e| e.ts.0)
            .collect();
        if claims.len() != a.agents {
            bail!("{} claims for {} agents", claims.len(), a.agents);
        }
        let targets = &d.stages[0].tasks[0].targets;
        let slowest = targets.iter().filter_map(|t| t.finished_at.map(|f| f.0)).max().context("none finished")?;
        let spread = (claims.iter().max().unwrap() - started) as f64;
        let tail = (d.finished_at.context("not finished")?.0 - slowest) as f64;
        lines.push(format!(
            "round {}: {} attempts claimed within {:.0} ms of the stage starting; stage complete {:.0} ms after the slowest attempt ended; total {:.0} ms",
            round + 1,
            claims.len(),
            spread,
            tail,
            (d.finished_at.unwrap().0 - started) as f64
        ));
        spreads.push(spread);
        tails.push(tail);
    }
    spreads.sort_by(|x, y| x.partial_cmp(y).unwrap());
    tails.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let report = format!(
        "fleet: targets all over {} agent processes (capacity 1), no-op run task, SQLite, {} rounds\n{}\n\
         median: dispatched within {:.0} ms (target 1000), complete {:.0} ms after the slowest attempt (target 2000)\n\
         orchestrator peak RSS: {:.1} MiB\n",
        a.agents,
        a.rounds,
        lines.join("\n"),
        percentile(&spreads, 0.5),
        percentile(&tails, 0.5),
        peak_rss_mib(o.proc.0.id())
    );
    print!("{report}");
    if let Some(p) = &a.results {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
        writeln!(f, "## {}\n{report}", humantime::format_rfc3339_seconds(std::time::SystemTime::now()))?;
    }
    drop(agents);
    Ok(())
}
