//! The service layer: every operation of the API, as a function of the caller's principal and
//! its input. It checks privilege *and* application scope itself, so a handler cannot forget
//! one; it knows no HTTP (no web-framework types), and returns domain errors the API maps to
//! statuses.
//!
//! Scope rules (see docs/security.md):
//! - a global privilege counts only through an unscoped grant ([`Ctx::require`]);
//! - an application privilege counts on the applications of its grant; an object in an
//!   application the caller cannot read "does not exist" (404), one the caller can read but not
//!   act on is refused (403) ([`Ctx::on_application`]); lists are filtered to what the caller
//!   may read;
//! - nobody grants a privilege they do not hold globally ([`Ctx::within_ceiling`]).

pub mod access;
pub mod agent_protocol;
pub mod agents;
pub mod artifacts;
pub mod audit;
pub mod clients;
pub mod deployments;
pub mod environments;
pub mod keys;
pub mod operators;
pub mod pipelines;
pub mod profiles;
pub mod reports;
pub mod system;
pub mod variables;
pub mod waiting;

use drover_core::rbac::{Principal, Privilege};
use drover_core::{Error, Result};

use crate::AppState;

/// Who calls, and the orchestrator they call.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub state: &'a AppState,
    pub caller: &'a Principal,
}

impl<'a> Ctx<'a> {
    pub fn new(state: &'a AppState, caller: &'a Principal) -> Self {
        Ctx { state, caller }
    }

    /// A global privilege, held through an unscoped grant.
    pub fn require(&self, p: Privilege) -> Result<()> {
        if self.caller.holds_globally(p) {
            Ok(())
        } else {
            tracing::warn!(principal = %self.caller.label(), privilege = %p, "permission denied");
            Err(Error::Forbidden(format!("this needs the privilege {p}")))
        }
    }

    /// May the caller see this application's objects of the family `read` guards?
    pub fn sees(&self, read: Privilege, application: &str) -> bool {
        self.caller.can(read, application)
    }

    /// Acting with `p` on an object of `application` whose family `read` guards: when the
    /// caller cannot read it, it does not exist for them (`missing`, 404); when they can read
    /// but not act, 403.
    pub fn on_application(
        &self,
        p: Privilege,
        read: Privilege,
        application: &str,
        missing: impl FnOnce() -> String,
    ) -> Result<()> {
        if self.caller.can(p, application) {
            return Ok(());
        }
        if !self.caller.can(read, application) {
            return Err(Error::NotFound(missing()));
        }
        tracing::warn!(principal = %self.caller.label(), privilege = %p, application, "permission denied (application scope)");
        Err(Error::Forbidden(format!("this needs the privilege {p} on application {application}")))
    }

    /// Creating something in `application` (its name is the caller's own input, so a refusal
    /// tells nothing new): 403 without the privilege there.
    pub fn create_in(&self, p: Privilege, application: &str) -> Result<()> {
        if self.caller.can(p, application) {
            Ok(())
        } else {
            tracing::warn!(principal = %self.caller.label(), privilege = %p, application, "permission denied (application scope)");
            Err(Error::Forbidden(format!("this needs the privilege {p} on application {application}")))
        }
    }

    /// The grant ceiling: every privilege in `privileges` must be held globally by the caller
    /// (the agent protocol counts as held by holders of `agent.manage`, who register agents).
    pub fn within_ceiling(&self, privileges: &[Privilege], what: &str) -> Result<()> {
        let have = self.caller.global_privileges();
        let agents = have.contains(&Privilege::AgentManage);
        let held = |p: &Privilege| have.contains(p) || (*p == Privilege::AgentWork && agents);
        let mut missing: Vec<&str> = privileges.iter().filter(|p| !held(p)).map(|p| p.as_str()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        tracing::warn!(principal = %self.caller.label(), what, missing = %missing.join(","), "grant ceiling");
        Err(Error::Forbidden(format!(
            "{what} confers privileges you do not hold globally: {}; nobody grants more than they hold",
            missing.join(", ")
        )))
    }

    /// Who the caller is in events and `created_by`.
    pub fn label(&self) -> String {
        self.caller.label()
    }
}

/// Decodes an optional JSON body (empty means the default).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        serde_json::from_slice(body).map_err(|e| Error::BadRequest(e.to_string()))
    }
}
