//! The process runtime: host commands under the shim, with CRI logs, exit codes, signals,
//! start failures and adoption by a new runtime over the same state directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keelson_node::runtime::{
    ContainerConfig, ContainerLabels, ContainerState, ProcessRuntime, Runtime, RuntimeError,
    SandboxInfo, ShimCommand,
};

fn runtime(state: &std::path::Path) -> ProcessRuntime {
    let shim = ShimCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_keelson")),
        args: vec!["shim".into()],
    };
    ProcessRuntime::new(state, shim).expect("runtime")
}

fn sandbox() -> SandboxInfo {
    SandboxInfo {
        id: "sb".into(),
        pod_uid: "uid".into(),
        pod_namespace: "default".into(),
        pod_name: "pod".into(),
        netns: None,
        ip: None,
    }
}

fn config(dir: &std::path::Path, name: &str, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        id: format!("p-{name}"),
        labels: ContainerLabels {
            pod_uid: "uid".into(),
            pod_namespace: "default".into(),
            pod_name: "pod".into(),
            container_name: name.into(),
            attempt: 0,
        },
        layers: vec![],
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![("GREETING".into(), "hello".into())],
        working_dir: "/".into(),
        mounts: vec![],
        hostname: "pod".into(),
        user: (0, 0),
        memory_limit_bytes: None,
        cpu_limit_millis: None,
        cpu_request_millis: None,
        log_path: dir.join(format!("{name}.log")),
    }
}

async fn wait_exited(rt: &ProcessRuntime, id: &str) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, containers) = rt.list().await.expect("list");
        let state = containers
            .into_iter()
            .find(|c| c.id == id)
            .expect("listed")
            .state;
        if matches!(state, ContainerState::Exited { .. }) {
            return state;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code_and_signal(state: &ContainerState) -> (Option<i32>, Option<i32>) {
    match state {
        ContainerState::Exited {
            exit_code, signal, ..
        } => (*exit_code, *signal),
        other => panic!("not exited: {other:?}"),
    }
}

#[tokio::test]
async fn runtime_process_logs_exit_codes_signals_and_adoption() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let rt = runtime(&state);
    let sb = sandbox();

    let echo = config(
        tmp.path(),
        "echo",
        &["sh", "-c", "echo $GREETING; echo err >&2; exit 3"],
    );
    rt.start_container(&sb, &echo).await.expect("start");
    assert_eq!(
        code_and_signal(&wait_exited(&rt, &echo.id).await),
        (Some(3), None)
    );
    let log = std::fs::read_to_string(&echo.log_path).expect("log");
    assert!(
        log.contains(" stdout F hello\n") && log.contains(" stderr F err\n"),
        "{log}"
    );

    let bad = config(tmp.path(), "bad", &["/nonexistent"]);
    match rt.start_container(&sb, &bad).await {
        Err(RuntimeError::StartFailed(m)) => assert!(m.contains("/nonexistent"), "{m}"),
        other => panic!("expected StartFailed: {other:?}"),
    }

    let sleeper = config(tmp.path(), "sleeper", &["sleep", "1000"]);
    rt.start_container(&sb, &sleeper).await.expect("start");
    drop(rt);
    let rt = runtime(&state);
    let (_, containers) = rt.list().await.expect("list");
    let adopted = containers
        .iter()
        .find(|c| c.id == sleeper.id)
        .expect("adopted");
    assert!(
        matches!(adopted.state, ContainerState::Running { .. }),
        "{adopted:?}"
    );
    assert_eq!(adopted.labels, sleeper.labels);
    let out = rt
        .exec(
            &sleeper.id,
            &["sh".into(), "-c".into(), "echo hi; exit 2".into()],
            Duration::from_secs(5),
        )
        .await
        .expect("exec");
    assert_eq!((out.exit_code, out.output.as_str()), (2, "hi\n"));
    assert!(rt.usage(&sleeper.id).await.expect("usage").memory_bytes > 0);
    rt.kill(&sleeper.id, 15).await.expect("kill");
    assert_eq!(
        code_and_signal(&wait_exited(&rt, &sleeper.id).await),
        (Some(143), Some(15))
    );

    for id in [&echo.id, &sleeper.id] {
        rt.remove_container(id).await.expect("remove");
    }
    let (_, containers) = rt.list().await.expect("list");
    assert!(containers.is_empty(), "{containers:?}");
}
