//! `/api/v1/system`.

use axum::Json;

use super::Call;
use crate::error::ApiResult;
use crate::service::system;

pub async fn nodes(call: Call) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(system::nodes(&call.ctx()).await?))
}

pub async fn queues(call: Call) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(system::queues(&call.ctx()).await?))
}
