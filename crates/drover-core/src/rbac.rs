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

/// Who made a request. Every authenticated request resolves to exactly one.
#[derive(Debug, Clone)]
pub struct Principal {
    pub kind: PrincipalKind,
    pub name: String,
    pub roles: Vec<String>,
}

impl Principal {
    pub fn has(&self, p: Privilege) -> bool {
        self.roles.iter().any(|r| role_privileges(r).is_some_and(|ps| ps.contains(&p)))
    }
    /// How the principal appears in the audit log: `operator:admin`, `agent:dev-1`.
    pub fn audit_label(&self) -> String {
        match self.kind {
            PrincipalKind::Operator => format!("operator:{}", self.name),
            PrincipalKind::Agent => format!("agent:{}", self.name),
            PrincipalKind::Client => format!("client:{}", self.name),
        }
    }
    /// How the principal appears in events and `created_by`: `operator:admin`, `agent:dev-1`.
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
        let admin = Principal { kind: PrincipalKind::Operator, name: "a".into(), roles: vec![RELEASE_ADMIN.into()] };
        for p in Privilege::ALL {
            assert_eq!(admin.has(*p), *p != Privilege::AgentWork, "{p}");
        }
        let agent = Principal { kind: PrincipalKind::Agent, name: "x".into(), roles: vec!["agent".into()] };
        for p in Privilege::ALL {
            assert_eq!(agent.has(*p), *p == Privilege::AgentWork, "{p}");
        }
        let nobody = Principal { kind: PrincipalKind::Operator, name: "n".into(), roles: vec!["no-such".into()] };
        assert!(Privilege::ALL.iter().all(|p| !nobody.has(*p)));
    }
}
