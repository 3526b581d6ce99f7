-- Environments may name the applications allowed to target them (NULL: any); approval tasks
-- keep every decision (JSON array, NULL: none yet).
ALTER TABLE environments ADD COLUMN applications TEXT;
ALTER TABLE task_runs ADD COLUMN approvals TEXT;
