//! `/api/v1/auth-profiles`.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::AuthProfile;

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::profiles;

pub async fn list(call: Call) -> ApiResult<Json<Vec<AuthProfile>>> {
    Ok(Json(profiles::list(&call.ctx()).await?))
}

pub async fn get(call: Call, Path(name): Path<String>) -> ApiResult<Json<AuthProfile>> {
    Ok(Json(profiles::get(&call.ctx(), &name).await?))
}

pub async fn create(call: Call, ApiJson(p): ApiJson<AuthProfile>) -> ApiResult<(StatusCode, Json<AuthProfile>)> {
    Ok((StatusCode::CREATED, Json(profiles::create(&call.ctx(), p).await?)))
}

pub async fn put(
    call: Call,
    Path(name): Path<String>,
    ApiJson(p): ApiJson<AuthProfile>,
) -> ApiResult<Json<AuthProfile>> {
    Ok(Json(profiles::put(&call.ctx(), &name, p).await?))
}

pub async fn delete(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    profiles::delete(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
