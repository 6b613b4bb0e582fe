//! `keelson node`: runs nodes against the masters, over the node link (QUIC, `--masters` and
//! a join token) or the HTTPS API (`--kubeconfig`); for now only the hollow runtime
//! (kubemark-style nodes that register, heartbeat and report pods Running).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Runtime {
    /// No containers: pods are reported Running at once.
    Hollow,
}

#[derive(clap::Args)]
pub(crate) struct NodeArgs {
    /// What runs the pods.
    #[arg(long, value_enum, env = "KEELSON_RUNTIME")]
    runtime: Runtime,
    /// The masters' API addresses (HOST:PORT): the node connects over QUIC with `--token`.
    #[arg(
        long,
        env = "KEELSON_MASTERS",
        value_delimiter = ',',
        conflicts_with = "kubeconfig"
    )]
    masters: Vec<String>,
    /// The join token (a master's `node-token` file) for `--masters`.
    #[arg(long, env = "KEELSON_TOKEN")]
    token: Option<String>,
    /// Where the node keeps the cluster CA and its credential.
    #[arg(
        long,
        env = "KEELSON_DATA_DIR",
        default_value = "/var/lib/keelson-node"
    )]
    data_dir: PathBuf,
    /// Instead of `--masters`: the kubeconfig with the API's URL, CA and token (a master's
    /// admin.kubeconfig); the nodes speak HTTPS.
    #[arg(long, env = "KEELSON_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// More API URLs to fail over to, after the kubeconfig's.
    #[arg(long = "server", env = "KEELSON_SERVERS", value_delimiter = ',')]
    servers: Vec<String>,
    /// The node name; with `--count N` the names are NAME-0 .. NAME-(N-1).
    #[arg(long, env = "KEELSON_NODE_NAME")]
    name: String,
    /// How many hollow nodes this process runs.
    #[arg(long)]
    count: Option<usize>,
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
}

/// The node names: NAME alone, or NAME-0 .. NAME-(N-1) with a count.
fn node_names(name: &str, count: Option<usize>) -> Vec<String> {
    match count {
        None => vec![name.to_string()],
        Some(n) => (0..n).map(|i| format!("{name}-{i}")).collect(),
    }
}

pub(crate) async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let Runtime::Hollow = args.runtime;
    let api = match (&args.kubeconfig, args.masters.is_empty()) {
        (Some(path), _) => {
            let config = keelson_node::Kubeconfig::load(path).context("loading the kubeconfig")?;
            keelson_node::ApiClient::new(&config, &args.servers)
                .context("building the API client")?
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
            keelson_node::ApiClient::over_quic(link)
        }
        (None, true) => anyhow::bail!("give --masters (and --token) or --kubeconfig"),
    };
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
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = tokio::spawn(keelson_node::hollow::run(api, hollow, stop_rx));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
        result = &mut nodes => {
            return result.context("the hollow nodes panicked")?.context("running hollow nodes");
        }
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), nodes).await {
        Ok(result) => result
            .context("the hollow nodes panicked")?
            .context("running hollow nodes"),
        Err(_) => anyhow::bail!("the hollow nodes did not stop within 10 s"),
    }
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
