//! Test support: a PostgreSQL store in a fresh schema of its own, so tests run in parallel.

use std::str::FromStr;

use drover_core::Result;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::PgStore;
use crate::postgres::db_err;

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
