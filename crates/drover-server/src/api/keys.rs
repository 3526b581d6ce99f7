//! `/api/v1/keys`.

use axum::Json;
use axum::http::StatusCode;
use drover_types::{KeyImport, SigningKey};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::{keys, optional_json};

pub async fn list(call: Call) -> ApiResult<Json<Vec<SigningKey>>> {
    Ok(Json(keys::list(&call.ctx()).await?))
}

pub async fn rotate(call: Call, body: axum::body::Bytes) -> ApiResult<Json<serde_json::Value>> {
    let req: serde_json::Value = optional_json(&body)?;
    Ok(Json(keys::rotate(&call.ctx(), req["alg"].as_str()).await?))
}

pub async fn import(call: Call, ApiJson(k): ApiJson<KeyImport>) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    Ok((StatusCode::CREATED, Json(keys::import(&call.ctx(), k).await?)))
}
