//! Administration pages: environments' variables (secret values write-only), operators, roles
//! and access groups, authentication profiles, the CORS policy (read-only: it lives in
//! `[http.cors]`) and system status. Thin like `pages`: the service layer decides.

use askama::Template;
use axum::extract::{Form, Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use drover_core::rbac::{AGENT_ROLE, BUILT_IN_ROLES, Privilege};
use drover_types::{AccessGroup, AuthProfile, NewOperator, OperatorUpdate, PasswordChange, Role, SetVariable};
use serde::Deserialize;

use super::pages::{Chrome, chrome, when};
use super::{Viewer, back_to, render, service_error};
use crate::service;

/// A submitted form's fields in order (checkboxes repeat their name).
pub(super) type Fields = Vec<(String, String)>;

/// The trimmed value of a field, empty when absent.
pub(super) fn field(f: &Fields, name: &str) -> String {
    f.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim().to_string()).unwrap_or_default()
}

/// The values of a repeated field (checkboxes).
pub(super) fn checked(f: &Fields, name: &str) -> Vec<String> {
    f.iter().filter(|(n, _)| n == name).map(|(_, v)| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
}

/// A list typed in one field: names separated by commas, spaces or new lines.
pub(super) fn listed(f: &Fields, name: &str) -> Vec<String> {
    field(f, name).split(|c: char| c == ',' || c.is_whitespace()).filter(|x| !x.is_empty()).map(String::from).collect()
}

/// A field's non-empty lines, trimmed (URLs one per line).
pub(super) fn lines(f: &Fields, name: &str) -> Vec<String> {
    field(f, name).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
}

/// A field holding a JWKS: none when empty, a 400 when it is not JSON.
pub(super) fn jwks(f: &Fields) -> drover_core::Result<Option<serde_json::Value>> {
    match field(f, "jwks") {
        j if j.is_empty() => Ok(None),
        j => serde_json::from_str(&j)
            .map(Some)
            .map_err(|e| drover_core::Error::BadRequest(format!("the JWKS is not JSON: {e}"))),
    }
}

fn optional(f: &Fields, name: &str) -> Option<String> {
    Some(field(f, name)).filter(|v| !v.is_empty())
}

/// The roles an operator or group can be given here: the built-in ones and, for holders of
/// `role.manage`, the custom ones.
async fn role_names(v: &Viewer) -> Vec<String> {
    let mut names: Vec<String> = BUILT_IN_ROLES.iter().filter(|r| **r != AGENT_ROLE).map(|r| r.to_string()).collect();
    if v.principal.holds_globally(Privilege::RoleManage)
        && let Ok(roles) = service::access::list_roles(&v.ctx()).await
    {
        names.extend(roles.into_iter().filter(|r| !r.built_in).map(|r| r.name));
    }
    names
}

/// A checkbox of a list: its value and whether it is ticked.
pub struct Choice {
    pub value: String,
    pub checked: bool,
}

fn choices(all: impl IntoIterator<Item = String>, ticked: &[String]) -> Vec<Choice> {
    let mut out: Vec<Choice> = all.into_iter().map(|v| Choice { checked: ticked.contains(&v), value: v }).collect();
    // What is held but not offered (a role deleted meanwhile) stays visible, ticked.
    for t in ticked {
        if !out.iter().any(|c| &c.value == t) {
            out.push(Choice { value: t.clone(), checked: true });
        }
    }
    out
}

pub struct VarRow {
    pub name: String,
    pub secret: bool,
    /// Plain values only; a secret shows whether it is set, never its value.
    pub value: String,
}

#[derive(Template)]
#[template(path = "portal/variables.html")]
pub struct VariablesPage {
    pub chrome: Chrome,
    pub environment: String,
    pub rows: Vec<VarRow>,
    pub may_manage: bool,
}

/// `GET /portal/environments/{name}/variables`.
pub async fn variables(v: Viewer, Path(env): Path<String>) -> Response {
    let list = match service::variables::list(&v.ctx(), &env).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let rows = list
        .into_iter()
        .map(|x| VarRow {
            value: if x.secret {
                if x.has_value { "•••••• (set)".into() } else { "(not set)".into() }
            } else {
                x.value.unwrap_or_default()
            },
            secret: x.secret,
            name: x.name,
        })
        .collect();
    let may_manage = v.principal.holds_globally(drover_core::rbac::Privilege::VariableManage);
    let page = VariablesPage { chrome: chrome(&v, format!("Variables of {env}")), environment: env, rows, may_manage };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct VariableForm {
    name: String,
    value: String,
    #[serde(default)]
    secret: Option<String>,
}

/// `POST /portal/environments/{name}/variables`: set one (a secret's value is write-only).
pub async fn set_variable(v: Viewer, Path(env): Path<String>, Form(f): Form<VariableForm>) -> Response {
    let set = SetVariable { value: f.value, secret: f.secret.is_some() };
    back_to(
        service::variables::set(&v.ctx(), &env, f.name.trim(), set).await,
        &format!("/portal/environments/{env}/variables"),
    )
}

/// `POST /portal/environments/{name}/variables/{variable}/delete`.
pub async fn delete_variable(v: Viewer, Path((env, name)): Path<(String, String)>) -> Response {
    back_to(service::variables::delete(&v.ctx(), &env, &name).await, &format!("/portal/environments/{env}/variables"))
}

pub struct OperatorRow {
    pub name: String,
    pub email: String,
    pub roles: String,
    pub disabled: bool,
    pub locked_until: String,
    pub created: String,
}

#[derive(Template)]
#[template(path = "portal/operators.html")]
pub struct OperatorsPage {
    pub chrome: Chrome,
    pub rows: Vec<OperatorRow>,
    pub roles: Vec<String>,
    /// A password generated for a new operator, shown this once.
    pub created: Option<(String, String)>,
}

async fn operators_page(v: &Viewer, created: Option<(String, String)>) -> Response {
    let list = match service::operators::list(&v.ctx()).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let now = drover_types::Timestamp::now();
    let rows = list
        .into_iter()
        .map(|o| OperatorRow {
            email: o.email.unwrap_or_default(),
            roles: o.roles.join(", "),
            disabled: o.disabled,
            locked_until: o.locked_until.filter(|t| *t > now).map(when).unwrap_or_default(),
            created: when(o.created_at),
            name: o.name,
        })
        .collect();
    let roles = role_names(v).await;
    render(StatusCode::OK, &OperatorsPage { chrome: chrome(v, "Operators"), rows, roles, created })
}

/// `GET /portal/settings/operators`.
pub async fn operators(v: Viewer) -> Response {
    operators_page(&v, None).await
}

/// `POST /portal/settings/operators`: a new operator; without a password, one is generated and
/// shown once.
pub async fn create_operator(v: Viewer, Form(f): Form<Vec<(String, String)>>) -> Response {
    let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim().to_string()).unwrap_or_default();
    let roles = f.iter().filter(|(k, _)| k == "role").map(|(_, v)| v.clone()).collect();
    let email = Some(get("email")).filter(|e| !e.is_empty());
    let password = f.iter().find(|(n, _)| n == "password").map(|(_, v)| v.clone()).filter(|p| !p.is_empty());
    let n = NewOperator { name: get("name"), email, roles, password };
    match service::operators::create(&v.ctx(), n).await {
        Ok(created) => operators_page(&v, created.password.map(|p| (created.operator.name, p))).await,
        Err(e) => service_error(e),
    }
}

#[derive(Template)]
#[template(path = "portal/operator.html")]
pub struct OperatorPage {
    pub chrome: Chrome,
    pub name: String,
    pub email: String,
    pub roles: Vec<Choice>,
    pub disabled: bool,
    /// Said after a change: what was done.
    pub done: String,
}

async fn operator_page(v: &Viewer, name: &str, done: &str) -> Response {
    let o = match service::operators::get(&v.ctx(), name).await {
        Ok(o) => o,
        Err(e) => return service_error(e),
    };
    let page = OperatorPage {
        chrome: chrome(v, format!("Operator {}", o.name)),
        roles: choices(role_names(v).await, &o.roles),
        email: o.email.unwrap_or_default(),
        disabled: o.disabled,
        name: o.name,
        done: done.into(),
    };
    render(StatusCode::OK, &page)
}

/// `GET /portal/settings/operators/{name}`: change an operator's roles, e-mail or password.
pub async fn operator(v: Viewer, Path(name): Path<String>) -> Response {
    operator_page(&v, &name, "").await
}

/// `POST /portal/settings/operators/{name}`: the roles (as ticked: none ticked, none held) and
/// the e-mail. A grant never exceeds what the giver holds (the service checks).
pub async fn update_operator(v: Viewer, Path(name): Path<String>, Form(f): Form<Fields>) -> Response {
    // Only what the form sent changes: roles when its role list was on it (no box ticked then
    // means no role), the e-mail when its field was.
    let sent = |k: &str| f.iter().any(|(n, _)| n == k);
    let u = OperatorUpdate {
        roles: sent("roles_shown").then(|| checked(&f, "role")),
        email: sent("email").then(|| field(&f, "email")),
        disabled: None,
    };
    match service::operators::update(&v.ctx(), &name, u).await {
        Ok(_) => operator_page(&v, &name, "Saved.").await,
        Err(e) => service_error(e),
    }
}

/// `POST /portal/settings/operators/{name}/password`: a new password; it ends their sessions.
pub async fn set_password(v: Viewer, Path(name): Path<String>, Form(f): Form<Fields>) -> Response {
    let password = f.iter().find(|(n, _)| n == "password").map(|(_, p)| p.clone()).unwrap_or_default();
    match service::operators::set_password(&v.ctx(), &name, PasswordChange { password }).await {
        Ok(()) => operator_page(&v, &name, "Password changed; their sessions have ended.").await,
        Err(e) => service_error(e),
    }
}

async fn operator_action(v: Viewer, name: &str, what: &str) -> Response {
    let c = v.ctx();
    let r = match what {
        "disable" | "enable" => {
            let u = OperatorUpdate { disabled: Some(what == "disable"), ..Default::default() };
            service::operators::update(&c, name, u).await.map(|_| ())
        }
        "unlock" => service::operators::unlock(&c, name).await.map(|_| ()),
        _ => service::operators::revoke_sessions(&c, name).await,
    };
    back_to(r, "/portal/settings/operators")
}

macro_rules! operator_page {
    ($($f:ident => $what:literal),+ $(,)?) => {$(
        pub async fn $f(v: Viewer, Path(name): Path<String>) -> Response {
            operator_action(v, &name, $what).await
        }
    )+};
}

operator_page!(disable_operator => "disable", enable_operator => "enable", unlock_operator => "unlock", revoke_sessions => "revoke-sessions");

pub struct RoleRow {
    pub name: String,
    pub built_in: bool,
    pub privileges: String,
    pub description: String,
}

pub struct GroupRow {
    pub name: String,
    pub roles: String,
    pub members: String,
    pub applications: String,
    pub not_conferred: String,
}

/// The role or group forms, filled in for a change (`?role=NAME`, `?group=NAME`) or empty.
pub struct RoleForm {
    pub name: String,
    pub description: String,
    pub privileges: Vec<Choice>,
}

pub struct GroupForm {
    pub name: String,
    pub roles: Vec<Choice>,
    pub operators: String,
    pub clients: String,
    pub applications: String,
}

#[derive(Template)]
#[template(path = "portal/access.html")]
pub struct AccessPage {
    pub chrome: Chrome,
    pub roles: Vec<RoleRow>,
    pub groups: Vec<GroupRow>,
    pub role_form: RoleForm,
    pub group_form: GroupForm,
}

#[derive(Deserialize)]
pub struct AccessQuery {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    group: Option<String>,
}

/// `GET /portal/settings/access`: roles and access groups, and the forms to add or change them.
pub async fn access(v: Viewer, Query(q): Query<AccessQuery>) -> Response {
    let c = v.ctx();
    let (roles, groups) = match (service::access::list_roles(&c).await, service::access::list_groups(&c).await) {
        (Ok(r), Ok(g)) => (r, g),
        (Err(e), _) | (_, Err(e)) => return service_error(e),
    };
    let editing_role = q.role.as_deref().and_then(|n| roles.iter().find(|r| r.name == n && !r.built_in));
    let role_form = RoleForm {
        name: editing_role.map(|r| r.name.clone()).unwrap_or_default(),
        description: editing_role.and_then(|r| r.description.clone()).unwrap_or_default(),
        privileges: choices(
            Privilege::ALL.iter().filter(|p| **p != Privilege::AgentWork).map(|p| p.as_str().to_string()),
            editing_role.map(|r| r.privileges.as_slice()).unwrap_or_default(),
        ),
    };
    let editing_group = q.group.as_deref().and_then(|n| groups.iter().find(|g| g.name == n));
    let group_form = GroupForm {
        name: editing_group.map(|g| g.name.clone()).unwrap_or_default(),
        roles: choices(
            roles.iter().map(|r| r.name.clone()),
            editing_group.map(|g| g.roles.as_slice()).unwrap_or_default(),
        ),
        operators: editing_group.map(|g| g.operators.join(", ")).unwrap_or_default(),
        clients: editing_group.map(|g| g.clients.join(", ")).unwrap_or_default(),
        applications: editing_group.map(|g| g.applications.join(", ")).unwrap_or_default(),
    };
    let roles = roles
        .into_iter()
        .map(|r| RoleRow {
            built_in: r.built_in,
            privileges: r.privileges.join(", "),
            description: r.description.unwrap_or_default(),
            name: r.name,
        })
        .collect();
    let groups = groups
        .into_iter()
        .map(|g| {
            let mut members: Vec<String> = g.operators.iter().map(|o| format!("operator {o}")).collect();
            members.extend(g.clients.iter().map(|c| format!("client {c}")));
            GroupRow {
                roles: g.roles.join(", "),
                members: members.join(", "),
                applications: if g.applications.is_empty() {
                    "every application".into()
                } else {
                    g.applications.join(", ")
                },
                not_conferred: g.ineffective_privileges.join(", "),
                name: g.name,
            }
        })
        .collect();
    let page = AccessPage { chrome: chrome(&v, "Roles and access groups"), roles, groups, role_form, group_form };
    render(StatusCode::OK, &page)
}

const ACCESS: &str = "/portal/settings/access";

/// `POST /portal/settings/roles`: adds a custom role, or replaces the one of that name (never
/// beyond the privileges the caller holds).
pub async fn save_role(v: Viewer, Form(f): Form<Fields>) -> Response {
    let name = field(&f, "name");
    let r = Role {
        name: name.clone(),
        privileges: checked(&f, "privilege"),
        built_in: false,
        description: optional(&f, "description"),
    };
    back_to(service::access::put_role(&v.ctx(), &name, r).await, ACCESS)
}

/// `POST /portal/settings/roles/{name}/delete`: a custom role nobody holds.
pub async fn delete_role(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::access::delete_role(&v.ctx(), &name).await, ACCESS)
}

/// `POST /portal/settings/access-groups`: adds an access group, or replaces the one of that name.
pub async fn save_group(v: Viewer, Form(f): Form<Fields>) -> Response {
    let name = field(&f, "name");
    let g = AccessGroup {
        name: name.clone(),
        roles: checked(&f, "role"),
        operators: listed(&f, "operators"),
        clients: listed(&f, "clients"),
        applications: listed(&f, "applications"),
        ineffective_privileges: vec![],
    };
    back_to(service::access::put_group(&v.ctx(), &name, g).await, ACCESS)
}

/// `POST /portal/settings/access-groups/{name}/delete`.
pub async fn delete_group(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::access::delete_group(&v.ctx(), &name).await, ACCESS)
}

pub struct ProfileRow {
    pub name: String,
    pub kind: String,
    pub who: String,
    pub environment: String,
    pub allowed_urls: String,
    pub has_secret: bool,
}

/// The profile form, filled in for a change (`?profile=NAME`; never the secret) or empty.
#[derive(Default)]
pub struct ProfileForm {
    pub name: String,
    pub kind: String,
    pub username: String,
    pub client_id: String,
    pub token_endpoint: String,
    pub scope: String,
    pub revocation_endpoint: String,
    pub ca_file: String,
    pub environment: String,
    pub allowed_urls: String,
    pub has_secret: bool,
}

#[derive(Template)]
#[template(path = "portal/profiles.html")]
pub struct ProfilesPage {
    pub chrome: Chrome,
    pub rows: Vec<ProfileRow>,
    pub form: ProfileForm,
    pub kinds: [&'static str; 3],
}

#[derive(Deserialize)]
pub struct ProfileQuery {
    #[serde(default)]
    profile: Option<String>,
}

/// `GET /portal/settings/auth-profiles`: the credentials the orchestrator uses to call other
/// systems (secrets never shown), and the form to add or change one.
pub async fn profiles(v: Viewer, Query(q): Query<ProfileQuery>) -> Response {
    let list = match service::profiles::list(&v.ctx()).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
    let form = q
        .profile
        .as_deref()
        .and_then(|n| list.iter().find(|p| p.name == n))
        .map(|p| ProfileForm {
            name: p.name.clone(),
            kind: p.kind.clone(),
            username: p.username.clone().unwrap_or_default(),
            client_id: p.client_id.clone().unwrap_or_default(),
            token_endpoint: p.token_endpoint.clone().unwrap_or_default(),
            scope: p.scope.clone().unwrap_or_default(),
            revocation_endpoint: p.revocation_endpoint.clone().unwrap_or_default(),
            ca_file: p.ca_file.clone().unwrap_or_default(),
            environment: p.environment.clone().unwrap_or_default(),
            allowed_urls: p.allowed_urls.join("\n"),
            has_secret: p.has_secret,
        })
        .unwrap_or_default();
    let rows = list
        .into_iter()
        .map(|p| ProfileRow {
            who: p.username.or(p.client_id).unwrap_or_default(),
            environment: p.environment.unwrap_or_else(|| "shared".into()),
            allowed_urls: p.allowed_urls.join(", "),
            has_secret: p.has_secret,
            kind: p.kind,
            name: p.name,
        })
        .collect();
    let kinds = ["basic", "bearer", "oauth2-client-credentials"];
    render(StatusCode::OK, &ProfilesPage { chrome: chrome(&v, "Authentication profiles"), rows, form, kinds })
}

const PROFILES: &str = "/portal/settings/auth-profiles";

/// `POST /portal/settings/auth-profiles`: adds a profile or replaces the one of that name; an
/// empty secret keeps the stored one (secrets are write-only).
pub async fn save_profile(v: Viewer, Form(f): Form<Fields>) -> Response {
    let name = field(&f, "name");
    let p = AuthProfile {
        name: name.clone(),
        kind: field(&f, "kind"),
        username: optional(&f, "username"),
        client_id: optional(&f, "client_id"),
        token_endpoint: optional(&f, "token_endpoint"),
        scope: optional(&f, "scope"),
        revocation_endpoint: optional(&f, "revocation_endpoint"),
        ca_file: optional(&f, "ca_file"),
        environment: optional(&f, "environment"),
        allowed_urls: lines(&f, "allowed_urls"),
        has_secret: false,
        secret: f.iter().find(|(n, _)| n == "secret").map(|(_, s)| s.clone()).filter(|s| !s.is_empty()),
    };
    back_to(service::profiles::put(&v.ctx(), &name, p).await, PROFILES)
}

/// `POST /portal/settings/auth-profiles/{name}/delete`.
pub async fn delete_profile(v: Viewer, Path(name): Path<String>) -> Response {
    back_to(service::profiles::delete(&v.ctx(), &name).await, PROFILES)
}

/// A table of the system page: columns from the rows' fields, in their order.
pub struct SysTable {
    pub title: &'static str,
    /// `nodes` and `caches` rows get their actions.
    pub kind: &'static str,
    pub columns: Vec<String>,
    pub rows: Vec<SysRow>,
}

pub struct SysRow {
    /// The node id or cache name the row's actions are for.
    pub key: String,
    pub cells: Vec<String>,
    pub draining: bool,
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An array of objects as a table.
fn sys_table(title: &'static str, kind: &'static str, key: &str, v: &serde_json::Value) -> SysTable {
    let items = v.as_array().cloned().unwrap_or_default();
    let mut columns: Vec<String> = Vec::new();
    for it in &items {
        for k in it.as_object().into_iter().flat_map(|o| o.keys()) {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let rows = items
        .iter()
        .map(|it| SysRow {
            key: cell(&it[key]),
            cells: columns.iter().map(|c| cell(&it[c.as_str()])).collect(),
            draining: it["draining"].as_bool().unwrap_or(false),
        })
        .collect();
    SysTable { title, kind, columns, rows }
}

#[derive(Template)]
#[template(path = "portal/system.html")]
pub struct SystemPage {
    pub chrome: Chrome,
    pub origins: Vec<String>,
    pub methods: String,
    pub headers: String,
    pub credentials: bool,
    pub max_age: u64,
    pub tables: Vec<SysTable>,
    /// `system.manage`: drain, clear a cache, resize the pool.
    pub manage: bool,
    pub pool_resizable: bool,
    pub pool_max: String,
}

/// `GET /portal/system`: nodes, queues, caches, pools (as the SysOps API gives them) with their
/// levers for `system.manage`, and the CORS policy, read-only.
pub async fn system(v: Viewer) -> Response {
    let c = v.ctx();
    let (nodes, queues, caches, pools) = match (
        service::system::nodes(&c).await,
        service::system::queues(&c).await,
        service::system::caches(&c).await,
        service::system::pools(&c).await,
    ) {
        (Ok(n), Ok(q), Ok(ca), Ok(p)) => (n, q, ca, p),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (_, _, _, Err(e)) => return service_error(e),
    };
    let db = pools.as_array().and_then(|a| a.iter().find(|p| p["name"] == "database")).cloned().unwrap_or_default();
    let active: serde_json::Value = queues["active_deployments"]
        .as_object()
        .map(|m| m.iter().map(|(k, n)| serde_json::json!({"status": k, "deployments": n})).collect())
        .unwrap_or_default();
    let tables = vec![
        sys_table("Nodes", "nodes", "id", &nodes),
        sys_table("Ready tasks per environment", "", "environment", &queues["environments"]),
        sys_table("Active deployments", "", "status", &active),
        sys_table("Caches (this node)", "caches", "name", &caches),
        sys_table("Pools (this node)", "", "name", &pools),
    ];
    let cors = &c.state.cors;
    let page = SystemPage {
        chrome: chrome(&v, "System"),
        origins: cors.allowed_origins.clone(),
        methods: cors.allowed_methods.join(", "),
        headers: cors.allowed_headers.join(", "),
        credentials: cors.allow_credentials,
        max_age: cors.max_age_secs,
        tables,
        manage: v.principal.holds_globally(Privilege::SystemManage),
        pool_resizable: db["resizable"].as_bool().unwrap_or(false),
        pool_max: cell(&db["max"]),
    };
    render(StatusCode::OK, &page)
}

const SYSTEM: &str = "/portal/system";

/// `POST /portal/system/drain`: `node` and `drain` (`1`: stop handing out new work; `0`: resume).
pub async fn drain(v: Viewer, Form(f): Form<Fields>) -> Response {
    back_to(service::system::drain(&v.ctx(), &field(&f, "node"), field(&f, "drain") == "1").await, SYSTEM)
}

/// `POST /portal/system/clear-cache`: empties a cache of the node answering.
pub async fn clear_cache(v: Viewer, Form(f): Form<Fields>) -> Response {
    back_to(service::system::clear_cache(&v.ctx(), &field(&f, "cache")).await, SYSTEM)
}

/// `POST /portal/system/pool-size`: the database pool's size (PostgreSQL).
pub async fn pool_size(v: Viewer, Form(f): Form<Fields>) -> Response {
    let Ok(max) = field(&f, "max").parse::<u32>() else {
        return service_error(drover_core::Error::BadRequest("the pool size is a whole number".into()));
    };
    back_to(service::system::resize_pool(&v.ctx(), max).await, SYSTEM)
}
