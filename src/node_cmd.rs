//! `keelson node`: runs a node against the masters, over the node link (QUIC, `--masters` and
//! a join token) or the HTTPS API (`--kubeconfig`): a kubelet whose containers run through
//! runc (or as plain processes), or hollow nodes (kubemark-style: they register, heartbeat and
//! report pods Running without running anything).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use keelson_node::dns::{self, ClusterDns, DnsConfig};
use keelson_node::kubelet::{self, Kubelet, KubeletConfig};
use keelson_node::monitoring;
use keelson_node::network::{self, NetworkConfig, PodNetwork};
use keelson_node::proxy::{Proxy, ProxyConfig, ProxyMode};
use keelson_node::runtime::{ProcessRuntime, RuncRuntime, ShimCommand};
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub(crate) enum Runtime {
    /// Containers through runc (needs root and runc).
    Runc,
    /// Containers as supervised host processes, without isolation (no root needed).
    Process,
    /// No containers: pods are reported Running at once.
    Hollow,
}

#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// What runs the pods [default: runc when running as root with runc installed, else
    /// process].
    #[arg(long, value_enum, env = "KEELSON_RUNTIME")]
    pub(crate) runtime: Option<Runtime>,
    /// The masters' API addresses (HOST:PORT): the node connects over QUIC with `--token`.
    #[arg(
        long,
        env = "KEELSON_MASTERS",
        value_delimiter = ',',
        conflicts_with = "kubeconfig"
    )]
    pub(crate) masters: Vec<String>,
    /// The join token (a master's `node-token` file) for `--masters`.
    #[arg(long, env = "KEELSON_TOKEN")]
    pub(crate) token: Option<String>,
    /// Where the node keeps the cluster CA and its credential.
    #[arg(
        long,
        env = "KEELSON_DATA_DIR",
        default_value = "/var/lib/keelson-node"
    )]
    pub(crate) data_dir: PathBuf,
    /// Instead of `--masters`: the kubeconfig with the API's URL, CA and token (a master's
    /// admin.kubeconfig); the nodes speak HTTPS.
    #[arg(long, env = "KEELSON_KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// More API URLs to fail over to, after the kubeconfig's.
    #[arg(long = "server", env = "KEELSON_SERVERS", value_delimiter = ',')]
    pub(crate) servers: Vec<String>,
    /// The node name; with `--count N` the names are NAME-0 .. NAME-(N-1).
    #[arg(long, env = "KEELSON_NODE_NAME")]
    pub(crate) name: String,
    /// How many hollow nodes this process runs.
    #[arg(long)]
    pub(crate) count: Option<usize>,
    /// Seconds between Lease renewals.
    #[arg(long, default_value_t = 2)]
    heartbeat_secs: u64,
    /// The node status is rewritten every this many heartbeats.
    #[arg(long, default_value_t = 5)]
    status_every_heartbeats: u32,
    /// CPU capacity (a Kubernetes quantity).
    #[arg(long, default_value = "4")]
    cpu: String,
    /// Memory capacity (a Kubernetes quantity).
    #[arg(long, default_value = "8Gi")]
    memory: String,
    /// Pod capacity.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// The node's address [default: the local address that reaches the first master].
    #[arg(long, env = "KEELSON_NODE_IP")]
    node_ip: Option<String>,
    /// The first restart delay of a crashing container (CrashLoopBackOff), in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    crash_backoff_initial_ms: u64,
    /// The longest restart delay, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    crash_backoff_max_ms: u64,
    /// Registries (HOST:PORT) pulled from over plain HTTP (loopback ones always are).
    #[arg(
        long = "insecure-registry",
        env = "KEELSON_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure_registries: Vec<String>,
    /// A directory of OCI image archives (*.tar) imported at start, for machines without a
    /// registry [default: DATA_DIR/airgap-images].
    #[arg(long, env = "KEELSON_AIRGAP_DIR")]
    airgap_dir: Option<PathBuf>,
    /// All pods' addresses (the masters' `--cluster-cidr`): pod traffic to elsewhere is
    /// masqueraded.
    #[arg(long, env = "KEELSON_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// The DNS servers pods use (dnsPolicy ClusterFirst) [default: this node's cluster DNS
    /// when it runs one, else the node's own resolv.conf].
    #[arg(long, env = "KEELSON_CLUSTER_DNS", value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    #[arg(long, env = "KEELSON_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Where to serve `GET /metrics` (Prometheus) and `/healthz` over plain HTTP, as IP:PORT
    /// (port 0 picks a free one; '' or 'off' serves nothing). Keep it on loopback or a trusted
    /// network: it has no TLS and no authentication.
    #[arg(long, env = "KEELSON_METRICS_ADDR", default_value = "127.0.0.1:10255")]
    metrics_addr: String,
    /// A container's log is rotated when it reaches this size (a quantity: 10Mi, 512Ki).
    #[arg(long, env = "KEELSON_CONTAINER_LOG_MAX_SIZE", default_value = "10Mi",
          value_parser = kubelet::log_gc::parse_size)]
    container_log_max_size: u64,
    /// Log files kept per container, the current one included.
    #[arg(long, env = "KEELSON_CONTAINER_LOG_MAX_FILES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    container_log_max_files: u32,
    /// All containers' logs on this node together, at most: over it, the oldest rotated files
    /// go first, then logs of exited containers; never a running container's current file.
    #[arg(long, env = "KEELSON_CONTAINER_LOG_MAX_TOTAL_SIZE", default_value = "1Gi",
          value_parser = kubelet::log_gc::parse_size)]
    container_log_max_total_size: u64,
    /// Log as JSON (the global `--log-format`), passed on to the containers' shims.
    #[arg(skip)]
    pub(crate) log_json: bool,
}

impl NodeArgs {
    /// The node `keelson up` runs beside its master.
    pub(crate) fn for_up(name: &str, data_dir: PathBuf, master: &str, token: &str) -> NodeArgs {
        NodeArgs {
            runtime: None,
            masters: vec![master.to_string()],
            token: Some(token.to_string()),
            data_dir,
            kubeconfig: None,
            servers: Vec::new(),
            name: name.to_string(),
            count: None,
            heartbeat_secs: 2,
            status_every_heartbeats: 5,
            cpu: "4".to_string(),
            memory: "8Gi".to_string(),
            max_pods: 110,
            node_ip: None,
            crash_backoff_initial_ms: 10_000,
            crash_backoff_max_ms: 300_000,
            insecure_registries: Vec::new(),
            airgap_dir: None,
            cluster_cidr: ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16)
                .unwrap_or_default(),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".to_string(),
            // One process: the master's /metrics shows the node's series too.
            metrics_addr: "off".to_string(),
            container_log_max_size: kubelet::log_gc::LogLimits::default().max_bytes,
            container_log_max_files: kubelet::log_gc::LogLimits::default().max_files,
            container_log_max_total_size: kubelet::log_gc::LogLimits::default().max_total_bytes,
            log_json: false,
        }
    }
}

/// The node names: NAME alone, or NAME-0 .. NAME-(N-1) with a count.
fn node_names(name: &str, count: Option<usize>) -> Vec<String> {
    match count {
        None => vec![name.to_string()],
        Some(n) => (0..n).map(|i| format!("{name}-{i}")).collect(),
    }
}

/// runc is usable: this process is root and `runc --version` runs. Returns its version.
fn runc_version() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let output = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let first = text.lines().next()?.trim().to_string();
    Some(first.rsplit(' ').next().unwrap_or("unknown").to_string())
}

/// The local address that reaches `master` (no packet is sent).
fn local_ip_towards(master: &str) -> Option<String> {
    use std::net::ToSocketAddrs;
    let target = master.to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(target).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

/// Connects as `args` says: the node link or HTTPS.
async fn connect(
    args: &NodeArgs,
) -> anyhow::Result<(keelson_node::ApiClient, Option<keelson_node::NodeLink>)> {
    match (&args.kubeconfig, args.masters.is_empty()) {
        (Some(path), _) => {
            let config = keelson_node::Kubeconfig::load(path).context("loading the kubeconfig")?;
            let api = keelson_node::ApiClient::new(&config, &args.servers)
                .context("building the API client")?;
            Ok((api, None))
        }
        (None, false) => {
            let Some(token) = args.token.as_deref() else {
                anyhow::bail!("--masters needs --token JOIN_TOKEN (a master's node-token file)");
            };
            let link = keelson_node::NodeLink::connect(
                args.masters.clone(),
                &args.data_dir,
                token,
                &args.name,
            )
            .await
            .context("connecting to the masters")?;
            Ok((keelson_node::ApiClient::over_quic(link.clone()), Some(link)))
        }
        (None, true) => anyhow::bail!("give --masters (and --token) or --kubeconfig"),
    }
}

/// Runs the node until SIGTERM or Ctrl-C.
pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut node = tokio::spawn(run_until(args, stop_rx));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        result = &mut node => return result.context("the node panicked")?,
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), node).await {
        Ok(result) => result.context("the node panicked")?,
        Err(_) => anyhow::bail!("the node did not stop within 10 s"),
    }
}

/// Runs the node until `stop` turns true.
pub(crate) async fn run_until(args: NodeArgs, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    start_metrics(&args.metrics_addr, stop.clone()).await?;
    let (api, link) = connect(&args).await?;
    let runtime = match args.runtime {
        Some(runtime) => runtime,
        None => match runc_version() {
            Some(_) => Runtime::Runc,
            None => {
                tracing::warn!(
                    "runc is not usable here (it needs root and the runc package): containers run \
                     as plain host processes, without isolation"
                );
                Runtime::Process
            }
        },
    };
    if runtime == Runtime::Hollow {
        let hollow = keelson_node::HollowConfig {
            names: node_names(&args.name, args.count),
            heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
            status_every_heartbeats: args.status_every_heartbeats.max(1),
            cpu: args.cpu,
            memory: args.memory,
            max_pods: args.max_pods,
            pid: std::process::id(),
        };
        tracing::info!(servers = ?api.servers(), nodes = hollow.names.len(), "starting hollow nodes");
        return keelson_node::hollow::run(api, hollow, stop)
            .await
            .context("running hollow nodes");
    }
    anyhow::ensure!(args.count.is_none(), "--count is for hollow nodes only");
    let shim = ShimCommand::current_exe()
        .context("finding the shim")?
        .with_log_format_json(args.log_json);
    let state = args.data_dir.join("runtime");
    let runtime_kind = runtime;
    let (runtime, version): (Arc<dyn keelson_node::runtime::Runtime>, String) = match runtime {
        Runtime::Runc => {
            let version = runc_version().context(
                "--runtime runc needs root and runc (apt-get install runc); or use --runtime process",
            )?;
            let network = Arc::new(PodNetwork::new(NetworkConfig {
                dir: args.data_dir.join("network"),
                cluster_cidr: args.cluster_cidr,
                bridge: network::BRIDGE.to_string(),
            }));
            if let Err(e) = network.restore().await {
                tracing::warn!(error = %e, "cannot restore the pod network");
            }
            tokio::spawn(network::follow_pod_cidr(
                api.clone(),
                args.name.clone(),
                network.clone(),
                stop.clone(),
            ));
            let runc = RuncRuntime::new(&state, shim)
                .and_then(|r| r.with_network(network))
                .context("opening the runc runtime")?
                .with_log_limits(args.container_log_max_size, args.container_log_max_files);
            (Arc::new(runc), format!("runc://{version}"))
        }
        _ => {
            let process = ProcessRuntime::new(&state, shim)
                .context("opening the process runtime")?
                .with_log_limits(args.container_log_max_size, args.container_log_max_files);
            (Arc::new(process), "process://0.1.0".to_string())
        }
    };
    tracing::info!(runtime = runtime.name(), version = %version, "container runtime chosen");
    let images = keelson_node::images::ImageStore::open(
        &args.data_dir.join("images"),
        keelson_node::images::ImageOptions {
            insecure_registries: args.insecure_registries.clone(),
            ..keelson_node::images::ImageOptions::default()
        },
    )
    .context("opening the image store")?;
    let airgap = args
        .airgap_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("airgap-images"));
    if airgap.is_dir() {
        match images.import_dir(&airgap).await {
            Ok(refs) => {
                tracing::info!(dir = %airgap.display(), images = ?refs, "air-gap images imported")
            }
            Err(e) => {
                tracing::warn!(dir = %airgap.display(), error = %e, "cannot import the air-gap images")
            }
        }
    }
    match images.ensure_builtin_busybox().await {
        Ok(Some(reference)) => tracing::info!(%reference, "built-in image ready"),
        Ok(None) => tracing::info!("no /bin/busybox: the built-in busybox image is not available"),
        Err(e) => tracing::warn!(error = %e, "cannot build the built-in busybox image"),
    }
    let node_ip = match &args.node_ip {
        Some(ip) => ip.clone(),
        None => args
            .masters
            .first()
            .and_then(|m| local_ip_towards(m.trim_start_matches("https://")))
            .unwrap_or_else(|| "127.0.0.1".to_string()),
    };
    let config = KubeletConfig {
        node_name: args.name.clone(),
        node_ip,
        pods_dir: args.data_dir.join("pods"),
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        backoff: kubelet::sync::Backoff {
            initial: Duration::from_millis(args.crash_backoff_initial_ms.max(1)),
            max: Duration::from_millis(
                args.crash_backoff_max_ms.max(args.crash_backoff_initial_ms),
            ),
        },
        max_pods: args.max_pods,
        runtime_version: version,
        dns: kubelet::etc_files::DnsSettings {
            cluster_dns: args.cluster_dns.clone(),
            cluster_domain: args.cluster_domain.clone(),
            host_resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        },
        container_logs_max_total_bytes: args.container_log_max_total_size,
    };
    let proxy = Proxy::new(
        api.clone(),
        ProxyConfig {
            node_ips: config.node_ip.parse().ok().into_iter().collect(),
            cluster_cidr: args.cluster_cidr.to_string(),
            mode: ProxyMode::Auto,
            netns: None,
        },
    );
    let services = proxy.subscribe();
    let proxy_stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = proxy.run(proxy_stop).await {
            tracing::error!(error = %e, "the service proxy stopped");
        }
    });
    let mut config = config;
    if config.dns.cluster_dns.is_empty() && runtime_kind == Runtime::Runc {
        match start_cluster_dns(&args, &config.dns.host_resolv_conf, services, stop.clone()).await {
            Ok(ip) => config.dns.cluster_dns = vec![ip],
            Err(e) => tracing::warn!(
                error = %e,
                "no cluster DNS on this node: pods use the node's resolv.conf"
            ),
        }
    }
    let kubelet = Kubelet::new(api, runtime, Arc::new(images), config);
    let stats = kubelet.stats_source();
    tokio::spawn(stats.clone().run(stop.clone()));
    if let Some(link) = &link {
        link.set_callbacks(Arc::new(kubelet::callbacks::KubeletCallbacks {
            logs: kubelet::serve_logs::LogCallbacks {
                source: kubelet.log_source(),
            },
            stats,
        }));
    }
    tracing::info!(node = %args.name, "kubelet running");
    kubelet.run(stop).await.context("running the kubelet")
}

/// Installs the process's metrics recorder and serves it on `addr` until `stop`. An address
/// that does not parse is an error; one that cannot be bound (in use) is logged and the node
/// runs without an endpoint: metrics are not worth stopping the kubelet for.
async fn start_metrics(addr: &str, stop: watch::Receiver<bool>) -> anyhow::Result<()> {
    // First, so that nothing recorded is lost (in `keelson up` the master installed it).
    let handle = keelson_actors::apiserver::metrics_recorder();
    let Some(addr) = monitoring::server::parse_addr(addr).context("--metrics-addr")? else {
        tracing::info!("no metrics endpoint (--metrics-addr off)");
        return Ok(());
    };
    let Some(handle) = handle else {
        tracing::warn!("no metrics endpoint: the metrics recorder could not be installed");
        return Ok(());
    };
    let render: monitoring::Renderer = Arc::new(move || handle.render());
    match monitoring::MetricsServer::bind(addr, render).await {
        Ok(server) => {
            let bound = server.local_addr().unwrap_or(addr);
            tracing::info!(address = %bound, "serving metrics on http://{bound}/metrics");
            tokio::spawn(server.serve(stop));
        }
        Err(e) => tracing::warn!(
            error = %e,
            "no metrics endpoint: give --metrics-addr a free address (port 0 picks one) or off"
        ),
    }
    Ok(())
}

/// The node-local address of the cluster DNS (as Kubernetes' NodeLocal DNSCache uses).
const NODE_DNS_IP: &str = "169.254.20.10";

/// Serves cluster DNS at [`NODE_DNS_IP`] (added to the node's loopback) from the proxy's
/// watch cache of Services and Endpoints; returns the address pods are to use.
async fn start_cluster_dns(
    args: &NodeArgs,
    host_resolv_conf: &str,
    mut services: watch::Receiver<Arc<keelson_node::proxy::ServiceSnapshot>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("ip")
        .args(["addr", "replace", &format!("{NODE_DNS_IP}/32"), "dev", "lo"])
        .output()
        .await
        .context("running ip")?;
    anyhow::ensure!(
        output.status.success(),
        "cannot add {NODE_DNS_IP} to the loopback: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let dns = Arc::new(
        ClusterDns::new(DnsConfig {
            cluster_domain: args.cluster_domain.clone(),
            upstreams: dns::upstreams_from_resolv_conf(host_resolv_conf),
            ttl_secs: 5,
        })
        .context("configuring the cluster DNS")?,
    );
    let addr: std::net::SocketAddr = format!("{NODE_DNS_IP}:53").parse()?;
    let server = dns.clone();
    let serve_stop = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = server.serve(addr, serve_stop).await {
            tracing::error!(error = %e, "the cluster DNS stopped");
        }
    });
    let mut stop = stop;
    tokio::spawn(async move {
        loop {
            let snapshot = services.borrow_and_update().clone();
            if snapshot.synced {
                dns.update(&snapshot.services, &snapshot.endpoints);
            }
            tokio::select! {
                changed = services.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
        }
    });
    tracing::info!(address = %addr, domain = %args.cluster_domain, "cluster DNS serving");
    Ok(NODE_DNS_IP.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_count() {
        assert_eq!(node_names("n", None), vec!["n"]);
        assert_eq!(node_names("n", Some(3)), vec!["n-0", "n-1", "n-2"]);
        assert!(node_names("n", Some(0)).is_empty());
    }
}
