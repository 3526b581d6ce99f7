//! The settings and inventory pages: client registrations (generate a secret, shown once, with a
//! Download button; regenerate with a grace period; revoke tokens; disable), signing keys
//! (rotate; upload a keystore with its alias and password), artifacts, environments and agents.
//! Thin like `pages`: the service layer decides.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::rbac::{AGENT_ROLE, BUILT_IN_ROLES, Privilege};
use drover_types::{
    ClientSecret, ClientUpdate, EnvironmentKind, NewAgent, NewClient, NewEnvironment, RegenerateSecret,
};

use super::admin::{Fields, checked, field, jwks, lines, listed};
use super::pages::{Chrome, chrome, when};
use super::{Viewer, back_to, multipart, render, service_error};
use crate::service;

pub struct ClientRow {
    pub id: String,
    pub roles: String,
    pub disabled: bool,
    pub kind: &'static str,
    pub rotated: String,
    pub grace_until: String,
    pub tokens_revoked: String,
    /// Built in (the CLI's and the portal's): no secret, not to be disabled from here.
    pub builtin: bool,
}

#[derive(Template)]
#[template(path = "portal/settings_clients.html")]
pub struct ClientsPage {
    pub chrome: Chrome,
    pub clients: Vec<ClientRow>,
    pub roles: Vec<&'static str>,
}

/// `GET /portal/settings/clients`.
pub async fn clients(v: Viewer) -> Response {
    let list = match service::clients::list(&v.ctx()).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let now = drover_types::Timestamp::now();
    let clients = list
        .into_iter()
        .map(|c| ClientRow {
            builtin: c.client_id == crate::oauth::CLI_CLIENT || c.client_id == crate::oauth::PORTAL_CLIENT,
            kind: if c.public {
                "public"
            } else if c.roles.iter().any(|r| r == AGENT_ROLE) {
                "agent"
            } else if !c.key_ids.is_empty() {
                "keys"
            } else {
                "confidential"
            },
            roles: c.roles.join(", "),
            disabled: c.disabled,
            rotated: c.secret_rotated_at.map(when).unwrap_or_default(),
            grace_until: c.previous_secret_valid_until.filter(|t| *t > now).map(when).unwrap_or_default(),
            tokens_revoked: c.tokens_not_before.map(when).unwrap_or_default(),
            id: c.client_id,
        })
        .collect();
    let roles = BUILT_IN_ROLES.iter().copied().filter(|r| *r != AGENT_ROLE).collect();
    render(StatusCode::OK, &ClientsPage { chrome: chrome(&v, "Client registrations"), clients, roles })
}

/// What the secret page offers to download: everything a client needs to get tokens.
#[derive(serde::Serialize)]
struct Download<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    issuer: &'a str,
    token_endpoint: String,
    revocation_endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_valid_until: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/client_secret.html")]
pub struct SecretPage {
    pub chrome: Chrome,
    pub client_id: String,
    pub secret: String,
    pub grace_until: String,
    pub json: String,
    pub filename: String,
}

fn secret_page(v: &Viewer, s: &crate::AppState, cs: ClientSecret) -> Response {
    let d = Download {
        client_id: &cs.client_id,
        client_secret: &cs.client_secret,
        issuer: &s.issuer,
        token_endpoint: format!("{}/oauth2/token", s.issuer),
        revocation_endpoint: format!("{}/oauth2/revoke", s.issuer),
        previous_secret_valid_until: cs.previous_secret_valid_until.map(|t| t.to_string()),
    };
    let json = serde_json::to_string_pretty(&d).unwrap_or_default();
    let page = SecretPage {
        chrome: chrome(v, format!("Client secret of {}", cs.client_id)),
        filename: format!("{}-client-secret.json", cs.client_id),
        grace_until: cs.previous_secret_valid_until.map(when).unwrap_or_default(),
        client_id: cs.client_id,
        secret: cs.client_secret,
        json,
    };
    render(StatusCode::OK, &page)
}

/// `POST /portal/settings/clients`: a new confidential client and its secret, shown once.
pub async fn create_client(
    axum::extract::State(s): axum::extract::State<crate::AppState>,
    v: Viewer,
    Form(f): Form<Vec<(String, String)>>,
) -> Response {
    let mut roles = checked(&f, "role");
    roles.extend(listed(&f, "custom_roles"));
    let jwks = match jwks(&f) {
        Ok(j) => j,
        Err(e) => return service_error(e),
    };
    let n = NewClient {
        name: field(&f, "name"),
        roles,
        redirect_uris: lines(&f, "redirect_uris"),
        public: !field(&f, "public").is_empty(),
        jwks,
    };
    match service::clients::create(&v.ctx(), n).await {
        // Public clients and clients with keys have no secret to show.
        Ok(cs) if cs.client_secret.is_empty() => Redirect::to("/portal/settings/clients").into_response(),
        Ok(cs) => secret_page(&v, &s, cs),
        Err(e) => service_error(e),
    }
}

#[derive(serde::Deserialize)]
pub struct GraceForm {
    #[serde(default)]
    grace_secs: u64,
}

/// `POST /portal/settings/clients/{name}/regenerate-secret`.
pub async fn regenerate(
    axum::extract::State(s): axum::extract::State<crate::AppState>,
    v: Viewer,
    Path(name): Path<String>,
    Form(f): Form<GraceForm>,
) -> Response {
    match service::clients::regenerate_secret(&v.ctx(), &name, RegenerateSecret { grace_secs: f.grace_secs }).await {
        Ok(cs) => secret_page(&v, &s, cs),
        Err(e) => service_error(e),
    }
}

/// `POST /portal/settings/clients/{name}/revoke-tokens`.
pub async fn revoke_tokens(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::clients::revoke_tokens(&v.ctx(), &name).await, "/portal/settings/clients")
}

async fn set_disabled(v: Viewer, name: &str, disabled: bool) -> Response {
    let u = ClientUpdate { disabled: Some(disabled), ..Default::default() };
    back_to(service::clients::update(&v.ctx(), name, u).await, "/portal/settings/clients")
}

/// `POST /portal/settings/clients/{name}/disable`.
pub async fn disable(v: Viewer, Path(name): Path<String>) -> Response {
    set_disabled(v, &name, true).await
}

/// `POST /portal/settings/clients/{name}/enable`.
pub async fn enable(v: Viewer, Path(name): Path<String>) -> Response {
    set_disabled(v, &name, false).await
}

pub struct KeyRow {
    pub kid: String,
    pub alg: String,
    pub active: bool,
    pub created: String,
    pub retired: String,
    pub in_jwks: bool,
    /// The certificate's subject and end of validity, empty for a key without one.
    pub certificate: String,
    /// Expired, or expiring within 30 days: shown as a warning.
    pub cert_warning: String,
}

/// What a key's certificate says of its renewal: empty when not due within 30 days.
fn renewal(not_after: drover_types::Timestamp, now: drover_types::Timestamp) -> String {
    let days = (not_after.0 - now.0).div_euclid(86_400_000);
    match days {
        _ if not_after <= now => "expired".into(),
        0 => "expires today".into(),
        1 => "expires tomorrow".into(),
        d if d < 30 => format!("expires in {d} days"),
        _ => String::new(),
    }
}

#[derive(Template)]
#[template(path = "portal/settings_keys.html")]
pub struct KeysPage {
    pub chrome: Chrome,
    pub keys: Vec<KeyRow>,
    pub imported: Option<service::keys::Imported>,
    pub imported_until: String,
}

async fn keys_page(v: &Viewer, imported: Option<service::keys::Imported>) -> Response {
    let list = match service::keys::list(&v.ctx()).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let keys = list
        .into_iter()
        .map(|k| KeyRow {
            kid: k.kid,
            alg: k.alg,
            active: k.active,
            created: when(k.created_at),
            // A retired key stays published until the last token it signed has expired.
            retired: k
                .retired_at
                .map(|t| {
                    let gone = t
                        .plus(crate::oauth::ACCESS_TOKEN_TTL)
                        .plus(std::time::Duration::from_secs(crate::oauth::CLOCK_SKEW_SECS));
                    format!("{} (in the JWKS until {})", when(t), when(gone))
                })
                .unwrap_or_default(),
            in_jwks: k.in_jwks,
            certificate: k
                .certificate
                .as_ref()
                .map(|c| format!("{}, valid until {}", c.subject, when(c.not_after)))
                .unwrap_or_default(),
            cert_warning: k
                .certificate
                .map(|c| renewal(c.not_after, drover_types::Timestamp::now()))
                .unwrap_or_default(),
        })
        .collect();
    let imported_until =
        imported.as_ref().and_then(|i| i.certificate.as_ref()).map(|c| when(c.not_after)).unwrap_or_default();
    render(StatusCode::OK, &KeysPage { chrome: chrome(v, "Signing keys"), keys, imported, imported_until })
}

/// `GET /portal/settings/keys`.
pub async fn keys(v: Viewer) -> Response {
    keys_page(&v, None).await
}

#[derive(serde::Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    alg: String,
}

/// `POST /portal/settings/keys/rotate`.
pub async fn rotate(v: Viewer, Form(f): Form<RotateForm>) -> Response {
    let alg = Some(f.alg.trim()).filter(|a| !a.is_empty());
    back_to(service::keys::rotate(&v.ctx(), alg).await, "/portal/settings/keys")
}

/// `POST /portal/settings/keys/import` (`multipart/form-data`: the keystore file, its alias and
/// password, the algorithm for RSA keys, whether to make it the active key).
pub async fn import(v: Viewer, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|h| h.to_str().ok()).unwrap_or("");
    let Some(parts) = multipart::boundary(ct).and_then(|b| multipart::parse(&body, &b)) else {
        return service_error(drover_core::Error::BadRequest("send the form as multipart/form-data".into()));
    };
    let file = parts
        .iter()
        .find(|p| p.name == "keystore" && p.filename.is_some())
        .map(|p| p.data.as_slice())
        .unwrap_or_default();
    let alias = multipart::text(&parts, "alias").unwrap_or("").to_string();
    let password = multipart::text(&parts, "password").filter(|p| !p.is_empty()).map(String::from);
    let alg = multipart::text(&parts, "alg").map(str::trim).filter(|a| !a.is_empty()).map(String::from);
    let activate = multipart::text(&parts, "activate").is_some();
    let r = service::keys::import_keystore(&v.ctx(), file, &alias, password.as_deref(), alg.as_deref(), activate).await;
    match r {
        Ok(imported) => keys_page(&v, Some(imported)).await,
        Err(e) => service_error(e),
    }
}

pub struct ArtifactRow {
    pub application: String,
    pub version: String,
    pub sha256: String,
    pub size: String,
    pub by: String,
    pub at: String,
}

#[derive(Template)]
#[template(path = "portal/artifacts.html")]
pub struct ArtifactsPage {
    pub chrome: Chrome,
    pub rows: Vec<ArtifactRow>,
    pub total: usize,
}

fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// `GET /portal/artifacts`: the newest 500 versions the caller may see.
pub async fn artifacts(v: Viewer) -> Response {
    let mut list = match service::artifacts::list(&v.ctx(), None).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    list.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    let total = list.len();
    let rows = list
        .into_iter()
        .take(500)
        .map(|a| ArtifactRow {
            size: size(a.size),
            by: a.created_by,
            at: when(a.created_at),
            application: a.application,
            version: a.version,
            sha256: a.sha256,
        })
        .collect();
    render(StatusCode::OK, &ArtifactsPage { chrome: chrome(&v, "Artifacts"), rows, total })
}

pub struct EnvRow {
    pub name: String,
    pub kind: &'static str,
    pub applications: String,
    pub agents: Vec<AgentRow>,
}

pub struct AgentRow {
    pub name: String,
    pub running: Vec<String>,
    pub online: bool,
    pub last_seen: String,
    pub version: String,
    pub labels: String,
    /// A label value the text field cannot carry as it is (a comma, spaces around it): shown,
    /// not editable here.
    pub labels_locked: bool,
    /// Waiting for approval: it gets no work.
    pub pending: bool,
    /// What it reported: `task-user`, `none`, or not yet.
    pub isolation: String,
}

#[derive(Template)]
#[template(path = "portal/environments.html")]
pub struct EnvironmentsPage {
    pub chrome: Chrome,
    pub envs: Vec<EnvRow>,
    pub agents_visible: bool,
    pub variables: bool,
    /// `environment.manage`: the environment forms.
    pub manage_environments: bool,
    /// `agent.manage`: register, relabel and remove agents.
    pub manage_agents: bool,
    /// `variable.manage`: approve pending agents.
    pub approve_agents: bool,
    pub kinds: Vec<&'static str>,
    /// The environment form, filled in for a change (`?environment=NAME`) or empty.
    pub form_name: String,
    pub form_kind: String,
    pub form_applications: String,
}

#[derive(serde::Deserialize)]
pub struct EnvQuery {
    #[serde(default)]
    environment: Option<String>,
}

/// `GET /portal/environments`: environments, and their agents for holders of `agent.read`.
pub async fn environments(v: Viewer, Query(q): Query<EnvQuery>) -> Response {
    let c = v.ctx();
    let envs = match service::environments::list(&c).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let agents_visible = v.principal.holds_globally(Privilege::AgentRead);
    let (agents, mut running) = if agents_visible {
        match (service::agents::list(&c).await, service::agents::running(&c).await) {
            (Ok(a), Ok(r)) => (a, r),
            (Err(e), _) | (_, Err(e)) => return service_error(e),
        }
    } else {
        (Vec::new(), Default::default())
    };
    let editing = q.environment.as_deref().and_then(|n| envs.iter().find(|e| e.name == n));
    let (form_name, form_kind, form_applications) =
        editing.map(|e| (e.name.clone(), e.kind.as_str().to_string(), e.applications.join(", "))).unwrap_or_default();
    let envs = envs
        .into_iter()
        .map(|e| EnvRow {
            kind: e.kind.as_str(),
            applications: if e.applications.is_empty() { "any".into() } else { e.applications.join(", ") },
            agents: agents
                .iter()
                .filter(|a| a.environment == e.name)
                .map(|a| AgentRow {
                    running: running.remove(&a.name).unwrap_or_default(),
                    name: a.name.clone(),
                    online: a.online,
                    last_seen: a.last_seen_at.map(when).unwrap_or_else(|| "never".into()),
                    version: a.version.clone().unwrap_or_else(|| "not reported yet".into()),
                    labels: a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
                    labels_locked: a.labels.values().any(|v| v.contains(',') || v.trim() != v),
                    pending: a.status == drover_types::AgentStatus::Pending,
                    isolation: a.isolation.clone().unwrap_or_else(|| "not reported yet".into()),
                })
                .collect(),
            name: e.name,
        })
        .collect();
    let variables = v.principal.holds_globally(Privilege::VariableRead);
    let page = EnvironmentsPage {
        chrome: chrome(&v, "Environments and agents"),
        envs,
        agents_visible,
        variables,
        manage_environments: v.principal.holds_globally(Privilege::EnvironmentManage),
        manage_agents: v.principal.holds_globally(Privilege::AgentManage),
        approve_agents: v.principal.holds_globally(Privilege::VariableManage),
        kinds: EnvironmentKind::ALL.iter().map(|k| k.as_str()).collect(),
        form_name,
        form_kind,
        form_applications,
    };
    render(StatusCode::OK, &page)
}

const ENVIRONMENTS: &str = "/portal/environments";

/// `name=value` pairs separated by commas or new lines.
fn labels(text: &str) -> drover_core::Result<std::collections::BTreeMap<String, String>> {
    super::form::pairs_of(text, true).map_err(|e| drover_core::Error::BadRequest(format!("labels: {e}")))
}

/// `POST /portal/environments`: adds an environment, or changes the one of that name (its kind,
/// the applications it accepts: empty for any).
pub async fn save_environment(v: Viewer, Form(f): Form<Fields>) -> Response {
    let c = v.ctx();
    let name = field(&f, "name");
    let kind = match field(&f, "kind") {
        k if k.is_empty() => None,
        k => match EnvironmentKind::parse(&k) {
            Some(k) => Some(k),
            None => return service_error(drover_core::Error::BadRequest(format!("unknown kind {k:?}"))),
        },
    };
    let applications = listed(&f, "applications");
    let r = match service::environments::get(&c, &name).await {
        Ok(old) => {
            let e =
                NewEnvironment { name: name.clone(), kind: kind.or(Some(old.kind)), labels: old.labels, applications };
            service::environments::update(&c, &name, e).await
        }
        Err(drover_core::Error::NotFound(_)) => {
            service::environments::create(&c, NewEnvironment { name, kind, labels: Default::default(), applications })
                .await
        }
        Err(e) => Err(e),
    };
    back_to(r, ENVIRONMENTS)
}

/// `POST /portal/environments/{name}/delete`: one no pipeline targets and no agent serves.
pub async fn delete_environment(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::environments::delete(&v.ctx(), &name).await, ENVIRONMENTS)
}

#[derive(Template)]
#[template(path = "portal/agent_secret.html")]
pub struct AgentSecretPage {
    pub chrome: Chrome,
    pub name: String,
    pub environment: String,
    pub secret: String,
    pub url: String,
    /// It waits for approval before it gets work.
    pub pending: bool,
}

/// `POST /portal/agents`: registers an agent; its secret is shown once, with a Download button
/// that saves the file `drover agent --secret-file` reads.
pub async fn add_agent(
    axum::extract::State(s): axum::extract::State<crate::AppState>,
    v: Viewer,
    Form(f): Form<Fields>,
) -> Response {
    let labels = match labels(&field(&f, "labels")) {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let jwks = match jwks(&f) {
        Ok(j) => j,
        Err(e) => return service_error(e),
    };
    let n = NewAgent { name: field(&f, "name"), environment: field(&f, "environment"), labels, jwks };
    match service::agents::create(&v.ctx(), n).await {
        // An agent with keys signs in with them: there is no secret to show.
        Ok(cred) if cred.secret.is_empty() => Redirect::to(ENVIRONMENTS).into_response(),
        Ok(cred) => render(
            StatusCode::OK,
            &AgentSecretPage {
                chrome: chrome(&v, format!("Agent {}", cred.name)),
                name: cred.name,
                environment: cred.environment,
                pending: cred.status == drover_types::AgentStatus::Pending,
                secret: cred.secret,
                url: s.issuer.clone(),
            },
        ),
        Err(e) => service_error(e),
    }
}

/// `POST /portal/agents/{name}/labels`: replaces an agent's labels (fleet stages select by them).
pub async fn set_agent_labels(v: Viewer, Path(name): Path<String>, Form(f): Form<Fields>) -> Response {
    let r = match labels(&field(&f, "labels")) {
        Ok(l) => service::agents::set_labels(&v.ctx(), &name, l).await,
        Err(e) => Err(e),
    };
    back_to(r, ENVIRONMENTS)
}

/// `POST /portal/agents/{name}/approve`: a pending agent gets work from now on.
pub async fn approve_agent(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::agents::approve(&v.ctx(), &name).await, ENVIRONMENTS)
}

/// `POST /portal/agents/{name}/delete`: removes the agent and its client; its tasks in flight end
/// in `error`.
pub async fn delete_agent(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::agents::delete(&v.ctx(), &name).await, ENVIRONMENTS)
}
