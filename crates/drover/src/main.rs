//! The `drover` binary: orchestrator (`serve`), agent (`agent`), `quickstart`, and the CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

mod commands;
mod config;
mod login;
mod quickstart;
mod render;

/// Exit codes scripts can rely on (also in docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const UNAUTHENTICATED: u8 = 3;
    pub const FORBIDDEN: u8 = 4;
    pub const NOT_FOUND: u8 = 5;
    pub const CONFLICT: u8 = 6;
    pub const INVALID: u8 = 7;
    pub const UNREACHABLE: u8 = 8;
    /// The orchestrator answered `unavailable` (its database is unreachable): try again.
    pub const UNAVAILABLE: u8 = 9;
    /// `status --follow` / `quickstart --exit-when-done`: the deployment ended, not completed.
    pub const DEPLOYMENT_NOT_COMPLETED: u8 = 10;
    /// `audit verify`: the hash chain is broken.
    pub const AUDIT_BROKEN: u8 = 11;
}

#[derive(Parser)]
#[command(name = "drover", version, about = "Drover: self-hosted continuous delivery with token-based, audited trust")]
struct Cli {
    /// Connection options: global, before or after the subcommand.
    #[command(flatten)]
    conn: Conn,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// How CLI commands reach the orchestrator.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// Orchestrator URL.
    #[arg(long, env = "DROVER_URL", default_value = "https://127.0.0.1:8443", global = true)]
    pub url: String,
    /// CA certificate to trust (the orchestrator's DATA_DIR/tls/ca.pem). Default:
    /// ./drover-data/tls/ca.pem when it exists.
    #[arg(long, env = "DROVER_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// Operator name for HTTP Basic (with DROVER_PASSWORD or DROVER_PASSWORD_FILE).
    #[arg(long, env = "DROVER_USER", global = true)]
    pub user: Option<String>,
    /// File holding the password of DROVER_USER (DROVER_PASSWORD is read from the environment).
    /// Not `--password-file`: that is the password a command sets (`operators add`).
    #[arg(long, env = "DROVER_PASSWORD_FILE", global = true)]
    pub login_password_file: Option<PathBuf>,
    /// Output format of commands that print data.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// Run the orchestrator (HTTPS API, engine, artifact store).
    Serve(config::ServeArgs),
    /// Run an agent on a candidate host.
    Agent(commands::AgentArgs),
    /// Make a key pair for an agent (private_key_jwt): writes the private key, prints the JWKS.
    AgentKeygen {
        /// Where to write the PKCS#8 PEM private key (mode 0600).
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Orchestrator + three agents + a sample pipeline and deployment, on the embedded database.
    Quickstart(quickstart::QuickstartArgs),
    /// (Internal) an agent's task spawner: started by `drover agent --task-user`, serves the
    /// socket on its stdin.
    #[command(hide = true)]
    TaskSpawner,
    /// Create or update a pipeline from a YAML file (idempotent).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Start a deployment of VERSION of APPLICATION.
    Deploy {
        application: String,
        version: String,
        /// Pipeline to run (default: the application's only pipeline, or the one named like it).
        #[arg(long)]
        pipeline: Option<String>,
        /// Follow it until it ends (exit 0 only if it completed), through every wait.
        #[arg(long)]
        follow: bool,
        /// With --follow: stop (exit 0) once the deployment reaches this status, e.g.
        /// pending_promotion or pending_input.
        #[arg(long, requires = "follow", value_parser = parse_status)]
        until: Option<drover_types::DeploymentStatus>,
    },
    /// Show a deployment: stages, tasks, statuses, what it waits for; --follow streams it live.
    Status {
        id: i64,
        #[arg(long)]
        follow: bool,
        /// With --follow: stop (exit 0) once the deployment reaches this status.
        #[arg(long, requires = "follow", value_parser = parse_status)]
        until: Option<drover_types::DeploymentStatus>,
    },
    /// Is the orchestrator up? With --wait, wait that long for it (a script that just started it).
    Health {
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// A pipeline's delivery report: deployment frequency, lead time, change failure rate, time
    /// to restore, success rate, time per stage and task, tasks by failures.
    Report {
        pipeline: String,
        /// First day (YYYY-MM-DD, UTC) or RFC 3339 time; default 30 days before --to.
        #[arg(long)]
        from: Option<String>,
        /// Last day (YYYY-MM-DD, UTC) or RFC 3339 time; default now.
        #[arg(long)]
        to: Option<String>,
    },
    /// Show a deployment's log.
    Logs {
        id: i64,
        /// Keep printing new lines until the deployment ends.
        #[arg(long)]
        follow: bool,
    },
    /// Approve the approval task a deployment waits on.
    Approve(commands::ActionArgs),
    /// Reject the approval task a deployment waits on (the deployment fails).
    Reject(commands::ActionArgs),
    /// Abort a deployment.
    Abort(commands::ActionArgs),
    /// Pause a deployment (running tasks finish; nothing new starts).
    Pause(commands::ActionArgs),
    /// Resume a paused deployment.
    Resume(commands::ActionArgs),
    /// Retry the failed task of a deployment in error.
    Retry(commands::ActionArgs),
    /// Skip the failed (or waiting) task of a deployment.
    Skip(commands::ActionArgs),
    /// Promote a deployment waiting for promotion into its next stage.
    Promote(commands::ActionArgs),
    /// Roll back: redeploy the last version that completed, through the same stages.
    Rollback(commands::ActionArgs),
    /// List pipelines.
    Pipelines,
    /// List environments; `environments set` creates or changes one.
    Environments {
        #[command(subcommand)]
        command: Option<commands::EnvironmentsCommand>,
    },
    /// An environment's variables: list, set (plain or --secret), delete.
    Variables {
        #[command(subcommand)]
        command: commands::VariablesCommand,
    },
    /// List deployments, newest first.
    Deployments {
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// List, register or remove agents.
    Agents {
        #[command(subcommand)]
        command: Option<commands::AgentsCommand>,
    },
    /// Token-signing keys: list, rotate, import from a keystore.
    Keys {
        #[command(subcommand)]
        command: commands::KeysCommand,
    },
    /// Inspect keystores (PKCS#12, JKS, PEM) without printing key material.
    Keystore {
        #[command(subcommand)]
        command: commands::KeystoreCommand,
    },
    /// The SysOps view (nodes, caches, pools, queues) and its levers.
    System {
        #[command(subcommand)]
        command: commands::SystemCommand,
    },
    /// Manage OAuth 2.0 client registrations (CI systems, scripts): secrets, rotation, revocation.
    Client {
        #[command(subcommand)]
        command: commands::ClientCommand,
    },
    /// List or manage operators (people): add, disable, enable, unlock, set-password, set-roles.
    Operators {
        #[command(subcommand)]
        command: Option<commands::OperatorsCommand>,
    },
    /// List roles (built-in and custom), or create/delete a custom role.
    Roles {
        #[command(subcommand)]
        command: Option<commands::RolesCommand>,
    },
    /// List access groups, or set/delete one (roles for operators and clients, per application).
    AccessGroups {
        #[command(subcommand)]
        command: Option<commands::AccessGroupsCommand>,
    },
    /// Master key of the secrets at rest (rotate it with the orchestrator stopped).
    MasterKey {
        #[command(subcommand)]
        command: commands::MasterKeyCommand,
    },
    /// Sign the CLI in as an operator (browser on this machine, or --device for another one).
    Login(login::LoginArgs),
    /// End this CLI's session with the orchestrator.
    Logout,
    /// Read or verify the audit log.
    Audit {
        #[command(subcommand)]
        command: commands::AuditCommand,
    },
    /// Push or list artifacts.
    Artifact {
        #[command(subcommand)]
        command: commands::ArtifactCommand,
    },
}

fn parse_status(s: &str) -> Result<drover_types::DeploymentStatus, String> {
    drover_types::DeploymentStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = drover_types::DeploymentStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status {s:?}; one of {}", all.join(", "))
    })
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DROVER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match &cli.command {
        Command::Serve(_) | Command::Agent(_) => "info",
        Command::Quickstart(_) => "warn",
        _ => "warn",
    };
    init_logging(default_log);
    if let Command::TaskSpawner = cli.command {
        // Small on purpose (no runtime): its forks are what make starting a task cheap.
        return match drover_agent::spawner::serve_stdin() {
            Ok(()) => ExitCode::from(exit::OK),
            Err(e) => {
                eprintln!("error: task spawner: {e}");
                ExitCode::from(exit::ERROR)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let code = rt.block_on(run(cli));
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    use drover_types::Action;
    let conn = &cli.conn;
    let r = match cli.command {
        Command::Serve(args) => config::serve(args).await,
        Command::Agent(args) => commands::agent::run(args).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::TaskSpawner => Ok(exit::OK),
        Command::Apply { file } => commands::pipelines::apply(conn, &file).await,
        Command::Deploy { application, version, pipeline, follow, until } => {
            let follow = follow.then_some(until);
            commands::deployments::deploy(conn, &application, &version, pipeline.as_deref(), follow).await
        }
        Command::Status { id, follow, until } => commands::deployments::status(conn, id, follow.then_some(until)).await,
        Command::Health { wait } => commands::health(conn, wait).await,
        Command::Logs { id, follow } => commands::deployments::logs(conn, id, follow).await,
        Command::Report { pipeline, from, to } => {
            commands::deployments::report(conn, &pipeline, from.as_deref(), to.as_deref()).await
        }
        Command::Approve(a) => a.run(conn, Action::Approve).await,
        Command::Reject(a) => a.run(conn, Action::Reject).await,
        Command::Abort(a) => a.run(conn, Action::Abort).await,
        Command::Pause(a) => a.run(conn, Action::Pause).await,
        Command::Resume(a) => a.run(conn, Action::Resume).await,
        Command::Retry(a) => a.run(conn, Action::Retry).await,
        Command::Skip(a) => a.run(conn, Action::Skip).await,
        Command::Promote(a) => a.run(conn, Action::Promote).await,
        Command::Rollback(a) => a.run(conn, Action::Rollback).await,
        Command::Pipelines => commands::pipelines::list(conn).await,
        Command::Environments { command } => commands::pipelines::environments(conn, command).await,
        Command::Deployments { pipeline, status, limit } => {
            commands::deployments::list(conn, pipeline.as_deref(), status.as_deref(), limit).await
        }
        Command::Agents { command } => commands::agents::run(conn, command).await,
        Command::Variables { command } => commands::variables::run(conn, command).await,
        Command::System { command } => command.run(conn).await,
        Command::Artifact { command } => command.run(conn).await,
        Command::Audit { command } => command.run(conn).await,
        Command::Operators { command } => commands::operators::run(conn, command).await,
        Command::Roles { command } => commands::access::roles(conn, command).await,
        Command::AccessGroups { command } => commands::access::access_groups(conn, command).await,
        Command::Login(a) => login::login(conn, a).await,
        Command::MasterKey { command } => command.run(conn).await,
        Command::AgentKeygen { key_file } => commands::agent::keygen(&key_file),
        Command::Logout => login::logout(conn).await,
        Command::Client { command } => command.run(conn).await,
        Command::Keys { command } => command.run(conn).await,
        Command::Keystore { command } => command.run(conn.output),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(h) = commands::hint_for(&e) {
                eprintln!("hint: {h}");
            }
            commands::exit_code_of(&e)
        }
    }
}
