//! The storage contract: one trait per aggregate, one implementation of each per backend
//! (SQLite, PostgreSQL) in `drover-store`, and one conformance suite they all pass.

use async_trait::async_trait;
use drover_types::{Artifact, DeploymentEvent, DeploymentStatus, Environment, LogLine, Pipeline, Timestamp};

use crate::Result;
use crate::audit::{AuditEntry, ChainKey, NewAuditEntry};
use crate::machine::NewEvent;
use crate::model::{DeploymentRecord, DeploymentState, TaskRecord};

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub name: String,
    pub environment: String,
    /// SHA-256 (hex) of the agent's secret.
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    /// Set by administrators; fleet stages select agents by them.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What the agent reported at its last poll (e.g. `0.1.0`).
    pub version: Option<String>,
    /// How it keeps its tasks from itself, as it reported: `task-user` or `none`.
    pub isolation: Option<String>,
    /// Waiting for approval: its polls get no work.
    pub pending: bool,
    /// Registered or approved by a holder of `variable.manage`: only such an agent gets work in
    /// an environment that holds secret variables.
    pub vetted: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OperatorRecord {
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub created_at: Timestamp,
    pub email: Option<String>,
    /// Failed logins since the last successful one.
    pub failed_logins: u32,
    /// Logins are refused until then (lockout).
    pub locked_until: Option<Timestamp>,
}

/// An OAuth 2.0 client registration (a machine: CI, a script, an integration).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientRecord {
    pub client_id: String,
    /// SHA-256 (hex) of the current secret.
    pub secret_hash: String,
    /// The secret before the last regeneration, valid until `previous_valid_until` (grace).
    pub previous_secret_hash: Option<String>,
    pub previous_valid_until: Option<Timestamp>,
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Tokens issued before this instant are refused ("revoke tokens").
    pub tokens_not_before: Timestamp,
    pub created_at: Timestamp,
    pub secret_rotated_at: Option<Timestamp>,
    pub metadata: ClientMetadata,
}

/// What a client registration says beyond its secret and roles (stored as JSON).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClientMetadata {
    /// Exact redirect URIs for the authorization-code flow. A loopback `http://127.0.0.1/...`
    /// or `http://[::1]/...` URI matches any port (RFC 8252 §7.3); nothing else is relaxed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    /// A public client (RFC 6749 §2.1): no secret; it may only use flows bound to an operator
    /// (authorization code with PKCE, device code, refresh).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public: bool,
    /// Public keys (a JWKS) for `private_key_jwt` client authentication (RFC 7523).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// The agent this client authenticates (agents' own registrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A token-signing key. `private_key` is sealed with the master key (never stored in clear).
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub alg: String,
    pub private_key: String,
    /// The public JWK as JSON.
    pub public_jwk: String,
    pub active: bool,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
    /// The certificate the key was imported with: subject and end of validity.
    pub cert_subject: Option<String>,
    pub cert_not_after: Option<Timestamp>,
}

/// A state change of one deployment, written atomically: the deployment row (only if its
/// `row_version` still equals `expected_version`), the changed tasks, the events, and the
/// stage lock.
#[derive(Debug, Clone)]
pub struct Commit {
    pub expected_version: i64,
    pub deployment: DeploymentRecord,
    pub changed_tasks: Vec<TaskRecord>,
    /// Rows the change added (a fleet stage's rows per agent, when it starts).
    pub new_tasks: Vec<TaskRecord>,
    pub events: Vec<NewEvent>,
    /// Log lines to append with the change.
    pub logs: Vec<NewLog>,
    pub acquire_stage: Option<usize>,
    pub release_stage: Option<usize>,
}

/// A task row of a deployment: `target` is the agent of a fleet stage's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRef {
    pub deployment_id: i64,
    pub stage: usize,
    pub task: usize,
    pub target: Option<String>,
    /// The task's environment (its secrets are the ones masked in its output).
    pub environment: String,
}

/// A log line to append: the task it belongs to, the agent that printed it (fleet stages).
#[derive(Debug, Clone, PartialEq)]
pub struct NewLog {
    pub stage: usize,
    pub task: usize,
    pub agent: Option<String>,
    pub ts: Timestamp,
    pub stream: String,
    pub line: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    Committed,
    /// Someone else changed the deployment since it was loaded.
    VersionConflict,
    /// Another deployment holds the stage that this one wanted to enter.
    StageBusy,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub principal: Option<String>,
    /// Substring of the action.
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// Only entries with a smaller `seq` (paging backwards).
    pub before: Option<i64>,
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub pipeline: Option<String>,
    pub status: Option<DeploymentStatus>,
    pub limit: Option<u32>,
    /// Only deployments of these applications (`None`: of every application).
    pub applications: Option<Vec<String>>,
    /// Only deployments with a smaller id (the next page, newest first).
    pub before: Option<i64>,
}

/// Outcome of inserting an artifact record.
/// What deleting a version did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactDelete {
    Deleted,
    /// A deployment that has not ended uses it: (id, status).
    InUse(i64, String),
    NotFound,
}

#[derive(Debug, Clone)]
pub enum ArtifactInsert {
    Inserted,
    /// The version exists already (with this record).
    Exists(Artifact),
}

// The storage contract, one trait per aggregate: a service's real dependencies show in its
// signature, and a reader finds how operators are stored in one file per backend. `Store` is
// all of them; `Arc<dyn Store>` coerces to any of them.

#[async_trait]
pub trait EnvironmentStore: Send + Sync {
    /// Inserts the environment unless one with that name exists; returns whether it inserted.
    async fn insert_environment(&self, env: &Environment) -> Result<bool>;
    async fn get_environment(&self, name: &str) -> Result<Option<Environment>>;
    async fn list_environments(&self) -> Result<Vec<Environment>>;
    /// Replaces kind, labels and applications; false when there is none.
    async fn update_environment(&self, env: &Environment) -> Result<bool>;
    async fn delete_environment(&self, name: &str) -> Result<bool>;
}

#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Inserts; `Conflict` when the name is taken.
    async fn insert_agent(&self, agent: &AgentRecord) -> Result<()>;
    async fn get_agent(&self, name: &str) -> Result<Option<AgentRecord>>;
    async fn list_agents(&self) -> Result<Vec<AgentRecord>>;
    async fn delete_agent(&self, name: &str) -> Result<bool>;
    async fn touch_agent(&self, name: &str, at: Timestamp) -> Result<()>;
    /// Records the version and isolation an agent reported; false when there is no such agent.
    async fn set_agent_reported(&self, name: &str, version: Option<&str>, isolation: Option<&str>) -> Result<bool>;
    /// Approves an agent (no longer pending, vetted); false when there is no such agent.
    async fn approve_agent(&self, name: &str) -> Result<bool>;
    /// Replaces an agent's labels; false when there is no such agent.
    async fn set_agent_labels(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> Result<bool>;
}

#[async_trait]
pub trait OperatorStore: Send + Sync {
    async fn insert_operator(&self, op: &OperatorRecord) -> Result<bool>;
    async fn get_operator(&self, name: &str) -> Result<Option<OperatorRecord>>;
    async fn list_operators(&self) -> Result<Vec<OperatorRecord>>;
    /// Replaces password hash, roles, disabled flag, e-mail, failure count and lock of an
    /// operator; false when there is none.
    async fn update_operator(&self, op: &OperatorRecord) -> Result<bool>;
    /// Counts a failed login atomically; when the count reaches `threshold`, locks the operator
    /// until `lock_until`. Returns (failures, locked_until), or None for an unknown operator.
    async fn login_failed(
        &self,
        name: &str,
        threshold: u32,
        lock_until: Timestamp,
    ) -> Result<Option<(u32, Option<Timestamp>)>>;
    /// Resets the failure count and lock only (a successful sign-in writes nothing else, so it
    /// cannot undo a change made meanwhile).
    async fn login_succeeded(&self, name: &str) -> Result<()>;
}

#[async_trait]
pub trait ArtifactStore: Send + Sync {
    async fn ensure_application(&self, name: &str, at: Timestamp) -> Result<()>;
    async fn insert_artifact(&self, artifact: &Artifact) -> Result<ArtifactInsert>;
    async fn get_artifact(&self, application: &str, version: &str) -> Result<Option<Artifact>>;
    async fn list_artifacts(&self, application: Option<&str>) -> Result<Vec<Artifact>>;
    /// Deletes a version unless a deployment that has not ended uses it (checked in the same
    /// statement, so a deployment cannot start on a version being deleted unnoticed).
    async fn delete_artifact(&self, application: &str, version: &str) -> Result<ArtifactDelete>;
    /// Bytes of all versions of an application (`None`: of all applications).
    async fn artifact_usage(&self, application: Option<&str>) -> Result<u64>;
    /// Versions of an application that retention keeps whatever their age (see `sql::ARTIFACT_PROTECTED`).
    async fn protected_versions(&self, application: &str) -> Result<Vec<String>>;
    /// Every content digest some version refers to.
    async fn artifact_digests(&self) -> Result<Vec<String>>;
}

#[async_trait]
pub trait PipelineStore: Send + Sync {
    /// Inserts or replaces the pipeline with that name.
    async fn put_pipeline(&self, pipeline: &Pipeline) -> Result<()>;
    async fn get_pipeline(&self, name: &str) -> Result<Option<Pipeline>>;
    async fn list_pipelines(&self) -> Result<Vec<Pipeline>>;
    async fn delete_pipeline(&self, name: &str) -> Result<bool>;
}

/// Deployments with their task runs, stage locks, events and log lines.
#[async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Inserts a deployment (its `id` is assigned) and its tasks with a `deployment.created`
    /// event, atomically; returns the id.
    async fn create_deployment(&self, d: &DeploymentRecord, event: &NewEvent) -> Result<i64>;
    async fn load_deployment(&self, id: i64) -> Result<Option<DeploymentState>>;
    async fn commit(&self, c: &Commit) -> Result<CommitOutcome>;
    /// Newest first, without tasks.
    async fn list_deployments(&self, f: &DeploymentFilter) -> Result<Vec<DeploymentRecord>>;
    /// Ids of deployments that are not terminal.
    async fn active_deployment_ids(&self) -> Result<Vec<i64>>;
    /// (stage index, holder) for every held stage lock of the pipeline.
    async fn stage_locks(&self, pipeline: &str) -> Result<Vec<(usize, i64)>>;
    /// (stage index, lowest deployment id) of queued deployments of the pipeline.
    async fn oldest_queued(&self, pipeline: &str) -> Result<Vec<(usize, i64)>>;
    /// [`DeploymentStore::stage_locks`] and [`DeploymentStore::oldest_queued`] in one call.
    async fn stage_gate(&self, pipeline: &str) -> Result<(Vec<(usize, i64)>, Vec<(usize, i64)>)> {
        Ok((self.stage_locks(pipeline).await?, self.oldest_queued(pipeline).await?))
    }
    /// The oldest queued deployment of every (pipeline, stage) that has one.
    async fn queue_heads(&self) -> Result<Vec<i64>>;
    /// Ready agent tasks of an environment that `agent` may claim (any agent's, or a fleet
    /// stage's row for this agent), oldest deployment first.
    async fn claimable_tasks(&self, environment: &str, agent: &str, limit: u32) -> Result<Vec<TaskRef>>;
    /// In-progress attempts owned by an agent: (deployment id, attempt id).
    async fn owned_attempts(&self, agent: &str) -> Result<Vec<(i64, String)>>;
    /// The task row an attempt belongs to.
    async fn attempt_task(&self, attempt_id: &str) -> Result<Option<TaskRef>>;
    /// Extends the lease of an in-progress attempt owned by `agent`; false when it is no longer
    /// in progress (aborted, lost, or not that agent's).
    async fn heartbeat(&self, attempt_id: &str, agent: &str, lease_until: Timestamp) -> Result<bool>;
    /// Sets every in-progress lease to at least `until` (grace after an orchestrator restart).
    async fn extend_all_leases(&self, until: Timestamp) -> Result<u64>;
    /// Deployments with an in-progress lease older than `now`, or a `wait` due by `now`.
    async fn deployments_due(&self, now: Timestamp) -> Result<Vec<i64>>;
    /// Deployments of the pipeline in `pending_promotion` at `stage` with an id below `below`.
    async fn pending_promotion_before(&self, pipeline: &str, stage: usize, below: i64) -> Result<Vec<i64>>;
    /// The newest completed deployment of the pipeline with an id below `below`, with a version
    /// other than `not_version`.
    async fn last_completed(&self, pipeline: &str, below: i64, not_version: &str) -> Result<Option<DeploymentRecord>>;
    async fn append_logs(&self, deployment_id: i64, lines: &[NewLog]) -> Result<()>;
    async fn logs(&self, deployment_id: i64, after: i64, limit: u32) -> Result<Vec<LogLine>>;
    async fn events(&self, deployment_id: i64) -> Result<Vec<DeploymentEvent>>;
}

/// OAuth 2.0 client registrations.
#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Inserts; `Conflict` when the id is taken.
    async fn insert_client(&self, c: &ClientRecord) -> Result<()>;
    async fn get_client(&self, client_id: &str) -> Result<Option<ClientRecord>>;
    async fn list_clients(&self) -> Result<Vec<ClientRecord>>;
    async fn update_client(&self, c: &ClientRecord) -> Result<bool>;
    async fn delete_client(&self, client_id: &str) -> Result<bool>;
}

/// Token-signing keys and the token deny-list.
#[async_trait]
pub trait KeyStore: Send + Sync {
    async fn insert_signing_key(&self, k: &SigningKeyRecord) -> Result<()>;
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Makes `kid` the only active key; the previously active one is retired at `now`.
    async fn activate_signing_key(&self, kid: &str, now: Timestamp) -> Result<bool>;
    /// Replaces a key's sealed private key (master-key rotation re-seals every key).
    async fn update_signing_key_material(&self, kid: &str, sealed: &str) -> Result<bool>;
    /// Denies a token id until `expires_at` (then forgets it).
    async fn revoke_token(&self, jti: &str, expires_at: Timestamp) -> Result<()>;
    async fn is_token_revoked(&self, jti: &str) -> Result<bool>;
}

/// Small records of the identity layer (authorization codes, refresh tokens, device codes,
/// replay caches, custom roles, access groups, authentication profiles, sign-in counts): JSON
/// bodies keyed by (kind, key), versioned for compare-and-swap, optionally expiring. An expired
/// record is invisible to every call and replaced by an insert.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// Inserts; `false` when a live record with that key exists.
    async fn record_insert(&self, kind: &str, key: &str, body: &str, expires_at: Option<Timestamp>) -> Result<bool>;
    /// The body and version of a live record.
    async fn record_get(&self, kind: &str, key: &str) -> Result<Option<(String, i64)>>;
    /// Live records of a kind, by key: (key, body, version).
    async fn record_list(&self, kind: &str) -> Result<Vec<(String, String, i64)>>;
    /// Replaces the body if the version still is `version` (it becomes `version + 1`).
    async fn record_update(
        &self,
        kind: &str,
        key: &str,
        version: i64,
        body: &str,
        expires_at: Option<Timestamp>,
    ) -> Result<bool>;
    /// Deletes and returns a live record in one step (single-use codes).
    async fn record_take(&self, kind: &str, key: &str) -> Result<Option<String>>;
    async fn record_delete(&self, kind: &str, key: &str) -> Result<bool>;
}

/// The audit log: append-only, hash-chained.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry, linking it to the last one (atomically: appends are a total order),
    /// under the chain key when given.
    async fn append_audit(&self, e: &NewAuditEntry, key: Option<&ChainKey>) -> Result<AuditEntry> {
        self.append_audit_batch(std::slice::from_ref(e), key)
            .await?
            .pop()
            .ok_or_else(|| crate::Error::Store("audit append returned nothing".into()))
    }
    /// Appends several entries in order, in one transaction.
    async fn append_audit_batch(&self, entries: &[NewAuditEntry], key: Option<&ChainKey>) -> Result<Vec<AuditEntry>>;
    /// The newest entry: (seq, hash).
    async fn audit_head(&self) -> Result<Option<(i64, String)>>;
    /// Entries with `seq > after_seq`, oldest first.
    async fn audit_entries(&self, after_seq: i64, limit: u32) -> Result<Vec<AuditEntry>>;
    /// Entries matching the filter, newest first.
    async fn search_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>>;
}

/// The database connections of a store, for the SysOps view.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    /// Connections open now (SQLite: the writer and the pooled readers).
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// At most this many.
    pub max: u32,
    /// Whether [`Store::resize_pool`] applies.
    pub resizable: bool,
}

/// Every aggregate's store, on one backend.
#[async_trait]
pub trait Store:
    EnvironmentStore
    + AgentStore
    + OperatorStore
    + ArtifactStore
    + PipelineStore
    + DeploymentStore
    + ClientStore
    + KeyStore
    + RecordStore
    + AuditStore
    + Send
    + Sync
    + 'static
{
    /// Name of the backend (`sqlite`, `postgres`), for logs and `/system/nodes`.
    fn backend(&self) -> &'static str;
    /// Checks the database's own integrity (`PRAGMA integrity_check` or equivalent).
    async fn check_integrity(&self) -> Result<()>;
    fn pool_stats(&self) -> PoolStats;
    /// Replaces the connection pool with one of at most `max` connections (a new pool is
    /// swapped in; operations under way finish on the old one). `Invalid` where it does not
    /// apply.
    async fn resize_pool(&self, max: u32) -> Result<()>;
}
