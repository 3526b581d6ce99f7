//! `artifact push | list | delete`.

use super::*;

#[derive(Subcommand, Debug)]
pub enum ArtifactCommand {
    /// Stream a file (a .tar.gz) to the orchestrator as APP VERSION.
    Push {
        file: PathBuf,
        #[arg(long)]
        app: String,
        #[arg(long)]
        version: String,
    },
    /// List artifacts.
    List {
        #[arg(long)]
        app: Option<String>,
    },
    /// Delete a version (refused while a deployment that has not ended uses it).
    Delete {
        #[arg(long)]
        app: String,
        #[arg(long)]
        version: String,
    },
}

pub async fn artifact(conn: &Conn, cmd: ArtifactCommand) -> anyhow::Result<u8> {
    match cmd {
        ArtifactCommand::Push { file, app, version } => {
            let c = client(conn).await?;
            let len = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?.len();
            let tty = std::io::stderr().is_terminal() && conn.output == Output::Text;
            let shown = Arc::new(AtomicU64::new(0));
            let progress = {
                let shown = shown.clone();
                move |sent: u64| {
                    if !tty {
                        return;
                    }
                    let pct = (sent * 100).checked_div(len).unwrap_or(100);
                    if shown.swap(pct, Ordering::Relaxed) != pct || sent == len {
                        let bar = "#".repeat((pct / 4) as usize);
                        eprint!("\r[{bar:<25}] {pct:>3}% {} / {} MiB", sent >> 20, len >> 20);
                        let _ = std::io::stderr().flush();
                    }
                }
            };
            let a = c.push_artifact(&app, &version, &file, None, progress).await;
            if tty {
                eprintln!();
            }
            let a = a?;
            print(conn.output, &a, |a| {
                format!("{} {} stored: {} bytes, sha256 {}", a.application, a.version, a.size, a.sha256)
            })
        }
        ArtifactCommand::Delete { app, version } => {
            client(conn).await?.delete_artifact(&app, &version).await?;
            println!("{app} {version} deleted");
            Ok(exit::OK)
        }
        ArtifactCommand::List { app } => {
            let v = client(conn).await?.artifacts(app.as_deref()).await?;
            print(conn.output, &v, |v| render::artifacts(v))
        }
    }
}

impl ArtifactCommand {
    pub async fn run(self, conn: &Conn) -> anyhow::Result<u8> {
        artifact(conn, self).await
    }
}
