//! The portal in a real browser (Debian's headless Chromium over WebDriver): sign-in through
//! the orchestrator's own authorization server, a deployment started and followed live,
//! approved from its page, the audit entry naming the operator; what a viewer sees; CSRF,
//! cross-site posts and session fixation refused; sign-out. Plus the portal's HTTP contract
//! without a browser (headers, the portal client refused at the token endpoint, sessions that
//! survive a restart). Screenshots of the main pages go to `target/portal-screenshots/`.

use std::time::Duration;

use drover_testkit::browser::Browser;
use drover_testkit::{Backend, TestServer, tarball};
use drover_types::DeploymentStatus;
use fantoccini::Locator;
use serde_json::json;

const PIPELINE: &str = r#"
application: shop
stages:
  - name: dev
    environment: dev
    tasks:
      - type: run
        command: echo "building $DROVER_VERSION"; sleep 2; echo "tests passed"
      - type: approval
        approvals: 1
      - type: run
        command: echo "released $DROVER_VERSION"
"#;

/// Signs in on the authorization server's page the portal sends the browser to.
async fn sign_in(b: &Browser, base: &str, user: &str, password: &str) -> anyhow::Result<()> {
    b.goto(&format!("{base}/portal/")).await?;
    let form = b.wait_css("form[action='/oauth2/authorize']").await?;
    assert!(b.client.current_url().await?.path().starts_with("/oauth2/authorize"));
    form.find(Locator::Css("#username")).await?.send_keys(user).await?;
    form.find(Locator::Css("#password")).await?.send_keys(password).await?;
    form.find(Locator::Css("button[type=submit]")).await?.click().await?;
    b.wait_text(&format!("Signed in as {user}"), 10).await?;
    Ok(())
}

/// The session cookie's value as the browser holds it.
async fn session_cookie(b: &Browser) -> anyhow::Result<Option<String>> {
    let all = b.client.get_all_cookies().await?;
    Ok(all.iter().find(|c| c.name() == "__Host-drover-session").map(|c| c.value().to_string()))
}

/// A post from this page's JavaScript (same origin, the session cookie rides along): status.
async fn post_from_page(b: &Browser, path: &str, body: &str) -> anyhow::Result<u16> {
    let js = r#"const [path, body, done] = arguments;
        fetch(path, {method: "POST", credentials: "same-origin", redirect: "manual",
                     headers: {"Content-Type": "application/x-www-form-urlencoded"}, body})
          .then(r => done(r.type === "opaqueredirect" ? 303 : r.status)).catch(e => done(-1));"#;
    let v = b.client.execute_async(js, vec![json!(path), json!(body)]).await?;
    Ok(v.as_i64().unwrap_or(-1) as u16)
}

async fn wait_deployment(s: &TestServer, id: i64, status: DeploymentStatus) -> anyhow::Result<()> {
    drover_testkit::wait_status(&s.admin(), id, status).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_deploy_live_approve_and_audit() {
    run_flow(Backend::Sqlite).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_in_deploy_live_approve_and_audit_postgres() {
    run_flow(Backend::Postgres).await.unwrap()
}

/// `RUST_LOG=drover_server=debug` shows the orchestrator's log beside a failing test.
fn log() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn run_flow(backend: Backend) -> anyhow::Result<()> {
    log();
    let mut s = TestServer::start(backend).await?;
    s.agent("dev-1", "dev").await?;
    let admin = s.admin();
    admin.apply_yaml(PIPELINE).await?;
    for v in ["1.0", "1.1"] {
        admin.push_artifact_bytes("shop", v, tarball(&[("index.html", v, 0o644)])).await?;
    }
    let viewer_pw = s.add_operator("vera", &["viewer"]).await;
    let b = Browser::start().await?;
    let base = s.url.clone();

    // Session fixation: a session id planted before sign-in is never the signed-in one.
    b.goto(&format!("{base}/portal/signed-out")).await?;
    let planted = "ab".repeat(32);
    // As a script on a page of this host could (cookie tossing): a Secure, host-only cookie.
    let js = format!("document.cookie = '__Host-drover-session={planted}; Path=/; Secure; SameSite=Strict'");
    b.client.execute(&js, vec![]).await?;
    assert_eq!(session_cookie(&b).await?.as_deref(), Some(planted.as_str()), "planted");

    sign_in(&b, &base, "admin", &s.admin_password).await?;
    let sid = session_cookie(&b).await?.expect("a session cookie");
    assert_ne!(sid, planted, "a new session id at sign-in");
    let cookies = b.client.get_all_cookies().await?;
    let cookie = cookies.iter().find(|c| c.name() == "__Host-drover-session").unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    let anon = s.http();
    let planted_try =
        anon.get(format!("{base}/portal/")).header("cookie", format!("__Host-drover-session={planted}")).send().await?;
    assert_eq!(planted_try.status(), 303, "the planted id is not signed in");
    assert!(planted_try.headers()["location"].to_str()?.starts_with("/portal/signin"));
    let dashboard = b.wait_text("Pipelines", 5).await?;
    assert!(dashboard.contains("shop"), "{dashboard}");
    b.screenshot("dashboard").await?;

    // Start a deployment from a pushed version, and watch it live.
    b.goto(&format!("{base}/portal/pipelines/shop")).await?;
    let form = b.wait_css("form.start").await?;
    form.find(Locator::Css("select#version")).await?.select_by_value("1.1").await?;
    form.find(Locator::Css("button[type=submit]")).await?.click().await?;
    b.wait_css("#live").await?;
    let url = b.client.current_url().await?;
    let id: i64 = url.path().rsplit('/').next().unwrap().parse()?;
    // The log and the status arrive without a reload (server-sent events + a fragment fetch).
    b.wait_text("tests passed", 20).await?;
    let page = b.wait_text("pending_input", 20).await?;
    assert!(page.contains("building 1.1"), "{page}");
    assert_eq!(b.client.current_url().await?, url, "no navigation: live updates");
    // Lines appended by the script (the server renders the log as one text node), and the
    // status part replaced by it at least once.
    let js = "return [document.getElementById('log').childNodes.length, \
              Number(document.getElementById('live').dataset.updates || 0)]";
    let counts = b.client.execute(js, vec![]).await?;
    assert!(counts[0].as_i64() >= Some(2) && counts[1].as_i64() >= Some(1), "live updates: {counts}");
    b.wait_css("button[data-action=approve]").await?;
    b.screenshot("deployment").await?;
    b.goto(&format!("{base}/portal/pipelines/shop")).await?;
    let board = b.wait_text("pending_input", 5).await?;
    assert!(board.contains(&format!("#{id} 1.1")), "{board}");
    b.screenshot("pipeline").await?;

    // A second deployment waits at the approval: the forged and cross-site posts aim at it.
    let d2 = admin.deploy("shop", "1.0").await?;
    // Queued behind the first (one deployment per stage); it still answers to abort.
    b.goto(&format!("{base}/portal/deployments/{}", d2.id)).await?;
    b.wait_css("button[data-action=abort]").await?;
    // A post without the session's CSRF token is refused and changes nothing.
    assert_eq!(post_from_page(&b, &format!("/portal/deployments/{}/abort", d2.id), "reason=forged").await?, 403);
    assert_eq!(
        post_from_page(&b, &format!("/portal/deployments/{}/abort", d2.id), &format!("csrf_token={}", "cd".repeat(32)))
            .await?,
        403
    );
    assert!(!admin.deployment(d2.id).await?.status.is_terminal());
    // A cross-site form post (another origin: a data: page) is refused and changes nothing.
    let attack = format!(
        "data:text/html,<form id=f method=post action='{base}/portal/deployments/{}/abort'>\
         <input name=csrf_token value=x><input name=reason value=csrf></form>\
         <script>document.getElementById('f').submit()</script>",
        d2.id
    );
    b.goto(&attack).await?;
    b.wait_text("not sent from a Drover page", 10).await.or(b.wait_text("Signed out", 1).await)?;
    assert!(!admin.deployment(d2.id).await?.status.is_terminal(), "the cross-site post changed nothing");

    // Approve from the deployment page, with a comment.
    b.goto(&format!("{base}/portal/deployments/{id}")).await?;
    let approve = b.wait_css("form[action$='/approve']").await?;
    approve.find(Locator::Css("input[name=comment]")).await?.send_keys("ship it").await?;
    approve.find(Locator::Css("button[type=submit]")).await?.click().await?;
    b.wait_text("completed", 20).await?;
    wait_deployment(&s, id, DeploymentStatus::Completed).await?;
    let d = admin.deployment(id).await?;
    let votes = &d.stages[0].tasks[1].approvals;
    assert_eq!(votes.len(), 1);
    assert_eq!((votes[0].by.as_str(), votes[0].comment.as_deref()), ("admin", Some("ship it")));
    let page = b.wait_text("released 1.1", 10).await?;
    assert!(page.contains("admin approved"), "{page}");

    // The audit log names the operator and the portal, for the approval and the refusals.
    b.goto(&format!("{base}/portal/audit?principal=operator%3Aadmin+via+client%3Adrover-portal")).await?;
    let audit = b.wait_text("Audit log", 5).await?;
    assert!(audit.contains(&format!("/portal/deployments/{id}/approve")), "{audit}");
    assert!(audit.contains("POST /portal/deployments/{id}/approve"), "{audit}");
    assert!(audit.contains("portal.csrf_refused"), "{audit}");
    assert!(audit.contains("GET /portal/deployments/{id}"), "showing a log is audited: {audit}");
    b.goto(&format!("{base}/portal/audit?verify=1")).await?;
    let verified = b.wait_text("Chain verified", 10).await?;
    assert!(verified.contains("portal.cross_site"), "{verified}");
    b.screenshot("audit").await?;
    // The export, downloaded from the page, verifies with the published script.
    b.client.find(Locator::Css("#export")).await?.click().await?;
    let mut export = None;
    for _ in 0..100 {
        let done = std::fs::read_dir(b.downloads())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"));
        if let Some(p) = done {
            export = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let export = export.expect("the audit export was downloaded");
    let text = std::fs::read_to_string(&export)?;
    assert!(text.starts_with("{") && text.contains("\"kind\":\"header\""), "{}", &text[..text.len().min(300)]);
    assert!(text.contains("POST /portal/deployments/{id}/approve"), "the portal's actions are in it");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/verify-audit-export.py");
    let public = std::fs::read_to_string(s.data_dir().join("audit/checkpoint.pub"))?;
    let r = std::process::Command::new("python3")
        .arg(script)
        .arg(&export)
        .arg("--public-key")
        .arg(public.trim())
        .output()?;
    assert!(r.status.success(), "{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr));

    // Signing out ends the session: the cookie no longer signs anyone in.
    b.goto(&format!("{base}/portal/")).await?;
    b.wait_css("form.signout button").await?.click().await?;
    b.wait_text("Your session has ended", 10).await?;
    assert_eq!(session_cookie(&b).await?, None);
    let after =
        anon.get(format!("{base}/portal/")).header("cookie", format!("__Host-drover-session={sid}")).send().await?;
    assert_eq!(after.status(), 303, "the old session id signs nobody in");

    // A viewer sees no action buttons, and a post with their own valid token is refused.
    sign_in(&b, &base, "vera", &viewer_pw).await?;
    b.goto(&format!("{base}/portal/deployments/{}", d2.id)).await?;
    b.wait_css("#live").await?;
    assert!(b.client.find_all(Locator::Css("button[data-action]")).await?.is_empty(), "a viewer has no actions");
    assert!(!b.text().await?.contains("Start deployment"));
    let token = b.client.find(Locator::Css("form.signout input[name=csrf_token]")).await?.attr("value").await?.unwrap();
    let status =
        post_from_page(&b, &format!("/portal/deployments/{}/abort", d2.id), &format!("csrf_token={token}")).await?;
    assert_eq!(status, 403, "the server checks the privilege, not the page");
    assert!(!admin.deployment(d2.id).await?.status.is_terminal());
    b.screenshot("viewer-deployment").await?;
    admin.act(d2.id, drover_types::Action::Abort, Some("test over".into())).await?;
    b.close().await;
    s.shutdown().await;
    Ok(())
}

/// The HTTP contract of the portal without a browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_signin_redirects_and_the_portal_client() -> anyhow::Result<()> {
    let s = TestServer::start(Backend::Sqlite).await?;
    let c = s.http();
    let root = c.get(format!("{}/", s.url)).send().await?;
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/portal/");
    let page = c.get(format!("{}/portal/deployments/7?fragment=1", s.url)).send().await?;
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/portal/signin?next=%2Fportal%2Fdeployments%2F7%3Ffragment%3D1");
    let h = page.headers();
    let csp = h["content-security-policy"].to_str()?;
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("form-action 'self'"), "{csp}");
    assert!(h.get("strict-transport-security").is_none(), "not for an IP address: it would pin every port");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    // Sign-in: PKCE and state, the verifier kept server-side behind a __Host- cookie.
    let signin = c.get(format!("{}/portal/signin?next=https://evil.example/", s.url)).send().await?;
    assert_eq!(signin.status(), 303);
    let to = signin.headers()["location"].to_str()?.to_string();
    assert!(to.starts_with("/oauth2/authorize?"), "{to}");
    assert!(to.contains("client_id=drover-portal") && to.contains("code_challenge_method=S256"), "{to}");
    let set = signin.headers()["set-cookie"].to_str()?;
    assert!(set.starts_with("__Host-drover-login=") && set.contains("HttpOnly") && set.contains("SameSite=Strict"));
    // A callback without the browser's login cookie, or with another state, signs nobody in.
    let cb = c.get(format!("{}/portal/callback?code=x&state=y", s.url)).send().await?;
    assert_eq!(cb.status(), 400);
    let login = set.split(';').next().unwrap().to_string();
    let cb = c.get(format!("{}/portal/callback?code=x&state=wrong", s.url)).header("cookie", &login).send().await?;
    assert_eq!(cb.status(), 400);
    assert!(cb.headers().get("set-cookie").is_none());
    // The portal's client cannot be used from outside the orchestrator.
    let token = c
        .post(format!("{}/oauth2/token", s.url))
        .form(&[("grant_type", "authorization_code"), ("client_id", "drover-portal"), ("code", "x")])
        .send()
        .await?;
    assert_eq!(token.status(), 401);
    assert_eq!(token.json::<serde_json::Value>().await?["error"], "invalid_client");
    let del = c
        .delete(format!("{}/api/v1/clients/drover-portal", s.url))
        .basic_auth("admin", Some(&s.admin_password))
        .send()
        .await?;
    assert_eq!(del.status(), 409, "the portal's client is built in");
    for (method, path, body) in [
        (reqwest::Method::PUT, "/api/v1/clients/drover-portal", json!({"disabled": true})),
        (reqwest::Method::POST, "/api/v1/clients/drover-portal/revoke-tokens", json!({})),
        (reqwest::Method::POST, "/api/v1/clients/drover-cli/revoke-tokens", json!({})),
        (reqwest::Method::PUT, "/api/v1/clients/drover-cli", json!({"disabled": true})),
    ] {
        let r = c
            .request(method.clone(), format!("{}{path}", s.url))
            .basic_auth("admin", Some(&s.admin_password))
            .json(&body)
            .send()
            .await?;
        assert_eq!(r.status(), 409, "{method} {path}: would sign every operator out");
    }
    // A post without a session is refused, not replayed after sign-in.
    let post = c.post(format!("{}/portal/deployments/1/abort", s.url)).form(&[("reason", "x")]).send().await?;
    assert_eq!(post.status(), 401);
    // Assets are cache-busted and cacheable.
    let html = c.get(format!("{}/portal/signed-out", s.url)).send().await?.text().await?;
    let css = html.split("href=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    assert!(css.starts_with("/portal/assets/portal.") && css.ends_with(".css"), "{css}");
    let a = c.get(format!("{}{css}", s.url)).send().await?;
    assert_eq!(a.status(), 200);
    assert!(a.headers()["cache-control"].to_str()?.contains("immutable"));
    assert_eq!(c.get(format!("{}/portal/assets/portal.000000000000.css", s.url)).send().await?.status(), 404);
    s.shutdown().await;
    Ok(())
}

/// Sessions are stored sealed in the database: a restart keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_survives_a_restart() -> anyhow::Result<()> {
    log();
    let mut s = TestServer::start(Backend::Sqlite).await?;
    let b = Browser::start().await?;
    sign_in(&b, &s.url, "admin", &s.admin_password).await?;
    let sid = session_cookie(&b).await?.unwrap();
    s.restart().await?;
    b.goto(&format!("{}/portal/", s.url)).await?;
    b.wait_text("Signed in as admin", 10).await?;
    assert_eq!(session_cookie(&b).await?, Some(sid));
    b.close().await;
    s.shutdown().await;
    Ok(())
}

/// A database outage shows 503 and keeps the session: once the database is back, the same
/// cookie is still signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_503_never_a_sign_out() -> anyhow::Result<()> {
    log();
    let relay = drover_testkit::relay::Relay::start().await;
    let (schema, url) = relay.fresh_schema().await;
    let s = TestServer::start_configured(Backend::Sqlite, |cfg| cfg.database_url = Some(url.clone())).await?;
    let b = Browser::start().await?;
    sign_in(&b, &s.url, "admin", &s.admin_password).await?;
    let sid = session_cookie(&b).await?.unwrap();
    relay.cut();
    b.goto(&format!("{}/portal/", s.url)).await?;
    let page = b.wait_text("cannot reach its database", 10).await?;
    assert!(page.contains("You are still signed in"), "{page}");
    let r = s
        .http()
        .get(format!("{}/portal/", s.url))
        .header("cookie", format!("__Host-drover-session={sid}"))
        .send()
        .await?;
    assert_eq!(r.status(), 503);
    assert_eq!(session_cookie(&b).await?.as_deref(), Some(sid.as_str()), "the cookie is kept");
    relay.restore();
    let mut back = false;
    for _ in 0..100 {
        b.goto(&format!("{}/portal/", s.url)).await?;
        if b.text().await?.contains("Signed in as admin") {
            back = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(back, "the same session works once the database is back");
    b.close().await;
    s.shutdown().await;
    drover_store::testing::drop_schema(&schema).await;
    Ok(())
}

/// The pipeline view puts each deployment in the column of its stage (the README's screenshot
/// is this page: `target/portal-screenshots/pipeline-view.png`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_view_shows_deployments_in_their_stages() -> anyhow::Result<()> {
    log();
    let mut s = TestServer::start(Backend::Sqlite).await?;
    for (a, e) in [("dev-1", "dev"), ("staging-1", "staging"), ("production-1", "production")] {
        s.agent(a, e).await?;
    }
    let admin = s.admin();
    admin
        .apply_yaml(
            r#"
application: shop
stages:
  - name: dev
    environment: dev
    tasks:
      - type: run
        command: echo "unit tests passed for $DROVER_VERSION"
  - name: staging
    environment: staging
    tasks:
      - type: run
        command: echo "smoke test passed"
      - type: approval
  - name: production
    environment: production
    progression: manual
    tasks:
      - type: run
        command: echo "released $DROVER_VERSION"
"#,
        )
        .await?;
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        admin.push_artifact_bytes("shop", v, tarball(&[("index.html", v, 0o644)])).await?;
    }
    // 1.0.0 all the way; 1.1.0 waits for approval in staging; 1.2.0 passed dev and queues for
    // staging behind 1.1.0.
    let d1 = admin.deploy("shop", "1.0.0").await?;
    wait_deployment(&s, d1.id, DeploymentStatus::PendingInput).await?;
    admin.act(d1.id, drover_types::Action::Approve, None).await?;
    wait_deployment(&s, d1.id, DeploymentStatus::PendingPromotion).await?;
    admin.act(d1.id, drover_types::Action::Promote, None).await?;
    wait_deployment(&s, d1.id, DeploymentStatus::Completed).await?;
    let d2 = admin.deploy("shop", "1.1.0").await?;
    wait_deployment(&s, d2.id, DeploymentStatus::PendingInput).await?;
    let d3 = admin.deploy("shop", "1.2.0").await?;
    drover_testkit::wait_for(&admin, d3.id, Duration::from_secs(20), |d| d.stage_index == 1).await?;
    let b = Browser::start().await?;
    sign_in(&b, &s.url, "admin", &s.admin_password).await?;
    b.goto(&format!("{}/portal/pipelines/shop", s.url)).await?;
    b.wait_css(".board").await?;
    let column = |n: usize| format!(".board > section:nth-of-type({n})");
    let staging = b.client.find(Locator::Css(&column(2))).await?.text().await?;
    assert!(staging.contains(&format!("#{} 1.1.0", d2.id)) && staging.contains("pending_input"), "{staging}");
    assert!(staging.contains(&format!("#{} 1.2.0", d3.id)) && staging.contains("queued"), "{staging}");
    let done = b.client.find(Locator::Css(&column(4))).await?.text().await?;
    assert!(done.contains(&format!("#{} 1.0.0", d1.id)), "{done}");
    b.screenshot("pipeline-view").await?;
    // Usable on a phone and with assistive technology: at 390 px wide no page scrolls
    // sideways (wide tables scroll inside their own box), every form control has a label,
    // every button a name, each page one h1 inside its main landmark, the keyboard reaches
    // every control in the page's order, and text has AA contrast against its background.
    b.client.set_window_size(390, 844).await?;
    let check = r#"
        const problems = [];
        const doc = document.documentElement;
        if (doc.scrollWidth > window.innerWidth + 1) {
            // Name the elements that stick out (outside a box that scrolls by itself).
            const out = [...document.querySelectorAll("body *")].filter(el =>
                el.getBoundingClientRect().right > window.innerWidth + 1 && !(el.parentElement && el.parentElement.closest(".table-wrap, pre")));
            problems.push("scrolls sideways: " + doc.scrollWidth + " by " +
                out.slice(-3).map(el => el.tagName + (el.id ? '#' + el.id : '') + "." + el.className).join(", "));
        }
        for (const el of document.querySelectorAll("input:not([type=hidden]), select, textarea")) {
            if (el.hidden || el.closest("[hidden]")) continue;
            if (!(el.labels && el.labels.length) && !el.getAttribute("aria-label")) problems.push("unlabelled " + (el.name || el.id));
        }
        for (const btn of document.querySelectorAll("button")) {
            if (!btn.textContent.trim() && !btn.getAttribute("aria-label")) problems.push("nameless button");
        }
        if (document.querySelectorAll("main h1").length !== 1) problems.push("h1 count " + document.querySelectorAll("h1").length);
        // Keyboard: no positive tabindex (the order is the page's), every link and control
        // reachable by Tab but the hidden default button of the form editor.
        for (const el of document.querySelectorAll("[tabindex]")) {
            if (el.tabIndex > 0) problems.push("tabindex " + el.tabIndex + " on " + el.tagName);
        }
        for (const el of document.querySelectorAll("a[href], button, input:not([type=hidden]), select, textarea, summary")) {
            if (el.tabIndex < 0 && !el.classList.contains("sr-only")) problems.push("not focusable: " + el.tagName + " " + (el.id || el.textContent.trim().slice(0, 30)));
        }
        // Contrast (WCAG AA): text against the background it is drawn on, 4.5:1 (3:1 large).
        const rgb = c => { const m = c.match(/[\d.]+/g) || []; return m.map(Number); };
        const lum = ([r, g, b]) => {
            const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
            return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
        };
        const backdrop = el => {
            for (let e = el; e; e = e.parentElement) {
                const c = rgb(getComputedStyle(e).backgroundColor);
                if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
            }
            return [255, 255, 255];
        };
        const seen = new Set();
        for (const el of document.querySelectorAll("body *")) {
            const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
            if (!own || el.closest(".sr-only, [hidden], option")) continue;
            const st = getComputedStyle(el);
            if (st.visibility === "hidden" || st.display === "none") continue;
            const fg = rgb(st.color).slice(0, 3), bg = backdrop(el);
            const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
            const ratio = (hi + 0.05) / (lo + 0.05);
            const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight, 10) >= 700;
            const need = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
            const key = el.tagName + "." + el.className + " " + st.color + " on " + bg.join(",");
            if (ratio < need && !seen.has(key)) { seen.add(key); problems.push("contrast " + ratio.toFixed(2) + " " + key); }
        }
        return problems;"#;
    let d3_page = format!("/portal/deployments/{}", d3.id);
    for page in [
        "/portal/",
        "/portal/pipelines/shop",
        d3_page.as_str(),
        "/portal/pipelines/shop/form",
        "/portal/pipelines/shop/edit",
        "/portal/environments",
        "/portal/settings/clients",
        "/portal/settings/keys",
        "/portal/settings/operators",
        "/portal/settings/operators/admin",
        "/portal/settings/access",
        "/portal/settings/auth-profiles",
        "/portal/system",
        "/portal/audit",
    ] {
        b.goto(&format!("{}{page}", s.url)).await?;
        b.wait_css("main").await?;
        let problems = b.client.execute(check, vec![]).await?;
        assert_eq!(problems, json!([]), "{page} at 390 px");
    }
    b.goto(&format!("{}/portal/pipelines/shop", s.url)).await?;
    b.wait_css(".board").await?;
    b.screenshot("phone-pipeline-view").await?;
    b.client.set_window_size(1280, 900).await?;
    b.goto(&format!("{}/portal/settings/access", s.url)).await?;
    b.wait_css("#role-form").await?;
    b.screenshot("access").await?;
    b.goto(&format!("{}/portal/system", s.url)).await?;
    b.wait_css("table.system").await?;
    b.screenshot("system").await?;
    b.goto(&format!("{}/portal/pipelines/shop", s.url)).await?;
    b.wait_css(".board").await?;
    // Reports: the figures, as the API gives them, with charts.
    let report = admin.report("shop", None, None).await?;
    assert_eq!((report.deployments, report.completed), (3, 1));
    assert_eq!(report.lead_time.count, 1);
    assert_eq!(report.stages.len(), 3);
    b.client.find(Locator::Css("a[href='/portal/pipelines/shop/reports']")).await?.click().await?;
    let figures = b.wait_css("#figures").await?.text().await?;
    assert!(figures.contains("Deployment frequency") && figures.contains("1 completed of 3 started"), "{figures}");
    assert!(figures.contains("Change failure rate") && figures.contains("Time to restore"), "{figures}");
    assert_eq!(b.client.find_all(Locator::Css("svg.chart")).await?.len(), 3, "three charts");
    b.screenshot("reports").await?;
    // The dashboard: the last deployment per stage, and the approval waiting for admin.
    b.goto(&format!("{}/portal/", s.url)).await?;
    let waiting = b.wait_css("#waiting").await?.text().await?;
    assert!(waiting.contains(&format!("Deployment {}", d2.id)) && waiting.contains("approve"), "{waiting}");
    b.close().await;
    s.shutdown().await;
    Ok(())
}

/// Settings: generate a client secret, download it, get a token with it; upload a keytool-made
/// keystore with its alias and password, and see tokens signed with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_secret_downloaded_and_a_keystore_uploaded() -> anyhow::Result<()> {
    log();
    let s = TestServer::start(Backend::Sqlite).await?;
    let b = Browser::start().await?;
    sign_in(&b, &s.url, "admin", &s.admin_password).await?;
    b.goto(&format!("{}/portal/settings/clients", s.url)).await?;
    let form = b.wait_css("form[action='/portal/settings/clients']").await?;
    form.find(Locator::Css("#client-name")).await?.send_keys("jenkins").await?;
    form.find(Locator::Css("input[name=role][value=api]")).await?.click().await?;
    form.find(Locator::Css("button[type=submit]")).await?.click().await?;
    b.wait_text("This is the only time the secret is shown", 10).await?;
    let shown = b.client.find(Locator::Css("#client-secret")).await?.text().await?;
    assert_eq!(shown.len(), 64, "{shown}");
    b.screenshot("client-secret").await?;
    b.client.find(Locator::Css("#download")).await?.click().await?;
    let file = b.downloads().join("jenkins-client-secret.json");
    let mut json = None;
    for _ in 0..100 {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            json = Some(v);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let json = json.expect("the downloaded client secret file");
    assert_eq!(json["client_id"], "jenkins");
    assert_eq!(json["client_secret"], shown.as_str());
    assert_eq!(json["token_endpoint"], format!("{}/oauth2/token", s.url));
    assert_eq!(json["revocation_endpoint"], format!("{}/oauth2/revoke", s.url));
    // The downloaded file is all a CI system needs.
    let token = s
        .http()
        .post(json["token_endpoint"].as_str().unwrap())
        .basic_auth("jenkins", json["client_secret"].as_str())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?;
    assert_eq!(token.status(), 200);
    let token: serde_json::Value = token.json().await?;
    assert_eq!(token["scope"], "api");
    // The secret is not shown again: the list has no secret, and reloading shows none.
    b.goto(&format!("{}/portal/settings/clients", s.url)).await?;
    let list = b.wait_text("jenkins", 5).await?;
    assert!(!list.contains(&shown), "the secret is shown once");

    // A keytool-made PKCS#12 keystore, uploaded with its alias and password.
    let dir = tempfile::tempdir()?;
    let ks = dir.path().join("signing.p12");
    let out = std::process::Command::new("keytool")
        .args(["-genkeypair", "-alias", "jwt", "-dname", "CN=Portal upload", "-validity", "30"])
        .args(["-keyalg", "EC", "-groupname", "secp256r1", "-storetype", "PKCS12"])
        .args(["-storepass", "changeit", "-keypass", "changeit", "-keystore"])
        .arg(&ks)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    b.goto(&format!("{}/portal/settings/keys", s.url)).await?;
    let form = b.wait_css("form[action='/portal/settings/keys/import']").await?;
    form.find(Locator::Css("#keystore")).await?.send_keys(ks.to_str().unwrap()).await?;
    form.find(Locator::Css("#alias")).await?.send_keys("jwt").await?;
    // A wrong password first: refused, nothing imported.
    form.find(Locator::Css("#ks-password")).await?.send_keys("wrong").await?;
    form.find(Locator::Css("button[type=submit]")).await?.click().await?;
    let refused = b.wait_text("keystore could not be read", 10).await?;
    assert!(!refused.contains("changeit"), "{refused}");
    assert_eq!(s.admin().keys().await?.len(), 1, "nothing imported");
    b.goto(&format!("{}/portal/settings/keys", s.url)).await?;
    let form = b.wait_css("form[action='/portal/settings/keys/import']").await?;
    form.find(Locator::Css("#keystore")).await?.send_keys(ks.to_str().unwrap()).await?;
    form.find(Locator::Css("#alias")).await?.send_keys("jwt").await?;
    form.find(Locator::Css("#ks-password")).await?.send_keys("changeit").await?;
    form.find(Locator::Css("input[name=activate]")).await?.click().await?;
    form.find(Locator::Css("button[type=submit]")).await?.click().await?;
    let done = b.wait_css("#imported").await?.text().await?;
    assert!(
        done.contains("ES256") && done.contains("now the active key") && done.contains("CN=Portal upload"),
        "{done}"
    );
    b.screenshot("signing-keys").await?;
    let keys = s.admin().keys().await?;
    let active = keys.iter().find(|k| k.active).unwrap();
    assert!(done.contains(&active.kid), "{done}");
    // The list shows its certificate, and that it is due for renewal (valid for 30 days).
    let row = b.wait_css(&format!("tr[data-kid='{}'] td.cert", active.kid)).await?.text().await?;
    assert!(row.contains("CN=Portal upload, valid until") && row.contains("expires in 29 days"), "{row}");
    let generated = b.wait_css(&format!("tr[data-kid='{}'] td.cert", keys[0].kid)).await?.text().await?;
    assert_eq!(generated, "none");
    // Tokens are now signed with the uploaded key.
    let token = s
        .http()
        .post(format!("{}/oauth2/token", s.url))
        .basic_auth("jenkins", json["client_secret"].as_str())
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let jwt = token["access_token"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(jwt)?;
    assert_eq!(header.kid.as_deref(), Some(active.kid.as_str()));
    let ok = s.http().get(format!("{}/api/v1/pipelines", s.url)).bearer_auth(jwt).send().await?;
    assert_eq!(ok.status(), 200, "a token signed with the uploaded key is accepted");
    b.close().await;
    s.shutdown().await;
    Ok(())
}

/// The pipeline editor: the YAML it shows is what `drover apply` reads back unchanged; a change
/// is checked and shown as a diff before it is saved; an error names its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pipeline_editor_round_trips_yaml() -> anyhow::Result<()> {
    log();
    let s = TestServer::start(Backend::Sqlite).await?;
    let admin = s.admin();
    admin.apply_yaml(PIPELINE).await?;
    let b = Browser::start().await?;
    sign_in(&b, &s.url, "admin", &s.admin_password).await?;
    b.goto(&format!("{}/portal/pipelines/shop", s.url)).await?;
    b.wait_css("a[href='/portal/pipelines/shop/edit']").await?.click().await?;
    let area = b.wait_css("textarea#yaml").await?;
    let shown = area.prop("value").await?.unwrap_or_default();
    // What the editor shows, applied as is, changes nothing.
    assert_eq!(admin.apply_yaml(&shown).await?.outcome, "unchanged", "{shown}");
    assert!(shown.contains("application: shop") && shown.contains("type: approval"), "{shown}");
    b.screenshot("editor").await?;
    // An error names its line, nothing is saved.
    let broken = shown.replace("tests passed", "tests passed ${NOPE}");
    let set = "document.getElementById('yaml').value = arguments[0]";
    b.client.execute(set, vec![json!(broken)]).await?;
    b.client.find(Locator::Css("#check")).await?.click().await?;
    let err = b.wait_css("#editor-error").await?.text().await?;
    assert!(err.contains("unknown variable ${NOPE}") && err.contains("at line"), "{err}");
    let marked = b.client.find(Locator::Css("#editor-error mark")).await?.text().await?;
    assert!(marked.contains("${NOPE}"), "the line is marked: {marked}");
    // A new stage: checked, shown as added lines, saved.
    // (Sequences are written without indentation, as serde_yaml writes them.)
    assert!(shown.contains("\n- name: dev\n"), "{shown}");
    let added = format!("{shown}- name: staging\n  environment: staging\n  tasks:\n  - type: deploy\n");
    b.client.execute(set, vec![json!(added)]).await?;
    b.client.find(Locator::Css("#check")).await?.click().await?;
    let preview = b.wait_css("#preview").await?.text().await?;
    assert!(
        preview.contains("+ - name: staging") && preview.contains("creates the environment(s) staging"),
        "{preview}"
    );
    assert_eq!(admin.pipeline("shop").await?.stages.len(), 1, "nothing saved by a check");
    b.screenshot("editor-diff").await?;
    // Someone saves meanwhile: this preview's save is refused, nothing overwritten.
    let meanwhile = shown.replace("released", "shipped");
    assert_eq!(admin.apply_yaml(&meanwhile).await?.outcome, "updated");
    b.client.find(Locator::Css("#save")).await?.click().await?;
    let stale = b.wait_css("#editor-error").await?.text().await?;
    assert!(stale.contains("changed since this preview"), "{stale}");
    assert_eq!(admin.pipeline("shop").await?.stages.len(), 1, "not overwritten");
    let added = added.replace("released", "shipped");
    b.client.execute(set, vec![json!(added)]).await?;
    b.client.find(Locator::Css("#check")).await?.click().await?;
    b.wait_css("#preview").await?;
    b.client.find(Locator::Css("#save")).await?.click().await?;
    b.wait_css(".board").await?;
    let p = admin.pipeline("shop").await?;
    assert_eq!(p.stages.iter().map(|st| st.name.as_str()).collect::<Vec<_>>(), ["dev", "staging"]);
    // And the editor's YAML of the saved pipeline is what apply reads back.
    b.goto(&format!("{}/portal/pipelines/shop/edit", s.url)).await?;
    let again = b.wait_css("textarea#yaml").await?.prop("value").await?.unwrap_or_default();
    assert_eq!(admin.apply_yaml(&again).await?.outcome, "unchanged");

    // The same pipeline as a form: a task added to the second stage, its type changed to
    // `run`, its command typed; checked (the diff), saved. What the form does not show stays.
    b.goto(&format!("{}/portal/pipelines/shop/form", s.url)).await?;
    assert_eq!(b.wait_css("#s0-name").await?.prop("value").await?.as_deref(), Some("dev"));
    assert_eq!(b.client.find(Locator::Css("#s0-t1-approvals")).await?.prop("value").await?.as_deref(), Some("1"));
    b.client.find(Locator::Css("button[value='add-task:1']")).await?.click().await?;
    let cmd = b.wait_css("#s1-t1-command").await?;
    cmd.send_keys("echo \"smoke ${NOPE}\"").await?;
    b.client.find(Locator::Css("#form-check")).await?.click().await?;
    // The error is shown in the form, at the field it is about, with what was typed kept.
    let err = b.wait_css("#form-error").await?.text().await?;
    assert!(err.contains("unknown variable ${NOPE}") && err.contains("stages[1].tasks[1].command"), "{err}");
    let field = b.client.find(Locator::Css("#s1-t1-command")).await?;
    assert_eq!(field.attr("aria-invalid").await?.as_deref(), Some("true"));
    assert_eq!(field.prop("value").await?.as_deref(), Some("echo \"smoke ${NOPE}\""));
    b.screenshot("editor-form-error").await?;
    field.clear().await?;
    field.send_keys("echo smoke from the form").await?;
    b.screenshot("editor-form").await?;
    b.client.find(Locator::Css("#form-check")).await?.click().await?;
    let preview = b.wait_css("#preview").await?.text().await?;
    assert!(preview.contains("+   - type: run\n+     command: echo smoke from the form"), "{preview}");
    b.client.find(Locator::Css("#save")).await?.click().await?;
    b.wait_css(".board").await?;
    let p = admin.pipeline("shop").await?;
    assert_eq!(p.stages[1].tasks.len(), 2);
    assert!(
        matches!(&p.stages[1].tasks[1], drover_types::TaskSpec::Run { command: drover_types::CommandSpec::Shell(c), .. } if c == "echo smoke from the form")
    );
    assert!(matches!(p.stages[0].tasks[1], drover_types::TaskSpec::Approval { approvals: Some(1), .. }), "kept");
    b.close().await;
    s.shutdown().await;
    Ok(())
}
