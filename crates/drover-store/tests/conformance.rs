//! Runs the conformance suite against both backends: SQLite in a temp dir, PostgreSQL in a
//! schema of its own (on 127.0.0.1:5432, database `test`).

use std::sync::Arc;

use drover_core::Store;
use drover_store::{SqliteStore, conformance, testing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conformance() {
    for (name, check) in conformance::checks() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("drover.db")).await.unwrap());
        eprintln!("sqlite: {name}");
        check(store).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conformance() {
    for (name, check) in conformance::checks() {
        let (store, schema) = testing::pg_schema_store().await.expect("PostgreSQL on 127.0.0.1:5432 (database test)");
        eprintln!("postgres: {name} in schema {schema}");
        check(Arc::new(store)).await;
        testing::drop_schema(&schema).await;
    }
}

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    {
        let s = SqliteStore::open(&path).await.unwrap();
        s.ensure_application("shop", drover_types::Timestamp(1)).await.unwrap();
        s.insert_environment(&drover_types::Environment {
            name: "dev".into(),
            kind: drover_types::EnvironmentKind::Dev,
            labels: Default::default(),
            applications: vec![],
            created_at: drover_types::Timestamp(1),
        })
        .await
        .unwrap();
    }
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.list_environments().await.unwrap().len(), 1);
}
