//! The README's tour is a test: its `sh` block runs as written, in order, with the real binary
//! on the PATH, in an empty directory. Only the port is changed (and background processes are
//! recorded by PID so that the test can stop them); the credentials are the ones it documents.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn readme() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The first ```sh block after the tour's heading.
fn tour(readme: &str) -> String {
    let at = readme.find("## A five-minute tour").expect("the README has its tour");
    let rest = &readme[at..];
    let start = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = rest[start..].find("\n```").expect("the block ends") + start;
    rest[start..end].to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Pids(PathBuf);

impl Drop for Pids {
    /// Stops what the tour left running (by PID: only what it started).
    fn drop(&mut self) {
        let pids: Vec<i32> = std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        for p in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let block = tour(&readme());
    assert!(block.contains("drover serve") && block.contains("drover status 1 --follow"), "{block}");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let pids = Pids(dir.path().join("tour.pids"));
    // The port, and a PID record for each background process: nothing else changes.
    let script: String =
        block
            .replace("8443", &port)
            .lines()
            .map(|l| {
                if l.trim_end().ends_with(" &") { format!("{l} echo $! >> \"$TOUR_PIDS\"\n") } else { format!("{l}\n") }
            })
            .collect();
    let path = dir.path().join("tour.sh");
    std::fs::write(&path, format!("set -euo pipefail\n{script}")).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_drover"));
    let search = format!("{}:{}", bin.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default());
    let log = dir.path().join("tour.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(&path)
        .current_dir(dir.path())
        .env("PATH", search)
        .env("TOUR_PIDS", &pids.0)
        .env("DROVER_CONFIG_DIR", dir.path().join("config"))
        .env("DROVER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, _) in std::env::vars() {
        if k.starts_with("DROVER_") && k != "DROVER_LOG" && k != "DROVER_CONFIG_DIR" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tour did not finish in time:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "the tour failed ({status}):\n{text}");
    // What the tour says happens, happened.
    assert!(text.contains("<h1>shop 1.4.0</h1>"), "production has the release:\n{text}");
    assert!(text.contains("smoke test passed"), "the smoke test ran in dev:\n{text}");
    assert!(text.contains("waiting: waits for promotion to stage production"), "{text}");
    assert!(text.contains("is completed"), "{text}");
    // The regenerated secret in the rewritten file is the one that works.
    let secret = std::fs::read_to_string(dir.path().join("jenkins.secret")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("https://127.0.0.1:{port}");
        let ca = dir.path().join("drover-data/tls/ca.pem");
        let anon = drover_client::Client::new(&url, Some(&ca), drover_client::Credentials::None).unwrap();
        let t = anon.client_credentials_token("jenkins", secret.trim(), None).await.unwrap();
        assert!(t["access_token"].as_str().is_some_and(|s| !s.is_empty()));
    });
}
