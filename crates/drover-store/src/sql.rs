//! Every SQL statement, written once for both backends. Placeholders are `$N`: PostgreSQL
//! binds them by number, SQLite treats `$N` as a named parameter numbered in order of first
//! appearance — so in every statement here the placeholders first appear in ascending order
//! (`$1` before `$2` ...), which a unit test checks, and binding by position means the same on
//! both. Where the backends must differ (row locks, JSON functions, advisory locks, integrity
//! checks), the statement has a `SQLITE_`/`PG_` pair and says why.

// ---- environments -------------------------------------------------------------------------

pub const ENV_INSERT: &str = "INSERT INTO environments (name, kind, labels, created_at, applications) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
pub const ENV_GET: &str = "SELECT * FROM environments WHERE name = $1";
pub const ENV_LIST: &str = "SELECT * FROM environments ORDER BY name";
pub const ENV_UPDATE: &str = "UPDATE environments SET kind = $1, labels = $2, applications = $3 WHERE name = $4";
pub const ENV_DELETE: &str = "DELETE FROM environments WHERE name = $1";

// ---- agents ---------------------------------------------------------------------------------

pub const AGENT_INSERT: &str = "INSERT INTO agents (name, environment, secret_hash, created_at, last_seen_at, labels, pending, vetted) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub const AGENT_SET_LABELS: &str = "UPDATE agents SET labels = $1 WHERE name = $2";
pub const AGENT_GET: &str = "SELECT * FROM agents WHERE name = $1";
pub const AGENT_LIST: &str = "SELECT * FROM agents ORDER BY name";
pub const AGENT_DELETE: &str = "DELETE FROM agents WHERE name = $1";
pub const AGENT_TOUCH: &str = "UPDATE agents SET last_seen_at = $1 WHERE name = $2";
pub const AGENT_SET_REPORTED: &str = "UPDATE agents SET version = $1, isolation = $2 WHERE name = $3";
pub const AGENT_APPROVE: &str = "UPDATE agents SET pending = 0, vetted = 1 WHERE name = $1";

// ---- operators ------------------------------------------------------------------------------

pub const OPERATOR_INSERT: &str = "INSERT INTO operators (name, password_hash, roles, disabled, created_at, email) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
pub const OPERATOR_GET: &str = "SELECT * FROM operators WHERE name = $1";
pub const OPERATOR_LIST: &str = "SELECT * FROM operators ORDER BY name";
pub const OPERATOR_UPDATE: &str = "UPDATE operators SET password_hash = $1, roles = $2, disabled = $3, email = $4, \
     failed_logins = $5, locked_until = $6 WHERE name = $7";
pub const OPERATOR_LOGIN_FAILED: &str = "UPDATE operators SET failed_logins = failed_logins + 1, \
     locked_until = CASE WHEN failed_logins + 1 >= $1 THEN $2 ELSE locked_until END \
     WHERE name = $3 RETURNING failed_logins, locked_until";
pub const OPERATOR_LOGIN_SUCCEEDED: &str =
    "UPDATE operators SET failed_logins = 0, locked_until = NULL WHERE name = $1";

// ---- applications, artifacts, pipelines -----------------------------------------------------

pub const APPLICATION_ENSURE: &str =
    "INSERT INTO applications (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub const ARTIFACT_INSERT: &str = "INSERT INTO artifacts (application, version, sha256, size, created_at, created_by) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";
pub const ARTIFACT_GET: &str = "SELECT * FROM artifacts WHERE application = $1 AND version = $2";
pub const ARTIFACT_LIST: &str = "SELECT * FROM artifacts WHERE (CAST($1 AS TEXT) IS NULL OR application = $1) \
     ORDER BY application, created_at DESC, version DESC";
/// Deletes a version unless a deployment that has not ended uses it.
pub const ARTIFACT_DELETE_UNUSED: &str = "DELETE FROM artifacts WHERE application = $1 AND version = $2 \
     AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.application = $1 AND d.version = $2 \
     AND d.status NOT IN ('completed', 'aborted', 'failed'))";
pub const ARTIFACT_USED_BY: &str = "SELECT id, status FROM deployments WHERE application = $1 AND version = $2 \
     AND status NOT IN ('completed', 'aborted', 'failed') ORDER BY id LIMIT 1";
pub const ARTIFACT_USAGE: &str = "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM artifacts \
     WHERE (CAST($1 AS TEXT) IS NULL OR application = $1)";
/// Versions retention never removes: those of deployments that have not ended, of each
/// pipeline's newest completed deployment, and of every deployment newer than that one (live
/// in the stages it reached); all of a pipeline's when none of its deployments completed.
pub const ARTIFACT_PROTECTED: &str = "SELECT DISTINCT d.version FROM deployments d WHERE d.application = $1 \
     AND (d.status NOT IN ('completed', 'aborted', 'failed') OR d.id >= COALESCE((SELECT MAX(c.id) \
     FROM deployments c WHERE c.pipeline = d.pipeline AND c.status = 'completed'), 0))";
pub const ARTIFACT_DIGESTS: &str = "SELECT DISTINCT sha256 FROM artifacts";
pub const PIPELINE_PUT: &str = "INSERT INTO pipelines (name, application, stages, created_at, updated_at, variables) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET application = excluded.application, \
     stages = excluded.stages, updated_at = excluded.updated_at, variables = excluded.variables";
pub const PIPELINE_GET: &str = "SELECT * FROM pipelines WHERE name = $1";
pub const PIPELINE_LIST: &str = "SELECT * FROM pipelines ORDER BY name";
pub const PIPELINE_DELETE: &str = "DELETE FROM pipelines WHERE name = $1";

// ---- deployments, tasks, stage locks, events, logs -------------------------------------------

const DEPLOYMENT_COLS: &str = "id, pipeline, application, version, status, stage_index, holds_stage, message, \
     created_by, created_at, updated_at, finished_at, rollback_of, spec, row_version";
const TASK_COLS: &str = "deployment_id, stage_index, task_index, environment, spec, status, attempt, attempt_id, \
     agent, lease_until, due_at, started_at, finished_at, exit_code, message, decided_by, comment, approvals, target, batch";

pub const DEPLOYMENT_INSERT: &str = "INSERT INTO deployments (pipeline, application, version, status, stage_index, \
     holds_stage, message, created_by, created_at, updated_at, finished_at, rollback_of, spec, row_version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0) RETURNING id";
pub const TASK_INSERT: &str = "INSERT INTO task_runs (deployment_id, stage_index, task_index, environment, on_agent, \
     spec, status, attempt) VALUES ($1, $2, $3, $4, $5, $6, $7, 0)";
pub const EVENT_INSERT: &str =
    "INSERT INTO deployment_events (deployment_id, ts, kind, actor, detail) VALUES ($1, $2, $3, $4, $5)";
/// A fleet stage's row for one agent, added when the stage starts.
pub const TASK_INSERT_TARGET: &str = "INSERT INTO task_runs (deployment_id, stage_index, task_index, environment, \
     on_agent, spec, status, attempt, target, batch) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)";
pub const LOG_INSERT: &str = "INSERT INTO task_logs (deployment_id, stage_index, task_index, ts, stream, line, agent) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub fn deployment_get() -> &'static str {
    static S: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = $1"));
    &S
}
pub fn tasks_of() -> &'static str {
    static S: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("SELECT {TASK_COLS} FROM task_runs WHERE deployment_id = $1 ORDER BY stage_index, task_index, target")
    });
    &S
}
/// Filters by pipeline ($1), status ($2), applications ($3: JSON array, NULL for all), limit ($4).
/// The only difference: how a JSON array is expanded.
pub fn deployment_list_sqlite() -> &'static str {
    static S: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE ($1 IS NULL OR pipeline = $1) AND ($2 IS NULL OR status = $2) \
             AND ($3 IS NULL OR application IN (SELECT value FROM json_each($3))) AND ($4 IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5"
        )
    });
    &S
}
pub fn deployment_list_pg() -> &'static str {
    static S: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE ($1 IS NULL OR pipeline = $1) AND ($2 IS NULL OR status = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR application IN (SELECT jsonb_array_elements_text(CAST($3 AS JSONB)))) \
             AND (CAST($4 AS BIGINT) IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        )
    });
    &S
}
pub fn deployment_last_completed() -> &'static str {
    static S: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT {DEPLOYMENT_COLS} FROM deployments WHERE pipeline = $1 AND status = 'completed' AND id < $2 \
             AND version <> $3 ORDER BY id DESC LIMIT 1"
        )
    });
    &S
}

/// The version check and the row update in one statement: a concurrent commit that got there
/// first leaves nothing to update (on PostgreSQL the row lock makes the second wait, then see
/// the new version).
pub const DEPLOYMENT_UPDATE: &str = "UPDATE deployments SET status = $1, stage_index = $2, holds_stage = $3, \
     message = $4, updated_at = $5, finished_at = $6, row_version = $7 WHERE id = $8 AND row_version = $9";
pub const TASK_UPDATE: &str = "UPDATE task_runs SET status = $1, attempt = $2, attempt_id = $3, agent = $4, \
     lease_until = $5, due_at = $6, started_at = $7, finished_at = $8, exit_code = $9, message = $10, decided_by = $11, \
     comment = $12, approvals = $13 WHERE deployment_id = $14 AND stage_index = $15 AND task_index = $16 AND target = $17";
pub const STAGE_RELEASE: &str =
    "DELETE FROM stage_locks WHERE pipeline = $1 AND stage_index = $2 AND deployment_id = $3";
pub const STAGE_ACQUIRE: &str =
    "INSERT INTO stage_locks (pipeline, stage_index, deployment_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub const STAGE_HOLDER: &str = "SELECT deployment_id FROM stage_locks WHERE pipeline = $1 AND stage_index = $2";
pub const STAGE_LOCKS: &str = "SELECT stage_index, deployment_id FROM stage_locks WHERE pipeline = $1";
pub const OLDEST_QUEUED: &str = "SELECT stage_index, MIN(id) AS deployment_id FROM deployments \
     WHERE pipeline = $1 AND status = 'queued' GROUP BY stage_index";
pub const QUEUE_HEADS: &str =
    "SELECT MIN(id) AS id FROM deployments WHERE status = 'queued' GROUP BY pipeline, stage_index ORDER BY 1";
pub const ACTIVE_IDS: &str =
    "SELECT id FROM deployments WHERE status NOT IN ('completed', 'aborted', 'failed') ORDER BY id";
pub const CLAIMABLE: &str = "SELECT deployment_id, stage_index, task_index, target, environment FROM task_runs \
     WHERE status = 'ready' AND on_agent = 1 AND environment = $1 AND (target = '' OR target = $2) \
     ORDER BY deployment_id LIMIT $3";
pub const OWNED_ATTEMPTS: &str = "SELECT deployment_id, attempt_id FROM task_runs \
     WHERE status = 'in_progress' AND agent = $1 AND attempt_id IS NOT NULL";
pub const ATTEMPT_TASK: &str =
    "SELECT deployment_id, stage_index, task_index, target, environment FROM task_runs WHERE attempt_id = $1";
pub const HEARTBEAT: &str =
    "UPDATE task_runs SET lease_until = $1 WHERE attempt_id = $2 AND agent = $3 AND status = 'in_progress'";
pub const EXTEND_LEASES: &str = "UPDATE task_runs SET lease_until = $1 \
     WHERE status = 'in_progress' AND lease_until IS NOT NULL AND lease_until < $1";
/// Agent tasks' deadlines move with the leases after a restart (nobody could claim or report).
pub const EXTEND_DEADLINES: &str = "UPDATE task_runs SET due_at = $1 \
     WHERE status IN ('ready', 'in_progress') AND on_agent = 1 AND due_at IS NOT NULL AND due_at < $1";
/// Deployments with a lost lease or a passed deadline (`due_at`: waits, dispatch, task and
/// approval timeouts).
pub const DUE: &str = "SELECT deployment_id FROM task_runs WHERE status = 'in_progress' \
     AND lease_until IS NOT NULL AND lease_until < $1 \
     UNION SELECT deployment_id FROM task_runs WHERE due_at IS NOT NULL AND due_at <= $1 \
     AND status IN ('ready', 'in_progress', 'pending_input') ORDER BY 1";
pub const PENDING_PROMOTION_BEFORE: &str = "SELECT id FROM deployments WHERE pipeline = $1 \
     AND status = 'pending_promotion' AND stage_index = $2 AND id < $3 ORDER BY id";
pub const LOGS: &str = "SELECT id, stage_index, task_index, ts, stream, line, agent FROM task_logs \
     WHERE deployment_id = $1 AND id > $2 ORDER BY id LIMIT $3";
pub const EVENTS: &str =
    "SELECT id, deployment_id, ts, kind, actor, detail FROM deployment_events WHERE deployment_id = $1 ORDER BY id";

// ---- OAuth clients, signing keys, revoked tokens ---------------------------------------------

pub const CLIENT_INSERT: &str = "INSERT INTO clients (client_id, secret_hash, previous_secret_hash, previous_valid_until, \
     roles, disabled, tokens_not_before, created_at, secret_rotated_at, metadata) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub const CLIENT_GET: &str = "SELECT * FROM clients WHERE client_id = $1";
pub const CLIENT_LIST: &str = "SELECT * FROM clients ORDER BY client_id";
pub const CLIENT_UPDATE: &str = "UPDATE clients SET secret_hash = $1, previous_secret_hash = $2, \
     previous_valid_until = $3, roles = $4, disabled = $5, tokens_not_before = $6, secret_rotated_at = $7, metadata = $8 \
     WHERE client_id = $9";
pub const CLIENT_DELETE: &str = "DELETE FROM clients WHERE client_id = $1";
pub const KEY_INSERT: &str = "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, active, created_at, retired_at, \
     cert_subject, cert_not_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub const KEY_LIST: &str = "SELECT kid, alg, private_key, public_jwk, active, created_at, retired_at, cert_subject, \
     cert_not_after FROM signing_keys \
     ORDER BY created_at, kid";
pub const KEY_EXISTS: &str = "SELECT kid FROM signing_keys WHERE kid = $1";
pub const KEY_RETIRE_OTHERS: &str =
    "UPDATE signing_keys SET active = 0, retired_at = $1 WHERE active = 1 AND kid <> $2";
pub const KEY_ACTIVATE: &str = "UPDATE signing_keys SET active = 1, retired_at = NULL WHERE kid = $1";
pub const KEY_RESEAL: &str = "UPDATE signing_keys SET private_key = $1 WHERE kid = $2";
pub const REVOKED_PRUNE: &str = "DELETE FROM revoked_tokens WHERE expires_at < $1";
pub const REVOKED_INSERT: &str = "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub const REVOKED_GET: &str = "SELECT jti FROM revoked_tokens WHERE jti = $1";

// ---- records --------------------------------------------------------------------------------

pub const RECORD_PRUNE: &str = "DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= $1 AND kind = $2";
pub const RECORD_INSERT: &str =
    "INSERT INTO records (kind, key, body, version, expires_at) VALUES ($1, $2, $3, 1, $4) ON CONFLICT DO NOTHING";
pub const RECORD_GET: &str = "SELECT body, version FROM records \
     WHERE kind = $1 AND key = $2 AND (expires_at IS NULL OR expires_at > $3)";
pub const RECORD_LIST: &str = "SELECT key, body, version FROM records \
     WHERE kind = $1 AND (expires_at IS NULL OR expires_at > $2) ORDER BY key";
pub const RECORD_UPDATE: &str = "UPDATE records SET body = $1, version = version + 1, expires_at = $2 \
     WHERE kind = $3 AND key = $4 AND version = $5 AND (expires_at IS NULL OR expires_at > $6)";
pub const RECORD_TAKE: &str = "DELETE FROM records WHERE kind = $1 AND key = $2 RETURNING body, expires_at";
pub const RECORD_DELETE: &str = "DELETE FROM records WHERE kind = $1 AND key = $2";

// ---- audit log ------------------------------------------------------------------------------

pub const AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1";
pub const AUDIT_INSERT: &str = "INSERT INTO audit_log (seq, ts, principal, action, target, outcome, source, request_id, \
     detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub const AUDIT_AFTER: &str = "SELECT * FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2";
pub const AUDIT_SEARCH: &str = "SELECT * FROM audit_log WHERE (CAST($1 AS TEXT) IS NULL OR principal = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR action LIKE $2) AND (CAST($3 AS TEXT) IS NULL OR outcome = $3) \
     AND (CAST($4 AS BIGINT) IS NULL OR seq < $4) ORDER BY seq DESC LIMIT $5";
/// PostgreSQL: one appender at a time (SQLite has one writer connection anyway).
pub const PG_AUDIT_LOCK: &str = "SELECT pg_advisory_xact_lock(7243717)";

// ---- the database itself -----------------------------------------------------------------------

pub const SQLITE_INTEGRITY: &str = "PRAGMA integrity_check";
pub const PG_INTEGRITY: &str = "SELECT 'ok'::text";

#[cfg(test)]
mod tests {
    /// Every statement's placeholders first appear in ascending order, so that SQLite (which
    /// numbers `$N` by first appearance) and PostgreSQL (by N) bind the same values.
    #[test]
    fn placeholders_first_appear_in_order() {
        let text = include_str!("sql.rs");
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut statements: Vec<String> = Vec::new();
        // Each string literal (statements span lines with `\` continuations).
        let mut rest = code;
        while let Some(start) = rest.find('"') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('"') else { break };
            statements.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
        let with_params: Vec<&String> = statements.iter().filter(|s| s.contains('$')).collect();
        assert!(with_params.len() > 40, "{}", with_params.len());
        for s in with_params {
            let mut seen = Vec::new();
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'$' {
                    let digits: String = s[i + 1..].chars().take_while(|c| c.is_ascii_digit()).collect();
                    if let Ok(n) = digits.parse::<u32>()
                        && !seen.contains(&n)
                    {
                        assert_eq!(n as usize, seen.len() + 1, "placeholder ${n} out of order in: {s}");
                        seen.push(n);
                    }
                    i += 1 + digits.len();
                } else {
                    i += 1;
                }
            }
        }
    }
}
