//! Why a deployment or a task that has not ended is where it is: a machine-readable reason
//! (`kind` and its fields) and the same as a sentence. Computed when read, never stored.

use serde::{Deserialize, Serialize};

use crate::{Action, DeploymentStatus, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingFor {
    #[serde(flatten)]
    pub reason: WaitReason,
    pub sentence: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WaitReason {
    /// Queued: deployment `deployment` holds stage `stage` (or, when `status` is `queued`, is
    /// older and next in line for it). `actions` would free the stage.
    Stage {
        stage: String,
        deployment: i64,
        status: DeploymentStatus,
        actions: Vec<Action>,
    },
    /// A task for an agent that none has claimed; `deadline` is the stage's dispatch timeout.
    Agent {
        environment: String,
        availability: AgentAvailability,
        /// Only for callers with `agent.read`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agents: Option<Vec<AgentSeen>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
    },
    /// An agent runs the task; past `deadline` (its timeout and the grace) the orchestrator
    /// fails it.
    Running {
        agent: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
    },
    /// A `wait` task.
    Timer {
        until: Timestamp,
    },
    /// The orchestrator's own call of a `webhook` task.
    Call {
        host: String,
    },
    /// A manual stage: a holder of one of `roles` runs `promote`.
    Promotion {
        stage: String,
        roles: Vec<String>,
    },
    /// An approval task.
    Approval {
        stage: String,
        task_index: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Operators who may decide it.
        holders: usize,
        needed: u32,
        have: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_timeout: Option<crate::OnTimeout>,
    },
    Paused {
        by: String,
    },
    /// A task failed; `actions` apply.
    Error {
        stage: String,
        task_index: usize,
        message: String,
        actions: Vec<Action>,
    },
    /// A task waits for an earlier one of its deployment.
    Task {
        stage: String,
        task_index: usize,
    },
    /// Being rolled back by deployment `deployment`.
    Rollback {
        deployment: i64,
    },
    /// A task of a fleet stage (`targets: all | rolling`): where its agents are.
    Fleet {
        stage: String,
        task_index: usize,
        /// The batch that runs now (from 1) and how many there are.
        batch: u32,
        batches: u32,
        /// Agents running the task now.
        running: Vec<String>,
        /// Agents whose attempt is ready and not claimed yet.
        unclaimed: Vec<String>,
        /// Agents of later batches that have not started the task.
        waiting: usize,
        /// Agents whose attempt failed, and how many may.
        failed: Vec<String>,
        max_failures: u32,
    },
    /// A fleet stage's attempt for one agent that the agent has not claimed yet.
    Claim {
        agent: String,
        /// Seen within the heartbeat timeout.
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen_at: Option<Timestamp>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAvailability {
    /// No agent is registered for the environment.
    NoneRegistered,
    /// Agents are registered, none has been seen within the heartbeat timeout.
    NoneOnline,
    /// The only agents registered wait for approval (`drover agents approve NAME`).
    PendingApproval,
    /// Every online agent runs tasks already.
    AllBusy,
    /// An online agent is free: it claims the task at its next poll.
    Available,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSeen {
    pub name: String,
    pub online: bool,
    pub last_seen_at: Option<Timestamp>,
    /// Attempts it holds now (looked up only when it decides between busy and free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<usize>,
}
