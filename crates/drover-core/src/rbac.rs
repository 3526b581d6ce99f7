//! Privileges, built-in roles and principals. Deny by default: a principal has exactly the
//! privileges of its roles.

use std::fmt;

pub const RELEASE_ADMIN: &str = "release-admin";

macro_rules! privileges {
    ($($variant:ident => $s:literal),+ $(,)?) => {
        /// A fine-grained privilege; every route declares the one it needs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Privilege { $($variant),+ }
        impl Privilege {
            pub const ALL: &'static [Privilege] = &[$(Privilege::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $(Privilege::$variant => $s),+ } }
        }
    };
}

privileges! {
    PipelineRead => "pipeline.read",
    PipelineManage => "pipeline.manage",
    EnvironmentManage => "environment.manage",
    DeploymentStart => "deployment.start",
    DeploymentAbort => "deployment.abort",
    DeploymentPause => "deployment.pause",
    DeploymentRetry => "deployment.retry",
    DeploymentSkip => "deployment.skip",
    DeploymentRollback => "deployment.rollback",
    DeploymentPromote => "deployment.promote",
    TaskApprove => "task.approve",
    ArtifactRead => "artifact.read",
    ArtifactPush => "artifact.push",
    AgentRead => "agent.read",
    AgentManage => "agent.manage",
    ClientManage => "client.manage",
    OperatorManage => "operator.manage",
    RoleManage => "role.manage",
    KeystoreManage => "keystore.manage",
    AuthProfileManage => "auth-profile.manage",
    AuditRead => "audit.read",
    SystemObserve => "system.observe",
    SystemManage => "system.manage",
    // agent.work: the agent protocol (poll for work, report results, download artifacts).
    AgentWork => "agent.work",
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Privileges of a built-in role; `None` for an unknown role.
pub fn role_privileges(role: &str) -> Option<Vec<Privilege>> {
    use Privilege::*;
    let reads = [PipelineRead, ArtifactRead, AgentRead];
    let v: Vec<Privilege> = match role {
        RELEASE_ADMIN => Privilege::ALL.iter().copied().filter(|p| *p != AgentWork).collect(),
        "app-admin" => [
            &reads[..],
            &[
                PipelineManage,
                EnvironmentManage,
                DeploymentStart,
                DeploymentAbort,
                DeploymentPause,
                DeploymentRetry,
                DeploymentSkip,
                DeploymentRollback,
                DeploymentPromote,
                TaskApprove,
                ArtifactPush,
            ],
        ]
        .concat(),
        "deployer" => [
            &reads[..],
            &[
                DeploymentStart,
                DeploymentAbort,
                DeploymentPause,
                DeploymentRetry,
                DeploymentSkip,
                DeploymentRollback,
                DeploymentPromote,
                ArtifactPush,
            ],
        ]
        .concat(),
        "approver" => [&reads[..], &[TaskApprove]].concat(),
        "viewer" => reads.to_vec(),
        "api" => [&reads[..], &[DeploymentStart, ArtifactPush, PipelineManage]].concat(),
        "api-sysadmin" => [&reads[..], &[SystemObserve, SystemManage, AgentManage]].concat(),
        "sysops-observer" => vec![SystemObserve, AgentRead],
        "sysops-admin" => vec![SystemObserve, SystemManage, AgentRead, AgentManage],
        "agent" => vec![AgentWork],
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
    "agent",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    Operator,
    Agent,
    /// An OAuth 2.0 client (machine) with an access token.
    Client,
}

/// Privileges granted together, everywhere or only on some applications.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub privileges: Vec<Privilege>,
    /// `None`: every application; otherwise only these.
    pub applications: Option<Vec<String>>,
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
        let grants = roles
            .iter()
            .filter_map(|r| role_privileges(r))
            .map(|privileges| Grant { privileges, applications: None })
            .collect();
        Principal { kind, name: name.into(), roles, via: None, grants }
    }

    /// Holds the privilege somewhere (the route guard's question).
    pub fn has(&self, p: Privilege) -> bool {
        self.grants.iter().any(|g| g.privileges.contains(&p))
    }

    /// Holds the privilege on this application (a handler's question, once it knows the target).
    pub fn can(&self, p: Privilege, application: &str) -> bool {
        self.grants.iter().any(|g| {
            g.privileges.contains(&p)
                && g.applications.as_ref().is_none_or(|apps| apps.iter().any(|a| a == application))
        })
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
            assert_eq!(admin.has(*p), *p != Privilege::AgentWork, "{p}");
        }
        let agent = Principal::new(PrincipalKind::Agent, "x", vec!["agent".into()]);
        for p in Privilege::ALL {
            assert_eq!(agent.has(*p), *p == Privilege::AgentWork, "{p}");
        }
        let nobody = Principal::new(PrincipalKind::Operator, "n", vec!["no-such".into()]);
        assert!(Privilege::ALL.iter().all(|p| !nobody.has(*p)));
    }
}
