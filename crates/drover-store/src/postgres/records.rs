//! Small versioned records on PostgreSQL.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::RecordStore;
use drover_types::Timestamp;

use super::{PgStore, db_err};
use crate::{rows, sql};

#[async_trait]
impl RecordStore for PgStore {
    async fn record_insert(&self, kind: &str, key: &str, body: &str, expires_at: Option<Timestamp>) -> Result<bool> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        sqlx::query(sql::RECORD_PRUNE).bind(Timestamp::now().0).bind(kind).execute(&mut *tx).await.map_err(db_err)?;
        let n = sqlx::query(sql::RECORD_INSERT)
            .bind(kind)
            .bind(key)
            .bind(body)
            .bind(expires_at.map(|t| t.0))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn record_get(&self, kind: &str, key: &str) -> Result<Option<(String, i64)>> {
        let row = sqlx::query(sql::RECORD_GET)
            .bind(kind)
            .bind(key)
            .bind(Timestamp::now().0)
            .fetch_optional(&self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::record).transpose()
    }

    async fn record_list(&self, kind: &str) -> Result<Vec<(String, String, i64)>> {
        let rows = sqlx::query(sql::RECORD_LIST)
            .bind(kind)
            .bind(Timestamp::now().0)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::keyed_record).collect()
    }

    async fn record_update(
        &self,
        kind: &str,
        key: &str,
        version: i64,
        body: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<bool> {
        let n = sqlx::query(sql::RECORD_UPDATE)
            .bind(body)
            .bind(expires_at.map(|t| t.0))
            .bind(kind)
            .bind(key)
            .bind(version)
            .bind(Timestamp::now().0)
            .execute(&self.pool())
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n == 1)
    }

    async fn record_take(&self, kind: &str, key: &str) -> Result<Option<String>> {
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as(sql::RECORD_TAKE).bind(kind).bind(key).fetch_optional(&self.pool()).await.map_err(db_err)?;
        Ok(row.filter(|(_, exp)| exp.is_none_or(|e| e > Timestamp::now().0)).map(|(b, _)| b))
    }

    async fn record_delete(&self, kind: &str, key: &str) -> Result<bool> {
        let n = sqlx::query(sql::RECORD_DELETE)
            .bind(kind)
            .bind(key)
            .execute(&self.pool())
            .await
            .map_err(db_err)?
            .rows_affected();
        Ok(n == 1)
    }
}
