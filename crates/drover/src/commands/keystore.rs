//! `keystore inspect` (local, no orchestrator).

use super::*;

#[derive(Subcommand, Debug)]
pub enum KeystoreCommand {
    /// List aliases, key types, certificate subjects and expiry. Never prints key material.
    Inspect {
        file: PathBuf,
        /// File holding the keystore password (PKCS#12 and JKS need one).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Read the password from standard input.
        #[arg(long, conflicts_with = "password_file")]
        password_stdin: bool,
    },
}

#[derive(Serialize)]
struct InspectEntry<'a> {
    alias: &'a str,
    key_type: Option<String>,
    certificates: &'a [drover_keystore::CertInfo],
}

pub fn keystore(output: Output, cmd: KeystoreCommand) -> anyhow::Result<u8> {
    let KeystoreCommand::Inspect { file, password_file, password_stdin } = cmd;
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    let password = if password_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s)?;
        Some(s.trim_end_matches(['\r', '\n']).to_string())
    } else {
        password_file.as_deref().map(read_secret_file).transpose()?
    };
    let ks = drover_keystore::open(&bytes, password.as_deref()).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let entries: Vec<InspectEntry> = ks
        .entries
        .iter()
        .map(|e| InspectEntry {
            alias: &e.alias,
            key_type: e.key.as_ref().map(|k| k.kind.to_string()),
            certificates: &e.certs,
        })
        .collect();
    let view = serde_json::json!({"format": ks.format, "entries": entries});
    print(output, &view, |_| {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut s = format!(
            "{}: {} keystore, {} entr{}\n",
            file.display(),
            ks.format,
            ks.entries.len(),
            if ks.entries.len() == 1 { "y" } else { "ies" }
        );
        for e in &ks.entries {
            let what = match &e.key {
                Some(k) => format!("private key {} with {} certificate(s)", k.kind, e.certs.len()),
                None => "trusted certificate".to_string(),
            };
            s.push_str(&format!("  {}: {what}\n", e.alias));
            for c in &e.certs {
                let expiry = drover_types::Timestamp(c.not_after * 1000);
                let left = (c.not_after - now) / 86_400;
                let state = if c.not_after < now { "EXPIRED".to_string() } else { format!("in {left} days") };
                s.push_str(&format!(
                    "    subject {}\n    issuer  {}\n    expires {expiry} ({state}); public key {}; sha256 {}\n",
                    c.subject, c.issuer, c.public_key, c.sha256
                ));
            }
        }
        s
    })
}

impl KeystoreCommand {
    pub fn run(self, output: Output) -> anyhow::Result<u8> {
        keystore(output, self)
    }
}
