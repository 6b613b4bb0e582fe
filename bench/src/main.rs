//! `store-bench`: durable writes and linearizable reads with 1, 16 and 64 concurrent clients
//! against a 3-member Keelson store on loopback and, where etcd is installed, the same load
//! against a 3-member etcd in the same run; prints ops/s, p50/p99 and Keelson/etcd ratios.
//!
//! Not a test: the test suite excludes this crate. Run it with `scripts/bench.sh`.

mod api_target;
mod control_plane;
mod dashboard_memory;
mod etcd_cluster;
mod keelson_cluster;
mod load;
mod pod_start;
mod processes;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;

use crate::etcd_cluster::{etcd_version, find_etcd, EtcdCluster};
use crate::keelson_cluster::KeelsonCluster;
use crate::load::{LoadConfig, Target, Workload, READ_KEYS, VALUE_BYTES};
use crate::report::{Row, API, ETCD, KEELSON};

/// The longest measurement per point.
const SECONDS_MAX: u64 = 300;
/// The most concurrent clients in one point.
const CLIENTS_MAX: usize = 256;
/// The most client counts in one run.
const CLIENT_COUNTS_MAX: usize = 8;
/// An operation not answered in this time counts as an error.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    name = "store-bench",
    about = "Durable writes and linearizable reads against 3-member Keelson and etcd clusters on loopback"
)]
struct Args {
    /// The keelson binary [default: `keelson` beside this program].
    #[arg(long)]
    keelson: Option<PathBuf>,
    /// The etcd binary for the baseline [default: /usr/bin/etcd, else `etcd` on PATH].
    #[arg(long, conflicts_with = "no_etcd")]
    etcd: Option<PathBuf>,
    /// Measure Keelson only.
    #[arg(long)]
    no_etcd: bool,
    /// Skip the Kubernetes API measurements (creates, gets, lists and watch through the
    /// leader's API, and their ratio to the raw store).
    #[arg(long)]
    no_api: bool,
    /// Seconds measured per point, after the warm-up.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Seconds of load before each measurement, not counted.
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Concurrent clients, one point per count.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Run the control-plane benchmark instead: hollow nodes, Deployments, the scheduler.
    #[arg(long)]
    control_plane: bool,
    /// Hollow nodes (with --control-plane).
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pods: created as Deployments with --control-plane [default: 10000]; started one after
    /// the other with --pod-start [default: 50]; stored with --dashboard-memory [default: 1000].
    #[arg(long)]
    pods: Option<usize>,
    /// Deployments the pods are spread over (with --control-plane).
    #[arg(long, default_value_t = 100)]
    deployments: usize,
    /// Pods bound directly for the baseline (with --control-plane).
    #[arg(long, default_value_t = 2000)]
    raw_binds: usize,
    /// Pods queued for the scheduler while this program holds the controllers' Lease, then
    /// bound once it lets go (with --control-plane): the scheduler's own throughput, with no
    /// creates competing.
    #[arg(long, default_value_t = 5000)]
    backlog: usize,
    /// Run the pod start benchmark instead: create -> Running of --pods pods on one real node
    /// (`keelson node --runtime runc`, as root) against raw `runc run` (and `ctr run` where
    /// containerd runs), and the node agent's memory.
    #[arg(long, conflicts_with = "control_plane")]
    pod_start: bool,
    /// Run the dashboard memory benchmark instead: one master's resident memory idle, with
    /// --pods pods stored [default: 1000], and with --dashboards dashboards open on the pods
    /// page (its list and watch, with the dashboard's cookie), as ratios against idle.
    #[arg(long, conflicts_with_all = ["control_plane", "pod_start"])]
    dashboard_memory: bool,
    /// Dashboards held open (with --dashboard-memory).
    #[arg(long, default_value_t = 1)]
    dashboards: usize,
    /// Where the members' data directories go (a new temporary directory inside, removed at
    /// the end) [default: the system's temporary directory].
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    // On Ctrl-C the benchmark's future is dropped, and with it the guards of the clusters,
    // which stop their processes.
    let result = runtime.block_on(async move {
        tokio::select! {
            result = run(args) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_args(args: &Args) -> anyhow::Result<()> {
    if args.seconds == 0 || args.seconds > SECONDS_MAX {
        bail!("--seconds must be 1 to {SECONDS_MAX}");
    }
    if args.warmup_seconds > SECONDS_MAX {
        bail!("--warmup-seconds must be at most {SECONDS_MAX}");
    }
    if args.clients.is_empty() || args.clients.len() > CLIENT_COUNTS_MAX {
        bail!("--clients takes 1 to {CLIENT_COUNTS_MAX} counts");
    }
    if let Some(bad) = args.clients.iter().find(|&&c| c == 0 || c > CLIENTS_MAX) {
        bail!("--clients {bad}: each count must be 1 to {CLIENTS_MAX}");
    }
    Ok(())
}

/// The keelson binary: the one given, or the one beside this program (same target dir).
fn keelson_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let path = match given {
        Some(path) => path,
        None => {
            let exe = std::env::current_exe().context("cannot locate this program")?;
            exe.parent()
                .unwrap_or_else(|| Path::new("."))
                .join("keelson")
        }
    };
    if !path.is_file() {
        bail!(
            "no keelson binary at {} (build it with `cargo build --bin keelson`, or pass --keelson PATH)",
            path.display()
        );
    }
    Ok(path)
}

async fn run(args: Args) -> anyhow::Result<()> {
    check_args(&args)?;
    let keelson = keelson_binary(args.keelson.clone())?;
    let etcd = if args.no_etcd {
        Err("--no-etcd was given".to_string())
    } else {
        find_etcd(args.etcd.as_deref())
    };
    let config = LoadConfig {
        warmup: Duration::from_secs(args.warmup_seconds),
        measure: Duration::from_secs(args.seconds),
        op_timeout: OP_TIMEOUT,
    };
    let work_dir = args.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("keelson-bench-")
        .tempdir_in(&work_dir)
        .with_context(|| {
            format!(
                "cannot create a temporary directory in {}",
                work_dir.display()
            )
        })?;

    if args.dashboard_memory {
        println!("store-bench --dashboard-memory, {} UTC", utc_now());
        return dashboard_memory::run(
            &keelson,
            dir.path(),
            args.pods.unwrap_or(1000),
            args.dashboards,
        )
        .await;
    }
    if args.pod_start {
        println!("store-bench --pod-start, {} UTC", utc_now());
        return pod_start::run(&keelson, dir.path(), args.pods.unwrap_or(50)).await;
    }
    if args.control_plane {
        let pods = args.pods.unwrap_or(10_000);
        if args.nodes == 0 || args.deployments == 0 || pods < args.deployments {
            bail!("--control-plane needs --nodes > 0 and --pods >= --deployments > 0");
        }
        println!("store-bench --control-plane, {} UTC", utc_now());
        let load = control_plane::ControlPlaneLoad {
            nodes: args.nodes,
            pods,
            deployments: args.deployments,
            clients: args.clients.iter().copied().max().unwrap_or(16),
            raw_binds: args.raw_binds,
            backlog: args.backlog,
        };
        return control_plane::run(&keelson, dir.path(), &load).await;
    }
    println!("store-bench, {} UTC", utc_now());
    println!(
        "load: {} s measured after {} s warm-up per point; clients {:?}; {VALUE_BYTES}-byte values; \
         reads of {READ_KEYS} prepopulated keys; {} cores",
        args.seconds,
        args.warmup_seconds,
        args.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "keelson: 3 x {} master, data in {}",
        keelson.display(),
        dir.path().display()
    );
    match &etcd {
        Ok(path) => println!("etcd: 3 x {} ({})", path.display(), etcd_version(path)?),
        Err(why) => println!("etcd baseline SKIPPED: {why}"),
    }
    println!();

    let mut rows = Vec::new();
    {
        let data = dir.path().join("keelson");
        std::fs::create_dir_all(&data)?;
        eprintln!("starting 3 keelson masters");
        let cluster = KeelsonCluster::start(&keelson, &data).await?;
        rows.extend(measure(KEELSON, &cluster.client, &args.clients, config).await?);
        if !args.no_api {
            rows.extend(measure_api(&cluster, &args.clients, config).await?);
        }
    }
    if let Ok(etcd) = &etcd {
        let data = dir.path().join("etcd");
        std::fs::create_dir_all(&data)?;
        eprintln!("starting 3 etcd members");
        let cluster = EtcdCluster::start(etcd, &data).await?;
        rows.extend(measure(ETCD, &cluster.client, &args.clients, config).await?);
    }

    println!("{}", report::table(&rows));
    if !args.no_api {
        println!("{}", report::api_overhead(&rows));
    }
    for row in &rows {
        if let Some(error) = &row.first_error {
            println!(
                "first error of {} {} {} clients: {error}",
                row.system, row.workload, row.clients
            );
        }
    }
    match &etcd {
        Ok(_) => {
            println!("{}", report::ratios(&rows));
            println!("{}", report::goal(&rows, Workload::Write.name()));
            println!("{}", report::goal(&rows, Workload::Read.name()));
        }
        Err(why) => {
            println!("no keelson/etcd ratios and no goal verdict: etcd baseline skipped ({why})")
        }
    }
    Ok(())
}

/// The API of the leader's master: creates, gets, lists (with `first_client` far from the
/// store runs' so names never collide), then a watch while creates run at the largest client
/// count.
async fn measure_api(
    cluster: &KeelsonCluster,
    clients: &[usize],
    config: LoadConfig,
) -> anyhow::Result<Vec<Row>> {
    let leader = cluster
        .client
        .status_all()
        .await
        .into_iter()
        .find_map(|(_, s)| s.ok().and_then(|s| s.leader))
        .and_then(|name| name.trim_start_matches('m').parse::<usize>().ok())
        .unwrap_or(0);
    let (addr, kubeconfig) = cluster
        .apis
        .get(leader)
        .cloned()
        .context("no API address for the leader")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        if std::time::Instant::now() > deadline {
            bail!("{} did not appear", kubeconfig.display());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut target = api_target::ApiTarget::from_kubeconfig(&kubeconfig, addr)?;
    target.wait_ready(Duration::from_secs(60)).await?;
    eprintln!("api: through m{leader}'s API at https://{addr}");
    let mut rows = Vec::new();
    let mut first_client = 100_000;
    for workload in [Workload::Write, Workload::Read, Workload::List] {
        if workload == Workload::Read {
            eprintln!("{API}: prepopulating {READ_KEYS} ConfigMaps");
            load::prepopulate(&target, config.op_timeout)
                .await
                .context("cannot prepopulate the API")?;
        }
        for &n in clients {
            let m = load::run(&target, workload, n, first_client, config).await?;
            first_client += n;
            rows.push(row(API, workload.name(), n, m));
        }
    }
    let n = clients.iter().copied().max().unwrap_or(1);
    let load = load::run(&target, Workload::Write, n, first_client, config);
    let watched = api_target::watch_while(&target, config.warmup + config.measure, load).await?;
    rows.push(row(API, "watch", n, watched));
    Ok(rows)
}

fn row(system: &'static str, workload: &'static str, clients: usize, m: load::Measurement) -> Row {
    let row = Row {
        system,
        workload,
        clients,
        ops_per_sec: m.ops_per_sec(),
        p50_ms: m.latency_ms(0.5),
        p99_ms: m.latency_ms(0.99),
        errors: m.errors,
        first_error: m.first_error,
    };
    eprintln!(
        "{system} {workload} {clients} clients: {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        row.ops_per_sec, row.p50_ms, row.p99_ms, row.errors
    );
    row
}

/// Writes at every client count, then prepopulates and reads at every client count.
async fn measure<T: Target>(
    system: &'static str,
    target: &T,
    clients: &[usize],
    config: LoadConfig,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    // Client numbers continue from run to run, so every write creates a new key.
    let mut first_client = 0;
    for workload in [Workload::Write, Workload::Read] {
        if workload == Workload::Read {
            eprintln!("{system}: prepopulating {READ_KEYS} keys");
            load::prepopulate(target, config.op_timeout)
                .await
                .with_context(|| format!("cannot prepopulate {system}"))?;
        }
        for &n in clients {
            let m = load::run(target, workload, n, first_client, config).await?;
            first_client += n;
            rows.push(row(system, workload.name(), n, m));
        }
    }
    Ok(rows)
}

/// Now as `YYYY-MM-DD HH:MM:SS` (UTC), from the days since 1970 (Hinnant's civil calendar).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
