//! Artifacts: application objects. Reading versions and content needs `artifact.read` on the
//! application (else they do not exist for the caller); pushing needs `artifact.push` there,
//! deleting `artifact.delete`.
//!
//! Bounds: an upload stops at `[artifacts] max_size` (nothing is kept), the application's
//! versions together stay under `quota`, and with `keep_versions` the oldest versions go once
//! a push exceeds it — never one a deployment that has not ended uses, nor what is deployed
//! (`ArtifactStore::protected_versions`). Content no version refers to is collected.

use bytes::Bytes;
use drover_core::rbac::Privilege;
use drover_core::store::{ArtifactDelete, ArtifactInsert};
use drover_core::{Error, Result, validate_name, validate_version};
use drover_types::{Artifact, Timestamp};
use futures_util::Stream;

use super::Ctx;
use crate::AppState;
use crate::artifacts::ReceiveError;

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
    let policy = &s.artifact_policy;
    check_quotas(s, app, 0).await?;
    let up = match s.artifacts.receive(body, policy.max_size.0).await {
        Ok(up) => up,
        Err(ReceiveError::TooLarge(max)) => {
            tracing::warn!(application = %app, version = %version, by = %c.label(), max, "artifact refused: over max_size");
            return Err(Error::TooLarge(format!(
                "the artifact is larger than the limit of {max} bytes ([artifacts] max_size)"
            )));
        }
        Err(ReceiveError::Failed(e)) => return Err(Error::BadRequest(e)),
    };
    if let Err(e) = check_quotas(s, app, up.size).await {
        s.artifacts.discard(up).await;
        return Err(e);
    }
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
            if policy.keep_versions > 0 {
                retain(s, app, policy.keep_versions as usize).await;
            }
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

/// Would `more` bytes fit in the application's quota and in the total one? (Checked before and
/// after an upload; concurrent pushes can overshoot by what they carry together.)
async fn check_quotas(s: &AppState, app: &str, more: u64) -> Result<()> {
    let p = &s.artifact_policy;
    let used = s.store.artifact_usage(Some(app)).await?;
    if used + more > p.quota.0 || (more == 0 && used >= p.quota.0) {
        return Err(Error::Quota(format!(
            "application {app} holds {used} bytes of artifacts; {more} more would exceed its quota of {} bytes \
             ([artifacts] quota): delete versions (drover artifact delete) or raise the quota",
            p.quota.0
        )));
    }
    let all = s.store.artifact_usage(None).await?;
    if all + more > p.total_quota.0 || (more == 0 && all >= p.total_quota.0) {
        return Err(Error::Quota(format!(
            "the orchestrator holds {all} bytes of artifacts; {more} more would exceed [artifacts] total_quota \
             ({} bytes): delete versions or raise it",
            p.total_quota.0
        )));
    }
    Ok(())
}

/// Deletes one version; refused (409) while a deployment that has not ended uses it.
pub async fn delete(c: &Ctx<'_>, app: &str, version: &str) -> Result<()> {
    c.on_application(Privilege::ArtifactDelete, Privilege::ArtifactRead, app, || missing(app, version))?;
    match c.state.store.delete_artifact(app, version).await? {
        ArtifactDelete::Deleted => {
            tracing::info!(application = %app, version = %version, by = %c.label(), "artifact deleted");
            spawn_gc(c.state.clone());
            Ok(())
        }
        ArtifactDelete::InUse(id, status) => Err(Error::Conflict(format!(
            "{app} {version} is used by deployment {id} ({status}); it can be deleted once that deployment has ended"
        ))),
        ArtifactDelete::NotFound => Err(Error::NotFound(missing(app, version))),
    }
}

/// Retention: keeps the newest `keep` versions of `app` and every protected one; deletes the
/// rest (each delete re-checks that no deployment uses it) and collects their content. Like
/// every change, it is on record before it is made.
pub async fn retain(s: &AppState, app: &str, keep: usize) {
    let r: Result<Vec<String>> = async {
        let all = s.store.list_artifacts(Some(app)).await?; // newest first
        if all.len() <= keep {
            return Ok(vec![]);
        }
        let protected: std::collections::HashSet<String> = s.store.protected_versions(app).await?.into_iter().collect();
        let due: Vec<String> =
            all.into_iter().skip(keep).filter(|a| !protected.contains(&a.version)).map(|a| a.version).collect();
        if due.is_empty() {
            return Ok(vec![]);
        }
        let detail = serde_json::json!({"versions": due, "keep_versions": keep});
        if !record(s, app, "started", detail).await {
            return Err(Error::Unavailable("the audit log does not accept entries".into()));
        }
        let mut gone = Vec::new();
        for v in due {
            if s.store.delete_artifact(app, &v).await? == ArtifactDelete::Deleted {
                gone.push(v);
            }
        }
        record(s, app, "success", serde_json::json!({"versions": gone, "keep_versions": keep})).await;
        Ok(gone)
    }
    .await;
    match r {
        Ok(gone) if gone.is_empty() => {}
        Ok(gone) => {
            tracing::info!(application = %app, versions = ?gone, keep, "retention removed old artifact versions");
            spawn_gc(s.clone());
        }
        Err(e) => {
            tracing::warn!(application = %app, error = %e, "artifact retention failed; it runs again at the next push")
        }
    }
}

async fn record(s: &AppState, app: &str, outcome: &str, detail: serde_json::Value) -> bool {
    let e = drover_types::audit::NewAuditEntry {
        ts: Timestamp::now(),
        principal: "system".into(),
        action: "artifact.retention".into(),
        target: app.to_string(),
        outcome: outcome.into(),
        source: "orchestrator".into(),
        request_id: hex::encode(rand::random::<[u8; 8]>()),
        detail,
    };
    s.audit_sink.record(e).await.is_ok()
}

/// Content older than this and referenced by no version is removed.
const GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Collects unreferenced content in the background.
pub fn spawn_gc(s: AppState) {
    tokio::spawn(async move { collect_garbage(&s, GC_GRACE).await });
}

/// Removes stored content no version refers to (and older than `grace`). Returns (files, bytes).
pub async fn collect_garbage(s: &AppState, grace: std::time::Duration) -> Option<(usize, u64)> {
    let referenced: std::collections::HashSet<String> = match s.store.artifact_digests().await {
        Ok(d) => d.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "artifact garbage collection skipped: the database did not answer");
            return None;
        }
    };
    let files = s.artifacts.clone();
    match tokio::task::spawn_blocking(move || files.collect_garbage(&referenced, grace)).await {
        Ok(Ok((n, bytes))) => {
            if n > 0 {
                tracing::info!(files = n, bytes, "artifact content no version refers to was removed");
            }
            Some((n, bytes))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "artifact garbage collection failed");
            None
        }
        Err(_) => None,
    }
}
