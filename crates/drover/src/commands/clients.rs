//! `client`: OAuth 2.0 client registrations.

use super::*;

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Register a client; prints its id and secret once (none for --public or --jwks-file).
    Create {
        name: String,
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Exact redirect URI for the authorization-code flow (repeatable).
        #[arg(long = "redirect-uri")]
        redirect_uris: Vec<String>,
        /// A public client (no secret; operator sign-in flows with PKCE only).
        #[arg(long)]
        public: bool,
        /// Public keys (a JWKS file) for private_key_jwt; the client gets no secret.
        #[arg(long)]
        jwks_file: Option<PathBuf>,
        /// Also write the secret to this file (mode 0600).
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// With --secret-out, print the secret as well.
        #[arg(long, requires = "secret_out")]
        show: bool,
    },
    /// List clients.
    List,
    /// One client: roles, state, redirect URIs, keys, secret rotation and revocation times.
    Show {
        name: String,
    },
    /// New secret; with --grace the old one keeps working that long (e.g. 1h).
    RegenerateSecret {
        name: String,
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
        #[arg(long)]
        secret_out: Option<PathBuf>,
        /// With --secret-out, print the secret as well.
        #[arg(long, requires = "secret_out")]
        show: bool,
    },
    /// Revoke every token the client holds, at once.
    RevokeTokens {
        name: String,
    },
    /// Refuse the client (its tokens stop working).
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Delete {
        name: String,
    },
}

pub async fn oauth_client(conn: &Conn, cmd: ClientCommand) -> anyhow::Result<u8> {
    let show_secret = |s: &drover_types::ClientSecret, out: &Option<PathBuf>| -> anyhow::Result<()> {
        if let Some(p) = out {
            write_private(p, &s.client_secret)?;
        }
        Ok(())
    };
    match cmd {
        ClientCommand::Create { name, roles, redirect_uris, public, jwks_file, secret_out, show } => {
            let jwks = jwks_file.as_deref().map(read_json_file).transpose()?;
            if roles.is_empty() && !public {
                bail!("give at least one --role (or --public for a client that only acts for operators)");
            }
            let n = drover_types::NewClient { name, roles, redirect_uris, public, jwks };
            if let Some(p) = &secret_out {
                check_writable(p)?;
            }
            let mut s = client(conn).await?.register_client(&n).await?;
            let had_secret = !s.client_secret.is_empty();
            if had_secret {
                show_secret(&s, &secret_out)?;
            }
            let written = withhold(&mut s, &secret_out, show);
            print(conn.output, &s, |s| match (&written, had_secret) {
                (_, false) => format!("client_id: {} (no secret)", s.client_id),
                (Some(p), true) => {
                    format!(
                        "client_id: {}\nclient_secret written to {} (not printed; --show prints it)",
                        s.client_id,
                        p.display()
                    )
                }
                (None, true) => format!("client_id: {}\nclient_secret (shown once): {}", s.client_id, s.client_secret),
            })
        }
        ClientCommand::List => {
            let v = client(conn).await?.clients().await?;
            print(conn.output, &v, |v| v.iter().map(|c| render::client_line(c) + "\n").collect())
        }
        ClientCommand::Show { name } => {
            let c = client(conn).await?.client_registration(&name).await?;
            print(conn.output, &c, |c| {
                let mut t = render::client_line(c);
                if c.public {
                    t.push_str("\npublic client (no secret; PKCE)");
                }
                if !c.redirect_uris.is_empty() {
                    t.push_str(&format!("\nredirect URIs: {}", c.redirect_uris.join(" ")));
                }
                if !c.key_ids.is_empty() {
                    t.push_str(&format!("\nprivate_key_jwt keys: {}", c.key_ids.join(" ")));
                }
                if let Some(a) = &c.agent {
                    t.push_str(&format!("\nthe client of agent {a}"));
                }
                t
            })
        }
        ClientCommand::RegenerateSecret { name, grace, secret_out, show } => {
            if let Some(p) = &secret_out {
                check_writable(p)?;
            }
            let mut s = client(conn).await?.regenerate_client_secret(&name, grace.unwrap_or_default()).await?;
            show_secret(&s, &secret_out)?;
            let written = withhold(&mut s, &secret_out, show);
            print(conn.output, &s, |s| {
                let mut t = match &written {
                    Some(p) => format!(
                        "client_id: {}\nnew client_secret written to {} (not printed; --show prints it)",
                        s.client_id,
                        p.display()
                    ),
                    None => format!("client_id: {}\nclient_secret (shown once): {}", s.client_id, s.client_secret),
                };
                let holder = written.as_ref().map(|p| format!(" (in {})", p.display())).unwrap_or_default();
                match s.previous_secret_valid_until {
                    Some(u) => t.push_str(&format!(
                        "\nthe previous secret works until {u}: give the new one{holder} to the agents and CI jobs \
                         that use this client before then"
                    )),
                    None => t.push_str("\nthe previous secret no longer works (use --grace 1h to keep it working while you roll out the new one)"),
                }
                t
            })
        }
        ClientCommand::RevokeTokens { name } => {
            let c = client(conn).await?.revoke_client_tokens(&name).await?;
            print(conn.output, &c, render::client_line)
        }
        ClientCommand::Disable { name } => {
            let u = drover_types::ClientUpdate { disabled: Some(true), ..Default::default() };
            let c = client(conn).await?.update_client(&name, &u).await?;
            print(conn.output, &c, render::client_line)
        }
        ClientCommand::Enable { name } => {
            let u = drover_types::ClientUpdate { disabled: Some(false), ..Default::default() };
            let c = client(conn).await?.update_client(&name, &u).await?;
            print(conn.output, &c, render::client_line)
        }
        ClientCommand::Delete { name } => {
            client(conn).await?.delete_client(&name).await?;
            print(conn.output, &serde_json::json!({"deleted": name}), |_| format!("client {name} deleted"))
        }
    }
}

impl ClientCommand {
    pub async fn run(self, conn: &Conn) -> anyhow::Result<u8> {
        oauth_client(conn, self).await
    }
}

/// With `--secret-out` and without `--show`, the secret is not printed (nor in JSON output):
/// returns the file it went to.
fn withhold(s: &mut drover_types::ClientSecret, out: &Option<PathBuf>, show: bool) -> Option<PathBuf> {
    match out {
        Some(p) if !show && !s.client_secret.is_empty() => {
            s.client_secret.clear();
            Some(p.clone())
        }
        _ => None,
    }
}
