-- Fleet stages: besides a task's own row (target ''), one row per selected agent. SQLite cannot
-- change a primary key in place, so the table is rebuilt with the same columns plus target and
-- batch, and its indexes made again.
CREATE TABLE task_runs_v9 (
    deployment_id BIGINT NOT NULL REFERENCES deployments (id),
    stage_index BIGINT NOT NULL,
    task_index BIGINT NOT NULL,
    environment TEXT NOT NULL,
    on_agent BIGINT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    attempt_id TEXT,
    agent TEXT,
    lease_until BIGINT,
    due_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    exit_code BIGINT,
    message TEXT,
    decided_by TEXT,
    comment TEXT,
    approvals TEXT,
    target TEXT NOT NULL DEFAULT '',
    batch BIGINT,
    PRIMARY KEY (deployment_id, stage_index, task_index, target)
);
INSERT INTO task_runs_v9 (deployment_id, stage_index, task_index, environment, on_agent, spec, status, attempt,
    attempt_id, agent, lease_until, due_at, started_at, finished_at, exit_code, message, decided_by, comment, approvals)
SELECT deployment_id, stage_index, task_index, environment, on_agent, spec, status, attempt,
    attempt_id, agent, lease_until, due_at, started_at, finished_at, exit_code, message, decided_by, comment, approvals
FROM task_runs;
DROP TABLE task_runs;
ALTER TABLE task_runs_v9 RENAME TO task_runs;
CREATE UNIQUE INDEX task_runs_attempt ON task_runs (attempt_id);
CREATE INDEX task_runs_ready ON task_runs (environment, deployment_id) WHERE status = 'ready' AND on_agent = 1;
CREATE INDEX task_runs_in_progress ON task_runs (agent) WHERE status = 'in_progress';
CREATE INDEX task_runs_due ON task_runs (due_at) WHERE due_at IS NOT NULL;
-- Which agent printed a line (fleet stages run a task on many).
ALTER TABLE task_logs ADD COLUMN agent TEXT;
-- Labels administrators give agents (JSON object); fleet stages select by them.
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
