//! The proxy's nftables rules in real network namespaces (as root): a "node" namespace with a
//! bridge, two pods serving their names with busybox httpd and a client. Rules are generated
//! from Service and Endpoints JSON built here and applied with `nft` inside the node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keelson_node::proxy::nft::Nft;
use keelson_node::proxy::rules::{self, TABLE};
use keelson_node::proxy::{Proxy, ProxyConfig, ProxyMode, ServiceSnapshot};
use keelson_node::{ApiClient, Kubeconfig};
use serde_json::{json, Value};

const CLUSTER_IP: &str = "10.96.7.10";
const NODE_IP: &str = "10.250.7.1";
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const POD_A: &str = "10.244.7.2";
const POD_B: &str = "10.244.7.3";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?} (install iproute2, nftables and busybox; run as root): {e}")
        });
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn require_root_and_tools() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates network namespaces and nftables rules)"
    );
    for tool in ["ip", "nft", "busybox"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "this test needs `{tool}` installed (iproute2, nftables, busybox)"
        );
    }
}

/// The namespaces and servers of one test; everything is removed on drop, also on failure.
struct Topology {
    node: String,
    client: String,
    namespaces: Vec<String>,
    servers: Vec<Child>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Topology {
    fn new(test: &str) -> Topology {
        require_root_and_tools();
        let prefix = format!("kpx{}-{test}", std::process::id());
        let node = format!("{prefix}-node");
        let client = format!("{prefix}-cl");
        let pods = [
            (format!("{prefix}-pa"), POD_A, "pod-a"),
            (format!("{prefix}-pb"), POD_B, "pod-b"),
        ];
        let mut topology = Topology {
            node: node.clone(),
            client: client.clone(),
            namespaces: Vec::new(),
            servers: Vec::new(),
            _dirs: Vec::new(),
        };
        for ns in [&node, &client, &pods[0].0, &pods[1].0] {
            run(&["ip", "netns", "add", ns]);
            topology.namespaces.push(ns.clone());
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The node: a bridge for the pods, a link to the client, a route for the service range (so
        // that service addresses route and rejects happen in the forward hook) and forwarding.
        run(&["ip", "-n", &node, "link", "add", "br0", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            "10.244.7.1/24",
            "dev",
            "br0",
        ]);
        run(&["ip", "-n", &node, "link", "set", "br0", "up"]);
        run(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            "10.96.0.0/12",
            "dev",
            "br0",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);
        for (i, (ns, ip, name)) in pods.iter().enumerate() {
            let host_side = format!("veth{i}");
            run(&[
                "ip", "-n", &node, "link", "add", &host_side, "type", "veth", "peer", "name",
                "eth0", "netns", ns,
            ]);
            run(&[
                "ip", "-n", &node, "link", "set", &host_side, "master", "br0", "up",
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                "10.244.7.1",
            ]);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("index.html"), name).unwrap();
            let server = Command::new("ip")
                .args([
                    "netns", "exec", ns, "busybox", "httpd", "-f", "-p", "8080", "-h",
                ])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            topology.servers.push(server);
            topology._dirs.push(dir);
        }
        run(&[
            "ip", "-n", &node, "link", "add", "vcl", "type", "veth", "peer", "name", "eth0",
            "netns", &client,
        ]);
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            "vcl",
        ]);
        run(&["ip", "-n", &node, "link", "set", "vcl", "up"]);
        run(&[
            "ip",
            "-n",
            &client,
            "addr",
            "add",
            "10.250.7.2/24",
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &client, "link", "set", "eth0", "up"]);
        run(&[
            "ip", "-n", &client, "route", "add", "default", "via", NODE_IP,
        ]);
        // Wait for both servers to answer directly.
        for ip in [POD_A, POD_B] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while topology.get(&format!("http://{ip}:8080/")).is_err() {
                assert!(Instant::now() < deadline, "the pod at {ip} does not serve");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        topology
    }

    /// One HTTP GET from the client (busybox nc: busybox wget crashes in some namespaces):
    /// the body, or nc's error.
    fn get(&self, url: &str) -> Result<String, String> {
        let address = url.trim_start_matches("http://").trim_end_matches('/');
        let (host, port) = address.split_once(':').unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client, "sh", "-c"])
            .arg(format!(
                "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {port}"
            ))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        match stdout.split_once("\n\n") {
            Some((head, body)) if out.status.success() && head.contains(" 200 ") => {
                Ok(body.trim().to_string())
            }
            _ => Err(format!(
                "{}{stdout}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// The distinct answers of `n` requests (an error fails the test).
    fn answers(&self, url: &str, n: usize) -> BTreeSet<String> {
        (0..n)
            .map(|_| self.get(url).unwrap_or_else(|e| panic!("GET {url}: {e}")))
            .collect()
    }
}

fn service(spec: Value) -> Value {
    let mut full = json!({
        "type": "NodePort",
        "clusterIP": CLUSTER_IP,
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]
    });
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    json!({"metadata": {"namespace": "default", "name": "web"}, "spec": full})
}

fn endpoints(ready: &[&str], not_ready: &[&str]) -> Value {
    let addresses: Vec<Value> = ready.iter().map(|ip| json!({"ip": ip})).collect();
    let not_ready: Vec<Value> = not_ready.iter().map(|ip| json!({"ip": ip})).collect();
    json!({"metadata": {"namespace": "default", "name": "web"},
           "subsets": [{"addresses": addresses, "notReadyAddresses": not_ready,
                        "ports": [{"name": "http", "port": 8080}]}]})
}

async fn apply(nft: &mut Nft, services: Vec<Value>, endpoints: Vec<Value>) {
    let snapshot = Arc::new(ServiceSnapshot {
        services,
        endpoints,
        synced: true,
    });
    let text = rules::ruleset(&snapshot, &[NODE_IP.parse().unwrap()], CLUSTER_CIDR);
    nft.apply(&text)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn services_reach_ready_endpoints_through_nftables() {
    let topology = Topology::new("svc");
    let mut nft = Nft::new(Some(topology.node.clone()));
    let cluster_url = format!("http://{CLUSTER_IP}:80/");
    let node_port_url = format!("http://{NODE_IP}:30080/");

    // Phase 1: the ClusterIP spreads over both ready endpoints; a not-ready one gets nothing.
    apply(
        &mut nft,
        vec![service(json!({}))],
        vec![endpoints(&[POD_A, POD_B], &["10.244.7.9"])],
    )
    .await;
    let seen = topology.answers(&cluster_url, 30);
    assert_eq!(
        seen,
        BTreeSet::from(["pod-a".to_string(), "pod-b".to_string()])
    );

    // Phase 2: the node port on the node's address reaches them too.
    let seen = topology.answers(&node_port_url, 30);
    assert_eq!(
        seen,
        BTreeSet::from(["pod-a".to_string(), "pod-b".to_string()])
    );

    // Phase 3: with ClientIP affinity one client sticks to one endpoint.
    apply(
        &mut nft,
        vec![service(json!({"sessionAffinity": "ClientIP"}))],
        vec![endpoints(&[POD_A, POD_B], &[])],
    )
    .await;
    assert_eq!(topology.answers(&cluster_url, 20).len(), 1);
    assert_eq!(topology.answers(&node_port_url, 20).len(), 1);

    // Phase 4: a removed endpoint gets no new connections.
    apply(
        &mut nft,
        vec![service(json!({}))],
        vec![endpoints(&[POD_A], &[POD_B])],
    )
    .await;
    assert_eq!(
        topology.answers(&cluster_url, 20),
        BTreeSet::from(["pod-a".to_string()])
    );
    assert_eq!(
        topology.answers(&node_port_url, 10),
        BTreeSet::from(["pod-a".to_string()])
    );

    // Phase 5: without ready endpoints connections are refused at once.
    apply(
        &mut nft,
        vec![service(json!({}))],
        vec![endpoints(&[], &[POD_A, POD_B])],
    )
    .await;
    for url in [&cluster_url, &node_port_url] {
        let started = Instant::now();
        let error = topology
            .get(url)
            .expect_err("no endpoints: the request must fail");
        assert!(error.contains("refused"), "{url}: {error}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{url}: took {:?}",
            started.elapsed()
        );
    }

    // Phase 6: a proxy restart (a fresh Nft) replaces the table in one transaction.
    let mut restarted = Nft::new(Some(topology.node.clone()));
    apply(
        &mut restarted,
        vec![service(json!({}))],
        vec![endpoints(&[POD_B], &[])],
    )
    .await;
    assert_eq!(
        topology.answers(&cluster_url, 10),
        BTreeSet::from(["pod-b".to_string()])
    );
    let listed = restarted.list_table(TABLE).await.unwrap();
    assert_eq!(
        listed.matches("table ip keelson-proxy").count(),
        1,
        "{listed}"
    );

    // Phase 7: deleting the Service removes its rules.
    apply(&mut restarted, vec![], vec![endpoints(&[POD_B], &[])]).await;
    let listed = restarted.list_table(TABLE).await.unwrap();
    assert!(
        !listed.contains(CLUSTER_IP) && !listed.contains("30080"),
        "{listed}"
    );
    assert!(topology.get(&cluster_url).is_err());
    restarted.apply(&rules::delete_ruleset()).await.unwrap();
    assert!(restarted.list_table(TABLE).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn applying_the_same_ruleset_twice_runs_nft_once() {
    let topology = Topology::new("same");
    let mut nft = Nft::new(Some(topology.node.clone()));
    let snapshot = ServiceSnapshot {
        services: vec![service(json!({}))],
        endpoints: vec![endpoints(&[POD_A], &[])],
        synced: true,
    };
    let text = rules::ruleset(&snapshot, &[], CLUSTER_CIDR);
    assert!(nft.apply(&text).await.unwrap());
    assert!(!nft.apply(&text).await.unwrap());
    let error = nft
        .apply("add rule ip nosuchtable nosuchchain accept\n")
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("No such file or directory"),
        "{error}"
    );
    assert_eq!(
        topology.answers(&format!("http://{CLUSTER_IP}:80/"), 3),
        BTreeSet::from(["pod-a".to_string()])
    );
}

/// Polls `get` until `done` holds for its answer; how long that took.
async fn until(
    topology: &Topology,
    url: &str,
    done: impl Fn(&Result<String, String>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let answer = topology.get(url);
        if done(&answer) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{url}: still {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_follows_services_and_endpoints_from_the_api() {
    let topology = Topology::new("api");
    let cluster = common::cluster::Cluster::start(1).await;
    let api = cluster.client(0);
    let kubeconfig = Kubeconfig::load(&cluster.masters[0].kubeconfig()).unwrap();
    let client = ApiClient::new(&kubeconfig, &[]).unwrap();
    let proxy = Proxy::new(
        client,
        ProxyConfig {
            node_ips: vec![NODE_IP.parse().unwrap()],
            cluster_cidr: CLUSTER_CIDR.to_string(),
            mode: ProxyMode::Nftables,
            netns: Some(topology.node.clone()),
        },
    );
    let mut snapshots = proxy.subscribe();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(proxy.run(stopped));

    // Phase 1: a Service without selector and its hand-made Endpoints.
    let reply = api
        .post(
            "/api/v1/namespaces/default/services",
            &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"clusterIP": CLUSTER_IP,
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let cluster_ip = reply.body["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{cluster_ip}:80/");
    let mut body = endpoints(&[POD_A], &[]);
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("Endpoints");
    let reply = api
        .post("/api/v1/namespaces/default/endpoints", &body)
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let took = until(&topology, &url, |a| a.as_deref() == Ok("pod-a")).await;
    eprintln!("the endpoint served {took:?} after it was created");
    assert!(took < Duration::from_secs(3), "{took:?}");
    tokio::time::timeout(
        Duration::from_secs(5),
        snapshots.wait_for(|s| s.synced && !s.services.is_empty()),
    )
    .await
    .unwrap()
    .unwrap();

    // Phase 2: moving the endpoint shows within about a second.
    let reply = api
        .patch(
            "/api/v1/namespaces/default/endpoints/web",
            "application/merge-patch+json",
            &json!({"subsets": [{"addresses": [{"ip": POD_B}], "ports": [{"name": "http", "port": 8080}]}]}).to_string(),
        )
        .await;
    assert_eq!(reply.code, 200, "{}", reply.text);
    let took = until(&topology, &url, |a| a.as_deref() == Ok("pod-b")).await;
    eprintln!("the moved endpoint served {took:?} after the change");
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Phase 3: deleting the Service removes its rules.
    let reply = api.delete("/api/v1/namespaces/default/services/web").await;
    assert!(reply.code == 200 || reply.code == 202, "{}", reply.text);
    let nft = Nft::new(Some(topology.node.clone()));
    let started = Instant::now();
    while nft.list_table(TABLE).await.unwrap().contains(&cluster_ip) {
        assert!(started.elapsed() < Duration::from_secs(5), "the rules stay");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Phase 4: the proxy stops promptly and leaves its table behind.
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(nft.list_table(TABLE).await.is_ok());
}
