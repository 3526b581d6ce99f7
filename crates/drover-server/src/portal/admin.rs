//! Administration pages: environments' variables (secret values write-only), operators, roles
//! and access groups, authentication profiles, the CORS policy (read-only: it lives in
//! `[http.cors]`) and system status. Thin like `pages`: the service layer decides.

use askama::Template;
use axum::extract::{Form, Path};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use drover_core::rbac::{AGENT_ROLE, BUILT_IN_ROLES};
use drover_types::{NewOperator, OperatorUpdate, SetVariable};
use serde::Deserialize;

use super::pages::{Chrome, chrome, when};
use super::{Viewer, render, service_error};
use crate::service;

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
    match service::variables::set(&v.ctx(), &env, f.name.trim(), set).await {
        Ok(_) => Redirect::to(&format!("/portal/environments/{env}/variables")).into_response(),
        Err(e) => service_error(e),
    }
}

/// `POST /portal/environments/{name}/variables/{variable}/delete`.
pub async fn delete_variable(v: Viewer, Path((env, name)): Path<(String, String)>) -> Response {
    match service::variables::delete(&v.ctx(), &env, &name).await {
        Ok(()) => Redirect::to(&format!("/portal/environments/{env}/variables")).into_response(),
        Err(e) => service_error(e),
    }
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
    pub roles: Vec<&'static str>,
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
    let roles = BUILT_IN_ROLES.iter().copied().filter(|r| *r != AGENT_ROLE).collect();
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
    match r {
        Ok(()) => Redirect::to("/portal/settings/operators").into_response(),
        Err(e) => service_error(e),
    }
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

#[derive(Template)]
#[template(path = "portal/access.html")]
pub struct AccessPage {
    pub chrome: Chrome,
    pub roles: Vec<RoleRow>,
    pub groups: Vec<GroupRow>,
}

/// `GET /portal/settings/access`: roles and access groups.
pub async fn access(v: Viewer) -> Response {
    let c = v.ctx();
    let (roles, groups) = match (service::access::list_roles(&c).await, service::access::list_groups(&c).await) {
        (Ok(r), Ok(g)) => (r, g),
        (Err(e), _) | (_, Err(e)) => return service_error(e),
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
    render(StatusCode::OK, &AccessPage { chrome: chrome(&v, "Roles and access groups"), roles, groups })
}

pub struct ProfileRow {
    pub name: String,
    pub kind: String,
    pub who: String,
    pub environment: String,
    pub allowed_urls: String,
    pub has_secret: bool,
}

#[derive(Template)]
#[template(path = "portal/profiles.html")]
pub struct ProfilesPage {
    pub chrome: Chrome,
    pub rows: Vec<ProfileRow>,
}

/// `GET /portal/settings/auth-profiles`: the credentials the orchestrator uses to call other
/// systems (secrets never shown).
pub async fn profiles(v: Viewer) -> Response {
    let list = match service::profiles::list(&v.ctx()).await {
        Ok(l) => l,
        Err(e) => return service_error(e),
    };
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
    render(StatusCode::OK, &ProfilesPage { chrome: chrome(&v, "Authentication profiles"), rows })
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
    pub sections: Vec<(&'static str, String)>,
}

/// `GET /portal/system`: nodes, queues, caches, pools (as the SysOps API gives them) and the CORS
/// policy, read-only.
pub async fn system(v: Viewer) -> Response {
    let c = v.ctx();
    let mut sections = Vec::new();
    for (title, r) in [
        ("Nodes", service::system::nodes(&c).await),
        ("Queues", service::system::queues(&c).await),
        ("Caches", service::system::caches(&c).await),
        ("Pools", service::system::pools(&c).await),
    ] {
        match r {
            Ok(v) => sections.push((title, serde_json::to_string_pretty(&v).unwrap_or_default())),
            Err(e) => return service_error(e),
        }
    }
    let cors = &c.state.cors;
    let page = SystemPage {
        chrome: chrome(&v, "System"),
        origins: cors.allowed_origins.clone(),
        methods: cors.allowed_methods.join(", "),
        headers: cors.allowed_headers.join(", "),
        credentials: cors.allow_credentials,
        max_age: cors.max_age_secs,
        sections,
    };
    render(StatusCode::OK, &page)
}
