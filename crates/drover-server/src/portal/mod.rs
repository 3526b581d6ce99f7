//! The portal: server-rendered pages (askama templates compiled into the binary, `templates/
//! portal/`) for operators, signed in through the orchestrator's own authorization server as
//! the OAuth client `drover-portal` (authorization code + PKCE, [`signin`]). Tokens stay on the
//! server in a sealed session record ([`session`]); the browser holds a `__Host-` cookie.
//!
//! Every page is registered through [`Pages::add`] with what it needs (signed in, or a
//! privilege, as `api::Routes::add`); [`guard::require`] runs first: session, CSRF and origin
//! for posts, privilege, audit. Pages call the same service layer as the API with the signed-in
//! operator's principal: there is no second authorization path. Layering: the portal uses
//! `service`, `oauth` and `sse`, never `api`.

pub mod admin;
pub mod assets;
mod charts;
mod diff;
mod editor;
mod form;
pub mod guard;
pub mod headers;
mod multipart;
mod pages;
pub mod session;
mod settings;
pub mod signin;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, on};
use drover_core::rbac::{Principal, Privilege};

use crate::AppState;
use crate::service::Ctx;
use guard::{Need, PageGuard};

/// One row of the page table.
#[derive(Debug, Clone)]
pub struct PageInfo {
    pub method: Method,
    pub path: String,
    pub need: Need,
}

pub struct Pages {
    state: AppState,
    router: Router<AppState>,
    table: Vec<PageInfo>,
}

impl Pages {
    fn add(mut self, method: Method, path: &str, need: Need, mr: MethodRouter<AppState>) -> Self {
        let g = PageGuard { state: self.state.clone(), need };
        let mr = mr.route_layer(axum::middleware::from_fn_with_state(g, guard::require));
        self.router = self.router.route(path, mr);
        self.table.push(PageInfo { method, path: path.to_string(), need });
        self
    }
}

macro_rules! page {
    ($pages:expr, $m:ident $path:literal => $h:expr, signed_in) => {
        $pages.add(Method::$m, $path, Need::SignedIn, on(axum::routing::MethodFilter::$m, $h))
    };
    ($pages:expr, $m:ident $path:literal => $h:expr, $p:ident) => {
        $pages.add(Method::$m, $path, Need::Privilege(Privilege::$p), on(axum::routing::MethodFilter::$m, $h))
    };
}

/// The guarded pages, and the table describing them (docs/portal.md lists the same).
pub fn pages(state: AppState) -> (Router<AppState>, Vec<PageInfo>) {
    let p = Pages { state, router: Router::new(), table: Vec::new() };
    let p = page!(p, GET "/portal/" => pages::dashboard, signed_in);
    let p = page!(p, POST "/portal/signout" => signin::sign_out, signed_in);
    let p = page!(p, GET "/portal/pipelines/{name}" => pages::pipeline, PipelineRead);
    let p = page!(p, POST "/portal/pipelines/{name}/start" => pages::start, DeploymentStart);
    let p = page!(p, GET "/portal/pipelines/{name}/reports" => pages::reports, PipelineRead);
    let p = page!(p, GET "/portal/pipelines/{name}/edit" => editor::edit, PipelineManage);
    let p = page!(p, GET "/portal/pipelines/{name}/form" => form::edit, PipelineManage);
    let p = page!(p, POST "/portal/pipelines/form" => form::post, PipelineManage);
    let p = page!(p, GET "/portal/new-pipeline" => editor::new, PipelineManage);
    let p = page!(p, POST "/portal/pipelines/preview" => editor::preview, PipelineManage);
    let p = page!(p, POST "/portal/pipelines/save" => editor::save, PipelineManage);
    let p = page!(p, GET "/portal/deployments/{id}" => pages::deployment, PipelineRead);
    let p = page!(p, GET "/portal/deployments/{id}/live" => pages::live, PipelineRead);
    let p = page!(p, POST "/portal/deployments/{id}/abort" => pages::abort, DeploymentAbort);
    let p = page!(p, POST "/portal/deployments/{id}/pause" => pages::pause, DeploymentPause);
    let p = page!(p, POST "/portal/deployments/{id}/resume" => pages::resume, DeploymentPause);
    let p = page!(p, POST "/portal/deployments/{id}/retry" => pages::retry, DeploymentRetry);
    let p = page!(p, POST "/portal/deployments/{id}/skip" => pages::skip, DeploymentSkip);
    let p = page!(p, POST "/portal/deployments/{id}/approve" => pages::approve, TaskApprove);
    let p = page!(p, POST "/portal/deployments/{id}/reject" => pages::reject, TaskApprove);
    let p = page!(p, POST "/portal/deployments/{id}/promote" => pages::promote, DeploymentPromote);
    let p = page!(p, POST "/portal/deployments/{id}/rollback" => pages::rollback, DeploymentRollback);
    let p = page!(p, GET "/portal/audit" => pages::audit, AuditRead);
    let p = page!(p, GET "/portal/audit/export" => pages::audit_export, AuditRead);
    let p = page!(p, GET "/portal/artifacts" => settings::artifacts, ArtifactRead);
    let p = page!(p, GET "/portal/environments" => settings::environments, PipelineRead);
    let p = page!(p, POST "/portal/environments" => settings::save_environment, EnvironmentManage);
    let p = page!(p, POST "/portal/environments/{name}/delete" => settings::delete_environment, EnvironmentManage);
    let p = page!(p, POST "/portal/agents" => settings::add_agent, AgentManage);
    let p = page!(p, POST "/portal/agents/{name}/labels" => settings::set_agent_labels, AgentManage);
    let p = page!(p, POST "/portal/agents/{name}/approve" => settings::approve_agent, VariableManage);
    let p = page!(p, POST "/portal/agents/{name}/delete" => settings::delete_agent, AgentManage);
    let p = page!(p, GET "/portal/environments/{name}/variables" => admin::variables, VariableRead);
    let p = page!(p, POST "/portal/environments/{name}/variables" => admin::set_variable, VariableManage);
    let p = page!(p, POST "/portal/environments/{name}/variables/{variable}/delete" => admin::delete_variable, VariableManage);
    let p = page!(p, GET "/portal/settings/clients" => settings::clients, ClientManage);
    let p = page!(p, POST "/portal/settings/clients" => settings::create_client, ClientManage);
    let p = page!(p, POST "/portal/settings/clients/{name}/regenerate-secret" => settings::regenerate, ClientManage);
    let p = page!(p, POST "/portal/settings/clients/{name}/revoke-tokens" => settings::revoke_tokens, ClientManage);
    let p = page!(p, POST "/portal/settings/clients/{name}/disable" => settings::disable, ClientManage);
    let p = page!(p, POST "/portal/settings/clients/{name}/enable" => settings::enable, ClientManage);
    let p = page!(p, GET "/portal/settings/keys" => settings::keys, KeystoreManage);
    let p = page!(p, POST "/portal/settings/keys/rotate" => settings::rotate, KeystoreManage);
    let p = page!(p, POST "/portal/settings/keys/import" => settings::import, KeystoreManage);
    let p = page!(p, GET "/portal/settings/operators" => admin::operators, OperatorManage);
    let p = page!(p, POST "/portal/settings/operators" => admin::create_operator, OperatorManage);
    let p = page!(p, POST "/portal/settings/operators/{name}/disable" => admin::disable_operator, OperatorManage);
    let p = page!(p, POST "/portal/settings/operators/{name}/enable" => admin::enable_operator, OperatorManage);
    let p = page!(p, POST "/portal/settings/operators/{name}/unlock" => admin::unlock_operator, OperatorManage);
    let p =
        page!(p, POST "/portal/settings/operators/{name}/revoke-sessions" => admin::revoke_sessions, OperatorManage);
    let p = page!(p, GET "/portal/settings/operators/{name}" => admin::operator, OperatorManage);
    let p = page!(p, POST "/portal/settings/operators/{name}" => admin::update_operator, OperatorManage);
    let p = page!(p, POST "/portal/settings/operators/{name}/password" => admin::set_password, OperatorManage);
    let p = page!(p, GET "/portal/settings/access" => admin::access, RoleManage);
    let p = page!(p, POST "/portal/settings/roles" => admin::save_role, RoleManage);
    let p = page!(p, POST "/portal/settings/roles/{name}/delete" => admin::delete_role, RoleManage);
    let p = page!(p, POST "/portal/settings/access-groups" => admin::save_group, RoleManage);
    let p = page!(p, POST "/portal/settings/access-groups/{name}/delete" => admin::delete_group, RoleManage);
    let p = page!(p, GET "/portal/settings/auth-profiles" => admin::profiles, AuthProfileManage);
    let p = page!(p, POST "/portal/settings/auth-profiles" => admin::save_profile, AuthProfileManage);
    let p = page!(p, POST "/portal/settings/auth-profiles/{name}/delete" => admin::delete_profile, AuthProfileManage);
    let p = page!(p, GET "/portal/system" => admin::system, SystemObserve);
    let p = page!(p, POST "/portal/system/drain" => admin::drain, SystemManage);
    let p = page!(p, POST "/portal/system/clear-cache" => admin::clear_cache, SystemManage);
    let p = page!(p, POST "/portal/system/pool-size" => admin::pool_size, SystemManage);
    (p.router, p.table)
}

/// Every portal route: the pages, sign-in (open), the assets (open), all with the portal's
/// security headers.
pub fn routes(state: AppState) -> Router<AppState> {
    let (guarded, _) = pages(state);
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal/") }))
        .route("/portal", get(|| async { Redirect::to("/portal/") }))
        .route("/portal/signin", get(signin::start))
        .route("/portal/callback", get(signin::callback))
        .route("/portal/signed-out", get(signin::signed_out))
        .route("/portal/assets/{file}", get(assets::serve))
        .route("/portal/{*rest}", get(not_found).post(not_found))
        .merge(guarded)
        .layer(axum::middleware::from_fn(headers::secure))
}

async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// A signed-in request: the operator's principal (from their access token, as the API would
/// see it) and their session.
pub struct Viewer {
    pub principal: Principal,
    pub session: session::Session,
    state: AppState,
}

impl Viewer {
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.state, &self.principal)
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        // Set by the guard; a page without one cannot be registered.
        let (principal, session) = parts
            .extensions
            .remove::<(Principal, session::Session)>()
            .ok_or_else(|| error_page(StatusCode::UNAUTHORIZED, "Sign in", "Sign in first."))?;
        Ok(Viewer { principal, session, state: state.clone() })
    }
}

/// A page for an error, with its status.
pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    let html = pages::ErrorPage { title, message, status: status.as_u16(), css: assets::css() };
    render(status, &html)
}

/// After a post: back to `to` when the service did it, else its error as a page.
pub(crate) fn back_to<T>(r: drover_core::Result<T>, to: &str) -> Response {
    match r {
        Ok(_) => Redirect::to(to).into_response(),
        Err(e) => service_error(e),
    }
}

/// A template as a response (a failed render is a 500 that says so in the log).
pub(crate) fn render(status: StatusCode, t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "portal: a template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render; see the orchestrator log").into_response()
        }
    }
}

/// A service error as a page: the same statuses as the API.
pub(crate) fn service_error(e: drover_core::Error) -> Response {
    let api = crate::error::ApiError::from(e);
    let status = api.status();
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::SERVICE_UNAVAILABLE => "Try again in a moment",
        StatusCode::CONFLICT => "Not now",
        _ => "That did not work",
    };
    error_page(status, title, &api.message)
}
