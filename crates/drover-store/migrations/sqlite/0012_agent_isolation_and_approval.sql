-- How an agent keeps its tasks from itself, as it reports at its polls: 'task-user' or 'none';
-- NULL until it has polled once.
ALTER TABLE agents ADD COLUMN isolation TEXT;
-- 1 while the agent waits for approval (it gets no work); agents from before are approved.
ALTER TABLE agents ADD COLUMN pending BIGINT NOT NULL DEFAULT 0;
-- 1 when a holder of variable.manage registered or approved the agent: only such an agent is
-- handed work in an environment that holds secret variables. Agents from before count as such.
ALTER TABLE agents ADD COLUMN vetted BIGINT NOT NULL DEFAULT 1;
