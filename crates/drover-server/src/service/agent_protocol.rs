//! The agent protocol (`agent.work`, agents only): poll for work, report events and results of
//! the attempts the agent owns, and download the artifacts of those attempts — nothing else.

use std::time::Duration;

use drover_core::machine::ResultStatus;
use drover_core::rbac::{Principal, PrincipalKind, Privilege};
use drover_core::{Error, Result};
use drover_types::TaskSpec;
use drover_types::Timestamp;
use drover_types::agent::{AttemptEvents, AttemptResult, PollRequest, PollResponse};

use super::Ctx;

/// The calling agent's name.
fn agent(c: &Ctx<'_>) -> Result<String> {
    c.require(Privilege::AgentWork)?;
    match c.caller {
        Principal { kind: PrincipalKind::Agent, name, .. } => Ok(name.clone()),
        _ => Err(Error::Forbidden("the agent protocol is for agents".into())),
    }
}

/// An isolation an agent may report.
fn valid_isolation(i: &str) -> bool {
    matches!(i, "none" | "task-user")
}

/// How long a pending agent's poll is held before its empty answer (it polls again then).
const PENDING_HOLD: Duration = Duration::from_secs(5);

pub async fn poll(c: &Ctx<'_>, req: PollRequest) -> Result<PollResponse> {
    let name = agent(c)?;
    let s = c.state;
    let a =
        s.store.get_agent(&name).await?.ok_or_else(|| Error::Forbidden(format!("agent {name} is not registered")))?;
    // Written when it changes (an upgrade, task users given), at most once a minute per agent.
    let version = req.agent_version.as_deref().or(a.version.as_deref());
    let isolation = req.isolation.as_deref().or(a.isolation.as_deref());
    if version != a.version.as_deref() || isolation != a.isolation.as_deref() {
        if version.is_some_and(|v| !super::agents::valid_version(v)) {
            return Err(Error::BadRequest(
                "agent_version: at most 64 characters of letters, digits and . + _ -".into(),
            ));
        }
        if isolation.is_some_and(|i| !valid_isolation(i)) {
            return Err(Error::BadRequest("isolation: task-user or none".into()));
        }
        if s.auth.version_write_due(&name) {
            s.store.set_agent_reported(&name, version, isolation).await?;
            tracing::info!(agent = %name, version, isolation, "agent reported its version and isolation");
        }
    }
    let heartbeat_interval_ms = s.engine.heartbeat_interval().as_millis() as u64;
    if !crate::engine::agent_gets_work(&a, &*s.variables.snapshot().await?) {
        // Seen (online, for whoever approves it), handed nothing.
        tokio::time::sleep(Duration::from_millis(req.wait_ms).min(PENDING_HOLD)).await;
        return Ok(PollResponse { tasks: vec![], heartbeat_interval_ms });
    }
    let tasks = s
        .engine
        .poll(&a.name, &a.environment, &req.running, req.capacity.min(64), Duration::from_millis(req.wait_ms))
        .await?;
    Ok(PollResponse { tasks, heartbeat_interval_ms })
}

/// A heartbeat with log lines; false when the attempt should stop.
pub async fn events(c: &Ctx<'_>, attempt: &str, ev: AttemptEvents) -> Result<bool> {
    let name = agent(c)?;
    let now = Timestamp::now();
    let logs: Vec<_> = ev.logs.into_iter().map(|l| (now, l.stream, l.line)).collect();
    c.state.engine.attempt_events(&name, attempt, &logs).await
}

pub async fn result(c: &Ctx<'_>, attempt: &str, r: AttemptResult) -> Result<&'static str> {
    let name = agent(c)?;
    Ok(match c.state.engine.attempt_result(&name, attempt, r).await? {
        ResultStatus::Recorded => "recorded",
        ResultStatus::Duplicate => "duplicate",
        ResultStatus::Stale => "stale",
    })
}

/// The content of an artifact that a `deploy` attempt this agent owns needs; any other
/// content "does not exist" for the agent.
pub async fn artifact(c: &Ctx<'_>, sha256: &str) -> Result<(tokio::fs::File, u64)> {
    let name = agent(c)?;
    let s = c.state;
    let not_found = || Error::NotFound("artifact content not found".into());
    for (dep, attempt) in s.store.owned_attempts(&name).await? {
        let Some(st) = s.store.load_deployment(dep).await? else { continue };
        let deploys = st
            .tasks
            .iter()
            .any(|t| t.attempt_id.as_deref() == Some(attempt.as_str()) && matches!(t.spec, TaskSpec::Deploy {}));
        if !deploys {
            continue;
        }
        if let Some(a) = s.store.get_artifact(&st.deployment.application, &st.deployment.version).await?
            && a.sha256 == sha256
        {
            return super::artifacts::open(c, sha256).await;
        }
    }
    tracing::warn!(agent = %name, sha256, "artifact download refused: no attempt of this agent needs it");
    Err(not_found())
}
