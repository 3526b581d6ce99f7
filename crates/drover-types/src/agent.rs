//! The agent protocol (`/agent/v1`): versioned separately from `/api/v1`, not for people.

use serde::{Deserialize, Serialize};

use crate::TaskSpec;

/// `POST /agent/v1/poll`: long-poll for work.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PollRequest {
    /// Attempts this agent is executing or still has to report; the orchestrator re-delivers
    /// any other attempt it believes this agent owns (e.g. when a poll response was lost).
    #[serde(default)]
    pub running: Vec<String>,
    /// How many new tasks the agent can take now.
    pub capacity: u32,
    /// How long the orchestrator may hold the request when no task is ready (capped server-side).
    pub wait_ms: u64,
    /// The agent's version (`drover agent --version`), listed with the agent; at most 64
    /// characters of `[0-9A-Za-z.+_-]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// How the agent keeps its tasks from itself: `task-user` (tasks run as other uids) or
    /// `none` (as the agent's own user); listed with the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollResponse {
    pub tasks: Vec<Assignment>,
    /// Interval at which the agent must send heartbeats for running attempts.
    pub heartbeat_interval_ms: u64,
}

/// One attempt at one task, handed to exactly one agent. Its `Debug` leaves out the task's
/// fields (their variables are filled in) and the variables' values.
#[derive(Clone, Serialize, Deserialize)]
pub struct Assignment {
    pub attempt_id: String,
    pub deployment_id: i64,
    pub stage_index: usize,
    pub stage: String,
    pub task_index: usize,
    pub application: String,
    pub version: String,
    pub environment: String,
    pub spec: TaskSpec,
    /// The artifact, for `deploy` tasks.
    pub artifact: Option<ArtifactRef>,
    /// The operator or client that started the deployment.
    pub started_by: String,
    /// Environment variables for `run` tasks and hooks: the stage's variables (plain ones, and
    /// the secret ones this task refers to).
    #[serde(default, skip_serializing_if = "TaskVariables::is_empty")]
    pub variables: TaskVariables,
    /// Which of `variables` are secret: the agent masks their values in what it sends back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret: Vec<String>,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment")
            .field("attempt_id", &self.attempt_id)
            .field("deployment_id", &self.deployment_id)
            .field("stage", &self.stage)
            .field("task_index", &self.task_index)
            .field("task", &self.spec.kind())
            .field("application", &self.application)
            .field("version", &self.version)
            .field("environment", &self.environment)
            .field("variables", &self.variables)
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

/// An attempt's variables. Its `Debug` shows the names only: values may be secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskVariables(pub std::collections::BTreeMap<String, String>);

impl TaskVariables {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for TaskVariables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactRef {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// `stdout`, `stderr` or `agent`.
    pub stream: String,
    pub line: String,
}

/// `POST /agent/v1/attempts/{attempt_id}/events`: log lines and a heartbeat.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttemptEvents {
    #[serde(default)]
    pub logs: Vec<LogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptEventsResponse {
    /// The attempt is no longer wanted (deployment aborted, or the attempt was superseded):
    /// the agent stops it.
    pub cancel: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Failed,
}

/// `POST /agent/v1/attempts/{attempt_id}/result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    /// Human-readable summary; for failures it carries the tail of the output.
    pub message: Option<String>,
    /// Log lines not yet sent.
    #[serde(default)]
    pub logs: Vec<LogEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptResultResponse {
    /// `recorded`, `duplicate` (already recorded; nothing changed) or `stale` (the attempt is no
    /// longer current; the result was ignored).
    pub status: String,
}
