//! Deployments, their task runs, stage locks, events and log lines on PostgreSQL. `commit`'s
//! conditional update takes the deployment's row lock: a concurrent commit waits, then finds
//! the version changed.

use async_trait::async_trait;
use drover_core::Result;
use drover_core::machine::NewEvent;
use drover_core::model::{DeploymentRecord, DeploymentState};
use drover_core::store::{Commit, CommitOutcome, DeploymentFilter, DeploymentStore, NewLog, TaskRef};
use drover_types::{DeploymentEvent, LogLine, Timestamp};

use super::{PgStore, db_err};
use crate::{json_err, list_to, rows, sql};

/// All events of a commit in one statement: `EVENT_INSERT`'s row repeated.
fn events_insert(n: usize) -> String {
    let (head, _) = sql::EVENT_INSERT.split_once(" VALUES ").expect("an INSERT ... VALUES statement");
    let mut s = format!("{head} VALUES ");
    for i in 0..n {
        let b = i * 5;
        s.push_str(&format!(
            "{}(${}, ${}, ${}, ${}, ${})",
            if i > 0 { ", " } else { "" },
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5
        ));
    }
    s
}

async fn insert_log(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, id: i64, l: &NewLog) -> Result<()> {
    sqlx::query(sql::LOG_INSERT)
        .bind(id)
        .bind(l.stage as i64)
        .bind(l.task as i64)
        .bind(l.ts.0)
        .bind(&l.stream)
        .bind(&l.line)
        .bind(&l.agent)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

fn pairs(rows: Vec<(i64, i64)>) -> Vec<(usize, i64)> {
    rows.into_iter().map(|(s, d)| (s as usize, d)).collect()
}

#[async_trait]
impl DeploymentStore for PgStore {
    async fn create_deployment(&self, d: &DeploymentRecord, event: &NewEvent) -> Result<i64> {
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        let id: i64 = sqlx::query_scalar(sql::DEPLOYMENT_INSERT)
            .bind(&d.pipeline)
            .bind(&d.application)
            .bind(&d.version)
            .bind(d.status.as_str())
            .bind(d.stage_index as i64)
            .bind(d.holds_stage as i64)
            .bind(&d.message)
            .bind(&d.created_by)
            .bind(d.created_at.0)
            .bind(d.updated_at.0)
            .bind(d.finished_at.map(|t| t.0))
            .bind(d.rollback_of)
            .bind(serde_json::to_string(&d.spec).map_err(json_err)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        for t in DeploymentState::new_tasks(id, &d.spec) {
            sqlx::query(sql::TASK_INSERT)
                .bind(id)
                .bind(t.stage_index as i64)
                .bind(t.task_index as i64)
                .bind(&t.environment)
                .bind(t.spec.runs_on_agent() as i64)
                .bind(serde_json::to_string(&t.spec).map_err(json_err)?)
                .bind(t.status.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(sql::EVENT_INSERT)
            .bind(id)
            .bind(d.created_at.0)
            .bind(&event.kind)
            .bind(&event.actor)
            .bind(event.detail.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(id)
    }

    async fn load_deployment(&self, id: i64) -> Result<Option<DeploymentState>> {
        let mut conn = self.pool().acquire().await.map_err(db_err)?;
        let row = sqlx::query(sql::deployment_get()).bind(id).fetch_optional(&mut *conn).await.map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let deployment = rows::deployment(&row)?;
        let rows = sqlx::query(sql::tasks_of()).bind(id).fetch_all(&mut *conn).await.map_err(db_err)?;
        let tasks = rows.iter().map(rows::task).collect::<Result<Vec<_>>>()?;
        let mut st = DeploymentState { deployment, tasks };
        st.sort_rows(); // by bytes, whatever the database's collation
        Ok(Some(st))
    }

    async fn commit(&self, c: &Commit) -> Result<CommitOutcome> {
        let d = &c.deployment;
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        let n = sqlx::query(sql::DEPLOYMENT_UPDATE)
            .bind(d.status.as_str())
            .bind(d.stage_index as i64)
            .bind(d.holds_stage as i64)
            .bind(&d.message)
            .bind(d.updated_at.0)
            .bind(d.finished_at.map(|t| t.0))
            .bind(c.expected_version + 1)
            .bind(d.id)
            .bind(c.expected_version)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
        if n != 1 {
            return Ok(CommitOutcome::VersionConflict);
        }
        if let Some(s) = c.release_stage {
            sqlx::query(sql::STAGE_RELEASE)
                .bind(&d.pipeline)
                .bind(s as i64)
                .bind(d.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if let Some(s) = c.acquire_stage {
            let r = sqlx::query(sql::STAGE_ACQUIRE)
                .bind(&d.pipeline)
                .bind(s as i64)
                .bind(d.id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            if r.rows_affected() == 0 {
                let holder: Option<i64> = sqlx::query_scalar(sql::STAGE_HOLDER)
                    .bind(&d.pipeline)
                    .bind(s as i64)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db_err)?;
                if holder != Some(d.id) {
                    return Ok(CommitOutcome::StageBusy);
                }
            }
        }
        for t in &c.changed_tasks {
            sqlx::query(sql::TASK_UPDATE)
                .bind(t.status.as_str())
                .bind(t.attempt as i64)
                .bind(&t.attempt_id)
                .bind(&t.agent)
                .bind(t.lease_until.map(|x| x.0))
                .bind(t.due_at.map(|x| x.0))
                .bind(t.started_at.map(|x| x.0))
                .bind(t.finished_at.map(|x| x.0))
                .bind(t.exit_code.map(|x| x as i64))
                .bind(&t.message)
                .bind(&t.decided_by)
                .bind(&t.comment)
                .bind(list_to(&t.approvals)?)
                .bind(t.deployment_id)
                .bind(t.stage_index as i64)
                .bind(t.task_index as i64)
                .bind(t.target.as_deref().unwrap_or(""))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        for t in &c.new_tasks {
            sqlx::query(sql::TASK_INSERT_TARGET)
                .bind(t.deployment_id)
                .bind(t.stage_index as i64)
                .bind(t.task_index as i64)
                .bind(&t.environment)
                .bind(t.spec.runs_on_agent() as i64)
                .bind(serde_json::to_string(&t.spec).map_err(json_err)?)
                .bind(t.status.as_str())
                .bind(t.target.as_deref().unwrap_or(""))
                .bind(t.batch.map(|b| b as i64))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        if !c.events.is_empty() {
            let sql = events_insert(c.events.len());
            let mut q = sqlx::query(&sql);
            for e in &c.events {
                q = q.bind(d.id).bind(d.updated_at.0).bind(&e.kind).bind(&e.actor).bind(e.detail.to_string());
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        for l in &c.logs {
            insert_log(&mut tx, d.id, l).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(CommitOutcome::Committed)
    }

    async fn list_deployments(&self, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>> {
        let rows = sqlx::query(sql::deployment_list_pg())
            .bind(f.pipeline.as_deref())
            .bind(f.status.map(|s| s.as_str()))
            .bind(f.applications.as_ref().map(|a| serde_json::Value::from(a.clone()).to_string()))
            .bind(f.before)
            .bind(f.limit.unwrap_or(100).min(10_000) as i64)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::deployment).collect()
    }

    async fn active_deployment_ids(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar(sql::ACTIVE_IDS).fetch_all(&self.pool()).await.map_err(db_err)
    }

    async fn stage_locks(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
        let rows = sqlx::query_as(sql::STAGE_LOCKS).bind(pipeline).fetch_all(&self.pool()).await.map_err(db_err)?;
        Ok(pairs(rows))
    }

    async fn oldest_queued(&self, pipeline: &str) -> Result<Vec<(usize, i64)>> {
        let rows = sqlx::query_as(sql::OLDEST_QUEUED).bind(pipeline).fetch_all(&self.pool()).await.map_err(db_err)?;
        Ok(pairs(rows))
    }

    async fn queue_heads(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar(sql::QUEUE_HEADS).fetch_all(&self.pool()).await.map_err(db_err)
    }

    async fn claimable_tasks(&self, environment: &str, agent: &str, limit: u32) -> Result<Vec<TaskRef>> {
        let rows = sqlx::query(sql::CLAIMABLE)
            .bind(environment)
            .bind(agent)
            .bind(limit as i64)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::task_ref).collect()
    }

    async fn owned_attempts(&self, agent: &str) -> Result<Vec<(i64, String)>> {
        sqlx::query_as(sql::OWNED_ATTEMPTS).bind(agent).fetch_all(&self.pool()).await.map_err(db_err)
    }

    async fn attempt_task(&self, attempt_id: &str) -> Result<Option<TaskRef>> {
        let row = sqlx::query(sql::ATTEMPT_TASK).bind(attempt_id).fetch_optional(&self.pool()).await.map_err(db_err)?;
        row.as_ref().map(rows::task_ref).transpose()
    }

    async fn heartbeat(&self, attempt_id: &str, agent: &str, lease_until: Timestamp) -> Result<bool> {
        let r = sqlx::query(sql::HEARTBEAT)
            .bind(lease_until.0)
            .bind(attempt_id)
            .bind(agent)
            .execute(&self.pool())
            .await
            .map_err(db_err)?;
        Ok(r.rows_affected() == 1)
    }

    async fn extend_all_leases(&self, until: Timestamp) -> Result<u64> {
        let r = sqlx::query(sql::EXTEND_LEASES).bind(until.0).execute(&self.pool()).await.map_err(db_err)?;
        sqlx::query(sql::EXTEND_DEADLINES).bind(until.0).execute(&self.pool()).await.map_err(db_err)?;
        Ok(r.rows_affected())
    }

    async fn deployments_due(&self, now: Timestamp) -> Result<Vec<i64>> {
        sqlx::query_scalar(sql::DUE).bind(now.0).fetch_all(&self.pool()).await.map_err(db_err)
    }

    async fn pending_promotion_before(&self, pipeline: &str, stage: usize, below: i64) -> Result<Vec<i64>> {
        sqlx::query_scalar(sql::PENDING_PROMOTION_BEFORE)
            .bind(pipeline)
            .bind(stage as i64)
            .bind(below)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)
    }

    async fn last_completed(&self, pipeline: &str, below: i64, not_version: &str) -> Result<Option<DeploymentRecord>> {
        let row = sqlx::query(sql::deployment_last_completed())
            .bind(pipeline)
            .bind(below)
            .bind(not_version)
            .fetch_optional(&self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(rows::deployment).transpose()
    }

    async fn append_logs(&self, deployment_id: i64, lines: &[NewLog]) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.map_err(db_err)?;
        for l in lines {
            insert_log(&mut tx, deployment_id, l).await?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn logs(&self, deployment_id: i64, after: i64, limit: u32) -> Result<Vec<LogLine>> {
        let rows = sqlx::query(sql::LOGS)
            .bind(deployment_id)
            .bind(after)
            .bind(limit as i64)
            .fetch_all(&self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(rows::log_line).collect()
    }

    async fn events(&self, deployment_id: i64) -> Result<Vec<DeploymentEvent>> {
        let rows = sqlx::query(sql::EVENTS).bind(deployment_id).fetch_all(&self.pool()).await.map_err(db_err)?;
        rows.iter().map(rows::event).collect()
    }
}
