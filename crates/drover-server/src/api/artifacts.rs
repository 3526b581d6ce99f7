//! `/api/v1/artifacts`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use drover_types::Artifact;
use serde::Deserialize;

use super::{Call, stream_file};
use crate::error::ApiResult;
use crate::service::artifacts::{self, Pushed};

#[derive(Deserialize)]
pub struct ArtifactQuery {
    application: Option<String>,
}

pub async fn list(call: Call, Query(q): Query<ArtifactQuery>) -> ApiResult<Json<Vec<Artifact>>> {
    Ok(Json(artifacts::list(&call.ctx(), q.application.as_deref()).await?))
}

pub async fn get(call: Call, Path((app, version)): Path<(String, String)>) -> ApiResult<Json<Artifact>> {
    Ok(Json(artifacts::get(&call.ctx(), &app, &version).await?))
}

pub async fn content(call: Call, Path((app, version)): Path<(String, String)>) -> ApiResult<Response> {
    let (f, len) = artifacts::content(&call.ctx(), &app, &version).await?;
    Ok(stream_file(f, len))
}

pub async fn push(
    call: Call,
    Path((app, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    let expected = headers.get("x-drover-sha256").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok(match artifacts::push(&call.ctx(), &app, &version, expected, body.into_data_stream()).await? {
        Pushed::Created(a) => (StatusCode::CREATED, Json(a)),
        Pushed::Same(a) => (StatusCode::OK, Json(a)),
    })
}

pub async fn delete(call: Call, Path((app, version)): Path<(String, String)>) -> ApiResult<StatusCode> {
    artifacts::delete(&call.ctx(), &app, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}
