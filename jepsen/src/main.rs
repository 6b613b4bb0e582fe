//! `keelson-jepsen`: runs the fault-injection suite against a Keelson cluster in network
//! namespaces (root needed) and writes a report per run; exits non-zero on any anomaly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keelson_jepsen::nemesis::Fault;
use keelson_jepsen::run::{run_etcd, run_keelson, RunConfig};

#[derive(Parser)]
#[command(about = "Keelson's Jepsen-style fault-injection suite")]
struct Args {
    /// Seconds the clients run, faults included.
    #[arg(long, default_value_t = 120)]
    time_limit: u64,
    /// Faults: all, none, partition, or a list of partition-halves, partition-leader,
    /// partition-ring, partition-bridge, kill, pause, member, clock, lose-unsynced.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Masters in the cluster (3 or 5).
    #[arg(long, default_value_t = 5)]
    masters: usize,
    /// Seconds each fault is held, and seconds of calm before each.
    #[arg(long, default_value_t = 8)]
    fault_secs: u64,
    #[arg(long, default_value_t = 4)]
    quiet_secs: u64,
    /// Register clients (five share a key).
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// The system under test: keelson, or etcd (Debian's etcd 3.4, register workload only: the
    /// control that must pass).
    #[arg(long, default_value = "keelson", value_parser = ["keelson", "etcd"])]
    db: String,
    /// The keelson binary [default: `keelson` next to this program].
    #[arg(long)]
    keelson: Option<PathBuf>,
    /// Where run folders go.
    #[arg(long, default_value = "jepsen-runs")]
    out: PathBuf,
    /// Run the masters with deliberately unsafe store modes, to see the checkers catch them:
    /// stale-reads, no-sync.
    #[arg(long = "unsafe", value_delimiter = ',')]
    unsafe_modes: Vec<String>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<bool> {
    let keelson = match args.keelson {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this program's folder")?
            .join("keelson"),
    };
    let faults = Fault::parse_list(&args.nemesis)?;
    let stamp = format!("run-{}", jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ"));
    let dir = args.out.join(stamp);
    let mut config = RunConfig::new(keelson, dir, Duration::from_secs(args.time_limit), faults);
    config.masters = args.masters;
    config.active = Duration::from_secs(args.fault_secs);
    config.quiet = Duration::from_secs(args.quiet_secs);
    config.register_clients = args.clients;
    for mode in &args.unsafe_modes {
        match mode.as_str() {
            "stale-reads" => config.master_args.push("--unsafe-stale-reads".into()),
            "no-sync" => config.master_args.push("--unsafe-no-sync".into()),
            other => anyhow::bail!("unknown unsafe mode {other:?}: use stale-reads or no-sync"),
        }
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = if args.db == "etcd" {
        runtime.block_on(run_etcd(&config))?
    } else {
        runtime.block_on(run_keelson(&config))?
    };
    for result in &outcome.results {
        println!(
            "{:<24} {:?}: {}",
            result.name, result.validity, result.summary
        );
        for anomaly in &result.anomalies {
            println!("  {}: {}", anomaly.kind, anomaly.message);
        }
    }
    println!(
        "{} operations; report in {}",
        outcome.ops,
        outcome.dir.display()
    );
    Ok(outcome.valid())
}
