//! Services on real masters: ClusterIPs and NodePorts allocated without duplicates under
//! concurrent creates on three masters, range exhaustion, requested values that are taken
//! or out of range, headless and ExternalName Services, immutability and type changes, and
//! values freed by deletes (also through namespace deletion) for reuse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::cluster::{Api, Cluster, Reply};
use serde_json::{json, Value};

const SVC: &str = "/api/v1/namespaces/default/services";

fn service(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

async fn create(api: &Api, name: &str, spec: Value) -> Reply {
    api.post(SVC, &service(name, spec)).await
}

fn cluster_ip(reply: &Reply) -> Ipv4Addr {
    reply.body["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_else(|| panic!("no clusterIP: {}", reply.text))
        .parse()
        .unwrap()
}

fn node_port(reply: &Reply) -> u16 {
    reply.body["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap_or_else(|| panic!("no nodePort: {}", reply.text)) as u16
}

fn assert_status(reply: &Reply, code: u16, message: &str) {
    assert_eq!(reply.code, code, "{}", reply.text);
    assert_eq!(reply.body["message"], message, "{}", reply.text);
}

#[tokio::test]
async fn concurrent_creates_on_three_masters_never_share_an_ip_or_port() {
    // A /26 has 62 host addresses; the first is kept for default/kubernetes: 61 to allocate.
    let cluster = Cluster::start_with(
        3,
        &[
            "--service-cidr",
            "10.96.0.0/26",
            "--service-node-port-range",
            "30000-30029",
            "--controllers=namespace-controller",
        ],
    )
    .await;
    let apis: Vec<Api> = (0..3).map(|i| cluster.client(i)).collect();

    eprintln!("phase 1: 30 NodePort Services at once, spread over the masters");
    let creates = (0..30).map(|i| {
        let api = apis[i % 3].clone();
        async move { create(&api, &format!("np-{i}"), json!({"type": "NodePort"})).await }
    });
    let replies = futures::future::join_all(creates).await;
    let mut ips = BTreeSet::new();
    let mut ports = BTreeSet::new();
    for reply in &replies {
        assert_eq!(reply.code, 201, "{}", reply.text);
        let ip = cluster_ip(reply);
        assert!(ips.insert(ip), "{ip} handed out twice");
        assert_eq!(reply.body["spec"]["clusterIPs"], json!([ip.to_string()]));
        assert_eq!(reply.body["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(reply.body["spec"]["ipFamilyPolicy"], "SingleStack");
        let port = node_port(reply);
        assert!((30000..=30029).contains(&port), "{port}");
        assert!(ports.insert(port), "{port} handed out twice");
    }

    eprintln!("phase 2: the node port range is full");
    let full = create(&apis[1], "np-full", json!({"type": "NodePort"})).await;
    assert_status(
        &full,
        500,
        "Internal error occurred: failed to allocate a nodePort: range is full",
    );

    eprintln!("phase 3: the rest of the IP range at once, then it is full");
    let creates = (0..31).map(|i| {
        let api = apis[(i + 1) % 3].clone();
        async move { create(&api, &format!("ip-{i}"), json!({})).await }
    });
    for reply in futures::future::join_all(creates).await {
        assert_eq!(reply.code, 201, "{}", reply.text);
        let ip = cluster_ip(&reply);
        assert!(ips.insert(ip), "{ip} handed out twice");
    }
    assert_eq!(ips.len(), 61);
    let first = Ipv4Addr::new(10, 96, 0, 1);
    assert!(
        !ips.contains(&first),
        "the first IP is kept for default/kubernetes"
    );
    let full = create(&apis[2], "ip-full", json!({})).await;
    assert_status(
        &full,
        500,
        "Internal error occurred: failed to allocate a serviceIP: range is full",
    );

    eprintln!("phase 4: allocation keys are in no list");
    for path in ["/api/v1/services", SVC] {
        let list = apis[0].get(path).await;
        assert_eq!(list.code, 200, "{}", list.text);
        assert_eq!(list.body["items"].as_array().unwrap().len(), 61, "{path}");
    }

    eprintln!("phase 5: a deleted Service's IP and port are free again, on another master");
    let taken = apis[0].get(&format!("{SVC}/np-7")).await;
    let (ip, port) = (cluster_ip(&taken), node_port(&taken));
    assert_eq!(apis[0].delete(&format!("{SVC}/np-7")).await.code, 200);
    let again = create(
        &apis[2],
        "reuse",
        json!({"type": "NodePort", "clusterIP": ip.to_string(),
               "ports": [{"port": 80, "nodePort": port}]}),
    )
    .await;
    assert_eq!(again.code, 201, "{}", again.text);
    assert_eq!((cluster_ip(&again), node_port(&again)), (ip, port));
}

#[tokio::test]
async fn service_allocation_follows_kubernetes_semantics() {
    let cluster = Cluster::start_with(
        1,
        &[
            "--service-cidr",
            "10.96.0.0/24",
            "--controllers=namespace-controller",
        ],
    )
    .await;
    let api = cluster.client(0);

    eprintln!("phase 1: headless and ExternalName get no IP");
    let headless = create(&api, "headless", json!({"clusterIP": "None"})).await;
    assert_eq!(headless.code, 201, "{}", headless.text);
    assert_eq!(headless.body["spec"]["clusterIP"], "None");
    assert_eq!(headless.body["spec"]["clusterIPs"], json!(["None"]));
    let external = create(
        &api,
        "external",
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
    )
    .await;
    assert_eq!(external.code, 201, "{}", external.text);
    assert!(
        external.body["spec"].get("clusterIP").is_none(),
        "{}",
        external.text
    );

    eprintln!("phase 2: a requested IP or port must be in range and free");
    let a = create(
        &api,
        "a",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await;
    assert_eq!(a.code, 201, "{}", a.text);
    assert_eq!(a.body["spec"]["clusterIPs"], json!(["10.96.0.10"]));
    let taken_ip = create(&api, "b", json!({"clusterIP": "10.96.0.10"})).await;
    assert_status(
        &taken_ip,
        422,
        "Service \"b\" is invalid: spec.clusterIPs: Invalid value: \"10.96.0.10\": provided IP is already allocated",
    );
    assert_eq!(taken_ip.body["reason"], "Invalid");
    let outside = create(&api, "b", json!({"clusterIP": "10.97.0.1"})).await;
    assert_status(
        &outside,
        422,
        "Service \"b\" is invalid: spec.clusterIPs: Invalid value: \"10.97.0.1\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/24",
    );
    let taken_port = create(
        &api,
        "b",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await;
    assert_status(
        &taken_port,
        422,
        "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated",
    );
    let port_outside = create(
        &api,
        "b",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 40000}]}),
    )
    .await;
    assert_status(
        &port_outside,
        422,
        "Service \"b\" is invalid: spec.ports[0].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-32767",
    );
    assert_eq!(api.get(&format!("{SVC}/b")).await.code, 404);

    eprintln!("phase 3: the clusterIP is immutable; a PUT that leaves it out keeps it");
    let changed = api
        .patch(
            &format!("{SVC}/a"),
            "application/merge-patch+json",
            r#"{"spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11"]}}"#,
        )
        .await;
    assert_eq!(changed.code, 422, "{}", changed.text);
    assert!(
        changed.body["message"]
            .as_str()
            .unwrap()
            .contains("field is immutable"),
        "{}",
        changed.text
    );
    let mut replace = service("a", json!({"type": "NodePort", "ports": [{"port": 80}]}));
    replace["metadata"]["labels"] = json!({"replaced": "yes"});
    let replaced = api.put(&format!("{SVC}/a"), &replace).await;
    assert_eq!(replaced.code, 200, "{}", replaced.text);
    assert_eq!(cluster_ip(&replaced), Ipv4Addr::new(10, 96, 0, 10));
    assert_eq!(node_port(&replaced), 30080);

    eprintln!("phase 4: NodePort to ClusterIP frees the port; back to NodePort allocates one");
    let to_cluster_ip = api
        .patch(
            &format!("{SVC}/a"),
            "application/merge-patch+json",
            r#"{"spec": {"type": "ClusterIP"}}"#,
        )
        .await;
    assert_eq!(to_cluster_ip.code, 200, "{}", to_cluster_ip.text);
    assert!(to_cluster_ip.body["spec"]["ports"][0]
        .get("nodePort")
        .is_none());
    let c = create(
        &api,
        "c",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
    )
    .await;
    assert_eq!(c.code, 201, "{}", c.text);
    let to_node_port = api
        .patch(
            &format!("{SVC}/a"),
            "application/merge-patch+json",
            r#"{"spec": {"type": "NodePort"}}"#,
        )
        .await;
    assert_eq!(to_node_port.code, 200, "{}", to_node_port.text);
    let port = node_port(&to_node_port);
    assert!((30000..=32767).contains(&port) && port != 30080, "{port}");

    eprintln!("phase 5: to ExternalName frees the IP");
    let to_external = api
        .patch(
            &format!("{SVC}/a"),
            "application/merge-patch+json",
            r#"{"spec": {"type": "ExternalName", "externalName": "a.example.com"}}"#,
        )
        .await;
    assert_eq!(to_external.code, 200, "{}", to_external.text);
    assert!(
        to_external.body["spec"].get("clusterIP").is_none(),
        "{}",
        to_external.text
    );
    let d = create(&api, "d", json!({"clusterIP": "10.96.0.10"})).await;
    assert_eq!(d.code, 201, "{}", d.text);
    let e = create(
        &api,
        "e",
        json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}),
    )
    .await;
    assert_eq!(
        e.code, 201,
        "the port of a Service now ExternalName is free: {}",
        e.text
    );

    eprintln!("phase 6: deleting a namespace frees its Services' IPs");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}});
    assert_eq!(api.post("/api/v1/namespaces", &ns).await.code, 201);
    let doomed = api
        .post(
            "/api/v1/namespaces/doomed/services",
            &service("x", json!({"clusterIP": "10.96.0.20"})),
        )
        .await;
    assert_eq!(doomed.code, 201, "{}", doomed.text);
    assert_eq!(api.delete("/api/v1/namespaces/doomed").await.code, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    while api.get("/api/v1/namespaces/doomed").await.code != 404 {
        assert!(
            Instant::now() < deadline,
            "namespace doomed was not deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let f = create(&api, "f", json!({"clusterIP": "10.96.0.20"})).await;
    assert_eq!(f.code, 201, "{}", f.text);
}
