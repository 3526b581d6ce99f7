//! SQLite (embedded default) over rusqlite, in WAL mode.
//!
//! Each write runs as one closure on a blocking thread through the one writer connection
//! (SQLite has a single writer anyway, and it makes the read-check-write of `commit` atomic):
//! one hand-off per operation rather than one per statement, which is what bounds throughput on
//! a small machine. Reads run in place on a small pool of read-only connections.
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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use drover_core::{Error, Result, Store};
use drover_types::Timestamp;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, params};

use crate::{SQLITE_MIGRATIONS, sql};

/// A busy or locked database, or one that cannot be opened or read, is `Unavailable` (retry
/// later); anything else is a store fault.
pub(crate) fn err(e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode as C;
    let unreachable = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, C::DatabaseBusy | C::DatabaseLocked | C::CannotOpen | C::SystemIoFailure | C::DiskFull)
    );
    if unreachable { Error::Unavailable(e.to_string()) } else { Error::Store(e.to_string()) }
}

/// A unique or primary-key violation (a name taken).
pub(crate) fn is_conflict(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl crate::rows::Row for rusqlite::Row<'_> {
    fn int(&self, col: &str) -> Result<i64> {
        self.get(col).map_err(err)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>> {
        self.get(col).map_err(err)
    }
    fn text(&self, col: &str) -> Result<String> {
        self.get(col).map_err(err)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>> {
        self.get(col).map_err(err)
    }
}

/// Every row of a (cached) statement, mapped.
pub(crate) fn all<T>(
    c: &Connection,
    sql: &str,
    p: impl Params,
    f: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut s = c.prepare_cached(sql).map_err(err)?;
    let mut rows = s.query(p).map_err(err)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(err)? {
        out.push(f(r)?);
    }
    Ok(out)
}

/// The first row of a (cached) statement, mapped.
pub(crate) fn one<T>(
    c: &Connection,
    sql: &str,
    p: impl Params,
    f: impl Fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    let mut s = c.prepare_cached(sql).map_err(err)?;
    let mut rows = s.query(p).map_err(err)?;
    match rows.next().map_err(err)? {
        Some(r) => Ok(Some(f(r)?)),
        None => Ok(None),
    }
}

/// Runs a (cached) statement; the number of rows changed.
pub(crate) fn exec(c: &Connection, sql: &str, p: impl Params) -> Result<usize> {
    c.prepare_cached(sql).and_then(|mut s| s.execute(p)).map_err(err)
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

    pub(crate) async fn write<T: Send + 'static>(
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
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
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
            .query_row("SELECT version FROM drover_migrations WHERE version = $1", [v], |r| r.get(0))
            .optional()
            .map_err(err)?;
        if done.is_none() {
            tx.execute_batch(sql).map_err(err)?;
            tx.execute(
                "INSERT INTO drover_migrations (version, applied_at) VALUES ($1, $2)",
                params![v, Timestamp::now().0],
            )
            .map_err(err)?;
        }
    }
    tx.commit().map_err(err)
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn pool_stats(&self) -> drover_core::store::PoolStats {
        let readers = self.inner.readers.lock().map(|r| r.len() as u32).unwrap_or(0);
        drover_core::store::PoolStats {
            size: 1 + readers,
            idle: readers,
            max: 1 + MAX_READERS as u32,
            resizable: false,
        }
    }

    async fn resize_pool(&self, _max: u32) -> Result<()> {
        Err(Error::Invalid("the SQLite store has one writer and up to 8 readers; there is no pool to resize".into()))
    }

    async fn check_integrity(&self) -> Result<()> {
        let rows: Vec<String> =
            self.read(|c| all(c, sql::SQLITE_INTEGRITY, [], |r| r.get::<_, String>(0).map_err(err))).await?;
        if rows.iter().all(|r| r == "ok") {
            Ok(())
        } else {
            Err(Error::Store(format!("integrity check failed: {}", rows.join("; "))))
        }
    }
}
