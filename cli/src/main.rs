//! kctl: Keelson's command-line client, shaped like kubectl and speaking the Kubernetes API.
//!
//! Results go to stdout, errors and notices to stderr; any failure exits non-zero, so kctl
//! can be scripted. Each command lives in its own `cmd_*` module.

mod client;
mod cmd_apply;
mod cmd_cluster;
mod cmd_config;
mod cmd_delete;
mod cmd_describe;
mod cmd_edit;
mod cmd_get;
mod cmd_info;
mod cmd_label;
mod cmd_logs;
mod cmd_rollout;
mod cmd_scale;
mod cmd_top;
mod cmd_wait;
mod describe;
mod discovery;
mod duration;
mod kubeconfig;
mod kubeconfig_edit;
mod list;
mod manifest;
mod printer;
mod resource_args;
mod selector;
mod session;
mod watch;
mod yaml;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::session::{GlobalArgs, Reported, Session};

/// Exit code of a failed command (kubectl's).
const EXIT_FAILURE: u8 = 1;
/// Exit code when stdout is closed under us (as a process killed by SIGPIPE).
const EXIT_BROKEN_PIPE: u8 = 141;

#[derive(Debug, Parser)]
#[command(
    name = "kctl",
    version,
    about = "kctl controls a Keelson (or Kubernetes) cluster through its API server",
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Display one or many resources
    Get(cmd_get::GetArgs),
    /// Show details of a resource or group of resources
    Describe(cmd_describe::DescribeArgs),
    /// Create resources from files or stdin
    Create(cmd_apply::CreateArgs),
    /// Apply manifests with Server-Side Apply (creates what is missing)
    Apply(cmd_apply::ApplyArgs),
    /// Delete resources by name, by manifest, or by selector
    Delete(cmd_delete::DeleteArgs),
    /// Set the number of replicas of a deployment, replica set or replication controller
    Scale(cmd_scale::ScaleArgs),
    /// Manage the rollout of a deployment: status, history, undo, restart
    #[command(subcommand)]
    Rollout(cmd_rollout::RolloutCommand),
    /// Add, change or remove labels
    Label(cmd_label::LabelArgs),
    /// Print the logs of a container
    Logs(cmd_logs::LogsArgs),
    /// Display CPU and memory use of nodes or pods (the metrics.k8s.io API)
    #[command(subcommand)]
    Top(cmd_top::TopCommand),
    /// Edit a resource in $KUBE_EDITOR or $EDITOR
    Edit(cmd_edit::EditArgs),
    /// Print the resource types the server supports
    ApiResources(cmd_info::ApiResourcesArgs),
    /// Print the client and server versions
    Version(cmd_info::VersionArgs),
    /// Wait for a condition on one or many resources (or for their deletion)
    Wait(cmd_wait::WaitArgs),
    /// Keelson cluster commands
    #[command(subcommand)]
    Cluster(cmd_cluster::ClusterCommand),
    /// Show and change kubeconfig contexts
    #[command(subcommand)]
    Config(cmd_config::ConfigCommand),
    /// Print a shell completion script (e.g. `source <(kctl completion bash)`)
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// The completion script of `kctl` for `shell`.
fn completion_script(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory as _;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "kctl", &mut script);
    script
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Version(args) => return cmd_info::version(&cli.global, args).await,
        Command::Config(command) => return cmd_config::run(&cli.global, command),
        Command::Completion { shell } => {
            use std::io::Write as _;
            return Ok(std::io::stdout().write_all(&completion_script(shell))?);
        }
        _ => {}
    }
    let mut session = Session::connect(&cli.global)?;
    match cli.command {
        Command::Get(args) => cmd_get::run(&mut session, args).await,
        Command::Describe(args) => cmd_describe::run(&mut session, args).await,
        Command::Create(args) => cmd_apply::create(&mut session, args).await,
        Command::Apply(args) => cmd_apply::apply(&mut session, args).await,
        Command::Delete(args) => cmd_delete::run(&mut session, args).await,
        Command::Scale(args) => cmd_scale::run(&mut session, args).await,
        Command::Label(args) => cmd_label::run(&mut session, args).await,
        Command::Rollout(command) => cmd_rollout::run(&mut session, command).await,
        Command::Logs(args) => cmd_logs::run(&mut session, args).await,
        Command::Top(command) => cmd_top::run(&mut session, command).await,
        Command::Edit(args) => cmd_edit::run(&mut session, args).await,
        Command::ApiResources(args) => cmd_info::api_resources(&mut session, args).await,
        Command::Cluster(command) => cmd_cluster::run(&mut session, command).await,
        Command::Wait(args) => cmd_wait::run(&mut session, args).await,
        Command::Version(_) | Command::Config(_) | Command::Completion { .. } => Ok(()),
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    client::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            printer::warn(&format!("error: cannot start the async runtime: {err}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Reported>() => ExitCode::from(EXIT_FAILURE),
        Err(err) if is_broken_pipe(&err) => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(err) => {
            printer::warn(&session::error_message(&err));
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kubectl_style_flags_parse() {
        let cli = Cli::parse_from([
            "kctl",
            "-n",
            "team",
            "get",
            "pods",
            "-o",
            "wide",
            "-l",
            "app=x",
            "--show-labels",
        ]);
        assert_eq!(cli.global.namespace.as_deref(), Some("team"));
        assert!(matches!(cli.command, Command::Get(_)));
        let cli = Cli::parse_from([
            "kctl",
            "get",
            "po",
            "web",
            "--namespace=kube-system",
            "-owide",
        ]);
        assert_eq!(cli.global.namespace.as_deref(), Some("kube-system"));
        let cli = Cli::parse_from([
            "kctl",
            "delete",
            "pod",
            "x",
            "--grace-period=0",
            "--wait=false",
        ]);
        assert!(matches!(cli.command, Command::Delete(_)));
        let cli = Cli::parse_from(["kctl", "rollout", "status", "deploy/web", "--timeout", "5m"]);
        assert!(matches!(cli.command, Command::Rollout(_)));
        let cli = Cli::parse_from([
            "kctl",
            "rollout",
            "undo",
            "deployment",
            "web",
            "--to-revision=2",
        ]);
        assert!(matches!(cli.command, Command::Rollout(_)));
        let cli = Cli::parse_from(["kctl", "scale", "deploy/web", "--replicas=3"]);
        assert!(matches!(cli.command, Command::Scale(_)));
        let cli = Cli::parse_from([
            "kctl",
            "label",
            "pods",
            "web",
            "app=x",
            "tier-",
            "--overwrite",
        ]);
        assert!(matches!(cli.command, Command::Label(_)));
        let cli = Cli::parse_from(["kctl", "cluster", "status", "--kubeconfig", "/tmp/k"]);
        assert!(matches!(cli.command, Command::Cluster(_)));
        let cli = Cli::parse_from([
            "kctl",
            "wait",
            "--for=condition=Ready",
            "pod/x",
            "--timeout=5s",
        ]);
        assert!(matches!(cli.command, Command::Wait(_)));
        let cli = Cli::parse_from([
            "kctl",
            "--context",
            "prod",
            "config",
            "set-context",
            "--current",
            "--namespace=team",
        ]);
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        assert_eq!(cli.global.namespace.as_deref(), Some("team"));
        assert!(matches!(cli.command, Command::Config(_)));
        let cli = Cli::parse_from(["kctl", "apply", "-f", "-", "--request-timeout", "5s"]);
        assert_eq!(cli.global.request_timeout.as_deref(), Some("5s"));
    }

    #[test]
    fn completion_scripts_name_the_subcommands() {
        let bash = String::from_utf8(completion_script(clap_complete::Shell::Bash)).unwrap();
        assert!(bash.contains("complete -F"), "{bash}");
        assert!(bash.contains("use-context"));
        let zsh = String::from_utf8(completion_script(clap_complete::Shell::Zsh)).unwrap();
        assert!(zsh.contains("#compdef kctl"));
        assert!(zsh.contains("get-contexts"));
    }

    #[test]
    fn broken_pipes_are_recognised() {
        let err = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
