//! `/api/v1/pipelines`.

use axum::Json;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use drover_core::spec;
use drover_types::{ApplyResult, Pipeline, PipelineSpec};

use super::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::pipelines;

/// A pipeline spec from JSON, or from YAML when the content type says so (then with a
/// locator, so that the service's errors about a key name its line too).
fn spec_from_body<'a>(headers: &HeaderMap, body: &'a [u8]) -> ApiResult<(PipelineSpec, Option<&'a str>)> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body is not UTF-8"))?;
    if ct.contains("yaml") {
        Ok((spec::parse_yaml(text)?, Some(text)))
    } else {
        let spec: PipelineSpec = serde_json::from_str(text)
            .map_err(|e| ApiError::new(drover_types::ErrorCode::InvalidSpec, e.to_string()))?;
        spec::validate(&spec)?;
        Ok((spec, None))
    }
}

/// The service's error, with the line of the key it names (the document is scanned only then).
fn located(e: drover_core::Error, yaml: &Option<&str>) -> drover_core::Error {
    match (yaml, &e) {
        (Some(text), drover_core::Error::Invalid(_)) => spec::Locator::new(text).locate(e),
        _ => e,
    }
}

fn applied(r: ApplyResult) -> (StatusCode, Json<ApplyResult>) {
    let status = if r.outcome == "created" { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(r))
}

pub async fn list(call: Call) -> ApiResult<Json<Vec<Pipeline>>> {
    Ok(Json(pipelines::list(&call.ctx()).await?))
}

pub async fn get(call: Call, Path(name): Path<String>) -> ApiResult<Json<Pipeline>> {
    Ok(Json(pipelines::get(&call.ctx(), &name).await?))
}

pub async fn create(call: Call, headers: HeaderMap, body: axum::body::Bytes) -> ApiResult<impl IntoResponse> {
    let (spec, at) = spec_from_body(&headers, &body)?;
    Ok(applied(pipelines::apply(&call.ctx(), spec).await.map_err(|e| located(e, &at))?))
}

pub async fn put(
    call: Call,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<impl IntoResponse> {
    let (mut spec, at) = spec_from_body(&headers, &body)?;
    if spec.pipeline.is_none() {
        spec.pipeline = Some(name.clone());
    }
    if spec.name() != name {
        return Err(ApiError::bad_request(format!("the body names pipeline {:?}, the path {name:?}", spec.name())));
    }
    Ok(applied(pipelines::apply(&call.ctx(), spec).await.map_err(|e| located(e, &at))?))
}

pub async fn delete(call: Call, Path(name): Path<String>) -> ApiResult<StatusCode> {
    pipelines::delete(&call.ctx(), &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
