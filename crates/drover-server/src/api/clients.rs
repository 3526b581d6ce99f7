//! `/api/v1/clients`.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::{Client, ClientSecret, ClientUpdate, NewClient, RegenerateSecret};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::{clients, optional_json};

pub async fn list(call: Call) -> ApiResult<Json<Vec<Client>>> {
    Ok(Json(clients::list(&call.ctx()).await?))
}

pub async fn get(call: Call, Path(name): Path<String>) -> ApiResult<Json<Client>> {
    Ok(Json(clients::get(&call.ctx(), &name).await?))
}

pub async fn create(call: Call, ApiJson(n): ApiJson<NewClient>) -> ApiResult<(StatusCode, Json<ClientSecret>)> {
    Ok((StatusCode::CREATED, Json(clients::create(&call.ctx(), n).await?)))
}

pub async fn update(
    call: Call,
    Path(name): Path<String>,
    ApiJson(u): ApiJson<ClientUpdate>,
) -> ApiResult<Json<Client>> {
    Ok(Json(clients::update(&call.ctx(), &name, u).await?))
}

pub async fn delete(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    clients::delete(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn regenerate_secret(
    call: Call,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ClientSecret>> {
    let req: RegenerateSecret = optional_json(&body)?;
    Ok(Json(clients::regenerate_secret(&call.ctx(), &name, req).await?))
}

pub async fn revoke_tokens(call: Call, Path(name): Path<String>) -> ApiResult<Json<Client>> {
    Ok(Json(clients::revoke_tokens(&call.ctx(), &name).await?))
}
