//! Cloud controllers behind the [`CloudProvider`] trait, with the `local` provider for nodes on
//! one Linux host.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use keelson_api::object;
use keelson_api::resources::{self, Resource};
use serde_json::{json, Value};

use crate::client::DeleteOptions;
use crate::control_plane::ControllerContext;
use crate::controllers::{feed, work, Requeue, QUEUE_KEYS_MAX};
use crate::informer::{key_of, split_key, Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// The node annotation with the pid of the node's agent process (on the local provider).
pub const PID_ANNOTATION: &str = "keelson.io/pid";
/// How often a NotReady node's instance is checked.
const NODE_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How often routes are ensured again.
const ROUTE_SYNC_INTERVAL: Duration = Duration::from_secs(30);
/// The largest volume the local provider creates.
const VOLUME_BYTES_MAX: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// A route to a node's pod CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub node_name: String,
    pub pod_cidr: String,
    pub node_ip: String,
    /// Whether a kernel route was installed (false: recorded only, none was needed).
    pub installed: bool,
}

/// What the cloud controllers ask of the machines' provider.
pub trait CloudProvider: Send + Sync {
    /// The provider's name (`local`).
    fn name(&self) -> &'static str;
    /// Whether the node's machine exists. `Ok(false)` only when it is definitively gone; when
    /// the provider cannot tell it answers `Ok(true)` or an error.
    fn instance_exists(&self, node: &Value) -> Result<bool, CloudError>;
    /// Makes `pod_cidr` reachable through `node_ip`.
    fn ensure_route(
        &self,
        node_name: &str,
        pod_cidr: &str,
        node_ip: &str,
    ) -> Result<Route, CloudError>;
    fn delete_route(&self, node_name: &str) -> Result<(), CloudError>;
    fn list_routes(&self) -> Result<Vec<Route>, CloudError>;
    /// Makes the service reachable on an external address; returns the address.
    fn ensure_load_balancer(
        &self,
        service: &Value,
        node_ips: &[String],
        node_ports: &[i64],
    ) -> Result<String, CloudError>;
    fn delete_load_balancer(&self, service: &Value) -> Result<(), CloudError>;
    /// Creates a volume of `size_bytes`; returns where it is.
    fn create_volume(&self, name: &str, size_bytes: u64) -> Result<PathBuf, CloudError>;
    fn delete_volume(&self, name: &str) -> Result<(), CloudError>;
}

/// Nodes on this Linux host.
#[derive(Debug)]
pub struct LocalCloud {
    /// Where volumes are created.
    data_dir: PathBuf,
    routes: Mutex<BTreeMap<String, Route>>,
    /// The network namespace (an `ip netns` name) that routes between the nodes, when it is
    /// not this process's own: the "cloud's" router.
    router_netns: Option<String>,
}

impl Default for LocalCloud {
    fn default() -> Self {
        LocalCloud::new(std::env::temp_dir().join("keelson-local-cloud"))
    }
}

/// The pure verdict on a local instance: gone only when its agent's pid is known, the node's
/// address is on this host, and the process is not running.
pub(crate) fn local_instance_exists(
    pid: Option<u32>,
    address_is_local: bool,
    process_alive: impl Fn(u32) -> bool,
) -> bool {
    match pid {
        Some(pid) if address_is_local => process_alive(pid),
        _ => true,
    }
}

/// The node's InternalIP (else its first address).
pub(crate) fn node_ip(node: &Value) -> Option<String> {
    let addresses = node.pointer("/status/addresses")?.as_array()?;
    addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())
        .and_then(|a| a["address"].as_str())
        .map(str::to_string)
}

fn is_local_address(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => true,
        Ok(ip) => std::net::UdpSocket::bind((ip, 0)).is_ok(),
        Err(_) => false,
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether a kernel route is needed: only for a node on another, non-loopback address.
pub(crate) fn route_needed(node_ip: &str, root: bool, local: bool) -> bool {
    root && !local
        && node_ip
            .parse::<IpAddr>()
            .is_ok_and(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !name.starts_with('.')
}

impl LocalCloud {
    pub fn new(data_dir: PathBuf) -> Self {
        LocalCloud {
            data_dir,
            routes: Mutex::new(BTreeMap::new()),
            router_netns: None,
        }
    }

    /// Installs routes in the named network namespace instead of this process's.
    pub fn with_router_netns(mut self, netns: Option<String>) -> Self {
        self.router_netns = netns;
        self
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Route>> {
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn ip_route(&self, args: &[&str]) -> Result<(), CloudError> {
        let mut command = std::process::Command::new("ip");
        if let Some(netns) = &self.router_netns {
            command.args(["-n", netns]);
        }
        let output = command
            .arg("route")
            .args(args)
            .output()
            .map_err(|source| CloudError::Io {
                path: PathBuf::from("ip"),
                source,
            })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(CloudError::Command {
                command: format!("ip route {}", args.join(" ")),
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    fn volume_path(&self, name: &str) -> Result<PathBuf, CloudError> {
        if !valid_volume_name(name) {
            return Err(CloudError::Invalid(format!("volume name {name:?}")));
        }
        Ok(self.data_dir.join("volumes").join(name))
    }
}

impl CloudProvider for LocalCloud {
    fn name(&self) -> &'static str {
        "local"
    }

    fn instance_exists(&self, node: &Value) -> Result<bool, CloudError> {
        let pid = object::annotations(node)
            .get(PID_ANNOTATION)
            .and_then(|p| p.parse::<u32>().ok());
        let local = node_ip(node).is_some_and(|ip| is_local_address(&ip));
        Ok(local_instance_exists(pid, local, |pid| {
            Path::new(&format!("/proc/{pid}")).exists()
        }))
    }

    fn ensure_route(
        &self,
        node_name: &str,
        pod_cidr: &str,
        node_ip: &str,
    ) -> Result<Route, CloudError> {
        let wanted = Route {
            node_name: node_name.to_string(),
            pod_cidr: pod_cidr.to_string(),
            node_ip: node_ip.to_string(),
            installed: route_needed(
                node_ip,
                is_root(),
                self.router_netns.is_none() && is_local_address(node_ip),
            ),
        };
        if let Some(existing) = self.routes().get(node_name) {
            if existing.pod_cidr == wanted.pod_cidr && existing.node_ip == wanted.node_ip {
                return Ok(existing.clone());
            }
        }
        if wanted.installed {
            self.ip_route(&["replace", pod_cidr, "via", node_ip])?;
            tracing::info!(node = node_name, pod_cidr, node_ip, "route installed");
        } else {
            tracing::info!(
                node = node_name,
                pod_cidr,
                node_ip,
                "no kernel route needed (node on this host, or not root); recorded"
            );
        }
        self.routes().insert(node_name.to_string(), wanted.clone());
        Ok(wanted)
    }

    fn delete_route(&self, node_name: &str) -> Result<(), CloudError> {
        let removed = self.routes().remove(node_name);
        if let Some(route) = removed.filter(|r| r.installed) {
            self.ip_route(&["del", &route.pod_cidr, "via", &route.node_ip])?;
        }
        Ok(())
    }

    fn list_routes(&self) -> Result<Vec<Route>, CloudError> {
        Ok(self.routes().values().cloned().collect())
    }

    fn ensure_load_balancer(
        &self,
        _service: &Value,
        node_ips: &[String],
        _node_ports: &[i64],
    ) -> Result<String, CloudError> {
        // One host: the node ports are reachable on the host's address already.
        Ok(node_ips
            .first()
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".to_string()))
    }

    fn delete_load_balancer(&self, _service: &Value) -> Result<(), CloudError> {
        Ok(())
    }

    fn create_volume(&self, name: &str, size_bytes: u64) -> Result<PathBuf, CloudError> {
        if size_bytes > VOLUME_BYTES_MAX {
            return Err(CloudError::Invalid(format!(
                "volume size {size_bytes} bytes is over {VOLUME_BYTES_MAX}"
            )));
        }
        let path = self.volume_path(name)?;
        std::fs::create_dir_all(&path).map_err(|source| CloudError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    fn delete_volume(&self, name: &str) -> Result<(), CloudError> {
        let path = self.volume_path(name)?;
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(CloudError::Io { path, source }),
        }
    }
}

/// Whether the node reports `Ready=True`.
pub(crate) fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn find(plural: &str) -> anyhow::Result<&'static Resource> {
    resources::find("", "v1", plural).ok_or_else(|| anyhow::anyhow!("{plural} are not registered"))
}

fn keys_on_change(informer: &Informer) -> impl Fn(&Change) -> Vec<String> + Send + 'static {
    let informer = informer.clone();
    move |change| match change {
        Change::Applied { new, .. } => vec![key_of(new)],
        Change::Deleted(old) => vec![key_of(old)],
        Change::Resynced => informer.keys(),
    }
}

/// Deletes Node objects whose machine is gone, after the node has turned NotReady.
pub(crate) async fn run_node_controller(
    ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    let resource = find("nodes")?;
    let nodes = ctx.informers.of(resource);
    let queue: WorkQueue<String> = WorkQueue::new("cloud-node", QUEUE_KEYS_MAX);
    let feeder = feed(&nodes, &queue, keys_on_change(&nodes));
    tokio::select! {
        _ = stop.stopped() => return Ok(()),
        _ = nodes.wait_synced() => {}
    }
    let resync = nodes.clone();
    work(
        "cloud-node",
        queue,
        vec![feeder],
        &mut stop,
        move |q| {
            for key in resync.keys() {
                q.add(key);
            }
        },
        |name: String| {
            let ctx = ctx.clone();
            let nodes = nodes.clone();
            async move {
                let Some(node) = nodes.get(&name) else {
                    return Ok(Requeue::Done);
                };
                if node_ready(&node) {
                    return Ok(Requeue::Done);
                }
                match ctx.cloud.instance_exists(&node) {
                    Ok(true) => Ok(Requeue::After(NODE_CHECK_INTERVAL)),
                    Ok(false) => {
                        let options = DeleteOptions {
                            precondition_uid: object::uid(&node).map(str::to_string),
                            ..DeleteOptions::default()
                        };
                        match ctx.client.delete(resource, None, &name, &options).await {
                            Ok(_) => {
                                tracing::info!(node = name, "instance gone: node deleted");
                                delete_pods_of_gone_node(&ctx, &name).await?;
                                Ok(Requeue::Done)
                            }
                            Err(e) if e.code() == 404 || e.code() == 409 => Ok(Requeue::Done),
                            Err(e) => Err(e.into()),
                        }
                    }
                    Err(e) => Err(e.into()),
                }
            }
        },
    )
    .await;
    Ok(())
}

/// Deletes, at once, the pods bound to a node whose machine is gone (as Kubernetes' pod
/// garbage collector does for pods of nodes that no longer exist): no kubelet is left to
/// finish their deletion, and their controllers replace them once they are gone.
async fn delete_pods_of_gone_node(ctx: &ControllerContext, node: &str) -> anyhow::Result<()> {
    let resource = find("pods")?;
    let pods = ctx.informers.of(resource);
    pods.wait_synced().await;
    for pod in pods.on_node(node) {
        let (Some(namespace), Some(name)) = (object::namespace(&pod), object::name(&pod)) else {
            continue;
        };
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            precondition_uid: object::uid(&pod).map(str::to_string),
            ..DeleteOptions::default()
        };
        match ctx
            .client
            .delete(resource, Some(namespace), name, &options)
            .await
        {
            Ok(_) => {
                ctx.events.for_component("cloud-node-controller").record(
                    &pod,
                    crate::events::EventType::Warning,
                    "NodeGone",
                    &format!("Deleting pod {namespace}/{name}: its node {node} is gone"),
                );
            }
            Err(e) if e.code() == 404 || e.code() == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Ensures a route for every node with a pod CIDR through the provider, now and then.
pub(crate) async fn run_route_controller(
    ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    let nodes = ctx.informers.of(find("nodes")?);
    tokio::select! {
        _ = stop.stopped() => return Ok(()),
        _ = nodes.wait_synced() => {}
    }
    let mut ticker = tokio::time::interval(ROUTE_SYNC_INTERVAL);
    loop {
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            _ = ticker.tick() => {}
        }
        let mut names = Vec::new();
        for node in nodes.list() {
            let Some(name) = object::name(&node) else {
                continue;
            };
            names.push(name.to_string());
            let cidr = node.pointer("/spec/podCIDR").and_then(Value::as_str);
            if let (Some(cidr), Some(ip)) = (cidr, node_ip(&node)) {
                if let Err(e) = ctx.cloud.ensure_route(name, cidr, &ip) {
                    tracing::warn!(node = name, error = %e, "cannot ensure the node's route");
                }
            }
        }
        for route in ctx.cloud.list_routes().unwrap_or_default() {
            if !names.contains(&route.node_name) {
                if let Err(e) = ctx.cloud.delete_route(&route.node_name) {
                    tracing::warn!(node = route.node_name, error = %e, "cannot delete a route");
                }
            }
        }
    }
}

/// The node ports of a service, if every port has one.
pub(crate) fn node_ports(service: &Value) -> Option<Vec<i64>> {
    let ports = service.pointer("/spec/ports")?.as_array()?;
    if ports.is_empty() {
        return None;
    }
    ports
        .iter()
        .map(|p| p.get("nodePort").and_then(Value::as_i64))
        .collect()
}

/// The pure core of the service controller: the `status.loadBalancer` to write, if it must
/// change. `ip` is the provider's address for a LoadBalancer service with node ports.
pub(crate) fn desired_load_balancer(service: &Value, ip: Option<&str>) -> Option<Value> {
    let current = service
        .pointer("/status/loadBalancer")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let is_lb = service.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
    let wanted = match ip {
        Some(ip) if is_lb && node_ports(service).is_some() => json!({"ingress": [{"ip": ip}]}),
        _ if is_lb => return None,
        _ => json!({}),
    };
    let current_ingress = current.get("ingress").filter(|i| !i.is_null());
    let wanted_ingress = wanted.get("ingress");
    (current_ingress != wanted_ingress).then_some(wanted)
}

/// Gives LoadBalancer services an ingress address once they have node ports, and takes it
/// away when their type changes.
pub(crate) async fn run_service_controller(
    ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    let resource = find("services")?;
    let services = ctx.informers.of(resource);
    let nodes = ctx.informers.of(find("nodes")?);
    let queue: WorkQueue<String> = WorkQueue::new("service-lb", QUEUE_KEYS_MAX);
    let feeder = feed(&services, &queue, keys_on_change(&services));
    for informer in [&services, &nodes] {
        tokio::select! {
            _ = stop.stopped() => return Ok(()),
            _ = informer.wait_synced() => {}
        }
    }
    let resync = services.clone();
    work(
        "service-lb",
        queue,
        vec![feeder],
        &mut stop,
        move |q| {
            for key in resync.keys() {
                q.add(key);
            }
        },
        |key: String| {
            let ctx = ctx.clone();
            let services = services.clone();
            let nodes = nodes.clone();
            async move {
                let Some(service) = services.get(&key) else {
                    return Ok(Requeue::Done);
                };
                let (namespace, name) = split_key(&key);
                let is_lb =
                    service.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer");
                let ip = match node_ports(&service) {
                    Some(ports) if is_lb => {
                        let ips: Vec<String> =
                            nodes.list().iter().filter_map(|n| node_ip(n)).collect();
                        Some(ctx.cloud.ensure_load_balancer(&service, &ips, &ports)?)
                    }
                    _ => None,
                };
                let Some(load_balancer) = desired_load_balancer(&service, ip.as_deref()) else {
                    return Ok(Requeue::Done);
                };
                if !is_lb {
                    ctx.cloud.delete_load_balancer(&service)?;
                }
                let patch = json!({"status": {"loadBalancer": load_balancer}});
                match ctx
                    .client
                    .merge_patch(resource, namespace, name, Some("status"), &patch)
                    .await
                {
                    Ok(_) => Ok(Requeue::Done),
                    Err(e) if e.code() == 404 => Ok(Requeue::Done),
                    Err(e) => Err(e.into()),
                }
            }
        },
    )
    .await;
    Ok(())
}

/// Nothing to do until PersistentVolumes exist in the API: waits for the stop signal. The
/// provider's `create_volume`/`delete_volume` are ready for it.
pub(crate) async fn run_volume_controller(
    _ctx: ControllerContext,
    mut stop: StopSignal,
) -> anyhow::Result<()> {
    stop.stopped().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_gone_only_when_known_local_and_dead() {
        let cases = [
            (None, true, false, true),
            (Some(7), false, false, true),
            (Some(7), true, true, true),
            (Some(7), true, false, false),
        ];
        for (pid, local, alive, want) in cases {
            assert_eq!(
                local_instance_exists(pid, local, |_| alive),
                want,
                "{pid:?} {local} {alive}"
            );
        }
    }

    #[test]
    fn routes_are_needed_only_as_root_for_other_addresses() {
        let cases = [
            ("10.0.0.2", true, false, true),
            ("10.0.0.2", false, false, false),
            ("10.0.0.2", true, true, false),
            ("127.0.0.2", true, false, false),
            ("bogus", true, false, false),
        ];
        for (ip, root, local, want) in cases {
            assert_eq!(route_needed(ip, root, local), want, "{ip} {root} {local}");
        }
    }

    #[test]
    fn load_balancer_status_follows_type_and_node_ports() {
        let svc = |kind: &str, node_port: Option<i64>, ingress: Option<&str>| {
            let mut s = json!({"spec": {"type": kind, "ports": [{"port": 80}]}, "status": {}});
            if let Some(p) = node_port {
                s["spec"]["ports"][0]["nodePort"] = json!(p);
            }
            if let Some(ip) = ingress {
                s["status"]["loadBalancer"] = json!({"ingress": [{"ip": ip}]});
            }
            s
        };
        let cases = [
            (
                "lb without node ports",
                svc("LoadBalancer", None, None),
                None,
                None,
            ),
            (
                "lb gets ip",
                svc("LoadBalancer", Some(30080), None),
                Some("10.0.0.1"),
                Some(json!({"ingress": [{"ip": "10.0.0.1"}]})),
            ),
            (
                "lb has ip",
                svc("LoadBalancer", Some(30080), Some("10.0.0.1")),
                Some("10.0.0.1"),
                None,
            ),
            (
                "type changed",
                svc("ClusterIP", None, Some("10.0.0.1")),
                None,
                Some(json!({})),
            ),
            ("never lb", svc("ClusterIP", None, None), None, None),
        ];
        for (name, service, ip, want) in cases {
            assert_eq!(desired_load_balancer(&service, ip), want, "{name}");
        }
    }

    #[test]
    fn local_volumes_are_directories() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = LocalCloud::new(dir.path().to_path_buf());
        let path = cloud.create_volume("data-1", 1024).unwrap();
        assert!(path.is_dir());
        cloud.delete_volume("data-1").unwrap();
        assert!(!path.exists());
        assert!(cloud.create_volume("../escape", 1).is_err());
    }
}
