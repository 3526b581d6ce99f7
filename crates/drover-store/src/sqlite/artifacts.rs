//! Applications and artifacts on SQLite.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::store::{ArtifactDelete, ArtifactInsert, ArtifactStore};
use drover_types::{Artifact, Timestamp};
use rusqlite::params;

use super::{SqliteStore, all, err, exec, one};
use crate::{rows, sql};

#[async_trait]
impl ArtifactStore for SqliteStore {
    async fn ensure_application(&self, name: &str, at: Timestamp) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| exec(c, sql::APPLICATION_ENSURE, params![name, at.0]).map(|_| ())).await
    }

    async fn insert_artifact(&self, a: &Artifact) -> Result<ArtifactInsert> {
        let a = a.clone();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            exec(&tx, sql::APPLICATION_ENSURE, params![a.application, a.created_at.0])?;
            let p = params![a.application, a.version, a.sha256, a.size as i64, a.created_at.0, a.created_by];
            let out = if exec(&tx, sql::ARTIFACT_INSERT, p)? == 1 {
                ArtifactInsert::Inserted
            } else {
                let existing = one(&tx, sql::ARTIFACT_GET, params![a.application, a.version], |r| rows::artifact(r))?;
                ArtifactInsert::Exists(existing.ok_or_else(|| drover_core::Error::Store("artifact vanished".into()))?)
            };
            tx.commit().map_err(err)?;
            Ok(out)
        })
        .await
    }

    async fn get_artifact(&self, application: &str, version: &str) -> Result<Option<Artifact>> {
        let (app, ver) = (application.to_string(), version.to_string());
        self.read(move |c| one(c, sql::ARTIFACT_GET, params![app, ver], |r| rows::artifact(r))).await
    }

    async fn list_artifacts(&self, application: Option<&str>) -> Result<Vec<Artifact>> {
        let app = application.map(str::to_string);
        self.read(move |c| all(c, sql::ARTIFACT_LIST, [app], |r| rows::artifact(r))).await
    }

    async fn delete_artifact(&self, application: &str, version: &str) -> Result<ArtifactDelete> {
        let (app, ver) = (application.to_string(), version.to_string());
        self.write(move |c| {
            if exec(c, sql::ARTIFACT_DELETE_UNUSED, params![app, ver])? == 1 {
                return Ok(ArtifactDelete::Deleted);
            }
            let used = one(c, sql::ARTIFACT_USED_BY, params![app, ver], |r| {
                Ok((r.get::<_, i64>(0).map_err(err)?, r.get::<_, String>(1).map_err(err)?))
            })?;
            Ok(match used {
                Some((id, status)) => ArtifactDelete::InUse(id, status),
                None => ArtifactDelete::NotFound,
            })
        })
        .await
    }

    async fn artifact_usage(&self, application: Option<&str>) -> Result<u64> {
        let app = application.map(str::to_string);
        self.read(move |c| {
            let n = one(c, sql::ARTIFACT_USAGE, params![app], |r| r.get::<_, i64>(0).map_err(err))?;
            Ok(n.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn protected_versions(&self, application: &str) -> Result<Vec<String>> {
        let app = application.to_string();
        self.read(move |c| all(c, sql::ARTIFACT_PROTECTED, params![app], |r| r.get::<_, String>(0).map_err(err))).await
    }

    async fn artifact_digests(&self) -> Result<Vec<String>> {
        self.read(move |c| all(c, sql::ARTIFACT_DIGESTS, [], |r| r.get::<_, String>(0).map_err(err))).await
    }
}
