//! SQLite (embedded default) over rusqlite, in WAL mode.
//!
//! Each write runs as one closure on a blocking thread through the one writer connection
//! (SQLite has a single writer anyway, and it makes the read-check-write of `commit` atomic):
//! one hand-off per operation rather than one per statement, which is what bounds throughput on
//! a small machine. Reads run in place on a small pool of read-only connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
use drover_types::{Artifact, DeploymentEvent, Environment, EnvironmentKind, LogLine, Pipeline, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};

use crate::{
    DEPLOYMENT_COLS, SQLITE_MIGRATIONS, TASK_COLS, json_err, list_from, list_to, opt_ts, status_of, task_status_of,
};

fn err(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

const MAX_READERS: usize = 8;

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(Duration::from_secs(10))?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.set_prepared_statement_cache_capacity(128);
    Ok(())
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self> {
        let path = path.to_path_buf();
        let p = path.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Connection> {
            let mut c = Connection::open(&p).map_err(err)?;
            c.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
            c.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
            configure(&c).map_err(err)?;
            migrate(&mut c)?;
            Ok(c)
        })
        .await
        .map_err(|x| Error::Store(x.to_string()))??;
        Ok(SqliteStore { inner: Arc::new(Inner { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) }) })
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = inner.writer.lock().map_err(|_| Error::Store("writer lock poisoned".into()))?;
            f(&mut c)
        })
        .await
        .map_err(|x| Error::Store(x.to_string()))?
    }

    /// Runs a read on the calling thread: reads of a WAL database never wait for the writer and
    /// take microseconds with a warm page cache, so a hand-off would cost more than the read.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let inner = &self.inner;
        let pooled = inner.readers.lock().ok().and_then(|mut r| r.pop());
        let c = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(err)?;
                configure(&c).map_err(err)?;
                c
            }
        };
        let r = f(&c);
        if let Ok(mut pool) = inner.readers.lock()
            && pool.len() < MAX_READERS
        {
            pool.push(c);
        }
        r
    }
}

fn migrate(c: &mut Connection) -> Result<()> {
    let tx = c.transaction().map_err(err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS drover_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .map_err(err)?;
    for (v, sql) in SQLITE_MIGRATIONS {
        let done: Option<i64> = tx
            .query_row("SELECT version FROM drover_migrations WHERE version = ?1", [v], |r| r.get(0))
            .optional()
            .map_err(err)?;
        if done.is_none() {
            tx.execute_batch(sql).map_err(err)?;
            tx.execute(
                "INSERT INTO drover_migrations (version, applied_at) VALUES (?1, ?2)",
                params![v, Timestamp::now().0],
            )
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

type EnvRaw = (String, String, String, i64, Option<String>);

fn env_row(r: &Row) -> rusqlite::Result<EnvRaw> {
    Ok((r.get("name")?, r.get("kind")?, r.get("labels")?, r.get("created_at")?, r.get("applications")?))
}

fn env_of(t: EnvRaw) -> Result<Environment> {
    Ok(Environment {
        name: t.0,
        kind: EnvironmentKind::parse(&t.1).unwrap_or(EnvironmentKind::Custom),
        labels: serde_json::from_str(&t.2).map_err(json_err)?,
        applications: list_from(t.4)?,
        created_at: Timestamp(t.3),
    })
}

fn agent_row(r: &Row) -> rusqlite::Result<AgentRecord> {
    Ok(AgentRecord {
        name: r.get("name")?,
        environment: r.get("environment")?,
        secret_hash: r.get("secret_hash")?,
        created_at: Timestamp(r.get("created_at")?),
        last_seen_at: opt_ts(r.get("last_seen_at")?),
    })
}

fn artifact_row(r: &Row) -> rusqlite::Result<Artifact> {
    let size: i64 = r.get("size")?;
    Ok(Artifact {
        application: r.get("application")?,
        version: r.get("version")?,
        sha256: r.get("sha256")?,
        size: size as u64,
        created_at: Timestamp(r.get("created_at")?),
        created_by: r.get("created_by")?,
    })
}

fn pipeline_raw(r: &Row) -> rusqlite::Result<(String, String, String, i64, i64)> {
    Ok((r.get("name")?, r.get("application")?, r.get("stages")?, r.get("created_at")?, r.get("updated_at")?))
}

fn pipeline_of(t: (String, String, String, i64, i64)) -> Result<Pipeline> {
    Ok(Pipeline {
        name: t.0,
        application: t.1,
        stages: serde_json::from_str(&t.2).map_err(json_err)?,
        created_at: Timestamp(t.3),
        updated_at: Timestamp(t.4),
    })
}

/// Raw columns of a deployment row; decoded (JSON, enums) outside rusqlite's closure.
struct DeploymentRaw {
    id: i64,
    pipeline: String,
    application: String,
    version: String,
    status: String,
    stage_index: i64,
    holds_stage: i64,
    message: Option<String>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    finished_at: Option<i64>,
    rollback_of: Option<i64>,
    spec: String,
    row_version: i64,
}

fn deployment_raw(r: &Row) -> rusqlite::Result<DeploymentRaw> {
    Ok(DeploymentRaw {
        id: r.get("id")?,
        pipeline: r.get("pipeline")?,
        application: r.get("application")?,
        version: r.get("version")?,
        status: r.get("status")?,
        stage_index: r.get("stage_index")?,
        holds_stage: r.get("holds_stage")?,
        message: r.get("message")?,
        created_by: r.get("created_by")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        finished_at: r.get("finished_at")?,
        rollback_of: r.get("rollback_of")?,
        spec: r.get("spec")?,
        row_version: r.get("row_version")?,
    })
}

fn deployment_of(d: DeploymentRaw) -> Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        id: d.id,
        pipeline: d.pipeline,
        application: d.application,
        version: d.version,
        status: status_of(&d.status)?,
        stage_index: d.stage_index as usize,
        holds_stage: d.holds_stage != 0,
        message: d.message,
        created_by: d.created_by,
        created_at: Timestamp(d.created_at),
        updated_at: Timestamp(d.updated_at),
        finished_at: opt_ts(d.finished_at),
        rollback_of: d.rollback_of,
        spec: serde_json::from_str(&d.spec).map_err(json_err)?,
        row_version: d.row_version,
    })
}

type TaskRaw = (
    (i64, i64, i64, String, String, String, i64),
    (Option<String>, Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<i64>),
    (Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>),
);

fn task_raw(r: &Row) -> rusqlite::Result<TaskRaw> {
    Ok((
        (
            r.get("deployment_id")?,
            r.get("stage_index")?,
            r.get("task_index")?,
            r.get("environment")?,
            r.get("spec")?,
            r.get("status")?,
            r.get("attempt")?,
        ),
        (
            r.get("attempt_id")?,
            r.get("agent")?,
            r.get("lease_until")?,
            r.get("due_at")?,
            r.get("started_at")?,
            r.get("finished_at")?,
        ),
        (r.get("exit_code")?, r.get("message")?, r.get("decided_by")?, r.get("comment")?, r.get("approvals")?),
    ))
}

fn task_of(t: TaskRaw) -> Result<TaskRecord> {
    let (a, b, c) = t;
    Ok(TaskRecord {
        deployment_id: a.0,
        stage_index: a.1 as usize,
        task_index: a.2 as usize,
        environment: a.3,
        spec: serde_json::from_str(&a.4).map_err(json_err)?,
        status: task_status_of(&a.5)?,
        attempt: a.6 as u32,
        attempt_id: b.0,
        agent: b.1,
        lease_until: opt_ts(b.2),
        due_at: opt_ts(b.3),
        started_at: opt_ts(b.4),
        finished_at: opt_ts(b.5),
        exit_code: c.0.map(|x| x as i32),
        message: c.1,
        decided_by: c.2,
        comment: c.3,
        approvals: list_from(c.4)?,
    })
}

type ClientRaw = (String, String, Option<String>, Option<i64>, String, i64, i64, i64, Option<i64>, String);

fn client_raw(r: &Row) -> rusqlite::Result<ClientRaw> {
    Ok((
        r.get("client_id")?,
        r.get("secret_hash")?,
        r.get("previous_secret_hash")?,
        r.get("previous_valid_until")?,
        r.get("roles")?,
        r.get("disabled")?,
        r.get("tokens_not_before")?,
        r.get("created_at")?,
        r.get("secret_rotated_at")?,
        r.get("metadata")?,
    ))
}

fn client_of(t: ClientRaw) -> Result<ClientRecord> {
    Ok(ClientRecord {
        client_id: t.0,
        secret_hash: t.1,
        previous_secret_hash: t.2,
        previous_valid_until: opt_ts(t.3),
        roles: serde_json::from_str(&t.4).map_err(json_err)?,
        disabled: t.5 != 0,
        tokens_not_before: Timestamp(t.6),
        created_at: Timestamp(t.7),
        secret_rotated_at: opt_ts(t.8),
        metadata: serde_json::from_str(&t.9).map_err(json_err)?,
    })
}

type OperatorRaw = (String, String, String, i64, i64, Option<String>, i64, Option<i64>);

fn operator_raw(r: &Row) -> rusqlite::Result<OperatorRaw> {
    Ok((
        r.get("name")?,
        r.get("password_hash")?,
        r.get("roles")?,
        r.get("disabled")?,
        r.get("created_at")?,
        r.get("email")?,
        r.get("failed_logins")?,
        r.get("locked_until")?,
    ))
}

fn operator_of(t: OperatorRaw) -> Result<OperatorRecord> {
    Ok(OperatorRecord {
        name: t.0,
        password_hash: t.1,
        roles: serde_json::from_str(&t.2).map_err(json_err)?,
        disabled: t.3 != 0,
        created_at: Timestamp(t.4),
        email: t.5,
        failed_logins: t.6 as u32,
        locked_until: opt_ts(t.7),
    })
}

type AuditRaw = (i64, i64, String, String, String, String, String, String, String, String, String);

fn audit_raw(r: &Row) -> rusqlite::Result<AuditRaw> {
    Ok((
        r.get("seq")?,
        r.get("ts")?,
        r.get("principal")?,
        r.get("action")?,
        r.get("target")?,
        r.get("outcome")?,
        r.get("source")?,
        r.get("request_id")?,
        r.get("detail")?,
        r.get("prev_hash")?,
        r.get("hash")?,
    ))
}

fn audit_of(t: AuditRaw) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: t.0,
        entry: NewAuditEntry {
            ts: Timestamp(t.1),
            principal: t.2,
            action: t.3,
            target: t.4,
            outcome: t.5,
            source: t.6,
            request_id: t.7,
            detail: serde_json::from_str(&t.8).map_err(json_err)?,
        },
        prev_hash: t.9,
        hash: t.10,
    })
}

fn collect<T>(rows: impl Iterator<Item = rusqlite::Result<T>>) -> Result<Vec<T>> {
    rows.collect::<rusqlite::Result<Vec<T>>>().map_err(err)
}

fn insert_event(c: &Connection, id: i64, ts: Timestamp, ev: &NewEvent) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO deployment_events (deployment_id, ts, kind, actor, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| s.execute(params![id, ts.0, ev.kind, ev.actor, ev.detail.to_string()]))
    .map_err(err)?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn insert_environment(&self, env: &Environment) -> Result<bool> {
        let env = env.clone();
        let labels = serde_json::to_string(&env.labels).map_err(json_err)?;
        let apps = list_to(&env.applications)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO environments (name, kind, labels, created_at, applications) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT DO NOTHING",
                    params![env.name, env.kind.as_str(), labels, env.created_at.0, apps],
                )
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn update_environment(&self, env: &Environment) -> Result<bool> {
        let (name, kind) = (env.name.clone(), env.kind.as_str());
        let labels = serde_json::to_string(&env.labels).map_err(json_err)?;
        let apps = list_to(&env.applications)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE environments SET kind = ?1, labels = ?2, applications = ?3 WHERE name = ?4",
                    params![kind, labels, apps, name],
                )
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_environment(&self, name: &str) -> Result<Option<Environment>> {
        let name = name.to_string();
        let raw = self
            .read(move |c| {
                c.query_row("SELECT * FROM environments WHERE name = ?1", [name], env_row).optional().map_err(err)
            })
            .await?;
        raw.map(env_of).transpose()
    }

    async fn list_environments(&self) -> Result<Vec<Environment>> {
        let raw = self
            .read(|c| {
                let mut s = c.prepare_cached("SELECT * FROM environments ORDER BY name").map_err(err)?;
                collect(s.query_map([], env_row).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(env_of).collect()
    }

    async fn delete_environment(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM environments WHERE name = ?1", [name]).map_err(err)? == 1)).await
    }

    async fn insert_agent(&self, a: &AgentRecord) -> Result<()> {
        let a = a.clone();
        self.write(move |c| {
            let r = c.execute(
                "INSERT INTO agents (name, environment, secret_hash, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![a.name, a.environment, a.secret_hash, a.created_at.0, a.last_seen_at.map(|t| t.0)],
            );
            match r {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Err(Error::Conflict(format!("agent {} exists already", a.name)))
                }
                Err(x) => Err(err(x)),
            }
        })
        .await
    }

    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>> {
        let name = name.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM agents WHERE name = ?1")
                .and_then(|mut s| s.query_row([name], agent_row).optional())
                .map_err(err)
        })
        .await
    }

    async fn list_agents(&self) -> Result<Vec<AgentRecord>> {
        self.read(|c| {
            let mut s = c.prepare_cached("SELECT * FROM agents ORDER BY name").map_err(err)?;
            collect(s.query_map([], agent_row).map_err(err)?)
        })
        .await
    }

    async fn delete_agent(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM agents WHERE name = ?1", [name]).map_err(err)? == 1)).await
    }

    async fn touch_agent(&self, name: &str, at: Timestamp) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            c.execute("UPDATE agents SET last_seen_at = ?1 WHERE name = ?2", params![at.0, name]).map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn insert_operator(&self, op: &OperatorRecord) -> Result<bool> {
        let op = op.clone();
        let roles = serde_json::to_string(&op.roles).map_err(json_err)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "INSERT INTO operators (name, password_hash, roles, disabled, created_at, email) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![op.name, op.password_hash, roles, op.disabled as i64, op.created_at.0, op.email],
                )
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_operator(&self, name: &str) -> Result<Option<OperatorRecord>> {
        let name = name.to_string();
        let raw = self
            .read(move |c| {
                c.prepare_cached("SELECT * FROM operators WHERE name = ?1")
                    .and_then(|mut s| s.query_row([name], operator_raw).optional())
                    .map_err(err)
            })
            .await?;
        raw.map(operator_of).transpose()
    }

    async fn list_operators(&self) -> Result<Vec<OperatorRecord>> {
        let raw = self
            .read(|c| {
                let mut s = c.prepare_cached("SELECT * FROM operators ORDER BY name").map_err(err)?;
                collect(s.query_map([], operator_raw).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(operator_of).collect()
    }

    async fn update_operator(&self, op: &OperatorRecord) -> Result<bool> {
        let op = op.clone();
        let roles = serde_json::to_string(&op.roles).map_err(json_err)?;
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE operators SET password_hash = ?1, roles = ?2, disabled = ?3, email = ?4, failed_logins = ?5, locked_until = ?6 WHERE name = ?7",
                    params![op.password_hash, roles, op.disabled as i64, op.email, op.failed_logins as i64, op.locked_until.map(|t| t.0), op.name],
                )
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn login_failed(
        &self,
        name: &str,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<Option<(u32, Option<Timestamp>)>> {
        let name = name.to_string();
        self.write(move |c| {
            let row: Option<(i64, Option<i64>)> = c
                .query_row(
                    "UPDATE operators SET failed_logins = failed_logins + 1, \
                     locked_until = CASE WHEN failed_logins + 1 >= ?1 THEN ?2 ELSE locked_until END \
                     WHERE name = ?3 RETURNING failed_logins, locked_until",
                    params![threshold as i64, lock_until.0, name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(err)?;
            Ok(row.map(|(n, l)| (n as u32, opt_ts(l))))
        })
        .await
    }

    async fn ensure_application(&self, name: &str, at: Timestamp) -> Result<()> {
        let name = name.to_string();
        self.write(move |c| {
            c.execute(
                "INSERT INTO applications (name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![name, at.0],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn insert_artifact(&self, a: &Artifact) -> Result<ArtifactInsert> {
        let a = a.clone();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            tx.execute(
                "INSERT INTO applications (name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![a.application, a.created_at.0],
            )
            .map_err(err)?;
            let n = tx
                .execute(
                    "INSERT INTO artifacts (application, version, sha256, size, created_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![a.application, a.version, a.sha256, a.size as i64, a.created_at.0, a.created_by],
                )
                .map_err(err)?;
            let out = if n == 1 {
                ArtifactInsert::Inserted
            } else {
                ArtifactInsert::Exists(
                    tx.query_row(
                        "SELECT * FROM artifacts WHERE application = ?1 AND version = ?2",
                        params![a.application, a.version],
                        artifact_row,
                    )
                    .map_err(err)?,
                )
            };
            tx.commit().map_err(err)?;
            Ok(out)
        })
        .await
    }

    async fn get_artifact(&self, application: &str, version: &str) -> Result<Option<Artifact>> {
        let (app, ver) = (application.to_string(), version.to_string());
        self.read(move |c| {
            c.prepare_cached("SELECT * FROM artifacts WHERE application = ?1 AND version = ?2")
                .and_then(|mut s| s.query_row(params![app, ver], artifact_row).optional())
                .map_err(err)
        })
        .await
    }

    async fn list_artifacts(&self, application: Option<&str>) -> Result<Vec<Artifact>> {
        let app = application.map(str::to_string);
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT * FROM artifacts WHERE (?1 IS NULL OR application = ?1) ORDER BY application, created_at DESC, version DESC",
                )
                .map_err(err)?;
            collect(s.query_map([app], artifact_row).map_err(err)?)
        })
        .await
    }

    async fn put_pipeline(&self, p: &Pipeline) -> Result<()> {
        let p = p.clone();
        let stages = serde_json::to_string(&p.stages).map_err(json_err)?;
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            tx.execute(
                "INSERT INTO applications (name, created_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![p.application, p.created_at.0],
            )
            .map_err(err)?;
            tx.execute(
                "INSERT INTO pipelines (name, application, stages, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (name) DO UPDATE SET application = excluded.application, stages = excluded.stages, updated_at = excluded.updated_at",
                params![p.name, p.application, stages, p.created_at.0, p.updated_at.0],
            )
            .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn get_pipeline(&self, name: &str) -> Result<Option<Pipeline>> {
        let name = name.to_string();
        let raw = self
            .read(move |c| {
                c.prepare_cached("SELECT * FROM pipelines WHERE name = ?1")
                    .and_then(|mut s| s.query_row([name], pipeline_raw).optional())
                    .map_err(err)
            })
            .await?;
        raw.map(pipeline_of).transpose()
    }

    async fn list_pipelines(&self) -> Result<Vec<Pipeline>> {
        let raw = self
            .read(|c| {
                let mut s = c.prepare_cached("SELECT * FROM pipelines ORDER BY name").map_err(err)?;
                collect(s.query_map([], pipeline_raw).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(pipeline_of).collect()
    }

    async fn delete_pipeline(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM pipelines WHERE name = ?1", [name]).map_err(err)? == 1)).await
    }

    async fn create_deployment(&self, d: &DeploymentRecord, event: &NewEvent) -> Result<i64> {
        let d = d.clone();
        let event = event.clone();
        let spec = serde_json::to_string(&d.spec).map_err(json_err)?;
        let mut tasks = Vec::new();
        for t in DeploymentState::new_tasks(0, &d.spec) {
            tasks.push((
                t.stage_index,
                t.task_index,
                t.environment.clone(),
                t.spec.runs_on_agent(),
                serde_json::to_string(&t.spec).map_err(json_err)?,
                t.status,
            ));
        }
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let id: i64 = tx
                .query_row(
                    "INSERT INTO deployments (pipeline, application, version, status, stage_index, holds_stage, message, created_by, \
                     created_at, updated_at, finished_at, rollback_of, spec, row_version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 0) RETURNING id",
                    params![
                        d.pipeline,
                        d.application,
                        d.version,
                        d.status.as_str(),
                        d.stage_index as i64,
                        d.holds_stage as i64,
                        d.message,
                        d.created_by,
                        d.created_at.0,
                        d.updated_at.0,
                        d.finished_at.map(|t| t.0),
                        d.rollback_of,
                        spec
                    ],
                    |r| r.get(0),
                )
                .map_err(err)?;
            {
                let mut s = tx
                    .prepare_cached(
                        "INSERT INTO task_runs (deployment_id, stage_index, task_index, environment, on_agent, spec, status, attempt) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
                    )
                    .map_err(err)?;
                for (si, ti, env, on_agent, spec, status) in &tasks {
                    s.execute(params![id, *si as i64, *ti as i64, env, *on_agent as i64, spec, status.as_str()]).map_err(err)?;
                }
            }
            insert_event(&tx, id, d.created_at, &event)?;
            tx.commit().map_err(err)?;
            Ok(id)
        })
        .await
    }

    async fn load_deployment(&self, id: i64) -> Result<Option<DeploymentState>> {
        let raw = self
            .read(move |c| {
                let d = c
                    .prepare_cached(&format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?1"))
                    .and_then(|mut s| s.query_row([id], deployment_raw).optional())
                    .map_err(err)?;
                let Some(d) = d else { return Ok(None) };
                let mut s = c
                    .prepare_cached(&format!(
                        "SELECT {TASK_COLS} FROM task_runs WHERE deployment_id = ?1 ORDER BY stage_index, task_index"
                    ))
                    .map_err(err)?;
                let tasks = collect(s.query_map([id], task_raw).map_err(err)?)?;
                Ok(Some((d, tasks)))
            })
            .await?;
        let Some((d, tasks)) = raw else { return Ok(None) };
        Ok(Some(DeploymentState {
            deployment: deployment_of(d)?,
            tasks: tasks.into_iter().map(task_of).collect::<Result<Vec<_>>>()?,
        }))
    }

    async fn commit(&self, c: &Commit) -> Result<CommitOutcome> {
        let c = c.clone();
        self.write(move |conn| {
            let d = &c.deployment;
            let tx = conn.transaction().map_err(err)?;
            // The version check and the row update in one statement.
            let n = tx
                .prepare_cached(
                    "UPDATE deployments SET status = ?1, stage_index = ?2, holds_stage = ?3, message = ?4, updated_at = ?5, \
                     finished_at = ?6, row_version = ?7 WHERE id = ?8 AND row_version = ?9",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        d.status.as_str(),
                        d.stage_index as i64,
                        d.holds_stage as i64,
                        d.message,
                        d.updated_at.0,
                        d.finished_at.map(|t| t.0),
                        c.expected_version + 1,
                        d.id,
                        c.expected_version
                    ])
                })
                .map_err(err)?;
            if n != 1 {
                return Ok(CommitOutcome::VersionConflict);
            }
            if let Some(s) = c.release_stage {
                tx.prepare_cached("DELETE FROM stage_locks WHERE pipeline = ?1 AND stage_index = ?2 AND deployment_id = ?3")
                    .and_then(|mut st| st.execute(params![d.pipeline, s as i64, d.id]))
                    .map_err(err)?;
            }
            if let Some(s) = c.acquire_stage {
                let n = tx
                    .prepare_cached(
                        "INSERT INTO stage_locks (pipeline, stage_index, deployment_id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                    )
                    .and_then(|mut st| st.execute(params![d.pipeline, s as i64, d.id]))
                    .map_err(err)?;
                if n == 0 {
                    let holder: i64 = tx
                        .query_row(
                            "SELECT deployment_id FROM stage_locks WHERE pipeline = ?1 AND stage_index = ?2",
                            params![d.pipeline, s as i64],
                            |r| r.get(0),
                        )
                        .map_err(err)?;
                    if holder != d.id {
                        return Ok(CommitOutcome::StageBusy);
                    }
                }
            }
            {
                let mut s = tx
                    .prepare_cached(
                        "UPDATE task_runs SET status = ?1, attempt = ?2, attempt_id = ?3, agent = ?4, lease_until = ?5, due_at = ?6, \
                         started_at = ?7, finished_at = ?8, exit_code = ?9, message = ?10, decided_by = ?11, comment = ?12, \
                         approvals = ?16 WHERE deployment_id = ?13 AND stage_index = ?14 AND task_index = ?15",
                    )
                    .map_err(err)?;
                for t in &c.changed_tasks {
                    s.execute(params![
                        t.status.as_str(),
                        t.attempt as i64,
                        t.attempt_id,
                        t.agent,
                        t.lease_until.map(|x| x.0),
                        t.due_at.map(|x| x.0),
                        t.started_at.map(|x| x.0),
                        t.finished_at.map(|x| x.0),
                        t.exit_code.map(|x| x as i64),
                        t.message,
                        t.decided_by,
                        t.comment,
                        t.deployment_id,
                        t.stage_index as i64,
                        t.task_index as i64,
                        list_to(&t.approvals)?
                    ])
                    .map_err(err)?;
                }
            }
            for ev in &c.events {
                insert_event(&tx, d.id, d.updated_at, ev)?;
            }
            {
                let mut s = tx
                    .prepare_cached(
                        "INSERT INTO task_logs (deployment_id, stage_index, task_index, ts, stream, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(err)?;
                for (stage, task, ts, stream, line) in &c.logs {
                    s.execute(params![d.id, *stage as i64, *task as i64, ts.0, stream, line]).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
            Ok(CommitOutcome::Committed)
        })
        .await
    }

    async fn list_deployments(&self, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>> {
        let limit = f.limit.unwrap_or(100).min(10_000) as i64;
        let (pipeline, status) = (f.pipeline.clone(), f.status.map(|s| s.as_str()));
        let apps = f.applications.as_ref().map(|a| serde_json::Value::from(a.clone()).to_string());
        let raw = self
            .read(move |c| {
                let mut s = c
                    .prepare_cached(&format!(
                        "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE (?1 IS NULL OR pipeline = ?1) AND (?2 IS NULL OR status = ?2) \
                         AND (?4 IS NULL OR application IN (SELECT value FROM json_each(?4))) \
                         ORDER BY id DESC LIMIT ?3"
                    ))
                    .map_err(err)?;
                collect(s.query_map(params![pipeline, status, limit, apps], deployment_raw).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(deployment_of).collect()
    }

    async fn active_deployment_ids(&self) -> Result<Vec<i64>> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(
                    "SELECT id FROM deployments WHERE status NOT IN ('completed', 'aborted', 'failed') ORDER BY id",
                )
                .map_err(err)?;
            collect(s.query_map([], |r| r.get(0)).map_err(err)?)
        })
        .await
    }

    async fn stage_locks(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
        let p = pipeline.to_string();
        self.read(move |c| {
            let mut s = c
                .prepare_cached("SELECT stage_index, deployment_id FROM stage_locks WHERE pipeline = ?1")
                .map_err(err)?;
            collect(s.query_map([p], |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?))).map_err(err)?)
        })
        .await
    }

    async fn oldest_queued(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
        let p = pipeline.to_string();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT stage_index, MIN(id) FROM deployments WHERE pipeline = ?1 AND status = 'queued' GROUP BY stage_index",
                )
                .map_err(err)?;
            collect(s.query_map([p], |r| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?))).map_err(err)?)
        })
        .await
    }

    async fn stage_gate(&self, pipeline: &str) -> Result<(Vec<(usize, i64)>, Vec<(usize, i64)>)> {
        let p = pipeline.to_string();
        self.read(move |c| {
            let pair = |r: &Row| Ok((r.get::<_, i64>(0)? as usize, r.get(1)?));
            let mut s = c.prepare_cached("SELECT stage_index, deployment_id FROM stage_locks WHERE pipeline = ?1").map_err(err)?;
            let locks = collect(s.query_map([&p], pair).map_err(err)?)?;
            let mut s = c
                .prepare_cached(
                    "SELECT stage_index, MIN(id) FROM deployments WHERE pipeline = ?1 AND status = 'queued' GROUP BY stage_index",
                )
                .map_err(err)?;
            let queued = collect(s.query_map([&p], pair).map_err(err)?)?;
            Ok((locks, queued))
        })
        .await
    }

    async fn queue_heads(&self) -> Result<Vec<i64>> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(
                    "SELECT MIN(id) FROM deployments WHERE status = 'queued' GROUP BY pipeline, stage_index ORDER BY 1",
                )
                .map_err(err)?;
            collect(s.query_map([], |r| r.get(0)).map_err(err)?)
        })
        .await
    }

    async fn claimable_tasks(&self, environment: &str, limit: u32) -> Result<Vec<(i64, usize, usize)>> {
        let env = environment.to_string();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT deployment_id, stage_index, task_index FROM task_runs \
                     WHERE status = 'ready' AND on_agent = 1 AND environment = ?1 ORDER BY deployment_id LIMIT ?2",
                )
                .map_err(err)?;
            collect(
                s.query_map(params![env, limit as i64], |r| {
                    Ok((r.get(0)?, r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize))
                })
                .map_err(err)?,
            )
        })
        .await
    }

    async fn owned_attempts(&self, agent: &str) -> Result<Vec<(i64, String)>> {
        let agent = agent.to_string();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT deployment_id, attempt_id FROM task_runs WHERE status = 'in_progress' AND agent = ?1 AND attempt_id IS NOT NULL",
                )
                .map_err(err)?;
            collect(s.query_map([agent], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?)
        })
        .await
    }

    async fn attempt_task(&self, attempt_id: &str) -> Result<Option<(i64, usize, usize)>> {
        let a = attempt_id.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT deployment_id, stage_index, task_index FROM task_runs WHERE attempt_id = ?1")
                .and_then(|mut s| {
                    s.query_row([a], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize)))
                        .optional()
                })
                .map_err(err)
        })
        .await
    }

    async fn heartbeat(&self, attempt_id: &str, agent: &str, lease_until: Timestamp) -> Result<bool> {
        let (a, ag) = (attempt_id.to_string(), agent.to_string());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE task_runs SET lease_until = ?1 WHERE attempt_id = ?2 AND agent = ?3 AND status = 'in_progress'",
                )
                .and_then(|mut s| s.execute(params![lease_until.0, a, ag]))
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn extend_all_leases(&self, until: Timestamp) -> Result<u64> {
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE task_runs SET lease_until = ?1 WHERE status = 'in_progress' AND lease_until IS NOT NULL AND lease_until < ?1",
                    [until.0],
                )
                .map_err(err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn deployments_due(&self, now: Timestamp) -> Result<Vec<i64>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT DISTINCT deployment_id FROM task_runs WHERE status = 'in_progress' \
                     AND ((lease_until IS NOT NULL AND lease_until < ?1) OR (due_at IS NOT NULL AND due_at <= ?1)) ORDER BY deployment_id",
                )
                .map_err(err)?;
            collect(s.query_map([now.0], |r| r.get(0)).map_err(err)?)
        })
        .await
    }

    async fn pending_promotion_before(&self, pipeline: &str, stage: usize, below: i64) -> Result<Vec<i64>> {
        let p = pipeline.to_string();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT id FROM deployments WHERE pipeline = ?1 AND status = 'pending_promotion' AND stage_index = ?2 AND id < ?3 ORDER BY id",
                )
                .map_err(err)?;
            collect(s.query_map(params![p, stage as i64, below], |r| r.get(0)).map_err(err)?)
        })
        .await
    }

    async fn last_completed(&self, pipeline: &str, below: i64, not_version: &str) -> Result<Option<DeploymentRecord>> {
        let (p, v) = (pipeline.to_string(), not_version.to_string());
        let raw = self
            .read(move |c| {
                c.prepare_cached(&format!(
                    "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE pipeline = ?1 AND status = 'completed' AND id < ?2 AND version <> ?3 \
                     ORDER BY id DESC LIMIT 1"
                ))
                .and_then(|mut s| s.query_row(params![p, below, v], deployment_raw).optional())
                .map_err(err)
            })
            .await?;
        raw.map(deployment_of).transpose()
    }

    async fn append_logs(
        &self,
        deployment_id: i64,
        stage: usize,
        task: usize,
        lines: &[(Timestamp, String, String)],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let lines = lines.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            {
                let mut s = tx
                    .prepare_cached(
                        "INSERT INTO task_logs (deployment_id, stage_index, task_index, ts, stream, line) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(err)?;
                for (ts, stream, line) in &lines {
                    s.execute(params![deployment_id, stage as i64, task as i64, ts.0, stream, line]).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn logs(&self, deployment_id: i64, after: i64, limit: u32) -> Result<Vec<LogLine>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT id, stage_index, task_index, ts, stream, line FROM task_logs WHERE deployment_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
                )
                .map_err(err)?;
            collect(
                s.query_map(params![deployment_id, after, limit as i64], |r| {
                    Ok(LogLine {
                        id: r.get(0)?,
                        stage_index: r.get::<_, i64>(1)? as usize,
                        task_index: r.get::<_, i64>(2)? as usize,
                        ts: Timestamp(r.get(3)?),
                        stream: r.get(4)?,
                        line: r.get(5)?,
                    })
                })
                .map_err(err)?,
            )
        })
        .await
    }

    async fn events(&self, deployment_id: i64) -> Result<Vec<DeploymentEvent>> {
        let raw: Vec<(i64, i64, i64, String, String, String)> = self
            .read(move |c| {
                let mut s = c
                    .prepare_cached(
                        "SELECT id, deployment_id, ts, kind, actor, detail FROM deployment_events WHERE deployment_id = ?1 ORDER BY id",
                    )
                    .map_err(err)?;
                collect(
                    s.query_map([deployment_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
                        .map_err(err)?,
                )
            })
            .await?;
        raw.into_iter()
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
        let c = c.clone();
        let roles = serde_json::to_string(&c.roles).map_err(json_err)?;
        let meta = serde_json::to_string(&c.metadata).map_err(json_err)?;
        self.write(move |conn| {
            let r = conn.execute(
                "INSERT INTO clients (client_id, secret_hash, previous_secret_hash, previous_valid_until, roles, disabled, tokens_not_before, created_at, secret_rotated_at, metadata) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    c.client_id,
                    c.secret_hash,
                    c.previous_secret_hash,
                    c.previous_valid_until.map(|t| t.0),
                    roles,
                    c.disabled as i64,
                    c.tokens_not_before.0,
                    c.created_at.0,
                    c.secret_rotated_at.map(|t| t.0),
                    meta
                ],
            );
            match r {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Err(Error::Conflict(format!("client {} exists already", c.client_id)))
                }
                Err(x) => Err(err(x)),
            }
        })
        .await
    }

    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        let id = client_id.to_string();
        let raw = self
            .read(move |c| {
                c.prepare_cached("SELECT * FROM clients WHERE client_id = ?1")
                    .and_then(|mut s| s.query_row([id], client_raw).optional())
                    .map_err(err)
            })
            .await?;
        raw.map(client_of).transpose()
    }

    async fn list_clients(&self) -> Result<Vec<ClientRecord>> {
        let raw = self
            .read(|c| {
                let mut s = c.prepare_cached("SELECT * FROM clients ORDER BY client_id").map_err(err)?;
                collect(s.query_map([], client_raw).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(client_of).collect()
    }

    async fn update_client(&self, c: &ClientRecord) -> Result<bool> {
        let c = c.clone();
        let roles = serde_json::to_string(&c.roles).map_err(json_err)?;
        let meta = serde_json::to_string(&c.metadata).map_err(json_err)?;
        self.write(move |conn| {
            let n = conn
                .execute(
                    "UPDATE clients SET secret_hash = ?1, previous_secret_hash = ?2, previous_valid_until = ?3, roles = ?4, disabled = ?5, \
                     tokens_not_before = ?6, secret_rotated_at = ?7, metadata = ?9 WHERE client_id = ?8",
                    params![
                        c.secret_hash,
                        c.previous_secret_hash,
                        c.previous_valid_until.map(|t| t.0),
                        roles,
                        c.disabled as i64,
                        c.tokens_not_before.0,
                        c.secret_rotated_at.map(|t| t.0),
                        c.client_id,
                        meta
                    ],
                )
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_client(&self, client_id: &str) -> Result<bool> {
        let id = client_id.to_string();
        self.write(move |c| Ok(c.execute("DELETE FROM clients WHERE client_id = ?1", [id]).map_err(err)? == 1)).await
    }

    async fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<()> {
        let k = k.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, active, created_at, retired_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![k.kid, k.alg, k.private_key, k.public_jwk, k.active as i64, k.created_at.0, k.retired_at.map(|t| t.0)],
            )
            .map_err(err)?;
            Ok(())
        })
        .await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        self.read(|c| {
            let mut s = c
                .prepare_cached(
                    "SELECT kid, alg, private_key, public_jwk, active, created_at, retired_at FROM signing_keys ORDER BY created_at, kid",
                )
                .map_err(err)?;
            collect(
                s.query_map([], |r| {
                    Ok(SigningKeyRecord {
                        kid: r.get(0)?,
                        alg: r.get(1)?,
                        private_key: r.get(2)?,
                        public_jwk: r.get(3)?,
                        active: r.get::<_, i64>(4)? != 0,
                        created_at: Timestamp(r.get(5)?),
                        retired_at: opt_ts(r.get(6)?),
                    })
                })
                .map_err(err)?,
            )
        })
        .await
    }

    async fn activate_signing_key(&self, kid: &str, now: Timestamp) -> Result<bool> {
        let kid = kid.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let exists: Option<String> = tx
                .query_row("SELECT kid FROM signing_keys WHERE kid = ?1", [&kid], |r| r.get(0))
                .optional()
                .map_err(err)?;
            if exists.is_none() {
                return Ok(false);
            }
            tx.execute(
                "UPDATE signing_keys SET active = 0, retired_at = ?1 WHERE active = 1 AND kid <> ?2",
                params![now.0, kid],
            )
            .map_err(err)?;
            tx.execute("UPDATE signing_keys SET active = 1, retired_at = NULL WHERE kid = ?1", [&kid]).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn update_signing_key_material(&self, kid: &str, sealed: &str) -> Result<bool> {
        let (kid, sealed) = (kid.to_string(), sealed.to_string());
        self.write(move |c| {
            Ok(c.execute("UPDATE signing_keys SET private_key = ?1 WHERE kid = ?2", params![sealed, kid])
                .map_err(err)?
                == 1)
        })
        .await
    }

    async fn revoke_token(&self, jti: &str, expires_at: Timestamp) -> Result<()> {
        let jti = jti.to_string();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            tx.execute("DELETE FROM revoked_tokens WHERE expires_at < ?1", [Timestamp::now().0]).map_err(err)?;
            tx.execute(
                "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![jti, expires_at.0],
            )
            .map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn is_token_revoked(&self, jti: &str) -> Result<bool> {
        let jti = jti.to_string();
        self.read(move |c| {
            c.prepare_cached("SELECT 1 FROM revoked_tokens WHERE jti = ?1")
                .and_then(|mut s| s.exists([jti]))
                .map_err(err)
        })
        .await
    }

    async fn record_insert(&self, kind: &str, key: &str, body: &str, expires_at: Option<Timestamp>) -> Result<bool> {
        let (kind, key, body) = (kind.to_string(), key.to_string(), body.to_string());
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let now = Timestamp::now().0;
            tx.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?1 AND kind = ?2", params![now, kind])
                .map_err(err)?;
            let n = tx
                .execute(
                    "INSERT INTO records (kind, key, body, version, expires_at) VALUES (?1, ?2, ?3, 1, ?4) ON CONFLICT DO NOTHING",
                    params![kind, key, body, expires_at.map(|t| t.0)],
                )
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_get(&self, kind: &str, key: &str) -> Result<Option<(String, i64)>> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.read(move |c| {
            c.prepare_cached(
                "SELECT body, version FROM records WHERE kind = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
            )
            .and_then(|mut s| s.query_row(params![kind, key, Timestamp::now().0], |r| Ok((r.get(0)?, r.get(1)?))).optional())
            .map_err(err)
        })
        .await
    }

    async fn record_list(&self, kind: &str) -> Result<Vec<(String, String, i64)>> {
        let kind = kind.to_string();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT key, body, version FROM records WHERE kind = ?1 AND (expires_at IS NULL OR expires_at > ?2) ORDER BY key",
                )
                .map_err(err)?;
            let rows = s
                .query_map(params![kind, Timestamp::now().0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(err)?;
            rows.collect::<std::result::Result<Vec<_>, _>>().map_err(err)
        })
        .await
    }

    async fn record_update(
        &self,
        kind: &str,
        key: &str,
        version: i64,
        body: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<bool> {
        let (kind, key, body) = (kind.to_string(), key.to_string(), body.to_string());
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE records SET body = ?1, version = version + 1, expires_at = ?2 \
                     WHERE kind = ?3 AND key = ?4 AND version = ?5 AND (expires_at IS NULL OR expires_at > ?6)",
                    params![body, expires_at.map(|t| t.0), kind, key, version, Timestamp::now().0],
                )
                .map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn record_take(&self, kind: &str, key: &str) -> Result<Option<String>> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let body: Option<(String, Option<i64>)> = tx
                .query_row(
                    "DELETE FROM records WHERE kind = ?1 AND key = ?2 RETURNING body, expires_at",
                    params![kind, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(body.filter(|(_, exp)| exp.is_none_or(|e| e > Timestamp::now().0)).map(|(b, _)| b))
        })
        .await
    }

    async fn record_delete(&self, kind: &str, key: &str) -> Result<bool> {
        let (kind, key) = (kind.to_string(), key.to_string());
        self.write(move |c| {
            let n = c.execute("DELETE FROM records WHERE kind = ?1 AND key = ?2", params![kind, key]).map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn append_audit_batch(&self, entries: &[NewAuditEntry]) -> Result<Vec<AuditEntry>> {
        let entries = entries.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let mut last: Option<(i64, String)> = tx
                .query_row("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .map_err(err)?;
            let mut out = Vec::with_capacity(entries.len());
            {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT INTO audit_log (seq, ts, principal, action, target, outcome, source, request_id, detail, prev_hash, hash) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )
                    .map_err(err)?;
                for e in entries {
                    let a = audit::link(last.take(), e);
                    ins.execute(params![
                        a.seq,
                        a.entry.ts.0,
                        a.entry.principal,
                        a.entry.action,
                        a.entry.target,
                        a.entry.outcome,
                        a.entry.source,
                        a.entry.request_id,
                        a.entry.detail.to_string(),
                        a.prev_hash,
                        a.hash
                    ])
                    .map_err(err)?;
                    last = Some((a.seq, a.hash.clone()));
                    out.push(a);
                }
            }
            tx.commit().map_err(err)?;
            Ok(out)
        })
        .await
    }

    async fn audit_entries(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>> {
        let raw = self
            .read(move |c| {
                let mut s =
                    c.prepare_cached("SELECT * FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2").map_err(err)?;
                collect(s.query_map(params![after_seq, limit as i64], audit_raw).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(audit_of).collect()
    }

    async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>> {
        let f = f.clone();
        let raw = self
            .read(move |c| {
                let mut s = c
                    .prepare_cached(
                        "SELECT * FROM audit_log WHERE (?1 IS NULL OR principal = ?1) AND (?2 IS NULL OR action LIKE ?2) \
                         AND (?3 IS NULL OR outcome = ?3) AND (?4 IS NULL OR seq < ?4) ORDER BY seq DESC LIMIT ?5",
                    )
                    .map_err(err)?;
                let action = f.action.as_ref().map(|a| format!("%{a}%"));
                let limit = f.limit.unwrap_or(100).min(10_000) as i64;
                collect(s.query_map(params![f.principal, action, f.outcome, f.before, limit], audit_raw).map_err(err)?)
            })
            .await?;
        raw.into_iter().map(audit_of).collect()
    }

    async fn check_integrity(&self) -> Result<()> {
        let rows: Vec<String> = self
            .read(|c| {
                let mut s = c.prepare("PRAGMA integrity_check").map_err(err)?;
                collect(s.query_map([], |r| r.get(0)).map_err(err)?)
            })
            .await?;
        if rows.iter().all(|r| r == "ok") {
            Ok(())
        } else {
            Err(Error::Store(format!("integrity check failed: {}", rows.join("; "))))
        }
    }
}
