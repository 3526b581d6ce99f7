//! The SysOps view (`system.observe`).

use std::collections::HashMap;

use drover_core::Result;
use drover_core::rbac::Privilege;
use serde_json::json;

use super::Ctx;

pub async fn nodes(c: &Ctx<'_>) -> Result<serde_json::Value> {
    c.require(Privilege::SystemObserve)?;
    let s = c.state;
    Ok(json!([{
        "node": s.node,
        "version": env!("CARGO_PKG_VERSION"),
        "backend": s.store.backend(),
        "started_at": s.started_at,
        "listen": s.listen,
    }]))
}

pub async fn queues(c: &Ctx<'_>) -> Result<serde_json::Value> {
    c.require(Privilege::SystemObserve)?;
    let s = c.state;
    let mut out = Vec::new();
    for e in s.store.list_environments().await? {
        let ready = s.store.claimable_tasks(&e.name, 10_000).await?.len();
        out.push(json!({"environment": e.name, "ready_tasks": ready}));
    }
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for id in s.store.active_deployment_ids().await? {
        if let Some(st) = s.store.load_deployment(id).await? {
            *by_status.entry(st.deployment.status.as_str()).or_default() += 1;
        }
    }
    Ok(json!({"environments": out, "active_deployments": by_status}))
}
