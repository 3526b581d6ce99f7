//! `Store` implementations: SQLite (embedded default, WAL; rusqlite, `sqlite.rs`) and
//! PostgreSQL (sqlx, here). The SQL is the same modulo placeholders (`?N` / `$N`) and row
//! locking; both pass the same conformance suite. Business logic never branches on the backend.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use drover_core::audit::{self, AuditEntry, NewAuditEntry};
use drover_core::machine::NewEvent;
use drover_core::model::{DeploymentRecord, DeploymentState, TaskRecord};
use drover_core::store::{
    AgentRecord, ArtifactInsert, AuditFilter, ClientRecord, Commit, CommitOutcome, DeploymentFilter, OperatorRecord,
    SigningKeyRecord,
};
use drover_core::{Error, Result, Store};
use drover_types::{
    Artifact, DeploymentEvent, DeploymentStatus, Environment, EnvironmentKind, LogLine, Pipeline, TaskStatus, Timestamp,
};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub mod conformance;
mod sqlite;

pub use sqlite::SqliteStore;

pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_audit.sql")),
    (3, include_str!("../migrations/sqlite/0003_operator_lockout.sql")),
    (4, include_str!("../migrations/sqlite/0004_oauth.sql")),
    (5, include_str!("../migrations/sqlite/0005_records.sql")),
    (6, include_str!("../migrations/sqlite/0006_scope_and_approvals.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_audit.sql")),
    (3, include_str!("../migrations/postgres/0003_operator_lockout.sql")),
    (4, include_str!("../migrations/postgres/0004_oauth.sql")),
    (5, include_str!("../migrations/postgres/0005_records.sql")),
    (6, include_str!("../migrations/postgres/0006_scope_and_approvals.sql")),
];

fn db_err(e: sqlx::Error) -> Error {
    Error::Store(e.to_string())
}

pub(crate) fn json_err(e: serde_json::Error) -> Error {
    Error::Store(format!("corrupt JSON column: {e}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

pub(crate) fn status_of(s: &str) -> Result<DeploymentStatus> {
    DeploymentStatus::parse(s).ok_or_else(|| Error::Store(format!("unknown deployment status {s:?}")))
}

pub(crate) fn task_status_of(s: &str) -> Result<TaskStatus> {
    TaskStatus::parse(s).ok_or_else(|| Error::Store(format!("unknown task status {s:?}")))
}

/// Opens the store named by a database URL: `sqlite://PATH` / a plain path, or `postgres://...`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    }
}

/// PostgreSQL. Row locks (`FOR UPDATE`) make [`Store::commit`] safe across replicas.
#[derive(Clone)]
pub struct PgStore {
    pool: sqlx::PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| Error::Invalid(format!("database URL: {e}")))?;
        Self::connect_with(opts).await
    }
    pub async fn connect_with(opts: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        migrate_pg(&pool).await?;
        Ok(PgStore { pool })
    }
    fn w(&self) -> &sqlx::PgPool {
        &self.pool
    }
    fn r(&self) -> &sqlx::PgPool {
        &self.pool
    }
}

async fn migrate_pg(pool: &sqlx::PgPool) -> Result<()> {
    let mut tx = pool.begin().await.map_err(db_err)?;
    // Replicas starting together migrate one at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(7243716)").execute(&mut *tx).await.map_err(db_err)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS drover_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(db_err)?;
    for (v, sql) in POSTGRES_MIGRATIONS {
        let done: Option<i64> = sqlx::query_scalar("SELECT version FROM drover_migrations WHERE version = $1")
            .bind(v)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if done.is_none() {
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db_err)?;
            sqlx::query("INSERT INTO drover_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(v)
                .bind(Timestamp::now().0)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
    }
    tx.commit().await.map_err(db_err)
}

pub(crate) const DEPLOYMENT_COLS: &str = "id, pipeline, application, version, status, stage_index, holds_stage, message, \
     created_by, created_at, updated_at, finished_at, rollback_of, spec, row_version";
pub(crate) const TASK_COLS: &str = "deployment_id, stage_index, task_index, environment, spec, status, attempt, attempt_id, \
     agent, lease_until, due_at, started_at, finished_at, exit_code, message, decided_by, comment, approvals";

/// A JSON list column that is NULL when empty (most rows: no parse on load).
pub(crate) fn list_from<T: serde::de::DeserializeOwned>(v: Option<String>) -> Result<Vec<T>> {
    match v {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(&s).map_err(json_err),
    }
}

pub(crate) fn list_to<T: serde::Serialize>(v: &[T]) -> Result<Option<String>> {
    if v.is_empty() { Ok(None) } else { serde_json::to_string(v).map(Some).map_err(json_err) }
}

macro_rules! store_impl {
    ($ty:ident, $db:ty, $backend:literal, lock_row: $lock:literal, integrity: $integrity:literal) => {
        impl $ty {
            fn env_row(r: &<$db as sqlx::Database>::Row) -> Result<Environment> {
                let kind: String = r.try_get("kind").map_err(db_err)?;
                let labels: String = r.try_get("labels").map_err(db_err)?;
                Ok(Environment {
                    name: r.try_get("name").map_err(db_err)?,
                    kind: EnvironmentKind::parse(&kind).unwrap_or(EnvironmentKind::Custom),
                    labels: serde_json::from_str(&labels).map_err(json_err)?,
                    applications: list_from(r.try_get("applications").map_err(db_err)?)?,
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                })
            }
            fn agent_row(r: &<$db as sqlx::Database>::Row) -> Result<AgentRecord> {
                Ok(AgentRecord {
                    name: r.try_get("name").map_err(db_err)?,
                    environment: r.try_get("environment").map_err(db_err)?,
                    secret_hash: r.try_get("secret_hash").map_err(db_err)?,
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                    last_seen_at: opt_ts(r.try_get("last_seen_at").map_err(db_err)?),
                })
            }
            fn artifact_row(r: &<$db as sqlx::Database>::Row) -> Result<Artifact> {
                let size: i64 = r.try_get("size").map_err(db_err)?;
                Ok(Artifact {
                    application: r.try_get("application").map_err(db_err)?,
                    version: r.try_get("version").map_err(db_err)?,
                    sha256: r.try_get("sha256").map_err(db_err)?,
                    size: size as u64,
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                    created_by: r.try_get("created_by").map_err(db_err)?,
                })
            }
            fn pipeline_row(r: &<$db as sqlx::Database>::Row) -> Result<Pipeline> {
                let stages: String = r.try_get("stages").map_err(db_err)?;
                Ok(Pipeline {
                    name: r.try_get("name").map_err(db_err)?,
                    application: r.try_get("application").map_err(db_err)?,
                    stages: serde_json::from_str(&stages).map_err(json_err)?,
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                    updated_at: Timestamp(r.try_get("updated_at").map_err(db_err)?),
                })
            }
            fn deployment_row(r: &<$db as sqlx::Database>::Row) -> Result<DeploymentRecord> {
                let status: String = r.try_get("status").map_err(db_err)?;
                let spec: String = r.try_get("spec").map_err(db_err)?;
                let stage: i64 = r.try_get("stage_index").map_err(db_err)?;
                let holds: i64 = r.try_get("holds_stage").map_err(db_err)?;
                Ok(DeploymentRecord {
                    id: r.try_get("id").map_err(db_err)?,
                    pipeline: r.try_get("pipeline").map_err(db_err)?,
                    application: r.try_get("application").map_err(db_err)?,
                    version: r.try_get("version").map_err(db_err)?,
                    status: status_of(&status)?,
                    stage_index: stage as usize,
                    holds_stage: holds != 0,
                    message: r.try_get("message").map_err(db_err)?,
                    created_by: r.try_get("created_by").map_err(db_err)?,
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                    updated_at: Timestamp(r.try_get("updated_at").map_err(db_err)?),
                    finished_at: opt_ts(r.try_get("finished_at").map_err(db_err)?),
                    rollback_of: r.try_get("rollback_of").map_err(db_err)?,
                    spec: serde_json::from_str(&spec).map_err(json_err)?,
                    row_version: r.try_get("row_version").map_err(db_err)?,
                })
            }
            fn client_row(r: &<$db as sqlx::Database>::Row) -> Result<ClientRecord> {
                let roles: String = r.try_get("roles").map_err(db_err)?;
                let disabled: i64 = r.try_get("disabled").map_err(db_err)?;
                Ok(ClientRecord {
                    client_id: r.try_get("client_id").map_err(db_err)?,
                    secret_hash: r.try_get("secret_hash").map_err(db_err)?,
                    previous_secret_hash: r.try_get("previous_secret_hash").map_err(db_err)?,
                    previous_valid_until: opt_ts(r.try_get("previous_valid_until").map_err(db_err)?),
                    roles: serde_json::from_str(&roles).map_err(json_err)?,
                    disabled: disabled != 0,
                    tokens_not_before: Timestamp(r.try_get("tokens_not_before").map_err(db_err)?),
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                    secret_rotated_at: opt_ts(r.try_get("secret_rotated_at").map_err(db_err)?),
                    metadata: serde_json::from_str(&r.try_get::<String, _>("metadata").map_err(db_err)?).map_err(json_err)?,
                })
            }

            fn operator_row(r: &<$db as sqlx::Database>::Row) -> Result<OperatorRecord> {
                let roles: String = r.try_get("roles").map_err(db_err)?;
                let disabled: i64 = r.try_get("disabled").map_err(db_err)?;
                let failed: i64 = r.try_get("failed_logins").map_err(db_err)?;
                Ok(OperatorRecord {
                    name: r.try_get("name").map_err(db_err)?,
                    password_hash: r.try_get("password_hash").map_err(db_err)?,
                    roles: serde_json::from_str(&roles).map_err(json_err)?,
                    disabled: disabled != 0,
                    created_at: Timestamp(r.try_get("created_at").map_err(db_err)?),
                    email: r.try_get("email").map_err(db_err)?,
                    failed_logins: failed as u32,
                    locked_until: opt_ts(r.try_get("locked_until").map_err(db_err)?),
                })
            }

            fn audit_row(r: &<$db as sqlx::Database>::Row) -> Result<AuditEntry> {
                let detail: String = r.try_get("detail").map_err(db_err)?;
                Ok(AuditEntry {
                    seq: r.try_get("seq").map_err(db_err)?,
                    entry: NewAuditEntry {
                        ts: Timestamp(r.try_get("ts").map_err(db_err)?),
                        principal: r.try_get("principal").map_err(db_err)?,
                        action: r.try_get("action").map_err(db_err)?,
                        target: r.try_get("target").map_err(db_err)?,
                        outcome: r.try_get("outcome").map_err(db_err)?,
                        source: r.try_get("source").map_err(db_err)?,
                        request_id: r.try_get("request_id").map_err(db_err)?,
                        detail: serde_json::from_str(&detail).map_err(json_err)?,
                    },
                    prev_hash: r.try_get("prev_hash").map_err(db_err)?,
                    hash: r.try_get("hash").map_err(db_err)?,
                })
            }

            fn task_row(r: &<$db as sqlx::Database>::Row) -> Result<TaskRecord> {
                let status: String = r.try_get("status").map_err(db_err)?;
                let spec: String = r.try_get("spec").map_err(db_err)?;
                let stage: i64 = r.try_get("stage_index").map_err(db_err)?;
                let task: i64 = r.try_get("task_index").map_err(db_err)?;
                let attempt: i64 = r.try_get("attempt").map_err(db_err)?;
                let exit: Option<i64> = r.try_get("exit_code").map_err(db_err)?;
                Ok(TaskRecord {
                    deployment_id: r.try_get("deployment_id").map_err(db_err)?,
                    stage_index: stage as usize,
                    task_index: task as usize,
                    environment: r.try_get("environment").map_err(db_err)?,
                    spec: serde_json::from_str(&spec).map_err(json_err)?,
                    status: task_status_of(&status)?,
                    attempt: attempt as u32,
                    attempt_id: r.try_get("attempt_id").map_err(db_err)?,
                    agent: r.try_get("agent").map_err(db_err)?,
                    lease_until: opt_ts(r.try_get("lease_until").map_err(db_err)?),
                    due_at: opt_ts(r.try_get("due_at").map_err(db_err)?),
                    started_at: opt_ts(r.try_get("started_at").map_err(db_err)?),
                    finished_at: opt_ts(r.try_get("finished_at").map_err(db_err)?),
                    exit_code: exit.map(|e| e as i32),
                    message: r.try_get("message").map_err(db_err)?,
                    decided_by: r.try_get("decided_by").map_err(db_err)?,
                    comment: r.try_get("comment").map_err(db_err)?,
                    approvals: list_from(r.try_get("approvals").map_err(db_err)?)?,
                })
            }
        }

        #[async_trait]
        impl Store for $ty {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn insert_environment(&self, env: &Environment) -> Result<bool> {
                let labels = serde_json::to_string(&env.labels).map_err(json_err)?;
                let r = sqlx::query(
                    "INSERT INTO environments (name, kind, labels, created_at, applications) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&env.name)
                .bind(env.kind.as_str())
                .bind(labels)
                .bind(env.created_at.0)
                .bind(list_to(&env.applications)?)
                .execute(self.w())
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn get_environment(&self, name: &str) -> Result<Option<Environment>> {
                let row = sqlx::query("SELECT * FROM environments WHERE name = $1")
                    .bind(name)
                    .fetch_optional(self.r())
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(Self::env_row).transpose()
            }

            async fn list_environments(&self) -> Result<Vec<Environment>> {
                let rows = sqlx::query("SELECT * FROM environments ORDER BY name").fetch_all(self.r()).await.map_err(db_err)?;
                rows.iter().map(Self::env_row).collect()
            }

            async fn update_environment(&self, env: &Environment) -> Result<bool> {
                let r = sqlx::query("UPDATE environments SET kind = $1, labels = $2, applications = $3 WHERE name = $4")
                    .bind(env.kind.as_str())
                    .bind(serde_json::to_string(&env.labels).map_err(json_err)?)
                    .bind(list_to(&env.applications)?)
                    .bind(&env.name)
                    .execute(self.w())
                    .await
                    .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_environment(&self, name: &str) -> Result<bool> {
                let r = sqlx::query("DELETE FROM environments WHERE name = $1").bind(name).execute(self.w()).await.map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn insert_agent(&self, a: &AgentRecord) -> Result<()> {
                let r = sqlx::query(
                    "INSERT INTO agents (name, environment, secret_hash, created_at, last_seen_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&a.name)
                .bind(&a.environment)
                .bind(&a.secret_hash)
                .bind(a.created_at.0)
                .bind(a.last_seen_at.map(|t| t.0))
                .execute(self.w())
                .await;
                match r {
                    Ok(_) => Ok(()),
                    Err(e) if is_unique_violation(&e) => Err(Error::Conflict(format!("agent {} exists already", a.name))),
                    Err(e) => Err(db_err(e)),
                }
            }

            async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>> {
                let row = sqlx::query("SELECT * FROM agents WHERE name = $1").bind(name).fetch_optional(self.r()).await.map_err(db_err)?;
                row.as_ref().map(Self::agent_row).transpose()
            }

            async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
                let rows = sqlx::query("SELECT * FROM agents ORDER BY name").fetch_all(self.r()).await.map_err(db_err)?;
                rows.iter().map(Self::agent_row).collect()
            }

            async fn delete_agent(&self, name: &str) -> Result<bool> {
                let r = sqlx::query("DELETE FROM agents WHERE name = $1").bind(name).execute(self.w()).await.map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn touch_agent(&self, name: &str, at: Timestamp) -> Result<()> {
                sqlx::query("UPDATE agents SET last_seen_at = $1 WHERE name = $2")
                    .bind(at.0)
                    .bind(name)
                    .execute(self.w())
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn insert_operator(&self, op: &OperatorRecord) -> Result<bool> {
                let roles = serde_json::to_string(&op.roles).map_err(json_err)?;
                let r = sqlx::query(
                    "INSERT INTO operators (name, password_hash, roles, disabled, created_at, email) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&op.name)
                .bind(&op.password_hash)
                .bind(roles)
                .bind(op.disabled as i64)
                .bind(op.created_at.0)
                .bind(&op.email)
                .execute(self.w())
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn get_operator(&self, name: &str) -> Result<Option<OperatorRecord>> {
                let row = sqlx::query("SELECT * FROM operators WHERE name = $1").bind(name).fetch_optional(self.r()).await.map_err(db_err)?;
                row.as_ref().map(Self::operator_row).transpose()
            }

            async fn list_operators(&self) -> Result<Vec<OperatorRecord>> {
                let rows = sqlx::query("SELECT * FROM operators ORDER BY name").fetch_all(self.r()).await.map_err(db_err)?;
                rows.iter().map(Self::operator_row).collect()
            }

            async fn update_operator(&self, op: &OperatorRecord) -> Result<bool> {
                let roles = serde_json::to_string(&op.roles).map_err(json_err)?;
                let r = sqlx::query(
                    "UPDATE operators SET password_hash = $1, roles = $2, disabled = $3, email = $4, failed_logins = $5, locked_until = $6 WHERE name = $7",
                )
                .bind(&op.password_hash)
                .bind(roles)
                .bind(op.disabled as i64)
                .bind(&op.email)
                .bind(op.failed_logins as i64)
                .bind(op.locked_until.map(|t| t.0))
                .bind(&op.name)
                .execute(self.w())
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn login_failed(&self, name: &str, threshold: u32, lock_until: Timestamp) -> Result<Option<(u32, Option<Timestamp>)>> {
                let row: Option<(i64, Option<i64>)> = sqlx::query_as(
                    "UPDATE operators SET failed_logins = failed_logins + 1, \
                     locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END \
                     WHERE name = $3 RETURNING failed_logins, locked_until",
                )
                .bind(threshold as i64)
                .bind(lock_until.0)
                .bind(name)
                .fetch_optional(self.w())
                .await
                .map_err(db_err)?;
                Ok(row.map(|(n, l)| (n as u32, opt_ts(l))))
            }

            async fn ensure_application(&self, name: &str, at: Timestamp) -> Result<()> {
                sqlx::query("INSERT INTO applications (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(name)
                    .bind(at.0)
                    .execute(self.w())
                    .await
                    .map_err(db_err)?;
                Ok(())
            }

            async fn insert_artifact(&self, a: &Artifact) -> Result<ArtifactInsert> {
                let mut tx = self.w().begin().await.map_err(db_err)?;
                sqlx::query("INSERT INTO applications (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&a.application)
                    .bind(a.created_at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let r = sqlx::query(
                    "INSERT INTO artifacts (application, version, sha256, size, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&a.application)
                .bind(&a.version)
                .bind(&a.sha256)
                .bind(a.size as i64)
                .bind(a.created_at.0)
                .bind(&a.created_by)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                if r.rows_affected() == 1 {
                    tx.commit().await.map_err(db_err)?;
                    return Ok(ArtifactInsert::Inserted);
                }
                let row = sqlx::query("SELECT * FROM artifacts WHERE application = $1 AND version = $2")
                    .bind(&a.application)
                    .bind(&a.version)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(ArtifactInsert::Exists(Self::artifact_row(&row)?))
            }

            async fn get_artifact(&self, application: &str, version: &str) -> Result<Option<Artifact>> {
                let row = sqlx::query("SELECT * FROM artifacts WHERE application = $1 AND version = $2")
                    .bind(application)
                    .bind(version)
                    .fetch_optional(self.r())
                    .await
                    .map_err(db_err)?;
                row.as_ref().map(Self::artifact_row).transpose()
            }

            async fn list_artifacts(&self, application: Option<&str>) -> Result<Vec<Artifact>> {
                let rows = match application {
                    Some(app) => sqlx::query("SELECT * FROM artifacts WHERE application = $1 ORDER BY created_at DESC, version DESC")
                        .bind(app)
                        .fetch_all(self.r())
                        .await,
                    None => sqlx::query("SELECT * FROM artifacts ORDER BY application, created_at DESC, version DESC").fetch_all(self.r()).await,
                }
                .map_err(db_err)?;
                rows.iter().map(Self::artifact_row).collect()
            }

            async fn put_pipeline(&self, p: &Pipeline) -> Result<()> {
                let stages = serde_json::to_string(&p.stages).map_err(json_err)?;
                let mut tx = self.w().begin().await.map_err(db_err)?;
                sqlx::query("INSERT INTO applications (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(&p.application)
                    .bind(p.created_at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query(
                    "INSERT INTO pipelines (name, application, stages, created_at, updated_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (name) DO UPDATE SET application = excluded.application, stages = excluded.stages, updated_at = excluded.updated_at",
                )
                .bind(&p.name)
                .bind(&p.application)
                .bind(stages)
                .bind(p.created_at.0)
                .bind(p.updated_at.0)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                tx.commit().await.map_err(db_err)
            }

            async fn get_pipeline(&self, name: &str) -> Result<Option<Pipeline>> {
                let row = sqlx::query("SELECT * FROM pipelines WHERE name = $1").bind(name).fetch_optional(self.r()).await.map_err(db_err)?;
                row.as_ref().map(Self::pipeline_row).transpose()
            }

            async fn list_pipelines(&self) -> Result<Vec<Pipeline>> {
                let rows = sqlx::query("SELECT * FROM pipelines ORDER BY name").fetch_all(self.r()).await.map_err(db_err)?;
                rows.iter().map(Self::pipeline_row).collect()
            }

            async fn delete_pipeline(&self, name: &str) -> Result<bool> {
                let r = sqlx::query("DELETE FROM pipelines WHERE name = $1").bind(name).execute(self.w()).await.map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn create_deployment(&self, d: &DeploymentRecord, event: &NewEvent) -> Result<i64> {
                let spec = serde_json::to_string(&d.spec).map_err(json_err)?;
                let mut tx = self.w().begin().await.map_err(db_err)?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO deployments (pipeline, application, version, status, stage_index, holds_stage, message, created_by, \
                     created_at, updated_at, finished_at, rollback_of, spec, row_version) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0) RETURNING id",
                )
                .bind(&d.pipeline)
                .bind(&d.application)
                .bind(&d.version)
                .bind(d.status.as_str())
                .bind(d.stage_index as i64)
                .bind(d.holds_stage as i64)
                .bind(&d.message)
                .bind(&d.created_by)
                .bind(d.created_at.0)
                .bind(d.updated_at.0)
                .bind(d.finished_at.map(|t| t.0))
                .bind(d.rollback_of)
                .bind(spec)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
                for t in DeploymentState::new_tasks(id, &d.spec) {
                    sqlx::query(
                        "INSERT INTO task_runs (deployment_id, stage_index, task_index, environment, on_agent, spec, status, attempt) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, 0)",
                    )
                    .bind(id)
                    .bind(t.stage_index as i64)
                    .bind(t.task_index as i64)
                    .bind(&t.environment)
                    .bind(t.spec.runs_on_agent() as i64)
                    .bind(serde_json::to_string(&t.spec).map_err(json_err)?)
                    .bind(t.status.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                sqlx::query("INSERT INTO deployment_events (deployment_id, ts, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)")
                    .bind(id)
                    .bind(d.created_at.0)
                    .bind(&event.kind)
                    .bind(&event.actor)
                    .bind(event.detail.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(id)
            }

            async fn load_deployment(&self, id: i64) -> Result<Option<DeploymentState>> {
                let mut conn = self.r().acquire().await.map_err(db_err)?;
                let row = sqlx::query(&format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(db_err)?;
                let Some(row) = row else { return Ok(None) };
                let deployment = Self::deployment_row(&row)?;
                let rows = sqlx::query(&format!(
                    "SELECT {TASK_COLS} FROM task_runs WHERE deployment_id = $1 ORDER BY stage_index, task_index"
                ))
                .bind(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(db_err)?;
                let tasks = rows.iter().map(Self::task_row).collect::<Result<Vec<_>>>()?;
                Ok(Some(DeploymentState { deployment, tasks }))
            }

            async fn commit(&self, c: &Commit) -> Result<CommitOutcome> {
                let d = &c.deployment;
                let mut tx = self.w().begin().await.map_err(db_err)?;
                let current: Option<i64> = sqlx::query_scalar(concat!("SELECT row_version FROM deployments WHERE id = $1", $lock))
                    .bind(d.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if current != Some(c.expected_version) {
                    return Ok(CommitOutcome::VersionConflict);
                }
                if let Some(s) = c.release_stage {
                    sqlx::query("DELETE FROM stage_locks WHERE pipeline = $1 AND stage_index = $2 AND deployment_id = $3")
                        .bind(&d.pipeline)
                        .bind(s as i64)
                        .bind(d.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
                if let Some(s) = c.acquire_stage {
                    let r = sqlx::query(
                        "INSERT INTO stage_locks (pipeline, stage_index, deployment_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(&d.pipeline)
                    .bind(s as i64)
                    .bind(d.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    if r.rows_affected() == 0 {
                        let holder: i64 = sqlx::query_scalar("SELECT deployment_id FROM stage_locks WHERE pipeline = $1 AND stage_index = $2")
                            .bind(&d.pipeline)
                            .bind(s as i64)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(db_err)?;
                        if holder != d.id {
                            return Ok(CommitOutcome::StageBusy);
                        }
                    }
                }
                sqlx::query(
                    "UPDATE deployments SET status = $1, stage_index = $2, holds_stage = $3, message = $4, updated_at = $5, \
                     finished_at = $6, row_version = $7 WHERE id = $8",
                )
                .bind(d.status.as_str())
                .bind(d.stage_index as i64)
                .bind(d.holds_stage as i64)
                .bind(&d.message)
                .bind(d.updated_at.0)
                .bind(d.finished_at.map(|t| t.0))
                .bind(c.expected_version + 1)
                .bind(d.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                for t in &c.changed_tasks {
                    sqlx::query(
                        "UPDATE task_runs SET status = $1, attempt = $2, attempt_id = $3, agent = $4, lease_until = $5, due_at = $6, \
                         started_at = $7, finished_at = $8, exit_code = $9, message = $10, decided_by = $11, comment = $12, \
                         approvals = $16 WHERE deployment_id = $13 AND stage_index = $14 AND task_index = $15",
                    )
                    .bind(t.status.as_str())
                    .bind(t.attempt as i64)
                    .bind(&t.attempt_id)
                    .bind(&t.agent)
                    .bind(t.lease_until.map(|x| x.0))
                    .bind(t.due_at.map(|x| x.0))
                    .bind(t.started_at.map(|x| x.0))
                    .bind(t.finished_at.map(|x| x.0))
                    .bind(t.exit_code.map(|x| x as i64))
                    .bind(&t.message)
                    .bind(&t.decided_by)
                    .bind(&t.comment)
                    .bind(t.deployment_id)
                    .bind(t.stage_index as i64)
                    .bind(t.task_index as i64)
                    .bind(list_to(&t.approvals)?)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                if !c.events.is_empty() {
                    // One statement for all events of the commit.
                    let mut sql = String::from("INSERT INTO deployment_events (deployment_id, ts, kind, actor, detail) VALUES ");
                    for i in 0..c.events.len() {
                        let b = i * 5;
                        sql.push_str(&format!("{}(${}, ${}, ${}, ${}, ${})", if i > 0 { ", " } else { "" }, b + 1, b + 2, b + 3, b + 4, b + 5));
                    }
                    let mut q = sqlx::query(&sql);
                    for e in &c.events {
                        q = q.bind(d.id).bind(d.updated_at.0).bind(&e.kind).bind(&e.actor).bind(e.detail.to_string());
                    }
                    q.execute(&mut *tx).await.map_err(db_err)?;
                }
                for (stage, task, ts, stream, line) in &c.logs {
                    sqlx::query(
                        "INSERT INTO task_logs (deployment_id, stage_index, task_index, ts, stream, line) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(d.id)
                    .bind(*stage as i64)
                    .bind(*task as i64)
                    .bind(ts.0)
                    .bind(stream)
                    .bind(line)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)?;
                Ok(CommitOutcome::Committed)
            }

            async fn list_deployments(&self, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>> {
                let limit = f.limit.unwrap_or(100).min(10_000) as i64;
                let rows = sqlx::query(&format!(
                    "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE ($1 IS NULL OR pipeline = $1) AND ($2 IS NULL OR status = $2) \
                     AND ($4::text IS NULL OR application IN (SELECT jsonb_array_elements_text($4::jsonb))) \
                     ORDER BY id DESC LIMIT $3"
                ))
                .bind(f.pipeline.as_deref())
                .bind(f.status.map(|s| s.as_str()))
                .bind(limit)
                .bind(f.applications.as_ref().map(|a| serde_json::Value::from(a.clone()).to_string()))
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                rows.iter().map(Self::deployment_row).collect()
            }

            async fn active_deployment_ids(&self) -> Result<Vec<i64>> {
                sqlx::query_scalar("SELECT id FROM deployments WHERE status NOT IN ('completed', 'aborted', 'failed') ORDER BY id")
                    .fetch_all(self.r())
                    .await
                    .map_err(db_err)
            }

            async fn stage_locks(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
                let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT stage_index, deployment_id FROM stage_locks WHERE pipeline = $1")
                    .bind(pipeline)
                    .fetch_all(self.r())
                    .await
                    .map_err(db_err)?;
                Ok(rows.into_iter().map(|(s, d)| (s as usize, d)).collect())
            }

            async fn oldest_queued(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT stage_index, MIN(id) FROM deployments WHERE pipeline = $1 AND status = 'queued' GROUP BY stage_index",
                )
                .bind(pipeline)
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                Ok(rows.into_iter().map(|(s, d)| (s as usize, d)).collect())
            }

            async fn queue_heads(&self) -> Result<Vec<i64>> {
                sqlx::query_scalar("SELECT MIN(id) FROM deployments WHERE status = 'queued' GROUP BY pipeline, stage_index ORDER BY 1")
                    .fetch_all(self.r())
                    .await
                    .map_err(db_err)
            }

            async fn claimable_tasks(&self, environment: &str, limit: u32) -> Result<Vec<(i64, usize, usize)>> {
                let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                    "SELECT deployment_id, stage_index, task_index FROM task_runs \
                     WHERE status = 'ready' AND on_agent = 1 AND environment = $1 ORDER BY deployment_id LIMIT $2",
                )
                .bind(environment)
                .bind(limit as i64)
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                Ok(rows.into_iter().map(|(d, s, t)| (d, s as usize, t as usize)).collect())
            }

            async fn owned_attempts(&self, agent: &str) -> Result<Vec<(i64, String)>> {
                sqlx::query_as("SELECT deployment_id, attempt_id FROM task_runs WHERE status = 'in_progress' AND agent = $1 AND attempt_id IS NOT NULL")
                    .bind(agent)
                    .fetch_all(self.r())
                    .await
                    .map_err(db_err)
            }

            async fn attempt_task(&self, attempt_id: &str) -> Result<Option<(i64, usize, usize)>> {
                let row: Option<(i64, i64, i64)> =
                    sqlx::query_as("SELECT deployment_id, stage_index, task_index FROM task_runs WHERE attempt_id = $1")
                        .bind(attempt_id)
                        .fetch_optional(self.r())
                        .await
                        .map_err(db_err)?;
                Ok(row.map(|(d, s, t)| (d, s as usize, t as usize)))
            }

            async fn heartbeat(&self, attempt_id: &str, agent: &str, lease_until: Timestamp) -> Result<bool> {
                let r = sqlx::query(
                    "UPDATE task_runs SET lease_until = $1 WHERE attempt_id = $2 AND agent = $3 AND status = 'in_progress'",
                )
                .bind(lease_until.0)
                .bind(attempt_id)
                .bind(agent)
                .execute(self.w())
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn extend_all_leases(&self, until: Timestamp) -> Result<u64> {
                let r = sqlx::query("UPDATE task_runs SET lease_until = $1 WHERE status = 'in_progress' AND lease_until IS NOT NULL AND lease_until < $1")
                    .bind(until.0)
                    .execute(self.w())
                    .await
                    .map_err(db_err)?;
                Ok(r.rows_affected())
            }

            async fn deployments_due(&self, now: Timestamp) -> Result<Vec<i64>> {
                sqlx::query_scalar(
                    "SELECT DISTINCT deployment_id FROM task_runs WHERE status = 'in_progress' \
                     AND ((lease_until IS NOT NULL AND lease_until < $1) OR (due_at IS NOT NULL AND due_at <= $1)) ORDER BY deployment_id",
                )
                .bind(now.0)
                .fetch_all(self.r())
                .await
                .map_err(db_err)
            }

            async fn pending_promotion_before(&self, pipeline: &str, stage: usize, below: i64) -> Result<Vec<i64>> {
                sqlx::query_scalar(
                    "SELECT id FROM deployments WHERE pipeline = $1 AND status = 'pending_promotion' AND stage_index = $2 AND id < $3 ORDER BY id",
                )
                .bind(pipeline)
                .bind(stage as i64)
                .bind(below)
                .fetch_all(self.r())
                .await
                .map_err(db_err)
            }

            async fn last_completed(&self, pipeline: &str, below: i64, not_version: &str) -> Result<Option<DeploymentRecord>> {
                let row = sqlx::query(&format!(
                    "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE pipeline = $1 AND status = 'completed' AND id < $2 AND version <> $3 \
                     ORDER BY id DESC LIMIT 1"
                ))
                .bind(pipeline)
                .bind(below)
                .bind(not_version)
                .fetch_optional(self.r())
                .await
                .map_err(db_err)?;
                row.as_ref().map(Self::deployment_row).transpose()
            }

            async fn append_logs(&self, deployment_id: i64, stage: usize, task: usize, lines: &[(Timestamp, String, String)]) -> Result<()> {
                if lines.is_empty() {
                    return Ok(());
                }
                let mut tx = self.w().begin().await.map_err(db_err)?;
                for (ts, stream, line) in lines {
                    sqlx::query(
                        "INSERT INTO task_logs (deployment_id, stage_index, task_index, ts, stream, line) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(deployment_id)
                    .bind(stage as i64)
                    .bind(task as i64)
                    .bind(ts.0)
                    .bind(stream)
                    .bind(line)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                }
                tx.commit().await.map_err(db_err)
            }

            async fn logs(&self, deployment_id: i64, after: i64, limit: u32) -> Result<Vec<LogLine>> {
                let rows: Vec<(i64, i64, i64, i64, String, String)> = sqlx::query_as(
                    "SELECT id, stage_index, task_index, ts, stream, line FROM task_logs WHERE deployment_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                )
                .bind(deployment_id)
                .bind(after)
                .bind(limit as i64)
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(id, s, t, ts, stream, line)| LogLine {
                        id,
                        stage_index: s as usize,
                        task_index: t as usize,
                        ts: Timestamp(ts),
                        stream,
                        line,
                    })
                    .collect())
            }

            async fn events(&self, deployment_id: i64) -> Result<Vec<DeploymentEvent>> {
                let rows: Vec<(i64, i64, i64, String, String, String)> = sqlx::query_as(
                    "SELECT id, deployment_id, ts, kind, actor, detail FROM deployment_events WHERE deployment_id = $1 ORDER BY id",
                )
                .bind(deployment_id)
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                rows.into_iter()
                    .map(|(id, deployment_id, ts, kind, actor, detail)| {
                        Ok(DeploymentEvent {
                            id,
                            deployment_id,
                            ts: Timestamp(ts),
                            kind,
                            actor,
                            detail: serde_json::from_str(&detail).map_err(json_err)?,
                        })
                    })
                    .collect()
            }

            async fn insert_client(&self, c: &ClientRecord) -> Result<()> {
                let roles = serde_json::to_string(&c.roles).map_err(json_err)?;
                let r = sqlx::query(
                    "INSERT INTO clients (client_id, secret_hash, previous_secret_hash, previous_valid_until, roles, disabled, tokens_not_before, created_at, secret_rotated_at, metadata) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&c.client_id)
                .bind(&c.secret_hash)
                .bind(&c.previous_secret_hash)
                .bind(c.previous_valid_until.map(|t| t.0))
                .bind(roles)
                .bind(c.disabled as i64)
                .bind(c.tokens_not_before.0)
                .bind(c.created_at.0)
                .bind(c.secret_rotated_at.map(|t| t.0))
                .bind(serde_json::to_string(&c.metadata).map_err(json_err)?)
                .execute(self.w())
                .await;
                match r {
                    Ok(_) => Ok(()),
                    Err(e) if is_unique_violation(&e) => Err(Error::Conflict(format!("client {} exists already", c.client_id))),
                    Err(e) => Err(db_err(e)),
                }
            }

            async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
                let row = sqlx::query("SELECT * FROM clients WHERE client_id = $1").bind(client_id).fetch_optional(self.r()).await.map_err(db_err)?;
                row.as_ref().map(Self::client_row).transpose()
            }

            async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
                let rows = sqlx::query("SELECT * FROM clients ORDER BY client_id").fetch_all(self.r()).await.map_err(db_err)?;
                rows.iter().map(Self::client_row).collect()
            }

            async fn update_client(&self, c: &ClientRecord) -> Result<bool> {
                let roles = serde_json::to_string(&c.roles).map_err(json_err)?;
                let r = sqlx::query(
                    "UPDATE clients SET secret_hash = $1, previous_secret_hash = $2, previous_valid_until = $3, roles = $4, disabled = $5, \
                     tokens_not_before = $6, secret_rotated_at = $7, metadata = $9 WHERE client_id = $8",
                )
                .bind(&c.secret_hash)
                .bind(&c.previous_secret_hash)
                .bind(c.previous_valid_until.map(|t| t.0))
                .bind(roles)
                .bind(c.disabled as i64)
                .bind(c.tokens_not_before.0)
                .bind(c.secret_rotated_at.map(|t| t.0))
                .bind(&c.client_id)
                .bind(serde_json::to_string(&c.metadata).map_err(json_err)?)
                .execute(self.w())
                .await
                .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_client(&self, client_id: &str) -> Result<bool> {
                let r = sqlx::query("DELETE FROM clients WHERE client_id = $1").bind(client_id).execute(self.w()).await.map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, active, created_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.private_key)
                .bind(&k.public_jwk)
                .bind(k.active as i64)
                .bind(k.created_at.0)
                .bind(k.retired_at.map(|t| t.0))
                .execute(self.w())
                .await
                .map_err(db_err)?;
                Ok(())
            }

            async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
                let rows: Vec<(String, String, String, String, i64, i64, Option<i64>)> = sqlx::query_as(
                    "SELECT kid, alg, private_key, public_jwk, active, created_at, retired_at FROM signing_keys ORDER BY created_at, kid",
                )
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                Ok(rows
                    .into_iter()
                    .map(|(kid, alg, private_key, public_jwk, active, created_at, retired_at)| SigningKeyRecord {
                        kid,
                        alg,
                        private_key,
                        public_jwk,
                        active: active != 0,
                        created_at: Timestamp(created_at),
                        retired_at: opt_ts(retired_at),
                    })
                    .collect())
            }

            async fn activate_signing_key(&self, kid: &str, now: Timestamp) -> Result<bool> {
                let mut tx = self.w().begin().await.map_err(db_err)?;
                let exists: Option<String> = sqlx::query_scalar("SELECT kid FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if exists.is_none() {
                    return Ok(false);
                }
                sqlx::query("UPDATE signing_keys SET active = 0, retired_at = $1 WHERE active = 1 AND kid <> $2")
                    .bind(now.0)
                    .bind(kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query("UPDATE signing_keys SET active = 1, retired_at = NULL WHERE kid = $1")
                    .bind(kid)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)?;
                Ok(true)
            }

            async fn update_signing_key_material(&self, kid: &str, sealed: &str) -> Result<bool> {
                let r = sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
                    .bind(sealed)
                    .bind(kid)
                    .execute(self.w())
                    .await
                    .map_err(db_err)?;
                Ok(r.rows_affected() == 1)
            }

            async fn revoke_token(&self, jti: &str, expires_at: Timestamp) -> Result<()> {
                let mut tx = self.w().begin().await.map_err(db_err)?;
                sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1")
                    .bind(Timestamp::now().0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                sqlx::query("INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(jti)
                    .bind(expires_at.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                tx.commit().await.map_err(db_err)
            }

            async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
                let r: Option<String> = sqlx::query_scalar("SELECT jti FROM revoked_tokens WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(self.r())
                    .await
                    .map_err(db_err)?;
                Ok(r.is_some())
            }

            async fn record_insert(&self, kind: &str, key: &str, body: &str, expires_at: Option<Timestamp>) -> Result<bool> {
                let mut tx = self.w().begin().await.map_err(db_err)?;
                sqlx::query("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= $1 AND kind = $2")
                    .bind(Timestamp::now().0)
                    .bind(kind)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let n = sqlx::query(
                    "INSERT INTO records (kind, key, body, version, expires_at) VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING",
                )
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
                sqlx::query_as(
                    "SELECT body, version FROM records WHERE kind = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)",
                )
                .bind(kind)
                .bind(key)
                .bind(Timestamp::now().0)
                .fetch_optional(self.r())
                .await
                .map_err(db_err)
            }

            async fn record_list(&self, kind: &str) -> Result<Vec<(String, String, i64)>> {
                sqlx::query_as(
                    "SELECT key, body, version FROM records WHERE kind = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY key",
                )
                .bind(kind)
                .bind(Timestamp::now().0)
                .fetch_all(self.r())
                .await
                .map_err(db_err)
            }

            async fn record_update(
                &self,
                kind: &str,
                key: &str,
                version: i64,
                body: &str,
                expires_at: Option<Timestamp>,
            ) -> Result<bool> {
                let n = sqlx::query(
                    "UPDATE records SET body = $1, version = version + 1, expires_at = $2 \
                     WHERE kind = $3 AND key = $4 AND version = $5 AND (expires_at IS NULL OR expires_at > $6)",
                )
                .bind(body)
                .bind(expires_at.map(|t| t.0))
                .bind(kind)
                .bind(key)
                .bind(version)
                .bind(Timestamp::now().0)
                .execute(self.w())
                .await
                .map_err(db_err)?
                .rows_affected();
                Ok(n == 1)
            }

            async fn record_take(&self, kind: &str, key: &str) -> Result<Option<String>> {
                let row: Option<(String, Option<i64>)> =
                    sqlx::query_as("DELETE FROM records WHERE kind = $1 AND key = $2 RETURNING body, expires_at")
                        .bind(kind)
                        .bind(key)
                        .fetch_optional(self.w())
                        .await
                        .map_err(db_err)?;
                Ok(row.filter(|(_, exp)| exp.is_none_or(|e| e > Timestamp::now().0)).map(|(b, _)| b))
            }

            async fn record_delete(&self, kind: &str, key: &str) -> Result<bool> {
                let n = sqlx::query("DELETE FROM records WHERE kind = $1 AND key = $2")
                    .bind(kind)
                    .bind(key)
                    .execute(self.w())
                    .await
                    .map_err(db_err)?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn append_audit_batch(&self, entries: &[NewAuditEntry]) -> Result<Vec<AuditEntry>> {
                let mut tx = self.w().begin().await.map_err(db_err)?;
                // One appender at a time: the chain is a total order.
                sqlx::query("SELECT pg_advisory_xact_lock(7243717)").execute(&mut *tx).await.map_err(db_err)?;
                let mut last: Option<(i64, String)> = sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                let mut out = Vec::with_capacity(entries.len());
                for e in entries {
                    let a = audit::link(last.take(), e.clone());
                    sqlx::query(
                        "INSERT INTO audit_log (seq, ts, principal, action, target, outcome, source, request_id, detail, prev_hash, hash) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                    )
                    .bind(a.seq)
                    .bind(a.entry.ts.0)
                    .bind(&a.entry.principal)
                    .bind(&a.entry.action)
                    .bind(&a.entry.target)
                    .bind(&a.entry.outcome)
                    .bind(&a.entry.source)
                    .bind(&a.entry.request_id)
                    .bind(a.entry.detail.to_string())
                    .bind(&a.prev_hash)
                    .bind(&a.hash)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
                    last = Some((a.seq, a.hash.clone()));
                    out.push(a);
                }
                tx.commit().await.map_err(db_err)?;
                Ok(out)
            }

            async fn audit_entries(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query("SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after_seq)
                    .bind(limit as i64)
                    .fetch_all(self.r())
                    .await
                    .map_err(db_err)?;
                rows.iter().map(Self::audit_row).collect()
            }

            async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
                let rows = sqlx::query(
                    "SELECT * FROM audit_log WHERE ($1::text IS NULL OR principal = $1) AND ($2::text IS NULL OR action LIKE $2) \
                     AND ($3::text IS NULL OR outcome = $3) AND ($4::bigint IS NULL OR seq < $4) ORDER BY seq DESC LIMIT $5",
                )
                .bind(f.principal.as_deref())
                .bind(f.action.as_ref().map(|a| format!("%{a}%")))
                .bind(f.outcome.as_deref())
                .bind(f.before)
                .bind(f.limit.unwrap_or(100).min(10_000) as i64)
                .fetch_all(self.r())
                .await
                .map_err(db_err)?;
                rows.iter().map(Self::audit_row).collect()
            }

            async fn check_integrity(&self) -> Result<()> {
                let rows: Vec<String> = sqlx::query_scalar($integrity).fetch_all(self.r()).await.map_err(db_err)?;
                if rows.iter().all(|r| r == "ok") {
                    Ok(())
                } else {
                    Err(Error::Store(format!("integrity check failed: {}", rows.join("; "))))
                }
            }
        }
    };
}

store_impl!(PgStore, sqlx::Postgres, "postgres", lock_row: " FOR UPDATE", integrity: "SELECT 'ok'::text");

/// Test support: a PostgreSQL store in a fresh schema of its own, so tests run in parallel.
pub mod testing {
    use super::*;

    /// `DROVER_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`.
    pub fn pg_url() -> String {
        std::env::var("DROVER_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
    }

    /// Creates schema `drover_test_<random>` and returns a store whose connections use it,
    /// with the schema name (drop it with [`drop_schema`]).
    pub async fn pg_schema_store() -> Result<(PgStore, String)> {
        let url = pg_url();
        let schema = format!("drover_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = PgPoolOptions::new().max_connections(1).connect(&url).await.map_err(db_err)?;
        sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.map_err(db_err)?;
        admin.close().await;
        let opts = PgConnectOptions::from_str(&url).map_err(db_err)?.options([("search_path", schema.as_str())]);
        Ok((PgStore::connect_with(opts).await?, schema))
    }

    /// A database URL that selects the schema, for processes started by tests.
    pub fn pg_schema_url(schema: &str) -> String {
        let url = pg_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    }

    pub async fn drop_schema(schema: &str) {
        if let Ok(admin) = PgPoolOptions::new().max_connections(1).connect(&pg_url()).await {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&admin).await;
            admin.close().await;
        }
    }
}
