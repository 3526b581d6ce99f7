//! Custom roles and access groups, and the resolution of a principal's grants from them.
//!
//! Both are kept in the store's records (`role`, `access_group`) and mirrored in memory; every
//! change through the API reloads the mirror, and a reload also runs every few seconds so that
//! changes made through another orchestrator sharing the database take effect.
//!
//! A group scoped to applications confers only the application privileges of its roles
//! ([`Grant::new`] drops the global ones), on those applications only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use drover_core::Store;
use drover_core::rbac::{self, Grant, Principal, PrincipalKind, Privilege};
use drover_types::{AccessGroup, Role};

#[derive(Default)]
struct Table {
    roles: HashMap<String, Vec<Privilege>>,
    groups: Vec<AccessGroup>,
}

pub struct Principals {
    table: RwLock<Arc<Table>>,
}

pub const ROLE: &str = "role";
pub const GROUP: &str = "access_group";

/// A privilege by name.
pub fn privilege(name: &str) -> Option<Privilege> {
    Privilege::parse(name)
}

/// How often the mirror is reloaded from the store (changes made through another replica).
pub const RELOAD_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Principals {
    pub async fn load(store: &dyn Store) -> drover_core::Result<Self> {
        let p = Principals { table: RwLock::new(Arc::new(Table::default())) };
        p.reload(store).await?;
        Ok(p)
    }

    pub async fn reload(&self, store: &dyn Store) -> drover_core::Result<()> {
        let mut t = Table::default();
        for (name, body, _) in store.record_list(ROLE).await? {
            match serde_json::from_str::<Role>(&body) {
                Ok(r) => {
                    t.roles.insert(name, r.privileges.iter().filter_map(|p| privilege(p)).collect());
                }
                Err(e) => tracing::error!(role = %name, error = %e, "unreadable custom role ignored"),
            }
        }
        for (name, body, _) in store.record_list(GROUP).await? {
            match serde_json::from_str::<AccessGroup>(&body) {
                Ok(g) => t.groups.push(g),
                Err(e) => tracing::error!(group = %name, error = %e, "unreadable access group ignored"),
            }
        }
        *self.table.write().expect("poisoned") = Arc::new(t);
        Ok(())
    }

    /// (custom roles, access groups) in the table, for `/system/caches`.
    pub fn sizes(&self) -> (usize, usize) {
        let t = self.table.read().expect("poisoned");
        (t.roles.len(), t.groups.len())
    }

    /// The privileges of a role, built-in or custom.
    pub fn role(&self, name: &str) -> Option<Vec<Privilege>> {
        rbac::role_privileges(name).or_else(|| self.table.read().expect("poisoned").roles.get(name).cloned())
    }

    /// Roles, built-in and custom, that confer `p` (sorted, the agent role aside).
    pub fn roles_with(&self, p: Privilege) -> Vec<String> {
        let t = self.table.read().expect("poisoned").clone();
        let mut out: Vec<String> = rbac::BUILT_IN_ROLES
            .iter()
            .filter(|r| **r != rbac::AGENT_ROLE && rbac::role_privileges(r).is_some_and(|ps| ps.contains(&p)))
            .map(|r| r.to_string())
            .collect();
        let mut custom: Vec<String> =
            t.roles.iter().filter(|(_, ps)| ps.contains(&p)).map(|(n, _)| n.clone()).collect();
        custom.sort();
        out.extend(custom);
        out
    }

    /// A principal with its direct roles (unscoped) and its access groups' roles (scoped to the
    /// groups' applications).
    pub fn resolve(&self, kind: PrincipalKind, name: &str, roles: Vec<String>) -> Principal {
        self.resolve_scoped(kind, name, roles, true)
    }

    /// Like [`Self::resolve`]; `with_groups: false` for a token whose scope was narrowed: it
    /// carries only the roles it names.
    pub fn resolve_scoped(&self, kind: PrincipalKind, name: &str, roles: Vec<String>, with_groups: bool) -> Principal {
        let t = self.table.read().expect("poisoned").clone();
        let privileges_of = |r: &str| rbac::role_privileges(r).or_else(|| t.roles.get(r).cloned());
        let mut grants: Vec<Grant> =
            roles.iter().filter_map(|r| privileges_of(r).map(|privileges| Grant::new(r, privileges, None))).collect();
        for g in t.groups.iter().filter(|_| with_groups) {
            let member = match kind {
                PrincipalKind::Operator => g.operators.iter().any(|o| o == name),
                PrincipalKind::Client => g.clients.iter().any(|c| c == name),
                PrincipalKind::Agent => false,
            };
            if !member {
                continue;
            }
            let applications = (!g.applications.is_empty()).then(|| g.applications.clone());
            for r in &g.roles {
                // An access group never hands out the agent protocol.
                if let Some(p) =
                    privileges_of(r).map(|ps| ps.into_iter().filter(|p| *p != Privilege::AgentWork).collect())
                {
                    grants.push(Grant::new(r, p, applications.clone()));
                }
            }
        }
        Principal { kind, name: name.to_string(), roles, via: None, grants }
    }

    /// Every privilege the roles of a group confer with its scope (a scoped group: only the
    /// application privileges), and those that have no effect under the scope.
    pub fn group_privileges(&self, g: &AccessGroup) -> (Vec<Privilege>, Vec<Privilege>) {
        let mut all: Vec<Privilege> = g.roles.iter().filter_map(|r| self.role(r)).flatten().collect();
        all.retain(|p| *p != Privilege::AgentWork);
        all.sort();
        all.dedup();
        if g.applications.is_empty() {
            (all, Vec::new())
        } else {
            let ineffective = rbac::ineffective_when_scoped(&all);
            all.retain(|p| !p.is_global());
            (all, ineffective)
        }
    }
}
