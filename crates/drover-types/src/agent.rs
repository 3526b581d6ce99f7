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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollResponse {
    pub tasks: Vec<Assignment>,
    /// Interval at which the agent must send heartbeats for running attempts.
    pub heartbeat_interval_ms: u64,
}

/// One attempt at one task, handed to exactly one agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
