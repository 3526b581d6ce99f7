//! Operators on PostgreSQL.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::{OperatorRecord, OperatorStore};
use drover_types::Timestamp;

use super::{PgStore, db_err};
use crate::{json_err, opt_ts, rows, sql};

#[async_trait]
impl OperatorStore for PgStore {
    async fn insert_operator(&self, op: &OperatorRecord) -> Result<bool> {
        let r = sqlx::query(sql::OPERATOR_INSERT)
            .bind(&op.name)
            .bind(&op.password_hash)
            .bind(serde_json::to_string(&op.roles).map_err(json_err)?)
            .bind(op.disabled as i64)
            .bind(op.created_at.0)
            .bind(&op.email)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn get_operator(&self, name: &str) -> Result<Option<OperatorRecord>> {
        let row = sqlx::query(sql::OPERATOR_GET).bind(name).fetch_optional(&self.pool()).await.map_err(db_err)?;
        row.as_ref().map(rows::operator).transpose()
    }

    async fn list_operators(&self) -> Result<Vec<OperatorRecord>> {
        let rows = sqlx::query(sql::OPERATOR_LIST).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::operator).collect()
    }

    async fn update_operator(&self, op: &OperatorRecord) -> Result<bool> {
        let r = sqlx::query(sql::OPERATOR_UPDATE)
            .bind(&op.password_hash)
            .bind(serde_json::to_string(&op.roles).map_err(json_err)?)
            .bind(op.disabled as i64)
            .bind(&op.email)
            .bind(op.failed_logins as i64)
            .bind(op.locked_until.map(|t| t.0))
            .bind(&op.name)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn login_failed(
        &self,
        name: &str,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<Option<(u32, Option<Timestamp>)>> {
        let row: Option<(i64, Option<i64>)> = sqlx::query_as(sql::OPERATOR_LOGIN_FAILED)
            .bind(threshold as i64)
            .bind(lock_until.0)
            .bind(name)
            .fetch_optional(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(row.map(|(n, l)| (n as u32, opt_ts(l))))
    }

    async fn login_succeeded(&self, name: &str) -> Result<()> {
        sqlx::query(sql::OPERATOR_LOGIN_SUCCEEDED).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(())
    }
}
