//! Audit log entries on the wire (`GET /api/v1/audit`).

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// What the caller records; the store assigns `seq` and the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub ts: Timestamp,
    /// `operator:NAME`, `agent:NAME`, or `anonymous`.
    pub principal: String,
    /// e.g. `auth.failed`, `permission.denied`, `POST /api/v1/deployments/{id}/approve`.
    pub action: String,
    /// What it was done to (path parameters, a user name...).
    pub target: String,
    /// `success`, `failure`, `denied`.
    pub outcome: String,
    /// Client address.
    pub source: String,
    pub request_id: String,
    /// Extra facts (HTTP status, reason). Never a secret.
    pub detail: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    #[serde(flatten)]
    pub entry: NewAuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Where the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenLink {
    pub seq: i64,
    pub reason: String,
}

/// `GET /api/v1/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditVerification {
    pub ok: bool,
    /// Entries checked.
    pub entries: i64,
    /// The last entry checked: record it elsewhere to detect a truncated tail later.
    pub head_seq: Option<i64>,
    pub head_hash: Option<String>,
    pub broken: Option<BrokenLink>,
    /// Signed checkpoints (kept outside the database) the log was compared with.
    #[serde(default)]
    pub checkpoints: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_seq: Option<i64>,
}
