//! `/api/v1/audit`.

use axum::Json;
use axum::extract::Query;
use drover_core::store::AuditFilter;
use drover_types::audit::{AuditEntry, AuditVerification};
use serde::Deserialize;

use super::Call;
use crate::error::ApiResult;
use crate::service::audit;

#[derive(Deserialize)]
pub struct AuditQuery {
    principal: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

pub async fn list(call: Call, Query(q): Query<AuditQuery>) -> ApiResult<Json<Vec<AuditEntry>>> {
    let f =
        AuditFilter { principal: q.principal, action: q.action, outcome: q.outcome, before: q.before, limit: q.limit };
    Ok(Json(audit::list(&call.ctx(), f).await?))
}

pub async fn verify(call: Call) -> ApiResult<Json<AuditVerification>> {
    Ok(Json(audit::verify(&call.ctx()).await?))
}

/// JSON Lines: the header, the checkpoints, then every entry oldest first (streamed in pages).
pub async fn export(call: Call) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let stream = audit::export_stream(call.state.clone(), call.caller.clone()).await?;
    let body = axum::body::Body::from_stream(stream);
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
