//! The conformance suite as one named test per (check, backend): SQLite in a temp dir,
//! PostgreSQL in a schema of its own (on 127.0.0.1:5432, database `test`). A failure names
//! both, and `cargo test -p drover-store --test conformance postgres::commit` runs one.

use std::sync::Arc;

use drover_core::Store;
use drover_store::{SqliteStore, conformance, testing};

macro_rules! checks {
    ($($name:ident),+ $(,)?) => {
        const GENERATED: &[&str] = &[$(stringify!($name)),+];
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let store: std::sync::Arc<dyn drover_core::Store> =
                        std::sync::Arc::new(drover_store::SqliteStore::open(&dir.path().join("drover.db")).await.unwrap());
                    drover_store::conformance::$name(store).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, schema) = drover_store::testing::pg_schema_store()
                        .await
                        .expect("PostgreSQL on 127.0.0.1:5432 (database test)");
                    drover_store::conformance::$name(std::sync::Arc::new(store)).await;
                    drover_store::testing::drop_schema(&schema).await;
                }
            )+
        }
    };
}

checks!(
    environments,
    agents_and_operators,
    artifacts_are_immutable,
    artifact_deletion_and_retention,
    pipelines_upsert,
    deployment_round_trip,
    commit_detects_conflicts,
    concurrent_commits_one_wins,
    stage_lock_is_exclusive,
    claims_heartbeats_and_leases,
    fleet_rows_belong_to_their_agents,
    logs_and_events,
    audit_log_is_a_chain,
    audit_batches_keep_the_chain,
    clients_keys_and_revocations,
    records_cas_take_and_expiry,
    records_compare_and_swap_races,
);

#[test]
fn every_check_runs_on_both_backends() {
    assert_eq!(GENERATED, conformance::CHECKS, "tests/conformance.rs lists every check of the suite");
}

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_migrates_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drover.db");
    {
        let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
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
    let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
    assert_eq!(s.list_environments().await.unwrap().len(), 1);
    let _ = testing::pg_url();
}
