//! The SysOps view and its levers: `system.observe` reads nodes, caches, pools and queues;
//! `system.manage` clears a cache, drains a node (it stops handing out new work and finishes
//! what its agents hold) and resizes the database pool (PostgreSQL).

use std::collections::HashMap;

use drover_core::rbac::Privilege;
use drover_core::{Error, Result};
use serde_json::{Value, json};

use super::Ctx;
use crate::nodes;

fn rate(hits: u64, misses: u64) -> Value {
    if hits + misses == 0 {
        Value::Null
    } else {
        json!((hits as f64 / (hits + misses) as f64 * 1000.0).round() / 1000.0)
    }
}

pub async fn nodes(c: &Ctx<'_>) -> Result<Value> {
    c.require(Privilege::SystemObserve)?;
    let me = nodes::id(c.state);
    let mut list = nodes::list(c.state).await?;
    if !list.iter().any(|n| n.id == me) {
        // Not written yet (the first heartbeat comes right after the start).
        nodes::beat(c.state).await?;
        list = nodes::list(c.state).await?;
    }
    Ok(json!(
        list.into_iter()
            .map(|n| {
                let mut v = serde_json::to_value(&n).unwrap_or(Value::Null);
                v["this"] = json!(n.id == me);
                v
            })
            .collect::<Vec<_>>()
    ))
}

/// The caches of this node, with size and hit rate.
pub async fn caches(c: &Ctx<'_>) -> Result<Value> {
    c.require(Privilege::SystemObserve)?;
    let s = c.state;
    let (tokens, th, tm) = s.verified.stats();
    let (logins, lh, lm) = s.auth.cache_stats();
    let (roles, groups) = s.principals.sizes();
    Ok(json!([
        {"name": "verified_tokens", "what": "access tokens whose signature was verified", "entries": tokens, "hits": th, "misses": tm, "hit_rate": rate(th, tm)},
        {"name": "sign_ins", "what": "remembered successful password checks", "entries": logins, "hits": lh, "misses": lm, "hit_rate": rate(lh, lm)},
        {"name": "principals", "what": "custom roles and access groups", "entries": roles + groups, "roles": roles, "groups": groups},
        {"name": "jwks", "what": "keys that verify tokens", "entries": s.keys.verifying_count()},
    ]))
}

pub async fn pools(c: &Ctx<'_>) -> Result<Value> {
    c.require(Privilege::SystemObserve)?;
    let s = c.state;
    let db = s.store.pool_stats();
    let (open, max, sources, refused) = s.connections.stats();
    Ok(json!([
        {"name": "database", "backend": s.store.backend(), "size": db.size, "idle": db.idle, "max": db.max, "resizable": db.resizable},
        {"name": "agent_polls", "waiting": s.engine.polls_waiting()},
        {"name": "password_hashing", "in_use": s.auth.hashing_in_use(), "max": 2},
        {"name": "connections", "open": open, "max": max, "max_per_source": s.limits.max_connections_per_source,
         "sources": sources, "refused": refused},
    ]))
}

pub async fn queues(c: &Ctx<'_>) -> Result<Value> {
    c.require(Privilege::SystemObserve)?;
    let s = c.state;
    let mut out = Vec::new();
    for e in s.store.list_environments().await? {
        // Tasks any agent of the environment may claim (not a fleet stage's per-agent rows).
        let ready = s.store.claimable_tasks(&e.name, "", 10_000).await?.len();
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

/// Empties a cache of this node; returns how many entries it held.
pub async fn clear_cache(c: &Ctx<'_>, name: &str) -> Result<Value> {
    c.require(Privilege::SystemManage)?;
    let s = c.state;
    let cleared = match name {
        "verified_tokens" => s.verified.clear(),
        "sign_ins" => s.auth.clear_cache(),
        "principals" => {
            s.principals.reload(s.store.as_ref()).await?;
            0
        }
        "jwks" => {
            s.keys.reload(s.store.as_ref()).await.map_err(|e| Error::Store(e.to_string()))?;
            0
        }
        other => {
            return Err(Error::NotFound(format!(
                "cache {other} not found; caches: verified_tokens, sign_ins, principals, jwks"
            )));
        }
    };
    tracing::warn!(cache = name, cleared, by = %c.label(), "cache cleared");
    Ok(json!({"cache": name, "cleared": cleared}))
}

/// Drains a node (it stops handing out new work) or ends its drain.
pub async fn drain(c: &Ctx<'_>, node: &str, on: bool) -> Result<Value> {
    c.require(Privilege::SystemManage)?;
    let s = c.state;
    let me = nodes::id(s);
    if node != me && !nodes::list(s).await?.iter().any(|n| n.id == node) {
        return Err(Error::NotFound(format!("node {node} not found (see GET /api/v1/system/nodes)")));
    }
    if on {
        s.store.record_insert(nodes::DRAIN_KIND, node, "{}", None).await?;
    } else {
        s.store.record_delete(nodes::DRAIN_KIND, node).await?;
    }
    if node == me {
        s.engine.set_draining(on);
    }
    nodes::beat(s).await?;
    tracing::warn!(node, draining = on, by = %c.label(), "node drain changed");
    Ok(json!({"node": node, "draining": on}))
}

pub async fn resize_pool(c: &Ctx<'_>, max: u32) -> Result<Value> {
    c.require(Privilege::SystemManage)?;
    c.state.store.resize_pool(max).await?;
    let db = c.state.store.pool_stats();
    Ok(json!({"name": "database", "size": db.size, "idle": db.idle, "max": db.max}))
}
