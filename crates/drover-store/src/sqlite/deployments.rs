//! Deployments, their task runs, stage locks, events and log lines on SQLite. `commit` runs on
//! the one writer connection: its version check, stage lock and writes are one transaction.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::machine::NewEvent;
use drover_core::model::{DeploymentRecord, DeploymentState};
use drover_core::store::{Commit, CommitOutcome, DeploymentFilter, DeploymentStore, NewLog, TaskRef};
use drover_types::{DeploymentEvent, LogLine, Timestamp};
use rusqlite::{Connection, params};

use super::{SqliteStore, all, err, exec, one};
use crate::{json_err, list_to, rows, sql};

fn insert_event(c: &Connection, id: i64, ts: Timestamp, ev: &NewEvent) -> Result<()> {
    exec(c, sql::EVENT_INSERT, params![id, ts.0, ev.kind, ev.actor, ev.detail.to_string()]).map(|_| ())
}

fn insert_log(c: &Connection, id: i64, l: &NewLog) -> Result<()> {
    let p = params![id, l.stage as i64, l.task as i64, l.ts.0, l.stream, l.line, l.agent];
    exec(c, sql::LOG_INSERT, p).map(|_| ())
}

fn int_of(r: &rusqlite::Row<'_>, i: usize) -> Result<i64> {
    r.get(i).map_err(err)
}

#[async_trait]
impl DeploymentStore for SqliteStore {
    async fn create_deployment(&self, d: &DeploymentRecord, event: &NewEvent) -> Result<i64> {
        let d = d.clone();
        let event = event.clone();
        let spec = serde_json::to_string(&d.spec).map_err(json_err)?;
        let mut tasks = Vec::new();
        for t in DeploymentState::new_tasks(0, &d.spec) {
            let task_spec = serde_json::to_string(&t.spec).map_err(json_err)?;
            tasks.push((
                t.stage_index,
                t.task_index,
                t.environment.clone(),
                t.spec.runs_on_agent(),
                task_spec,
                t.status,
            ));
        }
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            let p = params![
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
            ];
            let id = one(&tx, sql::DEPLOYMENT_INSERT, p, |r| int_of(r, 0))?
                .ok_or_else(|| drover_core::Error::Store("no id returned".into()))?;
            for (si, ti, env, on_agent, spec, status) in &tasks {
                let p = params![id, *si as i64, *ti as i64, env, *on_agent as i64, spec, status.as_str()];
                exec(&tx, sql::TASK_INSERT, p)?;
            }
            insert_event(&tx, id, d.created_at, &event)?;
            tx.commit().map_err(err)?;
            Ok(id)
        })
        .await
    }

    async fn load_deployment(&self, id: i64) -> Result<Option<DeploymentState>> {
        self.read(move |c| {
            let Some(deployment) = one(c, sql::deployment_get(), [id], |r| rows::deployment(r))? else {
                return Ok(None);
            };
            let tasks = all(c, sql::tasks_of(), [id], |r| rows::task(r))?;
            let mut st = DeploymentState { deployment, tasks };
            st.sort_rows();
            Ok(Some(st))
        })
        .await
    }

    async fn commit(&self, c: &Commit) -> Result<CommitOutcome> {
        let c = c.clone();
        let approvals: Vec<Option<String>> =
            c.changed_tasks.iter().map(|t| list_to(&t.approvals)).collect::<Result<_>>()?;
        let new_specs: Vec<String> =
            c.new_tasks.iter().map(|t| serde_json::to_string(&t.spec).map_err(json_err)).collect::<Result<_>>()?;
        self.write(move |conn| {
            let d = &c.deployment;
            let tx = conn.transaction().map_err(err)?;
            let p = params![
                d.status.as_str(),
                d.stage_index as i64,
                d.holds_stage as i64,
                d.message,
                d.updated_at.0,
                d.finished_at.map(|t| t.0),
                c.expected_version + 1,
                d.id,
                c.expected_version
            ];
            if exec(&tx, sql::DEPLOYMENT_UPDATE, p)? != 1 {
                return Ok(CommitOutcome::VersionConflict);
            }
            if let Some(s) = c.release_stage {
                exec(&tx, sql::STAGE_RELEASE, params![d.pipeline, s as i64, d.id])?;
            }
            if let Some(s) = c.acquire_stage
                && exec(&tx, sql::STAGE_ACQUIRE, params![d.pipeline, s as i64, d.id])? == 0
            {
                let holder = one(&tx, sql::STAGE_HOLDER, params![d.pipeline, s as i64], |r| int_of(r, 0))?;
                if holder != Some(d.id) {
                    return Ok(CommitOutcome::StageBusy);
                }
            }
            for (t, approvals) in c.changed_tasks.iter().zip(&approvals) {
                let p = params![
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
                    approvals,
                    t.deployment_id,
                    t.stage_index as i64,
                    t.task_index as i64,
                    t.target.as_deref().unwrap_or("")
                ];
                exec(&tx, sql::TASK_UPDATE, p)?;
            }
            for (t, spec) in c.new_tasks.iter().zip(&new_specs) {
                let p = params![
                    t.deployment_id,
                    t.stage_index as i64,
                    t.task_index as i64,
                    t.environment,
                    t.spec.runs_on_agent() as i64,
                    spec,
                    t.status.as_str(),
                    t.target.as_deref().unwrap_or(""),
                    t.batch.map(|b| b as i64)
                ];
                exec(&tx, sql::TASK_INSERT_TARGET, p)?;
            }
            for ev in &c.events {
                insert_event(&tx, d.id, d.updated_at, ev)?;
            }
            for l in &c.logs {
                insert_log(&tx, d.id, l)?;
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
        let before = f.before;
        self.read(move |c| {
            all(c, sql::deployment_list_sqlite(), params![pipeline, status, apps, before, limit], |r| {
                rows::deployment(r)
            })
        })
        .await
    }

    async fn active_deployment_ids(&self) -> Result<Vec<i64>> {
        self.read(|c| all(c, sql::ACTIVE_IDS, [], |r| int_of(r, 0))).await
    }

    async fn stage_locks(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
        let p = pipeline.to_string();
        self.read(move |c| all(c, sql::STAGE_LOCKS, [p], |r| rows::stage_pair(r))).await
    }

    async fn oldest_queued(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
        let p = pipeline.to_string();
        self.read(move |c| all(c, sql::OLDEST_QUEUED, [p], |r| rows::stage_pair(r))).await
    }

    /// Both in one read (one reader connection, one hand-off less on the hot path).
    async fn stage_gate(&self, pipeline: &str) -> Result<(Vec<(usize, i64)>, Vec<(usize, i64)>)> {
        let p = pipeline.to_string();
        self.read(move |c| {
            let locks = all(c, sql::STAGE_LOCKS, [&p], |r| rows::stage_pair(r))?;
            let queued = all(c, sql::OLDEST_QUEUED, [&p], |r| rows::stage_pair(r))?;
            Ok((locks, queued))
        })
        .await
    }

    async fn queue_heads(&self) -> Result<Vec<i64>> {
        self.read(|c| all(c, sql::QUEUE_HEADS, [], |r| int_of(r, 0))).await
    }

    async fn claimable_tasks(&self, environment: &str, agent: &str, limit: u32) -> Result<Vec<TaskRef>> {
        let (env, agent) = (environment.to_string(), agent.to_string());
        self.read(move |c| all(c, sql::CLAIMABLE, params![env, agent, limit as i64], |r| rows::task_ref(r))).await
    }

    async fn owned_attempts(&self, agent: &str) -> Result<Vec<(i64, String)>> {
        let agent = agent.to_string();
        self.read(move |c| {
            all(c, sql::OWNED_ATTEMPTS, [agent], |r| Ok((int_of(r, 0)?, r.get::<_, String>(1).map_err(err)?)))
        })
        .await
    }

    async fn attempt_task(&self, attempt_id: &str) -> Result<Option<TaskRef>> {
        let a = attempt_id.to_string();
        self.read(move |c| one(c, sql::ATTEMPT_TASK, [a], |r| rows::task_ref(r))).await
    }

    async fn heartbeat(&self, attempt_id: &str, agent: &str, lease_until: Timestamp) -> Result<bool> {
        let (a, ag) = (attempt_id.to_string(), agent.to_string());
        self.write(move |c| Ok(exec(c, sql::HEARTBEAT, params![lease_until.0, a, ag])? == 1)).await
    }

    async fn extend_all_leases(&self, until: Timestamp) -> Result<u64> {
        self.write(move |c| {
            let n = exec(c, sql::EXTEND_LEASES, [until.0])? as u64;
            exec(c, sql::EXTEND_DEADLINES, [until.0])?;
            Ok(n)
        })
        .await
    }

    async fn deployments_due(&self, now: Timestamp) -> Result<Vec<i64>> {
        self.read(move |c| all(c, sql::DUE, [now.0], |r| int_of(r, 0))).await
    }

    async fn pending_promotion_before(&self, pipeline: &str, stage: usize, below: i64) -> Result<Vec<i64>> {
        let p = pipeline.to_string();
        self.read(move |c| all(c, sql::PENDING_PROMOTION_BEFORE, params![p, stage as i64, below], |r| int_of(r, 0)))
            .await
    }

    async fn last_completed(&self, pipeline: &str, below: i64, not_version: &str) -> Result<Option<DeploymentRecord>> {
        let (p, v) = (pipeline.to_string(), not_version.to_string());
        self.read(move |c| one(c, sql::deployment_last_completed(), params![p, below, v], |r| rows::deployment(r)))
            .await
    }

    async fn append_logs(&self, deployment_id: i64, lines: &[NewLog]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let lines = lines.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(err)?;
            for l in &lines {
                insert_log(&tx, deployment_id, l)?;
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn logs(&self, deployment_id: i64, after: i64, limit: u32) -> Result<Vec<LogLine>> {
        self.read(move |c| all(c, sql::LOGS, params![deployment_id, after, limit as i64], |r| rows::log_line(r))).await
    }

    async fn events(&self, deployment_id: i64) -> Result<Vec<DeploymentEvent>> {
        self.read(move |c| all(c, sql::EVENTS, [deployment_id], |r| rows::event(r))).await
    }
}
