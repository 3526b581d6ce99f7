//! `drover quickstart`: an orchestrator on the embedded database, three agents (dev, staging,
//! production), a sample application and pipeline, and one deployment followed live.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use drover_client::{Client, Credentials};
use drover_types::{Action, DeploymentStatus};
use futures_util::StreamExt;

use crate::commands::{read_secret_file, write_private};
use crate::{exit, render};

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    /// Data directory (created when missing; reused when present).
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
    pub data_dir: PathBuf,
    /// Address of the orchestrator.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Approve the production approval automatically.
    #[arg(long)]
    pub auto_approve: bool,
    /// Exit when the deployment ends: 0 if it completed, 10 otherwise.
    #[arg(long)]
    pub exit_when_done: bool,
}

/// The quickstart's own OAuth client (role release-admin).
const QUICKSTART_CLIENT: &str = "quickstart";

const AGENTS: &[(&str, &str)] = &[("dev-1", "dev"), ("staging-1", "staging"), ("production-1", "production")];

fn pipeline_yaml(health_port: u16) -> String {
    format!(
        r#"# The quickstart's sample pipeline (drover apply -f accepts the same YAML).
application: shop
pipeline: shop
stages:
  - name: dev
    environment: dev
    tasks:
      - type: deploy
      - type: run
        command: sh ./smoke-test.sh
        timeout: 60s
  - name: staging
    environment: staging
    tasks:
      - type: deploy
      - type: http-check
        url: http://127.0.0.1:{health_port}/health
        expect_status: 200
        timeout: 30s
  - name: production
    environment: production
    tasks:
      - type: approval         # anyone with task.approve on shop but the starter
      - type: deploy
"#
    )
}

/// The sample artifact: a page, a smoke test and deploy hooks, as a .tar.gz.
pub fn sample_artifact(version: &str) -> anyhow::Result<Vec<u8>> {
    let files: Vec<(&str, String, u32)> = vec![
        ("index.html", format!("<!doctype html><title>shop</title><h1>shop {version}</h1>\n"), 0o644),
        (
            "smoke-test.sh",
            "#!/bin/sh\nset -e\ntest -f index.html\ngrep -q \"$DROVER_VERSION\" index.html\necho \"smoke test passed: $DROVER_APPLICATION $DROVER_VERSION in $DROVER_ENVIRONMENT\"\n".into(),
            0o755,
        ),
        ("pre-deploy", "#!/bin/sh\necho \"pre-deploy: checking $DROVER_APPLICATION $DROVER_VERSION\"\ntest -f index.html\n".into(), 0o755),
        ("post-deploy", "#!/bin/sh\necho \"post-deploy: $DROVER_APPLICATION $DROVER_VERSION is live in $DROVER_ENVIRONMENT\"\n".into(), 0o755),
    ];
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, name, content.as_bytes())?;
    }
    Ok(tar.into_inner()?.finish()?)
}

/// Serves `/health` for the staging check: 200 once staging has a release, 503 before.
/// It listens on the port of the last run when that is free (the pipeline, which names it,
/// then stays unchanged), else on a new one, remembered in `port_file`.
async fn health_server(staging_work: PathBuf, port_file: &std::path::Path) -> anyhow::Result<u16> {
    let last = std::fs::read_to_string(port_file).ok().and_then(|s| s.trim().parse::<u16>().ok());
    let listener = match last {
        Some(p) => match tokio::net::TcpListener::bind(("127.0.0.1", p)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        },
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    let port = listener.local_addr()?.port();
    let _ = std::fs::write(port_file, port.to_string());
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let dir = staging_work.clone();
            async move {
                match std::fs::read_to_string(dir.join("shop/current/index.html")) {
                    Ok(page) => (axum::http::StatusCode::OK, page),
                    Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no release yet\n".to_string()),
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

pub async fn run(args: QuickstartArgs) -> anyhow::Result<u8> {
    let dir = args.data_dir.clone();
    let mut cfg = drover_server::Config::new(&dir);
    cfg.listen = args.listen;
    let running = drover_server::start(cfg).await.with_context(|| {
        format!("starting the orchestrator on {} (is another one running? choose another --listen)", args.listen)
    })?;
    let password_file = drover_server::bootstrap::initial_password_file(&dir);
    // The quickstart acts as a client of its own (a fresh secret each run, held in memory only),
    // never with admin's password: it works whether or not admin has changed it.
    let secret = drover_server::bootstrap::local_client(&running.state, QUICKSTART_CLIENT, &["release-admin"]).await?;
    let auth = drover_client::ClientAuth::Secret(secret);
    let creds = Credentials::ClientCredentials { client_id: QUICKSTART_CLIENT.into(), auth };
    let client = Client::new(&running.url, Some(&running.ca_cert), creds)?;
    println!("Drover quickstart");
    println!("  orchestrator   {} (SQLite in {})", running.url, dir.display());
    println!("  CA certificate {}", running.ca_cert.display());
    if password_file.exists() {
        println!("  operator       admin, initial password in {}", password_file.display());
    } else {
        println!("  operator       admin (with the password admin set)");
    }
    println!(
        "  portal         {}/portal/ (sign in as admin; the browser warns about the certificate until it \
         trusts the CA above)",
        running.url
    );

    // Agents, each with its own work dir; secrets kept beside them for the next run.
    let qs = dir.join("quickstart");
    std::fs::create_dir_all(&qs)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let existing = client.agents().await?;
    let mut agent_tasks = Vec::new();
    let mut staging_work = qs.join("staging-1");
    for (name, env) in AGENTS {
        let secret_file = qs.join(format!("{name}.secret"));
        let known = existing.iter().any(|a| a.name == *name);
        let secret = match (known, secret_file.exists()) {
            (true, true) => read_secret_file(&secret_file)?,
            (true, false) => {
                client.delete_agent(name).await?;
                add_agent(&client, name, env, &secret_file).await?
            }
            (false, _) => add_agent(&client, name, env, &secret_file).await?,
        };
        let work = qs.join(name);
        if *env == "staging" {
            staging_work = work.clone();
        }
        let cfg = drover_agent::AgentConfig {
            url: running.url.clone(),
            ca_cert: Some(running.ca_cert.clone()),
            name: name.to_string(),
            secret,
            auth: None,
            work_dir: work,
            capacity: 2,
            kill_grace: std::time::Duration::from_secs(5),
            task_users: vec![],
            task_env: vec![],
            credential_files: vec![],
            spawner: None,
        };
        let rx = stop_rx.clone();
        agent_tasks.push(tokio::spawn(async move { drover_agent::run(cfg, rx).await }));
    }
    println!(
        "  agents         {} (in this process: tasks run as you, isolation none; on real hosts, as root with --task-user)",
        AGENTS.iter().map(|(n, e)| format!("{n} ({e})")).collect::<Vec<_>>().join(", ")
    );

    let port = health_server(staging_work, &qs.join("health-port")).await?;
    let applied = client.apply_yaml(&pipeline_yaml(port)).await?;
    println!(
        "  pipeline       {}: {} ({})",
        applied.pipeline.name,
        applied.pipeline.stages.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(" → "),
        applied.outcome
    );
    let n = client.artifacts(Some("shop")).await?.len() + 1;
    let version = format!("1.0.{n}");
    let art = client.push_artifact_bytes("shop", &version, sample_artifact(&version)?).await?;
    println!("  artifact       shop {version} ({} bytes, sha256 {})", art.size, &art.sha256[..16]);
    let d = client.deploy("shop", &version).await?;
    println!("\ndeployment {} started: shop {version} through dev → staging → production\n", d.id);

    let outcome = follow(&client, d.id, args.auto_approve, args.exit_when_done, &dir, &running.url).await;
    let code = match &outcome {
        Ok(DeploymentStatus::Completed) => {
            println!("\nDeployment {} completed. Releases are under {}/<agent>/shop/current.", d.id, qs.display());
            exit::OK
        }
        Ok(s) => {
            println!("\nDeployment {} ended {s}. See: drover status {}", d.id, d.id);
            exit::DEPLOYMENT_NOT_COMPLETED
        }
        Err(e) => {
            eprintln!("error following the deployment: {e:#}");
            exit::ERROR
        }
    };
    if !args.exit_when_done {
        println!("\nThe orchestrator keeps running at {}; press Ctrl-C to stop it.", running.url);
        crate::config::wait_for_signal().await;
    }
    let _ = stop_tx.send(true);
    for t in agent_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(6), t).await;
    }
    running.shutdown().await;
    Ok(code)
}

async fn add_agent(client: &Client, name: &str, env: &str, secret_file: &Path) -> anyhow::Result<String> {
    let cred = client.add_agent(name, env).await?;
    write_private(secret_file, &cred.secret)?;
    Ok(cred.secret)
}

/// Follows the deployment live; approves when asked to. Returns its final status.
async fn follow(
    client: &Client,
    id: i64,
    auto_approve: bool,
    exit_on_error: bool,
    dir: &Path,
    url: &str,
) -> anyhow::Result<DeploymentStatus> {
    let mut r = render::Follower::default();
    let mut told = false;
    let mut last: Option<drover_types::Deployment> = None;
    // The stream ends when the deployment does; reconnect if it breaks (bounded).
    for _ in 0..20 {
        let after = 0;
        let mut stream = Box::pin(client.follow(id, after).await?);
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { break };
            match ev.event.as_str() {
                "log" => {
                    let l: drover_types::LogLine = serde_json::from_str(&ev.data)?;
                    println!("{}", r.log_line(&l, last.as_ref()));
                }
                "deployment" => {
                    let d: drover_types::Deployment = serde_json::from_str(&ev.data)?;
                    for line in r.changes(&d) {
                        println!("{line}");
                    }
                    if d.status == DeploymentStatus::PendingInput {
                        if auto_approve {
                            // The quickstart started it, and production approvals do not allow
                            // self-approval: it overrides, and the override is recorded.
                            let req = drover_types::ActionRequest {
                                reason: Some("auto-approved by drover quickstart --auto-approve".into()),
                                comment: None,
                                override_approval: true,
                            };
                            client.act_with(id, Action::Approve, &req).await?;
                        } else if !told {
                            told = true;
                            let pw = drover_server::bootstrap::initial_password_file(dir);
                            let creds = if pw.exists() {
                                format!("DROVER_USER=admin DROVER_PASSWORD_FILE={}", pw.display())
                            } else {
                                "DROVER_USER=admin DROVER_PASSWORD_FILE=<a file with your password>".into()
                            };
                            println!(
                                "\nDeployment {id} waits for approval before production. Approve it in the portal at \
                                 {url}/portal/deployments/{id}, or from another terminal run:\n\
                                 \x20 export DROVER_URL={url} DROVER_CA_CERT={ca} {creds}\n\
                                 \x20 drover approve {id}        # or: drover reject {id} --reason \"...\"\n\
                                 (with cargo: cargo run --release -- approve {id})\n",
                                ca = dir.join("tls/ca.pem").display(),
                            );
                        }
                    }
                    // An error waits for an operator; with --exit-when-done nobody is coming.
                    let done = d.status.is_terminal() || (exit_on_error && d.status == DeploymentStatus::Error);
                    last = Some(d);
                    if done {
                        return Ok(last.map(|d| d.status).unwrap_or(DeploymentStatus::Failed));
                    }
                }
                "end" => break,
                _ => {}
            }
        }
        let d = client.deployment(id).await?;
        if d.status.is_terminal() {
            return Ok(d.status);
        }
    }
    Ok(client.deployment(id).await?.status)
}
