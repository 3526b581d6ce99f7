//! `/api/v1/system`: the SysOps view and its levers.

use axum::Json;
use axum::extract::Path;
use serde::Deserialize;

use super::Call;
use crate::error::{ApiJson, ApiResult};
use crate::service::system;

type J = ApiResult<Json<serde_json::Value>>;

pub async fn nodes(call: Call) -> J {
    Ok(Json(system::nodes(&call.ctx()).await?))
}

pub async fn caches(call: Call) -> J {
    Ok(Json(system::caches(&call.ctx()).await?))
}

pub async fn pools(call: Call) -> J {
    Ok(Json(system::pools(&call.ctx()).await?))
}

pub async fn queues(call: Call) -> J {
    Ok(Json(system::queues(&call.ctx()).await?))
}

pub async fn clear_cache(call: Call, Path(name): Path<String>) -> J {
    Ok(Json(system::clear_cache(&call.ctx(), &name).await?))
}

pub async fn drain(call: Call, Path(name): Path<String>) -> J {
    Ok(Json(system::drain(&call.ctx(), &name, true).await?))
}

pub async fn resume(call: Call, Path(name): Path<String>) -> J {
    Ok(Json(system::drain(&call.ctx(), &name, false).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSize {
    max_connections: u32,
}

pub async fn resize_pool(call: Call, ApiJson(p): ApiJson<PoolSize>) -> J {
    Ok(Json(system::resize_pool(&call.ctx(), p.max_connections).await?))
}
