//! End-to-end monitoring: a real master and a real node (`keelson node --runtime runc`, as
//! root) run a small workload (a Deployment, a Service, a bare pod and a crash-looping one),
//! then both `/metrics` endpoints are scraped — the master's over HTTPS with the admin
//! token, the node's over plain HTTP on loopback — parsed as the Prometheus text format, and
//! every series docs/monitoring.md lists is checked for a sensible value.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::cluster::{free_tcp_port, Api, Cluster};
use common::real_node::{container_status, node_ready, wait_for, RealNode};

const IMAGE: &str = "keelson.local/busybox:stable";
const NS: &str = "/api/v1/namespaces/default";
/// Replicas of the Deployment.
const REPLICAS: usize = 2;

/// One sample of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped); panics on a line that
/// does not parse, so a malformed exposition fails the test.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("unparsable sample: {line:?}")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            // A label: name="value" with \\, \" and \n escapes.
            let (key, after) = body.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    (i, '"') => break i + 1,
                    (_, other) => value.push(other),
                }
            };
            labels.insert(key.to_string(), value);
            body = &after[end..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
    }
    let mut fields = rest.split_whitespace();
    let value = match fields.next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        number => number.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The scraped series of one process.
struct Scrape {
    samples: Vec<Sample>,
    text: String,
}

impl Scrape {
    fn new(text: String) -> Scrape {
        Scrape {
            samples: parse(&text),
            text,
        }
    }

    /// The sum of the samples named `name` whose labels include `labels`; `None` when there is
    /// no such sample.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Scrape::sum`], failing the test when the series is missing.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.sum(name, labels).unwrap_or_else(|| {
            panic!(
                "series {name}{labels:?} missing from the scrape:\n{}",
                self.text
            )
        })
    }

    /// Asserts that `name{labels}` is at least `min`.
    fn at_least(&self, name: &str, labels: &[(&str, &str)], min: f64) {
        let value = self.get(name, labels);
        assert!(
            value >= min,
            "{name}{labels:?} is {value}, expected at least {min}"
        );
    }
}

async fn scrape_master(api: &Api) -> Scrape {
    let reply = api.get("/metrics").await;
    assert_eq!(reply.code, 200, "master /metrics: {}", reply.text);
    Scrape::new(reply.text)
}

async fn get_node(port: u16, path: &str) -> (u16, String) {
    let reply = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("the node's metrics endpoint does not answer {path}: {e}"));
    let code = reply.status().as_u16();
    (code, reply.text().await.unwrap())
}

async fn scrape_node(port: u16) -> Scrape {
    let (code, text) = get_node(port, "/metrics").await;
    assert_eq!(code, 200, "node /metrics: {text}");
    Scrape::new(text)
}

fn pod(name: &str, labels: Value, command: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": IMAGE, "command": ["sh", "-c", command]}],
        },
    })
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_and_node_export_the_operators_series() {
    eprintln!("phase 1: a master (snapshots every 50 entries) and a node serving metrics");
    let cluster = Cluster::start_with(1, &["--snapshot-entries", "50"]).await;
    let port = free_tcp_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let node = RealNode::start(&cluster, "mon1", &["--metrics-addr", &metrics_addr]);
    let api = cluster.client(0);
    node_ready(&api, "mon1").await;

    eprintln!("phase 2: the node's endpoint answers health, refuses other paths");
    assert_eq!(get_node(port, "/healthz").await, (200, "ok".to_string()));
    let (code, text) = get_node(port, "/nope").await;
    assert_eq!(code, 404, "{text}");
    let unauthenticated = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unauthenticated.status().as_u16(),
        401,
        "the master's /metrics needs a token"
    );

    eprintln!("phase 3: a workload: a Deployment, its Service, a pod and a crash-looping pod");
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": IMAGE,
                        "command": ["sh", "-c", "sleep 3600"]}],
                },
            },
        },
    });
    let reply = api
        .post("/apis/apps/v1/namespaces/default/deployments", &deployment)
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let reply = api.post(&format!("{NS}/services"), &service).await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    for pod in [
        pod("solo", json!({"app": "solo"}), "sleep 3600"),
        pod("crash", json!({"app": "crash"}), "exit 1"),
    ] {
        let reply = api.post(&format!("{NS}/pods"), &pod).await;
        assert_eq!(reply.code, 201, "{}", reply.text);
    }
    let pods_created = REPLICAS + 2;

    eprintln!("phase 4: the pods run, the crashing one restarts, the Service has endpoints");
    wait_for(
        &api,
        &format!("{NS}/pods?labelSelector=app%3Dweb"),
        Duration::from_secs(90),
        "the Deployment's pods Running",
        |list| {
            list["items"].as_array().is_some_and(|items| {
                items.iter().filter(|p| phase(p) == "Running").count() == REPLICAS
            })
        },
    )
    .await;
    wait_for(
        &api,
        &format!("{NS}/pods/solo"),
        Duration::from_secs(60),
        "solo Running",
        |p| phase(p) == "Running",
    )
    .await;
    wait_for(
        &api,
        &format!("{NS}/pods/crash"),
        Duration::from_secs(60),
        "crash restarted",
        |p| container_status(p, "main")["restartCount"].as_u64() >= Some(1),
    )
    .await;
    wait_for(
        &api,
        &format!("{NS}/endpoints/web"),
        Duration::from_secs(60),
        "the Service's endpoints",
        |e| {
            e["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == REPLICAS)
        },
    )
    .await;
    // A few reads, to be counted.
    assert_eq!(api.get(&format!("{NS}/pods")).await.code, 200);
    assert_eq!(
        api.get("/apis/apps/v1/namespaces/default/deployments/web")
            .await
            .code,
        200
    );

    eprintln!("phase 5: the master's series");
    // The store snapshots every 50 applied entries: the node's heartbeats get there soon.
    let deadline = Instant::now() + Duration::from_secs(90);
    let master = loop {
        let scrape = scrape_master(&api).await;
        if scrape.sum("keelson_store_snapshots_total", &[("operation", "build")]) >= Some(1.0) {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "the store built no snapshot in 90 s:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for name in [
        "keelson_store_revision",
        "keelson_raft_term",
        "keelson_raft_leader_changes_seen_total",
        "keelson_store_commit_duration_seconds_count",
        "keelson_store_snapshot_size_bytes",
        "keelson_scheduler_binding_duration_seconds_count",
    ] {
        eprintln!("  {name} = {:?}", master.sum(name, &[]));
    }
    let pods = [("verb", "create"), ("resource", "pods"), ("code", "201")];
    master.at_least("apiserver_request_total", &pods, pods_created as f64);
    master.at_least(
        "apiserver_request_total",
        &[
            ("verb", "create"),
            ("resource", "deployments"),
            ("code", "201"),
        ],
        1.0,
    );
    master.at_least(
        "apiserver_request_total",
        &[("verb", "list"), ("resource", "pods")],
        1.0,
    );
    master.at_least(
        "apiserver_request_total",
        &[
            ("verb", "get"),
            ("resource", "deployments"),
            ("code", "200"),
        ],
        1.0,
    );
    master.at_least(
        "apiserver_request_duration_seconds_count",
        &[("verb", "create"), ("resource", "pods")],
        pods_created as f64,
    );
    assert!(
        master.get(
            "apiserver_request_duration_seconds_sum",
            &[("verb", "create"), ("resource", "pods")]
        ) > 0.0
    );
    // The node's pod watch at least, and the controllers' informers.
    master.at_least("apiserver_registered_watchers", &[], 1.0);
    master.at_least("keelson_store_revision", &[], 1.0);
    master.at_least("keelson_raft_term", &[], 1.0);
    master.at_least("keelson_raft_is_leader", &[], 1.0);
    master.at_least("keelson_raft_leader_changes_seen_total", &[], 1.0);
    master.at_least(
        "keelson_store_commit_duration_seconds_count",
        &[],
        pods_created as f64,
    );
    assert!(master.get("keelson_store_commit_duration_seconds_sum", &[]) > 0.0);
    master.get("keelson_store_write_failures_total", &[]);
    master.at_least("keelson_store_snapshot_size_bytes", &[], 1.0);
    // Every pod was bound by the scheduler.
    master.at_least(
        "keelson_scheduler_binding_duration_seconds_count",
        &[],
        pods_created as f64,
    );
    assert!(master.get("keelson_scheduler_queue_depth", &[]) >= 0.0);
    for controller in [
        "deployment-controller",
        "replicaset-controller",
        "endpoints",
    ] {
        assert!(master.get("keelson_workqueue_depth", &[("queue", controller)]) >= 0.0);
        assert!(
            master.get(
                "keelson_controller_reconcile_errors_total",
                &[("controller", controller)]
            ) >= 0.0
        );
    }

    eprintln!("phase 6: the node's series");
    let node_scrape = scrape_node(port).await;
    for name in [
        "kubelet_pod_start_duration_seconds_count",
        "kubelet_pod_start_duration_seconds_sum",
        "keelson_kubelet_container_restarts_total",
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
    ] {
        eprintln!("  {name} = {:?}", node_scrape.sum(name, &[]));
    }
    // The crash-looping pod never runs long enough to count as started.
    node_scrape.at_least(
        "kubelet_pod_start_duration_seconds_count",
        &[],
        (REPLICAS + 1) as f64,
    );
    assert!(node_scrape.get("kubelet_pod_start_duration_seconds_sum", &[]) > 0.0);
    node_scrape.at_least("keelson_kubelet_container_restarts_total", &[], 1.0);
    for (operation, min) in [
        ("create_sandbox", pods_created),
        ("start_container", pods_created + 1),
        ("list", 1),
    ] {
        let labels = [("operation_type", operation)];
        node_scrape.at_least(
            "kubelet_runtime_operations_duration_seconds_count",
            &labels,
            min as f64,
        );
        node_scrape.at_least("kubelet_runtime_operations_total", &labels, min as f64);
        node_scrape.get("kubelet_runtime_operations_errors_total", &labels);
    }
    node_scrape.at_least(
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        &[],
        1.0,
    );
    node_scrape.at_least(
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        &[],
        1.0,
    );
    node_scrape.get("keelson_proxy_sync_proxy_rules_failures_total", &[]);
    drop(node);
}

#[test]
fn the_text_format_parses() {
    let text = "# HELP a_total A.\n# TYPE a_total counter\na_total 3\n\
        b_bucket{le=\"0.5\",verb=\"create\"} 2\nc{msg=\"a \\\"q\\\", b\\\\\"} +Inf\n\
        d{x=\"1\"} 1.5e3\n";
    let samples = parse(text);
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        samples,
        vec![
            Sample {
                name: "a_total".into(),
                labels: BTreeMap::new(),
                value: 3.0
            },
            Sample {
                name: "b_bucket".into(),
                labels: labels(&[("le", "0.5"), ("verb", "create")]),
                value: 2.0
            },
            Sample {
                name: "c".into(),
                labels: labels(&[("msg", "a \"q\", b\\")]),
                value: f64::INFINITY
            },
            Sample {
                name: "d".into(),
                labels: labels(&[("x", "1")]),
                value: 1500.0
            },
        ]
    );
    let scrape = Scrape::new(text.to_string());
    assert_eq!(scrape.sum("b_bucket", &[("verb", "create")]), Some(2.0));
    assert_eq!(scrape.sum("b_bucket", &[("verb", "get")]), None);
    assert!(parse_line("novalue").is_none());
    assert!(parse_line("x{a=1} 2").is_none());
}
