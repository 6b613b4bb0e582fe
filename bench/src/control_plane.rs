//! The control-plane benchmark (`store-bench --control-plane`): three masters and N hollow
//! nodes (`keelson node --runtime hollow --count N`, one process); measures
//! - the baseline: raw bindings per second, pods bound by this program through the `binding`
//!   subresource with the same number of clients (what the API and store allow, no decisions);
//! - the scheduler alone: bare pods created by this program while the scheduler binds them
//!   (as kube-scheduler's own benchmark does), bindings per second in the steady part;
//! - the scheduler with a backlog: bare pods created while this program holds the controllers'
//!   Lease (so no master's scheduler runs), then bound once it lets the Lease go: bindings per
//!   second in the steady part, with no creates competing for the cores;
//! - the pipeline: pods created as Deployments, bound by the scheduler, reported Running by
//!   the hollow kubelets; bindings per second in the steady part (10%..90% of the pods) and the
//!   time from the first create until all are Running;
//!
//! and prints the scheduler's throughput against the raw bindings (same run), the goal
//! (2,000 pods/s) and kube-scheduler's published anchor (about 1,000 pods/s on 36 cores).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};

use crate::api_target::ApiTarget;
use crate::keelson_cluster::KeelsonCluster;
use crate::processes::Processes;

/// The goal of the control-plane issue, pods bound per second on this machine.
const GOAL_PODS_PER_SEC: f64 = 2000.0;
/// kube-scheduler's own benchmark, pods per second on 36 cores (published anchor).
const KUBE_SCHEDULER_PODS_PER_SEC: f64 = 1000.0;
/// How long nodes get to register.
const NODES_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the pods get to be Running.
const PODS_TIMEOUT: Duration = Duration::from_secs(900);
/// How long the master holding the controllers' Lease gets to notice it lost it and stop its
/// loops (it renews every second).
const LEASE_HANDOVER: Duration = Duration::from_secs(3);
/// Watch events queued between the reader and the bookkeeping.
const EVENTS_QUEUE_MAX: usize = 65_536;

/// What to run.
pub(crate) struct ControlPlaneLoad {
    pub(crate) nodes: usize,
    pub(crate) pods: usize,
    pub(crate) deployments: usize,
    pub(crate) clients: usize,
    pub(crate) raw_binds: usize,
    pub(crate) backlog: usize,
}

fn pod_template(labels: &Value, scheduler: Option<&str>) -> Value {
    let mut spec = json!({
        "containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
        }],
    });
    if let Some(name) = scheduler {
        spec["schedulerName"] = json!(name);
    }
    json!({"metadata": {"labels": labels}, "spec": spec})
}

async fn call(
    api: &mut ApiTarget,
    method: hyper::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let body = body.map(serde_json::to_vec).transpose()?;
    let (code, bytes) = api
        .request(method, path, body)
        .await
        .map_err(|e| anyhow!("{path}: {e}"))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((code, value))
}

/// Runs `count` operations with `clients` concurrent connections; returns ops/s.
async fn concurrently<F, Fut>(
    api: &ApiTarget,
    clients: usize,
    count: usize,
    op: F,
) -> anyhow::Result<f64>
where
    F: Fn(ApiTarget, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<ApiTarget>> + Send + 'static,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let op = op.clone();
        let next = next.clone();
        let mut client = api.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(());
                }
                client = op(client, i).await?;
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

async fn ready_nodes(api: &mut ApiTarget) -> anyhow::Result<Vec<String>> {
    let (code, list) = call(api, hyper::Method::GET, "/api/v1/nodes", None).await?;
    if code != 200 {
        bail!("listing nodes answered {code}: {list}");
    }
    let items = list["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect())
}

/// One pod's change as the watch saw it.
struct Seen {
    name: String,
    bound: bool,
    running: bool,
    at: Instant,
}

/// Streams pod changes labelled `bench=scheduler` from `rv` into `tx`.
async fn watch_pods(
    api: ApiTarget,
    rv: String,
    bench_label: &'static str,
    tx: mpsc::Sender<Seen>,
) -> anyhow::Result<()> {
    let mut conn = api.connect().await.map_err(|e| anyhow!(e))?;
    conn.ready().await?;
    let request = hyper::Request::builder()
        .uri(format!(
            "/api/v1/pods?watch=true&resourceVersion={rv}&labelSelector=bench%3D{bench_label}&allowWatchBookmarks=false"
        ))
        .header("host", api.addr().to_string())
        .header("authorization", api.authorization())
        .body(Full::new(Bytes::new()))?;
    let response = conn.send_request(request).await?;
    if response.status().as_u16() != 200 {
        bail!("the pod watch answered {}", response.status());
    }
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        buffer.extend_from_slice(data);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let pod = &event["object"];
            let seen = Seen {
                name: pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                bound: pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty()),
                running: pod["status"]["phase"] == "Running",
                at: Instant::now(),
            };
            if tx.send(seen).await.is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Creates `n` pods named `{bench}-{i}` and labelled `bench={bench}` with `clients` clients;
/// pods per second.
async fn create_pods(
    api: &ApiTarget,
    clients: usize,
    n: usize,
    bench: &'static str,
    scheduler: Option<&'static str>,
) -> anyhow::Result<f64> {
    let labels = json!({ "bench": bench });
    concurrently(api, clients, n, move |mut client, i| {
        let mut pod = pod_template(&labels, scheduler);
        pod["metadata"]["name"] = json!(format!("{bench}-{i}"));
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        async move {
            let (code, body) = call(
                &mut client,
                hyper::Method::POST,
                "/api/v1/namespaces/default/pods",
                Some(&pod),
            )
            .await?;
            if code != 201 {
                bail!("creating a pod answered {code}: {body}");
            }
            Ok(client)
        }
    })
    .await
}

/// The store's revision now, to watch from.
async fn current_revision(api: &mut ApiTarget) -> anyhow::Result<String> {
    let (code, list) = call(api, hyper::Method::GET, "/api/v1/pods?limit=1", None).await?;
    if code != 200 {
        bail!("listing pods answered {code}");
    }
    Ok(list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string())
}

/// The Lease the masters elect their scheduler and controllers on (`keelson_actors::leader`).
const CONTROLLER_LEASE: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/keelson-controller-manager";
/// What this program calls itself in the Lease while it holds it.
const BENCH_HOLDER: &str = "store-bench";
/// Attempts at a Lease write that lost a race with a master's renewal.
const LEASE_WRITE_ATTEMPTS: usize = 20;

/// Sets the controllers' Lease holder: `Some` takes it for an hour (the masters follow a
/// holder until its Lease has gone unrenewed for its whole duration), `None` frees it (the
/// next master to look acquires it).
async fn set_lease_holder(api: &mut ApiTarget, holder: Option<&str>) -> anyhow::Result<()> {
    for _ in 0..LEASE_WRITE_ATTEMPTS {
        let (code, mut lease) = call(api, hyper::Method::GET, CONTROLLER_LEASE, None).await?;
        if code != 200 {
            bail!("reading the controllers' Lease answered {code}: {lease}");
        }
        lease["spec"]["holderIdentity"] = json!(holder.unwrap_or_default());
        if holder.is_some() {
            lease["spec"]["leaseDurationSeconds"] = json!(3600);
        }
        let (code, body) = call(api, hyper::Method::PUT, CONTROLLER_LEASE, Some(&lease)).await?;
        match code {
            200 => return Ok(()),
            409 => continue,
            _ => bail!("writing the controllers' Lease answered {code}: {body}"),
        }
    }
    bail!("the controllers' Lease kept changing under {LEASE_WRITE_ATTEMPTS} attempts to write it")
}

/// Waits until the watch has seen `n` pods bound; when each was first seen bound.
async fn wait_bound(
    rx: &mut mpsc::Receiver<Seen>,
    n: usize,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut bound: HashMap<String, Instant> = HashMap::new();
    while bound.len() < n {
        let seen = tokio::select! {
            seen = rx.recv() => seen.ok_or_else(|| anyhow!("the pod watch ended"))?,
            _ = tokio::time::sleep_until(deadline.into()) => bail!(
                "after {} s: {} of {n} {what} pods bound", PODS_TIMEOUT.as_secs(), bound.len()
            ),
        };
        if seen.bound {
            bound.entry(seen.name).or_insert(seen.at);
        }
    }
    Ok(bound)
}

/// Bindings per second over the middle 80% of the bindings.
fn steady_rate(mut times: Vec<Instant>) -> Option<f64> {
    times.sort();
    let n = times.len();
    if n < 10 {
        return None;
    }
    let (lo, hi) = (n / 10, n * 9 / 10);
    let span = times[hi].duration_since(times[lo]).as_secs_f64();
    (span > 0.0).then(|| (hi - lo) as f64 / span)
}

pub(crate) async fn run(keelson: &Path, dir: &Path, load: &ControlPlaneLoad) -> anyhow::Result<()> {
    println!(
        "control-plane bench: 3 masters, {} hollow nodes, {} pods in {} Deployments, {} clients, {} raw bindings",
        load.nodes, load.pods, load.deployments, load.clients, load.raw_binds
    );
    eprintln!("starting 3 keelson masters");
    let cluster = KeelsonCluster::start(keelson, dir).await?;
    let (addr, kubeconfig) = cluster.apis[0].clone();
    let mut api = ApiTarget::from_kubeconfig(&kubeconfig, addr)?;
    api.wait_ready(Duration::from_secs(60)).await?;

    eprintln!("starting {} hollow nodes", load.nodes);
    let servers: Vec<String> = cluster
        .apis
        .iter()
        .map(|(a, _)| format!("https://{a}"))
        .collect();
    let mut processes = Processes::new();
    let mut command = Command::new(keelson);
    command
        .args(["node", "--runtime", "hollow", "--name", "hollow"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--server")
        .arg(servers.join(","))
        .arg("--count")
        .arg(load.nodes.to_string())
        .args(["--heartbeat-secs", "10"])
        .env("RUST_LOG", "warn");
    processes.spawn("keelson node (hollow)", command, &dir.join("hollow.log"))?;
    let started = Instant::now();
    let nodes = loop {
        processes.check_running()?;
        let ready = ready_nodes(&mut api).await?;
        if ready.len() >= load.nodes {
            break ready;
        }
        if started.elapsed() > NODES_TIMEOUT {
            bail!("only {} of {} nodes are Ready", ready.len(), load.nodes);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    println!(
        "{} nodes Ready {:.1} s after start",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );

    // Baseline: pods the default scheduler ignores, bound by this program.
    let raw = load.raw_binds;
    let create_rate = create_pods(&api, load.clients, raw, "raw", Some("bench-raw")).await?;
    let nodes_arc = Arc::new(nodes.clone());
    let bind_rate = concurrently(&api, load.clients, raw, move |mut client, i| {
        let node = nodes_arc[i % nodes_arc.len()].clone();
        async move {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": format!("raw-{i}")},
                "target": {"kind": "Node", "name": node},
            });
            let (code, body) = call(
                &mut client,
                hyper::Method::POST,
                &format!("/api/v1/namespaces/default/pods/raw-{i}/binding"),
                Some(&binding),
            )
            .await?;
            if code != 201 {
                bail!("binding a pod answered {code}: {body}");
            }
            Ok(client)
        }
    })
    .await?;
    println!(
        "baseline: {raw} pod creates at {create_rate:.0}/s, then {raw} raw bindings at {bind_rate:.0}/s"
    );

    // The scheduler alone, as kube-scheduler's own benchmark measures it: bare pods created
    // by this program faster than they are bound, so the bindings per second are the
    // scheduler's (with the creates competing for the same cores).
    let rv = current_revision(&mut api).await?;
    let (tx, mut rx) = mpsc::channel(EVENTS_QUEUE_MAX);
    let watcher = tokio::spawn(watch_pods(api.clone(), rv, "bare", tx));
    let t_bare = Instant::now();
    let bare_create_rate = create_pods(&api, load.clients, raw, "bare", None).await?;
    let bare_bound = wait_bound(&mut rx, raw, t_bare + PODS_TIMEOUT, "bare").await?;
    watcher.abort();
    let bare_last = bare_bound
        .values()
        .max()
        .map_or(0.0, |t| t.duration_since(t_bare).as_secs_f64());
    let bare_overall = raw as f64 / bare_last.max(f64::MIN_POSITIVE);
    let bare_steady = steady_rate(bare_bound.into_values().collect()).unwrap_or(bare_overall);
    println!(
        "scheduler alone: {raw} bare pods created at {bare_create_rate:.0}/s, bound at {bare_steady:.0}/s steady ({bare_overall:.0}/s overall, all bound {bare_last:.1} s after the first create)"
    );

    // The scheduler with a backlog: pods queued while no master may schedule, then bound at
    // the scheduler's own pace. The master that held the Lease stops its loops at its next
    // renewal (every second); the wait covers it, and the watch tells if it did not.
    set_lease_holder(&mut api, Some(BENCH_HOLDER)).await?;
    tokio::time::sleep(LEASE_HANDOVER).await;
    let rv = current_revision(&mut api).await?;
    let (tx, mut rx) = mpsc::channel(EVENTS_QUEUE_MAX);
    let watcher = tokio::spawn(watch_pods(api.clone(), rv, "backlog", tx));
    let backlog = load.backlog;
    let backlog_create_rate = create_pods(&api, load.clients, backlog, "backlog", None).await?;
    // Every create has been seen by the watch once it reports as many pods as were created.
    let mut queued: HashMap<String, bool> = HashMap::new();
    while queued.len() < backlog {
        let seen = tokio::time::timeout(PODS_TIMEOUT, rx.recv())
            .await
            .map_err(|_| anyhow!("the backlog's creates never all showed in the watch"))?
            .ok_or_else(|| anyhow!("the pod watch ended"))?;
        *queued.entry(seen.name).or_default() |= seen.bound;
    }
    let early = queued.values().filter(|bound| **bound).count();
    if early > 0 {
        bail!("{early} of the backlog's pods were bound while this program held the Lease");
    }
    eprintln!("letting the controllers' Lease go: {backlog} pods queued");
    let released = Instant::now();
    set_lease_holder(&mut api, None).await?;
    let backlog_bound = wait_bound(&mut rx, backlog, released + PODS_TIMEOUT, "queued").await?;
    watcher.abort();
    let first = backlog_bound.values().min().copied().unwrap_or(released);
    let last = backlog_bound.values().max().copied().unwrap_or(released);
    let backlog_overall = backlog as f64
        / last
            .duration_since(first)
            .as_secs_f64()
            .max(f64::MIN_POSITIVE);
    let backlog_steady =
        steady_rate(backlog_bound.into_values().collect()).unwrap_or(backlog_overall);
    println!(
        "scheduler with a backlog: {backlog} bare pods created at {backlog_create_rate:.0}/s while this program held the Lease; first bound {:.1} s after letting it go, then bound at {backlog_steady:.0}/s steady ({backlog_overall:.0}/s from the first binding to the last)",
        first.duration_since(released).as_secs_f64()
    );

    // The whole pipeline: Deployments, watched from now.
    let rv = current_revision(&mut api).await?;
    let (tx, mut rx) = mpsc::channel(EVENTS_QUEUE_MAX);
    let watcher = tokio::spawn(watch_pods(api.clone(), rv, "scheduler", tx));
    let per = load.pods / load.deployments.max(1);
    let t0 = Instant::now();
    let slots = Arc::new(Semaphore::new(load.clients.max(1)));
    let mut creates = Vec::new();
    for d in 0..load.deployments {
        let permit = slots.clone().acquire_owned().await?;
        let mut client = api.clone();
        creates.push(tokio::spawn(async move {
            let _permit = permit;
            let labels = json!({"bench": "scheduler", "app": format!("bench-{d}")});
            let deployment = json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": format!("bench-{d}")},
                "spec": {
                    "replicas": per,
                    "selector": {"matchLabels": {"app": format!("bench-{d}")}},
                    "template": pod_template(&labels, None),
                },
            });
            let (code, body) = call(
                &mut client,
                hyper::Method::POST,
                "/apis/apps/v1/namespaces/default/deployments",
                Some(&deployment),
            )
            .await?;
            if code != 201 {
                bail!("creating a deployment answered {code}: {body}");
            }
            anyhow::Ok(())
        }));
    }
    for create in creates {
        create.await??;
    }
    let expected = per * load.deployments;
    let mut created_at: HashMap<String, Instant> = HashMap::new();
    let mut bound_at: HashMap<String, Instant> = HashMap::new();
    let mut running_at: HashMap<String, Instant> = HashMap::new();
    let deadline = t0 + PODS_TIMEOUT;
    while running_at.len() < expected {
        let seen = tokio::select! {
            seen = rx.recv() => seen.ok_or_else(|| anyhow!("the pod watch ended"))?,
            _ = tokio::time::sleep_until(deadline.into()) => bail!(
                "after {} s: {} of {expected} pods bound, {} Running",
                PODS_TIMEOUT.as_secs(), bound_at.len(), running_at.len()
            ),
        };
        created_at.entry(seen.name.clone()).or_insert(seen.at);
        if seen.bound {
            bound_at.entry(seen.name.clone()).or_insert(seen.at);
        }
        if seen.running {
            running_at.entry(seen.name).or_insert(seen.at);
        }
    }
    watcher.abort();
    let all_running = running_at
        .values()
        .max()
        .map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
    let last_bound = bound_at
        .values()
        .max()
        .map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
    let overall = expected as f64 / last_bound.max(f64::MIN_POSITIVE);
    let steady = steady_rate(bound_at.values().copied().collect()).unwrap_or(overall);
    let created_steady = steady_rate(created_at.values().copied().collect()).unwrap_or(0.0);
    let running_steady = steady_rate(running_at.values().copied().collect()).unwrap_or(0.0);
    let mut waits: Vec<f64> = bound_at
        .iter()
        .filter_map(|(name, bound)| {
            created_at
                .get(name)
                .map(|created| bound.duration_since(*created).as_secs_f64() * 1000.0)
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let wait_p50 = waits.get(waits.len() / 2).copied().unwrap_or(0.0);
    let wait_p99 = waits.get(waits.len() * 99 / 100).copied().unwrap_or(0.0);
    println!(
        "stages (steady rates): pods created by the ReplicaSet controller {created_steady:.0}/s, bound {steady:.0}/s, reported Running {running_steady:.0}/s; created -> bound p50 {wait_p50:.0} ms, p99 {wait_p99:.0} ms"
    );
    println!(
        "scheduler: {expected} pods bound {last_bound:.1} s after the first create ({overall:.0}/s overall, {steady:.0}/s steady); all Running after {all_running:.1} s"
    );
    println!();
    println!("| measure | value | ratio |");
    println!("|---|---|---|");
    println!(
        "| scheduler alone (bare pods) bindings/s vs raw bindings/s, same run | {bare_steady:.0} vs {bind_rate:.0} | {:.2}x |",
        bare_steady / bind_rate
    );
    println!(
        "| scheduler alone vs goal ({GOAL_PODS_PER_SEC:.0} pods/s) | {bare_steady:.0} | {:.2}x |",
        bare_steady / GOAL_PODS_PER_SEC
    );
    println!(
        "| scheduler with a backlog: bindings/s (steady) vs raw bindings/s, same run | {backlog_steady:.0} vs {bind_rate:.0} | {:.2}x |",
        backlog_steady / bind_rate
    );
    println!(
        "| scheduler with a backlog vs goal ({GOAL_PODS_PER_SEC:.0} pods/s) | {backlog_steady:.0} | {:.2}x |",
        backlog_steady / GOAL_PODS_PER_SEC
    );
    println!(
        "| Deployments: bindings/s (steady) vs raw bindings/s, same run | {steady:.0} vs {bind_rate:.0} | {:.2}x |",
        steady / bind_rate
    );
    println!(
        "| Deployments: bindings/s vs goal ({GOAL_PODS_PER_SEC:.0} pods/s) | {steady:.0} | {:.2}x |",
        steady / GOAL_PODS_PER_SEC
    );
    println!(
        "| scheduler alone vs kube-scheduler's benchmark on 36 cores (~{KUBE_SCHEDULER_PODS_PER_SEC:.0} pods/s, published) | {bare_steady:.0} | {:.2}x |",
        bare_steady / KUBE_SCHEDULER_PODS_PER_SEC
    );
    println!(
        "| {expected} pods created as {} Deployments until all Running | {all_running:.1} s | |",
        load.deployments
    );
    processes
        .check_running()
        .context("a process died during the benchmark")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_ignores_the_ends() {
        let t0 = Instant::now();
        let times: Vec<Instant> = (0..100)
            .map(|i| t0 + Duration::from_millis(if i < 10 { i * 1000 } else { 10_000 + i }))
            .collect();
        // The middle 80 bindings come 1 ms apart: ~1000/s, not the ~9/s of the whole span.
        let rate = steady_rate(times).unwrap();
        assert!((rate - 1000.0).abs() < 10.0, "{rate}");
        assert_eq!(steady_rate(vec![t0; 3]), None);
    }
}
