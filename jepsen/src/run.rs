//! One run: a cluster on its own network, the workloads' clients, the nemesis schedule, then
//! heal, final reads, the checkers and the report, all in one folder per run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::checker::{self, CheckResult, Validity};
use crate::client::{Api, Register};
use crate::cluster::{ClusterOptions, KeelsonCluster};
use crate::control::{self, HollowNodes};
use crate::etcd::{EtcdCluster, EtcdRegister};
use crate::history::write_jsonl;
use crate::nemesis::Db;
use crate::nemesis::{Fault, Nemesis};
use crate::net::Net;
use crate::recorder::Recorder;
use crate::report::{Report, RunInfo};
use crate::workload::{self, KeyGroup, Stop, Values, WatchProgress};

/// What a run does.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The `keelson` binary.
    pub keelson: PathBuf,
    /// The folder the run's files go in (history, report, masters' logs).
    pub dir: PathBuf,
    pub masters: usize,
    /// How long clients run (faults included).
    pub time_limit: Duration,
    pub faults: Vec<Fault>,
    /// Calm before each fault, and how long each fault is held.
    pub quiet: Duration,
    pub active: Duration,
    /// Register clients, how many share one key, and operations per key.
    pub register_clients: usize,
    pub clients_per_key: usize,
    pub ops_per_key: u64,
    pub set_clients: usize,
    pub watchers: usize,
    /// How long a client waits for an answer before the outcome is unknown.
    pub request_timeout: Duration,
    /// The linearizability checker's time per key.
    pub check_budget: Duration,
    /// Hollow nodes and a Deployment scaled during the run (the control-plane workload).
    pub control_plane: bool,
    /// Extra `keelson master` arguments (the unsafe modes).
    pub master_args: Vec<String>,
    /// When the run started, for the report.
    pub started: String,
}

impl RunConfig {
    /// The defaults of a run of `time_limit` with `faults`, in `dir`.
    pub fn new(keelson: PathBuf, dir: PathBuf, time_limit: Duration, faults: Vec<Fault>) -> Self {
        RunConfig {
            keelson,
            dir,
            masters: 5,
            time_limit,
            faults,
            quiet: Duration::from_secs(4),
            active: Duration::from_secs(8),
            register_clients: 10,
            clients_per_key: 5,
            ops_per_key: 150,
            set_clients: 2,
            watchers: 3,
            request_timeout: Duration::from_secs(3),
            check_budget: Duration::from_secs(10),
            control_plane: true,
            master_args: Vec::new(),
            started: jiff::Timestamp::now().to_string(),
        }
    }
}

/// What a run found.
pub struct RunOutcome {
    pub dir: PathBuf,
    pub results: Vec<CheckResult>,
    pub ops: usize,
}

impl RunOutcome {
    /// No checker found an anomaly.
    pub fn valid(&self) -> bool {
        self.results.iter().all(|r| r.validity != Validity::Invalid)
    }
}

/// Starts the register clients: `clients_per_key` of them share each key, spread over the
/// members.
fn register_clients(
    config: &RunConfig,
    recorder: &Arc<Recorder>,
    registers: &[Arc<dyn Register>],
    values: &Arc<Values>,
    stop: &Stop,
) -> Vec<tokio::task::JoinHandle<()>> {
    let per_key = config.clients_per_key.max(1);
    let groups: Vec<Arc<KeyGroup>> = (0..config.register_clients.div_ceil(per_key))
        .map(|g| Arc::new(KeyGroup::new(g, config.ops_per_key)))
        .collect();
    (0..config.register_clients)
        .map(|w| {
            tokio::spawn(workload::register_client(
                recorder.clone(),
                registers[w % registers.len()].clone(),
                groups[w / per_key].clone(),
                values.clone(),
                stop.clone(),
            ))
        })
        .collect()
}

/// The register workload alone against Debian's etcd 3.4 (`/usr/bin/etcd`), with the faults
/// etcd's harness supports: the control run whose checker must pass.
pub async fn run_etcd(config: &RunConfig) -> anyhow::Result<RunOutcome> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("create {}", config.dir.display()))?;
    let mut net = Net::new()?;
    let hosts = (0..config.masters)
        .map(|i| net.add_host(&format!("e{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let etcd = EtcdCluster::start(&hosts, &config.dir.join("data")).await?;
    let clients_of = |timeout: Duration| -> anyhow::Result<Vec<Arc<dyn Register>>> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let register = EtcdRegister::new(h, &format!("e{i}"), timeout)?;
                Ok(Arc::new(register) as Arc<dyn Register>)
            })
            .collect()
    };
    let registers = clients_of(config.request_timeout)?;
    let probes = clients_of(Duration::from_secs(1))?;
    let recorder = Arc::new(Recorder::new());
    let stop = Stop::default();
    let values = Arc::new(Values::default());
    let clients = register_clients(config, &recorder, &registers, &values, &stop);
    let faults: Vec<Fault> = config
        .faults
        .iter()
        .copied()
        .filter(|f| etcd.supports(*f).is_ok())
        .collect();
    let mut nemesis = Nemesis::new(etcd, recorder.clone(), probes);
    let until = Instant::now() + config.time_limit;
    nemesis
        .run(&faults, until, config.quiet, config.active)
        .await;
    stop.stop();
    nemesis.heal_all().await;
    for client in clients {
        let _ = tokio::time::timeout(config.request_timeout * 3, client).await;
    }
    let results = vec![
        checker::linear::check_register(&recorder.ops(), config.check_budget),
        nemesis.recovery_result(),
    ];
    drop(nemesis);
    drop(net);
    let ops = write_run(config, "etcd 3.4", &["register"], &recorder, &results)?;
    Ok(RunOutcome {
        dir: config.dir.clone(),
        results,
        ops,
    })
}

/// Writes the history, the nemesis's record and the report of a finished run.
fn write_run(
    config: &RunConfig,
    name: &str,
    workloads: &[&str],
    recorder: &Recorder,
    results: &[CheckResult],
) -> anyhow::Result<usize> {
    let ops = recorder.ops();
    let events = recorder.nemesis_events();
    write_jsonl(&config.dir.join("history.jsonl"), &ops)?;
    write_jsonl(&config.dir.join("nemesis.jsonl"), &events)?;
    let mut extra = vec![
        ("fault held".into(), format!("{:?}", config.active)),
        ("calm before each".into(), format!("{:?}", config.quiet)),
        ("master flags".into(), config.master_args.join(" ")),
    ];
    if let Some(at) = recorder.full_at() {
        extra.push((
            "HISTORY TRUNCATED".into(),
            format!(
                "the history reached its bound of {} records at {:.1} s; clients stopped \
                 recording there, so later faults were not checked",
                crate::recorder::OPS_MAX,
                at as f64 / 1e9
            ),
        ));
    }
    let info = RunInfo {
        name: name.to_string(),
        started: config.started.clone(),
        duration: config.time_limit,
        masters: config.masters,
        workloads: workloads.iter().map(|w| w.to_string()).collect(),
        nemeses: config.faults.iter().map(|f| f.name().to_string()).collect(),
        extra,
    };
    Report {
        info: &info,
        ops: &ops,
        nemesis: &events,
        results,
    }
    .write(&config.dir)?;
    Ok(ops.len())
}

/// Runs the suite against a Keelson cluster.
pub async fn run_keelson(config: &RunConfig) -> anyhow::Result<RunOutcome> {
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("create {}", config.dir.display()))?;
    let mut net = Net::new()?;
    let hosts = (0..config.masters)
        .map(|i| net.add_host(&format!("m{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = ClusterOptions {
        keelson: config.keelson.clone(),
        master_args: config.master_args.clone(),
        skewable_clocks: config.faults.contains(&Fault::Clock),
        lazy_data: config.faults.contains(&Fault::LoseUnsynced),
    };
    let data = config.dir.join("data");
    let cluster = KeelsonCluster::start(&hosts, &data, options).await?;
    let apis = (0..cluster.len())
        .map(|i| cluster.api(i, config.request_timeout))
        .collect::<anyhow::Result<Vec<Api>>>()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = apis[0].ensure_namespace().await {
        anyhow::ensure!(
            Instant::now() < deadline,
            "create the jepsen namespace: {e}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let bindings = Arc::new(control::Bindings::default());
    let _hollow = if config.control_plane {
        let servers: Vec<String> = cluster.masters.iter().map(|m| m.url()).collect();
        let hollow = HollowNodes::start(
            &config.keelson,
            &cluster.masters[0].dir.join("admin.kubeconfig"),
            &servers,
            3,
            &data.join("hollow-nodes.log"),
        )?;
        control::create(&apis[0], Duration::from_secs(30)).await?;
        Some(hollow)
    } else {
        None
    };

    let recorder = Arc::new(Recorder::new());
    let stop = Stop::default();
    let watch_stop = Stop::default();
    let values = Arc::new(Values::default());
    let registers: Vec<Arc<dyn Register>> = apis
        .iter()
        .map(|a| Arc::new(a.clone()) as Arc<dyn Register>)
        .collect();
    let mut clients = register_clients(config, &recorder, &registers, &values, &stop);
    for w in 0..config.set_clients {
        clients.push(tokio::spawn(workload::set_client(
            recorder.clone(),
            apis[(w + 1) % apis.len()].clone(),
            values.clone(),
            stop.clone(),
        )));
    }
    if config.control_plane {
        clients.push(tokio::spawn(control::scaler(
            apis.clone(),
            bindings.clone(),
            stop.clone(),
        )));
    }
    let mut watchers = Vec::new();
    let mut progress = Vec::new();
    for w in 0..config.watchers {
        let p = Arc::new(WatchProgress::default());
        progress.push(p.clone());
        watchers.push(tokio::spawn(workload::watcher(
            recorder.clone(),
            apis[(w + 2) % apis.len()].clone(),
            p,
            watch_stop.clone(),
        )));
    }

    let probes = (0..cluster.len())
        .map(|i| {
            cluster
                .api(i, Duration::from_secs(1))
                .map(|a| Arc::new(a) as Arc<dyn Register>)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut nemesis = Nemesis::new(cluster, recorder.clone(), probes);
    let until = Instant::now() + config.time_limit;
    nemesis
        .run(&config.faults, until, config.quiet, config.active)
        .await;
    tracing::info!("time limit reached: healing and reading the final state");
    stop.stop();
    nemesis.heal_all().await;
    for client in clients {
        let _ = tokio::time::timeout(config.request_timeout * 3, client).await;
    }
    workload::set_read_all(&recorder, &apis, Duration::from_secs(60)).await;
    let control_result = if config.control_plane {
        Some(control::settle_and_check(&apis, &bindings, Duration::from_secs(60)).await)
    } else {
        None
    };
    // Watchers catch up with the final revision before they stop.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut target = None;
    while Instant::now() < deadline {
        if target.is_none() {
            for api in &apis {
                if let Ok(rv) = workload::list_revision(api).await {
                    target = Some(rv);
                    break;
                }
            }
        }
        if let Some(rv) = target {
            if progress.iter().all(|p| p.revision() >= rv) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch_stop.stop();
    for watcher in watchers {
        let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    }

    let mut results = checker::check_all(&recorder.ops(), config.check_budget);
    results.push(nemesis.recovery_result());
    results.extend(control_result);
    let mut workloads = vec!["register", "set", "watch"];
    if config.control_plane {
        workloads.push("control-plane");
    }
    drop(nemesis);
    drop(net);
    let ops = write_run(config, "keelson", &workloads, &recorder, &results)?;
    // The masters' data (RocksDB) is large; their logs stay.
    for i in 0..config.masters {
        for dir in [
            format!("m{i}"),
            format!("m{i}.db-backing"),
            format!("m{i}.snapshot-backing"),
        ] {
            let _ = std::fs::remove_dir_all(data.join(dir));
        }
    }
    Ok(RunOutcome {
        dir: config.dir.clone(),
        results,
        ops,
    })
}
