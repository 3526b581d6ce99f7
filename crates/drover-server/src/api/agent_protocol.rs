//! `/agent/v1`: the agent protocol.

use axum::Json;
use axum::extract::Path;
use axum::response::Response;
use drover_types::agent::{
    AttemptEvents, AttemptEventsResponse, AttemptResult, AttemptResultResponse, PollRequest, PollResponse,
};

use super::{Call, stream_file};
use crate::error::{ApiJson, ApiResult};
use crate::service::agent_protocol;

pub async fn poll(call: Call, ApiJson(req): ApiJson<PollRequest>) -> ApiResult<Json<PollResponse>> {
    Ok(Json(agent_protocol::poll(&call.ctx(), req).await?))
}

pub async fn events(
    call: Call,
    Path(attempt): Path<String>,
    ApiJson(ev): ApiJson<AttemptEvents>,
) -> ApiResult<Json<AttemptEventsResponse>> {
    let alive = agent_protocol::events(&call.ctx(), &attempt, ev).await?;
    Ok(Json(AttemptEventsResponse { cancel: !alive }))
}

pub async fn result(
    call: Call,
    Path(attempt): Path<String>,
    ApiJson(r): ApiJson<AttemptResult>,
) -> ApiResult<Json<AttemptResultResponse>> {
    let status = agent_protocol::result(&call.ctx(), &attempt, r).await?;
    Ok(Json(AttemptResultResponse { status: status.into() }))
}

pub async fn artifact(call: Call, Path(sha256): Path<String>) -> ApiResult<Response> {
    let (f, len) = agent_protocol::artifact(&call.ctx(), &sha256).await?;
    Ok(stream_file(f, len))
}
