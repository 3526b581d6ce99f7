//! Environments on PostgreSQL.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::EnvironmentStore;
use drover_types::Environment;

use super::{PgStore, db_err};
use crate::{json_err, list_to, rows, sql};

#[async_trait]
impl EnvironmentStore for PgStore {
    async fn insert_environment(&self, env: &Environment) -> Result<bool> {
        let r = sqlx::query(sql::ENV_INSERT)
            .bind(&env.name)
            .bind(env.kind.as_str())
            .bind(serde_json::to_string(&env.labels).map_err(json_err)?)
            .bind(env.created_at.0)
            .bind(list_to(&env.applications)?)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn get_environment(&self, name: &str) -> Result<Option<Environment>> {
        let row = sqlx::query(sql::ENV_GET).bind(name).fetch_optional(&self.pool()).await.map_err(db_err)?;
        row.as_ref().map(rows::environment).transpose()
    }

    async fn list_environments(&self) -> Result<Vec<Environment>> {
        let rows = sqlx::query(sql::ENV_LIST).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::environment).collect()
    }

    async fn update_environment(&self, env: &Environment) -> Result<bool> {
        let r = sqlx::query(sql::ENV_UPDATE)
            .bind(env.kind.as_str())
            .bind(serde_json::to_string(&env.labels).map_err(json_err)?)
            .bind(list_to(&env.applications)?)
            .bind(&env.name)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_environment(&self, name: &str) -> Result<bool> {
        let r = sqlx::query(sql::ENV_DELETE).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}
