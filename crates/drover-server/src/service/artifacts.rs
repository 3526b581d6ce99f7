//! Artifacts: application objects. Reading versions and content needs `artifact.read` on the
//! application (else they do not exist for the caller); pushing needs `artifact.push` there.

use bytes::Bytes;
use drover_core::rbac::Privilege;
use drover_core::store::ArtifactInsert;
use drover_core::{Error, Result, validate_name, validate_version};
use drover_types::{Artifact, Timestamp};
use futures_util::Stream;

use super::Ctx;

fn missing(app: &str, version: &str) -> String {
    format!("artifact {app} {version} not found")
}

pub async fn list(c: &Ctx<'_>, application: Option<&str>) -> Result<Vec<Artifact>> {
    let apps = c.caller.applications_with(Privilege::ArtifactRead);
    Ok(c.state.store.list_artifacts(application).await?.into_iter().filter(|a| apps.contains(&a.application)).collect())
}

pub async fn get(c: &Ctx<'_>, app: &str, version: &str) -> Result<Artifact> {
    if !c.sees(Privilege::ArtifactRead, app) {
        return Err(Error::NotFound(missing(app, version)));
    }
    c.state.store.get_artifact(app, version).await?.ok_or_else(|| Error::NotFound(missing(app, version)))
}

/// The artifact's content: an open file and its length.
pub async fn content(c: &Ctx<'_>, app: &str, version: &str) -> Result<(tokio::fs::File, u64)> {
    let a = get(c, app, version).await?;
    open(c, &a.sha256).await
}

/// Opens stored content by its SHA-256.
pub(crate) async fn open(c: &Ctx<'_>, sha256: &str) -> Result<(tokio::fs::File, u64)> {
    let path = c.state.artifacts.path_of(sha256).ok_or_else(|| Error::BadRequest("invalid sha256".into()))?;
    let f = tokio::fs::File::open(&path).await.map_err(|_| Error::NotFound("artifact content not found".into()))?;
    let len = f.metadata().await.map_err(|e| Error::Store(e.to_string()))?.len();
    Ok((f, len))
}

/// Whether the push stored a new version (or found the same content there already).
pub enum Pushed {
    Created(Artifact),
    Same(Artifact),
}

/// Streams an upload into the store; `expected` is the SHA-256 the client says it sent.
pub async fn push<S, E>(c: &Ctx<'_>, app: &str, version: &str, expected: Option<String>, body: S) -> Result<Pushed>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    validate_name("application", app).map_err(|e| Error::BadRequest(e.to_string()))?;
    validate_version(version).map_err(|e| Error::BadRequest(e.to_string()))?;
    c.create_in(Privilege::ArtifactPush, app)?;
    let s = c.state;
    let up = s.artifacts.receive(body).await.map_err(Error::BadRequest)?;
    if let Some(e) = expected.map(|e| e.to_ascii_lowercase())
        && e != up.sha256
    {
        let got = up.sha256.clone();
        s.artifacts.discard(up).await;
        return Err(Error::BadRequest(format!("checksum mismatch: header says {e}, content is {got}")));
    }
    let a = Artifact {
        application: app.to_string(),
        version: version.to_string(),
        sha256: up.sha256.clone(),
        size: up.size,
        created_at: Timestamp::now(),
        created_by: c.label(),
    };
    if let Some(existing) = s.store.get_artifact(app, version).await? {
        s.artifacts.discard(up).await;
        return same_or_conflict(existing, &a);
    }
    let sha = up.sha256.clone();
    s.artifacts.keep(up).await.map_err(|e| Error::Store(e.to_string()))?;
    match s.store.insert_artifact(&a).await? {
        ArtifactInsert::Inserted => {
            tracing::info!(application = %app, version = %version, sha256 = %sha, size = a.size, by = %a.created_by, "artifact stored");
            Ok(Pushed::Created(a))
        }
        ArtifactInsert::Exists(existing) => same_or_conflict(existing, &a),
    }
}

fn same_or_conflict(existing: Artifact, new: &Artifact) -> Result<Pushed> {
    if existing.sha256 == new.sha256 {
        Ok(Pushed::Same(existing))
    } else {
        Err(Error::Conflict(format!(
            "{} {} exists already with other content (sha256 {}); versions are immutable, push a new version",
            existing.application, existing.version, existing.sha256
        )))
    }
}
