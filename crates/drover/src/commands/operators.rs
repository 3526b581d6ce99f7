//! `operators`.

use super::*;

#[derive(Subcommand, Debug)]
pub enum OperatorsCommand {
    /// Add an operator; without --password-file a random password is generated and shown once.
    /// Without --role, the operator's rights come from access groups only.
    Add {
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Refuse the operator's logins.
    Disable { name: String },
    /// Accept the operator's logins again.
    Enable { name: String },
    /// Lift a lockout after repeated failed logins.
    Unlock { name: String },
    /// Set a new password (read from a file).
    SetPassword {
        name: String,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Replace the operator's roles.
    SetRoles {
        name: String,
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// End every login session of the operator (their tokens stop working now).
    RevokeSessions { name: String },
}

pub async fn run(conn: &Conn, cmd: Option<OperatorsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let update = |disabled: Option<bool>, roles: Option<Vec<String>>| drover_types::OperatorUpdate {
        email: None,
        roles,
        disabled,
    };
    let one = match cmd {
        None => {
            let v = c.operators().await?;
            return print(conn.output, &v, |v| render::operators(v));
        }
        Some(OperatorsCommand::Add { name, roles, email, password_file }) => {
            let password = password_file.as_deref().map(read_secret_file).transpose()?;
            let created = c.add_operator(&drover_types::NewOperator { name, email, roles, password }).await?;
            return print(conn.output, &created, |r| match &r.password {
                Some(pw) => format!("operator {} added\npassword (shown once): {pw}", r.operator.name),
                None => format!("operator {} added", r.operator.name),
            });
        }
        Some(OperatorsCommand::Disable { name }) => c.update_operator(&name, &update(Some(true), None)).await?,
        Some(OperatorsCommand::Enable { name }) => c.update_operator(&name, &update(Some(false), None)).await?,
        Some(OperatorsCommand::Unlock { name }) => c.unlock_operator(&name).await?,
        Some(OperatorsCommand::SetRoles { name, roles }) => {
            c.update_operator(&name, &update(None, Some(roles))).await?
        }
        Some(OperatorsCommand::RevokeSessions { name }) => {
            c.revoke_operator_sessions(&name).await?;
            return print(conn.output, &serde_json::json!({"name": name, "sessions": "revoked"}), |_| {
                format!("every session of {name} is revoked")
            });
        }
        Some(OperatorsCommand::SetPassword { name, password_file }) => {
            let pw = read_secret_file(&password_file)?;
            c.set_operator_password(&name, &pw).await?;
            return print(conn.output, &serde_json::json!({"name": name, "password": "changed"}), |_| {
                format!("password of {name} changed")
            });
        }
    };
    print(conn.output, &one, render::operator_line)
}
