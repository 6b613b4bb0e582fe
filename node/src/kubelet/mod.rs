//! The kubelet: registers the node and keeps its Lease, watches the pods bound to it, and
//! runs them through a container runtime with one worker per pod (`worker.rs`), whose
//! decisions are the pure `sync.rs`. The runtime's state is relisted by `pleg.rs`; after a
//! restart the kubelet adopts what the runtime holds and cleans up what no pod owns.

pub mod callbacks;
pub mod container;
pub mod etc_files;
pub mod events;
pub mod image_source;
pub mod log_gc;
pub mod logs;
pub mod node;
pub mod pleg;
pub mod probe;
pub mod serve_logs;
pub mod stats;
pub mod sync;
pub mod volumes;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use keelson_api::object;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::watch;

use crate::api::ApiClient;
use crate::runtime::Runtime;
pub use container::ResolvedImage;

/// Where images come from. `policy` is the container's `imagePullPolicy` (empty: the
/// Kubernetes default for the reference). An error is the message the pod status shows.
pub trait Images: Send + Sync {
    fn ensure<'a>(
        &'a self,
        reference: &'a str,
        policy: &'a str,
    ) -> BoxFuture<'a, Result<ResolvedImage, String>>;

    /// Whether `ensure` would pull from a registry now (the kubelet then records Pulling).
    fn will_pull(&self, _reference: &str, _policy: &str) -> bool {
        false
    }

    /// Bytes done and total of the pull of `reference` in progress, if one runs.
    fn pull_progress(&self, _reference: &str) -> Option<(u64, u64)> {
        None
    }
}

/// Pods a node runs at most (more bound pods wait).
const PODS_MAX: usize = 1024;
/// How often the runtime is relisted.
const RELIST_PERIOD: Duration = Duration::from_secs(1);
/// The longest a pod watch may stay silent.
const LIST_RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct KubeletConfig {
    pub node_name: String,
    /// The node's address, reported as InternalIP and used as host-network pods' IP.
    pub node_ip: String,
    /// Where pods' volumes and logs live.
    pub pods_dir: PathBuf,
    pub heartbeat: Duration,
    pub backoff: sync::Backoff,
    pub max_pods: u32,
    /// E.g. `runc://1.1.5`.
    pub runtime_version: String,
    /// What pods' resolv.conf says.
    pub dns: etc_files::DnsSettings,
    /// All containers' logs of this node together, at most (see [`log_gc`]).
    pub container_logs_max_total_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
}

/// A kubelet, built before it runs so that its log source can be handed to the transport.
pub struct Kubelet {
    api: ApiClient,
    runtime: Arc<dyn Runtime>,
    images: Arc<dyn Images>,
    config: KubeletConfig,
    pleg: pleg::Pleg,
}

impl Kubelet {
    pub fn new(
        api: ApiClient,
        runtime: Arc<dyn Runtime>,
        images: Arc<dyn Images>,
        config: KubeletConfig,
    ) -> Kubelet {
        // Every runtime call is timed into the kubelet's runtime series.
        let runtime: Arc<dyn Runtime> = Arc::new(crate::runtime::MeteredRuntime::new(runtime));
        crate::monitoring::register();
        let pleg = pleg::Pleg::new(runtime.clone());
        Kubelet {
            api,
            runtime,
            images,
            config,
            pleg,
        }
    }

    /// Where the API's `log` subresource finds containers' logs.
    pub fn log_source(&self) -> LogSource {
        LogSource {
            pleg: self.pleg.clone(),
        }
    }

    /// Where the metrics API's CPU and memory use of this node's pods comes from (its
    /// periodic sampling runs with [`stats::StatsSource::run`]).
    pub fn stats_source(&self) -> stats::StatsSource {
        stats::StatsSource::new(
            &self.config.node_name,
            self.pleg.clone(),
            self.runtime.clone(),
        )
    }

    /// Runs until `stop`; containers keep running after it returns (a new kubelet adopts
    /// them).
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), KubeletError> {
        let Kubelet {
            api,
            runtime,
            images,
            config,
            pleg,
        } = self;
        std::fs::create_dir_all(&config.pods_dir)
            .map_err(|e| KubeletError::Dir(config.pods_dir.display().to_string(), e))?;
        let machine = node::Machine::detect(
            &config.node_name,
            &config.node_ip,
            config.max_pods,
            &config.runtime_version,
        );
        let heartbeat = tokio::spawn(node::heartbeat_loop(
            api.clone(),
            machine,
            config.heartbeat,
            runtime.network_ready(),
            stop.clone(),
        ));
        pleg.relist().await;
        let relist = tokio::spawn(pleg.clone().run(RELIST_PERIOD, stop.clone()));
        let log_gc = tokio::spawn(log_gc::run(
            config.pods_dir.clone(),
            pleg.clone(),
            config.container_logs_max_total_bytes,
            stop.clone(),
        ));
        let shared = worker::Shared {
            events: events::Recorder::start(api.clone(), &config.node_name),
            api,
            runtime,
            images,
            pleg,
            node_name: config.node_name.clone(),
            node_ip: config.node_ip.clone(),
            pods_dir: config.pods_dir.clone(),
            backoff: config.backoff,
            dns: config.dns.clone(),
        };
        pod_loop(shared, stop).await;
        heartbeat.abort();
        relist.abort();
        log_gc.abort();
        Ok(())
    }
}

/// One pod worker, seen from the dispatcher.
struct WorkerHandle {
    pod: watch::Sender<Option<Value>>,
    task: tokio::task::JoinHandle<()>,
}

/// The dispatcher: keeps one worker per pod uid, from the API's pods and the runtime's.
struct Dispatcher {
    shared: worker::Shared,
    workers: HashMap<String, WorkerHandle>,
    stop: watch::Receiver<bool>,
}

impl Dispatcher {
    fn offer(&mut self, uid: &str, pod: Option<Value>, orphan: Option<(String, String)>) {
        self.workers.retain(|_, w| !w.task.is_finished());
        if let Some(worker) = self.workers.get(uid) {
            worker.pod.send_replace(pod);
            return;
        }
        if pod.is_none() && orphan.is_none() {
            return;
        }
        if self.workers.len() >= PODS_MAX {
            tracing::warn!(%uid, "this node runs {PODS_MAX} pods already; the pod waits");
            return;
        }
        let (tx, rx) = watch::channel(pod);
        let task = tokio::spawn(worker::run(
            self.shared.clone(),
            uid.to_string(),
            rx,
            orphan,
            self.stop.clone(),
        ));
        self.workers
            .insert(uid.to_string(), WorkerHandle { pod: tx, task });
    }

    /// After a (re)list: pods that are gone from the API get `None`; runtime state of pods
    /// the API does not know becomes an orphan worker.
    fn reconcile(&mut self, listed: &HashMap<String, Value>) {
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !listed.contains_key(*uid))
            .cloned()
            .collect();
        for uid in gone {
            self.offer(&uid, None, None);
        }
        for (uid, pod) in listed {
            self.offer(uid, Some(pod.clone()), None);
        }
        let snapshot = self.shared.pleg.current();
        for sandbox in &snapshot.sandboxes {
            if !listed.contains_key(&sandbox.pod_uid) {
                let identity = (sandbox.pod_namespace.clone(), sandbox.pod_name.clone());
                self.offer(&sandbox.pod_uid, None, Some(identity));
            }
        }
        for container in &snapshot.containers {
            let uid = &container.labels.pod_uid;
            if !listed.contains_key(uid) {
                let identity = (
                    container.labels.pod_namespace.clone(),
                    container.labels.pod_name.clone(),
                );
                self.offer(uid, None, Some(identity));
            }
        }
    }
}

fn selector(node: &str) -> String {
    let encoded: String = form_encode(&format!("spec.nodeName={node}"));
    format!("fieldSelector={encoded}")
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Lists and watches the pods bound to this node, feeding the dispatcher, until `stop`.
async fn pod_loop(shared: worker::Shared, mut stop: watch::Receiver<bool>) {
    let selector = selector(&shared.node_name);
    let mut dispatcher = Dispatcher {
        shared: shared.clone(),
        workers: HashMap::new(),
        stop: stop.clone(),
    };
    let mut backoff = Duration::from_millis(200);
    'relist: loop {
        let list_path = format!("/api/v1/pods?{selector}");
        let list = tokio::select! {
            _ = stop.changed() => break,
            list = shared.api.request(Method::GET, &list_path, "application/json", None) => list,
        };
        let list = match list {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list this node's pods; retrying");
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(LIST_RETRY_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        let mut rv = object::resource_version(&list).unwrap_or("0").to_string();
        let listed: HashMap<String, Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|pod| Some((object::uid(pod)?.to_string(), pod.clone())))
            .collect();
        dispatcher.reconcile(&listed);
        loop {
            let path = format!("/api/v1/pods?watch=1&{selector}&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={rv}");
            let events = tokio::select! {
                _ = stop.changed() => break 'relist,
                events = shared.api.watch(&path) => events,
            };
            let mut events = match events {
                Ok(events) => events,
                Err(e) => {
                    tracing::warn!(error = %e, "the pod watch failed; listing again");
                    continue 'relist;
                }
            };
            loop {
                let event = tokio::select! {
                    _ = stop.changed() => break 'relist,
                    event = events.next() => event,
                };
                let mut event = match event {
                    None => break,
                    Some(Err(e)) => {
                        tracing::info!(error = %e, "the pod watch ended; watching again");
                        break;
                    }
                    Some(Ok(event)) => event,
                };
                let kind = event["type"].as_str().unwrap_or_default().to_string();
                let pod = event["object"].take();
                if kind == "ERROR" {
                    tracing::info!(status = %pod, "the pod watch expired; listing again");
                    continue 'relist;
                }
                if let Some(next) = object::resource_version(&pod) {
                    rv = next.to_string();
                }
                let Some(uid) = object::uid(&pod).map(str::to_string) else {
                    continue;
                };
                match kind.as_str() {
                    "ADDED" | "MODIFIED" => dispatcher.offer(&uid, Some(pod), None),
                    "DELETED" => dispatcher.offer(&uid, None, None),
                    _ => {}
                }
            }
        }
    }
    // Workers are level-triggered: one stopped mid-action is picked up by the next kubelet.
    for (_, worker) in dispatcher.workers.drain() {
        worker.task.abort();
    }
}

/// Finds a container's log file for the API's `log` subresource.
#[derive(Clone)]
pub struct LogSource {
    pleg: pleg::Pleg,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
}

impl LogSource {
    /// The log file of a pod's container (its previous run with `previous`); with no
    /// container named, the pod's only one.
    pub fn path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        previous: bool,
    ) -> Result<PathBuf, LogError> {
        let snapshot = self.pleg.current();
        let runs: Vec<_> = snapshot
            .containers
            .iter()
            .filter(|c| c.labels.pod_namespace == namespace && c.labels.pod_name == pod)
            .collect();
        if runs.is_empty() {
            return Err(LogError::NotFound(format!(
                "pod {namespace}/{pod} has no containers on this node yet"
            )));
        }
        let name = match container {
            Some(name) => name.to_string(),
            None => {
                let mut names: Vec<&str> = runs
                    .iter()
                    .map(|c| c.labels.container_name.as_str())
                    .collect();
                names.sort_unstable();
                names.dedup();
                if names.len() > 1 {
                    return Err(LogError::BadRequest(format!(
                        "a container name must be specified for pod {pod}, choose one of: [{}]",
                        names.join(" ")
                    )));
                }
                names[0].to_string()
            }
        };
        let mut mine: Vec<_> = runs
            .into_iter()
            .filter(|c| c.labels.container_name == name)
            .collect();
        mine.sort_by_key(|c| c.labels.attempt);
        let run = if previous {
            if mine.len() < 2 {
                return Err(LogError::BadRequest(format!(
                    "previous terminated container \"{name}\" in pod \"{pod}\" not found"
                )));
            }
            mine[mine.len() - 2]
        } else {
            mine.last().copied().ok_or_else(|| {
                LogError::BadRequest(format!("container {name} is not valid for pod {pod}"))
            })?
        };
        Ok(run.log_path.clone())
    }

    /// Whether the container whose log is `path` still runs (following stops when not).
    pub fn running(&self, path: &std::path::Path) -> bool {
        self.pleg.current().containers.iter().any(|c| {
            c.log_path == path && matches!(c.state, crate::runtime::ContainerState::Running { .. })
        })
    }
}
