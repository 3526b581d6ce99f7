//! `/api/v1/reports`.

use axum::Json;
use axum::extract::{Path, Query};
use drover_types::Timestamp;
use drover_types::report::{PipelineReport, parse_range};
use serde::Deserialize;

use super::Call;
use crate::error::{ApiError, ApiResult};
use crate::service::reports;

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

pub async fn pipeline(
    call: Call,
    Path(name): Path<String>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<PipelineReport>> {
    let (from, to) =
        parse_range(q.from.as_deref(), q.to.as_deref(), Timestamp::now()).map_err(ApiError::bad_request)?;
    Ok(Json(reports::pipeline(&call.ctx(), &name, from, to).await?))
}
