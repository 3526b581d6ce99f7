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
    let head = audit::export_head(&call.ctx()).await?;
    let mut first = String::new();
    for v in head {
        first.push_str(&v.to_string());
        first.push('\n');
    }
    let start = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(first)) });
    let pages = futures_util::stream::unfold(Some((call, 0i64)), |st| async move {
        let (call, after) = st?;
        match audit::export_page(&call.ctx(), after).await {
            Ok(page) if page.is_empty() => None,
            Ok(page) => {
                let next = page.last().and_then(|v| v["seq"].as_i64()).unwrap_or(after);
                let text: String = page.iter().map(|v| v.to_string() + "\n").collect();
                Some((Ok(bytes::Bytes::from(text)), Some((call, next))))
            }
            Err(e) => {
                tracing::error!(error = %e, "audit export broke off");
                Some((Err(std::io::Error::other("the export broke off")), None))
            }
        }
    });
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(start, pages));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
