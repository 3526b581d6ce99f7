//! `variables`: an environment's variables, plain and secret.

use std::io::Read;

use super::*;

#[derive(Subcommand, Debug)]
pub enum VariablesCommand {
    /// List an environment's variables (secret ones without their value).
    List { environment: String },
    /// Set a variable. A secret's value comes from --from-file or standard input, never from
    /// an argument (arguments end up in shell history and process lists).
    Set {
        environment: String,
        name: String,
        /// The value of a plain variable.
        value: Option<String>,
        /// Write-only, sealed at rest, masked in logs.
        #[arg(long)]
        secret: bool,
        /// Read the value from this file (all of it, without one trailing newline).
        #[arg(long, conflicts_with = "value")]
        from_file: Option<PathBuf>,
    },
    /// Delete a variable.
    Delete { environment: String, name: String },
}

/// A value from a file or standard input: all of it, without one trailing newline.
fn read_value(file: Option<&Path>) -> anyhow::Result<String> {
    let mut s = String::new();
    match file {
        Some(p) => s = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("value (end with Ctrl-D):");
            }
            std::io::stdin().read_to_string(&mut s).context("reading standard input")?;
        }
    }
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    Ok(s)
}

pub async fn run(conn: &Conn, cmd: VariablesCommand) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    match cmd {
        VariablesCommand::List { environment } => {
            let v = c.variables(&environment).await?;
            print(conn.output, &v, |v| {
                if v.is_empty() {
                    return format!("environment {environment} has no variables");
                }
                v.iter()
                    .map(|x| match (&x.value, x.secret) {
                        (_, true) => format!("{}  (secret, set by {})", x.name, x.updated_by),
                        (Some(val), false) => format!("{}={val}", x.name),
                        (None, false) => x.name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        }
        VariablesCommand::Set { environment, name, value, secret, from_file } => {
            let value = match (value, secret) {
                (Some(_), true) => {
                    bail!("a secret's value is not taken from an argument: use --from-file FILE or standard input")
                }
                (Some(v), false) => v,
                (None, _) => read_value(from_file.as_deref())?,
            };
            let v = c.set_variable(&environment, &name, &drover_types::SetVariable { value, secret }).await?;
            print(conn.output, &v, |v| {
                let kind = if v.secret { "secret variable" } else { "variable" };
                format!("{kind} {} set for environment {}", v.name, v.environment)
            })
        }
        VariablesCommand::Delete { environment, name } => {
            c.delete_variable(&environment, &name).await?;
            print(conn.output, &serde_json::json!({"deleted": name, "environment": environment}), |_| {
                format!("variable {name} of environment {environment} deleted")
            })
        }
    }
}
