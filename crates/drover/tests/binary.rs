//! Smoke and crash tests with the real `drover` binary: quickstart, the CLI, SIGKILL of the
//! orchestrator and of an agent, and a 2 GiB artifact streamed in constant memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use drover_client::{Client, Credentials};
use drover_types::DeploymentStatus as DS;

fn drover() -> Command {
    Command::new(env!("CARGO_BIN_EXE_drover"))
}

/// A child process this test started; killed (by its PID) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = cmd.stdout(f.try_clone().unwrap()).stderr(f).stdin(Stdio::null()).spawn().unwrap();
        Proc { child }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn sigkill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Orchestrator {
    dir: PathBuf,
    port: u16,
    proc: Option<Proc>,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Orchestrator {
    async fn start(dir: &Path, extra: &[&str]) -> Orchestrator {
        let mut o = Orchestrator {
            dir: dir.to_path_buf(),
            port: free_port(),
            proc: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        };
        o.restart().await;
        o
    }

    async fn restart(&mut self) {
        let mut cmd = drover();
        cmd.args(["serve", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)]);
        cmd.args(&self.extra);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        self.proc = Some(Proc::spawn(cmd, &self.dir.join("serve.log")));
        // Readiness: the health endpoint answers over TLS (bounded).
        for _ in 0..300 {
            if self.ca().exists()
                && let Ok(c) = Client::new(&self.url(), Some(&self.ca()), Credentials::None)
                && c.health().await.is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "orchestrator did not start; log:\n{}",
            std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
        );
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    fn ca(&self) -> PathBuf {
        self.dir.join("data/tls/ca.pem")
    }
    fn password_file(&self) -> PathBuf {
        self.dir.join("data/initial-admin-password")
    }
    fn admin(&self) -> Client {
        let pw = std::fs::read_to_string(self.password_file()).unwrap().trim().to_string();
        Client::new(&self.url(), Some(&self.ca()), Credentials::Basic { user: "admin".into(), password: pw }).unwrap()
    }
    /// A CLI command with connection settings in the environment.
    fn cli(&self) -> Command {
        let mut c = drover();
        c.env("DROVER_URL", self.url())
            .env("DROVER_CA_CERT", self.ca())
            .env("DROVER_USER", "admin")
            .env("DROVER_PASSWORD_FILE", self.password_file())
            .env_remove("DROVER_PASSWORD");
        c
    }
    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.sigkill();
        }
    }

    /// Registers an agent through the CLI and starts `drover agent` for it.
    fn agent(&self, name: &str, env: &str) -> Proc {
        let out = run(self.cli().args(["agents", "add", name, "--environment", env, "--output", "json"]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["name"], name);
        assert_eq!(v["environment"], env);
        let secret = v["secret"].as_str().unwrap();
        assert!(secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let secret_file = self.dir.join(format!("{name}.secret"));
        std::fs::write(&secret_file, secret).unwrap();
        self.start_agent(name)
    }

    fn start_agent(&self, name: &str) -> Proc {
        Proc::spawn(self.start_agent_cmd(name), &self.dir.join(format!("{name}.log")))
    }

    fn start_agent_cmd(&self, name: &str) -> Command {
        let mut cmd = drover();
        cmd.args(["agent", "--url", &self.url()])
            .arg("--ca-cert")
            .arg(self.ca())
            .args(["--name", name])
            .arg("--secret-file")
            .arg(self.dir.join(format!("{name}.secret")))
            .arg("--work-dir")
            .arg(self.dir.join("work").join(name));
        cmd
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

async fn wait_all(
    c: &Client,
    ids: &[i64],
    timeout: Duration,
    done: impl Fn(DS) -> bool,
) -> Vec<drover_types::Deployment> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut all = Vec::new();
        let mut ok = true;
        for id in ids {
            match c.deployment(*id).await {
                Ok(d) => {
                    ok &= done(d.status);
                    all.push(d);
                }
                Err(_) => ok = false,
            }
        }
        if ok {
            return all;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {all:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn quickstart_runs_end_to_end_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for run_no in 1..=2 {
        let out = run(drover()
            .args(["quickstart", "--listen", "127.0.0.1:0", "--auto-approve", "--exit-when-done", "--data-dir"])
            .arg(&data));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "run {run_no}: {text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("Deployment {run_no} completed")), "{text}");
        let pipeline = if run_no == 1 { "(created)" } else { "(unchanged)" };
        assert!(text.lines().any(|l| l.contains("pipeline") && l.contains(pipeline)), "run {run_no}: {text}");
        assert!(text.contains("smoke test passed"), "{text}");
        assert!(text.lines().any(|l| l.contains("portal") && l.contains("/portal/ (sign in as admin")), "{text}");
    }
    let current = std::fs::read_link(data.join("quickstart/production-1/shop/current")).unwrap();
    assert_eq!(current, Path::new("releases/1.0.2"));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("initial-admin-password")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_drives_deployments_with_reliable_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &[]).await;
    let _a = o.agent("dev-1", "dev");
    let yaml = dir.path().join("pipeline.yaml");
    std::fs::write(
        &yaml,
        "application: web\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: deploy\n      - type: run\n        command: cat index.html\n      - type: run\n        command: printf 'esc\\033]0;pwned\\007 tab\\tend\\r\\n'\n",
    )
    .unwrap();
    let out = run(o.cli().args(["apply", "-f"]).arg(&yaml));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pipeline web created"));
    let out = run(o.cli().args(["apply", "-f"]).arg(&yaml));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pipeline web unchanged"));
    let tgz = dir.path().join("web.tar.gz");
    std::fs::write(&tgz, drover_testkit::tarball(&[("index.html", "hello from web 1\n", 0o644)])).unwrap();
    let out =
        run(o.cli().args(["artifact", "push"]).arg(&tgz).args(["--app", "web", "--version", "1", "--output", "json"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let art: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(art["sha256"].as_str().unwrap().len(), 64);
    let out = run(o.cli().args(["deploy", "web", "1", "--follow"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("hello from web 1") && text.contains("is completed"), "{text}");
    // A task's terminal escapes are shown, never sent to the operator's terminal as they are.
    assert!(text.contains("esc\\x1b]0;pwned\\x07 tab\tend") && !text.contains('\x1b'), "{text}");
    let out = run(o.cli().args(["logs", "1"]));
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("esc\\x1b]0;pwned\\x07 tab\tend") && !logs.contains('\x1b') && !logs.contains('\x07'),
        "{logs}"
    );
    let out = run(o.cli().args(["status", "1", "--output", "json"]));
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["status"], "completed");
    assert_eq!(d["stages"][0]["tasks"][1]["agent"], "dev-1");
    let out = run(o.cli().args(["deployments", "--output", "json"]));
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().len(), 1);
    // A failing run: follow stops at error with exit 10; retry is available.
    std::fs::write(&yaml, std::fs::read_to_string(&yaml).unwrap().replace("cat index.html", "exit 7")).unwrap();
    assert!(run(o.cli().args(["apply", "-f"]).arg(&yaml)).status.success());
    let out = run(o.cli().args(["deploy", "web", "1", "--follow"]));
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("exit code 7"));
    let out = run(o.cli().args(["abort", "2", "--reason", "test over"]));
    assert!(out.status.success());
    // Documented exit codes.
    assert_eq!(run(o.cli().args(["status", "4242"])).status.code(), Some(5));
    assert_eq!(run(o.cli().args(["abort", "2"])).status.code(), Some(6));
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "application: web\nstages:\n  - name: dev\n    environment: dev\n    taks: []\n").unwrap();
    let out = run(o.cli().args(["apply", "-f"]).arg(&bad));
    assert_eq!(out.status.code(), Some(7));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("taks") && err.contains("line 5"), "{err}");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password").unwrap();
    assert_eq!(run(o.cli().arg("pipelines").arg("--login-password-file").arg(&wrong)).status.code(), Some(3));
    assert_eq!(run(o.cli().arg("pipelines").env_remove("DROVER_USER")).status.code(), Some(1));
    // The audit log saw all of it, and its chain holds.
    let out = run(o.cli().args(["audit", "verify"]));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit log intact"));
    let out = run(o.cli().args(["audit", "list", "--action", "abort", "--output", "json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["action"], "POST /api/v1/deployments/{id}/abort");
    assert_eq!(v[0]["principal"], "operator:admin");
    assert_eq!(
        run(o.cli().arg("pipelines").env("DROVER_URL", format!("https://127.0.0.1:{}", free_port()))).status.code(),
        Some(8)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestrator_sigkill_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Orchestrator::start(dir.path(), &[]).await;
    let _a = o.agent("a-1", "stage-a");
    let _b = o.agent("b-1", "stage-b");
    let runs = dir.path().join("runs.log");
    let c = o.admin();
    let mut ids = Vec::new();
    for p in 0..4 {
        let yaml = format!(
            "application: app{p}\nstages:\n  - name: a\n    environment: stage-a\n    tasks: [{{type: run, command: \"echo $DROVER_ATTEMPT_ID >> {r}; sleep 0.3\"}}, {{type: run, command: \"echo $DROVER_ATTEMPT_ID >> {r}; sleep 0.3\"}}]\n  - name: b\n    environment: stage-b\n    tasks: [{{type: run, command: \"echo $DROVER_ATTEMPT_ID >> {r}; sleep 0.3\"}}]\n",
            r = runs.display()
        );
        c.apply_yaml(&yaml).await.unwrap();
        for v in 1..=2 {
            ids.push(c.deploy(&format!("app{p}"), &v.to_string()).await.unwrap().id);
        }
    }
    // Kill the orchestrator while work is in flight (some attempts have run, not all).
    for _ in 0..200 {
        let n = std::fs::read_to_string(&runs).map(|s| s.lines().count()).unwrap_or(0);
        if n >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    o.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    o.restart().await;
    let c = o.admin();
    let all = wait_all(&c, &ids, Duration::from_secs(120), |s| s.is_terminal() || s == DS::Error).await;
    for d in &all {
        match d.status {
            DS::Completed => assert!(
                d.stages.iter().all(|s| s.tasks.iter().all(|t| t.status == drover_types::TaskStatus::Completed))
            ),
            DS::Error => assert!(d.message.is_some(), "an error says why: {d:#?}"),
            other => panic!("deployment {} ended {other}", d.id),
        }
    }
    let completed = all.iter().filter(|d| d.status == DS::Completed).count();
    assert!(completed >= ids.len() - 1, "in-flight work survives a restart: {all:#?}");
    // No attempt ran twice, and every completed task's attempt ran.
    let text = std::fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let unique: std::collections::HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), lines.len(), "an attempt ran twice:\n{text}");
    for d in all.iter().filter(|d| d.status == DS::Completed) {
        for t in d.stages.iter().flat_map(|s| &s.tasks) {
            assert!(unique.contains(t.attempt_id.as_deref().unwrap()), "completed attempt never ran: {t:?}");
        }
    }
    // The store is intact and every deployment's history is there.
    o.kill();
    let store = drover_store::SqliteStore::open(&dir.path().join("data/drover.db")).await.unwrap();
    drover_core::Store::check_integrity(&store).await.unwrap();
    for id in &ids {
        let ev = drover_core::store::DeploymentStore::events(&store, *id).await.unwrap();
        assert_eq!(ev[0].kind, "deployment.created");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_sigkill_ends_in_a_clear_error_and_retry_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &["--heartbeat-timeout", "1500ms"]).await;
    let mut agent = o.agent("dev-1", "dev");
    let runs = dir.path().join("runs.log");
    let flag = dir.path().join("flag");
    let c = o.admin();
    c.apply_yaml(&format!(
        "application: k\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{{type: run, command: \"echo $DROVER_ATTEMPT_ID >> {}; test -f {} || sleep 3\"}}]\n",
        runs.display(),
        flag.display()
    ))
    .await
    .unwrap();
    let id = c.deploy("k", "1").await.unwrap().id;
    for _ in 0..300 {
        if std::fs::read_to_string(&runs).is_ok_and(|s| s.lines().count() == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = agent.pid();
    agent.sigkill();
    let d = drover_testkit::wait_for(&c, id, Duration::from_secs(30), |d| d.status == DS::Error).await.unwrap();
    let m = d.message.unwrap();
    assert!(
        m.contains("agent dev-1") && m.contains("task 1 (run) of stage dev") && m.contains("heartbeats"),
        "{m} (agent pid {pid})"
    );
    // The agent comes back; the lost attempt is not run again, a retry is.
    std::fs::write(&flag, "").unwrap();
    let _agent = o.start_agent("dev-1");
    c.act(id, drover_types::Action::Retry, None).await.unwrap();
    drover_testkit::wait_status(&c, id, DS::Completed).await.unwrap();
    let text = std::fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_ne!(lines[0], lines[1]);
}

fn vm_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2_gib_artifact_streams_in_constant_memory() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &[]).await;
    let c = o.admin();
    c.pipelines().await.unwrap(); // warm up: authentication, connections
    let pid = o.proc.as_ref().unwrap().pid();
    let before = vm_kib(pid, "VmRSS:");
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 2048; // 2 GiB
    let stream = futures_util::stream::iter(0..CHUNKS)
        .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; CHUNK])));
    let tls = drover_tls::client_config(&o.ca()).unwrap();
    let http = reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap();
    let pw = std::fs::read_to_string(o.password_file()).unwrap().trim().to_string();
    let resp = http
        .put(format!("{}/api/v1/artifacts/big/1.0", o.url()))
        .basic_auth("admin", Some(pw))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap());
    let peak = vm_kib(pid, "VmHWM:");
    let a: drover_types::Artifact = c.artifacts(Some("big")).await.unwrap().remove(0);
    assert_eq!(a.size, (CHUNK * CHUNKS) as u64);
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "orchestrator RSS before {} MiB, peak during a 2 GiB upload {} MiB (+{grew_mib} MiB)",
        before / 1024,
        peak / 1024
    );
    assert!(grew_mib <= 32, "RSS grew by {grew_mib} MiB while streaming 2 GiB");
}

#[test]
fn keystore_inspect_lists_entries_without_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("keystore.jks");
    let out = Command::new("keytool")
        .args([
            "-genkeypair",
            "-alias",
            "jwt-signer",
            "-keyalg",
            "EC",
            "-groupname",
            "secp256r1",
            "-dname",
            "CN=Drover JWT",
        ])
        .args(["-validity", "90", "-storepass", "s3cret-pw", "-keypass", "s3cret-pw", "-keystore"])
        .arg(&ks)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret-pw\n").unwrap();
    let out = run(drover().args(["keystore", "inspect"]).arg(&ks).arg("--password-file").arg(&pw));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("PKCS#12 keystore")
            && text.contains("jwt-signer: private key EC P-256")
            && text.contains("CN=Drover JWT"),
        "{text}"
    );
    assert!(!text.contains("s3cret") && !text.to_lowercase().contains("begin private"));
    let out = run(drover().args(["keystore", "inspect", "-o", "json"]).arg(&ks).arg("--password-file").arg(&pw));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "pkcs12");
    assert_eq!(v["entries"][0]["key_type"], "EC P-256");
    std::fs::write(&pw, "wrong").unwrap();
    let out = run(drover().args(["keystore", "inspect"]).arg(&ks).arg("--password-file").arg(&pw));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong keystore password"));
}

/// Starts a CLI command with stderr piped; returns the child, the first stderr line that
/// `want` accepts, and a thread that drains the rest (so the child never writes to a closed pipe).
fn spawn_reading(mut cmd: Command, want: fn(&str) -> bool) -> (Child, String, std::thread::JoinHandle<String>) {
    use std::io::BufRead;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut all = String::new();
        let mut sent = false;
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if !sent && want(&line) {
                let _ = tx.send(line.clone());
                sent = true;
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("the CLI printed what we wait for");
    (child, line, drain)
}

/// The CSRF cookie (`name=value`) a sign-in or device page set.
fn csrf_cookie(page: &reqwest::Response) -> String {
    page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string()
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(std::time::Instant::now() < deadline, "the CLI did not exit in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_login_with_a_browser_or_a_device_then_logout() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &[]).await;
    let pw = "dana-password-123456";
    o.admin()
        .add_operator(&drover_types::NewOperator {
            name: "dana".into(),
            email: None,
            roles: vec!["viewer".into()],
            password: Some(pw.into()),
        })
        .await
        .unwrap();
    let cfg = dir.path().join("cli-config");
    let cli = || {
        let mut c = drover();
        c.env("DROVER_URL", o.url())
            .env("DROVER_CA_CERT", o.ca())
            .env("DROVER_CONFIG_DIR", &cfg)
            .env_remove("DROVER_USER")
            .env_remove("DROVER_PASSWORD")
            .env_remove("DROVER_PASSWORD_FILE")
            .env_remove("DROVER_CLIENT_ID");
        c
    };
    let browser = reqwest::Client::builder()
        .use_preconfigured_tls(drover_tls::client_config(&o.ca()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Not signed in: a clear error.
    let out = run(cli().arg("pipelines"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("drover login"));

    // Browser flow: the CLI prints the address, the "browser" signs in and follows the redirect
    // to the CLI's loopback port.
    let mut login = cli();
    login.arg("login");
    let (mut child, url, drain) =
        spawn_reading(login, |l| l.starts_with("https://") && l.contains("/oauth2/authorize?"));
    let page = browser.get(&url).send().await.unwrap();
    assert!(page.status().is_success());
    let cookie = csrf_cookie(&page);
    let mut form: Vec<(String, String)> = serde_urlencoded::from_str(url.split_once('?').unwrap().1).unwrap();
    form.push(("username".into(), "dana".into()));
    form.push(("password".into(), pw.into()));
    form.push(("csrf_token".into(), cookie.split_once('=').unwrap().1.into()));
    let r = browser
        .post(format!("{}/oauth2/authorize", o.url()))
        .header("cookie", &cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let back = r.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with("http://127.0.0.1:"), "{back}");
    let page = browser.get(&back).send().await.unwrap();
    assert!(page.status().is_success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    assert!(drain.join().unwrap().contains("Signed in"));
    let sessions = cfg.join("sessions.json");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sessions).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let out = run(cli().args(["pipelines"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An expired access token is refreshed (and the refresh token rotated) on the next command.
    let mut all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sessions).unwrap()).unwrap();
    let old_refresh = all[o.url()]["refresh_token"].as_str().unwrap().to_string();
    all[o.url()]["expires_at"] = 0.into();
    std::fs::write(&sessions, all.to_string()).unwrap();
    let out = run(cli().args(["pipelines"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&sessions).unwrap()).unwrap();
    assert_ne!(all[o.url()]["refresh_token"].as_str().unwrap(), old_refresh);
    // viewer cannot manage operators: the CLI says 403 with its exit code.
    let out = run(cli().args(["operators"]));
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    // Logout revokes the session on the orchestrator too.
    let token = all[o.url()]["access_token"].as_str().unwrap().to_string();
    assert!(run(cli().arg("logout")).status.success());
    assert!(!run(cli().arg("pipelines")).status.success());
    let c = Client::new(&o.url(), Some(&o.ca()), Credentials::Bearer(token)).unwrap();
    assert_eq!(c.pipelines().await.unwrap_err().status(), Some(401));

    // Device flow: the CLI shows a code; the operator approves it elsewhere.
    let mut login = cli();
    login.args(["login", "--device"]);
    let (mut child, line, drain) = spawn_reading(login, |l| l.contains("enter the code"));
    let code = line.rsplit(' ').next().unwrap().to_string();
    let cookie = csrf_cookie(&browser.get(format!("{}/device", o.url())).send().await.unwrap());
    let token = cookie.split_once('=').unwrap().1.to_string();
    let form = [
        ("user_code", code.as_str()),
        ("username", "dana"),
        ("password", pw),
        ("action", "approve"),
        ("csrf_token", token.as_str()),
    ];
    let r = browser.post(format!("{}/device", o.url())).header("cookie", &cookie).form(&form).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success(), "{}", drain.join().unwrap());
    let out = run(cli().args(["pipelines"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_rotation_reseals_every_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Orchestrator::start(dir.path(), &[]).await;
    let admin = o.admin();
    let ci = admin.create_client("ci", &["viewer".into()]).await.unwrap();
    admin.rotate_key_to(Some("EdDSA")).await.unwrap();
    let http =
        reqwest::Client::builder().use_preconfigured_tls(drover_tls::client_config(&o.ca()).unwrap()).build().unwrap();
    let pw = std::fs::read_to_string(o.password_file()).unwrap().trim().to_string();
    let profile = serde_json::json!({"name": "jenkins", "kind": "bearer", "secret": "bearer-secret-value-123", "allowed_urls": ["https://jenkins.example.com/"]});
    let r = http
        .post(format!("{}/api/v1/auth-profiles", o.url()))
        .basic_auth("admin", Some(&pw))
        .json(&profile)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    admin.create_environment(&drover_types::NewEnvironment { name: "dev".into(), ..Default::default() }).await.unwrap();
    let token = drover_types::SetVariable { value: "rotated-secret-1".into(), secret: true };
    admin.set_variable("dev", "TOKEN", &token).await.unwrap();
    let out = run(o.cli().args(["client", "show", "ci", "--output", "json"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown["client_id"].as_str(), shown["roles"][0].as_str()), (Some("ci"), Some("viewer")));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&ci.client_secret));
    let keys_before: Vec<String> = admin.keys().await.unwrap().into_iter().map(|k| k.kid).collect();
    let master = dir.path().join("data/master.key");
    let before = std::fs::read_to_string(&master).unwrap();
    o.kill();

    let out =
        run(drover().args(["master-key", "rotate", "--output", "json", "--data-dir"]).arg(dir.path().join("data")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["signing_keys"].as_u64(), r["profile_secrets"].as_u64()), (Some(2), Some(1)));
    assert_eq!(r["variable_secrets"].as_u64(), Some(1));
    assert_ne!(r["old_id"], r["new_id"]);
    assert_ne!(std::fs::read_to_string(&master).unwrap(), before);
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&master).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // Every value now opens with the new key alone: the retired key can go.
    std::fs::remove_file(r["retired_file"].as_str().unwrap()).unwrap();
    o.restart().await;
    let t = o.admin().keys().await.unwrap();
    assert_eq!(t.iter().map(|k| k.kid.clone()).collect::<Vec<_>>(), keys_before, "the same signing keys");
    let anon = Client::new(&o.url(), Some(&o.ca()), Credentials::None).unwrap();
    let tok = anon.client_credentials_token("ci", &ci.client_secret, None).await.unwrap();
    let bearer =
        Client::new(&o.url(), Some(&o.ca()), Credentials::Bearer(tok["access_token"].as_str().unwrap().into()))
            .unwrap();
    bearer.pipelines().await.unwrap();
    // The secret variable opens under the new key (applying a pipeline reads every variable).
    o.admin()
        .apply_yaml("application: r\nstages: [{name: dev, environment: dev, tasks: [{type: wait, duration: 1s}]}]\n")
        .await
        .unwrap();
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains("cannot be opened"), "{log}");
    // Nothing sealed under the old key remains in the database.
    let db = rusqlite::Connection::open(dir.path().join("data/drover.db")).unwrap();
    let old_id = r["old_id"].as_str().unwrap();
    let n: i64 = db
        .query_row(
            "SELECT (SELECT count(*) FROM signing_keys WHERE private_key LIKE ?1) + (SELECT count(*) FROM records WHERE body LIKE ?2)",
            [format!("v1.{old_id}.%"), format!("%v1.{old_id}.%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0);
    // A second rotation without a master key file is refused clearly.
    o.kill();
    std::fs::rename(&master, dir.path().join("elsewhere.key")).unwrap();
    let out = run(drover().args(["master-key", "rotate", "--data-dir"]).arg(dir.path().join("data")));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to rotate"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_key_from_the_environment_and_reseal() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = ("11".repeat(32), "22".repeat(32));
    let mut o = Orchestrator {
        dir: dir.path().to_path_buf(),
        port: free_port(),
        proc: None,
        extra: vec![],
        env: vec![("DROVER_MASTER_KEY".into(), k1.clone())],
    };
    o.restart().await;
    assert!(!dir.path().join("data/master.key").exists(), "the key comes from the environment");
    let ci = o.admin().create_client("ci", &["viewer".into()]).await.unwrap();
    o.kill();
    let data = dir.path().join("data");
    // rotate is for key files; with the variable, the operator rotates by hand.
    let out = run(drover().args(["master-key", "rotate", "--data-dir"]).arg(&data).env("DROVER_MASTER_KEY", &k1));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DROVER_MASTER_KEY_RETIRED"));
    // A new key alone cannot open what the old one sealed: the orchestrator refuses to start.
    let mut serve = drover()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
        .arg(&data)
        .env("DROVER_MASTER_KEY", &k2)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let st = wait_exit(&mut serve, Duration::from_secs(30));
    assert!(!st.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("sealed with master key"), "{err}");
    assert!(!err.contains(&k1) && !err.contains(&k2), "no key material in errors");
    // Re-seal under the new key with the old one retired; then the new key alone works.
    let out = run(drover()
        .args(["master-key", "reseal", "--output", "json", "--data-dir"])
        .arg(&data)
        .env("DROVER_MASTER_KEY", &k2)
        .env("DROVER_MASTER_KEY_RETIRED", &k1));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["signing_keys"].as_u64(), Some(1));
    o.env = vec![("DROVER_MASTER_KEY".into(), k2.clone())];
    o.restart().await;
    let anon = Client::new(&o.url(), Some(&o.ca()), Credentials::None).unwrap();
    anon.client_credentials_token("ci", &ci.client_secret, None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_keeps_following_through_waits_and_says_what_continues() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &[]).await;
    let _dev = o.agent("dev-1", "dev");
    let _prod = o.agent("prod-1", "prod");
    let c = o.admin();
    c.apply_yaml(
        "application: f\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{type: run, command: \"echo built\"}]\n  \
         - name: prod\n    environment: prod\n    progression: manual\n    tasks: [{type: run, command: \"echo shipped\"}]\n",
    )
    .await
    .unwrap();
    let mut child =
        o.cli().args(["deploy", "f", "1", "--follow"]).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.contains("to continue: drover promote 1")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(rx.recv_timeout(left).unwrap_or_else(|_| panic!("no promote hint; saw:\n{}", seen.join("\n"))));
    }
    assert!(seen.iter().any(|l| l.contains("waiting: waits for promotion to stage prod")), "{}", seen.join("\n"));
    // Still following: promote, and it goes on to the end.
    c.act(1, drover_types::Action::Promote, None).await.unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    reader.join().unwrap();
    seen.extend(rx.try_iter());
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("shipped") && text.contains("is completed"), "{text}");
}

/// Alive, and not a zombie.
fn running(pid: i32) -> bool {
    drover_agent::groups::stat(pid).is_some_and(|p| p.state != 'Z' && p.state != 'X')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_of_an_agent_its_restart_ends_what_the_task_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &["--heartbeat-timeout", "1500ms"]).await;
    let mut agent = o.agent("dev-1", "dev");
    let pids = dir.path().join("pids");
    let flag = dir.path().join("flag");
    let c = o.admin();
    // The shell leads the task's group; its child ignores TERM (so only KILL ends it).
    c.apply_yaml(&format!(
        "application: z\nstages:\n  - name: dev\n    environment: dev\n    tasks: [{{type: run, command: \"test -f {flag} && exit 0; (trap '' TERM; exec sleep 300) & echo $! > {pids}.tmp; echo $$ >> {pids}.tmp; mv {pids}.tmp {pids}; wait\"}}]\n",
        flag = flag.display(),
        pids = pids.display()
    ))
    .await
    .unwrap();
    let id = c.deploy("z", "1").await.unwrap().id;
    let mut started: Vec<i32> = Vec::new();
    for _ in 0..500 {
        if let Ok(s) = std::fs::read_to_string(&pids) {
            started = s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(started.len(), 2, "the task started its processes");
    agent.sigkill();
    // What the issue saw: the task's processes outlive the agent.
    assert!(started.iter().all(|p| running(*p)), "{started:?} survive kill -9 of the agent");
    let journal = dir.path().join("work/dev-1/.drover/attempts");
    let records = || {
        std::fs::read_dir(&journal)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "group"))
            .count()
    };
    assert_eq!(records(), 1, "the group is journaled");
    // Restarted, the agent ends them (the sleeper only by KILL, after the grace) before it
    // reports the cut-off attempt.
    let mut cmd = o.start_agent_cmd("dev-1");
    cmd.args(["--kill-grace", "1s"]);
    let _agent = Proc::spawn(cmd, &dir.path().join("dev-1.restarted.log"));
    for _ in 0..500 {
        if started.iter().all(|p| !running(*p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.iter().all(|p| !running(*p)), "{started:?} still running after the agent restarted");
    assert_eq!(records(), 0, "the record is forgotten");
    let d = drover_testkit::wait_status(&c, id, DS::Error).await.unwrap();
    assert!(d.message.as_deref().is_some_and(|m| m.contains("dev-1")), "{:?}", d.message);
    // A retry runs once, and ends with nothing left behind.
    std::fs::write(&flag, "").unwrap();
    c.act(id, drover_types::Action::Retry, None).await.unwrap();
    drover_testkit::wait_status(&c, id, DS::Completed).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_takes_connection_options_anywhere_and_never_mixes_up_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let o = Orchestrator::start(dir.path(), &[]).await;
    let _dev = o.agent("dev-1", "dev");
    // Global options before the subcommand, or after it.
    for args in
        [vec!["-o", "json", "pipelines"], vec!["pipelines", "-o", "json"], vec!["--output", "json", "deployments"]]
    {
        let out = run(o.cli().args(&args));
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().is_array(), "{args:?}");
    }
    let out = run(o.cli().env_remove("DROVER_URL").args(["--url", &o.url(), "pipelines"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `operators add --password-file F` with DROVER_USER set: F is the new operator's password,
    // the caller's comes from DROVER_PASSWORD_FILE.
    let newpw = dir.path().join("carol.pw");
    std::fs::write(&newpw, "carol-password-123\n").unwrap();
    let out = run(o.cli().args(["operators", "add", "carol", "--role", "viewer", "--password-file"]).arg(&newpw));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let carol = Client::new(
        &o.url(),
        Some(&o.ca()),
        Credentials::Basic { user: "carol".into(), password: "carol-password-123".into() },
    )
    .unwrap();
    carol.pipelines().await.unwrap();
    // A client's new secret goes to the file, not to the terminal, unless --show.
    let secret_file = dir.path().join("ci.secret");
    let out = run(o.cli().args(["client", "create", "ci", "--role", "api", "--secret-out"]).arg(&secret_file));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let first = std::fs::read_to_string(&secret_file).unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains(first.trim()), "the secret is not printed");
    let out =
        run(o.cli().args(["client", "regenerate-secret", "ci", "--grace", "1h", "--secret-out"]).arg(&secret_file));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    let second = std::fs::read_to_string(&secret_file).unwrap();
    assert_ne!(first, second, "the file holds the new secret");
    assert!(!text.contains(second.trim()), "{text}");
    assert!(text.contains("give the new one") && text.contains("before then"), "{text}");
    let out = run(o.cli().args(["client", "regenerate-secret", "ci", "--show", "--secret-out"]).arg(&secret_file));
    let third = std::fs::read_to_string(&secret_file).unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(third.trim()), "--show prints it");
    // `logs` names each line's stage; `logs --follow` follows until the end.
    let c = o.admin();
    c.apply_yaml("application: l\nstages:\n  - name: build\n    environment: dev\n    tasks: [{type: run, command: \"sleep 1; echo one; echo two\"}]\n")
        .await
        .unwrap();
    let id = c.deploy("l", "1").await.unwrap().id;
    let out = run(o.cli().args(["logs", &id.to_string(), "--follow"]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("[build 1] stdout: one") && text.contains("[build 1] stdout: two"), "{text}");
    let out = run(o.cli().args(["logs", &id.to_string()]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("[build 1] stdout: two"));
    // `report`: the pipeline's figures, as text and as JSON.
    let out = run(o.cli().args(["report", "l"]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("1 started: 1 completed") && text.contains("success rate         100%"), "{text}");
    assert!(text.contains("build") && text.contains("lead time"), "{text}");
    let out = run(o.cli().args(["--output", "json", "report", "l", "--from", "2020-01-01", "--to", "2020-01-02"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deployments"], 0, "outside the range");
    let out = run(o.cli().args(["report", "l", "--from", "yesterday"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a date"));
}

/// The secret of the test below; it must never be in a log file, in any form.
const LOG_SECRET: &str = "Tr4ce-level/secret value";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_the_log_files_at_trace_level() {
    use base64::Engine as _;
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let trace = ("DROVER_LOG".to_string(), "trace".to_string());
    let mut o = Orchestrator { dir: dir.path().into(), port: free_port(), proc: None, extra: vec![], env: vec![trace] };
    o.restart().await;
    let out = run(o.cli().args(["environments", "set", "dev", "--application", "sec"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A secret is never an argument; from standard input it is taken (all of it, one trailing
    // newline off).
    let out = run(o.cli().args(["variables", "set", "dev", "TOKEN", "an-argument", "--secret"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not taken from an argument"));
    let mut set = o.cli();
    set.args(["variables", "set", "dev", "TOKEN", "--secret"]).stdin(Stdio::piped()).stdout(Stdio::null());
    let mut set = set.spawn().unwrap();
    set.stdin.take().unwrap().write_all(format!("{LOG_SECRET}\n").as_bytes()).unwrap();
    assert!(set.wait().unwrap().success());
    let out = run(o.cli().args(["variables", "set", "dev", "GREETING", "hello"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed = String::from_utf8_lossy(&run(o.cli().args(["variables", "list", "dev"])).stdout).to_string();
    assert!(listed.contains("GREETING=hello") && listed.contains("TOKEN  (secret, set by admin)"), "{listed}");

    let out = run(o
        .cli()
        .args(["agents", "add", "dev-1", "--environment", "dev", "--secret-out"])
        .arg(dir.path().join("dev-1.secret")));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut agent = o.start_agent_cmd("dev-1");
    agent.env("DROVER_LOG", "trace");
    let _agent = Proc::spawn(agent, &dir.path().join("dev-1.log"));
    let c = o.admin();
    let doc = "application: sec\nstages:\n  - name: dev\n    environment: dev\n    tasks:\n      - type: run\n        command: |\n          \
               echo \"${GREETING}, token ${TOKEN}\"\n          printf '%s' \"$TOKEN\" | base64\n          \
               sh -c 'echo \"from a child: $TOKEN\"'\n";
    // As an argument a secret would be in the agent host's process list: refused.
    let as_argument =
        format!("{doc}      - type: run\n        command: [\"sh\", \"-c\", \"echo $1\", \"sh\", \"${{TOKEN}}\"]\n");
    let e = c.apply_yaml(&as_argument).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("stages[0].tasks[1].command: a secret variable cannot be used in a command given as a list"),
        "{e}"
    );
    c.apply_yaml(doc).await.unwrap();
    let id = c.deploy("sec", "1").await.unwrap().id;
    let d = &wait_all(&c, &[id], Duration::from_secs(60), |s| s.is_terminal()).await[0];
    assert_eq!(d.status, DS::Completed, "{d:#?}");
    let out = run(o.cli().args(["logs", &id.to_string()]));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(shown.contains("stdout: hello, token ***") && shown.contains("stdout: from a child: ***"), "{shown}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(LOG_SECRET);
    let forms = [LOG_SECRET.to_string(), b64.trim_end_matches('=').to_string()];
    for form in &forms {
        assert!(!shown.contains(form.as_str()), "the CLI shows {form:?}: {shown}");
    }
    // Stop both, so every line is written, then read what they logged at the most verbose level.
    drop(_agent);
    o.kill();
    // (Each logs the attempt's variables at debug level: their names.)
    for (file, debug_line) in [("serve.log", "attempt handed out"), ("dev-1.log", "the attempt's variables")] {
        let log = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(log.contains(debug_line) && log.contains("TOKEN"), "{file} is at the most verbose level: {log}");
        for form in &forms {
            assert!(!log.contains(form.as_str()), "{file} holds {form:?}");
        }
    }
}
