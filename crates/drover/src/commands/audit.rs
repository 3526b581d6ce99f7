//! `audit list | verify | export`.

use super::*;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// List entries, newest first.
    List {
        /// e.g. operator:admin, agent:dev-1, anonymous
        #[arg(long)]
        principal: Option<String>,
        /// Substring of the action (e.g. approve, auth.failed).
        #[arg(long)]
        action: Option<String>,
        /// success, failure or denied.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Check the keyed chain and the signed checkpoints; exit 11 at the first rewritten,
    /// removed or truncated entry.
    Verify,
    /// Write the log, its checkpoints, the checkpoint public key and the chain key as JSON
    /// Lines, for a third party (docs/verify-audit-export.py checks it).
    Export {
        /// The file to write (mode 0600: it holds the chain key).
        #[arg(long)]
        out: PathBuf,
    },
}

pub async fn audit(conn: &Conn, cmd: AuditCommand) -> anyhow::Result<u8> {
    match cmd {
        AuditCommand::List { principal, action, outcome, limit } => {
            let v = client(conn)
                .await?
                .audit(principal.as_deref(), action.as_deref(), outcome.as_deref(), Some(limit))
                .await?;
            print(conn.output, &v, |v| {
                let mut s = String::new();
                for a in v {
                    let e = &a.entry;
                    s.push_str(&format!(
                        "{:>6} {} {:<22} {:<8} {} {} (from {}, request {})\n",
                        a.seq, e.ts, e.principal, e.outcome, e.action, e.target, e.source, e.request_id
                    ));
                }
                s
            })
        }
        AuditCommand::Verify => {
            let v = client(conn).await?.verify_audit().await?;
            let code = if v.ok { exit::OK } else { exit::AUDIT_BROKEN };
            print(conn.output, &v, |v| match &v.broken {
                None => format!(
                    "audit log intact: {} entries; head {} {}",
                    v.entries,
                    v.head_seq.unwrap_or(0),
                    v.head_hash.as_deref().unwrap_or("-")
                ),
                Some(b) => format!(
                    "audit log BROKEN at entry {}: {} ({} entries verified before it)",
                    b.seq, b.reason, v.entries
                ),
            })?;
            Ok(code)
        }
        AuditCommand::Export { out } => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt;
            let mut stream = Box::pin(client(conn).await?.audit_export().await?);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| format!("creating {}", out.display()))?;
            let mut bytes = 0usize;
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk?;
                bytes += chunk.len();
                f.write_all(&chunk)?;
            }
            f.sync_all()?;
            print(conn.output, &serde_json::json!({"file": out, "bytes": bytes}), |_| {
                format!(
                    "audit log exported to {} ({bytes} bytes); check it with docs/verify-audit-export.py",
                    out.display()
                )
            })
        }
    }
}

impl AuditCommand {
    pub async fn run(self, conn: &Conn) -> anyhow::Result<u8> {
        audit(conn, self).await
    }
}
