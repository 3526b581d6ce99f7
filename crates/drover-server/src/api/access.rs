//! `/api/v1/roles` and `/api/v1/access-groups`.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::{AccessGroup, Role};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::access;

pub async fn list_roles(call: Call) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(access::list_roles(&call.ctx()).await?))
}

pub async fn get_role(call: Call, Path(name): Path<String>) -> ApiResult<Json<Role>> {
    Ok(Json(access::get_role(&call.ctx(), &name).await?))
}

pub async fn create_role(call: Call, ApiJson(r): ApiJson<Role>) -> ApiResult<(StatusCode, Json<Role>)> {
    Ok((StatusCode::CREATED, Json(access::create_role(&call.ctx(), r).await?)))
}

pub async fn put_role(call: Call, Path(name): Path<String>, ApiJson(r): ApiJson<Role>) -> ApiResult<Json<Role>> {
    Ok(Json(access::put_role(&call.ctx(), &name, r).await?))
}

pub async fn delete_role(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    access::delete_role(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_groups(call: Call) -> ApiResult<Json<Vec<AccessGroup>>> {
    Ok(Json(access::list_groups(&call.ctx()).await?))
}

pub async fn get_group(call: Call, Path(name): Path<String>) -> ApiResult<Json<AccessGroup>> {
    Ok(Json(access::get_group(&call.ctx(), &name).await?))
}

pub async fn create_group(call: Call, ApiJson(g): ApiJson<AccessGroup>) -> ApiResult<(StatusCode, Json<AccessGroup>)> {
    Ok((StatusCode::CREATED, Json(access::create_group(&call.ctx(), g).await?)))
}

pub async fn put_group(
    call: Call,
    Path(name): Path<String>,
    ApiJson(g): ApiJson<AccessGroup>,
) -> ApiResult<Json<AccessGroup>> {
    Ok(Json(access::put_group(&call.ctx(), &name, g).await?))
}

pub async fn delete_group(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    access::delete_group(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
