//! `/api/v1/environments/{env}/variables`.

use axum::Json;
use axum::extract::Path;
use axum::http::StatusCode;
use drover_types::{SetVariable, Variable};

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::variables;

pub async fn list(call: Call, Path(env): Path<String>) -> ApiResult<Json<Vec<Variable>>> {
    Ok(Json(variables::list(&call.ctx(), &env).await?))
}

pub async fn put(
    call: Call,
    Path((env, name)): Path<(String, String)>,
    ApiJson(v): ApiJson<SetVariable>,
) -> ApiResult<Json<Variable>> {
    Ok(Json(variables::set(&call.ctx(), &env, &name, v).await?))
}

pub async fn delete(call: Call, Path((env, name)): Path<(String, String)>) -> ApiResult<StatusCode> {
    variables::delete(&call.ctx(), &env, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
