//! Wire types of Drover: everything that crosses HTTP between the orchestrator, agents, the CLI
//! and other clients. Only this crate is serialized on the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod agent;
pub mod audit;
pub mod error;
pub mod pipeline;
pub mod report;
pub mod waiting;

pub use error::ErrorCode;
pub use pipeline::{
    AgentSelector, BatchSize, CommandSpec, DurationSpec, OnTimeout, PipelineSpec, Progression, StageSpec, Targets,
    TaskSpec,
};
pub use waiting::{AgentAvailability, AgentSeen, WaitReason, WaitingFor};

/// Milliseconds since the Unix epoch; serialized as RFC 3339 (UTC, millisecond precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn now() -> Self {
        let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(d.as_millis() as i64)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as i64))
    }
    fn system_time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_rfc3339_millis(self.system_time()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let t = humantime::parse_rfc3339(&s).map_err(serde::de::Error::custom)?;
        let ms = t.duration_since(UNIX_EPOCH).map_err(serde::de::Error::custom)?.as_millis();
        Ok(Timestamp(ms as i64))
    }
}

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $s)] $variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),+ } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some($name::$variant),)+ _ => None } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

string_enum!(
    /// Status of a deployment (DESIGN §3).
    DeploymentStatus {
        Queued => "queued",
        InProgress => "in_progress",
        Paused => "paused",
        PendingInput => "pending_input",
        PendingPromotion => "pending_promotion",
        Error => "error",
        RollingBack => "rolling_back",
        Completed => "completed",
        Aborted => "aborted",
        Failed => "failed",
    }
);

impl DeploymentStatus {
    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Aborted | Self::Failed)
    }
}

string_enum!(
    /// Status of one task of a deployment. `pending` means "not reached yet".
    TaskStatus {
        Pending => "pending",
        Ready => "ready",
        InProgress => "in_progress",
        PendingInput => "pending_input",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        Rejected => "rejected",
        Aborted => "aborted",
    }
);

impl TaskStatus {
    /// Done in the sense that the stage may move past it.
    pub fn is_passed(self) -> bool {
        matches!(self, Self::Completed | Self::Skipped)
    }
}

string_enum!(
    /// Kind of a candidate environment.
    EnvironmentKind {
        Dev => "dev",
        Qa => "qa",
        Staging => "staging",
        Production => "production",
        Custom => "custom",
    }
);

string_enum!(
    /// Actions an operator can take on a deployment.
    Action {
        Abort => "abort",
        Pause => "pause",
        Resume => "resume",
        Retry => "retry",
        Skip => "skip",
        Approve => "approve",
        Reject => "reject",
        Promote => "promote",
        Rollback => "rollback",
    }
);

/// Error body of every `/api/v1` failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: ApiError,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable code (see `docs/api.md`).
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub name: String,
    pub kind: EnvironmentKind,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The applications whose pipelines may target this environment; empty: any.
    #[serde(default)]
    pub applications: Vec<String>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewEnvironment {
    pub name: String,
    #[serde(default)]
    pub kind: Option<EnvironmentKind>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only these applications' pipelines may target it; empty: any.
    #[serde(default)]
    pub applications: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Agent {
    pub name: String,
    pub environment: String,
    pub created_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    /// `online` when the agent was seen within the heartbeat timeout.
    pub online: bool,
    /// Set by administrators; fleet stages select agents by them (`agents: {labels: ...}`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The version of `drover agent` it reported at its last poll; none before its first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `pending` until approved (its polls get no work); `approved` otherwise.
    #[serde(default)]
    pub status: AgentStatus,
    /// How the agent keeps its tasks from itself, as it reported at its last poll: `task-user`
    /// (tasks run as other uids) or `none` (as the agent's own user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

/// Whether an agent gets work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    #[default]
    Approved,
    /// Waits for a holder of `variable.manage` to approve it (`drover agents approve`).
    Pending,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Approved => "approved",
            AgentStatus::Pending => "pending",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAgent {
    pub name: String,
    pub environment: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Public keys (a JWKS) for `private_key_jwt`: the agent then gets no secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
}

/// Returned once, when an agent is registered: the secret is not stored in clear. Its `Debug`
/// does not show the secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentCredentials {
    pub name: String,
    pub environment: String,
    /// The agent's client secret (its OAuth 2.0 client id is its name); empty for agents that
    /// authenticate with a key.
    #[serde(default)]
    pub secret: String,
    /// `pending` when the agent waits for approval before it gets work.
    #[serde(default)]
    pub status: AgentStatus,
}

impl std::fmt::Debug for AgentCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCredentials")
            .field("name", &self.name)
            .field("environment", &self.environment)
            .field("secret", &"***")
            .field("status", &self.status)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Artifact {
    pub application: String,
    pub version: String,
    pub sha256: String,
    pub size: u64,
    pub created_at: Timestamp,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pipeline {
    pub name: String,
    pub application: String,
    /// The pipeline's own variables (`variables:` at its top level).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variables: std::collections::BTreeMap<String, String>,
    pub stages: Vec<StageSpec>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Result of `POST /pipelines` / `PUT /pipelines/{name}` / `drover apply`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResult {
    pub pipeline: Pipeline,
    /// `created`, `updated` or `unchanged`.
    pub outcome: String,
    /// Environments that were created because a stage named them.
    pub created_environments: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewDeployment {
    pub pipeline: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Approve or reject an approval without being one of its approvers (the role, the count,
    /// self-approval): needs `approval.override` and a reason, and is recorded as an override.
    #[serde(default, rename = "override", skip_serializing_if = "std::ops::Not::not")]
    pub override_approval: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    pub id: i64,
    pub pipeline: String,
    pub application: String,
    pub version: String,
    pub status: DeploymentStatus,
    /// Index of the stage the deployment is in (or waits for).
    pub stage_index: usize,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// Set on a rollback deployment: the deployment it rolled back.
    pub rollback_of: Option<i64>,
    /// Why it is where it is (deployments that have not ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitingFor>,
    pub stages: Vec<StageRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRun {
    pub name: String,
    pub environment: String,
    pub progression: Progression,
    /// Derived: `pending`, `in_progress`, `completed`, `failed`, `skipped`...
    pub status: String,
    /// `one`, `all` or `rolling`.
    #[serde(default, skip_serializing_if = "Targets::is_one")]
    pub targets: Targets,
    /// Fleet stages: the agents whose attempts failed (tolerated up to `max_failures`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_agents: Vec<String>,
    pub tasks: Vec<TaskRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRun {
    pub index: usize,
    #[serde(rename = "type")]
    pub kind: String,
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub attempt: u32,
    pub attempt_id: Option<String>,
    pub agent: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    /// Who approved, rejected or skipped it.
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    /// For approval tasks: every decision so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalVote>,
    /// Why it has not ended yet (tasks of the deployment's current stage and the next ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<WaitingFor>,
    /// Fleet stages: the task on each selected agent (`agent`, its `batch` from 1), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TaskRun>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
}

/// One decision on an approval task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalVote {
    /// The principal (`alice`, `client:ci`).
    pub by: String,
    pub at: Timestamp,
    /// `approve` or `reject`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Decided by an override (`approval.override`), not as one of the approvers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overridden: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub id: i64,
    pub stage_index: usize,
    pub task_index: usize,
    /// The agent that printed it, on fleet stages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub ts: Timestamp,
    pub stream: String,
    pub line: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentEvent {
    pub id: i64,
    pub deployment_id: i64,
    pub ts: Timestamp,
    pub kind: String,
    pub actor: String,
    pub detail: serde_json::Value,
}

/// `GET /deployments/{id}/logs` (without `follow`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogPage {
    pub lines: Vec<LogLine>,
    /// Pass as `after` to get the next page.
    pub next: i64,
}

/// An operator (a person), as the API shows it: never the password hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Operator {
    pub name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub failed_logins: u32,
    /// Set while sign-ins from some address are locked out after repeated failures (the latest
    /// such lock's end).
    pub locked_until: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewOperator {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    pub roles: Vec<String>,
    /// When absent, a random password is generated and returned once.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorCreated {
    pub operator: Operator,
    /// The generated password, shown this once (absent when the caller chose it).
    pub password: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OperatorUpdate {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordChange {
    pub password: String,
}

/// An OAuth 2.0 client registration, as the API shows it: never a secret or its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    pub client_id: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub secret_rotated_at: Option<Timestamp>,
    /// While set (and in the future), the previous secret still works: the grace period.
    pub previous_secret_valid_until: Option<Timestamp>,
    /// Tokens issued before this were revoked.
    pub tokens_not_before: Option<Timestamp>,
    /// Exact redirect URIs (authorization-code flow).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// A public client: no secret (CLI, native apps); PKCE and operator flows only.
    #[serde(default)]
    pub public: bool,
    /// The `kid`s of the keys registered for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ids: Vec<String>,
    /// The agent this client belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewClient {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub public: bool,
    /// Public keys for `private_key_jwt` (a JWKS: `{"keys": [...]}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
}

/// The one time a client secret is shown (64 lowercase hex characters, 256 random bits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSecret {
    pub client_id: String,
    /// Empty for public clients and clients that authenticate with keys only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_secret: String,
    /// For a regenerated secret: until when the previous one still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<Timestamp>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClientUpdate {
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(default)]
    pub redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RegenerateSecret {
    /// Seconds the previous secret keeps working (0: none).
    #[serde(default)]
    pub grace_secs: u64,
}

/// An environment's variable (`GET /api/v1/environments/{env}/variables`). A secret one's value
/// is never returned: `has_value` says it is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    pub environment: String,
    pub name: String,
    pub secret: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub has_value: bool,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// `PUT /api/v1/environments/{env}/variables/{name}`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVariable {
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

impl std::fmt::Debug for SetVariable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = if self.secret { "***" } else { self.value.as_str() };
        f.debug_struct("SetVariable").field("value", &value).field("secret", &self.secret).finish()
    }
}

/// An authentication profile: credentials the orchestrator uses to call external systems.
/// The secret is write-only: the API never returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthProfile {
    pub name: String,
    /// `basic`, `bearer` or `oauth2-client-credentials`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// PEM CA file (on the orchestrator) to trust for https calls with this profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Only for tasks of this environment (none: shared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// The only URLs the credentials may be sent to (prefixes such as
    /// `https://jenkins.example.com/job/`); at least one.
    #[serde(default)]
    pub allowed_urls: Vec<String>,
    /// A secret is set (password, token or client secret); its value is never shown.
    #[serde(default)]
    pub has_secret: bool,
    /// Write-only: the secret to store (sealed at rest). Absent on update: keep the current one.
    /// The orchestrator never fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A role: a named set of privileges. Built-in roles cannot be changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub privileges: Vec<String>,
    #[serde(default)]
    pub built_in: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// An access group: binds operators and clients to roles, optionally only on some applications.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessGroup {
    pub name: String,
    pub roles: Vec<String>,
    #[serde(default)]
    pub operators: Vec<String>,
    #[serde(default)]
    pub clients: Vec<String>,
    /// Empty: every application.
    #[serde(default)]
    pub applications: Vec<String>,
    /// Shown, never stored: privileges of the group's roles that a scoped group does not confer
    /// (global privileges such as `operator.manage` count only through unscoped grants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ineffective_privileges: Vec<String>,
}

/// A token-signing key (public facts only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    pub alg: String,
    pub active: bool,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    /// Still published in the JWKS (retired keys stay until their last token has expired).
    pub in_jwks: bool,
    /// The certificate the key came with from its keystore, when it came with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<KeyCertificate>,
}

/// The certificate of an imported signing key: tokens do not carry it, but keystores are
/// renewed by its dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyCertificate {
    pub subject: String,
    pub not_after: Timestamp,
}

/// `POST /api/v1/keys/import`: a PKCS#8 private key (base64), e.g. read from a keystore by alias.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyImport {
    pub pkcs8_base64: String,
    #[serde(default)]
    pub activate: bool,
    /// For RSA keys: `RS256` (default) or `PS256`. Other key types fix the algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// The certificates of the keystore entry (DER, base64; at most 10): the one for this key
    /// is kept, and its subject and expiry are listed with the key. Others are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates_der_base64: Vec<String>,
}
