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
use crate::history::write_jsonl;
use crate::nemesis::{Fault, Nemesis};
use crate::net::Net;
use crate::recorder::Recorder;
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
    let mut clients = Vec::new();
    let groups: Vec<Arc<KeyGroup>> = (0..config
        .register_clients
        .div_ceil(config.clients_per_key.max(1)))
        .map(|g| Arc::new(KeyGroup::new(g, config.ops_per_key)))
        .collect();
    for w in 0..config.register_clients {
        let group = groups[w / config.clients_per_key.max(1)].clone();
        clients.push(tokio::spawn(workload::register_client(
            recorder.clone(),
            registers[w % registers.len()].clone(),
            group,
            values.clone(),
            stop.clone(),
        )));
    }
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

    let ops = recorder.ops();
    let events = recorder.nemesis_events();
    write_jsonl(&config.dir.join("history.jsonl"), &ops)?;
    write_jsonl(&config.dir.join("nemesis.jsonl"), &events)?;
    let mut results = checker::check_all(&ops, config.check_budget);
    results.push(nemesis.recovery_result());
    results.extend(control_result);
    drop(nemesis);
    drop(net);
    Ok(RunOutcome {
        dir: config.dir.clone(),
        results,
        ops: ops.len(),
    })
}
