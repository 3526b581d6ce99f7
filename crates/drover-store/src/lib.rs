//! `Store` implementations: SQLite (embedded default, WAL; rusqlite, `sqlite/`) and
//! PostgreSQL (sqlx, `postgres/`), one file per aggregate in each. Every statement is written
//! once (`sql.rs`) and every row mapped once (`rows.rs`); both pass the same conformance suite.
//! Business logic never branches on the backend.

use std::sync::Arc;

use drover_core::{Error, Result, Store};
use drover_types::{DeploymentStatus, TaskStatus, Timestamp};

pub mod conformance;
mod postgres;
mod rows;
mod sql;
mod sqlite;
pub mod testing;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

pub(crate) const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_audit.sql")),
    (3, include_str!("../migrations/sqlite/0003_operator_lockout.sql")),
    (4, include_str!("../migrations/sqlite/0004_oauth.sql")),
    (5, include_str!("../migrations/sqlite/0005_records.sql")),
    (6, include_str!("../migrations/sqlite/0006_scope_and_approvals.sql")),
    (7, include_str!("../migrations/sqlite/0007_artifact_retention.sql")),
    (8, include_str!("../migrations/sqlite/0008_deadlines.sql")),
    (9, include_str!("../migrations/sqlite/0009_fleets.sql")),
    (10, include_str!("../migrations/sqlite/0010_variables.sql")),
    (11, include_str!("../migrations/sqlite/0011_versions_and_certificates.sql")),
    (12, include_str!("../migrations/sqlite/0012_agent_isolation_and_approval.sql")),
];
pub(crate) const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_audit.sql")),
    (3, include_str!("../migrations/postgres/0003_operator_lockout.sql")),
    (4, include_str!("../migrations/postgres/0004_oauth.sql")),
    (5, include_str!("../migrations/postgres/0005_records.sql")),
    (6, include_str!("../migrations/postgres/0006_scope_and_approvals.sql")),
    (7, include_str!("../migrations/postgres/0007_artifact_retention.sql")),
    (8, include_str!("../migrations/postgres/0008_deadlines.sql")),
    (9, include_str!("../migrations/postgres/0009_fleets.sql")),
    (10, include_str!("../migrations/postgres/0010_variables.sql")),
    (11, include_str!("../migrations/postgres/0011_versions_and_certificates.sql")),
    (12, include_str!("../migrations/postgres/0012_agent_isolation_and_approval.sql")),
];

pub(crate) fn json_err(e: serde_json::Error) -> Error {
    Error::Store(format!("corrupt JSON column: {e}"))
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

/// Opens the store named by a database URL: `sqlite://PATH` / a plain path, or `postgres://...`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    }
}
