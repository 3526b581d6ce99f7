//! PostgreSQL over sqlx, for production and for several orchestrators sharing one database:
//! `commit`'s conditional update takes the deployment's row lock, and audit appends take an
//! advisory lock, so replicas never interleave a change.
//!
//! One file per aggregate implements its trait with the statements of `crate::sql`.

mod agents;
mod artifacts;
mod audit;
mod clients;
mod deployments;
mod environments;
mod keys;
mod operators;
mod pipelines;
mod records;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use drover_core::{Error, Result, Store};
use drover_types::Timestamp;
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};

use crate::{POSTGRES_MIGRATIONS, sql};

/// Connection trouble (refused, lost, the pool exhausted, the server shutting down or not
/// accepting connections) is `Unavailable` — retry later; anything else is a store fault.
pub(crate) fn db_err(e: sqlx::Error) -> Error {
    let unreachable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08 (connection exception), 57P01-57P03 (shutdown, cannot connect now),
        // 53300 (too many connections).
        sqlx::Error::Database(d) => {
            d.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300"))
        }
        _ => false,
    };
    if unreachable { Error::Unavailable(e.to_string()) } else { Error::Store(e.to_string()) }
}

/// A unique or primary-key violation (a name taken).
pub(crate) fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl crate::rows::Row for PgRow {
    fn int(&self, col: &str) -> Result<i64> {
        self.try_get(col).map_err(db_err)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.try_get(col).map_err(db_err)
    }
    fn text(&self, col: &str) -> Result<String> {
        self.try_get(col).map_err(db_err)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.try_get(col).map_err(db_err)
    }
}

/// How long an operation waits for a database connection before it is `Unavailable`.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: std::sync::Arc<std::sync::RwLock<sqlx::PgPool>>,
    opts: PgConnectOptions,
}

/// Connections at most, unless resized.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 8;

async fn new_pool(opts: PgConnectOptions, max: u32) -> Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(max)
        // A request waits at most this long for a connection; then it is answered 503.
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(db_err)
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url).map_err(|e| Error::Invalid(format!("database URL: {e}")))?;
        Self::connect_with(opts).await
    }
    pub async fn connect_with(opts: PgConnectOptions) -> Result<Self> {
        let pool = new_pool(opts.clone(), DEFAULT_MAX_CONNECTIONS).await?;
        migrate(&pool).await?;
        Ok(PgStore { pool: std::sync::Arc::new(std::sync::RwLock::new(pool)), opts })
    }
    /// The current pool (a handle; a resize swaps in another).
    pub(crate) fn pool(&self) -> sqlx::PgPool {
        self.pool.read().expect("poisoned").clone()
    }
}

async fn migrate(pool: &sqlx::PgPool) -> Result<()> {
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

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> drover_core::store::PoolStats {
        let p = self.pool();
        drover_core::store::PoolStats {
            size: p.size(),
            idle: p.num_idle() as u32,
            max: p.options().get_max_connections(),
            resizable: true,
        }
    }

    async fn resize_pool(&self, max: u32) -> Result<()> {
        if !(1..=256).contains(&max) {
            return Err(Error::BadRequest(format!("a pool of {max} connections: choose 1 to 256")));
        }
        let fresh = new_pool(self.opts.clone(), max).await?;
        let old = std::mem::replace(&mut *self.pool.write().expect("poisoned"), fresh);
        // Operations under way finish on the old pool; it closes once they have.
        tokio::spawn(async move { old.close().await });
        tracing::info!(max, "database pool resized");
        Ok(())
    }

    async fn check_integrity(&self) -> Result<()> {
        let rows: Vec<String> = sqlx::query_scalar(sql::PG_INTEGRITY).fetch_all(&self.pool()).await.map_err(db_err)?;
        if rows.iter().all(|r| r == "ok") {
            Ok(())
        } else {
            Err(Error::Store(format!("integrity check failed: {}", rows.join("; "))))
        }
    }
}
