//! What the benchmark drivers share: child processes killed on drop, starting an orchestrator
//! on a free loopback port, figures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drover_client::{Client, Credentials};

pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn(bin: &Path, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let f = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(args)
        .stdout(f.try_clone()?)
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child))
}

pub fn peak_rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// An orchestrator (`drover serve`, SQLite) in `dir`, answering on a free loopback port.
pub struct Orchestrator {
    pub proc: Proc,
    pub url: String,
    pub ca: PathBuf,
    pub admin: Client,
    pub admin_password: String,
}

impl Orchestrator {
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Orchestrator> {
        let data = dir.join("data");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("https://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        let proc =
            spawn(bin, &["serve", "--data-dir", data.to_str().unwrap(), "--listen", &listen], &dir.join("serve.log"))?;
        let ca = data.join("tls/ca.pem");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ca.exists()
                && let Ok(c) = Client::new(&url, Some(&ca), Credentials::None)
                && c.health().await.is_ok()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("orchestrator did not start");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pw = std::fs::read_to_string(data.join("initial-admin-password"))?.trim().to_string();
        let admin = Client::new(&url, Some(&ca), Credentials::Basic { user: "admin".into(), password: pw.clone() })?;
        Ok(Orchestrator { proc, url, ca, admin, admin_password: pw })
    }
}
