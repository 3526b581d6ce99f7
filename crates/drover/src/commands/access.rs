//! `roles` and `access-groups`.

use super::*;

#[derive(Subcommand, Debug)]
pub enum RolesCommand {
    /// A custom role: a name and its privileges.
    Create {
        name: String,
        #[arg(long = "privilege", required = true)]
        privileges: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    Delete {
        name: String,
    },
}

pub async fn roles(conn: &Conn, cmd: Option<RolesCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let line = |r: &drover_types::Role| {
        format!("{:<20} {:<9} {}", r.name, if r.built_in { "built-in" } else { "custom" }, r.privileges.join(","))
    };
    match cmd {
        None => {
            let v = c.roles().await?;
            print(conn.output, &v, |v| v.iter().map(|r| line(r) + "\n").collect())
        }
        Some(RolesCommand::Create { name, privileges, description }) => {
            let r = c.create_role(&drover_types::Role { name, privileges, built_in: false, description }).await?;
            print(conn.output, &r, line)
        }
        Some(RolesCommand::Delete { name }) => {
            c.delete_role(&name).await?;
            print(conn.output, &serde_json::json!({"deleted": name}), |_| format!("role {name} deleted"))
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AccessGroupsCommand {
    /// Create or replace an access group: members get the roles, on the applications given
    /// (all applications without --application).
    Set {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[arg(long = "operator")]
        operators: Vec<String>,
        #[arg(long = "client")]
        clients: Vec<String>,
        #[arg(long = "application")]
        applications: Vec<String>,
    },
    Delete {
        name: String,
    },
}

pub async fn access_groups(conn: &Conn, cmd: Option<AccessGroupsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let line = |g: &drover_types::AccessGroup| {
        format!(
            "{:<20} roles {}; operators {}; clients {}; applications {}",
            g.name,
            g.roles.join(","),
            if g.operators.is_empty() { "-".into() } else { g.operators.join(",") },
            if g.clients.is_empty() { "-".into() } else { g.clients.join(",") },
            if g.applications.is_empty() { "all".into() } else { g.applications.join(",") },
        ) + &if g.ineffective_privileges.is_empty() {
            String::new()
        } else {
            format!("; no effect under its scope: {}", g.ineffective_privileges.join(","))
        }
    };
    match cmd {
        None => {
            let v = c.access_groups().await?;
            print(conn.output, &v, |v| v.iter().map(|g| line(g) + "\n").collect())
        }
        Some(AccessGroupsCommand::Set { name, roles, operators, clients, applications }) => {
            let g = drover_types::AccessGroup {
                name,
                roles,
                operators,
                clients,
                applications,
                ineffective_privileges: vec![],
            };
            let g = c.put_access_group(&g).await?;
            print(conn.output, &g, line)
        }
        Some(AccessGroupsCommand::Delete { name }) => {
            c.delete_access_group(&name).await?;
            print(conn.output, &serde_json::json!({"deleted": name}), |_| format!("access group {name} deleted"))
        }
    }
}
