//! The Jepsen suite in CI: a short run with every nemesis against five masters must find no
//! anomaly; the same suite must catch a deliberately unsafe store (reads served from local
//! state without read-index). Reports land in `target/tmp/jepsen-*` (see docs/jepsen.md).

use std::path::PathBuf;
use std::time::Duration;

use keelson_jepsen::checker::Validity;
use keelson_jepsen::history::{read_jsonl, FaultStatus, NemesisEvent, Phase};
use keelson_jepsen::nemesis::Fault;
use keelson_jepsen::run::{run_keelson, RunConfig, RunOutcome};

fn run_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("jepsen-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn summary(outcome: &RunOutcome) -> String {
    let mut text = String::new();
    for r in &outcome.results {
        text.push_str(&format!("{} {:?}: {}\n", r.name, r.validity, r.summary));
        for a in &r.anomalies {
            text.push_str(&format!("  {}: {}\n", a.kind, a.message));
        }
    }
    text.push_str(&format!("report: {}", outcome.dir.display()));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_run_with_every_nemesis_finds_no_anomaly() {
    let mut config = RunConfig::new(
        PathBuf::from(env!("CARGO_BIN_EXE_keelson")),
        run_dir("short"),
        Duration::from_secs(130),
        Fault::ALL.to_vec(),
    );
    config.quiet = Duration::from_secs(3);
    config.active = Duration::from_secs(6);
    let outcome = run_keelson(&config).await.expect("the run completes");
    let text = summary(&outcome);
    assert!(outcome.valid(), "anomalies found:\n{text}");
    for name in [
        "linearizable-register",
        "set",
        "watch",
        "recovery",
        "control-plane",
    ] {
        let result = outcome.results.iter().find(|r| r.name == name);
        assert!(
            result.is_some_and(|r| r.validity == Validity::Valid),
            "{name} is not valid:\n{text}"
        );
    }
    // Every nemesis ran: none was skipped. A fault that could not be completely installed is
    // recorded as indeterminate (tried, effect unknown) and still counts as run.
    let events: Vec<NemesisEvent> = read_jsonl(&outcome.dir.join("nemesis.jsonl")).unwrap();
    for fault in Fault::ALL {
        let started = events
            .iter()
            .find(|e| e.fault == fault.name() && e.phase == Phase::Start);
        assert!(
            started.is_some_and(|e| e.status != FaultStatus::Skipped),
            "{} did not run: {started:?}\n{text}",
            fault.name()
        );
    }
    // The member removed (and restarted outside the membership) served and was added back.
    let member: Vec<&NemesisEvent> = events.iter().filter(|e| e.fault == "member").collect();
    assert!(
        member
            .first()
            .is_some_and(|e| e.status == FaultStatus::Installed),
        "the member fault was not installed: {member:?}"
    );
    assert!(
        member
            .iter()
            .any(|e| e.phase == Phase::Stop && e.detail.starts_with("added back")),
        "the removed member was not added back: {member:?}"
    );
    assert!(outcome.dir.join("summary.md").exists(), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_without_read_index_are_caught() {
    let mut config = RunConfig::new(
        PathBuf::from(env!("CARGO_BIN_EXE_keelson")),
        run_dir("stale-reads"),
        Duration::from_secs(50),
        vec![Fault::PartitionLeader, Fault::PartitionHalves],
    );
    config.masters = 3;
    config.quiet = Duration::from_secs(3);
    config.active = Duration::from_secs(10);
    config.control_plane = false;
    config.master_args = vec!["--unsafe-stale-reads".to_string()];
    let outcome = run_keelson(&config).await.expect("the run completes");
    let text = summary(&outcome);
    let register = outcome
        .results
        .iter()
        .find(|r| r.name == "linearizable-register")
        .expect("a register result");
    assert_eq!(
        register.validity,
        Validity::Invalid,
        "stale reads went unnoticed:\n{text}"
    );
    assert!(
        register.anomalies.iter().all(|a| !a.ops.is_empty()),
        "each anomaly comes with its failing sub-history:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_passes_the_same_register_checks() {
    assert!(
        std::path::Path::new("/usr/bin/etcd").exists(),
        "the etcd control needs Debian's etcd: apt-get install etcd-server (scripts/install-deps.sh test does)"
    );
    let mut config = RunConfig::new(
        PathBuf::from(env!("CARGO_BIN_EXE_keelson")),
        run_dir("etcd"),
        Duration::from_secs(50),
        vec![
            Fault::PartitionLeader,
            Fault::Kill,
            Fault::PartitionHalves,
            Fault::Pause,
        ],
    );
    config.masters = 3;
    config.quiet = Duration::from_secs(3);
    config.active = Duration::from_secs(6);
    let outcome = keelson_jepsen::run::run_etcd(&config)
        .await
        .expect("the run completes");
    let text = summary(&outcome);
    assert!(outcome.valid(), "etcd failed the checks:\n{text}");
    let register = &outcome.results[0];
    assert_eq!(register.validity, Validity::Valid, "{text}");
}
