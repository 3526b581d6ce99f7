//! Pipelines on SQLite.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::PipelineStore;
use drover_types::Pipeline;
use rusqlite::params;

use super::{SqliteStore, all, err, exec, one};
use crate::{json_err, rows, sql};

#[async_trait]
impl PipelineStore for SqliteStore {
    async fn put_pipeline(&self, p: &Pipeline) -> Result<()> {
        let p = p.clone();
        let stages = serde_json::to_string(&p.stages).map_err(json_err)?;
        let vars = serde_json::to_string(&p.variables).map_err(json_err)?;
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            exec(&tx, sql::APPLICATION_ENSURE, params![p.application, p.created_at.0])?;
            exec(&tx, sql::PIPELINE_PUT, params![p.name, p.application, stages, p.created_at.0, p.updated_at.0, vars])?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<Pipeline>> {
        let name = name.to_string();
        self.read(move |c| one(c, sql::PIPELINE_GET, [name], |r| rows::pipeline(r))).await
    }

    async fn list_pipelines(&self) -> Result<Vec<Pipeline>> {
        self.read(|c| all(c, sql::PIPELINE_LIST, [], |r| rows::pipeline(r))).await
    }

    async fn delete_pipeline(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(exec(c, sql::PIPELINE_DELETE, [name])? == 1)).await
    }
}
