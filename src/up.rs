//! `keelson up`: a one-machine cluster in one process — a master and, beside it, a node that
//! joins it over QUIC with the master's join token; data in `~/.local/share/keelson` unless
//! `--data-dir` says otherwise.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{master, node_cmd};

/// How long the master may take to write its join token on first start.
const MASTER_START_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// Where the cluster keeps its state [default: $XDG_DATA_HOME/keelson, else
    /// ~/.local/share/keelson].
    #[arg(long, env = "KEELSON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The HTTPS address of the API (nodes reach it over QUIC on the same port).
    #[arg(long, env = "KEELSON_API", default_value = "127.0.0.1:6443")]
    api: SocketAddr,
    /// The QUIC address of the store.
    #[arg(long, env = "KEELSON_PEER", default_value = "127.0.0.1:7400")]
    peer: SocketAddr,
    /// The node's name [default: this machine's host name].
    #[arg(long, env = "KEELSON_NODE_NAME")]
    node_name: Option<String>,
    /// Log as JSON (the global `--log-format`), passed on to the node's shims.
    #[arg(skip)]
    pub(crate) log_json: bool,
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("keelson");
    }
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/share/keelson")
}

/// A DNS-1123 node name from the host name.
fn node_name_from(host: &str) -> String {
    let name: String = host
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c| c == '-' || c == '.').to_string();
    if name.is_empty() {
        "node".to_string()
    } else {
        name.chars().take(63).collect()
    }
}

pub(crate) async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let master_dir = data_dir.join("master");
    let node_dir = data_dir.join("node");
    let node_name = match args.node_name {
        Some(name) => name,
        None => node_name_from(
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim(),
        ),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let node = tokio::spawn(run_node(
        master_dir.clone(),
        node_dir,
        node_name,
        args.api.to_string(),
        args.log_json,
        stop_rx,
    ));
    // The master runs on this task: its control plane starts actix actors, which need the
    // System's thread. It stops on SIGTERM/SIGINT by itself; the node follows it.
    let result = master::run(master::MasterArgs::single(
        "up", master_dir, args.api, args.peer,
    ))
    .await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(Duration::from_secs(10), node).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %format!("{e:#}"), "the node failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "the node panicked"),
        Err(_) => tracing::warn!("the node did not stop within 10 s"),
        Ok(Ok(Ok(()))) => {}
    }
    result
}

/// Waits for the master's join token, then runs the node until `stop`.
async fn run_node(
    master_dir: PathBuf,
    node_dir: PathBuf,
    node_name: String,
    api: String,
    log_json: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let token_path = master_dir.join("node-token");
    let kubeconfig = master_dir.join("admin.kubeconfig");
    let started = std::time::Instant::now();
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(&token_path) {
            if !token.trim().is_empty() && kubeconfig.exists() {
                break token.trim().to_string();
            }
        }
        anyhow::ensure!(
            started.elapsed() < MASTER_START_TIMEOUT,
            "the master did not write {} within {MASTER_START_TIMEOUT:?}",
            token_path.display()
        );
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };
    println!("keelson up: node {node_name} joining; to use the cluster:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kctl get nodes");
    println!("  kctl apply -f examples/hello.yaml && kctl get pods -w");
    let mut node_args = node_cmd::NodeArgs::for_up(&node_name, node_dir, &api, &token);
    node_args.log_json = log_json;
    node_cmd::run_until(node_args, stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        let cases = [
            ("Build-Box_01", "build-box-01"),
            ("host.example.com", "host.example.com"),
            ("", "node"),
            ("--", "node"),
        ];
        for (host, want) in cases {
            assert_eq!(node_name_from(host), want, "{host}");
        }
    }
}
