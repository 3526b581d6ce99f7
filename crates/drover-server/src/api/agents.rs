//! `/api/v1/agents` (and `/api/v1/system/agents`).

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::{Agent, AgentCredentials, NewAgent};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::agents;

pub async fn list(call: Call) -> ApiResult<Json<Vec<Agent>>> {
    Ok(Json(agents::list(&call.ctx()).await?))
}

pub async fn get(call: Call, Path(name): Path<String>) -> ApiResult<Json<Agent>> {
    Ok(Json(agents::get(&call.ctx(), &name).await?))
}

pub async fn create(call: Call, ApiJson(a): ApiJson<NewAgent>) -> ApiResult<(StatusCode, Json<AgentCredentials>)> {
    Ok((StatusCode::CREATED, Json(agents::create(&call.ctx(), a).await?)))
}

pub async fn set_labels(
    call: Call,
    Path(name): Path<String>,
    ApiJson(labels): ApiJson<std::collections::BTreeMap<String, String>>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(agents::set_labels(&call.ctx(), &name, labels).await?))
}

pub async fn approve(call: Call, Path(name): Path<String>) -> ApiResult<Json<Agent>> {
    Ok(Json(agents::approve(&call.ctx(), &name).await?))
}

pub async fn delete(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    agents::delete(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
