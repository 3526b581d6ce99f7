//! `/api/v1` and `/agent/v1`. Every route is registered through [`Routes::add`], which takes
//! the privilege it requires: a route without one cannot be written.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on};
use axum::{Extension, Json, Router};
use drover_core::rbac::{Principal, Privilege};
use drover_core::store::{AgentRecord, ArtifactInsert, ClientRecord, DeploymentFilter, OperatorRecord};
use drover_core::{spec, validate_name, validate_version};
use drover_types::agent::{
    AttemptEvents, AttemptEventsResponse, AttemptResult, AttemptResultResponse, PollRequest, PollResponse,
};
use drover_types::{
    Action, ActionRequest, Agent, AgentCredentials, ApplyResult, Artifact, DeploymentStatus, Environment,
    EnvironmentKind, LogPage, NewAgent, NewDeployment, NewEnvironment, NewOperator, Operator, OperatorCreated,
    OperatorUpdate, PasswordChange, Pipeline, PipelineSpec, Timestamp,
};
use serde::Deserialize;
use serde_json::json;

use crate::AppState;
use crate::auth::{Guard, new_secret, require, secret_hash};
use crate::error::{ApiError, ApiJson, ApiResult};

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

/// All guarded routes, and the table describing them.
pub fn routes(state: AppState) -> (Router<AppState>, Vec<RouteInfo>) {
    let r = Routes { state, router: Router::new(), table: Vec::new() };
    let r = route!(r, GET "/api/v1/pipelines" => list_pipelines, PipelineRead);
    let r = route!(r, POST "/api/v1/pipelines" => create_pipeline, PipelineManage);
    let r = route!(r, GET "/api/v1/pipelines/{name}" => get_pipeline, PipelineRead);
    let r = route!(r, PUT "/api/v1/pipelines/{name}" => put_pipeline, PipelineManage);
    let r = route!(r, DELETE "/api/v1/pipelines/{name}" => delete_pipeline, PipelineManage);
    let r = route!(r, GET "/api/v1/environments" => list_environments, PipelineRead);
    let r = route!(r, POST "/api/v1/environments" => create_environment, EnvironmentManage);
    let r = route!(r, GET "/api/v1/environments/{name}" => get_environment, PipelineRead);
    let r = route!(r, DELETE "/api/v1/environments/{name}" => delete_environment, EnvironmentManage);
    let r = route!(r, GET "/api/v1/agents" => list_agents, AgentRead);
    let r = route!(r, POST "/api/v1/agents" => create_agent, AgentManage);
    let r = route!(r, GET "/api/v1/agents/{name}" => get_agent, AgentRead);
    let r = route!(r, DELETE "/api/v1/agents/{name}" => delete_agent, AgentManage);
    let r = route!(r, GET "/api/v1/artifacts" => list_artifacts, ArtifactRead);
    let r = r.add(
        Method::PUT,
        "/api/v1/artifacts/{application}/{version}",
        Privilege::ArtifactPush,
        axum::routing::put(push_artifact).layer(DefaultBodyLimit::disable()),
    );
    let r = route!(r, GET "/api/v1/artifacts/{application}/{version}" => get_artifact, ArtifactRead);
    let r = route!(r, GET "/api/v1/artifacts/{application}/{version}/content" => download_artifact_by_version, ArtifactRead);
    let r = route!(r, POST "/api/v1/deployments" => create_deployment, DeploymentStart);
    let r = route!(r, GET "/api/v1/deployments" => list_deployments, PipelineRead);
    let r = route!(r, GET "/api/v1/deployments/{id}" => get_deployment, PipelineRead);
    let r = route!(r, GET "/api/v1/deployments/{id}/logs" => deployment_logs, PipelineRead);
    let r = route!(r, GET "/api/v1/deployments/{id}/events" => deployment_events, PipelineRead);
    let r = route!(r, POST "/api/v1/deployments/{id}/abort" => action_abort, DeploymentAbort);
    let r = route!(r, POST "/api/v1/deployments/{id}/pause" => action_pause, DeploymentPause);
    let r = route!(r, POST "/api/v1/deployments/{id}/resume" => action_resume, DeploymentPause);
    let r = route!(r, POST "/api/v1/deployments/{id}/retry" => action_retry, DeploymentRetry);
    let r = route!(r, POST "/api/v1/deployments/{id}/skip" => action_skip, DeploymentSkip);
    let r = route!(r, POST "/api/v1/deployments/{id}/approve" => action_approve, TaskApprove);
    let r = route!(r, POST "/api/v1/deployments/{id}/reject" => action_reject, TaskApprove);
    let r = route!(r, POST "/api/v1/deployments/{id}/promote" => action_promote, DeploymentPromote);
    let r = route!(r, POST "/api/v1/deployments/{id}/rollback" => action_rollback, DeploymentRollback);
    let r = route!(r, GET "/api/v1/operators" => list_operators, OperatorManage);
    let r = route!(r, POST "/api/v1/operators" => create_operator, OperatorManage);
    let r = route!(r, GET "/api/v1/operators/{name}" => get_operator, OperatorManage);
    let r = route!(r, PUT "/api/v1/operators/{name}" => update_operator, OperatorManage);
    let r = route!(r, POST "/api/v1/operators/{name}/unlock" => unlock_operator, OperatorManage);
    let r = route!(r, POST "/api/v1/operators/{name}/password" => set_operator_password, OperatorManage);
    let r = route!(r, POST "/api/v1/operators/{name}/revoke-sessions" => revoke_operator_sessions, OperatorManage);
    let r = route!(r, GET "/api/v1/roles" => list_roles, RoleManage);
    let r = route!(r, POST "/api/v1/roles" => create_role, RoleManage);
    let r = route!(r, GET "/api/v1/roles/{name}" => get_role, RoleManage);
    let r = route!(r, PUT "/api/v1/roles/{name}" => put_role, RoleManage);
    let r = route!(r, DELETE "/api/v1/roles/{name}" => delete_role, RoleManage);
    let r = route!(r, GET "/api/v1/access-groups" => list_groups, RoleManage);
    let r = route!(r, POST "/api/v1/access-groups" => create_group, RoleManage);
    let r = route!(r, GET "/api/v1/access-groups/{name}" => get_group, RoleManage);
    let r = route!(r, PUT "/api/v1/access-groups/{name}" => put_group, RoleManage);
    let r = route!(r, DELETE "/api/v1/access-groups/{name}" => delete_group, RoleManage);
    let r = route!(r, GET "/api/v1/clients" => list_clients, ClientManage);
    let r = route!(r, POST "/api/v1/clients" => create_client, ClientManage);
    let r = route!(r, GET "/api/v1/clients/{name}" => get_client, ClientManage);
    let r = route!(r, PUT "/api/v1/clients/{name}" => update_client, ClientManage);
    let r = route!(r, DELETE "/api/v1/clients/{name}" => delete_client, ClientManage);
    let r = route!(r, POST "/api/v1/clients/{name}/regenerate-secret" => regenerate_client_secret, ClientManage);
    let r = route!(r, POST "/api/v1/clients/{name}/revoke-tokens" => revoke_client_tokens, ClientManage);
    let r = route!(r, GET "/api/v1/keys" => list_keys, KeystoreManage);
    let r = route!(r, POST "/api/v1/keys/rotate" => rotate_key, KeystoreManage);
    let r = route!(r, POST "/api/v1/keys/import" => import_key, KeystoreManage);
    let r = route!(r, GET "/api/v1/auth-profiles" => list_profiles, AuthProfileManage);
    let r = route!(r, POST "/api/v1/auth-profiles" => create_profile, AuthProfileManage);
    let r = route!(r, GET "/api/v1/auth-profiles/{name}" => get_profile, AuthProfileManage);
    let r = route!(r, PUT "/api/v1/auth-profiles/{name}" => put_profile, AuthProfileManage);
    let r = route!(r, DELETE "/api/v1/auth-profiles/{name}" => delete_profile, AuthProfileManage);
    let r = route!(r, GET "/api/v1/audit" => list_audit, AuditRead);
    let r = route!(r, GET "/api/v1/audit/verify" => verify_audit, AuditRead);
    let r = route!(r, GET "/api/v1/system/nodes" => system_nodes, SystemObserve);
    let r = route!(r, GET "/api/v1/system/agents" => list_agents, SystemObserve);
    let r = route!(r, GET "/api/v1/system/queues" => system_queues, SystemObserve);
    let r = route!(r, POST "/agent/v1/poll" => agent_poll, AgentWork);
    let r = route!(r, POST "/agent/v1/attempts/{attempt}/events" => agent_events, AgentWork);
    let r = route!(r, POST "/agent/v1/attempts/{attempt}/result" => agent_result, AgentWork);
    let r = route!(r, GET "/agent/v1/artifacts/{sha256}" => agent_artifact, AgentWork);
    (r.router, r.table)
}

type S = State<AppState>;
type P = Extension<Principal>;

fn parse_id(id: &str) -> ApiResult<i64> {
    id.parse().map_err(|_| ApiError::bad_request(format!("invalid deployment id {id:?}")))
}

// ---- pipelines ------------------------------------------------------------------------------

async fn list_pipelines(State(s): S) -> ApiResult<Json<Vec<Pipeline>>> {
    Ok(Json(s.store.list_pipelines().await?))
}

async fn get_pipeline(State(s): S, Path(name): Path<String>) -> ApiResult<Json<Pipeline>> {
    let p =
        s.store.get_pipeline(&name).await?.ok_or_else(|| ApiError::not_found(format!("pipeline {name} not found")))?;
    Ok(Json(p))
}

/// A pipeline spec from JSON, or from YAML when the content type says so.
fn spec_from_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<PipelineSpec> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    if ct.contains("yaml") {
        Ok(spec::parse_yaml(text)?)
    } else {
        let spec: PipelineSpec = serde_json::from_str(text)
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", e.to_string()))?;
        spec::validate(&spec)?;
        Ok(spec)
    }
}

fn env_kind(name: &str) -> EnvironmentKind {
    match name {
        "dev" | "development" => EnvironmentKind::Dev,
        "qa" | "test" => EnvironmentKind::Qa,
        "staging" | "stage" => EnvironmentKind::Staging,
        "prod" | "production" => EnvironmentKind::Production,
        _ => EnvironmentKind::Custom,
    }
}

async fn apply(s: &AppState, spec: PipelineSpec, actor: &str) -> ApiResult<(StatusCode, Json<ApplyResult>)> {
    let now = Timestamp::now();
    let mut created_envs = Vec::new();
    for st in &spec.stages {
        let env = Environment {
            name: st.environment.clone(),
            kind: env_kind(&st.environment),
            labels: Default::default(),
            created_at: now,
        };
        if s.store.insert_environment(&env).await? {
            created_envs.push(st.environment.clone());
        }
    }
    let name = spec.name().to_string();
    let existing = s.store.get_pipeline(&name).await?;
    let (outcome, pipeline) = match existing {
        Some(p) if p.application == spec.application && p.stages == spec.stages => ("unchanged", p),
        other => {
            let p = Pipeline {
                name: name.clone(),
                application: spec.application.clone(),
                stages: spec.stages.clone(),
                created_at: other.as_ref().map(|o| o.created_at).unwrap_or(now),
                updated_at: now,
            };
            s.store.put_pipeline(&p).await?;
            tracing::info!(pipeline = %name, by = actor, "pipeline {}", if other.is_some() { "updated" } else { "created" });
            (if other.is_some() { "updated" } else { "created" }, p)
        }
    };
    let status = if outcome == "created" { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(ApplyResult { pipeline, outcome: outcome.into(), created_environments: created_envs })))
}

async fn create_pipeline(
    State(s): S,
    Extension(p): P,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let spec = spec_from_body(&headers, &body)?;
    check_scope(&p, Privilege::PipelineManage, &spec.application)?;
    apply(&s, spec, &p.label()).await
}

async fn put_pipeline(
    State(s): S,
    Extension(p): P,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let mut spec = spec_from_body(&headers, &body)?;
    if spec.pipeline.is_none() {
        spec.pipeline = Some(name.clone());
    }
    if spec.name() != name {
        return Err(ApiError::bad_request(format!("the body names pipeline {:?}, the path {name:?}", spec.name())));
    }
    check_scope(&p, Privilege::PipelineManage, &spec.application)?;
    if let Some(old) = s.store.get_pipeline(&name).await? {
        check_scope(&p, Privilege::PipelineManage, &old.application)?;
    }
    apply(&s, spec, &p.label()).await
}

async fn delete_pipeline(State(s): S, Extension(p): P, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if let Some(old) = s.store.get_pipeline(&name).await? {
        check_scope(&p, Privilege::PipelineManage, &old.application)?;
    }
    let f = DeploymentFilter { pipeline: Some(name.clone()), status: None, limit: Some(10_000) };
    if s.store.list_deployments(&f).await?.iter().any(|d| !d.status.is_terminal()) {
        return Err(ApiError::conflict(format!("pipeline {name} has active deployments; abort them first")));
    }
    if s.store.delete_pipeline(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("pipeline {name} not found")))
    }
}

// ---- environments ---------------------------------------------------------------------------

async fn list_environments(State(s): S) -> ApiResult<Json<Vec<Environment>>> {
    Ok(Json(s.store.list_environments().await?))
}

async fn create_environment(
    State(s): S,
    ApiJson(e): ApiJson<NewEnvironment>,
) -> ApiResult<(StatusCode, Json<Environment>)> {
    validate_name("environment", &e.name)?;
    let env = Environment {
        kind: e.kind.unwrap_or_else(|| env_kind(&e.name)),
        name: e.name,
        labels: e.labels,
        created_at: Timestamp::now(),
    };
    if !s.store.insert_environment(&env).await? {
        return Err(ApiError::conflict(format!("environment {} exists already", env.name)));
    }
    Ok((StatusCode::CREATED, Json(env)))
}

async fn get_environment(State(s): S, Path(name): Path<String>) -> ApiResult<Json<Environment>> {
    let e = s
        .store
        .get_environment(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("environment {name} not found")))?;
    Ok(Json(e))
}

async fn delete_environment(State(s): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let used = s.store.list_pipelines().await?.into_iter().find(|p| p.stages.iter().any(|st| st.environment == name));
    if let Some(p) = used {
        return Err(ApiError::conflict(format!("environment {name} is used by pipeline {}", p.name)));
    }
    if s.store.list_agents().await?.iter().any(|a| a.environment == name) {
        return Err(ApiError::conflict(format!("environment {name} still has agents; remove them first")));
    }
    if s.store.delete_environment(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("environment {name} not found")))
    }
}

// ---- agents ---------------------------------------------------------------------------------

fn agent_view(s: &AppState, a: AgentRecord) -> Agent {
    let online_window = (s.engine.lease * 2).max(Duration::from_secs(30)).as_millis() as i64;
    let online = a.last_seen_at.is_some_and(|t| Timestamp::now().0 - t.0 <= online_window);
    Agent { name: a.name, environment: a.environment, created_at: a.created_at, last_seen_at: a.last_seen_at, online }
}

async fn list_agents(State(s): S) -> ApiResult<Json<Vec<Agent>>> {
    let v = s.store.list_agents().await?.into_iter().map(|a| agent_view(&s, a)).collect();
    Ok(Json(v))
}

async fn get_agent(State(s): S, Path(name): Path<String>) -> ApiResult<Json<Agent>> {
    let a = s.store.get_agent(&name).await?.ok_or_else(|| ApiError::not_found(format!("agent {name} not found")))?;
    Ok(Json(agent_view(&s, a)))
}

async fn create_agent(
    State(s): S,
    Extension(p): P,
    ApiJson(a): ApiJson<NewAgent>,
) -> ApiResult<(StatusCode, Json<AgentCredentials>)> {
    validate_name("agent", &a.name)?;
    validate_name("environment", &a.environment)?;
    if s.store.get_operator(&a.name).await?.is_some() {
        return Err(ApiError::conflict(format!("{} is an operator's name; agents need names of their own", a.name)));
    }
    if s.store.get_client(&a.name).await?.is_some() || s.store.get_agent(&a.name).await?.is_some() {
        return Err(ApiError::conflict(format!("{} is taken by a client or agent already", a.name)));
    }
    if let Some(j) = &a.jwks {
        check_jwks(j)?;
    }
    let now = Timestamp::now();
    let env = Environment {
        name: a.environment.clone(),
        kind: env_kind(&a.environment),
        labels: Default::default(),
        created_at: now,
    };
    s.store.insert_environment(&env).await?;
    // The agent is an OAuth 2.0 client (id = its name, role `agent`) that gets tokens with its
    // secret (client credentials) or its key (private_key_jwt).
    let secret = if a.jwks.is_some() { String::new() } else { new_secret() };
    let hash = if secret.is_empty() { String::new() } else { secret_hash(&secret) };
    s.store
        .insert_client(&ClientRecord {
            client_id: a.name.clone(),
            secret_hash: hash.clone(),
            roles: vec!["agent".into()],
            created_at: now,
            metadata: drover_core::store::ClientMetadata {
                agent: Some(a.name.clone()),
                jwks: a.jwks.clone(),
                ..Default::default()
            },
            ..Default::default()
        })
        .await?;
    let inserted = s
        .store
        .insert_agent(&AgentRecord {
            name: a.name.clone(),
            environment: a.environment.clone(),
            secret_hash: hash,
            created_at: now,
            last_seen_at: None,
        })
        .await;
    if let Err(e) = inserted {
        let _ = s.store.delete_client(&a.name).await;
        return Err(e.into());
    }
    tracing::info!(agent = %a.name, environment = %a.environment, by = %p.label(), "agent registered");
    Ok((StatusCode::CREATED, Json(AgentCredentials { name: a.name, environment: a.environment, secret })))
}

async fn delete_agent(State(s): S, Extension(p): P, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if let Some(c) = s.store.get_client(&name).await?
        && c.metadata.agent.as_deref() == Some(name.as_str())
    {
        s.store.delete_client(&name).await?;
        s.engine.cut_off_agent(&name, "the agent was removed").await?;
    }
    if s.store.delete_agent(&name).await? {
        tracing::info!(agent = %name, by = %p.label(), "agent removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("agent {name} not found")))
    }
}

// ---- artifacts ------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ArtifactQuery {
    application: Option<String>,
}

async fn list_artifacts(State(s): S, Query(q): Query<ArtifactQuery>) -> ApiResult<Json<Vec<Artifact>>> {
    Ok(Json(s.store.list_artifacts(q.application.as_deref()).await?))
}

async fn get_artifact(State(s): S, Path((app, version)): Path<(String, String)>) -> ApiResult<Json<Artifact>> {
    let a = s
        .store
        .get_artifact(&app, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("artifact {app} {version} not found")))?;
    Ok(Json(a))
}

async fn push_artifact(
    State(s): S,
    Extension(p): P,
    Path((app, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    validate_name("application", &app)?;
    validate_version(&version)?;
    check_scope(&p, Privilege::ArtifactPush, &app)?;
    let expected = headers.get("x-drover-sha256").and_then(|v| v.to_str().ok()).map(str::to_ascii_lowercase);
    let up = s.artifacts.receive(body.into_data_stream()).await.map_err(ApiError::bad_request)?;
    if let Some(e) = expected
        && e != up.sha256
    {
        let got = up.sha256.clone();
        s.artifacts.discard(up).await;
        return Err(ApiError::bad_request(format!("checksum mismatch: header says {e}, content is {got}")));
    }
    let a = Artifact {
        application: app.clone(),
        version: version.clone(),
        sha256: up.sha256.clone(),
        size: up.size,
        created_at: Timestamp::now(),
        created_by: p.label(),
    };
    if let Some(existing) = s.store.get_artifact(&app, &version).await? {
        s.artifacts.discard(up).await;
        return same_or_conflict(existing, &a);
    }
    let sha = up.sha256.clone();
    s.artifacts.keep(up).await.map_err(ApiError::internal)?;
    match s.store.insert_artifact(&a).await? {
        ArtifactInsert::Inserted => {
            tracing::info!(application = %app, version = %version, sha256 = %sha, size = a.size, by = %a.created_by, "artifact stored");
            Ok((StatusCode::CREATED, Json(a)))
        }
        ArtifactInsert::Exists(existing) => same_or_conflict(existing, &a),
    }
}

fn same_or_conflict(existing: Artifact, new: &Artifact) -> ApiResult<(StatusCode, Json<Artifact>)> {
    if existing.sha256 == new.sha256 {
        Ok((StatusCode::OK, Json(existing)))
    } else {
        Err(ApiError::conflict(format!(
            "{} {} exists already with other content (sha256 {}); versions are immutable, push a new version",
            existing.application, existing.version, existing.sha256
        )))
    }
}

async fn stream_file(s: &AppState, sha256: &str) -> ApiResult<Response> {
    let path = s.artifacts.path_of(sha256).ok_or_else(|| ApiError::bad_request("invalid sha256"))?;
    let f = tokio::fs::File::open(&path).await.map_err(|_| ApiError::not_found("artifact content not found"))?;
    let len = f.metadata().await.map_err(ApiError::internal)?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 64 * 1024));
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_LENGTH, len.to_string())],
        body,
    )
        .into_response())
}

async fn download_artifact_by_version(
    State(s): S,
    Path((app, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    let a = s
        .store
        .get_artifact(&app, &version)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("artifact {app} {version} not found")))?;
    stream_file(&s, &a.sha256).await
}

// ---- deployments ----------------------------------------------------------------------------

async fn create_deployment(
    State(s): S,
    Extension(p): P,
    ApiJson(req): ApiJson<NewDeployment>,
) -> ApiResult<impl IntoResponse> {
    if let Some(pl) = s.store.get_pipeline(&req.pipeline).await? {
        check_scope(&p, Privilege::DeploymentStart, &pl.application)?;
    }
    let st = s.engine.start(&req.pipeline, &req.version, &p.label(), None).await?;
    Ok((StatusCode::CREATED, Json(st.to_view())))
}

#[derive(Deserialize)]
struct DeploymentQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

async fn list_deployments(
    State(s): S,
    Query(q): Query<DeploymentQuery>,
) -> ApiResult<Json<Vec<drover_types::Deployment>>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(x) => {
            Some(DeploymentStatus::parse(x).ok_or_else(|| ApiError::bad_request(format!("unknown status {x:?}")))?)
        }
    };
    let f = DeploymentFilter { pipeline: q.pipeline, status, limit: q.limit };
    let list = s.store.list_deployments(&f).await?;
    Ok(Json(
        list.into_iter().map(|d| drover_core::DeploymentState { deployment: d, tasks: Vec::new() }.to_view()).collect(),
    ))
}

async fn get_deployment(State(s): S, Path(id): Path<String>) -> ApiResult<Json<drover_types::Deployment>> {
    let id = parse_id(&id)?;
    let st =
        s.store.load_deployment(id).await?.ok_or_else(|| ApiError::not_found(format!("deployment {id} not found")))?;
    Ok(Json(st.to_view()))
}

async fn deployment_events(State(s): S, Path(id): Path<String>) -> ApiResult<Json<Vec<drover_types::DeploymentEvent>>> {
    let id = parse_id(&id)?;
    if s.store.load_deployment(id).await?.is_none() {
        return Err(ApiError::not_found(format!("deployment {id} not found")));
    }
    Ok(Json(s.store.events(id).await?))
}

#[derive(Deserialize)]
struct LogQuery {
    after: Option<i64>,
    limit: Option<u32>,
    follow: Option<bool>,
}

async fn deployment_logs(State(s): S, Path(id): Path<String>, Query(q): Query<LogQuery>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    if s.store.load_deployment(id).await?.is_none() {
        return Err(ApiError::not_found(format!("deployment {id} not found")));
    }
    let after = q.after.unwrap_or(0);
    if q.follow.unwrap_or(false) {
        return Ok(crate::sse::follow(s.clone(), id, after));
    }
    let lines = s.store.logs(id, after, q.limit.unwrap_or(1000).min(10_000)).await?;
    let next = lines.last().map(|l| l.id).unwrap_or(after);
    Ok(Json(LogPage { lines, next }).into_response())
}

async fn act(
    s: S,
    p: P,
    Path(id): Path<String>,
    body: axum::body::Bytes,
    action: Action,
    privilege: Privilege,
) -> ApiResult<Json<drover_types::Deployment>> {
    let (State(s), Extension(p)) = (s, p);
    let id = parse_id(&id)?;
    if let Some(d) = s.store.load_deployment(id).await? {
        check_scope(&p, privilege, &d.deployment.application)?;
    }
    let req: ActionRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ActionRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let reason = req.reason.or(req.comment);
    let st = s.engine.act(id, action, &p.label(), &p.roles, reason).await?;
    Ok(Json(st.to_view()))
}

macro_rules! action_handlers {
    ($($name:ident => $action:ident, $privilege:ident),+ $(,)?) => {$(
        async fn $name(s: S, p: P, id: Path<String>, body: axum::body::Bytes) -> ApiResult<Json<drover_types::Deployment>> {
            act(s, p, id, body, Action::$action, Privilege::$privilege).await
        }
    )+};
}

action_handlers! {
    action_abort => Abort, DeploymentAbort,
    action_pause => Pause, DeploymentPause,
    action_resume => Resume, DeploymentPause,
    action_retry => Retry, DeploymentRetry,
    action_skip => Skip, DeploymentSkip,
    action_approve => Approve, TaskApprove,
    action_reject => Reject, TaskApprove,
    action_promote => Promote, DeploymentPromote,
    action_rollback => Rollback, DeploymentRollback,
}

// ---- operators ------------------------------------------------------------------------------

const MIN_PASSWORD_LEN: usize = 12;

fn operator_view(o: OperatorRecord) -> Operator {
    Operator {
        name: o.name,
        email: o.email,
        roles: o.roles,
        disabled: o.disabled,
        failed_logins: o.failed_logins,
        locked_until: o.locked_until.filter(|t| *t > Timestamp::now()),
        created_at: o.created_at,
    }
}

fn check_roles(s: &AppState, roles: &[String]) -> ApiResult<()> {
    if roles.is_empty() {
        return Err(ApiError::bad_request("at least one role is needed"));
    }
    for r in roles {
        if r == "agent" || s.principals.role(r).is_none() {
            return Err(ApiError::bad_request(format!(
                "unknown role {r:?}; built-in roles: {} (and custom roles, see GET /api/v1/roles)",
                drover_core::rbac::BUILT_IN_ROLES
                    .iter()
                    .filter(|x| **x != "agent")
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

async fn hash_new_password(password: &str) -> ApiResult<String> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(ApiError::bad_request(format!("passwords need at least {MIN_PASSWORD_LEN} characters")));
    }
    let pw = password.to_string();
    tokio::task::spawn_blocking(move || crate::auth::hash_password(&pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

async fn load_operator(s: &AppState, name: &str) -> ApiResult<OperatorRecord> {
    s.store.get_operator(name).await?.ok_or_else(|| ApiError::not_found(format!("operator {name} not found")))
}

async fn list_operators(State(s): S) -> ApiResult<Json<Vec<Operator>>> {
    Ok(Json(s.store.list_operators().await?.into_iter().map(operator_view).collect()))
}

async fn get_operator(State(s): S, Path(name): Path<String>) -> ApiResult<Json<Operator>> {
    Ok(Json(operator_view(load_operator(&s, &name).await?)))
}

async fn create_operator(
    State(s): S,
    ApiJson(n): ApiJson<NewOperator>,
) -> ApiResult<(StatusCode, Json<OperatorCreated>)> {
    validate_name("operator", &n.name)?;
    check_roles(&s, &n.roles)?;
    if s.store.get_agent(&n.name).await?.is_some() {
        return Err(ApiError::conflict(format!("{} is an agent's name", n.name)));
    }
    let generated = n.password.is_none().then(new_secret);
    let password = n.password.clone().or_else(|| generated.clone()).unwrap_or_default();
    let rec = OperatorRecord {
        name: n.name.clone(),
        password_hash: hash_new_password(&password).await?,
        roles: n.roles,
        email: n.email,
        created_at: Timestamp::now(),
        ..Default::default()
    };
    if !s.store.insert_operator(&rec).await? {
        return Err(ApiError::conflict(format!("operator {} exists already", n.name)));
    }
    Ok((StatusCode::CREATED, Json(OperatorCreated { operator: operator_view(rec), password: generated })))
}

async fn update_operator(
    State(s): S,
    Extension(p): P,
    Path(name): Path<String>,
    ApiJson(u): ApiJson<OperatorUpdate>,
) -> ApiResult<Json<Operator>> {
    let mut o = load_operator(&s, &name).await?;
    if let Some(roles) = u.roles {
        check_roles(&s, &roles)?;
        o.roles = roles;
    }
    if let Some(e) = u.email {
        o.email = Some(e).filter(|e| !e.is_empty());
    }
    if let Some(d) = u.disabled {
        if d && name == p.name {
            return Err(ApiError::conflict("you cannot disable yourself"));
        }
        o.disabled = d;
    }
    s.store.update_operator(&o).await?;
    if o.disabled {
        crate::oauth::grants::revoke_sessions(&s, &o.name).await?;
    }
    Ok(Json(operator_view(o)))
}

async fn unlock_operator(State(s): S, Path(name): Path<String>) -> ApiResult<Json<Operator>> {
    let mut o = load_operator(&s, &name).await?;
    o.failed_logins = 0;
    o.locked_until = None;
    s.store.update_operator(&o).await?;
    Ok(Json(operator_view(o)))
}

async fn set_operator_password(
    State(s): S,
    Path(name): Path<String>,
    ApiJson(pc): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    let mut o = load_operator(&s, &name).await?;
    o.password_hash = hash_new_password(&pc.password).await?;
    o.failed_logins = 0;
    o.locked_until = None;
    s.store.update_operator(&o).await?;
    // A new password ends the sessions signed in with the old one.
    crate::oauth::grants::revoke_sessions(&s, &o.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every login session of the operator: their access and refresh tokens stop working now.
async fn revoke_operator_sessions(State(s): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    load_operator(&s, &name).await?;
    crate::oauth::grants::revoke_sessions(&s, &name).await?;
    tracing::info!(operator = %name, "operator sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}

// ---- roles and access groups ------------------------------------------------------------------

fn builtin_role_view(name: &str) -> drover_types::Role {
    drover_types::Role {
        name: name.into(),
        privileges: drover_core::rbac::role_privileges(name)
            .unwrap_or_default()
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
        built_in: true,
        description: None,
    }
}

async fn list_roles(State(s): S) -> ApiResult<Json<Vec<drover_types::Role>>> {
    let mut out: Vec<drover_types::Role> =
        drover_core::rbac::BUILT_IN_ROLES.iter().filter(|r| **r != "agent").map(|r| builtin_role_view(r)).collect();
    for (_, body, _) in s.store.record_list(crate::access::ROLE).await? {
        if let Ok(r) = serde_json::from_str(&body) {
            out.push(r);
        }
    }
    Ok(Json(out))
}

async fn get_role(State(s): S, Path(name): Path<String>) -> ApiResult<Json<drover_types::Role>> {
    if drover_core::rbac::role_privileges(&name).is_some() && name != "agent" {
        return Ok(Json(builtin_role_view(&name)));
    }
    let (body, _) = s
        .store
        .record_get(crate::access::ROLE, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("role {name} not found")))?;
    Ok(Json(serde_json::from_str(&body).map_err(ApiError::internal)?))
}

fn check_role_def(r: &mut drover_types::Role) -> ApiResult<()> {
    validate_name("role", &r.name)?;
    if drover_core::rbac::role_privileges(&r.name).is_some() {
        return Err(ApiError::conflict(format!("{} is a built-in role and cannot be changed", r.name)));
    }
    if r.privileges.is_empty() {
        return Err(ApiError::bad_request("a role needs at least one privilege"));
    }
    for p in &r.privileges {
        match crate::access::privilege(p) {
            Some(drover_core::rbac::Privilege::AgentWork) | None => {
                return Err(ApiError::bad_request(format!(
                    "unknown privilege {p:?}; privileges: {}",
                    Privilege::ALL
                        .iter()
                        .filter(|x| **x != Privilege::AgentWork)
                        .map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            Some(_) => {}
        }
    }
    r.built_in = false;
    r.privileges.sort();
    r.privileges.dedup();
    Ok(())
}

async fn create_role(
    State(s): S,
    ApiJson(mut r): ApiJson<drover_types::Role>,
) -> ApiResult<(StatusCode, Json<drover_types::Role>)> {
    check_role_def(&mut r)?;
    let body = serde_json::to_string(&r).map_err(ApiError::internal)?;
    if !s.store.record_insert(crate::access::ROLE, &r.name, &body, None).await? {
        return Err(ApiError::conflict(format!("role {} exists already", r.name)));
    }
    s.principals.reload(s.store.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

async fn put_role(
    State(s): S,
    Path(name): Path<String>,
    ApiJson(mut r): ApiJson<drover_types::Role>,
) -> ApiResult<Json<drover_types::Role>> {
    if r.name != name {
        return Err(ApiError::bad_request(format!("the body names role {:?}, the path {name:?}", r.name)));
    }
    check_role_def(&mut r)?;
    put_record(&s, crate::access::ROLE, &name, &r).await?;
    Ok(Json(r))
}

/// Creates or replaces a record (compare-and-swap, a few tries), then reloads the access table.
async fn put_record<T: serde::Serialize>(s: &AppState, kind: &str, key: &str, value: &T) -> ApiResult<()> {
    let body = serde_json::to_string(value).map_err(ApiError::internal)?;
    for _ in 0..5 {
        let done = match s.store.record_get(kind, key).await? {
            Some((_, v)) => s.store.record_update(kind, key, v, &body, None).await?,
            None => s.store.record_insert(kind, key, &body, None).await?,
        };
        if done {
            s.principals.reload(s.store.as_ref()).await?;
            return Ok(());
        }
    }
    Err(ApiError::conflict(format!("{key} is being changed by someone else; try again")))
}

async fn delete_role(State(s): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if drover_core::rbac::role_privileges(&name).is_some() {
        return Err(ApiError::conflict(format!("{name} is a built-in role and cannot be deleted")));
    }
    let in_use = s.store.list_operators().await?.iter().any(|o| o.roles.contains(&name))
        || s.store.list_clients().await?.iter().any(|c| c.roles.contains(&name))
        || s.store.record_list(crate::access::GROUP).await?.iter().any(|(_, b, _)| {
            serde_json::from_str::<drover_types::AccessGroup>(b).is_ok_and(|g| g.roles.contains(&name))
        });
    if in_use {
        return Err(ApiError::conflict(format!("role {name} is still held by operators, clients or access groups")));
    }
    if !s.store.record_delete(crate::access::ROLE, &name).await? {
        return Err(ApiError::not_found(format!("role {name} not found")));
    }
    s.principals.reload(s.store.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_groups(State(s): S) -> ApiResult<Json<Vec<drover_types::AccessGroup>>> {
    let rows = s.store.record_list(crate::access::GROUP).await?;
    Ok(Json(rows.iter().filter_map(|(_, b, _)| serde_json::from_str(b).ok()).collect()))
}

async fn get_group(State(s): S, Path(name): Path<String>) -> ApiResult<Json<drover_types::AccessGroup>> {
    let (body, _) = s
        .store
        .record_get(crate::access::GROUP, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("access group {name} not found")))?;
    Ok(Json(serde_json::from_str(&body).map_err(ApiError::internal)?))
}

async fn check_group(s: &AppState, g: &mut drover_types::AccessGroup) -> ApiResult<()> {
    validate_name("access group", &g.name)?;
    check_roles(s, &g.roles)?;
    for o in &g.operators {
        if s.store.get_operator(o).await?.is_none() {
            return Err(ApiError::bad_request(format!("operator {o} does not exist")));
        }
    }
    for c in &g.clients {
        if s.store.get_client(c).await?.is_none() {
            return Err(ApiError::bad_request(format!("client {c} does not exist")));
        }
    }
    for a in &g.applications {
        validate_name("application", a)?;
    }
    for v in [&mut g.roles, &mut g.operators, &mut g.clients, &mut g.applications] {
        v.sort();
        v.dedup();
    }
    Ok(())
}

async fn create_group(
    State(s): S,
    ApiJson(mut g): ApiJson<drover_types::AccessGroup>,
) -> ApiResult<(StatusCode, Json<drover_types::AccessGroup>)> {
    check_group(&s, &mut g).await?;
    let body = serde_json::to_string(&g).map_err(ApiError::internal)?;
    if !s.store.record_insert(crate::access::GROUP, &g.name, &body, None).await? {
        return Err(ApiError::conflict(format!("access group {} exists already", g.name)));
    }
    s.principals.reload(s.store.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(g)))
}

async fn put_group(
    State(s): S,
    Path(name): Path<String>,
    ApiJson(mut g): ApiJson<drover_types::AccessGroup>,
) -> ApiResult<Json<drover_types::AccessGroup>> {
    if g.name != name {
        return Err(ApiError::bad_request(format!("the body names access group {:?}, the path {name:?}", g.name)));
    }
    check_group(&s, &mut g).await?;
    put_record(&s, crate::access::GROUP, &name, &g).await?;
    Ok(Json(g))
}

async fn delete_group(State(s): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if !s.store.record_delete(crate::access::GROUP, &name).await? {
        return Err(ApiError::not_found(format!("access group {name} not found")));
    }
    s.principals.reload(s.store.as_ref()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A privilege held on this application (access groups may grant it only on some).
fn check_scope(p: &Principal, privilege: Privilege, application: &str) -> ApiResult<()> {
    if p.can(privilege, application) {
        Ok(())
    } else {
        tracing::warn!(principal = %p.label(), %privilege, application, "permission denied (application scope)");
        Err(ApiError::forbidden(format!("this needs the privilege {privilege} on application {application}")))
    }
}

// ---- OAuth clients --------------------------------------------------------------------------

fn client_view(c: ClientRecord) -> drover_types::Client {
    let now = Timestamp::now();
    drover_types::Client {
        client_id: c.client_id,
        roles: c.roles,
        disabled: c.disabled,
        created_at: c.created_at,
        secret_rotated_at: c.secret_rotated_at,
        previous_secret_valid_until: c.previous_valid_until.filter(|t| *t > now),
        tokens_not_before: Some(c.tokens_not_before).filter(|t| t.0 > 0),
        redirect_uris: c.metadata.redirect_uris,
        public: c.metadata.public,
        key_ids: c
            .metadata
            .jwks
            .as_ref()
            .and_then(|j| j["keys"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|k| k["kid"].as_str().map(String::from))
            .collect(),
        agent: c.metadata.agent,
    }
}

fn check_redirects(uris: &[String]) -> ApiResult<()> {
    for u in uris {
        crate::oauth::grants::redirect_registrable(u).map_err(ApiError::bad_request)?;
    }
    Ok(())
}

/// A JWKS for `private_key_jwt`: public keys only, each usable for signatures.
fn check_jwks(jwks: &serde_json::Value) -> ApiResult<()> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone())
        .map_err(|e| ApiError::bad_request(format!("jwks is not a JWK set: {e}")))?;
    if set.keys.is_empty() {
        return Err(ApiError::bad_request("jwks has no keys"));
    }
    for (i, k) in set.keys.iter().enumerate() {
        let raw = &jwks["keys"][i];
        if ["d", "p", "q", "k"].iter().any(|f| raw.get(f).is_some()) {
            return Err(ApiError::bad_request("jwks must hold public keys only (a private or symmetric key was sent)"));
        }
        if matches!(k.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)) {
            return Err(ApiError::bad_request("symmetric keys are not accepted"));
        }
        jsonwebtoken::DecodingKey::from_jwk(k).map_err(|e| ApiError::bad_request(format!("unusable key: {e}")))?;
    }
    Ok(())
}

async fn load_client(s: &AppState, id: &str) -> ApiResult<ClientRecord> {
    s.store.get_client(id).await?.ok_or_else(|| ApiError::not_found(format!("client {id} not found")))
}

async fn list_clients(State(s): S) -> ApiResult<Json<Vec<drover_types::Client>>> {
    Ok(Json(s.store.list_clients().await?.into_iter().map(client_view).collect()))
}

async fn get_client(State(s): S, Path(name): Path<String>) -> ApiResult<Json<drover_types::Client>> {
    Ok(Json(client_view(load_client(&s, &name).await?)))
}

async fn create_client(
    State(s): S,
    ApiJson(n): ApiJson<drover_types::NewClient>,
) -> ApiResult<(StatusCode, Json<drover_types::ClientSecret>)> {
    validate_name("client", &n.name)?;
    if !n.public {
        check_roles(&s, &n.roles)?;
    } else if !n.roles.is_empty() {
        return Err(ApiError::bad_request("a public client acts only for operators and holds no roles of its own"));
    }
    check_redirects(&n.redirect_uris)?;
    if let Some(j) = &n.jwks {
        check_jwks(j)?;
    }
    // Clients that authenticate with keys, and public clients, get no secret.
    let secret = if n.public || n.jwks.is_some() { String::new() } else { new_secret() };
    let rec = ClientRecord {
        client_id: n.name.clone(),
        secret_hash: if secret.is_empty() { String::new() } else { secret_hash(&secret) },
        roles: n.roles,
        created_at: Timestamp::now(),
        metadata: drover_core::store::ClientMetadata {
            redirect_uris: n.redirect_uris,
            public: n.public,
            jwks: n.jwks,
            agent: None,
        },
        ..Default::default()
    };
    s.store.insert_client(&rec).await?;
    Ok((
        StatusCode::CREATED,
        Json(drover_types::ClientSecret {
            client_id: n.name,
            client_secret: secret,
            previous_secret_valid_until: None,
        }),
    ))
}

async fn update_client(
    State(s): S,
    Path(name): Path<String>,
    ApiJson(u): ApiJson<drover_types::ClientUpdate>,
) -> ApiResult<Json<drover_types::Client>> {
    let mut c = load_client(&s, &name).await?;
    if let Some(roles) = u.roles {
        check_roles(&s, &roles)?;
        c.roles = roles;
    }
    if let Some(d) = u.disabled {
        c.disabled = d;
    }
    if c.disabled
        && let Some(agent) = &c.metadata.agent
    {
        s.store.update_client(&c).await?;
        s.engine.cut_off_agent(agent, "its client registration was disabled").await?;
    }
    if let Some(uris) = u.redirect_uris {
        check_redirects(&uris)?;
        c.metadata.redirect_uris = uris;
    }
    if let Some(j) = u.jwks {
        if j.is_null() {
            c.metadata.jwks = None;
        } else {
            check_jwks(&j)?;
            c.metadata.jwks = Some(j);
        }
    }
    s.store.update_client(&c).await?;
    Ok(Json(client_view(c)))
}

async fn delete_client(State(s): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let agent = s.store.get_client(&name).await?.and_then(|c| c.metadata.agent);
    if s.store.delete_client(&name).await? {
        if let Some(agent) = agent {
            s.engine.cut_off_agent(&agent, "its client registration was deleted").await?;
        }
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("client {name} not found")))
    }
}

/// A new secret; with a grace period the previous one keeps working until it ends, so running
/// agents and CI roll over without a failed call.
async fn regenerate_client_secret(
    State(s): S,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<drover_types::ClientSecret>> {
    let req: drover_types::RegenerateSecret = if body.iter().all(u8::is_ascii_whitespace) {
        Default::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    if req.grace_secs > 30 * 24 * 3600 {
        return Err(ApiError::bad_request("the grace period is at most 30 days"));
    }
    let mut c = load_client(&s, &name).await?;
    let now = Timestamp::now();
    let secret = new_secret();
    if req.grace_secs > 0 {
        c.previous_secret_hash = Some(c.secret_hash.clone());
        c.previous_valid_until = Some(now.plus(Duration::from_secs(req.grace_secs)));
    } else {
        c.previous_secret_hash = None;
        c.previous_valid_until = None;
    }
    c.secret_hash = secret_hash(&secret);
    c.secret_rotated_at = Some(now);
    s.store.update_client(&c).await?;
    Ok(Json(drover_types::ClientSecret {
        client_id: name,
        client_secret: secret,
        previous_secret_valid_until: c.previous_valid_until,
    }))
}

/// Every token the client holds stops working at once.
async fn revoke_client_tokens(State(s): S, Path(name): Path<String>) -> ApiResult<Json<drover_types::Client>> {
    let mut c = load_client(&s, &name).await?;
    c.tokens_not_before = Timestamp::now();
    s.store.update_client(&c).await?;
    if let Some(agent) = &c.metadata.agent {
        s.engine.cut_off_agent(agent, "its tokens were revoked").await?;
    }
    Ok(Json(client_view(c)))
}

// ---- signing keys -----------------------------------------------------------------------------

fn key_error(e: crate::oauth::keys::KeyError) -> ApiError {
    match e {
        crate::oauth::keys::KeyError::Store(e) => e.into(),
        crate::oauth::keys::KeyError::Key(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m),
        other => ApiError::internal(other),
    }
}

async fn list_keys(State(s): S) -> ApiResult<Json<Vec<drover_types::SigningKey>>> {
    let published = s.keys.jwks();
    let in_jwks = |kid: &str| published["keys"].as_array().is_some_and(|a| a.iter().any(|k| k["kid"] == kid));
    let keys = s
        .store
        .list_signing_keys()
        .await?
        .into_iter()
        .map(|k| drover_types::SigningKey {
            in_jwks: in_jwks(&k.kid),
            kid: k.kid,
            alg: k.alg,
            active: k.active,
            created_at: k.created_at,
            retired_at: k.retired_at,
        })
        .collect();
    Ok(Json(keys))
}

fn parse_alg(a: Option<&str>) -> ApiResult<Option<crate::oauth::jwt::Alg>> {
    a.map(|a| {
        crate::oauth::jwt::Alg::parse(a)
            .ok_or_else(|| ApiError::bad_request(format!("unknown algorithm {a:?}; ES256, EdDSA, RS256 or PS256")))
    })
    .transpose()
}

async fn rotate_key(State(s): S, body: axum::body::Bytes) -> ApiResult<Json<serde_json::Value>> {
    let req: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    // Default: the algorithm of the key being replaced.
    let alg = parse_alg(req["alg"].as_str())?.or(s.keys.active_alg()).unwrap_or(crate::oauth::jwt::Alg::ES256);
    let kid = s.keys.rotate(s.store.as_ref(), alg).await.map_err(key_error)?;
    Ok(Json(json!({"kid": kid, "alg": alg.as_str(), "active": true})))
}

async fn import_key(
    State(s): S,
    ApiJson(k): ApiJson<drover_types::KeyImport>,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(k.pkcs8_base64.trim())
        .map_err(|_| ApiError::bad_request("pkcs8_base64 is not base64"))?;
    let alg = parse_alg(k.alg.as_deref())?;
    let (kid, alg) = s.keys.import(s.store.as_ref(), &der, alg, k.activate).await.map_err(key_error)?;
    Ok((StatusCode::CREATED, Json(json!({"kid": kid, "alg": alg.as_str(), "active": k.activate}))))
}

// ---- authentication profiles -------------------------------------------------------------------

async fn list_profiles(State(s): S) -> ApiResult<Json<Vec<drover_types::AuthProfile>>> {
    Ok(Json(crate::profiles::Profiles::list(&s).await?))
}

async fn get_profile(State(s): S, Path(name): Path<String>) -> ApiResult<Json<drover_types::AuthProfile>> {
    crate::profiles::Profiles::get(&s, &name)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("auth profile {name} not found")))
}

async fn create_profile(
    State(s): S,
    ApiJson(p): ApiJson<drover_types::AuthProfile>,
) -> ApiResult<(StatusCode, Json<drover_types::AuthProfile>)> {
    Ok((StatusCode::CREATED, Json(s.profiles.put(&s, p, true).await?)))
}

async fn put_profile(
    State(s): S,
    Path(name): Path<String>,
    ApiJson(p): ApiJson<drover_types::AuthProfile>,
) -> ApiResult<Json<drover_types::AuthProfile>> {
    if p.name != name {
        return Err(ApiError::bad_request(format!("the body names profile {:?}, the path {name:?}", p.name)));
    }
    Ok(Json(s.profiles.put(&s, p, false).await?))
}

async fn delete_profile(State(s): S, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if s.store.record_delete(crate::profiles::KIND, &name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("auth profile {name} not found")))
    }
}

// ---- audit ----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct AuditQuery {
    principal: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

async fn list_audit(State(s): S, Query(q): Query<AuditQuery>) -> ApiResult<Json<Vec<drover_types::audit::AuditEntry>>> {
    let f = drover_core::store::AuditFilter {
        principal: q.principal,
        action: q.action,
        outcome: q.outcome,
        before: q.before,
        limit: q.limit,
    };
    Ok(Json(s.store.search_audit(&f).await?))
}

/// Walks the whole chain in pages (bounded: 10 million entries).
async fn verify_audit(State(s): S) -> ApiResult<Json<drover_types::audit::AuditVerification>> {
    let mut head: Option<(i64, String)> = None;
    let mut count = 0i64;
    for _ in 0..10_000 {
        let after = head.as_ref().map(|h| h.0).unwrap_or(0);
        let page = s.store.audit_entries(after, 1000).await?;
        if page.is_empty() {
            break;
        }
        match drover_core::audit::verify(head.clone(), &page) {
            Ok(h) => {
                count += page.len() as i64;
                head = h;
            }
            Err(broken) => {
                tracing::error!(seq = broken.seq, reason = %broken.reason, "audit log chain is broken");
                // Entries 1..seq-1 are intact (the chain is contiguous up to the break).
                return Ok(Json(drover_types::audit::AuditVerification {
                    ok: false,
                    entries: broken.seq - 1,
                    head_seq: None,
                    head_hash: None,
                    broken: Some(broken),
                }));
            }
        }
    }
    Ok(Json(drover_types::audit::AuditVerification {
        ok: true,
        entries: count,
        head_seq: head.as_ref().map(|h| h.0),
        head_hash: head.map(|h| h.1),
        broken: None,
    }))
}

// ---- system ---------------------------------------------------------------------------------

async fn system_nodes(State(s): S) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!([{
        "node": s.node,
        "version": env!("CARGO_PKG_VERSION"),
        "backend": s.store.backend(),
        "started_at": s.started_at,
        "listen": s.listen,
    }])))
}

async fn system_queues(State(s): S) -> ApiResult<Json<serde_json::Value>> {
    let mut out = Vec::new();
    for e in s.store.list_environments().await? {
        let ready = s.store.claimable_tasks(&e.name, 10_000).await?.len();
        out.push(json!({"environment": e.name, "ready_tasks": ready}));
    }
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for id in s.store.active_deployment_ids().await? {
        if let Some(st) = s.store.load_deployment(id).await? {
            *by_status.entry(st.deployment.status.as_str()).or_default() += 1;
        }
    }
    Ok(Json(json!({"environments": out, "active_deployments": by_status})))
}

// ---- agent protocol -------------------------------------------------------------------------

async fn agent_poll(State(s): S, Extension(p): P, ApiJson(req): ApiJson<PollRequest>) -> ApiResult<Json<PollResponse>> {
    let agent = s.store.get_agent(&p.name).await?.ok_or_else(ApiError::unauthorized)?;
    let tasks = s
        .engine
        .poll(&agent.name, &agent.environment, &req.running, req.capacity.min(64), Duration::from_millis(req.wait_ms))
        .await?;
    Ok(Json(PollResponse { tasks, heartbeat_interval_ms: s.engine.heartbeat_interval().as_millis() as u64 }))
}

async fn agent_events(
    State(s): S,
    Extension(p): P,
    Path(attempt): Path<String>,
    ApiJson(ev): ApiJson<AttemptEvents>,
) -> ApiResult<Json<AttemptEventsResponse>> {
    let now = Timestamp::now();
    let logs: Vec<_> = ev.logs.into_iter().map(|l| (now, l.stream, l.line)).collect();
    let alive = s.engine.attempt_events(&p.name, &attempt, &logs).await?;
    Ok(Json(AttemptEventsResponse { cancel: !alive }))
}

async fn agent_result(
    State(s): S,
    Extension(p): P,
    Path(attempt): Path<String>,
    ApiJson(r): ApiJson<AttemptResult>,
) -> ApiResult<Json<AttemptResultResponse>> {
    let status = s.engine.attempt_result(&p.name, &attempt, r).await?;
    let status = match status {
        drover_core::machine::ResultStatus::Recorded => "recorded",
        drover_core::machine::ResultStatus::Duplicate => "duplicate",
        drover_core::machine::ResultStatus::Stale => "stale",
    };
    Ok(Json(AttemptResultResponse { status: status.into() }))
}

async fn agent_artifact(State(s): S, Path(sha256): Path<String>) -> ApiResult<Response> {
    stream_file(&s, &sha256).await
}
