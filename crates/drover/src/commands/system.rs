//! `system`: the SysOps view.

use super::*;

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Orchestrator nodes: version, start, last heartbeat, draining (system.observe).
    Nodes,
    /// Caches with size and hit rate (system.observe).
    Caches,
    /// Database connections, agent long polls, password hashing (system.observe).
    Pools,
    /// Ready tasks per environment, active deployments per status (system.observe).
    Queues,
    /// Empty a cache of the node answering: verified_tokens, sign_ins, principals, jwks (system.manage).
    ClearCache { name: String },
    /// Stop a node handing out new work; its agents finish what they hold (system.manage).
    Drain { node: String },
    /// End a node's drain (system.manage).
    Resume { node: String },
    /// Resize the database pool, PostgreSQL only (system.manage).
    PoolSize { max_connections: u32 },
}

pub async fn system(conn: &Conn, cmd: SystemCommand) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let v = match cmd {
        SystemCommand::Nodes => c.system("nodes").await?,
        SystemCommand::Caches => c.system("caches").await?,
        SystemCommand::Pools => c.system("pools").await?,
        SystemCommand::Queues => c.system("queues").await?,
        SystemCommand::ClearCache { name } => c.clear_cache(&name).await?,
        SystemCommand::Drain { node } => c.drain_node(&node, true).await?,
        SystemCommand::Resume { node } => c.drain_node(&node, false).await?,
        SystemCommand::PoolSize { max_connections } => c.resize_pool(max_connections).await?,
    };
    print(conn.output, &v, |v| serde_json::to_string_pretty(v).unwrap_or_default())
}

impl SystemCommand {
    pub async fn run(self, conn: &Conn) -> anyhow::Result<u8> {
        system(conn, self).await
    }
}
