//! The deployment engine: runs the pure state machine of `drover_core::machine` against the
//! store. Every change is one atomic commit (deployment row + tasks + events + stage lock) made
//! before anything acts on it; agents are woken only after the commit.
//!
//! Owners and deadlines: agent attempts carry a lease that heartbeats extend; the sweeper fails
//! attempts whose lease ran out and completes due `wait` tasks; on start the engine extends all
//! leases once (agents could not heartbeat while the orchestrator was down) and steps every
//! active deployment, so a restarted orchestrator resumes where it stopped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

mod attempts;
mod batch;
mod vars;

pub use vars::{check_references, refuse_secret_in_a_list, stage_scope};

/// Is an agent handed work? Not while it waits for approval, nor in an environment holding
/// secret variables unless a holder of `variable.manage` registered or approved it — also when
/// the secrets came after it.
pub fn agent_gets_work(a: &drover_core::store::AgentRecord, snap: &crate::variables::Snapshot) -> bool {
    !a.pending && (a.vetted || !snap.holds_secrets(&a.environment))
}

use drover_core::machine::{self, ActionInput, Actor, Effects, NewEvent};
use drover_core::model::{DeploymentRecord, DeploymentState};
use drover_core::store::{CommitOutcome, NewLog};
use drover_core::{Commit, Error, Result, Store};
use drover_types::{Action, DeploymentStatus, PipelineSpec, TaskSpec, TaskStatus, Timestamp};
use serde_json::json;
use tokio::sync::{Notify, broadcast, mpsc};

/// How often the sweeper looks for lost attempts and due waits.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Longest an agent poll is held open.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(25);
const MAX_COMMIT_RETRIES: usize = 50;

/// Follow-up work queued by a commit and run by the engine loop.
enum Kick {
    Step(i64),
    EndRollback { original: i64, rollback: i64, outcome: DeploymentStatus },
}

/// Who takes an action on a deployment, as the service layer established it.
#[derive(Debug, Clone)]
pub struct Acting {
    /// As in `created_by`.
    pub name: String,
    /// The roles the actor holds on the deployment's application.
    pub roles: Vec<String>,
    /// Holds `approval.override` on the deployment's application.
    pub may_override: bool,
}

impl Acting {
    /// The orchestrator itself (superseding, rollbacks it starts).
    pub fn system(name: &str) -> Acting {
        Acting { name: name.to_string(), roles: Vec::new(), may_override: false }
    }
    fn actor(&self) -> Actor<'_> {
        Actor { name: &self.name, roles: &self.roles, may_override: self.may_override }
    }
}

/// A webhook task the orchestrator must call (after the commit that started it). No `Debug`:
/// its task has its variables, secret ones included, filled in.
#[derive(Clone)]
pub struct WebhookCall {
    pub deployment_id: i64,
    pub attempt_id: String,
    /// The task with its variables filled in, or why they could not be.
    pub spec: std::result::Result<TaskSpec, String>,
    pub application: String,
    pub version: String,
    pub environment: String,
    pub started_by: String,
}

pub struct Engine {
    me: Weak<Engine>,
    /// Agent operations waiting to be applied, per deployment (see `batch`).
    queued: Mutex<HashMap<i64, Vec<batch::Queued>>>,
    calls: mpsc::UnboundedSender<WebhookCall>,
    call_rx: Mutex<Option<mpsc::UnboundedReceiver<WebhookCall>>>,
    store: Arc<dyn Store>,
    /// An attempt without a heartbeat for this long is lost.
    pub lease: Duration,
    /// How long past a task's timeout the orchestrator waits for the agent's result.
    pub timeout_grace: Duration,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    kicks: mpsc::UnboundedSender<Kick>,
    kick_rx: Mutex<Option<mpsc::UnboundedReceiver<Kick>>>,
    /// Deployment ids that changed (for `status --follow` / SSE).
    changes: broadcast::Sender<i64>,
    /// Agent long polls held open now.
    polls: std::sync::atomic::AtomicUsize,
    /// The same, per agent (an agent with an open poll has room for a task now).
    polling: Mutex<HashMap<String, usize>>,
    /// A draining node hands out no new work (re-deliveries of what agents hold go on).
    draining: std::sync::atomic::AtomicBool,
    /// Woken when a drain ends, so held polls ask again at once.
    resumed: Notify,
    /// Environments' variables (none in engine-only tests).
    variables: std::sync::OnceLock<Arc<crate::variables::Variables>>,
}

impl Engine {
    pub fn new(store: Arc<dyn Store>, lease: Duration, timeout_grace: Duration) -> Arc<Self> {
        let (kicks, kick_rx) = mpsc::unbounded_channel();
        let (changes, _) = broadcast::channel(4096);
        let (calls, call_rx) = mpsc::unbounded_channel();
        Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            queued: Default::default(),
            calls,
            call_rx: Mutex::new(Some(call_rx)),
            store,
            lease,
            timeout_grace,
            wakers: Mutex::new(HashMap::new()),
            kicks,
            kick_rx: Mutex::new(Some(kick_rx)),
            changes,
            polls: Default::default(),
            polling: Default::default(),
            draining: Default::default(),
            resumed: Notify::new(),
            variables: Default::default(),
        })
    }

    /// The webhook calls to make (taken once, by the orchestrator's webhook runner).
    pub fn take_webhook_calls(&self) -> Option<mpsc::UnboundedReceiver<WebhookCall>> {
        self.call_rx.lock().expect("poisoned").take()
    }

    /// Agent long polls held open now.
    pub fn polls_waiting(&self) -> usize {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Has this agent a long poll open on this node now?
    pub fn is_polling(&self, agent: &str) -> bool {
        self.polling.lock().expect("poisoned").contains_key(agent)
    }

    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drains (or stops draining) this node: while draining, polls get no new work.
    pub fn set_draining(&self, on: bool) {
        if self.draining.swap(on, std::sync::atomic::Ordering::Relaxed) != on {
            if !on {
                self.resumed.notify_waiters();
            }
            tracing::warn!(
                draining = on,
                "node {}",
                if on { "draining: no new work is handed out" } else { "no longer draining" }
            );
        }
    }

    /// Agents should heartbeat a few times per lease.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease / 4).max(Duration::from_millis(100))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<i64> {
        self.changes.subscribe()
    }

    /// Recovers after a (re)start and runs the background loops until `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        let grace = Timestamp::now().plus(self.lease);
        let extended = self.store.extend_all_leases(grace).await?;
        if extended > 0 {
            tracing::info!(attempts = extended, "extended leases of in-flight attempts after start");
        }
        for id in self.store.active_deployment_ids().await? {
            self.kick(id);
        }
        let mut kick_rx = self.kick_rx.lock().expect("poisoned").take().expect("engine run twice");
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                Some(kick) = kick_rx.recv() => {
                    let me = self.clone();
                    tokio::spawn(async move { me.follow_up(kick).await });
                }
                _ = sweep.tick() => {
                    ticks += 1;
                    if let Err(e) = self.sweep(ticks.is_multiple_of(8)).await {
                        tracing::warn!(error = %e, "sweep failed");
                    }
                }
            }
        }
    }

    fn kick(&self, id: i64) {
        let _ = self.kicks.send(Kick::Step(id));
    }

    async fn follow_up(&self, kick: Kick) {
        match kick {
            Kick::Step(id) => {
                if let Err(e) = self.step(id).await {
                    tracing::warn!(deployment = id, error = %e, "step failed");
                }
            }
            Kick::EndRollback { original, rollback, outcome } => {
                let r = self
                    .mutate(original, "system", |st, fx| {
                        machine::end_rollback(st, rollback, outcome, Timestamp::now(), fx);
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(deployment = original, error = %e, "ending rollback failed");
                }
            }
        }
    }

    async fn sweep(&self, requeue: bool) -> Result<()> {
        let now = Timestamp::now();
        for id in self.store.deployments_due(now).await? {
            let r = self
                .mutate(id, "system", |st, fx| {
                    let now = Timestamp::now();
                    Ok((machine::expire_leases(st, now), machine::expire_deadlines(st, now, fx)))
                })
                .await;
            // One deployment that cannot be changed now does not hold up the others' deadlines.
            let (n, ended) = match r {
                Ok((_, r)) => r,
                Err(e) => {
                    tracing::warn!(deployment = id, error = %e, "expiring deadlines failed; next sweep");
                    continue;
                }
            };
            if n > 0 {
                tracing::warn!(deployment = id, attempts = n, "attempts lost: no heartbeat within the lease");
            }
            for why in ended {
                tracing::warn!(deployment = id, "deadline passed: {why}");
            }
        }
        if requeue {
            // Safety net for a kick lost to a crash between commit and wake-up: the head of each
            // stage's queue (the others wait behind it anyway).
            for id in self.store.queue_heads().await? {
                self.kick(id);
            }
        }
        Ok(())
    }

    fn waker(&self, environment: &str) -> Arc<Notify> {
        let mut w = self.wakers.lock().expect("poisoned");
        w.entry(environment.to_string()).or_default().clone()
    }

    /// Re-evaluates a deployment (stage free? wait due?).
    pub async fn step(&self, id: i64) -> Result<DeploymentState> {
        Ok(self.mutate(id, "system", |_, _| Ok(())).await?.0)
    }

    /// Loads, changes, advances and commits one deployment, retrying on concurrent changes.
    /// `f` may run more than once and must only change the state it is given.
    pub async fn mutate<R>(
        &self,
        id: i64,
        actor: &str,
        mut f: impl FnMut(&mut DeploymentState, &mut Effects) -> Result<R>,
    ) -> Result<(DeploymentState, R)> {
        self.mutate_with_logs(id, actor, |st, fx| Ok((f(st, fx)?, Vec::new()))).await
    }

    /// [`Engine::mutate`] where the change also returns log lines to append in the same commit
    /// (when it changes anything).
    async fn mutate_with_logs<R>(
        &self,
        id: i64,
        actor: &str,
        mut f: impl FnMut(&mut DeploymentState, &mut Effects) -> Result<(R, Vec<NewLog>)>,
    ) -> Result<(DeploymentState, R)> {
        for _ in 0..MAX_COMMIT_RETRIES {
            let old = self
                .store
                .load_deployment(id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("deployment {id} not found")))?;
            let mut new = old.clone();
            let mut fx = Effects::default();
            let (r, logs) = f(&mut new, &mut fx)?;
            let now = Timestamp::now();
            // Try without looking at the pipeline's stage locks first; only when the machine
            // asks to enter a stage, fetch them and step again.
            let mut trial = new.clone();
            let mut trial_fx = fx.clone();
            let asked = Asked::default();
            machine::advance(&mut trial, now, &asked, &mut trial_fx);
            if asked.stage.get() || asked.agents.get() {
                let (locks, queued) = if asked.stage.get() {
                    self.store.stage_gate(&new.deployment.pipeline).await?
                } else {
                    Default::default()
                };
                // A fleet stage about to choose its agents: one lookup, for every stage.
                let agents = if asked.agents.get() || enters_fleet(&trial) {
                    // Agents waiting for approval get no work.
                    let snap = self.snapshot().await?;
                    Some(self.store.list_agents().await?.into_iter().filter(|a| agent_gets_work(a, &snap)).collect())
                } else {
                    None
                };
                let gate = Gate { locks, queued, agents };
                machine::advance(&mut new, now, &gate, &mut fx);
            } else {
                new = trial;
                fx = trial_fx;
            }
            if new == old {
                return Ok((new, r));
            }
            new.deployment.updated_at = now;
            let (changed_tasks, new_tasks) = new.row_changes(&old);
            let events = machine::diff_events(Some(&old), &new, actor);
            let commit = Commit {
                expected_version: old.deployment.row_version,
                deployment: new.deployment.clone(),
                changed_tasks,
                new_tasks,
                events,
                logs,
                acquire_stage: fx.acquire_stage,
                release_stage: fx.release_stage,
            };
            match self.store.commit(&commit).await? {
                CommitOutcome::Committed => {
                    new.deployment.row_version += 1;
                    self.after_commit(&old, &new, &fx).await;
                    return Ok((new, r));
                }
                CommitOutcome::VersionConflict | CommitOutcome::StageBusy => {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
        }
        Err(Error::Conflict(format!("deployment {id} is changing concurrently; try again")))
    }

    async fn after_commit(&self, old: &DeploymentState, new: &DeploymentState, fx: &Effects) {
        let (changed, added) = new.row_changes(old);
        let mut envs = HashSet::new();
        for t in changed.iter().chain(&added) {
            if t.status == TaskStatus::Ready && t.spec.runs_on_agent() {
                envs.insert(t.environment.clone());
            }
        }
        for e in envs {
            self.waker(&e).notify_waiters();
        }
        for t in &changed {
            let before = old.tasks.iter().find(|o| o.key() == t.key());
            if matches!(t.spec, TaskSpec::Webhook { .. })
                && t.status == TaskStatus::InProgress
                && before.is_some_and(|b| t.attempt_id != b.attempt_id)
                && let Some(attempt_id) = &t.attempt_id
            {
                let d = &new.deployment;
                let spec = self.resolve_task(new, t).await.map(|r| r.spec).map_err(|e| e.to_string());
                let _ = self.calls.send(WebhookCall {
                    deployment_id: d.id,
                    attempt_id: attempt_id.clone(),
                    spec,
                    application: d.application.clone(),
                    version: d.version.clone(),
                    environment: t.environment.clone(),
                    started_by: d.created_by.clone(),
                });
            }
        }
        if let Some(s) = fx.release_stage {
            match self.store.oldest_queued(&new.deployment.pipeline).await {
                Ok(q) => {
                    for (qs, id) in q {
                        if qs == s && id != new.deployment.id {
                            self.kick(id);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "looking for the next deployment failed; the sweeper will find it")
                }
            }
        }
        let d = &new.deployment;
        if d.status.is_terminal()
            && !old.deployment.status.is_terminal()
            && let Some(original) = d.rollback_of
        {
            let _ = self.kicks.send(Kick::EndRollback { original, rollback: d.id, outcome: d.status });
        }
        let _ = self.changes.send(d.id);
    }

    /// Starts a deployment of `pipeline` at `version`.
    pub async fn start(
        &self,
        pipeline: &str,
        version: &str,
        actor: &str,
        rollback_of: Option<i64>,
    ) -> Result<DeploymentState> {
        drover_core::validate_version(version)?;
        let p = self
            .store
            .get_pipeline(pipeline)
            .await?
            .ok_or_else(|| Error::NotFound(format!("pipeline {pipeline} not found")))?;
        let mut spec = PipelineSpec {
            application: p.application.clone(),
            pipeline: Some(p.name.clone()),
            variables: p.variables.clone(),
            stages: p.stages.clone(),
        };
        // Approvals that do not say whether the starter may approve: not in production.
        for stage in &mut spec.stages {
            let open = stage.tasks.iter().any(|t| matches!(t, TaskSpec::Approval { allow_self_approval: None, .. }));
            if !open {
                continue;
            }
            let production = match self.store.get_environment(&stage.environment).await? {
                Some(e) => e.kind == drover_types::EnvironmentKind::Production,
                None => stage.environment == "production" || stage.environment == "prod",
            };
            for t in &mut stage.tasks {
                if let TaskSpec::Approval { allow_self_approval: a @ None, .. } = t {
                    *a = Some(!production);
                }
            }
        }
        self.resolve_at_start(&mut spec).await?;
        let needs_artifact = spec.stages.iter().any(|s| s.tasks.iter().any(|t| matches!(t, TaskSpec::Deploy {})));
        if needs_artifact && self.store.get_artifact(&p.application, version).await?.is_none() {
            return Err(Error::NotFound(format!(
                "artifact {} {version} not found; push it first (drover artifact push FILE --app {} --version {version})",
                p.application, p.application
            )));
        }
        let now = Timestamp::now();
        let record = DeploymentRecord {
            id: 0,
            pipeline: p.name.clone(),
            application: p.application.clone(),
            version: version.to_string(),
            status: DeploymentStatus::Queued,
            stage_index: 0,
            holds_stage: false,
            message: None,
            created_by: actor.to_string(),
            created_at: now,
            updated_at: now,
            finished_at: None,
            rollback_of,
            spec,
            row_version: 0,
        };
        let event = NewEvent {
            kind: "deployment.created".into(),
            actor: actor.to_string(),
            detail: json!({"pipeline": p.name, "version": version, "rollback_of": rollback_of}),
        };
        let id = self.store.create_deployment(&record, &event).await?;
        tracing::info!(deployment = id, pipeline = %p.name, version, by = actor, "deployment created");
        self.step(id).await
    }

    /// Applies an operator action; returns the deployment the caller should look at (for a
    /// rollback, the new rollback deployment).
    pub async fn act(&self, id: i64, action: Action, who: &Acting, input: ActionInput) -> Result<DeploymentState> {
        if action == Action::Rollback {
            return self.rollback(id, &who.name, input.reason).await;
        }
        let actor = who.actor();
        let (st, ()) = self
            .mutate(id, &who.name, |st, fx| {
                machine::apply_action(st, action, &actor, input.clone(), Timestamp::now(), fx)?;
                Ok(())
            })
            .await?;
        tracing::info!(deployment = id, action = %action, by = %who.name, reason = input.reason.as_deref(), overridden = input.override_approval, "deployment action");
        if action == Action::Promote {
            let older =
                self.store.pending_promotion_before(&st.deployment.pipeline, st.deployment.stage_index, id).await?;
            for old in older {
                let msg = format!("superseded by deployment {id}");
                let input = ActionInput { reason: Some(msg.clone()), override_approval: false };
                let r = self
                    .mutate(old, &who.name, |st, fx| {
                        machine::apply_action(st, Action::Abort, &actor, input.clone(), Timestamp::now(), fx)?;
                        st.deployment.message = Some(msg.clone());
                        Ok(())
                    })
                    .await;
                if let Err(e) = r {
                    tracing::warn!(deployment = old, error = %e, "superseding failed");
                }
            }
        }
        Ok(st)
    }

    async fn rollback(&self, id: i64, actor: &str, reason: Option<String>) -> Result<DeploymentState> {
        let st = self
            .store
            .load_deployment(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("deployment {id} not found")))?;
        let d = &st.deployment;
        if d.status == DeploymentStatus::RollingBack {
            return Err(Error::InvalidState(format!("deployment {id} is already rolling back")));
        }
        let target = self.store.last_completed(&d.pipeline, d.id, &d.version).await?.ok_or_else(|| {
            Error::InvalidState(format!(
                "no earlier completed deployment of pipeline {} with another version to roll back to",
                d.pipeline
            ))
        })?;
        let (pipeline, version) = (d.pipeline.clone(), target.version.clone());
        // The rollback deployment exists before the original gives up its stage, so it is
        // first in line for it.
        let r = self.start(&pipeline, &version, actor, Some(id)).await?;
        let rid = r.deployment.id;
        self.mutate(id, actor, |st, fx| {
            machine::begin_rollback(st, rid, &version, Timestamp::now(), fx);
            if let Some(why) = &reason {
                st.deployment.message = Some(format!("{} ({why})", st.deployment.message.clone().unwrap_or_default()));
            }
            Ok(())
        })
        .await?;
        self.step(rid).await
    }
}

/// The gate of a trial step: it records what the machine asked for and says no.
#[derive(Default)]
struct Asked {
    stage: std::cell::Cell<bool>,
    agents: std::cell::Cell<bool>,
}

impl machine::StageGate for Asked {
    fn can_enter(&self, _: i64, _: usize) -> bool {
        self.stage.set(true);
        false
    }
    fn agents(&self, _: &str) -> Option<Vec<(String, std::collections::BTreeMap<String, String>)>> {
        self.agents.set(true);
        None
    }
}

/// The pipeline's stage locks and queue heads, and the registered agents, as the store has them.
struct Gate {
    locks: Vec<(usize, i64)>,
    queued: Vec<(usize, i64)>,
    /// `None`: not looked up (the machine then waits).
    agents: Option<Vec<drover_core::store::AgentRecord>>,
}

impl machine::StageGate for Gate {
    fn can_enter(&self, me: i64, s: usize) -> bool {
        self.locks.iter().all(|(ls, holder)| *ls != s || *holder == me)
            && self.queued.iter().all(|(qs, oldest)| *qs != s || *oldest >= me)
    }
    fn agents(&self, environment: &str) -> Option<Vec<(String, std::collections::BTreeMap<String, String>)>> {
        let agents = self.agents.as_ref()?;
        Some(
            agents
                .iter()
                .filter(|a| a.environment == environment)
                .map(|a| (a.name.clone(), a.labels.clone()))
                .collect(),
        )
    }
}

/// Did a trial step stop before entering a fleet stage? (Then the step that enters it needs the
/// agents as well as the stage locks.)
fn enters_fleet(trial: &DeploymentState) -> bool {
    let d = &trial.deployment;
    d.status == DeploymentStatus::Queued && d.spec.stages.get(d.stage_index).is_some_and(|s| s.is_fleet())
}
