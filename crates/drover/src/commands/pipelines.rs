//! `apply`, `pipelines`, `environments`.

use super::*;

pub async fn apply(conn: &Conn, file: &Path) -> anyhow::Result<u8> {
    let yaml = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let c = client(conn).await?;
    let r = c.apply_yaml(&yaml).await.map_err(|e| match e {
        drover_client::Error::Api { status: 422, code, message } => {
            anyhow!(drover_client::Error::Api { status: 422, code, message: format!("{}: {message}", file.display()) })
        }
        e => anyhow!(e),
    })?;
    print(conn.output, &r, |r| {
        let mut s = format!("pipeline {} {}", r.pipeline.name, r.outcome);
        for e in &r.created_environments {
            s.push_str(&format!("\nenvironment {e} created"));
        }
        s
    })
}

pub async fn list(conn: &Conn) -> anyhow::Result<u8> {
    let v = client(conn).await?.pipelines().await?;
    print(conn.output, &v, |v| render::pipelines(v))
}

#[derive(Subcommand, Debug)]
pub enum EnvironmentsCommand {
    /// Create or change an environment (needs environment.manage).
    Set {
        name: String,
        /// dev, qa, staging, production or custom (default: from the name; kept on a change).
        #[arg(long)]
        kind: Option<String>,
        /// Only these applications' pipelines may target it (repeat; none: any application).
        #[arg(long = "application")]
        applications: Vec<String>,
    },
}

pub async fn environments(conn: &Conn, cmd: Option<EnvironmentsCommand>) -> anyhow::Result<u8> {
    let c = client(conn).await?;
    let line = |e: &drover_types::Environment| {
        let apps = if e.applications.is_empty() { "any".to_string() } else { e.applications.join(",") };
        format!("{:<24} {:<12} {apps}", e.name, e.kind.as_str())
    };
    match cmd {
        None => {
            let v = c.environments().await?;
            print(conn.output, &v, |v| {
                let mut s = format!("{:<24} {:<12} APPLICATIONS\n", "NAME", "KIND");
                for e in v {
                    s.push_str(&(line(e) + "\n"));
                }
                s
            })
        }
        Some(EnvironmentsCommand::Set { name, kind, applications }) => {
            let kind = kind
                .map(|k| {
                    drover_types::EnvironmentKind::parse(&k)
                        .ok_or_else(|| anyhow!("unknown kind {k:?}: dev, qa, staging, production or custom"))
                })
                .transpose()?;
            let e = drover_types::NewEnvironment { name, kind, labels: Default::default(), applications };
            let exists = c.environments().await?.iter().any(|x| x.name == e.name);
            let got = if exists { c.put_environment(&e).await? } else { c.create_environment(&e).await? };
            print(conn.output, &got, line)
        }
    }
}
