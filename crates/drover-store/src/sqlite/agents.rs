//! Agents on SQLite.

use async_trait::async_trait;
use drover_core::store::{AgentRecord, AgentStore};
use drover_core::{Error, Result};
use drover_types::Timestamp;
use rusqlite::params;

use super::{SqliteStore, all, err, exec, is_conflict, one};
use crate::{rows, sql};

#[async_trait]
impl AgentStore for SqliteStore {
    async fn insert_agent(&self, a: &AgentRecord) -> Result<()> {
        let a = a.clone();
        let labels = serde_json::to_string(&a.labels).map_err(crate::json_err)?;
        self.write(move |c| {
            let r = c.prepare_cached(sql::AGENT_INSERT).and_then(|mut s| {
                s.execute(params![
                    a.name,
                    a.environment,
                    a.secret_hash,
                    a.created_at.0,
                    a.last_seen_at.map(|t| t.0),
                    labels,
                    a.pending as i64,
                    a.vetted as i64
                ])
            });
            match r {
                Ok(_) => Ok(()),
                Err(e) if is_conflict(&e) => Err(Error::Conflict(format!("agent {} exists already", a.name))),
                Err(e) => Err(err(e)),
            }
        })
        .await
    }

    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>> {
        let name = name.to_string();
        self.read(move |c| one(c, sql::AGENT_GET, [name], |r| rows::agent(r))).await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.read(|c| all(c, sql::AGENT_LIST, [], |r| rows::agent(r))).await
    }

    async fn delete_agent(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(exec(c, sql::AGENT_DELETE, [name])? == 1)).await
    }

    async fn touch_agent(&self, name: &str, at: Timestamp) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| exec(c, sql::AGENT_TOUCH, params![at.0, name]).map(|_| ())).await
    }

    async fn set_agent_reported(&self, name: &str, version: Option<&str>, isolation: Option<&str>) -> Result<bool> {
        let (name, version, isolation) = (name.to_string(), version.map(String::from), isolation.map(String::from));
        self.write(move |c| Ok(exec(c, sql::AGENT_SET_REPORTED, params![version, isolation, name])? == 1)).await
    }

    async fn approve_agent(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(exec(c, sql::AGENT_APPROVE, [name])? == 1)).await
    }

    async fn set_agent_labels(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<bool> {
        let (name, labels) = (name.to_string(), serde_json::to_string(labels).map_err(crate::json_err)?);
        self.write(move |c| Ok(exec(c, sql::AGENT_SET_LABELS, params![labels, name])? == 1)).await
    }
}
