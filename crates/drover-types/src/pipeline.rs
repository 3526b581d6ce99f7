//! Pipeline specification: what `drover apply -f` reads and what `/api/v1/pipelines` carries.
//!
//! Tasks deserialize through a flat [`RawTask`] so that the YAML parser keeps line numbers in
//! its errors (an internally tagged enum would buffer the mapping and lose them).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub application: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Settings every stage sees (`${NAME}` in task fields, environment variables of `run`
    /// tasks and hooks); an environment's and a stage's own override them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    pub stages: Vec<StageSpec>,
}

impl PipelineSpec {
    pub fn name(&self) -> &str {
        self.pipeline.as_deref().unwrap_or(&self.application)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub environment: String,
    #[serde(default)]
    pub progression: Progression,
    /// How long a task for an agent may wait to be claimed before it fails (default 15m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_timeout: Option<DurationSpec>,
    /// Which agents of the environment run the stage's agent tasks (default `one`).
    #[serde(default, skip_serializing_if = "Targets::is_one")]
    pub targets: Targets,
    /// `rolling`: how many agents at a time (a number, or a percentage like `25%`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSize>,
    /// `all` and `rolling`: how many agents may fail before the stage stops (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failures: Option<u32>,
    /// `all` and `rolling`: only the environment's agents with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentSelector>,
    /// This stage's settings: they override the environment's and the pipeline's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub tasks: Vec<TaskSpec>,
}

/// Which agents of a stage's environment run its agent tasks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Targets {
    /// One agent of the environment (whichever claims it first).
    #[default]
    One,
    /// Every selected agent at once.
    All,
    /// Every selected agent, `batch` at a time.
    Rolling,
}

impl Targets {
    pub fn is_one(&self) -> bool {
        *self == Targets::One
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Targets::One => "one",
            Targets::All => "all",
            Targets::Rolling => "rolling",
        }
    }
}

/// A rolling stage's batch: a number of agents, or a percentage of the selected ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchSize {
    Agents(u32),
    Percent(u32),
}

impl BatchSize {
    /// Agents per batch out of `n` selected (at least 1; a percentage rounds up).
    pub fn of(&self, n: usize) -> usize {
        match *self {
            BatchSize::Agents(k) => (k as usize).max(1),
            BatchSize::Percent(p) => (n * p as usize).div_ceil(100).max(1),
        }
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BatchSize::Agents(n) => write!(f, "{n}"),
            BatchSize::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for BatchSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Agents(n) => s.serialize_u32(*n),
            BatchSize::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let bad = |what: &str| {
            serde::de::Error::custom(format!(
                "invalid batch {what}; write a number of agents (2) or a percentage (25%) above 0"
            ))
        };
        match Raw::deserialize(d)? {
            Raw::N(n) if (1..=100_000).contains(&n) => Ok(BatchSize::Agents(n as u32)),
            Raw::N(n) => Err(bad(&format!("\"{n}\""))),
            Raw::S(s) => {
                let t = s.trim();
                if let Some(p) = t.strip_suffix('%')
                    && let Ok(p) = p.trim().parse::<u32>()
                    && (1..=100).contains(&p)
                {
                    return Ok(BatchSize::Percent(p));
                }
                match t.parse::<u32>() {
                    Ok(n) if (1..=100_000).contains(&n) => Ok(BatchSize::Agents(n)),
                    _ => Err(bad(&format!("{s:?}"))),
                }
            }
        }
    }
}

/// Which of the environment's agents a fleet stage selects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSelector {
    /// Every one of these must be among the agent's labels, with this value.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl AgentSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A stage's dispatch timeout when it sets none.
pub const DEFAULT_DISPATCH_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// An agent's limits for tasks that set no `timeout` (the orchestrator enforces them too).
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_DEPLOY_TIMEOUT: Duration = Duration::from_secs(3600);

impl StageSpec {
    /// Does each agent task become one attempt per selected agent?
    pub fn is_fleet(&self) -> bool {
        self.targets != Targets::One
    }
    /// Agents per batch out of `n` selected: all of them unless `rolling`.
    pub fn batch_size(&self, n: usize) -> usize {
        match (self.targets, self.batch) {
            (Targets::Rolling, Some(b)) => b.of(n),
            (Targets::Rolling, None) => 1,
            _ => n.max(1),
        }
    }
    pub fn max_failures(&self) -> usize {
        self.max_failures.unwrap_or(0) as usize
    }
    pub fn dispatch_timeout(&self) -> Duration {
        self.dispatch_timeout.map(|d| d.0).unwrap_or(DEFAULT_DISPATCH_TIMEOUT)
    }
}

/// What an approval does when its `timeout` passes undecided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The approval is rejected: the deployment fails.
    Reject,
    /// The deployment is aborted.
    Abort,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Progression {
    #[default]
    Automatic,
    Manual,
}

/// A duration written `500ms`, `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSpec(pub Duration);

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(DurationSpec).map_err(|e| {
            serde::de::Error::custom(format!("invalid duration {s:?} ({e}); write it like 500ms, 30s, 5m or 1h"))
        })
    }
}

/// A `run` command: a string runs under `sh -c`, a list is executed as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CommandSpec {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", try_from = "RawTask")]
pub enum TaskSpec {
    /// Ship the deployment's artifact version to the stage's agent.
    Deploy {},
    Run {
        command: CommandSpec,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<DurationSpec>,
    },
    HttpCheck {
        url: String,
        expect_status: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<DurationSpec>,
    },
    Approval {
        /// Only holders of this role (on the deployment's application) decide it.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Distinct approvers needed (default 1).
        #[serde(skip_serializing_if = "Option::is_none")]
        approvals: Option<u32>,
        /// May the deployment's starter approve it? Default: no for `production` environments,
        /// yes elsewhere (fixed when the deployment starts).
        #[serde(skip_serializing_if = "Option::is_none")]
        allow_self_approval: Option<bool>,
        /// Undecided for this long: `on_timeout` happens.
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<DurationSpec>,
        /// Default `reject`.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_timeout: Option<OnTimeout>,
    },
    Wait {
        duration: DurationSpec,
    },
    /// An HTTP call made by the orchestrator itself (trigger a Jenkins job, notify a system),
    /// authenticated with an authentication profile.
    Webhook {
        url: String,
        /// Default POST.
        #[serde(skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        auth_profile: Option<String>,
        /// Default: any 2xx.
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_status: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout: Option<DurationSpec>,
    },
}

impl TaskSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            TaskSpec::Deploy {} => "deploy",
            TaskSpec::Run { .. } => "run",
            TaskSpec::HttpCheck { .. } => "http-check",
            TaskSpec::Approval { .. } => "approval",
            TaskSpec::Wait { .. } => "wait",
            TaskSpec::Webhook { .. } => "webhook",
        }
    }
    /// Tasks that an agent executes (the others are handled by the orchestrator itself).
    pub fn runs_on_agent(&self) -> bool {
        matches!(self, TaskSpec::Deploy {} | TaskSpec::Run { .. } | TaskSpec::HttpCheck { .. })
    }
    /// How long an agent lets this task run (its `timeout`, or the default of its type).
    pub fn agent_timeout(&self) -> Option<Duration> {
        match self {
            TaskSpec::Deploy {} => Some(DEFAULT_DEPLOY_TIMEOUT),
            TaskSpec::Run { timeout, .. } => Some(timeout.map(|t| t.0).unwrap_or(DEFAULT_RUN_TIMEOUT)),
            TaskSpec::HttpCheck { timeout, .. } => Some(timeout.map(|t| t.0).unwrap_or(DEFAULT_CHECK_TIMEOUT)),
            _ => None,
        }
    }
}

/// Most distinct approvers an approval task may ask for.
pub const MAX_APPROVALS: u32 = 10;

/// Every key any task type accepts; [`TaskSpec`] checks which belong to the given type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    #[serde(rename = "type")]
    kind: String,
    command: Option<CommandSpec>,
    timeout: Option<DurationSpec>,
    url: Option<String>,
    expect_status: Option<u16>,
    role: Option<String>,
    duration: Option<DurationSpec>,
    approvals: Option<u32>,
    allow_self_approval: Option<bool>,
    method: Option<String>,
    auth_profile: Option<String>,
    body: Option<String>,
    on_timeout: Option<OnTimeout>,
}

impl TryFrom<RawTask> for TaskSpec {
    type Error = String;

    fn try_from(r: RawTask) -> Result<Self, String> {
        let present: Vec<(&str, bool)> = vec![
            ("command", r.command.is_some()),
            ("timeout", r.timeout.is_some()),
            ("url", r.url.is_some()),
            ("expect_status", r.expect_status.is_some()),
            ("role", r.role.is_some()),
            ("duration", r.duration.is_some()),
            ("approvals", r.approvals.is_some()),
            ("allow_self_approval", r.allow_self_approval.is_some()),
            ("method", r.method.is_some()),
            ("auth_profile", r.auth_profile.is_some()),
            ("body", r.body.is_some()),
            ("on_timeout", r.on_timeout.is_some()),
        ];
        let allowed: &[&str] = match r.kind.as_str() {
            "deploy" => &[],
            "run" => &["command", "timeout"],
            "http-check" => &["url", "expect_status", "timeout"],
            "approval" => &["role", "approvals", "allow_self_approval", "timeout", "on_timeout"],
            "wait" => &["duration"],
            "webhook" => &["url", "method", "auth_profile", "expect_status", "body", "timeout"],
            other => {
                return Err(format!(
                    "unknown task type `{other}`, expected one of `deploy`, `run`, `http-check`, `approval`, `wait`, `webhook`"
                ));
            }
        };
        if let Some((k, _)) = present.iter().find(|(k, p)| *p && !allowed.contains(k)) {
            return Err(format!("field `{k}` is not valid for a `{}` task", r.kind));
        }
        let missing = |f: &str| format!("missing field `{f}` for a `{}` task", r.kind);
        Ok(match r.kind.as_str() {
            "deploy" => TaskSpec::Deploy {},
            "run" => {
                let command = r.command.ok_or_else(|| missing("command"))?;
                let empty = match &command {
                    CommandSpec::Shell(s) => s.trim().is_empty(),
                    CommandSpec::Exec(v) => v.is_empty(),
                };
                if empty {
                    return Err("field `command` must not be empty".into());
                }
                TaskSpec::Run { command, timeout: r.timeout }
            }
            "http-check" => {
                let url = r.url.ok_or_else(|| missing("url"))?;
                // A check's whole base URL may be a variable (checked again once substituted).
                if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with("${")) {
                    return Err(format!("field `url` must be an http:// or https:// URL, got {url:?}"));
                }
                TaskSpec::HttpCheck { url, expect_status: r.expect_status.unwrap_or(200), timeout: r.timeout }
            }
            "approval" => {
                if let Some(n) = r.approvals
                    && !(1..=MAX_APPROVALS).contains(&n)
                {
                    return Err(format!("field `approvals` must be between 1 and {MAX_APPROVALS}, got {n}"));
                }
                if r.on_timeout.is_some() && r.timeout.is_none() {
                    return Err("field `on_timeout` needs a `timeout`".into());
                }
                TaskSpec::Approval {
                    role: r.role,
                    approvals: r.approvals,
                    allow_self_approval: r.allow_self_approval,
                    timeout: r.timeout,
                    on_timeout: r.on_timeout,
                }
            }
            "wait" => TaskSpec::Wait { duration: r.duration.ok_or_else(|| missing("duration"))? },
            "webhook" => {
                let url = r.url.ok_or_else(|| missing("url"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("field `url` must be an http:// or https:// URL, got {url:?}"));
                }
                if let Some(m) = &r.method
                    && !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.to_ascii_uppercase().as_str())
                {
                    return Err(format!("field `method` must be GET, POST, PUT, PATCH or DELETE, got {m:?}"));
                }
                TaskSpec::Webhook {
                    url,
                    method: r.method.map(|m| m.to_ascii_uppercase()),
                    auth_profile: r.auth_profile,
                    expect_status: r.expect_status,
                    body: r.body,
                    timeout: r.timeout,
                }
            }
            _ => unreachable!("checked above"),
        })
    }
}
