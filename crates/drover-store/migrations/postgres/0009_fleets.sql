-- Fleet stages: besides a task's own row (target ''), one row per selected agent.
ALTER TABLE task_runs ADD COLUMN target TEXT NOT NULL DEFAULT '';
ALTER TABLE task_runs ADD COLUMN batch BIGINT;
ALTER TABLE task_runs DROP CONSTRAINT task_runs_pkey;
ALTER TABLE task_runs ADD PRIMARY KEY (deployment_id, stage_index, task_index, target);
-- Which agent printed a line (fleet stages run a task on many).
ALTER TABLE task_logs ADD COLUMN agent TEXT;
-- Labels administrators give agents (JSON object); fleet stages select by them.
ALTER TABLE agents ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
