//! `master-key` (local, orchestrator stopped).

use super::*;

/// Where the secrets at rest are (the orchestrator's data dir and database).
#[derive(Args, Debug)]
pub struct Store {
    #[arg(long, env = "DROVER_DATA_DIR", default_value = "./drover-data")]
    data_dir: PathBuf,
    #[arg(long, env = "DROVER_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum MasterKeyCommand {
    /// Replace the master key and re-seal every stored secret with the new one. Run it while
    /// the orchestrator is stopped.
    Rotate(Store),
    /// Re-seal every stored secret under the current master key (after changing
    /// DROVER_MASTER_KEY by hand, with the old key in DROVER_MASTER_KEY_RETIRED).
    Reseal(Store),
}

pub async fn master_key(output: Output, cmd: MasterKeyCommand) -> anyhow::Result<u8> {
    match cmd {
        MasterKeyCommand::Reseal(Store { data_dir, database_url }) => {
            let r = drover_server::reseal(&data_dir, database_url.as_deref()).await?;
            print(output, &r, |r| {
                format!(
                    "{} signing keys, {} profile secrets, {} secret variables and {} portal sessions re-sealed under master key {}",
                    r.signing_keys, r.profile_secrets, r.variable_secrets, r.portal_sessions, r.new_id
                )
            })
        }
        MasterKeyCommand::Rotate(Store { data_dir, database_url }) => {
            let r = drover_server::rotate_master_key(&data_dir, database_url.as_deref()).await?;
            print(output, &r, |r| {
                format!(
                    "master key {} replaced by {}: {} signing keys, {} profile secrets, {} secret variables and {} portal \
                     sessions re-sealed\n\
                     the old key is kept as {}; delete it once no backup needs it",
                    r.old_id,
                    r.new_id,
                    r.signing_keys,
                    r.profile_secrets,
                    r.variable_secrets,
                    r.portal_sessions,
                    r.retired_file.as_deref().map(|p| p.display().to_string()).unwrap_or_default()
                )
            })
        }
    }
}

impl MasterKeyCommand {
    pub async fn run(self, conn: &Conn) -> anyhow::Result<u8> {
        master_key(conn.output, self).await
    }
}
