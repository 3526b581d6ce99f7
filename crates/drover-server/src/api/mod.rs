//! `/api/v1` and `/agent/v1`. Every route is registered through [`Routes::add`], which takes
//! the privilege it requires: a route without one cannot be written. Handlers are thin: they
//! extract the request, call the service layer with the caller ([`Call`]), and map the result;
//! they never touch the store or the engine (a test reads this folder to keep it so).

mod access;
mod agent_protocol;
mod agents;
mod artifacts;
mod audit;
mod clients;
mod deployments;
mod environments;
pub mod guard;
mod keys;
mod operators;
mod pipelines;
mod profiles;
mod reports;
mod system;
mod variables;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::Method;
use axum::http::request::Parts;
use axum::routing::{MethodRouter, on};
use drover_core::rbac::{Principal, Privilege};

use crate::AppState;
use crate::error::ApiError;
use crate::service::Ctx;
use guard::{Guard, require};

/// One row of the route table.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub method: Method,
    pub path: String,
    pub privilege: Privilege,
}

pub struct Routes {
    state: AppState,
    router: Router<AppState>,
    table: Vec<RouteInfo>,
}

impl Routes {
    fn add(mut self, method: Method, path: &str, privilege: Privilege, mr: MethodRouter<AppState>) -> Self {
        let guard = Guard { state: self.state.clone(), privilege };
        let mr = mr.route_layer(axum::middleware::from_fn_with_state(guard, require));
        self.router = self.router.route(path, mr);
        self.table.push(RouteInfo { method, path: path.to_string(), privilege });
        self
    }
}

macro_rules! route {
    ($routes:expr, $m:ident $path:literal => $h:expr, $p:ident) => {
        $routes.add(Method::$m, $path, Privilege::$p, on(axum::routing::MethodFilter::$m, $h))
    };
}

/// All guarded routes, and the table describing them (docs/api.md lists the same table).
pub fn routes(state: AppState) -> (Router<AppState>, Vec<RouteInfo>) {
    let r = Routes { state, router: Router::new(), table: Vec::new() };
    let r = route!(r, GET "/api/v1/pipelines" => pipelines::list, PipelineRead);
    let r = route!(r, POST "/api/v1/pipelines" => pipelines::create, PipelineManage);
    let r = route!(r, GET "/api/v1/pipelines/{name}" => pipelines::get, PipelineRead);
    let r = route!(r, PUT "/api/v1/pipelines/{name}" => pipelines::put, PipelineManage);
    let r = route!(r, DELETE "/api/v1/pipelines/{name}" => pipelines::delete, PipelineManage);
    let r = route!(r, GET "/api/v1/environments" => environments::list, PipelineRead);
    let r = route!(r, POST "/api/v1/environments" => environments::create, EnvironmentManage);
    let r = route!(r, GET "/api/v1/environments/{name}" => environments::get, PipelineRead);
    let r = route!(r, PUT "/api/v1/environments/{name}" => environments::put, EnvironmentManage);
    let r = route!(r, DELETE "/api/v1/environments/{name}" => environments::delete, EnvironmentManage);
    let r = route!(r, GET "/api/v1/environments/{name}/variables" => variables::list, VariableRead);
    let r = route!(r, PUT "/api/v1/environments/{name}/variables/{variable}" => variables::put, VariableManage);
    let r = route!(r, DELETE "/api/v1/environments/{name}/variables/{variable}" => variables::delete, VariableManage);
    let r = route!(r, GET "/api/v1/agents" => agents::list, AgentRead);
    let r = route!(r, POST "/api/v1/agents" => agents::create, AgentManage);
    let r = route!(r, GET "/api/v1/agents/{name}" => agents::get, AgentRead);
    let r = route!(r, DELETE "/api/v1/agents/{name}" => agents::delete, AgentManage);
    let r = route!(r, PUT "/api/v1/agents/{name}/labels" => agents::set_labels, AgentManage);
    let r = route!(r, POST "/api/v1/agents/{name}/approve" => agents::approve, VariableManage);
    let r = route!(r, GET "/api/v1/artifacts" => artifacts::list, ArtifactRead);
    let push = axum::routing::put(artifacts::push).layer(DefaultBodyLimit::disable());
    let r = r.add(Method::PUT, "/api/v1/artifacts/{application}/{version}", Privilege::ArtifactPush, push);
    let r = route!(r, GET "/api/v1/artifacts/{application}/{version}" => artifacts::get, ArtifactRead);
    let r = route!(r, DELETE "/api/v1/artifacts/{application}/{version}" => artifacts::delete, ArtifactDelete);
    let r = route!(r, GET "/api/v1/artifacts/{application}/{version}/content" => artifacts::content, ArtifactRead);
    let r = route!(r, POST "/api/v1/deployments" => deployments::create, DeploymentStart);
    let r = route!(r, GET "/api/v1/deployments" => deployments::list, PipelineRead);
    let r = route!(r, GET "/api/v1/deployments/{id}" => deployments::get, PipelineRead);
    let r = route!(r, GET "/api/v1/deployments/{id}/logs" => deployments::logs, PipelineRead);
    let r = route!(r, GET "/api/v1/deployments/{id}/events" => deployments::events, PipelineRead);
    let r = route!(r, POST "/api/v1/deployments/{id}/abort" => deployments::abort, DeploymentAbort);
    let r = route!(r, POST "/api/v1/deployments/{id}/pause" => deployments::pause, DeploymentPause);
    let r = route!(r, POST "/api/v1/deployments/{id}/resume" => deployments::resume, DeploymentPause);
    let r = route!(r, POST "/api/v1/deployments/{id}/retry" => deployments::retry, DeploymentRetry);
    let r = route!(r, POST "/api/v1/deployments/{id}/skip" => deployments::skip, DeploymentSkip);
    let r = route!(r, POST "/api/v1/deployments/{id}/approve" => deployments::approve, TaskApprove);
    let r = route!(r, POST "/api/v1/deployments/{id}/reject" => deployments::reject, TaskApprove);
    let r = route!(r, POST "/api/v1/deployments/{id}/promote" => deployments::promote, DeploymentPromote);
    let r = route!(r, POST "/api/v1/deployments/{id}/rollback" => deployments::rollback, DeploymentRollback);
    let r = route!(r, GET "/api/v1/operators" => operators::list, OperatorManage);
    let r = route!(r, POST "/api/v1/operators" => operators::create, OperatorManage);
    let r = route!(r, GET "/api/v1/operators/{name}" => operators::get, OperatorManage);
    let r = route!(r, PUT "/api/v1/operators/{name}" => operators::update, OperatorManage);
    let r = route!(r, POST "/api/v1/operators/{name}/unlock" => operators::unlock, OperatorManage);
    let r = route!(r, POST "/api/v1/operators/{name}/password" => operators::set_password, OperatorManage);
    let r = route!(r, POST "/api/v1/operators/{name}/revoke-sessions" => operators::revoke_sessions, OperatorManage);
    let r = route!(r, GET "/api/v1/roles" => access::list_roles, RoleManage);
    let r = route!(r, POST "/api/v1/roles" => access::create_role, RoleManage);
    let r = route!(r, GET "/api/v1/roles/{name}" => access::get_role, RoleManage);
    let r = route!(r, PUT "/api/v1/roles/{name}" => access::put_role, RoleManage);
    let r = route!(r, DELETE "/api/v1/roles/{name}" => access::delete_role, RoleManage);
    let r = route!(r, GET "/api/v1/access-groups" => access::list_groups, RoleManage);
    let r = route!(r, POST "/api/v1/access-groups" => access::create_group, RoleManage);
    let r = route!(r, GET "/api/v1/access-groups/{name}" => access::get_group, RoleManage);
    let r = route!(r, PUT "/api/v1/access-groups/{name}" => access::put_group, RoleManage);
    let r = route!(r, DELETE "/api/v1/access-groups/{name}" => access::delete_group, RoleManage);
    let r = route!(r, GET "/api/v1/clients" => clients::list, ClientManage);
    let r = route!(r, POST "/api/v1/clients" => clients::create, ClientManage);
    let r = route!(r, GET "/api/v1/clients/{name}" => clients::get, ClientManage);
    let r = route!(r, PUT "/api/v1/clients/{name}" => clients::update, ClientManage);
    let r = route!(r, DELETE "/api/v1/clients/{name}" => clients::delete, ClientManage);
    let r = route!(r, POST "/api/v1/clients/{name}/regenerate-secret" => clients::regenerate_secret, ClientManage);
    let r = route!(r, POST "/api/v1/clients/{name}/revoke-tokens" => clients::revoke_tokens, ClientManage);
    let r = route!(r, GET "/api/v1/keys" => keys::list, KeystoreManage);
    let r = route!(r, POST "/api/v1/keys/rotate" => keys::rotate, KeystoreManage);
    let r = route!(r, POST "/api/v1/keys/import" => keys::import, KeystoreManage);
    let r = route!(r, GET "/api/v1/auth-profiles" => profiles::list, AuthProfileManage);
    let r = route!(r, POST "/api/v1/auth-profiles" => profiles::create, AuthProfileManage);
    let r = route!(r, GET "/api/v1/auth-profiles/{name}" => profiles::get, AuthProfileManage);
    let r = route!(r, PUT "/api/v1/auth-profiles/{name}" => profiles::put, AuthProfileManage);
    let r = route!(r, DELETE "/api/v1/auth-profiles/{name}" => profiles::delete, AuthProfileManage);
    let r = route!(r, GET "/api/v1/reports/pipelines/{name}" => reports::pipeline, PipelineRead);
    let r = route!(r, GET "/api/v1/audit" => audit::list, AuditRead);
    let r = route!(r, GET "/api/v1/audit/verify" => audit::verify, AuditRead);
    let r = route!(r, GET "/api/v1/audit/export" => audit::export, AuditRead);
    let r = route!(r, GET "/api/v1/system/nodes" => system::nodes, SystemObserve);
    let r = route!(r, GET "/api/v1/system/agents" => agents::list, SystemObserve);
    let r = route!(r, GET "/api/v1/system/queues" => system::queues, SystemObserve);
    let r = route!(r, GET "/api/v1/system/caches" => system::caches, SystemObserve);
    let r = route!(r, GET "/api/v1/system/pools" => system::pools, SystemObserve);
    let r = route!(r, POST "/api/v1/system/caches/{name}/clear" => system::clear_cache, SystemManage);
    let r = route!(r, POST "/api/v1/system/nodes/{name}/drain" => system::drain, SystemManage);
    let r = route!(r, POST "/api/v1/system/nodes/{name}/resume" => system::resume, SystemManage);
    let r = route!(r, PUT "/api/v1/system/pools/database" => system::resize_pool, SystemManage);
    let r = route!(r, POST "/agent/v1/poll" => agent_protocol::poll, AgentWork);
    let r = route!(r, POST "/agent/v1/attempts/{attempt}/events" => agent_protocol::events, AgentWork);
    let r = route!(r, POST "/agent/v1/attempts/{attempt}/result" => agent_protocol::result, AgentWork);
    let r = route!(r, GET "/agent/v1/artifacts/{sha256}" => agent_protocol::artifact, AgentWork);
    (r.router, r.table)
}

/// A guarded request: the orchestrator and the caller the guard authenticated.
pub struct Call {
    state: AppState,
    caller: Principal,
    /// How the caller authenticated (for streams that check again while they run).
    credential: Option<guard::Credential>,
}

impl Call {
    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.state, &self.caller)
    }
}

impl FromRequestParts<AppState> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Set by the guard; a route without one has no caller (and cannot be registered).
        let caller = parts.extensions.remove::<Principal>().ok_or_else(ApiError::unauthorized)?;
        let credential = parts.extensions.remove::<guard::Credential>();
        Ok(Call { state: state.clone(), caller, credential })
    }
}

/// A file's content as a streamed response.
fn stream_file(f: tokio::fs::File, len: u64) -> axum::response::Response {
    use axum::http::header;
    use axum::response::IntoResponse;
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 64 * 1024));
    ([(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, len.to_string())], body)
        .into_response()
}

fn parse_id(id: &str) -> Result<i64, ApiError> {
    id.parse().map_err(|_| ApiError::bad_request(format!("invalid deployment id {id:?}")))
}

#[cfg(test)]
mod tests {
    /// Handlers stay thin: nothing in this folder but the guard reaches for the store or the
    /// engine, so every operation goes through the service layer and its checks.
    #[test]
    fn handlers_never_touch_the_store_or_the_engine() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name == "guard.rs" || !name.ends_with(".rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for forbidden in [".store", ".engine", "State(", "Extension<Principal>"] {
                assert!(!code.contains(forbidden), "{name} uses {forbidden}: go through the service layer");
            }
            checked += 1;
        }
        assert!(checked >= 10, "{checked}");
    }
}
