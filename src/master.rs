//! `keelson master`: runs a store member and the API server until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use keelson_actors::{
    ApiServer, ApiServerConfig, ControlPlane, ControlPlaneConfig, EventTtl, NodePortRange,
    ServiceIpRange, ServiceRanges,
};
use keelson_raft::{Member, Store, StoreConfig, UnsafeMode};
use rand::RngCore;

#[derive(clap::Args)]
pub(crate) struct MasterArgs {
    /// This master's name, unique in the cluster.
    #[arg(long, env = "KEELSON_NAME")]
    name: String,
    /// Where this master keeps its state.
    #[arg(long, env = "KEELSON_DATA_DIR")]
    data_dir: PathBuf,
    /// The HTTPS address users and nodes reach.
    #[arg(long, env = "KEELSON_API", default_value = "127.0.0.1:6443")]
    api: SocketAddr,
    /// The QUIC address other masters (and nodes) reach.
    #[arg(long, env = "KEELSON_PEER")]
    peer: SocketAddr,
    /// The initial masters, the same list on every one: NAME=ADDR,NAME=ADDR,...
    #[arg(long, env = "KEELSON_PEERS", value_delimiter = ',')]
    peers: Vec<String>,
    /// The cluster token; a single master generates one when none is given.
    #[arg(long, env = "KEELSON_TOKEN")]
    token: Option<String>,
    /// Seconds of history kept for watches and reads at old revisions.
    #[arg(long, env = "KEELSON_HISTORY_WINDOW_SECS", default_value_t = 300)]
    history_window_secs: u64,
    /// Seconds between compaction checks.
    #[arg(long, env = "KEELSON_COMPACTION_INTERVAL_SECS", default_value_t = 30)]
    compaction_interval_secs: u64,
    /// Applied log entries between snapshots (as etcd's --snapshot-count); a snapshot is
    /// also built whenever the log written since the last one outgrows it (64 MiB at least).
    #[arg(long, env = "KEELSON_SNAPSHOT_ENTRIES", default_value_t = 100_000)]
    snapshot_entries: u64,
    /// Seconds without a heartbeat before a node turns `Ready=Unknown`.
    #[arg(long, env = "KEELSON_NODE_MONITOR_GRACE_SECS", default_value_t = 10)]
    node_monitor_grace_secs: u64,
    /// Seconds pods stay on a not-ready node before they are evicted.
    #[arg(long, env = "KEELSON_POD_EVICTION_TIMEOUT_SECS", default_value_t = 10)]
    pod_eviction_timeout_secs: u64,
    /// The range nodes' pod CIDRs are cut from.
    #[arg(long, env = "KEELSON_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The IPv4 range Services' ClusterIPs come from.
    #[arg(long, env = "KEELSON_SERVICE_CIDR", default_value = "10.96.0.0/12")]
    service_cidr: ServiceIpRange,
    /// The ports Services' NodePorts come from: MIN-MAX, both included.
    #[arg(
        long,
        env = "KEELSON_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767"
    )]
    service_node_port_range: NodePortRange,
    /// The control loops to run: `*` for all, a name to add one, `-name` to leave one out.
    #[arg(
        long,
        env = "KEELSON_CONTROLLERS",
        value_delimiter = ',',
        default_value = "*"
    )]
    controllers: Vec<String>,
    /// The local cloud's router: the network namespace (an `ip netns` name) where the route
    /// controller installs routes to nodes' pod CIDRs [default: this process's own].
    #[arg(long, env = "KEELSON_CLOUD_ROUTER_NETNS")]
    cloud_router_netns: Option<String>,
    /// How long Events are kept after they last happened (a duration: 1h, 30m, 90s).
    #[arg(long, env = "KEELSON_EVENT_TTL", default_value = "1h")]
    event_ttl: EventTtl,
    /// UNSAFE, exists only for the Jepsen suite: answer linearizable reads from this master's
    /// local state without a read index. Breaks the store's linearizability guarantee.
    #[arg(long, hide = true)]
    unsafe_stale_reads: bool,
    /// UNSAFE, exists only for the Jepsen suite: acknowledge log appends and votes before they
    /// are fsynced. Breaks the store's durability guarantee.
    #[arg(long, hide = true)]
    unsafe_no_sync: bool,
}

impl MasterArgs {
    /// A single master with defaults, as `keelson up` runs it.
    pub(crate) fn single(name: &str, data_dir: PathBuf, api: SocketAddr, peer: SocketAddr) -> Self {
        MasterArgs {
            name: name.to_string(),
            data_dir,
            api,
            peer,
            peers: Vec::new(),
            token: None,
            history_window_secs: 300,
            compaction_interval_secs: 30,
            snapshot_entries: 100_000,
            node_monitor_grace_secs: 10,
            pod_eviction_timeout_secs: 10,
            cluster_cidr: "10.244.0.0/16".to_string(),
            service_cidr: ServiceRanges::default().ips,
            service_node_port_range: ServiceRanges::default().node_ports,
            controllers: vec!["*".to_string()],
            cloud_router_netns: None,
            event_ttl: EventTtl::default(),
            unsafe_stale_reads: false,
            unsafe_no_sync: false,
        }
    }
}

fn parse_peers(peers: &[String]) -> anyhow::Result<Vec<Member>> {
    let mut members: Vec<Member> = Vec::new();
    for peer in peers.iter().filter(|p| !p.is_empty()) {
        let Some((name, addr)) = peer.split_once('=') else {
            bail!("--peers entry {peer:?} is not NAME=ADDR");
        };
        if name.is_empty() || addr.is_empty() {
            bail!("--peers entry {peer:?} is not NAME=ADDR");
        }
        if members.iter().any(|m| m.name == name) {
            bail!("--peers names {name:?} twice");
        }
        members.push(Member {
            name: name.to_string(),
            addr: addr.to_string(),
        });
    }
    Ok(members)
}

/// The token given, or the one this master generated before, or a new one.
fn resolve_token(
    given: Option<String>,
    data_dir: &Path,
    clustered: bool,
) -> anyhow::Result<String> {
    let path = data_dir.join("join-token");
    if let Some(token) = given {
        if token.len() < 16 {
            bail!("--token must be at least 16 characters");
        }
        return Ok(token);
    }
    if clustered {
        bail!("--token is required when --peers names several masters");
    }
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim().to_string();
        if !existing.is_empty() {
            return Ok(existing);
        }
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_secret(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

pub(crate) async fn run(args: MasterArgs) -> anyhow::Result<()> {
    // Before the store opens, so that its first election is counted.
    let _ = keelson_actors::apiserver::metrics_recorder();
    let peers = parse_peers(&args.peers)?;
    if !peers.is_empty() && !peers.iter().any(|m| m.name == args.name) {
        tracing::info!(
            "{} is not in --peers: it waits to be added as a member",
            args.name
        );
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let token = resolve_token(args.token, &args.data_dir, peers.len() > 1)?;
    write_secret(&args.data_dir.join("join-token"), &format!("{token}\n"))?;

    let mut config = StoreConfig::new(&args.name, &args.data_dir, args.peer, &token);
    if let Some(me) = peers.iter().find(|m| m.name == args.name) {
        config.advertise = me.addr.clone();
    }
    config.peers = peers;
    config.history_window = Duration::from_secs(args.history_window_secs);
    config.compaction_interval = Duration::from_secs(args.compaction_interval_secs.max(1));
    config.snapshot_logs_since_last = args.snapshot_entries;
    config.unsafe_mode = UnsafeMode {
        stale_reads: args.unsafe_stale_reads,
        no_sync: args.unsafe_no_sync,
    };
    let store = Store::open(config)
        .await
        .with_context(|| format!("cannot start master {}", args.name))?;
    let peer_addr = store
        .local_addr()
        .map_or_else(|| args.peer.to_string(), |a| a.to_string());
    tracing::info!(name = %args.name, peer = %peer_addr, "store member running; starting the API");

    let api_config = ApiServerConfig {
        name: args.name.clone(),
        listen: args.api,
        hosts: api_hosts(&config_hosts(&args.peers)),
        data_dir: args.data_dir.clone(),
        cluster_token: Some(token.clone()),
        service_ranges: ServiceRanges {
            ips: args.service_cidr,
            node_ports: args.service_node_port_range,
        },
    };
    // The API needs the store to have a leader on first start (for the cluster CA); a signal
    // meanwhile still stops the master cleanly.
    let api = tokio::select! {
        api = ApiServer::start(store.clone(), api_config) => api,
        signal = wait_for_signal() => {
            signal?;
            store.shutdown().await;
            return Ok(());
        }
    };
    let api = match api {
        Ok(api) => api,
        Err(e) => {
            store.shutdown().await;
            return Err(e).context("cannot start the API server");
        }
    };
    tracing::info!(
        name = %args.name,
        api = %api.local_addr(),
        "master running; stop with SIGTERM or Ctrl-C"
    );
    println!(
        "keelson master {} serving the API on https://{} and the store on {} (kubeconfig {})",
        args.name,
        api.local_addr(),
        peer_addr,
        api.kubeconfig().display()
    );

    let control_plane = ControlPlane::start(
        api.client("controller-manager"),
        ControlPlaneConfig {
            node_monitor_grace: Duration::from_secs(args.node_monitor_grace_secs.max(1)),
            pod_eviction_timeout: Duration::from_secs(args.pod_eviction_timeout_secs),
            cluster_cidr: args.cluster_cidr.clone(),
            enabled: args.controllers.clone(),
            cloud_router_netns: args.cloud_router_netns.clone(),
            event_ttl: args.event_ttl,
            ..ControlPlaneConfig::default()
        },
    );

    let core_stopped = tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            false
        }
        () = store.core_stopped() => true,
    };
    if core_stopped {
        tracing::error!(
            name = %args.name,
            "the store's Raft core stopped on its own (see the error above); exiting so that \
             this master is restarted"
        );
    } else {
        tracing::info!("shutting down");
    }
    control_plane.shutdown().await;
    api.shutdown().await;
    store.shutdown().await;
    if core_stopped {
        anyhow::bail!("the store stopped: this master cannot serve");
    }
    Ok(())
}

/// The hosts of the masters' peer addresses: masters share hosts between their peer and API
/// addresses, so every master's serving certificate names every master's host.
fn config_hosts(peers: &[String]) -> Vec<String> {
    peers
        .iter()
        .filter_map(|p| p.split_once('=').map(|(_, addr)| addr.to_string()))
        .collect()
}

fn api_hosts(addrs: &[String]) -> Vec<String> {
    let mut hosts = Vec::new();
    for addr in addrs {
        let host = match addr.parse::<SocketAddr>() {
            Ok(sock) => sock.ip().to_string(),
            Err(_) => addr
                .rsplit_once(':')
                .map_or(addr.as_str(), |(h, _)| h)
                .to_string(),
        };
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    hosts
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
