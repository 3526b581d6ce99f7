-- The sweeper looks for deadlines (dispatch, task timeout, approval timeout) by time.
CREATE INDEX task_runs_due ON task_runs (due_at) WHERE due_at IS NOT NULL;
