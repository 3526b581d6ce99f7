//! The conformance suite every `Store` implementation passes. Each check starts from an empty
//! store; `tests/conformance.rs` runs them against SQLite and PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_core::machine::{self, Effects, NewEvent, Timing};
use drover_core::model::DeploymentRecord;
use drover_core::store::{
    AgentRecord, ArtifactDelete, ArtifactInsert, Commit, CommitOutcome, DeploymentFilter, NewLog, OperatorRecord,
    TaskRef,
};
use drover_core::{Error, Store};
use drover_types::{
    Artifact, CommandSpec, DeploymentStatus, Environment, EnvironmentKind, Pipeline, PipelineSpec, Progression,
    StageSpec, TaskSpec, TaskStatus, Timestamp,
};
use serde_json::json;

/// Every check, by name: `tests/conformance.rs` generates one test per (check, backend) from
/// this list and fails when a check is missing there.
pub const CHECKS: &[&str] = &[
    "environments",
    "agents_and_operators",
    "artifacts_are_immutable",
    "artifact_deletion_and_retention",
    "pipelines_upsert",
    "deployment_round_trip",
    "commit_detects_conflicts",
    "concurrent_commits_one_wins",
    "stage_lock_is_exclusive",
    "claims_heartbeats_and_leases",
    "fleet_rows_belong_to_their_agents",
    "logs_and_events",
    "audit_log_is_a_chain",
    "audit_batches_keep_the_chain",
    "clients_keys_and_revocations",
    "records_cas_take_and_expiry",
    "records_compare_and_swap_races",
];

fn spec(stages: usize) -> PipelineSpec {
    PipelineSpec {
        application: "app".into(),
        pipeline: Some("app-pipe".into()),
        stages: (0..stages)
            .map(|i| StageSpec {
                name: format!("s{i}"),
                environment: format!("env{i}"),
                progression: Progression::Automatic,
                tasks: vec![TaskSpec::Run { command: CommandSpec::Shell("true".into()), timeout: None }],
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn record(spec: &PipelineSpec) -> DeploymentRecord {
    DeploymentRecord {
        id: 0,
        pipeline: spec.name().into(),
        application: spec.application.clone(),
        version: "1.0".into(),
        status: DeploymentStatus::Queued,
        stage_index: 0,
        holds_stage: false,
        message: None,
        created_by: "admin".into(),
        created_at: Timestamp(1000),
        updated_at: Timestamp(1000),
        finished_at: None,
        rollback_of: None,
        spec: spec.clone(),
        row_version: 0,
    }
}

fn created() -> NewEvent {
    NewEvent { kind: "deployment.created".into(), actor: "admin".into(), detail: json!({"version": "1.0"}) }
}

/// Steps a deployment with an open gate and commits it; returns the outcome.
async fn step(store: &Arc<dyn Store>, id: i64) -> CommitOutcome {
    let old = store.load_deployment(id).await.unwrap().unwrap();
    let mut new = old.clone();
    let mut fx = Effects::default();
    machine::advance(&mut new, Timestamp(2000), &|_: i64, _: usize| true, &mut fx);
    commit_of(store, &old, new, fx).await
}

async fn commit_of(
    store: &Arc<dyn Store>,
    old: &drover_core::DeploymentState,
    new: drover_core::DeploymentState,
    fx: Effects,
) -> CommitOutcome {
    let (changed, added) = new.row_changes(old);
    let events = machine::diff_events(Some(old), &new, "test");
    store
        .commit(&Commit {
            expected_version: old.deployment.row_version,
            deployment: new.deployment,
            changed_tasks: changed,
            new_tasks: added,
            events,
            logs: vec![],
            acquire_stage: fx.acquire_stage,
            release_stage: fx.release_stage,
        })
        .await
        .unwrap()
}

pub async fn environments(s: Arc<dyn Store>) {
    let env = Environment {
        name: "dev".into(),
        kind: EnvironmentKind::Dev,
        labels: BTreeMap::from([("zone".into(), "a".into())]),
        applications: vec![],
        created_at: Timestamp(5),
    };
    assert!(s.insert_environment(&env).await.unwrap());
    assert!(!s.insert_environment(&env).await.unwrap(), "second insert is a no-op");
    let got = s.get_environment("dev").await.unwrap().unwrap();
    assert_eq!(got.labels.get("zone").map(String::as_str), Some("a"));
    assert_eq!(got.kind, EnvironmentKind::Dev);
    assert!(got.applications.is_empty());
    let limited = Environment {
        applications: vec!["shop".into(), "web".into()],
        kind: EnvironmentKind::Production,
        ..env.clone()
    };
    assert!(s.update_environment(&limited).await.unwrap());
    let got = s.get_environment("dev").await.unwrap().unwrap();
    assert_eq!(got.applications, ["shop", "web"]);
    assert_eq!(got.kind, EnvironmentKind::Production);
    assert!(!s.update_environment(&Environment { name: "nope".into(), ..env.clone() }).await.unwrap());
    assert_eq!(s.list_environments().await.unwrap().len(), 1);
    assert!(s.delete_environment("dev").await.unwrap());
    assert!(s.get_environment("dev").await.unwrap().is_none());
}

pub async fn agents_and_operators(s: Arc<dyn Store>) {
    let a = AgentRecord {
        name: "a1".into(),
        environment: "dev".into(),
        secret_hash: "ab".repeat(32),
        created_at: Timestamp(1),
        last_seen_at: None,
        labels: BTreeMap::from([("region".into(), "eu".into())]),
        version: None,
        isolation: None,
        pending: true,
        vetted: false,
    };
    s.insert_agent(&a).await.unwrap();
    let got = s.get_agent("a1").await.unwrap().unwrap();
    assert_eq!((got.version, got.isolation, got.pending, got.vetted), (None, None, true, false));
    assert!(s.set_agent_reported("a1", Some("0.1.0"), Some("task-user")).await.unwrap());
    assert!(!s.set_agent_reported("nobody", Some("0.1.0"), None).await.unwrap());
    let listed = &s.list_agents().await.unwrap()[0];
    assert_eq!((listed.version.as_deref(), listed.isolation.as_deref()), (Some("0.1.0"), Some("task-user")));
    assert!(s.approve_agent("a1").await.unwrap());
    assert!(!s.approve_agent("nobody").await.unwrap());
    let approved = s.get_agent("a1").await.unwrap().unwrap();
    assert_eq!((approved.pending, approved.vetted), (false, true));
    assert_eq!(s.get_agent("a1").await.unwrap().unwrap().labels, a.labels);
    let relabelled = BTreeMap::from([("region".into(), "us".into()), ("tier".into(), "web".into())]);
    assert!(s.set_agent_labels("a1", &relabelled).await.unwrap());
    assert!(!s.set_agent_labels("nobody", &relabelled).await.unwrap());
    assert_eq!(s.list_agents().await.unwrap()[0].labels, relabelled);
    assert!(matches!(s.insert_agent(&a).await, Err(Error::Conflict(_))));
    s.touch_agent("a1", Timestamp(77)).await.unwrap();
    assert_eq!(s.get_agent("a1").await.unwrap().unwrap().last_seen_at, Some(Timestamp(77)));
    assert_eq!(s.list_agents().await.unwrap().len(), 1);
    assert!(s.delete_agent("a1").await.unwrap());
    assert!(!s.delete_agent("a1").await.unwrap());

    let op = OperatorRecord {
        name: "admin".into(),
        password_hash: "$argon2id$x".into(),
        roles: vec!["release-admin".into()],
        disabled: false,
        created_at: Timestamp(1),
        ..Default::default()
    };
    assert!(s.insert_operator(&op).await.unwrap());
    assert!(!s.insert_operator(&op).await.unwrap());
    let got = s.get_operator("admin").await.unwrap().unwrap();
    assert_eq!(got.roles, vec!["release-admin".to_string()]);
    assert!(s.get_operator("nobody").await.unwrap().is_none());
    // Lockout counting is atomic and locks at the threshold.
    assert_eq!(s.login_failed("admin", 3, Timestamp(9_000)).await.unwrap(), Some((1, None)));
    assert_eq!(s.login_failed("admin", 3, Timestamp(9_000)).await.unwrap(), Some((2, None)));
    assert_eq!(s.login_failed("admin", 3, Timestamp(9_000)).await.unwrap(), Some((3, Some(Timestamp(9_000)))));
    assert_eq!(s.login_failed("nobody", 3, Timestamp(9_000)).await.unwrap(), None);
    let mut got = s.get_operator("admin").await.unwrap().unwrap();
    assert_eq!((got.failed_logins, got.locked_until), (3, Some(Timestamp(9_000))));
    // A success resets the count and the lock, and nothing else.
    let before = got.clone();
    s.login_succeeded("admin").await.unwrap();
    let after = s.get_operator("admin").await.unwrap().unwrap();
    assert_eq!((after.failed_logins, after.locked_until), (0, None));
    assert_eq!(OperatorRecord { failed_logins: 0, locked_until: None, ..before }, after);
    s.login_succeeded("nobody").await.unwrap();
    got.failed_logins = 0;
    got.locked_until = None;
    got.disabled = true;
    got.email = Some("admin@example.com".into());
    got.roles = vec!["viewer".into()];
    assert!(s.update_operator(&got).await.unwrap());
    assert_eq!(s.get_operator("admin").await.unwrap().unwrap(), got);
    assert!(!s.update_operator(&OperatorRecord { name: "nobody".into(), ..got.clone() }).await.unwrap());
    assert_eq!(s.list_operators().await.unwrap().len(), 1);
}

pub async fn artifacts_are_immutable(s: Arc<dyn Store>) {
    let a = Artifact {
        application: "shop".into(),
        version: "1.0".into(),
        sha256: "00".repeat(32),
        size: 3_000_000_000,
        created_at: Timestamp(9),
        created_by: "admin".into(),
    };
    assert!(matches!(s.insert_artifact(&a).await.unwrap(), ArtifactInsert::Inserted));
    let other = Artifact { sha256: "11".repeat(32), ..a.clone() };
    match s.insert_artifact(&other).await.unwrap() {
        ArtifactInsert::Exists(e) => assert_eq!(e.sha256, a.sha256, "the first content stays"),
        ArtifactInsert::Inserted => panic!("a version was overwritten"),
    }
    assert_eq!(s.get_artifact("shop", "1.0").await.unwrap().unwrap().size, 3_000_000_000);
    assert_eq!(s.list_artifacts(Some("shop")).await.unwrap().len(), 1);
    assert_eq!(s.list_artifacts(Some("other")).await.unwrap().len(), 0);
}

pub async fn artifact_deletion_and_retention(s: Arc<dyn Store>) {
    let sp = spec(1);
    let mut other = spec(1);
    other.pipeline = Some("other-pipe".into());
    for (i, v) in ["0.5", "0.9", "1.0", "1.1", "1.2", "2.0"].iter().enumerate() {
        let a = Artifact {
            application: "app".into(),
            version: v.to_string(),
            sha256: format!("{:02x}", i).repeat(32),
            size: 1000 + i as u64,
            created_at: Timestamp(i as i64),
            created_by: "admin".into(),
        };
        s.insert_artifact(&a).await.unwrap();
    }
    assert_eq!(s.artifact_usage(Some("app")).await.unwrap(), 6000 + 15);
    assert_eq!(s.artifact_usage(Some("none")).await.unwrap(), 0);
    assert_eq!(s.artifact_usage(None).await.unwrap(), 6000 + 15);
    let deploy = |sp: &PipelineSpec, v: &str, status: DeploymentStatus| {
        let mut r = record(sp);
        r.version = v.into();
        r.status = status;
        r
    };
    let mut ids = vec![];
    for (sp, v, st) in [
        (&other, "0.5", DeploymentStatus::Aborted),
        (&sp, "0.9", DeploymentStatus::Completed),
        (&sp, "1.0", DeploymentStatus::Completed),
        (&sp, "1.1", DeploymentStatus::Aborted),
        (&sp, "1.2", DeploymentStatus::Queued),
    ] {
        ids.push(s.create_deployment(&deploy(sp, v, st), &created()).await.unwrap());
    }
    let mut kept = s.protected_versions("app").await.unwrap();
    kept.sort();
    assert_eq!(kept, ["0.5", "1.0", "1.1", "1.2"], "live, newest completed and newer, and a pipeline never completed");
    assert_eq!(s.delete_artifact("app", "1.2").await.unwrap(), ArtifactDelete::InUse(ids[4], "queued".into()));
    assert_eq!(s.delete_artifact("app", "0.9").await.unwrap(), ArtifactDelete::Deleted);
    assert_eq!(s.delete_artifact("app", "0.9").await.unwrap(), ArtifactDelete::NotFound);
    assert_eq!(
        s.delete_artifact("app", "1.1").await.unwrap(),
        ArtifactDelete::Deleted,
        "ended deployments do not hold it"
    );
    assert!(s.get_artifact("app", "0.9").await.unwrap().is_none());
    assert!(s.get_artifact("app", "1.2").await.unwrap().is_some());
    let mut digests = s.artifact_digests().await.unwrap();
    digests.sort();
    let want: Vec<String> = [0, 2, 4, 5].iter().map(|i| format!("{:02x}", i).repeat(32)).collect();
    assert_eq!(digests, want);
}

pub async fn pipelines_upsert(s: Arc<dyn Store>) {
    let sp = spec(2);
    let p = Pipeline {
        name: "app-pipe".into(),
        application: "app".into(),
        variables: [("A".to_string(), "1".to_string())].into(),
        stages: sp.stages.clone(),
        created_at: Timestamp(1),
        updated_at: Timestamp(1),
    };
    s.put_pipeline(&p).await.unwrap();
    assert_eq!(s.get_pipeline("app-pipe").await.unwrap().unwrap().variables, p.variables);
    let p2 = Pipeline { stages: spec(3).stages, updated_at: Timestamp(2), variables: Default::default(), ..p.clone() };
    s.put_pipeline(&p2).await.unwrap();
    let got = s.get_pipeline("app-pipe").await.unwrap().unwrap();
    assert!(got.variables.is_empty(), "replaced with the rest");
    assert_eq!(got.stages.len(), 3);
    assert_eq!(got.created_at, Timestamp(1));
    assert_eq!(got.updated_at, Timestamp(2));
    assert_eq!(s.list_pipelines().await.unwrap().len(), 1);
    assert!(s.delete_pipeline("app-pipe").await.unwrap());
    assert!(s.get_pipeline("app-pipe").await.unwrap().is_none());
}

pub async fn deployment_round_trip(s: Arc<dyn Store>) {
    let sp = spec(2);
    let id = s.create_deployment(&record(&sp), &created()).await.unwrap();
    let st = s.load_deployment(id).await.unwrap().unwrap();
    assert_eq!(st.deployment.id, id);
    assert_eq!(st.deployment.spec, sp);
    assert_eq!(st.tasks.len(), 2);
    assert!(st.tasks.iter().all(|t| t.status == TaskStatus::Pending));
    assert_eq!(step(&s, id).await, CommitOutcome::Committed);
    let st = s.load_deployment(id).await.unwrap().unwrap();
    assert_eq!(st.deployment.status, DeploymentStatus::InProgress);
    assert_eq!(st.deployment.row_version, 1);
    assert!(st.deployment.holds_stage);
    assert_eq!(st.tasks[0].status, TaskStatus::Ready);
    assert_eq!(s.stage_locks("app-pipe").await.unwrap(), vec![(0, id)]);
    let list = s
        .list_deployments(&DeploymentFilter { pipeline: Some("app-pipe".into()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let scoped = |apps: Vec<&str>| DeploymentFilter {
        applications: Some(apps.into_iter().map(String::from).collect()),
        ..Default::default()
    };
    assert_eq!(s.list_deployments(&scoped(vec!["app", "x"])).await.unwrap().len(), 1);
    assert!(s.list_deployments(&scoped(vec!["other"])).await.unwrap().is_empty());
    assert!(s.list_deployments(&scoped(vec![])).await.unwrap().is_empty(), "no application: nothing");
    // Paging: `before` is an exclusive cursor on the id, newest first.
    let page = |before| DeploymentFilter { before: Some(before), ..Default::default() };
    assert_eq!(s.list_deployments(&page(id + 1)).await.unwrap().len(), 1);
    assert!(s.list_deployments(&page(id)).await.unwrap().is_empty(), "before is exclusive");
    // Approval decisions survive a commit and a load.
    let old = s.load_deployment(id).await.unwrap().unwrap();
    let mut new = old.clone();
    new.tasks[0].approvals.push(drover_types::ApprovalVote {
        by: "ann".into(),
        at: Timestamp(3000),
        decision: "approve".into(),
        comment: Some("ok".into()),
        overridden: false,
    });
    assert_eq!(commit_of(&s, &old, new.clone(), Effects::default()).await, CommitOutcome::Committed);
    let got = s.load_deployment(id).await.unwrap().unwrap();
    assert_eq!(got.tasks[0].approvals, new.tasks[0].approvals);
    assert!(got.tasks[1].approvals.is_empty());
    let none = s
        .list_deployments(&DeploymentFilter { status: Some(DeploymentStatus::Completed), ..Default::default() })
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(s.active_deployment_ids().await.unwrap(), vec![id]);
    assert!(s.load_deployment(id + 1000).await.unwrap().is_none());
}

pub async fn commit_detects_conflicts(s: Arc<dyn Store>) {
    let sp = spec(1);
    let id = s.create_deployment(&record(&sp), &created()).await.unwrap();
    let old = s.load_deployment(id).await.unwrap().unwrap();
    assert_eq!(step(&s, id).await, CommitOutcome::Committed);
    // A second writer that loaded the same version loses.
    let mut stale = old.clone();
    stale.deployment.message = Some("stale".into());
    assert_eq!(commit_of(&s, &old, stale, Effects::default()).await, CommitOutcome::VersionConflict);
    let now = s.load_deployment(id).await.unwrap().unwrap();
    assert_eq!(now.deployment.message, None, "the losing commit changed nothing");
}

pub async fn stage_lock_is_exclusive(s: Arc<dyn Store>) {
    let sp = spec(1);
    let a = s.create_deployment(&record(&sp), &created()).await.unwrap();
    let b = s.create_deployment(&record(&sp), &created()).await.unwrap();
    assert_eq!(s.oldest_queued("app-pipe").await.unwrap(), vec![(0, a)]);
    assert_eq!(s.queue_heads().await.unwrap(), vec![a]);
    assert_eq!(step(&s, a).await, CommitOutcome::Committed);
    // b ignores the gate here on purpose: the store itself refuses a held stage.
    assert_eq!(step(&s, b).await, CommitOutcome::StageBusy);
    let bst = s.load_deployment(b).await.unwrap().unwrap();
    assert_eq!(bst.deployment.status, DeploymentStatus::Queued, "a refused commit changes nothing");
    // Finishing a releases the stage; then b gets it.
    let old = s.load_deployment(a).await.unwrap().unwrap();
    let mut new = old.clone();
    let mut fx = Effects::default();
    machine::claim(
        &mut new,
        (0, 0, None),
        "ag",
        "att-a",
        Timestamp(3000),
        Timing::new(Duration::from_secs(5), Duration::from_secs(60)),
    )
    .unwrap();
    machine::record_result(&mut new, "att-a", drover_types::agent::Outcome::Completed, Some(0), None, Timestamp(3001))
        .unwrap();
    machine::advance(&mut new, Timestamp(3001), &|_: i64, _: usize| true, &mut fx);
    assert_eq!(new.deployment.status, DeploymentStatus::Completed);
    assert_eq!(commit_of(&s, &old, new, fx).await, CommitOutcome::Committed);
    assert!(s.stage_locks("app-pipe").await.unwrap().is_empty());
    assert_eq!(s.queue_heads().await.unwrap(), vec![b]);
    assert_eq!(step(&s, b).await, CommitOutcome::Committed);
    assert_eq!(s.stage_locks("app-pipe").await.unwrap(), vec![(0, b)]);
    assert!(s.queue_heads().await.unwrap().is_empty());
    assert!(s.last_completed("app-pipe", b, "2.0").await.unwrap().is_some_and(|d| d.id == a));
    assert!(s.last_completed("app-pipe", b, "1.0").await.unwrap().is_none());
}

pub async fn claims_heartbeats_and_leases(s: Arc<dyn Store>) {
    let sp = spec(1);
    let id = s.create_deployment(&record(&sp), &created()).await.unwrap();
    assert!(s.claimable_tasks("env0", "agent-1", 10).await.unwrap().is_empty(), "pending tasks are not claimable");
    step(&s, id).await;
    let own = TaskRef { deployment_id: id, stage: 0, task: 0, target: None, environment: "env0".into() };
    assert_eq!(s.claimable_tasks("env0", "agent-1", 10).await.unwrap(), vec![own.clone()]);
    assert!(s.claimable_tasks("env1", "agent-1", 10).await.unwrap().is_empty());
    let old = s.load_deployment(id).await.unwrap().unwrap();
    let mut new = old.clone();
    machine::claim(
        &mut new,
        (0, 0, None),
        "agent-1",
        "att-1",
        Timestamp(5000),
        Timing::new(Duration::from_millis(100), Duration::from_secs(60)),
    )
    .unwrap();
    assert_eq!(commit_of(&s, &old, new, Effects::default()).await, CommitOutcome::Committed);
    assert!(s.claimable_tasks("env0", "agent-1", 10).await.unwrap().is_empty());
    assert_eq!(s.owned_attempts("agent-1").await.unwrap(), vec![(id, "att-1".to_string())]);
    assert_eq!(s.attempt_task("att-1").await.unwrap(), Some(own));
    assert_eq!(s.attempt_task("att-x").await.unwrap(), None);
    assert!(s.heartbeat("att-1", "agent-1", Timestamp(6000)).await.unwrap());
    assert!(!s.heartbeat("att-1", "agent-2", Timestamp(6000)).await.unwrap(), "only the owner heartbeats");
    assert!(!s.heartbeat("nope", "agent-1", Timestamp(6000)).await.unwrap());
    assert!(s.deployments_due(Timestamp(5999)).await.unwrap().is_empty());
    assert_eq!(s.deployments_due(Timestamp(6001)).await.unwrap(), vec![id]);
    assert_eq!(s.extend_all_leases(Timestamp(9000)).await.unwrap(), 1);
    assert!(s.deployments_due(Timestamp(8000)).await.unwrap().is_empty());
}

/// A fleet stage adds a row per agent when it starts: each is claimable by its agent only,
/// keeps its batch, and loads in (stage, task, target) order.
pub async fn fleet_rows_belong_to_their_agents(s: Arc<dyn Store>) {
    let mut sp = spec(1);
    sp.stages[0].targets = drover_types::Targets::Rolling;
    sp.stages[0].batch = Some(drover_types::BatchSize::Agents(2));
    let id = s.create_deployment(&record(&sp), &created()).await.unwrap();
    let old = s.load_deployment(id).await.unwrap().unwrap();
    let mut new = old.clone();
    struct Gate;
    impl machine::StageGate for Gate {
        fn can_enter(&self, _: i64, _: usize) -> bool {
            true
        }
        fn agents(&self, _: &str) -> Option<Vec<(String, BTreeMap<String, String>)>> {
            Some(["web-b", "web-a", "Web-c"].iter().map(|n| (n.to_string(), BTreeMap::new())).collect())
        }
    }
    let mut fx = Effects::default();
    machine::advance(&mut new, Timestamp(2000), &Gate, &mut fx);
    let (_, added) = new.row_changes(&old);
    assert_eq!(added.len(), 3);
    assert_eq!(commit_of(&s, &old, new.clone(), fx).await, CommitOutcome::Committed);
    let loaded = s.load_deployment(id).await.unwrap().unwrap();
    let keys: Vec<_> = loaded.tasks.iter().map(|t| (t.target.clone(), t.batch, t.status)).collect();
    assert_eq!(
        keys,
        vec![
            (None, None, TaskStatus::InProgress),
            (Some("Web-c".into()), Some(0), TaskStatus::Ready),
            (Some("web-a".into()), Some(0), TaskStatus::Ready),
            (Some("web-b".into()), Some(1), TaskStatus::Pending),
        ]
    );
    let row =
        |a: &str| TaskRef { deployment_id: id, stage: 0, task: 0, target: Some(a.into()), environment: "env0".into() };
    assert_eq!(s.claimable_tasks("env0", "web-a", 10).await.unwrap(), vec![row("web-a")]);
    assert!(s.claimable_tasks("env0", "web-b", 10).await.unwrap().is_empty(), "batch 2 waits");
    assert!(s.claimable_tasks("env0", "intruder", 10).await.unwrap().is_empty());
    let old = loaded;
    let mut new = old.clone();
    let t = Timing::new(Duration::from_secs(5), Duration::from_secs(60));
    assert!(machine::claim(&mut new, (0, 0, Some("web-a")), "Web-c", "x", Timestamp(2100), t).is_err());
    machine::claim(&mut new, (0, 0, Some("web-a")), "web-a", "att-a", Timestamp(2100), t).unwrap();
    assert_eq!(commit_of(&s, &old, new, Effects::default()).await, CommitOutcome::Committed);
    assert_eq!(s.attempt_task("att-a").await.unwrap(), Some(row("web-a")));
    assert_eq!(s.owned_attempts("web-a").await.unwrap(), vec![(id, "att-a".to_string())]);
    assert!(s.heartbeat("att-a", "web-a", Timestamp(3000)).await.unwrap());
    assert!(!s.heartbeat("att-a", "Web-c", Timestamp(3000)).await.unwrap());
    let st = s.load_deployment(id).await.unwrap().unwrap();
    assert_eq!(st.tasks[2].status, TaskStatus::InProgress);
    assert_eq!(st.tasks[2].agent.as_deref(), Some("web-a"));
}

pub async fn logs_and_events(s: Arc<dyn Store>) {
    let sp = spec(1);
    let id = s.create_deployment(&record(&sp), &created()).await.unwrap();
    step(&s, id).await;
    let lines: Vec<_> = (0..5)
        .map(|i| NewLog {
            stage: 0,
            task: 0,
            agent: (i == 4).then(|| "web-1".to_string()),
            ts: Timestamp(i),
            stream: "stdout".to_string(),
            line: format!("line {i} ✓"),
        })
        .collect();
    s.append_logs(id, &lines).await.unwrap();
    let page = s.logs(id, 0, 3).await.unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].line, "line 0 ✓");
    let rest = s.logs(id, page[2].id, 100).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!((rest[0].agent.as_deref(), rest[1].agent.as_deref()), (None, Some("web-1")));
    let ev = s.events(id).await.unwrap();
    assert_eq!(ev[0].kind, "deployment.created");
    assert!(ev.iter().any(|e| e.kind == "deployment.status" && e.detail["to"] == "in_progress"));
    assert!(ev.windows(2).all(|w| w[0].id < w[1].id));
    s.check_integrity().await.unwrap();
}

pub async fn audit_log_is_a_chain(s: Arc<dyn Store>) {
    use drover_core::audit::{self, NewAuditEntry};
    use drover_core::store::AuditFilter;
    let entry = |i: usize| NewAuditEntry {
        ts: Timestamp(i as i64),
        principal: if i.is_multiple_of(2) { "operator:admin".into() } else { "operator:ann".into() },
        action: format!("POST /api/v1/thing/{i}"),
        target: format!("t{i}"),
        outcome: "success".into(),
        source: "127.0.0.1:1".into(),
        request_id: format!("req-{i}"),
        detail: json!({"status": 200, "note": "ünïcode"}),
    };
    // Concurrent appenders still form one chain.
    let mut handles = Vec::new();
    for i in 0..12 {
        let s = s.clone();
        handles.push(tokio::spawn(async move { s.append_audit(&entry(i), None).await.unwrap() }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let all = s.audit_entries(0, 1000).await.unwrap();
    assert_eq!(all.iter().map(|a| a.seq).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    let head = audit::verify(None, None, &all).unwrap().unwrap();
    assert_eq!(head.0, 12);
    // Paging continues the verification.
    let first = s.audit_entries(0, 5).await.unwrap();
    let rest = s.audit_entries(5, 100).await.unwrap();
    let mid = audit::verify(None, None, &first).unwrap();
    assert_eq!(audit::verify(None, mid, &rest).unwrap(), Some(head));
    let ann =
        s.search_audit(&AuditFilter { principal: Some("operator:ann".into()), ..Default::default() }).await.unwrap();
    assert_eq!(ann.len(), 6);
    assert!(ann.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    let one = s.search_audit(&AuditFilter { action: Some("thing/7".into()), ..Default::default() }).await.unwrap();
    assert_eq!(one.len(), 1);
    let page = s.search_audit(&AuditFilter { before: Some(3), limit: Some(10), ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![2, 1]);
}

pub async fn clients_keys_and_revocations(s: Arc<dyn Store>) {
    use drover_core::store::{ClientRecord, SigningKeyRecord};
    let c = ClientRecord {
        client_id: "jenkins".into(),
        secret_hash: "aa".repeat(32),
        roles: vec!["api".into()],
        created_at: Timestamp(1),
        ..Default::default()
    };
    s.insert_client(&c).await.unwrap();
    assert!(matches!(s.insert_client(&c).await, Err(Error::Conflict(_))));
    let mut got = s.get_client("jenkins").await.unwrap().unwrap();
    assert_eq!(got, c);
    got.previous_secret_hash = Some(got.secret_hash.clone());
    got.previous_valid_until = Some(Timestamp(50));
    got.secret_hash = "bb".repeat(32);
    got.tokens_not_before = Timestamp(40);
    got.secret_rotated_at = Some(Timestamp(40));
    got.disabled = true;
    got.metadata.redirect_uris = vec!["http://127.0.0.1/callback".into()];
    got.metadata.public = true;
    assert!(s.update_client(&got).await.unwrap());
    assert_eq!(s.get_client("jenkins").await.unwrap().unwrap(), got);
    assert_eq!(s.list_clients().await.unwrap().len(), 1);
    assert!(s.delete_client("jenkins").await.unwrap());
    assert!(s.get_client("jenkins").await.unwrap().is_none());

    let key = |kid: &str, active: bool| SigningKeyRecord {
        kid: kid.into(),
        alg: "ES256".into(),
        private_key: format!("sealed-{kid}"),
        public_jwk: "{}".into(),
        active,
        created_at: Timestamp(kid.len() as i64),
        retired_at: None,
        cert_subject: (kid == "k1").then(|| "CN=drover".into()),
        cert_not_after: (kid == "k1").then_some(Timestamp(1_900_000_000_000)),
    };
    s.insert_signing_key(&key("k1", true)).await.unwrap();
    s.insert_signing_key(&key("k22", false)).await.unwrap();
    assert!(s.activate_signing_key("k22", Timestamp(99)).await.unwrap());
    assert!(!s.activate_signing_key("nope", Timestamp(99)).await.unwrap());
    let keys = s.list_signing_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(!keys[0].active && keys[0].retired_at == Some(Timestamp(99)));
    assert!(keys[1].active && keys[1].retired_at.is_none());
    assert_eq!(keys[0].cert_subject.as_deref(), Some("CN=drover"));
    assert_eq!(keys[0].cert_not_after, Some(Timestamp(1_900_000_000_000)));
    assert_eq!((keys[1].cert_subject.as_ref(), keys[1].cert_not_after), (None, None));
    assert!(s.update_signing_key_material("k1", "resealed").await.unwrap());
    assert!(!s.update_signing_key_material("nope", "resealed").await.unwrap());
    assert_eq!(s.list_signing_keys().await.unwrap()[0].private_key, "resealed");

    assert!(!s.is_token_revoked("j1").await.unwrap());
    s.revoke_token("j1", Timestamp::now().plus(std::time::Duration::from_secs(60))).await.unwrap();
    s.revoke_token("j1", Timestamp::now().plus(std::time::Duration::from_secs(60))).await.unwrap();
    assert!(s.is_token_revoked("j1").await.unwrap());
    // Expired entries are forgotten.
    s.revoke_token("old", Timestamp(1)).await.unwrap();
    s.revoke_token("j2", Timestamp::now().plus(std::time::Duration::from_secs(60))).await.unwrap();
    assert!(!s.is_token_revoked("old").await.unwrap());
}

pub async fn records_cas_take_and_expiry(s: Arc<dyn Store>) {
    let later = Some(Timestamp::now().plus(std::time::Duration::from_secs(60)));
    assert!(s.record_insert("code", "a", r#"{"n":1}"#, later).await.unwrap());
    assert!(!s.record_insert("code", "a", r#"{"n":2}"#, later).await.unwrap(), "a live key is not replaced");
    assert!(s.record_insert("other", "a", "{}", None).await.unwrap(), "kinds are separate");
    let (body, v) = s.record_get("code", "a").await.unwrap().unwrap();
    assert_eq!((body.as_str(), v), (r#"{"n":1}"#, 1));
    // Compare-and-swap: the first update wins, a second one with the same version loses.
    assert!(s.record_update("code", "a", 1, r#"{"n":3}"#, later).await.unwrap());
    assert!(!s.record_update("code", "a", 1, r#"{"n":4}"#, later).await.unwrap());
    assert_eq!(s.record_get("code", "a").await.unwrap().unwrap(), (r#"{"n":3}"#.to_string(), 2));
    // Take: once.
    assert_eq!(s.record_take("code", "a").await.unwrap().as_deref(), Some(r#"{"n":3}"#));
    assert_eq!(s.record_take("code", "a").await.unwrap(), None);
    // Expired records are invisible, cannot be taken or updated, and are replaced by an insert.
    assert!(s.record_insert("code", "old", "{}", Some(Timestamp(1))).await.unwrap());
    assert!(s.record_get("code", "old").await.unwrap().is_none());
    assert!(s.record_take("code", "old").await.unwrap().is_none());
    assert!(s.record_insert("code", "gone", "{}", Some(Timestamp(1))).await.unwrap());
    assert!(!s.record_update("code", "gone", 1, "{}", later).await.unwrap());
    assert!(s.record_insert("code", "gone", r#"{"new":true}"#, later).await.unwrap());
    assert!(s.record_insert("code", "b", "{}", None).await.unwrap());
    let keys: Vec<String> = s.record_list("code").await.unwrap().into_iter().map(|r| r.0).collect();
    assert_eq!(keys, vec!["b".to_string(), "gone".to_string()]);
    assert!(s.record_delete("code", "b").await.unwrap());
    assert!(!s.record_delete("code", "b").await.unwrap());
    assert_eq!(s.record_list("other").await.unwrap().len(), 1);
}

/// Two writers load the same version and commit at once: exactly one wins, the other is told
/// of the conflict, and the stored row is the winner's.
pub async fn concurrent_commits_one_wins(s: Arc<dyn Store>) {
    let sp = spec(1);
    let id = s.create_deployment(&record(&sp), &created()).await.unwrap();
    for round in 0..10 {
        let old = s.load_deployment(id).await.unwrap().unwrap();
        let mut handles = Vec::new();
        for w in 0..4 {
            let (s, old) = (s.clone(), old.clone());
            handles.push(tokio::spawn(async move {
                let mut new = old.clone();
                new.deployment.message = Some(format!("round {round} writer {w}"));
                (w, commit_of(&s, &old, new, Effects::default()).await)
            }));
        }
        let mut winners = Vec::new();
        for h in handles {
            let (w, out) = h.await.unwrap();
            match out {
                CommitOutcome::Committed => winners.push(w),
                CommitOutcome::VersionConflict => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        let now = s.load_deployment(id).await.unwrap().unwrap();
        assert_eq!(now.deployment.row_version, old.deployment.row_version + 1);
        assert_eq!(now.deployment.message, Some(format!("round {round} writer {}", winners[0])));
    }
}

/// Batches from concurrent appenders interleave as whole batches, in one contiguous chain.
pub async fn audit_batches_keep_the_chain(s: Arc<dyn Store>) {
    use drover_core::audit::{self, NewAuditEntry};
    let entry = |b: usize, i: usize| NewAuditEntry {
        ts: Timestamp((b * 100 + i) as i64),
        principal: format!("client:batch-{b}"),
        action: "token.issued".into(),
        target: format!("t{i}"),
        outcome: "success".into(),
        source: "127.0.0.1:1".into(),
        request_id: format!("req-{b}-{i}"),
        detail: json!({"i": i}),
    };
    let mut handles = Vec::new();
    for b in 0..6 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..50).map(|i| entry(b, i)).collect();
            s.append_audit_batch(&batch, None).await.unwrap()
        }));
    }
    for h in handles {
        let appended = h.await.unwrap();
        assert_eq!(appended.len(), 50);
        // A batch's entries are consecutive: nobody else's entry landed in between.
        assert!(appended.windows(2).all(|w| w[1].seq == w[0].seq + 1), "a batch is contiguous");
    }
    let all = s.audit_entries(0, 1000).await.unwrap();
    assert_eq!(all.iter().map(|a| a.seq).collect::<Vec<_>>(), (1..=300).collect::<Vec<_>>());
    assert_eq!(audit::verify(None, None, &all).unwrap().map(|h| h.0), Some(300));
    assert!(s.append_audit_batch(&[], None).await.unwrap().is_empty());
}

/// Many compare-and-swap updates of one record at once: each version is won exactly once, so
/// a counter incremented by retrying writers ends exactly at the number of increments.
pub async fn records_compare_and_swap_races(s: Arc<dyn Store>) {
    assert!(s.record_insert("counter", "c", "0", None).await.unwrap());
    let mut handles = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut lost = 0;
            for _ in 0..10 {
                for attempt in 0..1000 {
                    let (body, v) = s.record_get("counter", "c").await.unwrap().unwrap();
                    let n: u64 = body.parse().unwrap();
                    if s.record_update("counter", "c", v, &(n + 1).to_string(), None).await.unwrap() {
                        break;
                    }
                    lost += 1;
                    assert!(attempt < 999, "starved");
                }
            }
            lost
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let (body, v) = s.record_get("counter", "c").await.unwrap().unwrap();
    assert_eq!(body, "80");
    assert_eq!(v, 81);
    // Concurrent takes of one code: exactly one gets it.
    assert!(s.record_insert("code", "once", "secret", None).await.unwrap());
    let mut takes = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        takes.push(tokio::spawn(async move { s.record_take("code", "once").await.unwrap() }));
    }
    let mut got = 0;
    for t in takes {
        got += t.await.unwrap().is_some() as usize;
    }
    assert_eq!(got, 1);
}
