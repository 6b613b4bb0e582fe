//! The runc runtime against the real runc (root required): containers on a busybox layer,
//! their CRI logs, exit codes, signals and OOM kills, start failures, adoption by a new
//! runtime over the same state directory, removal, exec, usage and sandbox namespaces.
//! The shim is this crate's `keelson shim`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keelson_node::runtime::{
    ContainerConfig, ContainerInfo, ContainerLabels, ContainerState, RuncRuntime, Runtime,
    RuntimeError, SandboxConfig, SandboxInfo, ShimCommand,
};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "head", "tr", "dd", "ls", "true", "false", "id", "hostname",
];

/// Fails (never skips) when the machine cannot run these tests.
fn require_root_and_runc() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runc runtime tests need root: run them as root (CI does)"
    );
    let runc = std::process::Command::new("runc").arg("--version").output();
    assert!(
        matches!(runc, Ok(ref out) if out.status.success()),
        "the runc runtime tests need runc on PATH: apt-get install runc"
    );
    assert!(
        Path::new(BUSYBOX).exists(),
        "the runc runtime tests need {BUSYBOX}: apt-get install busybox-static"
    );
}

/// A state directory, a busybox layer and a log directory; removes every runc container,
/// mount and network namespace it made when dropped, even after a failed assertion.
struct Fixture {
    _tmp: tempfile::TempDir,
    state: PathBuf,
    layer: PathBuf,
    logs: PathBuf,
    prefix: String,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        require_root_and_runc();
        let tmp = tempfile::Builder::new()
            .prefix("keelson-runc-")
            .tempdir()
            .expect("tempdir");
        let state = tmp.path().join("state");
        let layer = tmp.path().join("layer");
        let logs = tmp.path().join("logs");
        for dir in ["bin", "etc", "tmp", "proc", "dev", "sys"] {
            std::fs::create_dir_all(layer.join(dir)).expect("layer dir");
        }
        std::fs::copy(BUSYBOX, layer.join("bin/busybox")).expect("copy busybox");
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", layer.join("bin").join(applet)).expect("link");
        }
        std::fs::create_dir_all(&logs).expect("logs dir");
        Fixture {
            _tmp: tmp,
            state,
            layer,
            logs,
            prefix: format!("t{}-{name}", std::process::id()),
        }
    }

    fn runtime(&self) -> RuncRuntime {
        let shim = ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_keelson")),
            args: vec!["shim".into()],
        };
        RuncRuntime::new(&self.state, shim).expect("runtime")
    }

    fn sandbox(&self) -> SandboxInfo {
        SandboxInfo {
            id: format!("{}-sb", self.prefix),
            pod_uid: "uid".into(),
            pod_namespace: "default".into(),
            pod_name: "pod".into(),
            netns: None,
            ip: None,
        }
    }

    fn config(&self, name: &str, args: &[&str]) -> ContainerConfig {
        let id = format!("{}-{name}", self.prefix);
        ContainerConfig {
            id: id.clone(),
            labels: ContainerLabels {
                pod_uid: "uid".into(),
                pod_namespace: "default".into(),
                pod_name: "pod".into(),
                container_name: name.into(),
                attempt: 0,
            },
            layers: vec![self.layer.clone()],
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            working_dir: "/".into(),
            mounts: vec![],
            hostname: "pod".into(),
            user: (0, 0),
            memory_limit_bytes: None,
            cpu_limit_millis: None,
            cpu_request_millis: None,
            log_path: self.logs.join(format!("{name}.log")),
        }
    }

    fn runc_list(&self) -> String {
        let out = std::process::Command::new("runc")
            .arg("--root")
            .arg(self.state.join("runc"))
            .args(["list", "-q"])
            .output()
            .expect("runc list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let containers = self.state.join("containers");
        if let Ok(entries) = std::fs::read_dir(&containers) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                let _ = std::process::Command::new("runc")
                    .arg("--root")
                    .arg(self.state.join("runc"))
                    .args(["delete", "--force", &id])
                    .output();
                let _ = nix::mount::umount2(
                    &entry.path().join("rootfs"),
                    nix::mount::MntFlags::MNT_DETACH,
                );
            }
        }
        let netns = PathBuf::from(format!("/run/netns/keelson-{}-sb", self.prefix));
        if netns.exists() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "delete", &format!("keelson-{}-sb", self.prefix)])
                .output();
        }
    }
}

async fn container(rt: &RuncRuntime, id: &str) -> Option<ContainerInfo> {
    let (_, containers) = rt.list().await.expect("list");
    containers.into_iter().find(|c| c.id == id)
}

async fn wait_exited(rt: &RuncRuntime, id: &str) -> ContainerState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = container(rt, id).await.expect("listed").state;
        if matches!(state, ContainerState::Exited { .. }) {
            return state;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {state:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn exit_of(state: &ContainerState) -> (Option<i32>, Option<i32>, bool) {
    match state {
        ContainerState::Exited {
            exit_code,
            signal,
            oom_killed,
            ..
        } => (*exit_code, *signal, *oom_killed),
        other => panic!("not exited: {other:?}"),
    }
}

#[tokio::test]
async fn runtime_runc_logs_both_streams_and_exit_zero() {
    let f = Fixture::new("echo");
    let rt = f.runtime();
    let config = f.config("echo", &["sh", "-c", "echo out; echo err >&2"]);
    rt.start_container(&f.sandbox(), &config)
        .await
        .expect("start");
    let state = wait_exited(&rt, &config.id).await;
    assert_eq!(exit_of(&state), (Some(0), None, false));
    let log = std::fs::read_to_string(&config.log_path).expect("log");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.iter().any(|l| l.ends_with(" stdout F out")), "{log}");
    assert!(lines.iter().any(|l| l.ends_with(" stderr F err")), "{log}");
    for line in &lines {
        let time = line.split(' ').next().expect("time");
        assert!(
            time.contains('T') && time.ends_with('Z'),
            "bad time in {line}"
        );
    }
    let exit: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            f.state
                .join("containers")
                .join(&config.id)
                .join("exit.json"),
        )
        .expect("exit.json"),
    )
    .expect("json");
    assert_eq!(exit["exit_code"], 0);
    rt.remove_container(&config.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_reports_exit_code() {
    let f = Fixture::new("exit3");
    let rt = f.runtime();
    let config = f.config("exit3", &["sh", "-c", "exit 3"]);
    rt.start_container(&f.sandbox(), &config)
        .await
        .expect("start");
    let state = wait_exited(&rt, &config.id).await;
    assert_eq!(exit_of(&state), (Some(3), None, false));
    rt.remove_container(&config.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_sigterm_ends_a_handling_init_and_sigkill_reports_the_signal() {
    let f = Fixture::new("kill");
    let rt = f.runtime();
    let sb = f.sandbox();

    // A pid namespace's init only receives the signals it handles (SIGKILL excepted): a bare
    // `sleep` ignores SIGTERM, as under Docker; the kubelet follows up with SIGKILL.
    let sleeper = f.config("sleeper", &["sleep", "1000"]);
    let info = rt.start_container(&sb, &sleeper).await.expect("start");
    assert!(
        matches!(info.state, ContainerState::Running { .. }),
        "{info:?}"
    );
    rt.kill(&sleeper.id, 15).await.expect("sigterm");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = container(&rt, &sleeper.id).await.expect("listed").state;
    assert!(matches!(state, ContainerState::Running { .. }), "{state:?}");
    rt.kill(&sleeper.id, 9).await.expect("sigkill");
    let state = wait_exited(&rt, &sleeper.id).await;
    assert_eq!(exit_of(&state), (Some(137), Some(9), false));
    // Killing what has exited succeeds.
    rt.kill(&sleeper.id, 15).await.expect("kill exited");

    // An init that traps SIGTERM exits as it chooses.
    let trapper = f.config(
        "trapper",
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do sleep 0.1; done",
        ],
    );
    rt.start_container(&sb, &trapper).await.expect("start");
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.kill(&trapper.id, 15).await.expect("sigterm");
    let state = wait_exited(&rt, &trapper.id).await;
    assert_eq!(exit_of(&state), (Some(143), None, false));

    rt.remove_container(&sleeper.id).await.expect("remove");
    rt.remove_container(&trapper.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_memory_limit_oom_kills() {
    let f = Fixture::new("oom");
    let rt = f.runtime();
    let mut config = f.config(
        "oom",
        &[
            "sh",
            "-c",
            "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo ${#x}",
        ],
    );
    config.memory_limit_bytes = Some(16 << 20);
    rt.start_container(&f.sandbox(), &config)
        .await
        .expect("start");
    let state = wait_exited(&rt, &config.id).await;
    let (_, signal, oom_killed) = exit_of(&state);
    assert!(oom_killed, "{state:?}");
    assert_eq!(signal, Some(9));
    rt.remove_container(&config.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_bad_command_fails_to_start_with_runcs_message() {
    let f = Fixture::new("bad");
    let rt = f.runtime();
    let config = f.config("bad", &["/nonexistent"]);
    let err = rt
        .start_container(&f.sandbox(), &config)
        .await
        .expect_err("must fail");
    match err {
        RuntimeError::StartFailed(message) => {
            assert!(message.contains("/nonexistent"), "{message}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(!f.state.join("containers").join(&config.id).exists());
    assert_eq!(f.runc_list().trim(), "");
    let (_, containers) = rt.list().await.expect("list");
    assert!(containers.is_empty(), "{containers:?}");
}

#[tokio::test]
async fn runtime_runc_list_survives_a_node_restart() {
    let f = Fixture::new("adopt");
    let config = f.config("adopt", &["sleep", "1000"]);
    {
        let rt = f.runtime();
        rt.start_container(&f.sandbox(), &config)
            .await
            .expect("start");
    }
    // A new runtime over the same state directory: the node process restarted.
    let rt = f.runtime();
    let info = container(&rt, &config.id).await.expect("adopted");
    assert!(
        matches!(info.state, ContainerState::Running { .. }),
        "{info:?}"
    );
    assert_eq!(info.labels, config.labels);
    assert_eq!(info.sandbox_id, f.sandbox().id);
    assert_eq!(info.log_path, config.log_path);
    rt.kill(&config.id, 9).await.expect("kill");
    let state = wait_exited(&rt, &config.id).await;
    assert_eq!(exit_of(&state), (Some(137), Some(9), false));
    rt.remove_container(&config.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_remove_leaves_nothing() {
    let f = Fixture::new("rm");
    let rt = f.runtime();
    let config = f.config("rm", &["sleep", "1000"]);
    rt.start_container(&f.sandbox(), &config)
        .await
        .expect("start");
    assert!(f.runc_list().contains(&config.id));
    let dir = f.state.join("containers").join(&config.id);
    rt.remove_container(&config.id).await.expect("remove");
    assert_eq!(f.runc_list().trim(), "");
    assert!(!dir.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&dir.display().to_string()),
        "still mounted"
    );
    rt.remove_container(&config.id).await.expect("remove again");
    assert!(container(&rt, &config.id).await.is_none());
}

#[tokio::test]
async fn runtime_runc_exec_returns_output_and_exit_code() {
    let f = Fixture::new("exec");
    let rt = f.runtime();
    let config = f.config("exec", &["sleep", "1000"]);
    rt.start_container(&f.sandbox(), &config)
        .await
        .expect("start");
    let out = rt
        .exec(
            &config.id,
            &["sh".into(), "-c".into(), "echo hi; exit 4".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.output, "hi\n");
    let err = rt
        .exec(
            &config.id,
            &["sleep".into(), "30".into()],
            Duration::from_millis(300),
        )
        .await
        .expect_err("timeout");
    assert!(matches!(err, RuntimeError::Timeout(_)), "{err:?}");
    rt.remove_container(&config.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_usage_reports_memory() {
    let f = Fixture::new("usage");
    let rt = f.runtime();
    let config = f.config("usage", &["sleep", "1000"]);
    rt.start_container(&f.sandbox(), &config)
        .await
        .expect("start");
    let usage = rt.usage(&config.id).await.expect("usage");
    assert!(usage.memory_bytes > 0, "{usage:?}");
    rt.remove_container(&config.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_sandbox_netns_created_and_removed() {
    let f = Fixture::new("netns");
    let rt = f.runtime();
    let config = SandboxConfig {
        id: f.sandbox().id,
        pod_uid: "uid".into(),
        pod_namespace: "default".into(),
        pod_name: "pod".into(),
        host_network: false,
    };
    let sandbox = rt.create_sandbox(&config).await.expect("sandbox");
    let netns = sandbox.netns.clone().expect("netns");
    assert!(netns.exists());
    assert_eq!(rt.create_sandbox(&config).await.expect("again"), sandbox);
    let (sandboxes, _) = rt.list().await.expect("list");
    assert_eq!(sandboxes, vec![sandbox.clone()]);

    // A container of the sandbox sees only the namespace's loopback.
    let c = f.config("netns", &["ls", "/sys/class/net"]);
    rt.start_container(&sandbox, &c).await.expect("start");
    let state = wait_exited(&rt, &c.id).await;
    assert_eq!(exit_of(&state), (Some(0), None, false));
    let log = std::fs::read_to_string(&c.log_path).expect("log");
    assert!(log.ends_with(" stdout F lo\n"), "{log}");
    rt.remove_container(&c.id).await.expect("remove");

    rt.remove_sandbox(&sandbox.id).await.expect("remove");
    assert!(!netns.exists());
    rt.remove_sandbox(&sandbox.id).await.expect("remove again");
    let (sandboxes, _) = rt.list().await.expect("list");
    assert!(sandboxes.is_empty());

    let host = SandboxConfig {
        host_network: true,
        ..config
    };
    let sandbox = rt.create_sandbox(&host).await.expect("host sandbox");
    assert_eq!(sandbox.netns, None);
    rt.remove_sandbox(&sandbox.id).await.expect("remove");
}

#[tokio::test]
async fn runtime_runc_log_rotates_and_splits_long_lines() {
    let f = Fixture::new("logs");
    let rt = f.runtime().with_log_limits(4096, 2);
    let sb = f.sandbox();
    let script = "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done";
    let chatty = f.config("chatty", &["sh", "-c", script]);
    rt.start_container(&sb, &chatty).await.expect("start");
    assert_eq!(exit_of(&wait_exited(&rt, &chatty.id).await).0, Some(0));
    let current = std::fs::read_to_string(&chatty.log_path).expect("log");
    assert!(current.len() <= 4096, "{} bytes", current.len());
    assert!(current.ends_with(" stdout F line-199-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n"));
    let rotated = PathBuf::from(format!("{}.1", chatty.log_path.display()));
    assert!(rotated.exists());
    assert!(!PathBuf::from(format!("{}.2", chatty.log_path.display())).exists());

    // 40000 bytes without a newline: two 16 KiB partial records, then the rest in full.
    let long = f.config(
        "long",
        &["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' a"],
    );
    let rt = f.runtime();
    rt.start_container(&sb, &long).await.expect("start");
    assert_eq!(exit_of(&wait_exited(&rt, &long.id).await).0, Some(0));
    let log = std::fs::read_to_string(&long.log_path).expect("log");
    let tags: Vec<&str> = log.lines().filter_map(|l| l.split(' ').nth(2)).collect();
    assert_eq!(tags, ["P", "P", "F"], "{}", log.len());
    rt.remove_container(&chatty.id).await.expect("remove");
    rt.remove_container(&long.id).await.expect("remove");
}
