//! Row mapping, written once: each backend's row type implements [`Row`] (typed columns by
//! name), and these functions turn a row into a record.

use drover_core::Result;
use drover_core::audit::{AuditEntry, NewAuditEntry};
use drover_core::model::{DeploymentRecord, TaskRecord};
use drover_core::store::{AgentRecord, ClientRecord, OperatorRecord, SigningKeyRecord, TaskRef};
use drover_types::{Artifact, DeploymentEvent, Environment, EnvironmentKind, LogLine, Pipeline, Timestamp};

use crate::{json_err, list_from, opt_ts, status_of, task_status_of};

/// Typed columns of a result row, by name.
pub(crate) trait Row {
    fn int(&self, col: &str) -> Result<i64>;
    fn opt_int(&self, col: &str) -> Result<Option<i64>>;
    fn text(&self, col: &str) -> Result<String>;
    fn opt_text(&self, col: &str) -> Result<Option<String>>;
    fn ts(&self, col: &str) -> Result<Timestamp> {
        Ok(Timestamp(self.int(col)?))
    }
    fn opt_ts(&self, col: &str) -> Result<Option<Timestamp>> {
        Ok(opt_ts(self.opt_int(col)?))
    }
    fn flag(&self, col: &str) -> Result<bool> {
        Ok(self.int(col)? != 0)
    }
    fn json<T: serde::de::DeserializeOwned>(&self, col: &str) -> Result<T> {
        serde_json::from_str(&self.text(col)?).map_err(json_err)
    }
}

pub(crate) fn environment(r: &impl Row) -> Result<Environment> {
    Ok(Environment {
        name: r.text("name")?,
        kind: EnvironmentKind::parse(&r.text("kind")?).unwrap_or(EnvironmentKind::Custom),
        labels: r.json("labels")?,
        applications: list_from(r.opt_text("applications")?)?,
        created_at: r.ts("created_at")?,
    })
}

pub(crate) fn agent(r: &impl Row) -> Result<AgentRecord> {
    Ok(AgentRecord {
        name: r.text("name")?,
        environment: r.text("environment")?,
        secret_hash: r.text("secret_hash")?,
        created_at: r.ts("created_at")?,
        last_seen_at: r.opt_ts("last_seen_at")?,
        labels: serde_json::from_str(&r.text("labels")?).map_err(json_err)?,
        version: r.opt_text("version")?,
        isolation: r.opt_text("isolation")?,
        pending: r.flag("pending")?,
        vetted: r.flag("vetted")?,
    })
}

pub(crate) fn operator(r: &impl Row) -> Result<OperatorRecord> {
    Ok(OperatorRecord {
        name: r.text("name")?,
        password_hash: r.text("password_hash")?,
        roles: r.json("roles")?,
        disabled: r.flag("disabled")?,
        created_at: r.ts("created_at")?,
        email: r.opt_text("email")?,
        failed_logins: r.int("failed_logins")? as u32,
        locked_until: r.opt_ts("locked_until")?,
    })
}

pub(crate) fn artifact(r: &impl Row) -> Result<Artifact> {
    Ok(Artifact {
        application: r.text("application")?,
        version: r.text("version")?,
        sha256: r.text("sha256")?,
        size: r.int("size")? as u64,
        created_at: r.ts("created_at")?,
        created_by: r.text("created_by")?,
    })
}

pub(crate) fn pipeline(r: &impl Row) -> Result<Pipeline> {
    Ok(Pipeline {
        name: r.text("name")?,
        application: r.text("application")?,
        variables: r.json("variables")?,
        stages: r.json("stages")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
    })
}

pub(crate) fn deployment(r: &impl Row) -> Result<DeploymentRecord> {
    Ok(DeploymentRecord {
        id: r.int("id")?,
        pipeline: r.text("pipeline")?,
        application: r.text("application")?,
        version: r.text("version")?,
        status: status_of(&r.text("status")?)?,
        stage_index: r.int("stage_index")? as usize,
        holds_stage: r.flag("holds_stage")?,
        message: r.opt_text("message")?,
        created_by: r.text("created_by")?,
        created_at: r.ts("created_at")?,
        updated_at: r.ts("updated_at")?,
        finished_at: r.opt_ts("finished_at")?,
        rollback_of: r.opt_int("rollback_of")?,
        spec: r.json("spec")?,
        row_version: r.int("row_version")?,
    })
}

pub(crate) fn task(r: &impl Row) -> Result<TaskRecord> {
    Ok(TaskRecord {
        deployment_id: r.int("deployment_id")?,
        stage_index: r.int("stage_index")? as usize,
        task_index: r.int("task_index")? as usize,
        environment: r.text("environment")?,
        target: Some(r.text("target")?).filter(|t| !t.is_empty()),
        batch: r.opt_int("batch")?.map(|b| b as u32),
        spec: r.json("spec")?,
        status: task_status_of(&r.text("status")?)?,
        attempt: r.int("attempt")? as u32,
        attempt_id: r.opt_text("attempt_id")?,
        agent: r.opt_text("agent")?,
        lease_until: r.opt_ts("lease_until")?,
        due_at: r.opt_ts("due_at")?,
        started_at: r.opt_ts("started_at")?,
        finished_at: r.opt_ts("finished_at")?,
        exit_code: r.opt_int("exit_code")?.map(|x| x as i32),
        message: r.opt_text("message")?,
        decided_by: r.opt_text("decided_by")?,
        comment: r.opt_text("comment")?,
        approvals: list_from(r.opt_text("approvals")?)?,
    })
}

/// (stage index, deployment id) pairs of stage locks and queue heads.
pub(crate) fn stage_pair(r: &impl Row) -> Result<(usize, i64)> {
    Ok((r.int("stage_index")? as usize, r.int("deployment_id")?))
}

/// A task row's identity.
pub(crate) fn task_ref(r: &impl Row) -> Result<TaskRef> {
    Ok(TaskRef {
        deployment_id: r.int("deployment_id")?,
        stage: r.int("stage_index")? as usize,
        task: r.int("task_index")? as usize,
        target: Some(r.text("target")?).filter(|t| !t.is_empty()),
        environment: r.text("environment")?,
    })
}

pub(crate) fn log_line(r: &impl Row) -> Result<LogLine> {
    Ok(LogLine {
        id: r.int("id")?,
        stage_index: r.int("stage_index")? as usize,
        task_index: r.int("task_index")? as usize,
        agent: r.opt_text("agent")?,
        ts: r.ts("ts")?,
        stream: r.text("stream")?,
        line: r.text("line")?,
    })
}

pub(crate) fn event(r: &impl Row) -> Result<DeploymentEvent> {
    Ok(DeploymentEvent {
        id: r.int("id")?,
        deployment_id: r.int("deployment_id")?,
        ts: r.ts("ts")?,
        kind: r.text("kind")?,
        actor: r.text("actor")?,
        detail: r.json("detail")?,
    })
}

pub(crate) fn client(r: &impl Row) -> Result<ClientRecord> {
    Ok(ClientRecord {
        client_id: r.text("client_id")?,
        secret_hash: r.text("secret_hash")?,
        previous_secret_hash: r.opt_text("previous_secret_hash")?,
        previous_valid_until: r.opt_ts("previous_valid_until")?,
        roles: r.json("roles")?,
        disabled: r.flag("disabled")?,
        tokens_not_before: r.ts("tokens_not_before")?,
        created_at: r.ts("created_at")?,
        secret_rotated_at: r.opt_ts("secret_rotated_at")?,
        metadata: r.json("metadata")?,
    })
}

pub(crate) fn signing_key(r: &impl Row) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: r.text("kid")?,
        alg: r.text("alg")?,
        private_key: r.text("private_key")?,
        public_jwk: r.text("public_jwk")?,
        active: r.flag("active")?,
        created_at: r.ts("created_at")?,
        retired_at: r.opt_ts("retired_at")?,
        cert_subject: r.opt_text("cert_subject")?,
        cert_not_after: r.opt_ts("cert_not_after")?,
    })
}

pub(crate) fn audit_entry(r: &impl Row) -> Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.int("seq")?,
        entry: NewAuditEntry {
            ts: r.ts("ts")?,
            principal: r.text("principal")?,
            action: r.text("action")?,
            target: r.text("target")?,
            outcome: r.text("outcome")?,
            source: r.text("source")?,
            request_id: r.text("request_id")?,
            detail: r.json("detail")?,
        },
        prev_hash: r.text("prev_hash")?,
        hash: r.text("hash")?,
    })
}

/// (body, version) of a record.
pub(crate) fn record(r: &impl Row) -> Result<(String, i64)> {
    Ok((r.text("body")?, r.int("version")?))
}

/// (key, body, version) of a record.
pub(crate) fn keyed_record(r: &impl Row) -> Result<(String, String, i64)> {
    Ok((r.text("key")?, r.text("body")?, r.int("version")?))
}
