//! `keelson`: one binary that runs a master (a store member, and later the API and the
//! control loops), a node, or a one-machine cluster, and drives the store from outside.

mod master;
mod node_cmd;
mod store_cmd;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of glibc's malloc: the API's JSON and the store's batches allocate and free
/// many small objects across threads; measured in docs/benchmarks.md ("mimalloc").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keelson",
    version,
    about = "Kubernetes-style orchestrator in one binary"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "KEELSON_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a master: a member of the replicated store.
    Master(master::MasterArgs),
    /// Run a one-machine cluster with embedded defaults: a master and a node in one process.
    Up(up::UpArgs),
    /// Drive and inspect a store cluster from outside.
    Store(store_cmd::StoreArgs),
    /// Run a node: a kubelet running containers (runc or processes), or hollow nodes.
    Node(node_cmd::NodeArgs),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        // `level`, `message`, `target` and `timestamp` at the top of each line (the event's
        // other fields beside them), one JSON object per line; panics too.
        LogFormat::Json => {
            builder.json().flatten_event(true).init();
            std::panic::set_hook(Box::new(|info| {
                tracing::error!(panic = %info, "panicked");
            }));
        }
    }
}

/// The last words of a failed command, in the log's format.
fn report_error(format: LogFormat, error: &anyhow::Error) {
    match format {
        LogFormat::Text => eprintln!("error: {error:#}"),
        // Every command initialised JSON logging when asked for it.
        LogFormat::Json => tracing::error!("error: {error:#}"),
    }
}

fn main() -> ExitCode {
    // `keelson shim ...`: the per-container shim the runc runtime starts. It is plain blocking
    // code and must not start tracing, actix or tokio (nor parse the public command line).
    if std::env::args().nth(1).as_deref() == Some("shim") {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let code = keelson_node::runtime::shim::run_from_args(&args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = Cli::parse();
    let log_format = cli.log_format;
    let log_json = matches!(log_format, LogFormat::Json);
    // One TLS crypto provider for the whole process (reqwest brings none of its own).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // actix's System runs on the multi-threaded runtime: the supervisor actor on this thread,
    // everything spawned with tokio on the workers.
    let system = actix_rt::System::with_tokio_rt(move || runtime);
    let result = system.block_on(async move {
        match cli.command {
            Command::Master(args) => {
                init_logging(cli.log_format);
                master::run(args).await
            }
            Command::Up(mut args) => {
                init_logging(cli.log_format);
                args.log_json = log_json;
                up::run(args).await
            }
            Command::Store(args) => {
                // The store client logs nothing of its own; its errors follow the format.
                if log_json {
                    init_logging(cli.log_format);
                }
                store_cmd::run(args).await
            }
            Command::Node(mut args) => {
                init_logging(cli.log_format);
                args.log_json = log_json;
                node_cmd::run(args).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(log_format, &e);
            ExitCode::FAILURE
        }
    }
}
