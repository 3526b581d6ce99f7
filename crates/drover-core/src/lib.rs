//! Drover's domain: pipelines, deployments as a pure state machine, RBAC, and the `Store` trait.
//!
//! Invariant: this crate does no I/O. It never depends on axum, sqlx or reqwest.

pub mod audit;
pub mod machine;
pub mod model;
pub mod rbac;
pub mod reports;
pub mod spec;
pub mod store;
pub mod vars;

pub use model::{DeploymentRecord, DeploymentState, TaskRecord};
pub use store::{Commit, CommitOutcome, Store};

/// Errors of the domain, each with a stable public code (see [`Error::code`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (a missing field, a bad name): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but its content is not acceptable (a pipeline spec): 422.
    #[error("{0}")]
    Invalid(String),
    /// The action does not apply to the deployment in its current status.
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    Forbidden(String),
    /// A storage failure; the message is for the log, not for callers.
    #[error("store: {0}")]
    Store(String),
    /// The database cannot be reached (connection refused or lost, pool exhausted, busy): the
    /// request may succeed later; callers keep their credentials and retry.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A body or artifact over its size limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// The application's artifacts would exceed their quota: 413.
    #[error("{0}")]
    Quota(String),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::BadRequest(_) | Error::Invalid(_) => "invalid_request",
            Error::InvalidState(_) => "invalid_state",
            Error::Forbidden(_) => "forbidden",
            Error::Store(_) => "internal",
            Error::Unavailable(_) => "unavailable",
            Error::TooLarge(_) => "too_large",
            Error::Quota(_) => "quota_exceeded",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Valid names for environments, applications, pipelines, agents: 1-64 of `[A-Za-z0-9._-]`,
/// not starting with `.` or `-` (they become directory names on agents).
pub fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid {what} name {name:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'"
        )))
    }
}

/// Artifact versions: like names, plus `+` (semver build metadata).
pub fn validate_version(version: &str) -> Result<()> {
    let ok = !version.is_empty()
        && version.len() <= 128
        && !version.starts_with(['.', '-'])
        && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid version {version:?}: use 1-128 letters, digits, '.', '_', '-' or '+'")))
    }
}
