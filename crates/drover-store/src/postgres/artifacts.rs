//! Applications and artifacts on PostgreSQL.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::{ArtifactDelete, ArtifactInsert, ArtifactStore};
use drover_types::{Artifact, Timestamp};
use sqlx::Row;

use super::{PgStore, db_err};
use crate::{rows, sql};

#[async_trait]
impl ArtifactStore for PgStore {
    async fn ensure_application(&self, name: &str, at: Timestamp) -> Result<()> {
        sqlx::query(sql::APPLICATION_ENSURE).bind(name).bind(at.0).execute(&self.pool()).await.map_err(db_err)?;
        Ok(())
    }

    async fn insert_artifact(&self, a: &Artifact) -> Result<ArtifactInsert> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        sqlx::query(sql::APPLICATION_ENSURE)
            .bind(&a.application)
            .bind(a.created_at.0)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let r = sqlx::query(sql::ARTIFACT_INSERT)
            .bind(&a.application)
            .bind(&a.version)
            .bind(&a.sha256)
            .bind(a.size as i64)
            .bind(a.created_at.0)
            .bind(&a.created_by)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let out = if r.rows_affected() == 1 {
            ArtifactInsert::Inserted
        } else {
            let row = sqlx::query(sql::ARTIFACT_GET)
                .bind(&a.application)
                .bind(&a.version)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            ArtifactInsert::Exists(rows::artifact(&row)?)
        };
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn get_artifact(&self, application: &str, version: &str) -> Result<Option<Artifact>> {
        let row = sqlx::query(sql::ARTIFACT_GET)
            .bind(application)
            .bind(version)
            .fetch_optional(&self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::artifact).transpose()
    }

    async fn list_artifacts(&self, application: Option<&str>) -> Result<Vec<Artifact>> {
        let rows = sqlx::query(sql::ARTIFACT_LIST).bind(application).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::artifact).collect()
    }

    async fn delete_artifact(&self, application: &str, version: &str) -> Result<ArtifactDelete> {
        let pool = self.pool();
        let r = sqlx::query(sql::ARTIFACT_DELETE_UNUSED)
            .bind(application)
            .bind(version)
            .execute(&pool)
            .await
            .map_err(db_err)?;
        if r.rows_affected() == 1 {
            return Ok(ArtifactDelete::Deleted);
        }
        let row = sqlx::query(sql::ARTIFACT_USED_BY)
            .bind(application)
            .bind(version)
            .fetch_optional(&pool)
            .await
            .map_err(db_err)?;
        Ok(match row {
            Some(r) => ArtifactDelete::InUse(r.try_get(0).map_err(db_err)?, r.try_get(1).map_err(db_err)?),
            None => ArtifactDelete::NotFound,
        })
    }

    async fn artifact_usage(&self, application: Option<&str>) -> Result<u64> {
        let row = sqlx::query(sql::ARTIFACT_USAGE).bind(application).fetch_one(&self.pool()).await.map_err(db_err)?;
        let n: i64 = row.try_get(0).map_err(db_err)?;
        Ok(n.max(0) as u64)
    }

    async fn protected_versions(&self, application: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query(sql::ARTIFACT_PROTECTED).bind(application).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(|r| r.try_get(0).map_err(db_err)).collect()
    }

    async fn artifact_digests(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(sql::ARTIFACT_DIGESTS).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(|r| r.try_get(0).map_err(db_err)).collect()
    }
}
