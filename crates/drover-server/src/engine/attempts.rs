//! The agent side of the engine: long polls, claims, heartbeats with log lines, results.
//! Claims and results for one deployment that arrive together are applied in one commit
//! ([`super::batch`]): a fleet stage's agents all claim at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use drover_core::machine::{self, ResultStatus};
use drover_core::model::DeploymentState;
use drover_core::store::NewLog;
use drover_core::{Error, Result};
use drover_types::agent::{ArtifactRef, Assignment, AttemptResult, Outcome};
use drover_types::{TaskSpec, Timestamp};

use super::batch::{Done, Op};
use super::{Engine, MAX_POLL_WAIT};

impl Engine {
    /// An agent's long poll: re-delivers attempts it owns but did not list as running, else
    /// claims up to `capacity` ready tasks of its environment, waiting up to `wait`.
    pub async fn poll(
        &self,
        agent: &str,
        environment: &str,
        running: &[String],
        capacity: u32,
        wait: Duration,
    ) -> Result<Vec<Assignment>> {
        let mut out = Vec::new();
        for (dep, attempt) in self.store.owned_attempts(agent).await? {
            if !running.contains(&attempt)
                && let Some(st) = self.store.load_deployment(dep).await?
                && let Some(a) = self.assignment(&st, &attempt).await?
            {
                tracing::info!(agent, attempt, "re-delivering an attempt the agent did not report");
                out.push(a);
            }
        }
        if !out.is_empty() || capacity == 0 {
            return Ok(out);
        }
        let deadline = tokio::time::Instant::now() + wait.min(MAX_POLL_WAIT);
        self.polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _waiting = Waiting(&self.polls);
        *self.polling.lock().expect("poisoned").entry(agent.to_string()).or_default() += 1;
        struct Polling<'a>(&'a Mutex<HashMap<String, usize>>, &'a str);
        impl Drop for Polling<'_> {
            fn drop(&mut self) {
                let mut m = self.0.lock().expect("poisoned");
                if let Some(n) = m.get_mut(self.1) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(self.1);
                    }
                }
            }
        }
        let _polling = Polling(&self.polling, agent);
        if self.draining() {
            return Ok(self.held(deadline).await);
        }
        let notify = self.waker(environment);
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.draining() {
                return Ok(self.held(deadline).await);
            }
            let got = self.claim(agent, environment, capacity).await?;
            if !got.is_empty() {
                // Removed or disabled between the check in `claim` and its claims: those cut
                // the agent off first, so what it just claimed would be nobody's.
                if !self.may_claim(agent).await? {
                    self.cut_off_agent(agent, "the agent was removed or disabled while it polled").await?;
                    return Err(gone(agent));
                }
                return Ok(got);
            }
            tokio::select! {
                _ = &mut notified => continue,
                _ = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
            }
        }
    }

    /// A poll on a draining node: held until its deadline or the end of the drain (the agent
    /// would ask again at once), handing out nothing.
    async fn held(&self, deadline: tokio::time::Instant) -> Vec<Assignment> {
        let resumed = self.resumed.notified();
        tokio::pin!(resumed);
        resumed.as_mut().enable();
        if self.draining() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = &mut resumed => {}
            }
        }
        Vec::new()
    }

    /// Whether the agent may still take work: its client exists, is its own and is enabled. A
    /// poll can be held for many seconds: the agent may have been removed or disabled since its
    /// token was checked.
    async fn may_claim(&self, agent: &str) -> Result<bool> {
        Ok(self
            .store
            .get_client(agent)
            .await?
            .is_some_and(|c| !c.disabled && c.metadata.agent.as_deref() == Some(agent)))
    }

    async fn claim(&self, agent: &str, environment: &str, capacity: u32) -> Result<Vec<Assignment>> {
        let mut out = Vec::new();
        let ready = self.store.claimable_tasks(environment, agent, capacity.saturating_mul(2)).await?;
        if ready.is_empty() {
            return Ok(out);
        }
        if !self.may_claim(agent).await? {
            return Err(gone(agent));
        }
        for r in ready {
            if out.len() as u32 >= capacity {
                break;
            }
            let attempt_id = hex::encode(rand::random::<[u8; 16]>());
            let op = Op::Claim {
                stage: r.stage,
                task: r.task,
                target: r.target,
                agent: agent.to_string(),
                attempt_id: attempt_id.clone(),
            };
            match self.apply_op(r.deployment_id, op).await {
                Ok(Done::Claimed(a)) => out.extend(a.map(|a| *a)),
                Ok(Done::Recorded(_)) => {}
                Err(Error::InvalidState(_)) | Err(Error::NotFound(_)) | Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub(super) async fn assignment(&self, st: &DeploymentState, attempt_id: &str) -> Result<Option<Assignment>> {
        let Some(t) = st.tasks.iter().find(|t| t.attempt_id.as_deref() == Some(attempt_id)) else {
            return Ok(None);
        };
        let d = &st.deployment;
        let resolved = match self.resolve_task(st, t).await {
            Ok(r) => r,
            Err(Error::Invalid(why)) => {
                // A variable went away (or cannot be opened) since the deployment started: the
                // attempt fails with the reason instead of running with a hole in it.
                tracing::warn!(deployment = d.id, attempt = attempt_id, reason = %why, "attempt failed: its variables");
                let now = Timestamp::now();
                self.mutate(d.id, "system", |st, _| {
                    machine::record_result(st, attempt_id, Outcome::Failed, None, Some(why.clone()), now).map(|_| ())
                })
                .await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        // The variables' names only (their Debug): values may be secret.
        tracing::debug!(deployment = d.id, attempt = attempt_id, task = t.spec.kind(), variables = ?resolved.variables, secret = ?resolved.secret, "attempt handed out");
        let artifact = if matches!(t.spec, TaskSpec::Deploy {}) {
            self.store
                .get_artifact(&d.application, &d.version)
                .await?
                .map(|a| ArtifactRef { sha256: a.sha256, size: a.size })
        } else {
            None
        };
        Ok(Some(Assignment {
            attempt_id: attempt_id.to_string(),
            deployment_id: d.id,
            stage_index: t.stage_index,
            stage: d.spec.stages.get(t.stage_index).map(|s| s.name.clone()).unwrap_or_default(),
            task_index: t.task_index,
            application: d.application.clone(),
            version: d.version.clone(),
            environment: t.environment.clone(),
            spec: resolved.spec,
            artifact,
            started_by: d.created_by.clone(),
            variables: resolved.variables,
            secret: resolved.secret,
        }))
    }

    /// An agent's credentials stopped working: its in-flight attempts end in `error` now, with
    /// the reason, instead of waiting for their leases to run out.
    pub async fn cut_off_agent(&self, agent: &str, why: &str) -> Result<usize> {
        let mut n = 0;
        let mut seen = std::collections::HashSet::new();
        for (dep, _) in self.store.owned_attempts(agent).await? {
            if !seen.insert(dep) {
                continue;
            }
            n += self
                .mutate(dep, "system", |st, _| Ok(machine::fail_agent_attempts(st, agent, why, Timestamp::now())))
                .await?
                .1;
        }
        if n > 0 {
            tracing::warn!(agent, attempts = n, reason = why, "agent cut off: its running attempts failed");
        }
        Ok(n)
    }

    /// A heartbeat with log lines; returns false when the attempt should stop.
    pub async fn attempt_events(
        &self,
        agent: &str,
        attempt_id: &str,
        logs: &[(Timestamp, String, String)],
    ) -> Result<bool> {
        let Some(r) = self.store.attempt_task(attempt_id).await? else {
            return Ok(false);
        };
        let alive = self.store.heartbeat(attempt_id, agent, Timestamp::now().plus(self.lease)).await?;
        if alive && !logs.is_empty() {
            let snap = self.snapshot().await?;
            let lines: Vec<NewLog> = logs
                .iter()
                .map(|(ts, stream, line)| NewLog {
                    stage: r.stage,
                    task: r.task,
                    agent: r.target.clone(),
                    ts: *ts,
                    stream: stream.clone(),
                    line: snap.masker(&r.environment).mask(line).into_owned(),
                })
                .collect();
            self.store.append_logs(r.deployment_id, &lines).await?;
            let _ = self.changes.send(r.deployment_id);
        }
        Ok(alive)
    }

    /// Records an attempt's result (idempotent per attempt).
    pub async fn attempt_result(&self, agent: &str, attempt_id: &str, result: AttemptResult) -> Result<ResultStatus> {
        let Some(r) = self.store.attempt_task(attempt_id).await? else {
            return Ok(ResultStatus::Stale);
        };
        let op = Op::Result {
            agent: agent.to_string(),
            attempt_id: attempt_id.to_string(),
            stage: r.stage,
            task: r.task,
            result,
        };
        match self.apply_op(r.deployment_id, op).await? {
            Done::Recorded(status) => Ok(status),
            Done::Claimed(_) => Err(Error::Store("a result was answered as a claim".into())),
        }
    }
}

/// What a poll of an agent removed or disabled while it was held answers.
fn gone(agent: &str) -> Error {
    Error::Forbidden(format!("agent {agent} was removed or disabled"))
}
