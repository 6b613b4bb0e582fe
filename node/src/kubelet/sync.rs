//! The pod worker's core, without I/O: from a pod's spec, what the runtime reports for it and
//! what the worker remembers (probe results, image pull failures, kills in progress), the next
//! actions ([`plan`]) and the pod's status ([`pod_status`]). Level-triggered: neither asks what
//! changed, so a restarted kubelet picks up where the last one stopped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::{json, Value};

use crate::runtime::{ContainerInfo, ContainerState, SandboxInfo};

pub const SIGTERM: i32 = 15;
pub const SIGKILL: i32 = 9;
/// Kubernetes' default `terminationGracePeriodSeconds`.
const DEFAULT_GRACE_SECS: i64 = 30;

/// The restart back-off: `initial` after the second exit, doubling up to `max`, as the
/// kubelet's CrashLoopBackOff does (the first restart is immediate).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The delay before starting run `attempt + 1` after run `attempt` ended.
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (attempt - 1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Why a container is waiting, as the worker last saw (image pulls, create errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
    /// No new try before this time.
    pub retry_at: SystemTime,
    /// Consecutive failures, for the back-off.
    pub failures: u32,
}

/// What the worker remembers about a pod between syncs.
#[derive(Clone, Debug, Default)]
pub struct WorkerState {
    /// By container name.
    pub waiting: HashMap<String, Waiting>,
    /// Readiness probe results by container id (absent: not probed yet).
    pub ready: HashMap<String, bool>,
    /// Containers (by id) whose startup probe has succeeded.
    pub started: HashMap<String, bool>,
    /// Containers (by id) to kill because a liveness or startup probe failed, with why.
    pub unhealthy: HashMap<String, String>,
    /// Containers (by id) sent SIGTERM, with when SIGKILL follows.
    pub killing: HashMap<String, SystemTime>,
    /// The image id (digest) each container name runs.
    pub image_ids: HashMap<String, String>,
}

/// What the worker does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    /// Start run `attempt` of a container (pulling its image first).
    Start {
        name: String,
        init: bool,
        attempt: u32,
    },
    /// Send a signal; for SIGTERM the worker notes when SIGKILL follows (`grace`).
    Kill {
        id: String,
        signal: i32,
        grace: Duration,
    },
    Remove {
        id: String,
    },
    RemoveSandbox,
    /// Everything of the pod is gone: make the kubelet's final delete of the pod object.
    FinalDelete,
}

/// The pod as the worker sees it.
pub struct PodView<'a> {
    pub spec: &'a PodSpec,
    /// The API says the pod is being deleted, or it is gone from the API.
    pub terminating: bool,
    /// Still in the API (the final delete is needed).
    pub in_api: bool,
    /// The grace period of the deletion (`metadata.deletionGracePeriodSeconds`).
    pub deletion_grace: Option<Duration>,
}

/// The runtime's view of one pod.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub sandbox: Option<SandboxInfo>,
    pub containers: Vec<ContainerInfo>,
}

impl Observed {
    /// The latest run of a container, and the one before it.
    pub fn runs(&self, name: &str) -> (Option<&ContainerInfo>, Option<&ContainerInfo>) {
        let mut runs: Vec<&ContainerInfo> = self
            .containers
            .iter()
            .filter(|c| c.labels.container_name == name)
            .collect();
        runs.sort_by_key(|c| c.labels.attempt);
        let latest = runs.pop();
        (latest, runs.pop())
    }

    /// Whether the latest run of every one of the spec's (non-init) containers is running:
    /// the pod has started.
    pub fn all_running(&self, spec: &PodSpec) -> bool {
        !spec.containers.is_empty()
            && spec.containers.iter().all(|c| {
                matches!(
                    self.runs(&c.name).0.map(|run| &run.state),
                    Some(ContainerState::Running { .. })
                )
            })
    }

    fn running(&self) -> impl Iterator<Item = &ContainerInfo> {
        self.containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
    }
}

fn restart_policy(spec: &PodSpec) -> &str {
    spec.restart_policy.as_deref().unwrap_or("Always")
}

/// Whether a container that ended with `code` runs again.
fn restarts(policy: &str, init: bool, code: Option<i32>) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != Some(0),
        // Init containers that succeeded are done even under Always.
        _ => !(init && code == Some(0)),
    }
}

fn exit_code(state: &ContainerState) -> Option<i32> {
    match state {
        ContainerState::Exited {
            exit_code, signal, ..
        } => exit_code.or(signal.map(|s| 128 + s)),
        _ => None,
    }
}

fn grace(pod: &PodView<'_>) -> Duration {
    pod.deletion_grace.unwrap_or_else(|| {
        Duration::from_secs(
            pod.spec
                .termination_grace_period_seconds
                .unwrap_or(DEFAULT_GRACE_SECS)
                .max(0) as u64,
        )
    })
}

fn kill(id: &str, state: &WorkerState, grace: Duration, now: SystemTime) -> Option<Action> {
    match state.killing.get(id) {
        None => Some(Action::Kill {
            id: id.to_string(),
            signal: SIGTERM,
            grace,
        }),
        Some(deadline) if now >= *deadline => Some(Action::Kill {
            id: id.to_string(),
            signal: SIGKILL,
            grace: Duration::ZERO,
        }),
        Some(_) => None,
    }
}

/// Where a container's run stands, as `plan` and `pod_status` both need it.
enum Step {
    /// Start this attempt now.
    Start(u32),
    /// Waiting for the back-off (or for an image pull retry) to pass.
    BackOff,
    Running,
    /// Ended for good (no restart).
    Done(Option<i32>),
}

fn step(
    pod: &PodView<'_>,
    name: &str,
    init: bool,
    observed: &Observed,
    state: &WorkerState,
    backoff: Backoff,
    now: SystemTime,
) -> Step {
    if state.waiting.get(name).is_some_and(|w| now < w.retry_at) {
        return Step::BackOff;
    }
    match observed.runs(name).0 {
        None => Step::Start(0),
        Some(run) => match &run.state {
            ContainerState::Created | ContainerState::Running { .. } => Step::Running,
            ContainerState::Exited { finished_at, .. } => {
                let code = exit_code(&run.state);
                if !restarts(restart_policy(pod.spec), init, code) {
                    return Step::Done(code);
                }
                let attempt = run.labels.attempt;
                if now >= *finished_at + backoff.delay(attempt) {
                    Step::Start(attempt + 1)
                } else {
                    Step::BackOff
                }
            }
        },
    }
}

/// The next actions for a pod.
pub fn plan(
    pod: &PodView<'_>,
    observed: &Observed,
    state: &WorkerState,
    backoff: Backoff,
    now: SystemTime,
) -> Vec<Action> {
    let mut actions = Vec::new();
    if pod.terminating {
        let grace = grace(pod);
        let mut any_running = false;
        for run in observed.running() {
            any_running = true;
            actions.extend(kill(&run.id, state, grace, now));
        }
        if any_running {
            return actions;
        }
        for run in &observed.containers {
            actions.push(Action::Remove { id: run.id.clone() });
        }
        if !actions.is_empty() {
            return actions;
        }
        if observed.sandbox.is_some() {
            return vec![Action::RemoveSandbox];
        }
        if pod.in_api {
            return vec![Action::FinalDelete];
        }
        return Vec::new();
    }

    // Probes that failed: kill, and the restart policy decides what comes next.
    let grace = grace(pod);
    for run in observed.running() {
        if state.unhealthy.contains_key(&run.id) {
            actions.extend(kill(&run.id, state, grace, now));
        }
    }
    // Runs older than the one before the latest are of no more use.
    for run in &observed.containers {
        let (latest, previous) = observed.runs(&run.labels.container_name);
        let keep = [latest, previous]
            .iter()
            .flatten()
            .any(|kept| kept.id == run.id);
        let in_spec = containers(pod.spec).any(|(c, _)| c.name == run.labels.container_name);
        if !keep || !in_spec {
            match run.state {
                ContainerState::Exited { .. } => {
                    actions.push(Action::Remove { id: run.id.clone() })
                }
                _ if !in_spec => actions.extend(kill(&run.id, state, grace, now)),
                _ => {}
            }
        }
    }
    if observed.sandbox.is_none() {
        actions.push(Action::CreateSandbox);
        return actions;
    }
    if phase(pod, observed, state, backoff, now).is_terminal() {
        return actions;
    }
    for (container, init) in containers(pod.spec) {
        let step = step(pod, &container.name, init, observed, state, backoff, now);
        match step {
            Step::Start(attempt) => {
                actions.push(Action::Start {
                    name: container.name.clone(),
                    init,
                    attempt,
                });
                if init {
                    break;
                }
            }
            // The next init container waits for this one to succeed.
            Step::Done(Some(0)) => {}
            _ if init => break,
            _ => {}
        }
    }
    actions
}

/// Init containers first (in order), then the app containers.
fn containers(spec: &PodSpec) -> impl Iterator<Item = (&Container, bool)> {
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| (c, true))
        .chain(spec.containers.iter().map(|c| (c, false)))
}

/// Every init container has succeeded.
fn initialized(pod: &PodView<'_>, observed: &Observed) -> bool {
    pod.spec.init_containers.iter().flatten().all(|c| {
        observed
            .runs(&c.name)
            .0
            .is_some_and(|run| exit_code(&run.state) == Some(0))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The pod's phase, as the kubelet's `getPhase` computes it.
pub fn phase(
    pod: &PodView<'_>,
    observed: &Observed,
    state: &WorkerState,
    backoff: Backoff,
    now: SystemTime,
) -> Phase {
    let policy = restart_policy(pod.spec);
    for c in pod.spec.init_containers.iter().flatten() {
        match step(pod, &c.name, true, observed, state, backoff, now) {
            Step::Done(Some(0)) => {}
            Step::Done(_) => return Phase::Failed,
            _ => return Phase::Pending,
        }
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &pod.spec.containers {
        let (latest, _) = observed.runs(&c.name);
        match latest.map(|run| &run.state) {
            None | Some(ContainerState::Created) => waiting += 1,
            Some(ContainerState::Running { .. }) => running += 1,
            Some(state @ ContainerState::Exited { .. }) => {
                stopped += 1;
                if exit_code(state) == Some(0) {
                    succeeded += 1;
                }
            }
        }
    }
    if waiting > 0 {
        Phase::Pending
    } else if running > 0 {
        Phase::Running
    } else if stopped == 0 {
        Phase::Pending
    } else if policy == "Always" {
        Phase::Running
    } else if stopped == succeeded {
        Phase::Succeeded
    } else if policy == "Never" {
        Phase::Failed
    } else {
        Phase::Running
    }
}

pub fn format_time(time: SystemTime) -> String {
    let timestamp = jiff::Timestamp::try_from(time).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    keelson_api::object::format_time(timestamp)
}

fn terminated(run: &ContainerInfo) -> Value {
    let ContainerState::Exited {
        exit_code: code,
        signal,
        started_at,
        finished_at,
        oom_killed,
    } = &run.state
    else {
        return Value::Null;
    };
    let exit = code.or(signal.map(|s| 128 + s)).unwrap_or(137);
    let reason = if *oom_killed {
        "OOMKilled"
    } else if code.is_none() && signal.is_none() {
        "ContainerStatusUnknown"
    } else if exit == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut out = json!({
        "exitCode": exit,
        "reason": reason,
        "finishedAt": format_time(*finished_at),
        "containerID": format!("runc://{}", run.id),
    });
    if let Some(started) = started_at {
        out["startedAt"] = json!(format_time(*started));
    }
    if let Some(signal) = signal {
        out["signal"] = json!(signal);
    }
    json!({ "terminated": out })
}

/// Whether a container counts as started (its startup probe, if any, passed).
fn is_started(container: &Container, run: &ContainerInfo, state: &WorkerState) -> bool {
    matches!(run.state, ContainerState::Running { .. })
        && (container.startup_probe.is_none()
            || state.started.get(&run.id).copied().unwrap_or(false))
}

fn is_ready(container: &Container, run: &ContainerInfo, state: &WorkerState) -> bool {
    is_started(container, run, state)
        && (container.readiness_probe.is_none()
            || state.ready.get(&run.id).copied().unwrap_or(false))
}

#[allow(clippy::too_many_arguments)]
fn container_status(
    pod: &PodView<'_>,
    pod_name: &str,
    container: &Container,
    init: bool,
    observed: &Observed,
    state: &WorkerState,
    backoff: Backoff,
    now: SystemTime,
) -> Value {
    let (latest, previous) = observed.runs(&container.name);
    let image = container.image.clone().unwrap_or_default();
    let mut status = json!({
        "name": container.name,
        "image": image,
        "imageID": state.image_ids.get(&container.name).cloned().unwrap_or_default(),
        "restartCount": latest.map_or(0, |run| run.labels.attempt),
        "ready": latest.is_some_and(|run| is_ready(container, run, state)),
        "started": latest.is_some_and(|run| is_started(container, run, state)),
        "lastState": {},
    });
    if let Some(run) = latest {
        status["containerID"] = json!(format!("runc://{}", run.id));
    }
    let waiting = |reason: &str, message: Option<String>| {
        let mut w = json!({ "reason": reason });
        if let Some(message) = message {
            w["message"] = json!(message);
        }
        json!({ "waiting": w })
    };
    let noted = state.waiting.get(&container.name);
    let (current, last) = match latest {
        _ if noted.is_some()
            && !matches!(
                latest.map(|r| &r.state),
                Some(ContainerState::Running { .. })
            ) =>
        {
            let noted = noted.map(|w| (w.reason.clone(), w.message.clone()));
            let (reason, message) = noted.unwrap_or_default();
            (
                waiting(&reason, Some(message)),
                latest.map(terminated).filter(|t| !t.is_null()),
            )
        }
        None => {
            let reason = if !init && !initialized(pod, observed) {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            (waiting(reason, None), None)
        }
        Some(run) => match &run.state {
            ContainerState::Created => (waiting("ContainerCreating", None), None),
            ContainerState::Running { started_at, .. } => (
                json!({"running": {"startedAt": format_time(*started_at)}}),
                previous.map(terminated),
            ),
            ContainerState::Exited { .. } => {
                match step(pod, &container.name, init, observed, state, backoff, now) {
                    Step::Done(_) => (terminated(run), previous.map(terminated)),
                    _ => {
                        let delay = backoff.delay(run.labels.attempt);
                        (
                            waiting(
                                "CrashLoopBackOff",
                                Some(format!(
                                    "back-off {}s restarting failed container={} pod={pod_name}",
                                    delay.as_secs(),
                                    container.name
                                )),
                            ),
                            Some(terminated(run)),
                        )
                    }
                }
            }
        },
    };
    status["state"] = current;
    if let Some(last) = last.filter(|l| !l.is_null()) {
        status["lastState"] = last;
    }
    status
}

/// A condition, keeping its last transition time from `existing` when its status is unchanged.
fn condition(existing: &[Value], kind: &str, ok: bool, reason: Option<&str>, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let since = existing
        .iter()
        .find(|c| c["type"] == kind && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now);
    let mut out = json!({
        "type": kind,
        "status": status,
        "lastProbeTime": null,
        "lastTransitionTime": since,
    });
    if let Some(reason) = reason.filter(|_| !ok) {
        out["reason"] = json!(reason);
    }
    out
}

/// The condition saying a pod runs on the host's network though it did not ask to.
pub const HOST_NETWORK_CONDITION: &str = "keelson.io/HostNetwork";

/// Identity of a pod for messages and addresses.
pub struct PodFacts<'a> {
    pub name: &'a str,
    pub host_ip: &'a str,
    /// The pod's IP (the host's for host-network pods; empty when it has none).
    pub pod_ip: &'a str,
    /// The pod asked for its own network but the runtime gave it the host's (process
    /// runtime): said in a condition.
    pub host_network_fallback: bool,
    /// The status the API holds now (for conditions' transition times, start time, QoS).
    pub current: &'a Value,
}

/// The pod's status as the kubelet reports it.
pub fn pod_status(
    pod: &PodView<'_>,
    facts: &PodFacts<'_>,
    observed: &Observed,
    state: &WorkerState,
    backoff: Backoff,
    now: SystemTime,
) -> Value {
    let now_text = format_time(now);
    let existing: Vec<Value> = facts.current["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let phase = phase(pod, observed, state, backoff, now);
    let init_statuses: Vec<Value> = pod
        .spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(pod, facts.name, c, true, observed, state, backoff, now))
        .collect();
    let statuses: Vec<Value> = pod
        .spec
        .containers
        .iter()
        .map(|c| container_status(pod, facts.name, c, false, observed, state, backoff, now))
        .collect();
    let initialized = initialized(pod, observed);
    let containers_ready = statuses.iter().all(|s| s["ready"] == true);
    let terminal_ok = phase == Phase::Succeeded;
    let mut conditions = vec![
        condition(
            &existing,
            "PodReadyToStartContainers",
            observed.sandbox.is_some(),
            None,
            &now_text,
        ),
        condition(
            &existing,
            "Initialized",
            initialized || terminal_ok,
            Some("ContainersNotInitialized"),
            &now_text,
        ),
        condition(
            &existing,
            "Ready",
            containers_ready && !phase.is_terminal(),
            Some(if phase.is_terminal() {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            &now_text,
        ),
        condition(
            &existing,
            "ContainersReady",
            containers_ready && !phase.is_terminal(),
            Some(if phase.is_terminal() {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            &now_text,
        ),
    ];
    if let Some(scheduled) = existing.iter().find(|c| c["type"] == "PodScheduled") {
        conditions.push(scheduled.clone());
    }
    if facts.host_network_fallback {
        let since = existing
            .iter()
            .find(|c| c["type"] == HOST_NETWORK_CONDITION)
            .and_then(|c| c["lastTransitionTime"].as_str())
            .map_or(now_text.clone(), str::to_string);
        conditions.push(json!({
            "type": HOST_NETWORK_CONDITION,
            "status": "True",
            "reason": "NoPodNetwork",
            "message": "this node's runtime cannot give pods their own network; the pod uses the node's",
            "lastTransitionTime": since,
        }));
    }
    let start_time = facts.current["startTime"]
        .as_str()
        .map_or(now_text.clone(), str::to_string);
    let mut status = json!({
        "phase": phase.as_str(),
        "conditions": conditions,
        "hostIP": facts.host_ip,
        "hostIPs": [{"ip": facts.host_ip}],
        "startTime": start_time,
        "containerStatuses": statuses,
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
    if !facts.pod_ip.is_empty() {
        status["podIP"] = json!(facts.pod_ip);
        status["podIPs"] = json!([{"ip": facts.pod_ip}]);
    }
    if let Some(qos) = facts.current.get("qosClass") {
        status["qosClass"] = qos.clone();
    }
    status
}

/// The fields of a status the kubelet owns, for comparing the status to write with the one
/// the API holds (so an unchanged status is not written again).
pub fn same_status(written: &Value, current: &Value) -> bool {
    let fields = [
        "phase",
        "conditions",
        "hostIP",
        "podIP",
        "startTime",
        "containerStatuses",
        "initContainerStatuses",
    ];
    let pick = |v: &Value| -> BTreeMap<&str, Value> {
        fields
            .iter()
            .map(|f| (*f, v.get(*f).cloned().unwrap_or(Value::Null)))
            .collect()
    };
    pick(written) == pick(current)
}

#[cfg(test)]
mod tests;
