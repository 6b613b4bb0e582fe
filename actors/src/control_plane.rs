//! The control plane of one master: campaigns for the controller-manager Lease and, while it
//! holds it, runs the scheduler, the controllers and the cloud controllers as children of the
//! supervisor actor, over informers of this leadership term. On losing the Lease every child
//! has stopped before the renew deadline ends, that is before any other master may start its
//! own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::client::{ApiClient, LeaseFence};
use crate::cloud::{CloudProvider, LocalCloud};
use crate::events::EventRecorder;
use crate::informer::Informers;
use crate::leader::{must_step_down, Elector, LeaseTimings};
use crate::supervisor::{ChildSpec, StartChildren, StopChildren, StopSignal, SupervisorActor};

/// Settings of the control loops.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// The election's timings.
    pub lease: LeaseTimings,
    /// A node whose heartbeat is older than this turns `Ready=Unknown` (Kubernetes: 40 s).
    pub node_monitor_grace: Duration,
    /// How long pods stay on a not-ready node before they are evicted (Kubernetes: 300 s).
    pub pod_eviction_timeout: Duration,
    /// The range pod CIDRs of nodes are cut from.
    pub cluster_cidr: String,
    /// The prefix length of each node's pod CIDR.
    pub node_cidr_mask: u8,
    /// Which controllers run (`*` for all); names as in [`CHILDREN`].
    pub enabled: Vec<String>,
    /// The local cloud's router: the network namespace (`ip netns` name) where routes to
    /// nodes' pod CIDRs go; `None` for this process's own.
    pub cloud_router_netns: Option<String>,
    /// Events older than this (since their last occurrence) are deleted (`--event-ttl`).
    pub event_ttl: crate::EventTtl,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        ControlPlaneConfig {
            lease: LeaseTimings::default(),
            node_monitor_grace: Duration::from_secs(10),
            pod_eviction_timeout: Duration::from_secs(10),
            cluster_cidr: "10.244.0.0/16".to_string(),
            node_cidr_mask: 24,
            enabled: vec!["*".to_string()],
            cloud_router_netns: None,
            event_ttl: crate::EventTtl::default(),
        }
    }
}

impl ControlPlaneConfig {
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled.iter().any(|e| e == "*" || e == name)
            && !self
                .enabled
                .iter()
                .any(|e| e.strip_prefix('-') == Some(name))
    }
}

/// What every control loop gets.
#[derive(Clone)]
pub struct ControllerContext {
    pub client: ApiClient,
    pub informers: Informers,
    pub events: EventRecorder,
    pub config: Arc<ControlPlaneConfig>,
    pub cloud: Arc<dyn CloudProvider>,
}

/// The names of the supervised children, in start order.
pub const CHILDREN: &[&str] = &[
    "scheduler",
    "node-controller",
    "replication-controller",
    "replicaset-controller",
    "deployment-controller",
    "endpoints-controller",
    "serviceaccount-controller",
    "namespace-controller",
    "garbage-collector",
    "cloud-node-controller",
    "route-controller",
    "service-lb-controller",
    "volume-controller",
    "event-ttl-controller",
];

fn child(name: &'static str, ctx: &ControllerContext) -> Option<ChildSpec> {
    let ctx = ctx.clone();
    let spec = match name {
        "scheduler" => ChildSpec::new(name, move |stop| crate::scheduler::run(ctx.clone(), stop)),
        "node-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::node::run(ctx.clone(), stop)
        }),
        "replication-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::replication::run_replication_controllers(ctx.clone(), stop)
        }),
        "replicaset-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::replication::run_replica_sets(ctx.clone(), stop)
        }),
        "deployment-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::deployment::run(ctx.clone(), stop)
        }),
        "endpoints-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::endpoints::run(ctx.clone(), stop)
        }),
        "serviceaccount-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::serviceaccounts::run(ctx.clone(), stop)
        }),
        "namespace-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::namespace::run(ctx.clone(), stop)
        }),
        "garbage-collector" => ChildSpec::new(name, move |stop| {
            crate::controllers::gc::run(ctx.clone(), stop)
        }),
        "cloud-node-controller" => ChildSpec::new(name, move |stop| {
            crate::cloud::run_node_controller(ctx.clone(), stop)
        }),
        "route-controller" => ChildSpec::new(name, move |stop| {
            crate::cloud::run_route_controller(ctx.clone(), stop)
        }),
        "service-lb-controller" => ChildSpec::new(name, move |stop| {
            crate::cloud::run_service_controller(ctx.clone(), stop)
        }),
        "volume-controller" => ChildSpec::new(name, move |stop| {
            crate::cloud::run_volume_controller(ctx.clone(), stop)
        }),
        "event-ttl-controller" => ChildSpec::new(name, move |stop| {
            crate::controllers::event_ttl::run(ctx.clone(), stop)
        }),
        _ => return None,
    };
    Some(spec)
}

/// The environment variable naming actors that panic once when they first start, to show
/// that the supervisor survives it (a fault-injection hook for the end-to-end tests).
pub const INJECT_PANIC_ENV: &str = "KEELSON_INJECT_PANIC";

fn injected_panics() -> &'static std::sync::Mutex<std::collections::HashSet<&'static str>> {
    static DONE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<&'static str>>> =
        std::sync::OnceLock::new();
    DONE.get_or_init(Default::default)
}

/// Panics if `name` is listed in [`INJECT_PANIC_ENV`] and has not panicked yet in this process.
fn inject_panic(name: &'static str) {
    let Ok(listed) = std::env::var(INJECT_PANIC_ENV) else {
        return;
    };
    if !listed.split(',').any(|n| n.trim() == name) {
        return;
    }
    let first = injected_panics()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(name);
    if first {
        panic!("injected panic in {name} ({INJECT_PANIC_ENV})");
    }
}

/// Wraps a child so that it honours [`INJECT_PANIC_ENV`].
fn with_fault_injection(spec: ChildSpec) -> ChildSpec {
    let name = spec.name;
    let run = spec.run.clone();
    ChildSpec {
        name,
        run: Arc::new(move |stop| {
            let inner = run(stop);
            Box::pin(async move {
                inject_panic(name);
                inner.await
            })
        }),
    }
}

/// A running control plane (the election loop and the supervisor).
pub struct ControlPlane {
    stop: signal::Sender<bool>,
    task: JoinHandle<()>,
    leading: signal::Receiver<bool>,
}

impl ControlPlane {
    /// Starts campaigning. Must be called inside an actix `System`.
    pub fn start(client: ApiClient, config: ControlPlaneConfig) -> ControlPlane {
        let supervisor = SupervisorActor::default().start();
        let (stop, stopped) = signal::channel(false);
        let (leading_tx, leading) = signal::channel(false);
        let task = tokio::spawn(campaign(
            client,
            Arc::new(config),
            supervisor,
            stopped,
            leading_tx,
        ));
        ControlPlane {
            stop,
            task,
            leading,
        }
    }

    /// Whether this master runs the control loops now.
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops the loops and gives the Lease up.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the control plane did not stop in time");
        }
    }
}

/// One leadership term's shared parts; dropping `stop` ends its informers and event writer.
struct Term {
    stop: signal::Sender<bool>,
}

async fn begin_term(
    client: &ApiClient,
    config: &Arc<ControlPlaneConfig>,
    supervisor: &Addr<SupervisorActor>,
    fence: &LeaseFence,
) -> Term {
    let (stop, stop_signal) = StopSignal::new();
    let client = &client.fenced(fence.clone());
    let informers = Informers::new(
        client.store().clone(),
        client.decoded(),
        stop_signal.receiver(),
    );
    let events = EventRecorder::start(
        client.for_component("keelson-controller-manager"),
        stop_signal,
    );
    let ctx = ControllerContext {
        client: client.clone(),
        informers,
        events,
        config: config.clone(),
        cloud: Arc::new(LocalCloud::default().with_router_netns(config.cloud_router_netns.clone())),
    };
    let children: Vec<ChildSpec> = CHILDREN
        .iter()
        .filter(|name| config.is_enabled(name))
        .filter_map(|name| child(name, &ctx))
        .map(with_fault_injection)
        .collect();
    tracing::info!(
        master = client.master_name(),
        children = children.len(),
        "leading: starting the scheduler and controllers"
    );
    metrics::counter!("keelson_leader_transitions_total").increment(1);
    if let Err(e) = supervisor.send(StartChildren(children)).await {
        tracing::error!(error = %e, "the supervisor is gone");
    }
    Term { stop }
}

async fn end_term(term: Term, supervisor: &Addr<SupervisorActor>) {
    if let Err(e) = supervisor.send(StopChildren).await {
        tracing::error!(error = %e, "the supervisor is gone");
    }
    let _ = term.stop.send(true);
    tracing::info!("not leading: the scheduler and controllers have stopped");
}

async fn campaign(
    client: ApiClient,
    config: Arc<ControlPlaneConfig>,
    supervisor: Addr<SupervisorActor>,
    mut stopped: signal::Receiver<bool>,
    leading: signal::Sender<bool>,
) {
    let timings = config.lease;
    let mut elector = Elector::new(client.clone(), client.master_name(), timings);
    let mut term: Option<Term> = None;
    let mut last_renewed = Instant::now();
    let fence = LeaseFence::new();
    loop {
        let attempt = Instant::now();
        let round = tokio::select! {
            _ = stopped.changed() => break,
            round = tokio::time::timeout(timings.renew_deadline, elector.round()) => round,
        };
        match round {
            Ok(Ok(true)) => {
                last_renewed = attempt;
                fence.extend(attempt + timings.renew_deadline);
                if term.is_none() {
                    term = Some(begin_term(&client, &config, &supervisor, &fence).await);
                    let _ = leading.send(true);
                }
            }
            Ok(Ok(false)) => {
                fence.revoke();
                if let Some(ending) = term.take() {
                    tracing::warn!("another master holds the controller Lease");
                    end_term(ending, &supervisor).await;
                    let _ = leading.send(false);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "leader election round failed"),
            Err(_) => tracing::debug!("leader election round timed out"),
        }
        if term.is_some() && must_step_down(last_renewed, Instant::now(), &timings) {
            tracing::warn!("could not renew the controller Lease in time; stepping down");
            fence.revoke();
            if let Some(ending) = term.take() {
                end_term(ending, &supervisor).await;
            }
            let _ = leading.send(false);
        }
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tokio::time::sleep(timings.retry_period.saturating_sub(attempt.elapsed())) => {}
        }
    }
    fence.revoke();
    if let Some(ending) = term.take() {
        end_term(ending, &supervisor).await;
        let _ = leading.send(false);
        if let Err(e) = tokio::time::timeout(Duration::from_secs(2), elector.release()).await {
            tracing::debug!(error = %e, "could not release the controller Lease");
        }
    }
}
