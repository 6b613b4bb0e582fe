//! `keelson master` and `keelson store` as real processes: a 3-master cluster on loopback
//! survives `kill -9` of its leader, a restarted master rejoins, errors exit non-zero with a
//! clear message, and SIGTERM stops a master cleanly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

mod common;

use common::cluster::{free_tcp_port, free_udp_port as free_port};

const TOKEN: &str = "process-test-token-0123456789";

fn keelson() -> Command {
    Command::new(env!("CARGO_BIN_EXE_keelson"))
}

struct Master {
    name: String,
    peer: String,
    child: Option<Child>,
}

/// A failing test must not leave masters running: they would outlive the test run.
impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_master(dir: &Path, name: &str, peer: &str, peers: &str) -> Child {
    keelson()
        .args([
            "master", "--name", name, "--peer", peer, "--peers", peers, "--token", TOKEN,
        ])
        .arg("--api")
        .arg(format!("127.0.0.1:{}", free_tcp_port()))
        .arg("--data-dir")
        .arg(dir.join(name))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keelson master")
}

fn store(endpoints: &str, args: &[&str]) -> Output {
    keelson()
        .args(["store", "--endpoints", endpoints, "--token", TOKEN])
        .args(args)
        .output()
        .expect("run keelson store")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The leader's name, once every listed master reports the same one (other than `not`).
fn wait_leader(endpoints: &str, not: Option<&str>, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let output = store(endpoints, &["status"]);
        let text = stdout(&output);
        let leaders: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("leader:"))
            .map(str::trim)
            .collect();
        if output.status.success()
            && !leaders.is_empty()
            && leaders
                .iter()
                .all(|l| *l == leaders[0] && *l != "(none)" && Some(*l) != not)
        {
            return leaders[0].to_string();
        }
        assert!(Instant::now() < deadline, "no leader: {text}");
        sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_master_cluster_survives_kill_9_of_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut masters: Vec<Master> = (0..3)
        .map(|i| Master {
            name: format!("m{i}"),
            peer: format!("127.0.0.1:{}", free_port()),
            child: None,
        })
        .collect();
    let peers: Vec<String> = masters
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer))
        .collect();
    let peers = peers.join(",");
    for m in &mut masters {
        m.child = Some(start_master(dir.path(), &m.name, &m.peer, &peers));
    }
    let all: Vec<&str> = masters.iter().map(|m| m.peer.as_str()).collect();
    let all = all.join(",");

    // Phase 1: the cluster elects a leader and takes writes through any master.
    let leader = wait_leader(&all, None, Duration::from_secs(30));
    let put = store(&all, &["put", "/a", "1"]);
    assert!(put.status.success(), "{put:?}");
    assert!(
        stdout(&put).parse::<u64>().is_ok(),
        "put prints the revision: {put:?}"
    );
    assert_eq!(stdout(&store(&all, &["get", "/a"])), "1");

    // Phase 2: kill -9 the leader; the others elect a new one and keep the data.
    let victim = masters.iter().position(|m| m.name == leader).unwrap();
    let mut child = masters[victim].child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let survivors: Vec<&str> = masters
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, m)| m.peer.as_str())
        .collect();
    let survivors = survivors.join(",");
    let new_leader = wait_leader(&survivors, Some(&leader), Duration::from_secs(30));
    assert_ne!(new_leader, leader);
    let put = store(&all, &["put", "/b", "2"]);
    assert!(put.status.success(), "{put:?}");
    assert_eq!(stdout(&store(&survivors, &["get", "/a"])), "1");

    // Phase 3: the killed master restarts from its directory and has everything.
    let m = &mut masters[victim];
    m.child = Some(start_master(dir.path(), &m.name, &m.peer, &peers));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let local = store(&masters[victim].peer, &["get", "/b", "--serializable"]);
        if stdout(&local) == "2" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted master did not catch up: {local:?}"
        );
        sleep(Duration::from_millis(200));
    }

    // Phase 4: errors exit non-zero with a message a person can act on.
    let missing = store(&all, &["get", "/missing"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{missing:?}"
    );
    let wrong = keelson()
        .args([
            "store",
            "--endpoints",
            &all,
            "--token",
            "wrong-token-wrong-token",
            "get",
            "/a",
        ])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("invalid cluster token"),
        "{wrong:?}"
    );
    let conflict = store(&all, &["put", "/a", "3", "--if-absent"]);
    assert!(!conflict.status.success());
    assert!(
        String::from_utf8_lossy(&conflict.stderr).contains("condition failed"),
        "{conflict:?}"
    );

    // Phase 5: SIGTERM stops every master cleanly.
    for m in &mut masters {
        let child = m.child.as_mut().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }
    for m in &mut masters {
        let child = m.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop on SIGTERM",
                m.name
            );
            sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "{} exited with {status}", m.name);
    }
}
