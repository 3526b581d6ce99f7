//! The portal's sign-in done by an HTTP client, as a browser does it (no browser): the portal
//! sends it to the authorization server's sign-in page, the form is posted with its CSRF pair,
//! and the callback sets the session cookie. For tests and benchmarks of the portal's pages.

use std::path::Path;

use anyhow::Context;

fn http(ca: &Path) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(drover_tls::client_config(ca)?)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
}

/// The value of the first hidden field `name` in a page.
fn field(html: &str, name: &str) -> Option<String> {
    let needle = format!("name=\"{name}\" value=\"");
    let at = html.find(&needle)? + needle.len();
    Some(html[at..].split('"').next()?.replace("&amp;", "&"))
}

/// Signs in through `/portal/signin`; returns the session cookie (`__Host-drover-session=...`)
/// and the session's CSRF token.
pub async fn http_sign_in(url: &str, ca: &Path, user: &str, password: &str) -> anyhow::Result<(String, String)> {
    let c = http(ca)?;
    let start = c.get(format!("{url}/portal/signin")).send().await?;
    let login = set_cookie(&start, "__Host-drover-login").context("no login cookie")?;
    let authorize = start.headers()["location"].to_str()?.to_string();
    let page = c.get(format!("{url}{authorize}")).send().await?;
    let csrf_cookie = set_cookie(&page, "__Host-drover-csrf").context("no CSRF cookie")?;
    let html = page.text().await?;
    let mut form: Vec<(String, String)> = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "csrf_token",
    ]
    .iter()
    .filter_map(|n| field(&html, n).map(|v| (n.to_string(), v)))
    .collect();
    form.push(("username".into(), user.into()));
    form.push(("password".into(), password.into()));
    let back = c.post(format!("{url}/oauth2/authorize")).header("cookie", &csrf_cookie).form(&form).send().await?;
    anyhow::ensure!(back.status() == 303, "sign-in as {user}: {}", back.status());
    let callback = back.headers()["location"].to_str()?.to_string();
    anyhow::ensure!(callback.starts_with(&format!("{url}/portal/callback?")), "{callback}");
    let done = c.get(&callback).header("cookie", &login).send().await?;
    anyhow::ensure!(done.status() == 303, "callback: {}", done.status());
    let session = set_cookie(&done, "__Host-drover-session").context("no session cookie")?;
    let dash = c.get(format!("{url}/portal/")).header("cookie", &session).send().await?;
    anyhow::ensure!(dash.status() == 200, "dashboard: {}", dash.status());
    let token = field(&dash.text().await?, "csrf_token").context("no CSRF token on the dashboard")?;
    Ok((session, token))
}
