//! `/api/v1/environments`.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::{Environment, NewEnvironment};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::environments;

pub async fn list(call: Call) -> ApiResult<Json<Vec<Environment>>> {
    Ok(Json(environments::list(&call.ctx()).await?))
}

pub async fn get(call: Call, Path(name): Path<String>) -> ApiResult<Json<Environment>> {
    Ok(Json(environments::get(&call.ctx(), &name).await?))
}

pub async fn create(call: Call, ApiJson(e): ApiJson<NewEnvironment>) -> ApiResult<(StatusCode, Json<Environment>)> {
    Ok((StatusCode::CREATED, Json(environments::create(&call.ctx(), e).await?)))
}

pub async fn put(
    call: Call,
    Path(name): Path<String>,
    ApiJson(e): ApiJson<NewEnvironment>,
) -> ApiResult<Json<Environment>> {
    Ok(Json(environments::update(&call.ctx(), &name, e).await?))
}

pub async fn delete(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    environments::delete(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
