//! OAuth 2.0 client registrations on PostgreSQL.

use async_trait::async_trait;
use drover_core::store::{ClientRecord, ClientStore};
use drover_core::{Error, Result};

use super::{PgStore, db_err, is_conflict};
use crate::{json_err, rows, sql};

#[async_trait]
impl ClientStore for PgStore {
    async fn insert_client(&self, c: &ClientRecord) -> Result<()> {
        let r = sqlx::query(sql::CLIENT_INSERT)
            .bind(&c.client_id)
            .bind(&c.secret_hash)
            .bind(&c.previous_secret_hash)
            .bind(c.previous_valid_until.map(|t| t.0))
            .bind(serde_json::to_string(&c.roles).map_err(json_err)?)
            .bind(c.disabled as i64)
            .bind(c.tokens_not_before.0)
            .bind(c.created_at.0)
            .bind(c.secret_rotated_at.map(|t| t.0))
            .bind(serde_json::to_string(&c.metadata).map_err(json_err)?)
            .execute(&self.pool())
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Err(Error::Conflict(format!("client {} exists already", c.client_id))),
            Err(e) => Err(db_err(e)),
        }
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let row = sqlx::query(sql::CLIENT_GET).bind(client_id).fetch_optional(&self.pool()).await.map_err(db_err)?;
        row.as_ref().map(rows::client).transpose()
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        let rows = sqlx::query(sql::CLIENT_LIST).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::client).collect()
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool> {
        let r = sqlx::query(sql::CLIENT_UPDATE)
            .bind(&c.secret_hash)
            .bind(&c.previous_secret_hash)
            .bind(c.previous_valid_until.map(|t| t.0))
            .bind(serde_json::to_string(&c.roles).map_err(json_err)?)
            .bind(c.disabled as i64)
            .bind(c.tokens_not_before.0)
            .bind(c.secret_rotated_at.map(|t| t.0))
            .bind(serde_json::to_string(&c.metadata).map_err(json_err)?)
            .bind(&c.client_id)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let r = sqlx::query(sql::CLIENT_DELETE).bind(client_id).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}
