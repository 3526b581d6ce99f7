//! Privileges, built-in roles and principals. Deny by default: a principal has exactly the
//! privileges of its roles.

use std::fmt;

pub const RELEASE_ADMIN: &str = "release-admin";

macro_rules! privileges {
    ($($variant:ident => $s:literal, $kind:ident),+ $(,)?) => {
        /// A fine-grained privilege; every route declares the one it needs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Privilege { $($variant),+ }
        impl Privilege {
            pub const ALL: &'static [Privilege] = &[$(Privilege::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $(Privilege::$variant => $s),+ } }
            /// Whether it acts on one application's objects or on the orchestrator as a whole.
            pub fn kind(self) -> PrivilegeKind { match self { $(Privilege::$variant => PrivilegeKind::$kind),+ } }
        }
    };
}

/// The two kinds of privilege.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivilegeKind {
    /// Acts on one application's pipelines, deployments, artifacts and logs; an access group
    /// scoped to applications confers it on those applications.
    Application,
    /// Acts on the orchestrator as a whole (environments, agents, identities, keys, audit,
    /// system); only an unscoped grant (a direct role, or a group without applications)
    /// confers it.
    Global,
}

// The table: privilege, name, kind. docs/security.md carries the same table (a test compares).
privileges! {
    PipelineRead => "pipeline.read", Application,
    PipelineManage => "pipeline.manage", Application,
    DeploymentStart => "deployment.start", Application,
    DeploymentAbort => "deployment.abort", Application,
    DeploymentPause => "deployment.pause", Application,
    DeploymentRetry => "deployment.retry", Application,
    DeploymentSkip => "deployment.skip", Application,
    DeploymentRollback => "deployment.rollback", Application,
    DeploymentPromote => "deployment.promote", Application,
    TaskApprove => "task.approve", Application,
    ApprovalOverride => "approval.override", Application,
    ArtifactRead => "artifact.read", Application,
    ArtifactPush => "artifact.push", Application,
    ArtifactDelete => "artifact.delete", Application,
    EnvironmentManage => "environment.manage", Global,
    AgentRead => "agent.read", Global,
    AgentManage => "agent.manage", Global,
    ClientManage => "client.manage", Global,
    OperatorManage => "operator.manage", Global,
    RoleManage => "role.manage", Global,
    KeystoreManage => "keystore.manage", Global,
    AuthProfileManage => "auth-profile.manage", Global,
    VariableRead => "variable.read", Global,
    VariableManage => "variable.manage", Global,
    AuditRead => "audit.read", Global,
    SystemObserve => "system.observe", Global,
    SystemManage => "system.manage", Global,
    TokenIntrospect => "token.introspect", Global,
    // agent.work: the agent protocol (poll for work, report results, download artifacts).
    AgentWork => "agent.work", Global,
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Privilege {
    pub fn parse(name: &str) -> Option<Privilege> {
        Privilege::ALL.iter().copied().find(|p| p.as_str() == name)
    }
    pub fn is_global(self) -> bool {
        self.kind() == PrivilegeKind::Global
    }
}

/// The role agents hold (through their client registration only).
pub const AGENT_ROLE: &str = "agent";

/// Privileges of a built-in role; `None` for an unknown role.
pub fn role_privileges(role: &str) -> Option<Vec<Privilege>> {
    use Privilege::*;
    let reads = [PipelineRead, ArtifactRead, AgentRead];
    let deploy = [
        DeploymentStart,
        DeploymentAbort,
        DeploymentPause,
        DeploymentRetry,
        DeploymentSkip,
        DeploymentRollback,
        DeploymentPromote,
    ];
    let v: Vec<Privilege> = match role {
        RELEASE_ADMIN => Privilege::ALL.iter().copied().filter(|p| *p != AgentWork).collect(),
        // Every application privilege but the override of approvals.
        "app-admin" => Privilege::ALL
            .iter()
            .copied()
            .filter(|p| !p.is_global() && *p != ApprovalOverride)
            .chain([AgentRead])
            .collect(),
        "deployer" => [&reads[..], &deploy[..], &[ArtifactPush]].concat(),
        "approver" => [&reads[..], &[TaskApprove]].concat(),
        "viewer" => reads.to_vec(),
        "api" => [&reads[..], &[DeploymentStart, ArtifactPush, PipelineManage]].concat(),
        "api-sysadmin" => [&reads[..], &[SystemObserve, SystemManage, AgentManage, TokenIntrospect]].concat(),
        "sysops-observer" => vec![SystemObserve, AgentRead],
        "sysops-admin" => vec![SystemObserve, SystemManage, AgentRead, AgentManage],
        AGENT_ROLE => vec![AgentWork],
        _ => return None,
    };
    Some(v)
}

pub const BUILT_IN_ROLES: &[&str] = &[
    RELEASE_ADMIN,
    "app-admin",
    "deployer",
    "approver",
    "viewer",
    "api",
    "api-sysadmin",
    "sysops-observer",
    "sysops-admin",
    AGENT_ROLE,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Operator,
    Agent,
    /// An OAuth 2.0 client (machine) with an access token.
    Client,
}

/// A role held everywhere or only on some applications, with the privileges it confers there.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub role: String,
    pub privileges: Vec<Privilege>,
    /// `None`: every application (and the orchestrator itself); otherwise only these.
    pub applications: Option<Vec<String>>,
}

impl Grant {
    /// A grant of `role`'s privileges. Scoped to applications, it confers only the application
    /// privileges among them: by construction, no scoped grant holds a global privilege.
    pub fn new(role: &str, privileges: Vec<Privilege>, applications: Option<Vec<String>>) -> Grant {
        let privileges = match &applications {
            None => privileges,
            Some(_) => privileges.into_iter().filter(|p| !p.is_global()).collect(),
        };
        Grant { role: role.to_string(), privileges, applications }
    }
    fn covers(&self, application: &str) -> bool {
        self.applications.as_ref().is_none_or(|apps| apps.iter().any(|a| a == application))
    }
}

/// The privileges of `privileges` that a grant scoped to applications does not confer.
pub fn ineffective_when_scoped(privileges: &[Privilege]) -> Vec<Privilege> {
    privileges.iter().copied().filter(|p| p.is_global()).collect()
}

/// Which applications a principal may do something on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applications {
    All,
    Only(Vec<String>),
}

impl Applications {
    pub fn contains(&self, application: &str) -> bool {
        match self {
            Applications::All => true,
            Applications::Only(v) => v.iter().any(|a| a == application),
        }
    }
    pub fn is_empty(&self) -> bool {
        matches!(self, Applications::Only(v) if v.is_empty())
    }
}

/// Who made a request. Every authenticated request resolves to exactly one.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub name: String,
    /// The roles the principal holds directly (unscoped).
    pub roles: Vec<String>,
    /// For an operator acting through a client (the CLI, the portal): that client's id.
    pub via: Option<String>,
    /// What the principal may do: its direct roles, plus its access groups' roles.
    pub grants: Vec<Grant>,
}

impl Principal {
    /// A principal with built-in roles only (unscoped).
    pub fn new(kind: PrincipalKind, name: impl Into<String>, roles: Vec<String>) -> Self {
        let grants =
            roles.iter().filter_map(|r| role_privileges(r).map(|privileges| Grant::new(r, privileges, None))).collect();
        Principal { kind, name: name.into(), roles, via: None, grants }
    }

    /// Holds the privilege through an unscoped grant (everywhere, and on the orchestrator).
    pub fn holds_globally(&self, p: Privilege) -> bool {
        self.grants.iter().any(|g| g.applications.is_none() && g.privileges.contains(&p))
    }

    /// The route guard's question: a global privilege held globally, or an application
    /// privilege held on at least one application (the service then checks the target's).
    pub fn may_call(&self, p: Privilege) -> bool {
        if p.is_global() { self.holds_globally(p) } else { self.grants.iter().any(|g| g.privileges.contains(&p)) }
    }

    /// Holds the privilege on this application.
    pub fn can(&self, p: Privilege, application: &str) -> bool {
        self.grants.iter().any(|g| g.privileges.contains(&p) && g.covers(application))
    }

    /// The applications on which the principal holds the privilege (to filter lists).
    pub fn applications_with(&self, p: Privilege) -> Applications {
        let mut apps = Vec::new();
        for g in self.grants.iter().filter(|g| g.privileges.contains(&p)) {
            match &g.applications {
                None => return Applications::All,
                Some(v) => apps.extend(v.iter().cloned()),
            }
        }
        apps.sort();
        apps.dedup();
        Applications::Only(apps)
    }

    /// The roles held on this application (directly or through a group covering it).
    pub fn roles_on(&self, application: &str) -> Vec<String> {
        let mut v: Vec<String> = self.grants.iter().filter(|g| g.covers(application)).map(|g| g.role.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every privilege held through unscoped grants: the ceiling of what this principal may
    /// grant to others.
    pub fn global_privileges(&self) -> Vec<Privilege> {
        let mut v: Vec<Privilege> = self
            .grants
            .iter()
            .filter(|g| g.applications.is_none())
            .flat_map(|g| g.privileges.iter().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every privilege held anywhere.
    pub fn all_privileges(&self) -> Vec<Privilege> {
        let mut v: Vec<Privilege> = self.grants.iter().flat_map(|g| g.privileges.iter().copied()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// How the principal appears in the audit log: `operator:admin`, `agent:dev-1`,
    /// `operator:alice via client:drover-cli`.
    pub fn audit_label(&self) -> String {
        let base = match self.kind {
            PrincipalKind::Operator => format!("operator:{}", self.name),
            PrincipalKind::Agent => format!("agent:{}", self.name),
            PrincipalKind::Client => format!("client:{}", self.name),
        };
        match &self.via {
            Some(c) => format!("{base} via client:{c}"),
            None => base,
        }
    }
    /// How the principal appears in events and `created_by`: `admin`, `agent:dev-1`, `client:ci`.
    pub fn label(&self) -> String {
        match self.kind {
            PrincipalKind::Operator => self.name.clone(),
            PrincipalKind::Agent => format!("agent:{}", self.name),
            PrincipalKind::Client => format!("client:{}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_admin_has_all_but_agent_work_and_agents_only_work() {
        let admin = Principal::new(PrincipalKind::Operator, "a", vec![RELEASE_ADMIN.into()]);
        for p in Privilege::ALL {
            assert_eq!(admin.may_call(*p), *p != Privilege::AgentWork, "{p}");
        }
        let agent = Principal::new(PrincipalKind::Agent, "x", vec!["agent".into()]);
        for p in Privilege::ALL {
            assert_eq!(agent.may_call(*p), *p == Privilege::AgentWork, "{p}");
        }
        let nobody = Principal::new(PrincipalKind::Operator, "n", vec!["no-such".into()]);
        assert!(Privilege::ALL.iter().all(|p| !nobody.may_call(*p)));
    }

    #[test]
    fn a_scoped_grant_confers_application_privileges_only() {
        let all = role_privileges(RELEASE_ADMIN).unwrap();
        let p = Principal {
            kind: PrincipalKind::Operator,
            name: "carol".into(),
            roles: vec![],
            via: None,
            grants: vec![Grant::new(RELEASE_ADMIN, all.clone(), Some(vec!["shop".into()]))],
        };
        for priv_ in &all {
            let app = !priv_.is_global();
            assert_eq!(p.may_call(*priv_), app, "{priv_}");
            assert_eq!(p.can(*priv_, "shop"), app, "{priv_} on shop");
            assert!(!p.can(*priv_, "other"), "{priv_} on other");
            assert!(!p.holds_globally(*priv_), "{priv_}");
        }
        assert!(p.global_privileges().is_empty());
        assert_eq!(p.applications_with(Privilege::PipelineRead), Applications::Only(vec!["shop".into()]));
        assert_eq!(p.roles_on("shop"), vec![RELEASE_ADMIN.to_string()]);
        assert!(p.roles_on("other").is_empty());
        assert_eq!(
            ineffective_when_scoped(&all).len(),
            Privilege::ALL.iter().filter(|x| x.is_global() && **x != Privilege::AgentWork).count()
        );
    }

    /// docs/security.md carries the same table of privileges and kinds as the code.
    #[test]
    fn the_documented_table_is_the_code() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/security.md")).unwrap();
        let mut documented = Vec::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() >= 4
                && let Some(name) = cells[1].strip_prefix('`').and_then(|c| c.strip_suffix('`'))
                && (cells[2] == "application" || cells[2] == "global")
            {
                documented.push((name.to_string(), cells[2].to_string()));
            }
        }
        let code: Vec<(String, String)> = Privilege::ALL
            .iter()
            .map(|p| {
                let kind = if p.is_global() { "global" } else { "application" };
                (p.as_str().to_string(), kind.to_string())
            })
            .collect();
        assert_eq!(documented, code, "docs/security.md and rbac.rs list the same privileges, kinds and order");
    }

    #[test]
    fn built_in_roles_are_consistent_with_the_kinds() {
        // app-admin is "the application privileges" (plus reading agents), without the override.
        let aa = role_privileges("app-admin").unwrap();
        assert!(aa.iter().all(|p| !p.is_global() || *p == Privilege::AgentRead));
        assert!(!aa.contains(&Privilege::ApprovalOverride));
        assert!(!aa.contains(&Privilege::EnvironmentManage));
        for r in BUILT_IN_ROLES {
            let ps = role_privileges(r).unwrap();
            assert_eq!(ps.contains(&Privilege::AgentWork), *r == AGENT_ROLE, "{r}");
        }
        for p in Privilege::ALL {
            assert_eq!(Privilege::parse(p.as_str()), Some(*p));
        }
    }
}
