//! The node's Prometheus series (kubelet, container runtime, service proxy), recorded through
//! the `metrics` facade, and the plain-HTTP endpoint that serves them (`server`). The process
//! installs the recorder and hands the endpoint a function that renders it: this crate only
//! records.
//!
//! Names follow the kubelet's and kube-proxy's where Kubernetes has one; the rest start with
//! `keelson_`.

pub mod server;

use std::time::{Duration, Instant, SystemTime};

pub use server::{MetricsServer, Renderer, ServerError};

/// Histogram: seconds from the kubelet first seeing a pod to all its containers running.
pub const POD_START_DURATION: &str = "kubelet_pod_start_duration_seconds";
/// Counter: container restarts started by the kubelet (a run after the first).
pub const CONTAINER_RESTARTS: &str = "keelson_kubelet_container_restarts_total";
/// Histogram by `operation_type`: seconds a container runtime call took.
pub const RUNTIME_DURATION: &str = "kubelet_runtime_operations_duration_seconds";
/// Counter by `operation_type`: container runtime calls.
pub const RUNTIME_OPERATIONS: &str = "kubelet_runtime_operations_total";
/// Counter by `operation_type`: container runtime calls that failed.
pub const RUNTIME_ERRORS: &str = "kubelet_runtime_operations_errors_total";
/// Histogram: seconds one sync of the service rules took (compute and apply).
pub const PROXY_SYNC_DURATION: &str = "kubeproxy_sync_proxy_rules_duration_seconds";
/// Gauge: Unix time of the last successful sync of the service rules.
pub const PROXY_SYNC_LAST: &str = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";
/// Counter: syncs of the service rules that failed.
pub const PROXY_SYNC_FAILURES: &str = "keelson_proxy_sync_proxy_rules_failures_total";

/// The runtime operations timed, as `operation_type` values.
pub const RUNTIME_OPERATION_TYPES: &[&str] = &[
    "create_sandbox",
    "remove_sandbox",
    "start_container",
    "kill",
    "remove_container",
    "list",
    "exec",
    "usage",
];

/// Registers the node's counters at zero, so that a scrape shows every series before the
/// first pod, restart or failure.
pub fn register() {
    metrics::counter!(CONTAINER_RESTARTS).increment(0);
    metrics::counter!(PROXY_SYNC_FAILURES).increment(0);
    for operation in RUNTIME_OPERATION_TYPES {
        metrics::counter!(RUNTIME_OPERATIONS, "operation_type" => *operation).increment(0);
        metrics::counter!(RUNTIME_ERRORS, "operation_type" => *operation).increment(0);
    }
}

/// Records one runtime call.
pub fn record_runtime_call(operation: &'static str, elapsed: Duration, ok: bool) {
    metrics::counter!(RUNTIME_OPERATIONS, "operation_type" => operation).increment(1);
    metrics::histogram!(RUNTIME_DURATION, "operation_type" => operation)
        .record(elapsed.as_secs_f64());
    if !ok {
        metrics::counter!(RUNTIME_ERRORS, "operation_type" => operation).increment(1);
    }
}

/// Records one sync of the service rules.
pub fn record_proxy_sync(elapsed: Duration, ok: bool) {
    metrics::histogram!(PROXY_SYNC_DURATION).record(elapsed.as_secs_f64());
    if ok {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        metrics::gauge!(PROXY_SYNC_LAST).set(now.as_secs_f64());
    } else {
        metrics::counter!(PROXY_SYNC_FAILURES).increment(1);
    }
}

/// Records a container run after its first.
pub fn record_container_restart() {
    metrics::counter!(CONTAINER_RESTARTS).increment(1);
}

/// One pod's start, as a pod worker follows it: from when the worker first saw the pod to
/// the first time all its containers run. A pod whose containers all ran already when first
/// seen (adopted after a kubelet restart) was not started by this kubelet and is not counted.
#[derive(Debug)]
pub struct PodStartTracker {
    seen: Instant,
    state: StartState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartState {
    /// Not looked at yet.
    New,
    /// Waiting for all containers to run.
    Starting,
    /// Recorded, or never to be recorded.
    Done,
}

impl PodStartTracker {
    pub fn new(seen: Instant) -> PodStartTracker {
        PodStartTracker {
            seen,
            state: StartState::New,
        }
    }

    /// Given whether all containers run now, the start duration to record (once).
    pub fn observe(&mut self, all_running: bool, now: Instant) -> Option<Duration> {
        match (self.state, all_running) {
            (StartState::New, true) => {
                self.state = StartState::Done;
                None
            }
            (StartState::New, false) => {
                self.state = StartState::Starting;
                None
            }
            (StartState::Starting, true) => {
                self.state = StartState::Done;
                Some(now.saturating_duration_since(self.seen))
            }
            (StartState::Starting, false) | (StartState::Done, _) => None,
        }
    }

    /// Records the start duration, if this observation completes the start.
    pub fn record(&mut self, all_running: bool) {
        if let Some(elapsed) = self.observe(all_running, Instant::now()) {
            metrics::histogram!(POD_START_DURATION).record(elapsed.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_start_is_recorded_once_and_only_for_pods_started_here() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        // (observations of all_running, the durations expected from each)
        let cases: &[(&[bool], &[Option<u64>])] = &[
            (&[false, false, true, true], &[None, None, Some(3), None]),
            (&[false, true, false, true], &[None, Some(2), None, None]),
            // Adopted: running when first seen.
            (&[true, true], &[None, None]),
            (&[false], &[None]),
        ];
        for (observations, expected) in cases {
            let mut tracker = PodStartTracker::new(t0);
            let got: Vec<Option<u64>> = observations
                .iter()
                .enumerate()
                .map(|(i, running)| {
                    tracker
                        .observe(*running, at(i as u64 + 1))
                        .map(|d| d.as_secs())
                })
                .collect();
            assert_eq!(&got, expected, "{observations:?}");
        }
    }
}
