//! `drover login` / `drover logout`: an operator signs the CLI in with the authorization-code
//! flow and PKCE over a loopback redirect (RFC 8252), or with the device flow (RFC 8628) on a
//! box without a browser. The session (access and refresh token) is kept in
//! `CONFIG_DIR/sessions.json` (mode 0600), one per orchestrator URL, and refreshed as needed.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use drover_client::{Client, Credentials};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Conn, exit};

pub const CLI_CLIENT: &str = "drover-cli";

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Use the device flow: show a code to enter on another machine's browser.
    #[arg(long)]
    pub device: bool,
    /// Give up after this long without a sign-in.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub scope: String,
}

fn config_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("DROVER_CONFIG_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(d).join("drover"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; set DROVER_CONFIG_DIR")?;
    Ok(PathBuf::from(home).join(".config").join("drover"))
}

fn sessions_path() -> anyhow::Result<PathBuf> {
    Ok(config_dir()?.join("sessions.json"))
}

fn load_all() -> anyhow::Result<BTreeMap<String, Session>> {
    let p = sessions_path()?;
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t)
            .with_context(|| format!("{} is unreadable; delete it and log in again", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

fn save_all(all: &BTreeMap<String, Session>) -> anyhow::Result<()> {
    let p = sessions_path()?;
    let dir = p.parent().context("config dir")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let tmp = p.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(serde_json::to_string_pretty(all)?.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))?;
    Ok(())
}

/// An exclusive lock on the sessions file, held while a session is refreshed or saved: two CLI
/// commands refreshing with the same refresh token would look like reuse and end the session.
fn lock_sessions() -> anyhow::Result<std::fs::File> {
    let p = sessions_path()?;
    let dir = p.parent().context("config dir")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(p.with_extension("lock"))
        .with_context(|| format!("locking {}", p.display()))?;
    f.lock().with_context(|| format!("locking {}", p.display()))?;
    Ok(f)
}

fn key(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn session_of(v: &serde_json::Value) -> anyhow::Result<Session> {
    Ok(Session {
        access_token: v["access_token"].as_str().context("no access_token in the answer")?.to_string(),
        refresh_token: v["refresh_token"].as_str().context("no refresh_token in the answer")?.to_string(),
        expires_at: now() + v["expires_in"].as_i64().unwrap_or(600),
        scope: v["scope"].as_str().unwrap_or("").to_string(),
    })
}

/// The stored session's access token for this orchestrator, refreshed when it is about to
/// expire (the refresh token rotates; the new one is saved). `None` without a session.
pub async fn session_token(url: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    let fresh = |all: &BTreeMap<String, Session>| {
        all.get(&key(url)).filter(|s| s.expires_at - 30 > now()).map(|s| s.access_token.clone())
    };
    let all = load_all()?;
    if !all.contains_key(&key(url)) {
        return Ok(None);
    }
    if let Some(t) = fresh(&all) {
        return Ok(Some(t));
    }
    // Refresh under the lock, after reading again: another command may have refreshed already.
    let _lock = lock_sessions()?;
    let mut all = load_all()?;
    if let Some(t) = fresh(&all) {
        return Ok(Some(t));
    }
    let Some(s) = all.get(&key(url)).cloned() else { return Ok(None) };
    let anon = Client::new(url, ca, Credentials::None)?;
    let form =
        [("grant_type", "refresh_token"), ("refresh_token", s.refresh_token.as_str()), ("client_id", CLI_CLIENT)];
    match anon.oauth_form("/oauth2/token", &form, None).await {
        Ok(v) => {
            let fresh = session_of(&v)?;
            let token = fresh.access_token.clone();
            all.insert(key(url), fresh);
            save_all(&all)?;
            Ok(Some(token))
        }
        Err(drover_client::Error::Api { status: 400, code, message }) => {
            all.remove(&key(url));
            save_all(&all)?;
            Err(anyhow::Error::new(drover_client::Error::Api {
                status: 401,
                code,
                message: format!("the login session has ended ({message}); run `drover login` again"),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn login(conn: &Conn, a: LoginArgs) -> anyhow::Result<u8> {
    let ca = crate::commands::ca_of(conn);
    let anon = Client::new(&conn.url, ca.as_deref(), Credentials::None)?;
    let meta = anon.oauth_metadata().await?;
    let issuer = meta["issuer"].as_str().unwrap_or_default().to_string();
    let v =
        if a.device { device_flow(&anon, a.timeout).await? } else { loopback_flow(&anon, &issuer, a.timeout).await? };
    let s = session_of(&v)?;
    let scope = s.scope.clone();
    let _lock = lock_sessions()?;
    let mut all = load_all()?;
    all.insert(key(&conn.url), s);
    save_all(&all)?;
    eprintln!("Signed in to {} (roles: {scope}).", conn.url);
    Ok(exit::OK)
}

async fn loopback_flow(anon: &Client, issuer: &str, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("opening a loopback port")?;
    let port = listener.local_addr()?.port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let verifier = b64(&rand::random::<[u8; 32]>());
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    let state = b64(&rand::random::<[u8; 16]>());
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", CLI_CLIENT),
        ("redirect_uri", redirect.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("state", state.as_str()),
    ])?;
    let url = format!("{}/oauth2/authorize?{q}", anon.base_url());
    eprintln!("Open this address in a browser and sign in:\n{url}");
    let (code, iss) = tokio::time::timeout(timeout, wait_for_code(&listener, &state))
        .await
        .map_err(|_| anyhow!("no sign-in within {}", humantime::format_duration(timeout)))??;
    if let Some(iss) = iss
        && iss != issuer
    {
        bail!("the answer came from issuer {iss}, expected {issuer} (RFC 9207 mix-up protection)");
    }
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", verifier.as_str()),
        ("client_id", CLI_CLIENT),
    ];
    Ok(anon.oauth_form("/oauth2/token", &form, None).await?)
}

/// Serves the loopback redirect: the first request to `/callback` with our `state`.
async fn wait_for_code(listener: &tokio::net::TcpListener, state: &str) -> anyhow::Result<(String, Option<String>)> {
    for _ in 0..20 {
        let (mut sock, _) = listener.accept().await?;
        let mut buf = vec![0u8; 8192];
        let mut n = 0;
        while n < buf.len() {
            let got = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf[n..])).await.unwrap_or(Ok(0))?;
            if got == 0 {
                break;
            }
            n += got;
            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buf[..n]).to_string();
        let target = head.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = sock.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            continue;
        };
        let params: BTreeMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
        if params.get("state").map(String::as_str) != Some(state) {
            let _ = sock.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
            continue;
        }
        let (status, msg) = if params.contains_key("code") {
            ("200 OK", "Signed in. You can close this page and return to the terminal.")
        } else {
            ("400 Bad Request", "Sign-in failed. See the terminal.")
        };
        let body = format!("<!doctype html><title>Drover</title><p>{msg}</p>");
        let resp = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        if let Some(code) = params.get("code") {
            return Ok((code.clone(), params.get("iss").cloned()));
        }
        bail!(
            "sign-in refused: {} {}",
            params.get("error").map(String::as_str).unwrap_or("error"),
            params.get("error_description").map(String::as_str).unwrap_or("")
        );
    }
    bail!("too many stray requests on the loopback port")
}

async fn device_flow(anon: &Client, timeout: Duration) -> anyhow::Result<serde_json::Value> {
    let d = anon.oauth_form("/oauth2/device_authorization", &[("client_id", CLI_CLIENT)], None).await?;
    let device_code = d["device_code"].as_str().context("no device_code")?.to_string();
    eprintln!(
        "On any device, open {} and enter the code {}\n(or open {})",
        d["verification_uri"].as_str().unwrap_or("?"),
        d["user_code"].as_str().unwrap_or("?"),
        d["verification_uri_complete"].as_str().unwrap_or("?"),
    );
    let mut interval = Duration::from_secs(d["interval"].as_u64().unwrap_or(5));
    let deadline =
        tokio::time::Instant::now() + timeout.min(Duration::from_secs(d["expires_in"].as_u64().unwrap_or(600)));
    loop {
        if tokio::time::Instant::now() + interval > deadline {
            bail!("no approval before the code expired");
        }
        tokio::time::sleep(interval).await;
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code.as_str()),
            ("client_id", CLI_CLIENT),
        ];
        match anon.oauth_form("/oauth2/token", &form, None).await {
            Ok(v) => return Ok(v),
            Err(drover_client::Error::Api { code, .. }) if code == "authorization_pending" => {}
            Err(drover_client::Error::Api { code, .. }) if code == "slow_down" => interval += Duration::from_secs(5),
            Err(e) => return Err(e.into()),
        }
    }
}

/// `drover logout`: ends the session on the orchestrator (its refresh-token family is revoked)
/// and forgets it here.
pub async fn logout(conn: &Conn) -> anyhow::Result<u8> {
    let _lock = lock_sessions()?;
    let mut all = load_all()?;
    let Some(s) = all.remove(&key(&conn.url)) else {
        eprintln!("Not signed in to {}.", conn.url);
        return Ok(exit::OK);
    };
    let ca = crate::commands::ca_of(conn);
    let anon = Client::new(&conn.url, ca.as_deref(), Credentials::None)?;
    let revoked = anon
        .oauth_form("/oauth2/revoke", &[("token", s.refresh_token.as_str()), ("client_id", CLI_CLIENT)], None)
        .await;
    save_all(&all)?;
    match revoked {
        Ok(_) => eprintln!("Signed out of {}; the session is revoked.", conn.url),
        Err(e) => eprintln!("Signed out here; the orchestrator could not be told ({e})."),
    }
    Ok(exit::OK)
}
