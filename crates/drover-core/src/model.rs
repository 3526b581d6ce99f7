//! Stored shape of deployments and their task runs, and conversion to the wire view.

use drover_types::{
    ApprovalVote, Deployment, DeploymentStatus, PipelineSpec, StageRun, TaskRun, TaskSpec, TaskStatus, Timestamp,
};

#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentRecord {
    pub id: i64,
    pub pipeline: String,
    pub application: String,
    pub version: String,
    pub status: DeploymentStatus,
    pub stage_index: usize,
    /// Whether this deployment holds the lock of `stage_index` (one active deployment per stage).
    pub holds_stage: bool,
    pub message: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub rollback_of: Option<i64>,
    /// The pipeline as it was when the deployment started.
    pub spec: PipelineSpec,
    /// Optimistic-concurrency counter, bumped by every commit.
    pub row_version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    pub deployment_id: i64,
    pub stage_index: usize,
    pub task_index: usize,
    pub environment: String,
    /// Fleet stages: the agent this row is for (its attempts are this agent's only); `None` for
    /// the task's own row, which on a fleet stage sums up the agents' rows.
    pub target: Option<String>,
    /// Fleet stages: the target's batch (0 first).
    pub batch: Option<u32>,
    pub spec: TaskSpec,
    pub status: TaskStatus,
    pub attempt: u32,
    pub attempt_id: Option<String>,
    pub agent: Option<String>,
    /// For agent tasks in progress: the attempt is lost when no heartbeat arrives before this.
    pub lease_until: Option<Timestamp>,
    /// The deadline of the task's current state: a `wait` task's end; for an agent task that
    /// is ready, its dispatch timeout; in progress, its timeout plus the grace; for an
    /// approval, its `timeout`.
    pub due_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub message: Option<String>,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    /// Decisions on an approval task, in order.
    pub approvals: Vec<ApprovalVote>,
}

impl TaskRecord {
    pub fn new(deployment_id: i64, stage_index: usize, task_index: usize, environment: &str, spec: TaskSpec) -> Self {
        TaskRecord {
            deployment_id,
            stage_index,
            task_index,
            environment: environment.to_string(),
            target: None,
            batch: None,
            spec,
            status: TaskStatus::Pending,
            attempt: 0,
            attempt_id: None,
            agent: None,
            lease_until: None,
            due_at: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            message: None,
            decided_by: None,
            comment: None,
            approvals: Vec::new(),
        }
    }

    pub fn label(&self, spec: &PipelineSpec) -> String {
        let stage = spec.stages.get(self.stage_index).map(|s| s.name.as_str()).unwrap_or("?");
        match &self.target {
            Some(a) => format!("task {} ({}) of stage {stage} on agent {a}", self.task_index + 1, self.spec.kind()),
            None => format!("task {} ({}) of stage {stage}", self.task_index + 1, self.spec.kind()),
        }
    }

    /// Ready for a new attempt (retry): the last attempt's outcome is cleared, its count kept.
    pub fn reset_for_retry(&mut self) {
        self.status = TaskStatus::Ready;
        self.due_at = None;
        self.attempt_id = None;
        self.agent = None;
        self.exit_code = None;
        self.message = None;
        self.started_at = None;
        self.finished_at = None;
    }

    /// The row's identity within its deployment.
    pub fn key(&self) -> (usize, usize, Option<&str>) {
        (self.stage_index, self.task_index, self.target.as_deref())
    }

    fn view(&self) -> TaskRun {
        TaskRun {
            index: self.task_index,
            kind: self.spec.kind().to_string(),
            spec: self.spec.clone(),
            status: self.status,
            attempt: self.attempt,
            attempt_id: self.attempt_id.clone(),
            agent: self.agent.clone().or_else(|| self.target.clone()),
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            message: self.message.clone(),
            decided_by: self.decided_by.clone(),
            comment: self.comment.clone(),
            approvals: self.approvals.clone(),
            waiting_for: None,
            targets: Vec::new(),
            batch: self.batch.map(|b| b + 1),
        }
    }
}

/// A deployment with all its task runs, ordered by (stage, task).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentState {
    pub deployment: DeploymentRecord,
    pub tasks: Vec<TaskRecord>,
}

impl DeploymentState {
    /// Task runs for a new deployment of `spec` (all `pending`).
    pub fn new_tasks(id: i64, spec: &PipelineSpec) -> Vec<TaskRecord> {
        let mut tasks = Vec::new();
        for (si, stage) in spec.stages.iter().enumerate() {
            for (ti, t) in stage.tasks.iter().enumerate() {
                tasks.push(TaskRecord::new(id, si, ti, &stage.environment, t.clone()));
            }
        }
        tasks
    }

    pub fn stage_tasks_mut(&mut self, stage: usize) -> impl Iterator<Item = &mut TaskRecord> {
        self.tasks.iter_mut().filter(move |t| t.stage_index == stage)
    }

    /// A task's own row (not one of a fleet stage's per-agent rows).
    pub fn task_mut(&mut self, stage: usize, task: usize) -> Option<&mut TaskRecord> {
        self.tasks.iter_mut().find(|t| t.stage_index == stage && t.task_index == task && t.target.is_none())
    }

    /// The row of a task for `target` (`None`: the task's own row).
    pub fn row_mut(&mut self, stage: usize, task: usize, target: Option<&str>) -> Option<&mut TaskRecord> {
        self.tasks.iter_mut().find(|t| t.key() == (stage, task, target))
    }

    /// The first task of the current stage that has not been passed (completed or skipped).
    pub fn current_task_index(&self) -> Option<usize> {
        let s = self.deployment.stage_index;
        self.tasks.iter().position(|t| t.stage_index == s && t.target.is_none() && !t.status.is_passed())
    }

    /// What a commit writes to go from `old` to `self`: (rows that changed, rows that are new).
    pub fn row_changes(&self, old: &DeploymentState) -> (Vec<TaskRecord>, Vec<TaskRecord>) {
        let (mut changed, mut added) = (Vec::new(), Vec::new());
        let aligned = old.tasks.len() == self.tasks.len();
        for (k, t) in self.tasks.iter().enumerate() {
            let before = match old.tasks.get(k) {
                Some(o) if aligned && o.key() == t.key() => Some(o),
                _ => old.tasks.iter().find(|o| o.key() == t.key()),
            };
            match before {
                Some(o) if o == t => {}
                Some(_) => changed.push(t.clone()),
                None => added.push(t.clone()),
            }
        }
        (changed, added)
    }

    /// Keeps rows in their stored order: (stage, task, target), a task's own row first.
    pub fn sort_rows(&mut self) {
        self.tasks.sort_by(|a, b| {
            (a.stage_index, a.task_index, a.target.is_some(), &a.target).cmp(&(
                b.stage_index,
                b.task_index,
                b.target.is_some(),
                &b.target,
            ))
        });
    }

    pub fn to_view(&self) -> Deployment {
        let d = &self.deployment;
        let stages = d
            .spec
            .stages
            .iter()
            .enumerate()
            .map(|(si, st)| {
                let mut tasks: Vec<TaskRun> = Vec::new();
                let mut failed_agents: Vec<String> = Vec::new();
                for t in self.tasks.iter().filter(|t| t.stage_index == si) {
                    match &t.target {
                        None => tasks.push(t.view()),
                        Some(agent) => {
                            if t.status == TaskStatus::Failed && !failed_agents.contains(agent) {
                                failed_agents.push(agent.clone());
                            }
                            if let Some(own) = tasks.last_mut().filter(|o| o.index == t.task_index) {
                                own.targets.push(t.view());
                            }
                        }
                    }
                }
                failed_agents.sort();
                let status = stage_status(&tasks, si, d);
                StageRun {
                    name: st.name.clone(),
                    environment: st.environment.clone(),
                    progression: st.progression,
                    status,
                    targets: st.targets,
                    failed_agents,
                    tasks,
                }
            })
            .collect();
        Deployment {
            id: d.id,
            pipeline: d.pipeline.clone(),
            application: d.application.clone(),
            version: d.version.clone(),
            status: d.status,
            stage_index: d.stage_index,
            message: d.message.clone(),
            created_by: d.created_by.clone(),
            created_at: d.created_at,
            updated_at: d.updated_at,
            finished_at: d.finished_at,
            rollback_of: d.rollback_of,
            waiting_for: None,
            stages,
        }
    }
}

fn stage_status(tasks: &[TaskRun], si: usize, d: &DeploymentRecord) -> String {
    use TaskStatus::*;
    let all = |f: &dyn Fn(TaskStatus) -> bool| tasks.iter().all(|t| f(t.status));
    let any = |s: TaskStatus| tasks.iter().any(|t| t.status == s);
    let s = if any(Failed) {
        "failed"
    } else if any(Rejected) {
        "rejected"
    } else if any(Aborted) {
        "aborted"
    } else if !tasks.is_empty() && all(&|s| s == Skipped) {
        "skipped"
    } else if all(&|s| s.is_passed()) && (si < d.stage_index || d.status == DeploymentStatus::Completed) {
        "completed"
    } else if any(PendingInput) {
        "pending_input"
    } else if tasks.iter().any(|t| t.status != Pending) || (si == d.stage_index && d.holds_stage) {
        "in_progress"
    } else {
        "pending"
    };
    s.to_string()
}
