//! Environments on SQLite.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::EnvironmentStore;
use drover_types::Environment;
use rusqlite::params;

use super::{SqliteStore, all, exec, one};
use crate::{json_err, list_to, rows, sql};

#[async_trait]
impl EnvironmentStore for SqliteStore {
    async fn insert_environment(&self, env: &Environment) -> Result<bool> {
        let (name, kind, at) = (env.name.clone(), env.kind.as_str(), env.created_at.0);
        let labels = serde_json::to_string(&env.labels).map_err(json_err)?;
        let apps = list_to(&env.applications)?;
        self.write(move |c| Ok(exec(c, sql::ENV_INSERT, params![name, kind, labels, at, apps])? == 1)).await
    }

    async fn get_environment(&self, name: &str) -> Result<Option<Environment>> {
        let name = name.to_string();
        self.read(move |c| one(c, sql::ENV_GET, [name], |r| rows::environment(r))).await
    }

    async fn list_environments(&self) -> Result<Vec<Environment>> {
        self.read(|c| all(c, sql::ENV_LIST, [], |r| rows::environment(r))).await
    }

    async fn update_environment(&self, env: &Environment) -> Result<bool> {
        let (name, kind) = (env.name.clone(), env.kind.as_str());
        let labels = serde_json::to_string(&env.labels).map_err(json_err)?;
        let apps = list_to(&env.applications)?;
        self.write(move |c| Ok(exec(c, sql::ENV_UPDATE, params![kind, labels, apps, name])? == 1)).await
    }

    async fn delete_environment(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(exec(c, sql::ENV_DELETE, [name])? == 1)).await
    }
}
