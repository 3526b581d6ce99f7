-- Drover schema v1 (PostgreSQL).
CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    labels TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE agents (
    name TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT
);
CREATE TABLE operators (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE applications (
    name TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
CREATE TABLE artifacts (
    application TEXT NOT NULL,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (application, version)
);
CREATE TABLE pipelines (
    name TEXT PRIMARY KEY,
    application TEXT NOT NULL,
    stages TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE deployments (
    id BIGSERIAL PRIMARY KEY,
    pipeline TEXT NOT NULL,
    application TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    stage_index BIGINT NOT NULL,
    holds_stage BIGINT NOT NULL,
    message TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT,
    rollback_of BIGINT,
    spec TEXT NOT NULL,
    row_version BIGINT NOT NULL
);
CREATE INDEX deployments_pipeline_status ON deployments (pipeline, status, stage_index);
CREATE INDEX deployments_status ON deployments (status);
CREATE TABLE task_runs (
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
    PRIMARY KEY (deployment_id, stage_index, task_index)
);
CREATE UNIQUE INDEX task_runs_attempt ON task_runs (attempt_id);
CREATE INDEX task_runs_ready ON task_runs (environment, deployment_id) WHERE status = 'ready' AND on_agent = 1;
CREATE INDEX task_runs_in_progress ON task_runs (agent) WHERE status = 'in_progress';
CREATE TABLE stage_locks (
    pipeline TEXT NOT NULL,
    stage_index BIGINT NOT NULL,
    deployment_id BIGINT NOT NULL,
    PRIMARY KEY (pipeline, stage_index)
);
CREATE TABLE deployment_events (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX deployment_events_deployment ON deployment_events (deployment_id, id);
CREATE TABLE task_logs (
    id BIGSERIAL PRIMARY KEY,
    deployment_id BIGINT NOT NULL,
    stage_index BIGINT NOT NULL,
    task_index BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX task_logs_deployment ON task_logs (deployment_id, id);
