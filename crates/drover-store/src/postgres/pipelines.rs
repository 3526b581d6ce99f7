//! Pipelines on PostgreSQL.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::PipelineStore;
use drover_types::Pipeline;

use super::{PgStore, db_err};
use crate::{json_err, rows, sql};

#[async_trait]
impl PipelineStore for PgStore {
    async fn put_pipeline(&self, p: &Pipeline) -> Result<()> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        sqlx::query(sql::APPLICATION_ENSURE)
            .bind(&p.application)
            .bind(p.created_at.0)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(sql::PIPELINE_PUT)
            .bind(&p.name)
            .bind(&p.application)
            .bind(serde_json::to_string(&p.stages).map_err(json_err)?)
            .bind(p.created_at.0)
            .bind(p.updated_at.0)
            .bind(serde_json::to_string(&p.variables).map_err(json_err)?)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<Pipeline>> {
        let row = sqlx::query(sql::PIPELINE_GET).bind(name).fetch_optional(&self.pool()).await.map_err(db_err)?;
        row.as_ref().map(rows::pipeline).transpose()
    }

    async fn list_pipelines(&self) -> Result<Vec<Pipeline>> {
        let rows = sqlx::query(sql::PIPELINE_LIST).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::pipeline).collect()
    }

    async fn delete_pipeline(&self, name: &str) -> Result<bool> {
        let r = sqlx::query(sql::PIPELINE_DELETE).bind(name).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }
}
