//! `keys`: token-signing keys.

use super::*;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// List token-signing keys.
    List,
    /// Generate a new key and make it active; the old one keeps verifying its tokens.
    Rotate {
        /// ES256, EdDSA, RS256 or PS256 (default: the current key's algorithm).
        #[arg(long)]
        alg: Option<String>,
    },
    /// Import the private key under ALIAS from a keystore (PKCS#12, JKS or PEM).
    Import {
        file: PathBuf,
        #[arg(long)]
        alias: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Make it the active signing key.
        #[arg(long)]
        activate: bool,
        /// For RSA keys: RS256 (default) or PS256.
        #[arg(long)]
        alg: Option<String>,
    },
}

pub async fn keys(conn: &Conn, cmd: KeysCommand) -> anyhow::Result<u8> {
    match cmd {
        KeysCommand::List => {
            let v = client(conn).await?.keys().await?;
            print(conn.output, &v, |v| render::keys(v))
        }
        KeysCommand::Rotate { alg } => {
            let v = client(conn).await?.rotate_key_to(alg.as_deref()).await?;
            print(conn.output, &v, |v| {
                format!("new active key {} ({})", v["kid"].as_str().unwrap_or("?"), v["alg"].as_str().unwrap_or("?"))
            })
        }
        KeysCommand::Import { file, alias, password_file, activate, alg } => {
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let password = password_file.as_deref().map(read_secret_file).transpose()?;
            let ks =
                drover_keystore::open(&bytes, password.as_deref()).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            let (key, certs) = ks.signing_key(&alias).map_err(|e| anyhow!("{}: {e}", file.display()))?;
            // The entry's certificates go along: the orchestrator keeps the one that is this key's.
            let certs: Vec<&[u8]> = certs.iter().map(|c| c.der.as_slice()).collect();
            let v = client(conn)
                .await?
                .import_key_with_certificates(key.pkcs8_der(), &certs, alg.as_deref(), activate)
                .await?;
            print(conn.output, &v, |v| {
                let cert = v["certificate"]["not_after"]
                    .as_str()
                    .map(|t| {
                        format!("; certificate {} valid until {t}", v["certificate"]["subject"].as_str().unwrap_or("?"))
                    })
                    .unwrap_or_default();
                format!(
                    "imported key {} ({}){}{cert}",
                    v["kid"].as_str().unwrap_or("?"),
                    v["alg"].as_str().unwrap_or("?"),
                    if activate { " (active)" } else { "" }
                )
            })
        }
    }
}

impl KeysCommand {
    pub async fn run(self, conn: &Conn) -> anyhow::Result<u8> {
        keys(conn, self).await
    }
}
