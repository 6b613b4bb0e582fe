//! One pod's worker: a task that syncs the pod whenever its spec, the runtime's state or a
//! probe changes (and every resync period), executing the actions [`sync::plan`] decides and
//! writing the status [`sync::pod_status`] computes when it differs from the API's.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::PodSpec;
use keelson_api::object;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::container::{self, Placement};
use super::etc_files::{self, DnsSettings};
use super::events::Recorder;
use super::pleg::{Pleg, Snapshot};
use super::probe::{self, ProbeKind, ProbeReport};
use super::sync::{self, Action, Backoff, Observed, PodFacts, PodView, Waiting, WorkerState};
use super::volumes::{self, PodRef};
use super::Images;
use crate::api::ApiClient;
use crate::runtime::{self, ContainerLabels, ContainerState, Runtime, SandboxConfig};

/// Probe reports queued per pod.
const PROBE_REPORTS_MAX: usize = 64;
/// A pod is synced at least this often (probes and back-offs need the clock).
const RESYNC: Duration = Duration::from_secs(1);
/// How long a configuration error (a missing ConfigMap...) waits before the next try.
const CONFIG_RETRY: Duration = Duration::from_secs(2);

/// What every worker shares.
#[derive(Clone)]
pub struct Shared {
    pub api: ApiClient,
    pub runtime: Arc<dyn Runtime>,
    pub images: Arc<dyn Images>,
    pub pleg: Pleg,
    pub events: Recorder,
    pub node_name: String,
    pub node_ip: String,
    pub pods_dir: PathBuf,
    pub backoff: Backoff,
    pub dns: DnsSettings,
}

/// The directory of a pod's volumes and logs.
pub fn pod_dir(pods_dir: &std::path::Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    pods_dir.join(format!("{namespace}_{name}_{uid}"))
}

/// The log file of one run of a container.
pub fn log_path(pod_dir: &std::path::Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir.join(container).join(format!("{attempt}.log"))
}

struct Pod {
    object: Value,
    spec: PodSpec,
    uid: String,
    namespace: String,
    name: String,
}

impl Pod {
    fn from(object: Value) -> Option<Pod> {
        let spec: PodSpec = match serde_json::from_value(object["spec"].clone()) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(error = %e, pod = ?object::name(&object), "skipping a pod whose spec does not decode");
                return None;
            }
        };
        Some(Pod {
            uid: object::uid(&object)?.to_string(),
            namespace: object::namespace(&object).unwrap_or("default").to_string(),
            name: object::name(&object)?.to_string(),
            spec,
            object,
        })
    }
}

/// A running prober.
struct Prober {
    stop: watch::Sender<bool>,
}

/// Runs one pod's worker until the pod is gone from both the API and the runtime.
/// `pod` carries the pod as the API has it (`None`: deleted from the API, or never there for
/// an orphan found in the runtime, whose identity `orphan` gives).
pub async fn run(
    shared: Shared,
    uid: String,
    mut pod_rx: watch::Receiver<Option<Value>>,
    orphan: Option<(String, String)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut state = WorkerState::default();
    let mut snapshot_rx = shared.pleg.subscribe();
    let (probe_tx, mut probe_rx) = mpsc::channel::<ProbeReport>(PROBE_REPORTS_MAX);
    let mut probers: HashMap<(String, ProbeKind), Prober> = HashMap::new();
    let mut last_pod: Option<Pod> = None;
    let mut last_written: Option<Value> = None;
    // The actions of the last sync: the same actions again mean they did not take (a runtime
    // error): they are retried at the resync period, not in a tight loop.
    let mut last_actions: Vec<Action> = Vec::new();
    // Changes of the ConfigMaps and Secrets the pod's volumes project wake the worker.
    let (source_tx, mut source_rx) = mpsc::channel::<()>(1);
    let mut source_watch: Option<AbortOnDrop> = None;
    // From this worker seeing the pod to all its containers running.
    let mut pod_start = crate::monitoring::PodStartTracker::new(Instant::now());
    // A sandbox waits for the pod network: its readiness wakes the worker once.
    let mut network_ready = shared
        .runtime
        .network_ready()
        .filter(|ready| !*ready.borrow());
    loop {
        let current = pod_rx.borrow_and_update().clone();
        if let Some(object) = current {
            if let Some(pod) = Pod::from(object) {
                if source_watch.is_none() {
                    let sources = volumes::projected_sources(&pod.spec);
                    if !sources.is_empty() {
                        source_watch = Some(AbortOnDrop(tokio::spawn(watch_sources(
                            shared.api.clone(),
                            pod.namespace.clone(),
                            sources,
                            source_tx.clone(),
                        ))));
                    }
                }
                last_pod = Some(pod);
            }
        }
        let in_api = pod_rx.borrow().is_some();
        let snapshot = snapshot_rx.borrow_and_update().clone();
        let observed = snapshot.pod(&uid);
        if let (Some(pod), true) = (&last_pod, in_api) {
            pod_start.record(observed.all_running(&pod.spec));
        }
        let actions = match &last_pod {
            Some(pod) => {
                let outcome = sync_once(
                    &shared,
                    pod,
                    in_api,
                    &observed,
                    &mut state,
                    &probe_tx,
                    &mut probers,
                    &mut last_written,
                )
                .await;
                outcome.actions
            }
            None => {
                let (namespace, name) = orphan.clone().unwrap_or_default();
                clean_orphan(&shared, &uid, &namespace, &name, &observed, &mut state).await
            }
        };
        let acted = !actions.is_empty();
        let repeated = acted && actions == last_actions;
        last_actions = actions;
        if acted {
            // Something changed in the runtime: look again before deciding anything else.
            shared.pleg.relist().await;
            if !repeated {
                continue;
            }
        }
        if !in_api && observed.sandbox.is_none() && observed.containers.is_empty() {
            tracing::debug!(%uid, "pod worker done");
            return;
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = pod_rx.changed() => {
                if changed.is_err() {
                    // The dispatcher is gone: the kubelet is stopping.
                    return;
                }
            }
            _ = snapshot_rx.changed() => {}
            Some(report) = probe_rx.recv() => record_probe(&shared, last_pod.as_ref(), &mut state, report),
            Some(()) = source_rx.recv() => refresh_volumes(&shared, last_pod.as_ref()).await,
            () = crate::runtime::became_ready(&mut network_ready) => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

/// Aborts a task when dropped (a worker's helpers end with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The longest wait before a broken source watch is opened again.
const SOURCE_RETRY_MAX: Duration = Duration::from_secs(30);

/// Watches each of `sources` (plural, name) in `namespace`; every event wakes the worker
/// (a reopened watch starts with the object as it is, so nothing missed stays missed).
async fn watch_sources(
    api: crate::api::ApiClient,
    namespace: String,
    sources: Vec<(&'static str, String)>,
    wake: mpsc::Sender<()>,
) {
    let watches = sources.into_iter().map(|(plural, name)| {
        let api = api.clone();
        let wake = wake.clone();
        let path = format!(
            "/api/v1/namespaces/{namespace}/{plural}?watch=1&fieldSelector=metadata.name%3D{name}"
        );
        async move {
            let mut delay = Duration::from_millis(500);
            loop {
                match api.watch(&path).await {
                    Ok(mut events) => {
                        while let Some(Ok(_)) = events.next().await {
                            let _ = wake.try_send(());
                            delay = Duration::from_millis(500);
                        }
                    }
                    Err(e) => tracing::debug!(%path, error = %e, "cannot watch a volume source"),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SOURCE_RETRY_MAX);
            }
        }
    });
    futures::future::join_all(watches).await;
}

/// Rewrites the pod's configMap and secret volumes from their sources.
async fn refresh_volumes(shared: &Shared, pod: Option<&Pod>) {
    let Some(pod) = pod else {
        return;
    };
    let dir = pod_dir(&shared.pods_dir, &pod.namespace, &pod.name, &pod.uid);
    if !dir.join("volumes").exists() {
        return; // Nothing projected yet: the first container start writes them.
    }
    match volumes::refresh(&shared.api, &pod.namespace, &dir, &pod.spec).await {
        Ok(changed) if !changed.is_empty() => {
            tracing::info!(pod = %pod.name, volumes = ?changed, "volumes updated from their sources")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(pod = %pod.name, error = %e, "cannot refresh the pod's volumes"),
    }
}

fn record_probe(shared: &Shared, pod: Option<&Pod>, state: &mut WorkerState, report: ProbeReport) {
    match (report.kind, report.ok) {
        (ProbeKind::Readiness, ok) => {
            state.ready.insert(report.container_id.clone(), ok);
        }
        (ProbeKind::Startup, true) => {
            state.started.insert(report.container_id.clone(), true);
        }
        (ProbeKind::Liveness | ProbeKind::Startup, false) => {
            state
                .unhealthy
                .insert(report.container_id.clone(), report.message.clone());
        }
        (ProbeKind::Liveness, true) => {}
    }
    if !report.ok {
        if let Some(pod) = pod {
            shared.events.pod(
                &pod.object,
                None,
                "Warning",
                "Unhealthy",
                &format!("{} probe failed: {}", report.kind.name(), report.message),
            );
        }
    }
}

/// Stops what the runtime holds of a pod the API never gave this kubelet.
async fn clean_orphan(
    shared: &Shared,
    uid: &str,
    namespace: &str,
    name: &str,
    observed: &Observed,
    state: &mut WorkerState,
) -> Vec<Action> {
    let spec = PodSpec::default();
    let view = PodView {
        spec: &spec,
        terminating: true,
        in_api: false,
        deletion_grace: Some(Duration::from_secs(2)),
    };
    let actions = sync::plan(&view, observed, state, shared.backoff, SystemTime::now());
    for action in actions.clone() {
        tracing::info!(%uid, %namespace, %name, ?action, "cleaning up an orphaned pod");
        execute_cleanup(
            shared,
            uid,
            action,
            state,
            &pod_dir(&shared.pods_dir, namespace, name, uid),
        )
        .await;
    }
    actions
}

async fn execute_cleanup(
    shared: &Shared,
    uid: &str,
    action: Action,
    state: &mut WorkerState,
    dir: &std::path::Path,
) {
    match action {
        Action::Kill { id, signal, grace } => {
            if let Err(e) = shared.runtime.kill(&id, signal).await {
                tracing::warn!(%id, error = %e, "cannot signal a container");
            }
            if signal == sync::SIGTERM {
                state.killing.insert(id, SystemTime::now() + grace);
            }
        }
        Action::Remove { id } => {
            if let Err(e) = shared.runtime.remove_container(&id).await {
                tracing::warn!(%id, error = %e, "cannot remove a container");
            }
        }
        Action::RemoveSandbox => {
            if let Err(e) = shared
                .runtime
                .remove_sandbox(&runtime::sandbox_id(uid))
                .await
            {
                tracing::warn!(%uid, error = %e, "cannot remove a sandbox");
            }
            let _ = std::fs::remove_dir_all(dir);
        }
        // An orphan is never started and has no API object to delete.
        Action::CreateSandbox | Action::Start { .. } | Action::FinalDelete => {}
    }
}

struct Outcome {
    /// What was done (empty: nothing to do).
    actions: Vec<Action>,
}

#[allow(clippy::too_many_arguments)]
async fn sync_once(
    shared: &Shared,
    pod: &Pod,
    in_api: bool,
    observed: &Observed,
    state: &mut WorkerState,
    probe_tx: &mpsc::Sender<ProbeReport>,
    probers: &mut HashMap<(String, ProbeKind), Prober>,
    last_written: &mut Option<Value>,
) -> Outcome {
    let now = SystemTime::now();
    let terminating = !in_api || object::deletion_timestamp(&pod.object).is_some();
    let view = PodView {
        spec: &pod.spec,
        terminating,
        in_api,
        deletion_grace: object::deletion_grace_period_seconds(&pod.object)
            .map(|s| Duration::from_secs(s.max(0) as u64))
            .or((!in_api).then_some(Duration::from_secs(2))),
    };
    let host_network = pod.spec.host_network == Some(true);
    let pod_ip = match &observed.sandbox {
        Some(sandbox) => match (&sandbox.ip, &sandbox.netns) {
            (Some(ip), _) => ip.clone(),
            (None, None) => shared.node_ip.clone(),
            (None, Some(_)) => String::new(),
        },
        None if host_network => shared.node_ip.clone(),
        None => String::new(),
    };
    let dir = pod_dir(&shared.pods_dir, &pod.namespace, &pod.name, &pod.uid);

    manage_probers(shared, pod, observed, state, probe_tx, probers, terminating);

    let actions = sync::plan(&view, observed, state, shared.backoff, now);
    let acted = !actions.is_empty();
    for action in actions.clone() {
        tracing::debug!(pod = %pod.name, ?action, "pod action");
        let began = Instant::now();
        match action {
            Action::CreateSandbox => {
                let config = SandboxConfig {
                    id: runtime::sandbox_id(&pod.uid),
                    pod_uid: pod.uid.clone(),
                    pod_namespace: pod.namespace.clone(),
                    pod_name: pod.name.clone(),
                    host_network,
                };
                if let Err(e) = std::fs::create_dir_all(&dir) {
                    tracing::warn!(error = %e, "cannot create the pod directory");
                }
                if let Err(e) = shared.runtime.create_sandbox(&config).await {
                    tracing::warn!(pod = %pod.name, error = %e, "cannot create the pod sandbox");
                    shared.events.pod(
                        &pod.object,
                        None,
                        "Warning",
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                    );
                }
            }
            Action::Start {
                name,
                init,
                attempt,
            } => {
                start(
                    shared, pod, observed, state, &dir, &pod_ip, &name, init, attempt,
                )
                .await;
            }
            Action::Kill { id, signal, grace } => {
                if signal == sync::SIGTERM {
                    if let Some(run) = observed.containers.iter().find(|c| c.id == id) {
                        let why = state.unhealthy.get(&id).map_or_else(
                            || "Stopping container".to_string(),
                            |m| {
                                format!(
                                    "Container {} failed a probe ({m}), will be restarted",
                                    run.labels.container_name
                                )
                            },
                        );
                        shared.events.pod(
                            &pod.object,
                            Some(&run.labels.container_name),
                            "Normal",
                            "Killing",
                            &why,
                        );
                    }
                }
                if let Err(e) = shared.runtime.kill(&id, signal).await {
                    tracing::warn!(%id, error = %e, "cannot signal a container");
                }
                if signal == sync::SIGTERM {
                    state.killing.insert(id, now + grace);
                }
            }
            Action::Remove { id } => {
                if let Err(e) = shared.runtime.remove_container(&id).await {
                    tracing::warn!(%id, error = %e, "cannot remove a container");
                }
                if let Some(run) = observed.containers.iter().find(|c| c.id == id) {
                    let _ = std::fs::remove_file(&run.log_path);
                }
                state.killing.remove(&id);
                state.unhealthy.remove(&id);
            }
            Action::RemoveSandbox => {
                if let Err(e) = shared
                    .runtime
                    .remove_sandbox(&runtime::sandbox_id(&pod.uid))
                    .await
                {
                    tracing::warn!(pod = %pod.name, error = %e, "cannot remove the pod sandbox");
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
            Action::FinalDelete => {
                let options = json!({
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": pod.uid},
                });
                let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
                match shared
                    .api
                    .request(Method::DELETE, &path, "application/json", Some(&options))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => tracing::warn!(pod = %pod.name, error = %e, "cannot delete the pod"),
                }
                return Outcome {
                    actions: Vec::new(),
                };
            }
        }
        tracing::debug!(pod = %pod.name, took = ?began.elapsed(), "pod action done");
    }
    if !acted && in_api && !terminating {
        write_status(shared, pod, observed, state, &pod_ip, last_written).await;
    }
    Outcome { actions }
}

/// Starts and stops probers to match the running containers.
fn manage_probers(
    shared: &Shared,
    pod: &Pod,
    observed: &Observed,
    state: &WorkerState,
    probe_tx: &mpsc::Sender<ProbeReport>,
    probers: &mut HashMap<(String, ProbeKind), Prober>,
    terminating: bool,
) {
    let mut wanted: Vec<(String, ProbeKind, k8s_openapi::api::core::v1::Probe)> = Vec::new();
    if !terminating {
        for c in &pod.spec.containers {
            let (Some(run), _) = observed.runs(&c.name) else {
                continue;
            };
            if !matches!(run.state, ContainerState::Running { .. })
                || state.unhealthy.contains_key(&run.id)
            {
                continue;
            }
            let started =
                c.startup_probe.is_none() || state.started.get(&run.id).copied().unwrap_or(false);
            if let (Some(p), false) = (&c.startup_probe, started) {
                wanted.push((run.id.clone(), ProbeKind::Startup, p.clone()));
            }
            if started {
                if let Some(p) = &c.liveness_probe {
                    wanted.push((run.id.clone(), ProbeKind::Liveness, p.clone()));
                }
                if let Some(p) = &c.readiness_probe {
                    wanted.push((run.id.clone(), ProbeKind::Readiness, p.clone()));
                }
            }
        }
    }
    probers.retain(|key, prober| {
        let keep = wanted
            .iter()
            .any(|(id, kind, _)| (id, kind) == (&key.0, &key.1));
        if !keep {
            let _ = prober.stop.send(true);
        }
        keep
    });
    let netns = observed.sandbox.as_ref().and_then(|s| s.netns.clone());
    for (id, kind, spec) in wanted {
        if probers.contains_key(&(id.clone(), kind)) {
            continue;
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let target = probe::Target {
            runtime: shared.runtime.clone(),
            container_id: id.clone(),
            netns: netns.clone(),
        };
        tokio::spawn(probe::run(kind, spec, target, probe_tx.clone(), stop_rx));
        probers.insert((id, kind), Prober { stop: stop_tx });
    }
}

#[allow(clippy::too_many_arguments)]
async fn start(
    shared: &Shared,
    pod: &Pod,
    observed: &Observed,
    state: &mut WorkerState,
    dir: &std::path::Path,
    pod_ip: &str,
    name: &str,
    init: bool,
    attempt: u32,
) {
    let Some(spec) = pod
        .spec
        .init_containers
        .iter()
        .flatten()
        .chain(pod.spec.containers.iter())
        .find(|c| c.name == name)
    else {
        return;
    };
    let _ = init;
    let now = SystemTime::now();
    let fail = |state: &mut WorkerState, reason: &str, message: String, retry: Duration| {
        let failures = state.waiting.get(name).map_or(0, |w| w.failures) + 1;
        state.waiting.insert(
            name.to_string(),
            Waiting {
                reason: reason.to_string(),
                message,
                retry_at: now + retry,
                failures,
            },
        );
    };
    let reference = spec.image.clone().unwrap_or_default();
    let policy = spec.image_pull_policy.clone().unwrap_or_default();
    let image = match pull_image(shared, &pod.object, name, &reference, &policy).await {
        Ok(image) => image,
        Err(e) => {
            let failures = state.waiting.get(name).map_or(0, |w| w.failures);
            let reason = if failures == 0 {
                "ErrImagePull"
            } else {
                "ImagePullBackOff"
            };
            shared.events.pod(
                &pod.object,
                Some(name),
                "Warning",
                "Failed",
                &format!("Failed to pull image {reference:?}: {e}"),
            );
            fail(
                state,
                reason,
                e.clone(),
                shared
                    .backoff
                    .delay(failures + 1)
                    .max(Duration::from_secs(1)),
            );
            return;
        }
    };
    state.image_ids.insert(name.to_string(), image.id.clone());
    let labels: BTreeMap<String, String> = object::labels(&pod.object);
    let annotations: BTreeMap<String, String> = object::annotations(&pod.object);
    let pod_ref = PodRef {
        namespace: &pod.namespace,
        name: &pod.name,
        uid: &pod.uid,
        node_name: &shared.node_name,
        host_ip: &shared.node_ip,
        pod_ip,
        labels: &labels,
        annotations: &annotations,
        spec: &pod.spec,
        dir,
    };
    let prepared = async {
        let mounts = volumes::mounts(&shared.api, &pod_ref, spec).await?;
        let env = volumes::env(&shared.api, &pod_ref, spec).await?;
        Ok::<_, volumes::VolumeError>((mounts, env))
    }
    .await;
    let (mounts, env) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            shared.events.pod(
                &pod.object,
                Some(name),
                "Warning",
                "Failed",
                &format!("Error: {e}"),
            );
            fail(
                state,
                "CreateContainerConfigError",
                e.to_string(),
                CONFIG_RETRY,
            );
            return;
        }
    };
    let id = runtime::container_id(&pod.uid, name, attempt);
    let log = log_path(dir, name, attempt);
    if let Some(parent) = log.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let hostname = if pod.spec.host_network == Some(true) {
        shared.node_name.clone()
    } else {
        pod.spec
            .hostname
            .clone()
            .unwrap_or_else(|| pod.name.clone())
    };
    let mut mounts = mounts;
    match etc_files::write(
        dir,
        &pod.spec,
        &pod.namespace,
        pod_ip,
        &hostname,
        &shared.dns,
    ) {
        Ok(files) => {
            let own: Vec<String> = mounts.iter().map(|m| m.container_path.clone()).collect();
            mounts.extend(
                files
                    .into_iter()
                    .filter(|f| !own.contains(&f.container_path)),
            );
        }
        Err(e) => {
            tracing::warn!(pod = %pod.name, error = %e, "cannot write the pod's resolv.conf and hosts")
        }
    }
    let placement = Placement {
        id: id.clone(),
        labels: ContainerLabels {
            pod_uid: pod.uid.clone(),
            pod_namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
            container_name: name.to_string(),
            attempt,
        },
        hostname,
        log_path: log,
        mounts,
        env,
    };
    let config =
        match container::config(spec, pod.spec.security_context.as_ref(), &image, placement) {
            Ok(config) => config,
            Err(e) => {
                shared.events.pod(
                    &pod.object,
                    Some(name),
                    "Warning",
                    "Failed",
                    &format!("Error: {e}"),
                );
                fail(
                    state,
                    "CreateContainerConfigError",
                    e.to_string(),
                    CONFIG_RETRY,
                );
                return;
            }
        };
    let Some(sandbox) = observed.sandbox.clone() else {
        return;
    };
    match shared.runtime.start_container(&sandbox, &config).await {
        Ok(_) => {
            if attempt > 0 {
                crate::monitoring::record_container_restart();
            }
            state.waiting.remove(name);
            shared.events.pod(
                &pod.object,
                Some(name),
                "Normal",
                "Created",
                &format!("Created container {name}"),
            );
            shared.events.pod(
                &pod.object,
                Some(name),
                "Normal",
                "Started",
                &format!("Started container {name}"),
            );
        }
        Err(e) => {
            let failures = state.waiting.get(name).map_or(0, |w| w.failures);
            shared.events.pod(
                &pod.object,
                Some(name),
                "Warning",
                "Failed",
                &format!("Error: {e}"),
            );
            fail(
                state,
                "RunContainerError",
                e.to_string(),
                shared
                    .backoff
                    .delay(failures + 1)
                    .max(Duration::from_secs(1)),
            );
        }
    }
}

async fn write_status(
    shared: &Shared,
    pod: &Pod,
    observed: &Observed,
    state: &WorkerState,
    pod_ip: &str,
    last_written: &mut Option<Value>,
) {
    let view = PodView {
        spec: &pod.spec,
        terminating: false,
        in_api: true,
        deletion_grace: None,
    };
    let current = pod.object["status"].clone();
    let facts = PodFacts {
        name: &pod.name,
        host_ip: &shared.node_ip,
        pod_ip,
        host_network_fallback: pod.spec.host_network != Some(true)
            && observed.sandbox.as_ref().is_some_and(|s| s.netns.is_none()),
        current: &current,
    };
    let status = sync::pod_status(
        &view,
        &facts,
        observed,
        state,
        shared.backoff,
        SystemTime::now(),
    );
    if sync::same_status(&status, &current)
        || last_written
            .as_ref()
            .is_some_and(|w| sync::same_status(&status, w))
    {
        return;
    }
    let path = format!(
        "/api/v1/namespaces/{}/pods/{}/status",
        pod.namespace, pod.name
    );
    let patch = json!({ "status": status });
    let began = Instant::now();
    let written = shared
        .api
        .write(
            Method::PATCH,
            &path,
            "application/merge-patch+json",
            Some(&patch),
        )
        .await;
    tracing::debug!(pod = %pod.name, took = ?began.elapsed(), phase = ?status.get("phase"), "pod status written");
    match written {
        Ok(()) => *last_written = Some(status),
        Err(e) if e.is_not_found() => {}
        Err(e) => tracing::warn!(pod = %pod.name, error = %e, "cannot write the pod status"),
    }
}

/// The runtime's state of one pod, from a snapshot.
impl Snapshot {
    pub fn pod(&self, uid: &str) -> Observed {
        Observed {
            sandbox: self.sandboxes.iter().find(|s| s.pod_uid == uid).cloned(),
            containers: self
                .containers
                .iter()
                .filter(|c| c.labels.pod_uid == uid)
                .cloned()
                .collect(),
        }
    }
}

/// How often a pull's progress is reported at most (one Event, its message replaced).
const PULL_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Makes the container's image available, recording Events as the kubelet does: `Pulling`
/// (its message updated with the bytes done while the pull lasts) and `Pulled` with the time
/// and size, or `Pulled` "already present" when nothing is pulled.
async fn pull_image(
    shared: &Shared,
    pod: &Value,
    container: &str,
    reference: &str,
    policy: &str,
) -> Result<super::ResolvedImage, String> {
    if !shared.images.will_pull(reference, policy) {
        let image = shared.images.ensure(reference, policy).await?;
        shared.events.pod(
            pod,
            Some(container),
            "Normal",
            "Pulled",
            &format!("Container image {reference:?} already present on machine"),
        );
        return Ok(image);
    }
    let pulling = format!("Pulling image {reference:?}");
    shared
        .events
        .progress(pod, Some(container), "Pulling", &pulling);
    let started = Instant::now();
    let ensure = shared.images.ensure(reference, policy);
    tokio::pin!(ensure);
    let mut ticker = tokio::time::interval(PULL_PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker.tick().await;
    let mut last: Option<(u64, u64)> = None;
    let image = loop {
        tokio::select! {
            result = &mut ensure => break result?,
            _ = ticker.tick() => {
                let progress = shared.images.pull_progress(reference);
                if let Some((done, total)) = progress.filter(|p| Some(*p) != last) {
                    shared.events.progress(
                        pod,
                        Some(container),
                        "Pulling",
                        &pull_progress_message(&pulling, done, total),
                    );
                    last = progress;
                }
            }
        }
    };
    shared.events.pod(
        pod,
        Some(container),
        "Normal",
        "Pulled",
        &pulled_message(reference, started.elapsed(), image.size_bytes),
    );
    Ok(image)
}

/// `Pulling image "x": 12.3 MiB of 40.0 MiB`.
pub fn pull_progress_message(pulling: &str, done: u64, total: u64) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!("{pulling}: {:.1} MiB of {:.1} MiB", mib(done), mib(total))
}

/// The kubelet's Pulled message.
pub fn pulled_message(reference: &str, took: Duration, size_bytes: u64) -> String {
    format!(
        "Successfully pulled image {reference:?} in {:.3}s. Image size: {size_bytes} bytes.",
        took.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_messages() {
        assert_eq!(
            pulled_message("reg:5000/a/b:1", Duration::from_millis(1234), 42),
            "Successfully pulled image \"reg:5000/a/b:1\" in 1.234s. Image size: 42 bytes."
        );
        assert_eq!(
            pull_progress_message("Pulling image \"x\"", 12_900_000, 41_943_040),
            "Pulling image \"x\": 12.3 MiB of 40.0 MiB"
        );
    }
}
