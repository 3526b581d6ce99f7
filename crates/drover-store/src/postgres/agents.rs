//! Agents on PostgreSQL.

use async_trait::async_trait;
use drover_core::store::{AgentRecord, AgentStore};
use drover_core::{Error, Result};
use drover_types::Timestamp;

use super::{PgStore, db_err, is_conflict};
use crate::{rows, sql};

#[async_trait]
impl AgentStore for PgStore {
    async fn insert_agent(&self, a: &AgentRecord) -> Result<()> {
        let r = sqlx::query(sql::AGENT_INSERT)
            .bind(&a.name)
            .bind(&a.environment)
            .bind(&a.secret_hash)
            .bind(a.created_at.0)
            .bind(a.last_seen_at.map(|t| t.0))
            .bind(serde_json::to_string(&a.labels).map_err(crate::json_err)?)
            .bind(a.pending as i64)
            .bind(a.vetted as i64)
            .execute(&self.pool())
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Err(Error::Conflict(format!("agent {} exists already", a.name))),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>> {
        let row = sqlx::query(sql::AGENT_GET).bind(name).fetch_optional(&self.pool()).await.map_err(db_err)?;
        row.as_ref().map(rows::agent).transpose()
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        let rows = sqlx::query(sql::AGENT_LIST).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::agent).collect()
    }

    async fn delete_agent(&self, name: &str) -> Result<bool> {
        let r = sqlx::query(sql::AGENT_DELETE).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn touch_agent(&self, name: &str, at: Timestamp) -> Result<()> {
        sqlx::query(sql::AGENT_TOUCH).bind(at.0).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(())
    }

    async fn set_agent_reported(&self, name: &str, version: Option<&str>, isolation: Option<&str>) -> Result<bool> {
        let r = sqlx::query(sql::AGENT_SET_REPORTED)
            .bind(version)
            .bind(isolation)
            .bind(name)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn approve_agent(&self, name: &str) -> Result<bool> {
        let r = sqlx::query(sql::AGENT_APPROVE).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn set_agent_labels(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<bool> {
        let labels = serde_json::to_string(labels).map_err(crate::json_err)?;
        let r =
            sqlx::query(sql::AGENT_SET_LABELS).bind(labels).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}
