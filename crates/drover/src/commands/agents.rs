//! `agents`: list, register, label, approve, remove.

use super::*;

#[derive(Subcommand, Debug)]
pub enum AgentsCommand {
    /// Register an agent; prints its secret once.
    Add {
        name: String,
        #[arg(long)]
        environment: String,
        /// A label (KEY=VALUE, repeatable): fleet stages select agents by them.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Write the secret to this file (mode 0600) instead of printing it.
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// With --secret-out, print the secret as well.
        #[arg(long, requires = "secret_out")]
        show: bool,
        /// The agent's public keys (from `drover agent-keygen`): it authenticates with
        /// private_key_jwt and gets no secret.
        #[arg(long, conflicts_with = "secret_out")]
        jwks_file: Option<PathBuf>,
    },
    /// Replace an agent's labels (none given: remove them all).
    Label {
        name: String,
        /// KEY=VALUE, repeatable.
        #[arg(value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Approve a pending agent: from now on it gets work (needs variable.manage).
    Approve { name: String },
    /// Remove an agent.
    Remove { name: String },
}

/// What a registration printed says of a pending agent.
fn pending_note(cred: &drover_types::AgentCredentials) -> String {
    if cred.status == drover_types::AgentStatus::Pending {
        format!(
            "\npending: it gets no work until a holder of variable.manage approves it (drover agents approve {})",
            cred.name
        )
    } else {
        String::new()
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

pub async fn run(conn: &Conn, cmd: Option<AgentsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    match cmd {
        None => {
            let v = c.agents().await?;
            print(conn.output, &v, |v| render::agents(v))
        }
        Some(AgentsCommand::Label { name, labels }) => {
            let a = c.set_agent_labels(&name, &labels.into_iter().collect()).await?;
            print(conn.output, &a, |a| {
                let l: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("agent {} labels: {}", a.name, if l.is_empty() { "(none)".into() } else { l.join(", ") })
            })
        }
        Some(AgentsCommand::Add { name, environment, labels, secret_out, show, jwks_file }) => {
            let jwks = jwks_file.as_deref().map(read_json_file).transpose()?;
            if let Some(p) = &secret_out {
                check_writable(p)?;
            }
            let labels = labels.into_iter().collect();
            let cred = c.register_agent(&drover_types::NewAgent { name, environment, labels, jwks }).await?;
            if let Some(p) = &secret_out {
                write_private(p, &cred.secret)?;
                if !show {
                    return print(
                        conn.output,
                        &serde_json::json!({"name": cred.name, "environment": cred.environment, "secret_file": p}),
                        |_| {
                            format!(
                                "agent {} registered for environment {}\nsecret written to {} (not printed; --show prints it)\nrun it with: drover agent --url URL --ca-cert CA --name {} --secret-file {} --work-dir DIR --task-user USER{}",
                                cred.name,
                                cred.environment,
                                p.display(),
                                cred.name,
                                p.display(),
                                pending_note(&cred)
                            )
                        },
                    );
                }
            }
            if cred.secret.is_empty() {
                return print(conn.output, &cred, |c| {
                    format!(
                        "agent {} registered for environment {} (key authentication)\nrun it with: drover agent --url URL --ca-cert CA --name {} --key-file KEY --work-dir DIR --task-user USER{}",
                        c.name,
                        c.environment,
                        c.name,
                        pending_note(c)
                    )
                });
            }
            print(conn.output, &cred, |c| {
                format!(
                    "agent {} registered for environment {}\nsecret (shown once): {}\nrun it with: drover agent --url URL --ca-cert CA --name {} --secret-file FILE --work-dir DIR --task-user USER{}",
                    c.name,
                    c.environment,
                    c.secret,
                    c.name,
                    pending_note(c)
                )
            })
        }
        Some(AgentsCommand::Approve { name }) => {
            let a = c.approve_agent(&name).await?;
            print(conn.output, &a, |a| format!("agent {} ({}) is approved: it gets work", a.name, a.environment))
        }
        Some(AgentsCommand::Remove { name }) => {
            c.delete_agent(&name).await?;
            print(conn.output, &serde_json::json!({"removed": name}), |_| format!("agent {name} removed"))
        }
    }
}
