//! `/api/v1/deployments` and the deployment actions.

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use drover_types::{Action, ActionRequest, Deployment, DeploymentEvent, DeploymentStatus, NewDeployment};
use serde::Deserialize;

use super::{Call, parse_id};
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::service::{deployments, optional_json};

pub async fn create(call: Call, ApiJson(req): ApiJson<NewDeployment>) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::CREATED, Json(deployments::start(&call.ctx(), req).await?)))
}

#[derive(Deserialize)]
pub struct DeploymentQuery {
    pipeline: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
    /// The next page: deployments with a smaller id.
    before: Option<i64>,
}

pub async fn list(call: Call, Query(q): Query<DeploymentQuery>) -> ApiResult<Json<Vec<Deployment>>> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(x) => {
            Some(DeploymentStatus::parse(x).ok_or_else(|| ApiError::bad_request(format!("unknown status {x:?}")))?)
        }
    };
    Ok(Json(deployments::list(&call.ctx(), q.pipeline, status, q.limit, q.before).await?))
}

pub async fn get(call: Call, Path(id): Path<String>) -> ApiResult<Json<Deployment>> {
    Ok(Json(deployments::get(&call.ctx(), parse_id(&id)?).await?))
}

pub async fn events(call: Call, Path(id): Path<String>) -> ApiResult<Json<Vec<DeploymentEvent>>> {
    Ok(Json(deployments::events(&call.ctx(), parse_id(&id)?).await?))
}

#[derive(Deserialize)]
pub struct LogQuery {
    after: Option<i64>,
    limit: Option<u32>,
    follow: Option<bool>,
}

pub async fn logs(call: Call, Path(id): Path<String>, Query(q): Query<LogQuery>) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let after = q.after.unwrap_or(0);
    if q.follow.unwrap_or(false) {
        deployments::may_follow(&call.ctx(), id).await?;
        let check = call.credential.clone().map(|c| super::guard::follow_check(&call.state, c, id));
        return Ok(crate::sse::follow_while(call.state.clone(), call.caller.clone(), id, after, check));
    }
    Ok(Json(deployments::logs(&call.ctx(), id, after, q.limit.unwrap_or(1000)).await?).into_response())
}

async fn act(call: Call, id: String, body: axum::body::Bytes, action: Action) -> ApiResult<Json<Deployment>> {
    let id = parse_id(&id)?;
    let req: ActionRequest = optional_json(&body)?;
    Ok(Json(deployments::act(&call.ctx(), id, action, req).await?))
}

macro_rules! action_handlers {
    ($($name:ident => $action:ident),+ $(,)?) => {$(
        pub async fn $name(call: Call, Path(id): Path<String>, body: axum::body::Bytes) -> ApiResult<Json<Deployment>> {
            act(call, id, body, Action::$action).await
        }
    )+};
}

action_handlers! {
    abort => Abort,
    pause => Pause,
    resume => Resume,
    retry => Retry,
    skip => Skip,
    approve => Approve,
    reject => Reject,
    promote => Promote,
    rollback => Rollback,
}
