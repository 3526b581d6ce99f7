//! The orchestrator nodes sharing a database: each writes a heartbeat record every few seconds
//! (`/system/nodes` lists the live ones), and reads whether it was asked to drain — so a drain
//! sent to any node reaches the one it names.

use std::time::Duration;

use drover_core::Result;
use drover_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::AppState;

pub const KIND: &str = "node";
pub const DRAIN_KIND: &str = "node_drain";
/// How often a node writes its heartbeat and reads its drain flag.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);
/// A node not heard from this long is gone from the list.
pub const GONE_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub listen: String,
    pub version: String,
    pub backend: String,
    pub started_at: Timestamp,
    pub last_heartbeat: Timestamp,
    pub draining: bool,
}

/// This node's id: host and listen address.
pub fn id(s: &AppState) -> String {
    format!("{}@{}", s.node, s.listen)
}

/// Reads this node's drain flag and writes its heartbeat.
pub async fn beat(s: &AppState) -> Result<()> {
    let me = id(s);
    s.engine.set_draining(s.store.record_get(DRAIN_KIND, &me).await?.is_some());
    let info = NodeInfo {
        id: me.clone(),
        host: s.node.clone(),
        listen: s.listen.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        backend: s.store.backend().into(),
        started_at: s.started_at,
        last_heartbeat: Timestamp::now(),
        draining: s.engine.draining(),
    };
    let body = serde_json::to_string(&info).map_err(|e| drover_core::Error::Store(e.to_string()))?;
    let until = Some(Timestamp::now().plus(GONE_AFTER));
    for _ in 0..3 {
        let done = match s.store.record_get(KIND, &me).await? {
            Some((_, v)) => s.store.record_update(KIND, &me, v, &body, until).await?,
            None => s.store.record_insert(KIND, &me, &body, until).await?,
        };
        if done {
            break;
        }
    }
    Ok(())
}

/// The live nodes.
pub async fn list(s: &AppState) -> Result<Vec<NodeInfo>> {
    Ok(s.store.record_list(KIND).await?.into_iter().filter_map(|(_, b, _)| serde_json::from_str(&b).ok()).collect())
}

/// Heartbeats until `shutdown`.
pub async fn run(s: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(BEAT_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = beat(&s).await {
                    tracing::warn!(error = %e, "node heartbeat failed");
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
