-- How an agent keeps its tasks from itself, as it reports at its polls: 'task-user' or 'none';
-- NULL until it has polled once.
ALTER TABLE agents ADD COLUMN isolation TEXT;
-- 1 while the agent waits for approval (it gets no work); agents from before are approved.
ALTER TABLE agents ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
