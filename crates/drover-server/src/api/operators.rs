//! `/api/v1/operators`.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::{NewOperator, Operator, OperatorCreated, OperatorUpdate, PasswordChange};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::operators;

pub async fn list(call: Call) -> ApiResult<Json<Vec<Operator>>> {
    Ok(Json(operators::list(&call.ctx()).await?))
}

pub async fn get(call: Call, Path(name): Path<String>) -> ApiResult<Json<Operator>> {
    Ok(Json(operators::get(&call.ctx(), &name).await?))
}

pub async fn create(call: Call, ApiJson(n): ApiJson<NewOperator>) -> ApiResult<(StatusCode, Json<OperatorCreated>)> {
    Ok((StatusCode::CREATED, Json(operators::create(&call.ctx(), n).await?)))
}

pub async fn update(
    call: Call,
    Path(name): Path<String>,
    ApiJson(u): ApiJson<OperatorUpdate>,
) -> ApiResult<Json<Operator>> {
    Ok(Json(operators::update(&call.ctx(), &name, u).await?))
}

pub async fn unlock(call: Call, Path(name): Path<String>) -> ApiResult<Json<Operator>> {
    Ok(Json(operators::unlock(&call.ctx(), &name).await?))
}

pub async fn set_password(
    call: Call,
    Path(name): Path<String>,
    ApiJson(pc): ApiJson<PasswordChange>,
) -> ApiResult<StatusCode> {
    operators::set_password(&call.ctx(), &name, pc).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_sessions(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    operators::revoke_sessions(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
