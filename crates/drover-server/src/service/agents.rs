//! Agents: global objects (`agent.read`, `agent.manage`). Registering an agent is the only way
//! to give a client the `agent` role.
//!
//! An agent receives its environment's artifacts and secret variables, so the grant ceiling
//! reaches agents too: registering one, or changing its labels (which choose what a fleet stage
//! hands it), in an environment that holds secret variables needs `variable.manage` besides
//! `agent.manage` ([`may_place`]). And an agent new to an environment that `[agents] approval`
//! covers (production by default) is pending — its polls get no work — until a holder of
//! `variable.manage` approves it; one registered by such a holder is approved at once. And an
//! agent neither registered nor approved by such a holder gets no work in an environment that
//! holds secret variables, also when the secrets come after it (`engine::agent_gets_work`).

use std::collections::BTreeMap;
use std::time::Duration;

use drover_core::rbac::{AGENT_ROLE, Privilege};
use drover_core::store::{AgentRecord, ClientMetadata, ClientRecord};
use drover_core::{Error, Result, validate_name};
use drover_types::{Agent, AgentCredentials, AgentStatus, Environment, EnvironmentKind, NewAgent, Timestamp};
use serde::Deserialize;

use super::Ctx;
use super::clients::check_jwks;
use super::environments::kind_of;
use crate::secrets::{new_secret, secret_hash};

/// Seen within twice the heartbeat timeout (at least 30 s).
pub(crate) fn is_online(c: &Ctx<'_>, a: &AgentRecord) -> bool {
    let online_window = (c.state.engine.lease * 2).max(Duration::from_secs(30)).as_millis() as i64;
    a.last_seen_at.is_some_and(|t| Timestamp::now().0 - t.0 <= online_window)
}

fn view(c: &Ctx<'_>, snap: &crate::variables::Snapshot, a: AgentRecord) -> Agent {
    let online = is_online(c, &a);
    let pending = !crate::engine::agent_gets_work(&a, snap);
    Agent {
        name: a.name,
        environment: a.environment,
        created_at: a.created_at,
        last_seen_at: a.last_seen_at,
        online,
        labels: a.labels,
        version: a.version,
        status: if pending { AgentStatus::Pending } else { AgentStatus::Approved },
        isolation: a.isolation,
    }
}

/// Which environments' new agents wait for approval (`[agents] approval`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Environments of kind production (the default).
    #[default]
    Production,
    All,
    None,
}

/// `[agents]` in `drover.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    #[serde(default)]
    pub approval: Approval,
}

impl Approval {
    fn covers(self, kind: EnvironmentKind) -> bool {
        match self {
            Approval::Production => kind == EnvironmentKind::Production,
            Approval::All => true,
            Approval::None => false,
        }
    }
}

/// May the caller put an agent in `environment` (register it there, or change what it is
/// handed)? `agent.manage`, and `variable.manage` too when the environment holds secret
/// variables: the agent will receive them.
pub(super) async fn may_place(c: &Ctx<'_>, environment: &str, doing: &str) -> Result<()> {
    c.require(Privilege::AgentManage)?;
    let snap = c.state.variables.snapshot().await?;
    let secret = snap.of(environment).values().any(|v| matches!(v, crate::variables::Value::Secret(_)));
    if secret && !c.caller.holds_globally(Privilege::VariableManage) {
        tracing::warn!(principal = %c.label(), environment, "agent placement refused: the environment holds secrets");
        return Err(Error::Forbidden(format!(
            "environment {environment} holds secret variables, which its agents receive: {doing} an agent there needs variable.manage as well as agent.manage"
        )));
    }
    Ok(())
}

/// Does an agent new to `environment`, placed by the caller, wait for approval?
async fn needs_approval(c: &Ctx<'_>, environment: &str) -> Result<bool> {
    if c.caller.holds_globally(Privilege::VariableManage) {
        return Ok(false);
    }
    let kind = match c.state.store.get_environment(environment).await? {
        Some(e) => e.kind,
        None => kind_of(environment),
    };
    Ok(c.state.agents.approval.covers(kind))
}

/// Approves a pending agent: from now on its polls get work (`variable.manage`: an agent
/// receives its environment's secrets). Approving an approved agent changes nothing.
pub async fn approve(c: &Ctx<'_>, name: &str) -> Result<Agent> {
    c.require(Privilege::VariableManage)?;
    let a = c.state.store.get_agent(name).await?.ok_or_else(|| Error::NotFound(format!("agent {name} not found")))?;
    if a.pending || !a.vetted {
        if !c.state.store.approve_agent(name).await? {
            return Err(Error::NotFound(format!("agent {name} not found")));
        }
        tracing::info!(agent = %name, environment = %a.environment, by = %c.label(), "agent approved");
    }
    one(c, name).await
}

/// An agent as the API shows it.
async fn one(c: &Ctx<'_>, name: &str) -> Result<Agent> {
    let a = c.state.store.get_agent(name).await?.ok_or_else(|| Error::NotFound(format!("agent {name} not found")))?;
    Ok(view(c, &*c.state.variables.snapshot().await?, a))
}

/// An agent's version as it reports it: at most 64 characters of `[0-9A-Za-z.+_-]` (what
/// Cargo and SemVer allow), so it can be shown anywhere as it is.
pub(crate) fn valid_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
}

/// Most labels an agent may have.
pub const MAX_LABELS: usize = 32;

/// Label keys are names (`region`, `example.com/tier`); values are short printable text.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::BadRequest(format!("at most {MAX_LABELS} labels, got {}", labels.len())));
    }
    for (k, v) in labels {
        let key_ok = (1..=63).contains(&k.len())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
        if !key_ok {
            return Err(Error::BadRequest(format!(
                "label key {k:?} must be 1 to 63 letters, digits, '.', '_', '-' or '/'"
            )));
        }
        if v.len() > 253 || v.chars().any(|c| c.is_control()) {
            return Err(Error::BadRequest(format!("label {k}: the value must be at most 253 printable characters")));
        }
    }
    Ok(())
}

/// Replaces an agent's labels (`agent.manage`). Fleet stages that have started keep the agents
/// they chose.
pub async fn set_labels(c: &Ctx<'_>, name: &str, labels: BTreeMap<String, String>) -> Result<Agent> {
    c.require(Privilege::AgentManage)?;
    validate_labels(&labels)?;
    let a = c.state.store.get_agent(name).await?.ok_or_else(|| Error::NotFound(format!("agent {name} not found")))?;
    may_place(c, &a.environment, "relabelling").await?;
    if !c.state.store.set_agent_labels(name, &labels).await? {
        return Err(Error::NotFound(format!("agent {name} not found")));
    }
    tracing::info!(agent = %name, by = %c.label(), "agent labels set");
    // The agent as changed, for whoever may change it (agent.manage without agent.read too).
    one(c, name).await
}

/// `agent.read` or `system.observe` (the SysOps view of the same list).
pub async fn list(c: &Ctx<'_>) -> Result<Vec<Agent>> {
    if !c.caller.holds_globally(Privilege::SystemObserve) {
        c.require(Privilege::AgentRead)?;
    }
    let snap = c.state.variables.snapshot().await?;
    Ok(c.state.store.list_agents().await?.into_iter().map(|a| view(c, &snap, a)).collect())
}

/// Deployments that have not ended a "what runs where" looks at, at most (the newest).
const RUNNING_SCAN: u32 = 200;

/// What each agent runs now: one line per task in progress on it (fleet stages: per agent), in
/// the newest deployments in progress or rolling back. A deployment of an application the
/// caller cannot read shows as "a task of another application".
pub async fn running(c: &Ctx<'_>) -> Result<BTreeMap<String, Vec<String>>> {
    if !c.caller.holds_globally(Privilege::SystemObserve) {
        c.require(Privilege::AgentRead)?;
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for status in [drover_types::DeploymentStatus::InProgress, drover_types::DeploymentStatus::RollingBack] {
        let f = drover_core::store::DeploymentFilter {
            status: Some(status),
            limit: Some(RUNNING_SCAN),
            ..Default::default()
        };
        for d in c.state.store.list_deployments(&f).await? {
            let Some(st) = c.state.store.load_deployment(d.id).await? else { continue };
            let v = st.to_view();
            let readable = c.sees(Privilege::PipelineRead, &v.application);
            for stage in &v.stages {
                for t in &stage.tasks {
                    let runs = std::iter::once(t).chain(t.targets.iter());
                    for r in runs.filter(|r| r.status == drover_types::TaskStatus::InProgress) {
                        let Some(agent) = &r.agent else { continue };
                        let what = if readable {
                            format!(
                                "deployment {} ({} {}): stage {} task {} ({})",
                                v.id,
                                v.pipeline,
                                v.version,
                                stage.name,
                                t.index + 1,
                                t.kind
                            )
                        } else {
                            "a task of another application".to_string()
                        };
                        out.entry(agent.clone()).or_default().push(what);
                    }
                }
            }
        }
    }
    Ok(out)
}

pub async fn get(c: &Ctx<'_>, name: &str) -> Result<Agent> {
    c.require(Privilege::AgentRead)?;
    one(c, name).await
}

pub async fn create(c: &Ctx<'_>, a: NewAgent) -> Result<AgentCredentials> {
    c.require(Privilege::AgentManage)?;
    let s = c.state;
    validate_name("agent", &a.name)?;
    validate_name("environment", &a.environment)?;
    validate_labels(&a.labels)?;
    may_place(c, &a.environment, "registering").await?;
    let pending = needs_approval(c, &a.environment).await?;
    let vetted = c.caller.holds_globally(Privilege::VariableManage);
    if s.store.get_operator(&a.name).await?.is_some() {
        return Err(Error::Conflict(format!("{} is an operator's name; agents need names of their own", a.name)));
    }
    if s.store.get_client(&a.name).await?.is_some() || s.store.get_agent(&a.name).await?.is_some() {
        return Err(Error::Conflict(format!("{} is taken by a client or agent already", a.name)));
    }
    if let Some(j) = &a.jwks {
        check_jwks(j)?;
    }
    let now = Timestamp::now();
    if s.store.get_environment(&a.environment).await?.is_none() {
        c.require(Privilege::EnvironmentManage).map_err(|_| {
            Error::Forbidden(format!(
                "environment {} does not exist; creating it needs environment.manage",
                a.environment
            ))
        })?;
        let env = Environment {
            name: a.environment.clone(),
            kind: kind_of(&a.environment),
            labels: Default::default(),
            applications: vec![],
            created_at: now,
        };
        s.store.insert_environment(&env).await?;
    }
    // The agent is an OAuth 2.0 client (id = its name, role `agent`) that gets tokens with its
    // secret (client credentials) or its key (private_key_jwt).
    let secret = if a.jwks.is_some() { String::new() } else { new_secret() };
    let hash = if secret.is_empty() { String::new() } else { secret_hash(&secret) };
    s.store
        .insert_client(&ClientRecord {
            client_id: a.name.clone(),
            secret_hash: hash.clone(),
            roles: vec![AGENT_ROLE.into()],
            created_at: now,
            metadata: ClientMetadata { agent: Some(a.name.clone()), jwks: a.jwks.clone(), ..Default::default() },
            ..Default::default()
        })
        .await?;
    let record = AgentRecord {
        name: a.name.clone(),
        environment: a.environment.clone(),
        secret_hash: hash,
        created_at: now,
        last_seen_at: None,
        labels: a.labels.clone(),
        version: None,
        isolation: None,
        pending,
        vetted,
    };
    if let Err(e) = s.store.insert_agent(&record).await {
        let _ = s.store.delete_client(&a.name).await;
        return Err(e);
    }
    tracing::info!(agent = %a.name, environment = %a.environment, pending, by = %c.label(), "agent registered");
    let status = if pending { AgentStatus::Pending } else { AgentStatus::Approved };
    Ok(AgentCredentials { name: a.name, environment: a.environment, secret, status })
}

pub async fn delete(c: &Ctx<'_>, name: &str) -> Result<()> {
    c.require(Privilege::AgentManage)?;
    let s = c.state;
    if let Some(client) = s.store.get_client(name).await?
        && client.metadata.agent.as_deref() == Some(name)
    {
        s.store.delete_client(name).await?;
        s.engine.cut_off_agent(name, "the agent was removed").await?;
    }
    if s.store.delete_agent(name).await? {
        tracing::info!(agent = %name, by = %c.label(), "agent removed");
        Ok(())
    } else {
        Err(Error::NotFound(format!("agent {name} not found")))
    }
}
