//! Table-style tests of the pod worker's core.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{json, Value};

use super::*;
use crate::runtime::{ContainerInfo, ContainerLabels, ContainerState, SandboxInfo};

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

fn spec(value: Value) -> PodSpec {
    serde_json::from_value(value).expect("a valid pod spec")
}

fn app(policy: &str) -> PodSpec {
    spec(json!({
        "restartPolicy": policy,
        "containers": [{"name": "app", "image": "busybox"}],
    }))
}

fn view(spec: &PodSpec) -> PodView<'_> {
    PodView {
        spec,
        terminating: false,
        in_api: true,
        deletion_grace: None,
    }
}

fn sandbox() -> SandboxInfo {
    SandboxInfo {
        id: "k-uid".into(),
        pod_uid: "uid".into(),
        pod_namespace: "default".into(),
        pod_name: "p".into(),
        netns: None,
        ip: None,
    }
}

fn run(name: &str, attempt: u32, state: ContainerState) -> ContainerInfo {
    ContainerInfo {
        id: format!("k-uid-{name}-{attempt}"),
        sandbox_id: "k-uid".into(),
        labels: ContainerLabels {
            pod_uid: "uid".into(),
            pod_namespace: "default".into(),
            pod_name: "p".into(),
            container_name: name.into(),
            attempt,
        },
        state,
        log_path: PathBuf::from("/dev/null"),
    }
}

fn running(at: u64) -> ContainerState {
    ContainerState::Running {
        pid: 42,
        started_at: t(at),
    }
}

fn exited(code: i32, at: u64) -> ContainerState {
    ContainerState::Exited {
        exit_code: Some(code),
        signal: None,
        started_at: Some(t(at.saturating_sub(1))),
        finished_at: t(at),
        oom_killed: false,
    }
}

fn observed(containers: Vec<ContainerInfo>) -> Observed {
    Observed {
        sandbox: Some(sandbox()),
        containers,
    }
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(10),
        max: Duration::from_secs(40),
    }
}

fn start(name: &str, init: bool, attempt: u32) -> Action {
    Action::Start {
        name: name.into(),
        init,
        attempt,
    }
}

fn status(spec: &PodSpec, observed: &Observed, state: &WorkerState, now: u64) -> Value {
    let current = json!({"conditions": [{"type": "PodScheduled", "status": "True"}]});
    let facts = PodFacts {
        name: "p",
        host_ip: "10.0.0.1",
        pod_ip: "",
        host_network_fallback: false,
        current: &current,
    };
    pod_status(&view(spec), &facts, observed, state, backoff(), t(now))
}

#[test]
fn backoff_doubles_from_the_second_restart_up_to_the_cap() {
    let b = backoff();
    let delays: Vec<u64> = (0..6).map(|a| b.delay(a).as_secs()).collect();
    assert_eq!(delays, vec![0, 10, 20, 40, 40, 40]);
}

#[test]
fn a_new_pod_gets_its_sandbox_then_its_containers() {
    let spec = app("Always");
    let none = Observed::default();
    assert_eq!(
        plan(
            &view(&spec),
            &none,
            &WorkerState::default(),
            backoff(),
            t(0)
        ),
        vec![Action::CreateSandbox]
    );
    assert_eq!(
        plan(
            &view(&spec),
            &observed(vec![]),
            &WorkerState::default(),
            backoff(),
            t(0)
        ),
        vec![start("app", false, 0)]
    );
    let s = status(&spec, &observed(vec![]), &WorkerState::default(), 0);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    let scheduled = s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "PodScheduled");
    assert!(scheduled, "PodScheduled is kept: {s}");
}

#[test]
fn init_containers_run_one_at_a_time_before_the_app() {
    let spec = spec(json!({
        "initContainers": [{"name": "i1", "image": "b"}, {"name": "i2", "image": "b"}],
        "containers": [{"name": "app", "image": "b"}],
    }));
    let state = WorkerState::default();
    let cases: Vec<(Vec<ContainerInfo>, Vec<Action>)> = vec![
        (vec![], vec![start("i1", true, 0)]),
        (vec![run("i1", 0, running(0))], vec![]),
        (vec![run("i1", 0, exited(0, 1))], vec![start("i2", true, 0)]),
        // A failed init container restarts (Always acts as OnFailure for them).
        (vec![run("i1", 0, exited(1, 1))], vec![start("i1", true, 1)]),
        (
            vec![run("i1", 0, exited(0, 1)), run("i2", 0, exited(0, 2))],
            vec![start("app", false, 0)],
        ),
    ];
    for (containers, want) in cases {
        let obs = observed(containers.clone());
        assert_eq!(
            plan(&view(&spec), &obs, &state, backoff(), t(5)),
            want,
            "{containers:?}"
        );
    }
    let s = status(&spec, &observed(vec![run("i1", 0, running(0))]), &state, 5);
    assert_eq!(s["phase"], "Pending");
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "PodInitializing"
    );
}

#[test]
fn an_exited_container_restarts_with_back_off_per_policy() {
    let state = WorkerState::default();
    // Always: the first restart is immediate.
    let spec = app("Always");
    let obs = observed(vec![run("app", 0, exited(0, 10))]);
    assert_eq!(
        plan(&view(&spec), &obs, &state, backoff(), t(10)),
        vec![start("app", false, 1)]
    );
    // The second waits 10 s after the exit.
    let obs = observed(vec![
        run("app", 0, exited(1, 5)),
        run("app", 1, exited(1, 10)),
    ]);
    assert_eq!(plan(&view(&spec), &obs, &state, backoff(), t(15)), vec![]);
    assert_eq!(
        plan(&view(&spec), &obs, &state, backoff(), t(20)),
        vec![start("app", false, 2)]
    );
    let s = status(&spec, &obs, &state, 15);
    let c = &s["containerStatuses"][0];
    assert_eq!(c["restartCount"], 1);
    assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(s["phase"], "Running");
    // Runs older than the previous one are removed.
    let obs = observed(vec![
        run("app", 0, exited(1, 1)),
        run("app", 1, exited(1, 5)),
        run("app", 2, running(6)),
    ]);
    assert_eq!(
        plan(&view(&spec), &obs, &state, backoff(), t(7)),
        vec![Action::Remove {
            id: "k-uid-app-0".into()
        }]
    );

    // OnFailure: success ends the pod, failure restarts.
    let spec = app("OnFailure");
    let ok = observed(vec![run("app", 0, exited(0, 1))]);
    assert_eq!(plan(&view(&spec), &ok, &state, backoff(), t(2)), vec![]);
    assert_eq!(status(&spec, &ok, &state, 2)["phase"], "Succeeded");
    let failed = observed(vec![run("app", 0, exited(2, 1))]);
    assert_eq!(
        plan(&view(&spec), &failed, &state, backoff(), t(2)),
        vec![start("app", false, 1)]
    );

    // Never: a failure is final.
    let spec = app("Never");
    assert_eq!(plan(&view(&spec), &failed, &state, backoff(), t(2)), vec![]);
    let s = status(&spec, &failed, &state, 2);
    assert_eq!(s["phase"], "Failed");
    assert_eq!(
        s["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Error"
    );
    assert_eq!(
        s["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        2
    );
}

#[test]
fn an_oom_kill_is_reported_as_such() {
    let spec = app("Never");
    let obs = observed(vec![run(
        "app",
        0,
        ContainerState::Exited {
            exit_code: None,
            signal: Some(9),
            started_at: Some(t(0)),
            finished_at: t(1),
            oom_killed: true,
        },
    )]);
    let s = status(&spec, &obs, &WorkerState::default(), 2);
    let terminated = &s["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled");
    assert_eq!(terminated["exitCode"], 137);
}

#[test]
fn deletion_sends_sigterm_then_sigkill_then_cleans_up() {
    let spec = app("Always");
    let mut pod = view(&spec);
    pod.terminating = true;
    pod.deletion_grace = Some(Duration::from_secs(5));
    let mut state = WorkerState::default();
    let obs = observed(vec![run("app", 0, running(0))]);
    let term = Action::Kill {
        id: "k-uid-app-0".into(),
        signal: SIGTERM,
        grace: Duration::from_secs(5),
    };
    assert_eq!(plan(&pod, &obs, &state, backoff(), t(1)), vec![term]);
    state.killing.insert("k-uid-app-0".into(), t(6));
    assert_eq!(plan(&pod, &obs, &state, backoff(), t(3)), vec![]);
    let kill = Action::Kill {
        id: "k-uid-app-0".into(),
        signal: SIGKILL,
        grace: Duration::ZERO,
    };
    assert_eq!(plan(&pod, &obs, &state, backoff(), t(6)), vec![kill]);
    let obs = observed(vec![run("app", 0, exited(143, 4))]);
    assert_eq!(
        plan(&pod, &obs, &state, backoff(), t(6)),
        vec![Action::Remove {
            id: "k-uid-app-0".into()
        }]
    );
    assert_eq!(
        plan(&pod, &observed(vec![]), &state, backoff(), t(6)),
        vec![Action::RemoveSandbox]
    );
    assert_eq!(
        plan(&pod, &Observed::default(), &state, backoff(), t(6)),
        vec![Action::FinalDelete]
    );
    pod.in_api = false;
    assert_eq!(
        plan(&pod, &Observed::default(), &state, backoff(), t(6)),
        vec![]
    );
}

#[test]
fn a_failed_liveness_probe_kills_the_container() {
    let spec = app("Always");
    let mut state = WorkerState::default();
    state
        .unhealthy
        .insert("k-uid-app-0".into(), "Liveness probe failed".into());
    let obs = observed(vec![run("app", 0, running(0))]);
    let actions = plan(&view(&spec), &obs, &state, backoff(), t(1));
    assert!(
        matches!(
            &actions[..],
            [Action::Kill {
                signal: SIGTERM,
                ..
            }]
        ),
        "{actions:?}"
    );
}

#[test]
fn readiness_gates_the_ready_condition() {
    let spec = spec(json!({
        "containers": [{"name": "app", "image": "b", "readinessProbe": {"exec": {"command": ["true"]}}}],
    }));
    let obs = observed(vec![run("app", 0, running(0))]);
    let mut state = WorkerState::default();
    let ready = |s: &Value| {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .map(|c| c["status"].clone())
    };
    let s = status(&spec, &obs, &state, 1);
    assert_eq!(ready(&s), Some(json!("False")));
    assert_eq!(s["containerStatuses"][0]["ready"], false);
    assert_eq!(s["phase"], "Running");
    state.ready.insert("k-uid-app-0".into(), true);
    let s = status(&spec, &obs, &state, 1);
    assert_eq!(ready(&s), Some(json!("True")));
    assert_eq!(s["containerStatuses"][0]["ready"], true);
}

#[test]
fn an_image_pull_failure_shows_as_waiting_until_its_retry() {
    let spec = app("Always");
    let mut state = WorkerState::default();
    state.waiting.insert(
        "app".into(),
        Waiting {
            reason: "ErrImagePull".into(),
            message: "manifest unknown".into(),
            retry_at: t(10),
            failures: 1,
        },
    );
    let obs = observed(vec![]);
    assert_eq!(plan(&view(&spec), &obs, &state, backoff(), t(5)), vec![]);
    let s = status(&spec, &obs, &state, 5);
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["message"],
        "manifest unknown"
    );
    assert_eq!(
        plan(&view(&spec), &obs, &state, backoff(), t(10)),
        vec![start("app", false, 0)]
    );
}

#[test]
fn unchanged_statuses_compare_equal() {
    let spec = app("Always");
    let obs = observed(vec![run("app", 0, running(0))]);
    let state = WorkerState::default();
    let a = status(&spec, &obs, &state, 1);
    let b = status(&spec, &obs, &state, 1);
    assert!(same_status(&a, &b));
    let c = status(
        &spec,
        &observed(vec![run("app", 0, exited(1, 2))]),
        &state,
        3,
    );
    assert!(!same_status(&a, &c));
}

#[test]
fn pods_on_the_host_network_against_their_spec_say_so() {
    let spec = app("Always");
    let current = json!({"conditions": [{"type": "PodScheduled", "status": "True"}]});
    for (fallback, pod_ip) in [(true, "10.0.0.1"), (false, "10.244.1.7")] {
        let facts = PodFacts {
            name: "p",
            host_ip: "10.0.0.1",
            pod_ip,
            host_network_fallback: fallback,
            current: &current,
        };
        let s = pod_status(
            &view(&spec),
            &facts,
            &observed(vec![]),
            &WorkerState::default(),
            backoff(),
            t(0),
        );
        assert_eq!(s["podIP"], pod_ip);
        let condition = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == HOST_NETWORK_CONDITION)
            .cloned();
        match fallback {
            true => {
                let c = condition.expect("the host-network condition");
                assert_eq!(c["status"], "True");
                assert_eq!(c["reason"], "NoPodNetwork");
            }
            false => assert!(condition.is_none(), "{s}"),
        }
    }
}

#[test]
fn a_pod_has_started_when_the_latest_run_of_every_container_runs() {
    let two = spec(json!({
        "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}],
    }));
    let cases = [
        (vec![], false),
        (vec![run("a", 0, running(1))], false),
        (vec![run("a", 0, running(1)), run("b", 0, running(1))], true),
        (
            vec![run("a", 0, running(1)), run("b", 0, exited(1, 2))],
            false,
        ),
        // The latest run counts: b restarted and runs again.
        (
            vec![
                run("a", 0, running(1)),
                run("b", 0, exited(1, 2)),
                run("b", 1, running(3)),
            ],
            true,
        ),
    ];
    for (containers, want) in cases {
        let names: Vec<String> = containers.iter().map(|c| c.id.clone()).collect();
        assert_eq!(observed(containers).all_running(&two), want, "{names:?}");
    }
    assert!(!observed(vec![]).all_running(&PodSpec::default()));
}
