//! A real browser for the portal tests: Debian's headless Chromium driven over WebDriver by
//! its ChromeDriver (`/usr/bin/chromium`, `/usr/bin/chromedriver`; `scripts/test` installs them),
//! one driver process per browser on a free loopback port, with a profile and a download
//! folder of its own. Screenshots go to `target/portal-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util_client::client::legacy::connect::HttpConnector;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Where the screenshots of the portal tests go.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("portal-screenshots")
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium session that accepts the test CA's
    /// certificates (the orchestrator's certificate is signed by a CA made for the test).
    pub async fn start() -> anyhow::Result<Self> {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(bin).exists() {
                bail!("{bin} is missing: install Debian's chromium and chromium-driver (scripts/test does)");
            }
        }
        let dir = tempfile::tempdir()?;
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads)?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("chromedriver.log"))?;
        let driver = tokio::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            // Its own process group, with the Chromium it starts: ended together (see Drop).
            .process_group(0)
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        // Up to 15 s for the driver to listen.
        let mut up = false;
        for _ in 0..150 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !up {
            bail!("chromedriver did not listen on port {port} within 15 s");
        }
        let profile = dir.path().join("profile");
        let caps = serde_json::json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-extensions",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let serde_json::Value::Object(caps) = caps else { unreachable!() };
        let mut last = None;
        // The first session can take a few seconds on a cold machine; three tries.
        for _ in 0..3 {
            match ClientBuilder::new(HttpConnector::new()).capabilities(caps.clone()).connect(&url).await {
                Ok(client) => return Ok(Browser { client, driver, dir }),
                Err(e) => {
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let log = std::fs::read_to_string(dir.path().join("chromedriver.log")).unwrap_or_default();
        bail!("no browser session: {}\nchromedriver log:\n{log}", last.unwrap_or_default())
    }

    /// The folder downloads land in.
    pub fn downloads(&self) -> PathBuf {
        self.dir.path().join("downloads")
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client.goto(url).await.with_context(|| format!("goto {url}"))
    }

    /// The element, waited for up to 10 s.
    pub async fn wait_css(&self, css: &str) -> anyhow::Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for {css}"))
    }

    /// The text of the page's body.
    pub async fn text(&self) -> anyhow::Result<String> {
        Ok(self.client.find(Locator::Css("body")).await?.text().await?)
    }

    /// Waits (up to `secs`, polling every 100 ms) until the body's text contains `needle`.
    pub async fn wait_text(&self, needle: &str, secs: u64) -> anyhow::Result<String> {
        let mut last = String::new();
        for _ in 0..secs * 10 {
            last = self.text().await.unwrap_or_default();
            if last.contains(needle) {
                return Ok(last);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the page never showed {needle:?} within {secs} s; it shows:\n{last}")
    }

    /// Saves a PNG screenshot as `target/portal-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.client.screenshot().await?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.end_group();
        let _ = self.driver.kill().await;
    }

    /// Kills chromedriver's process group: Chromium and its helpers too, which `kill_on_drop`
    /// alone would leave running when a test fails before `close`.
    fn end_group(&self) {
        if let Some(pid) = self.driver.id() {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.end_group();
    }
}
