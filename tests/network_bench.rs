//! Benchmark (not part of the test suite; run it with
//! `cargo nextest run --test network_bench --run-ignored only --no-capture`, as root): service
//! throughput and latency through the proxy's nftables rules next to direct pod-IP access in the
//! same run, and how long an endpoint change takes to reach every node's rules. Prints ratios;
//! asserts nothing about speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::hosts::MultiHost;
use common::real_node::wait_for;
use serde_json::json;

const NS: &str = "/api/v1/namespaces/default";
const IMAGE: &str = "keelson.local/busybox:stable";
const REQUESTS: usize = 2000;

fn server(name: &str, node: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": "web", "image": IMAGE,
                "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }],
        },
    })
}

fn get(addr: &std::net::SocketAddr) -> Duration {
    let start = Instant::now();
    let mut stream = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(3)).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert!(
        reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200"),
        "{addr}: {}",
        String::from_utf8_lossy(&reply)
    );
    start.elapsed()
}

/// Requests per second, p50 and p99 of `REQUESTS` sequential short requests.
fn measure(addr: &std::net::SocketAddr) -> (f64, Duration, Duration) {
    for _ in 0..50 {
        get(addr);
    }
    let start = Instant::now();
    let mut latencies: Vec<Duration> = (0..REQUESTS).map(|_| get(addr)).collect();
    let rate = REQUESTS as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    (
        rate,
        latencies[REQUESTS / 2],
        latencies[REQUESTS * 99 / 100],
    )
}

async fn pod_ip(api: &common::cluster::Api, name: &str) -> String {
    let pod = wait_for(
        api,
        &format!("{NS}/pods/{name}"),
        Duration::from_secs(90),
        "Ready",
        |p| {
            p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        },
    )
    .await;
    pod["status"]["podIP"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --run-ignored only"]
async fn service_proxy_throughput_and_endpoint_propagation() {
    let multi = MultiHost::start(1, 3, &[]).await;
    let api = multi.cluster.client(0);
    api.post(&format!("{NS}/pods"), &server("bench-1", "n1"))
        .await;
    let ip1 = pod_ip(&api, "bench-1").await;
    let reply = api
        .post(
            &format!("{NS}/services"),
            &json!({"metadata": {"name": "bench"}, "spec": {"type": "NodePort",
                "selector": {"app": "bench"}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        )
        .await;
    assert_eq!(reply.code, 201, "{}", reply.text);
    let node_port = reply.body["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    wait_for(
        &api,
        &format!("{NS}/endpoints/bench"),
        Duration::from_secs(30),
        "endpoint",
        |e| e.to_string().contains(&ip1),
    )
    .await;
    // The route controller's route to n1's pods, in the machine's namespace.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = std::process::Command::new("ip")
            .args(["route", "get", &ip1])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&multi.net.bridge) {
            break;
        }
        assert!(Instant::now() < deadline, "no route to {ip1}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The same server, from outside the cluster: directly by pod IP, and through node n1's
    // port (the proxy's DNAT to the same pod on the same node).
    let direct: std::net::SocketAddr = format!("{ip1}:8080").parse().unwrap();
    let proxied: std::net::SocketAddr = format!("{}:{node_port}", multi.node_hosts[1].ip)
        .parse()
        .unwrap();
    let (direct_rate, direct_p50, direct_p99) = measure(&direct);
    let (proxy_rate, proxy_p50, proxy_p99) = measure(&proxied);
    println!("service proxy, {REQUESTS} sequential HTTP/1.0 GETs to busybox httpd:");
    println!(
        "  direct pod IP      {direct_rate:8.0} req/s  p50 {direct_p50:?}  p99 {direct_p99:?}"
    );
    println!("  through the proxy  {proxy_rate:8.0} req/s  p50 {proxy_p50:?}  p99 {proxy_p99:?}");
    println!(
        "  throughput ratio proxy/direct: {:.3} (goal >= 0.9)",
        proxy_rate / direct_rate
    );

    // Endpoint propagation: from the Endpoints change seen through the API to the new address
    // in every node's ruleset.
    api.post(&format!("{NS}/pods"), &server("bench-2", "n2"))
        .await;
    let ip2 = pod_ip(&api, "bench-2").await;
    loop {
        let endpoints = api.get(&format!("{NS}/endpoints/bench")).await;
        if endpoints.text.contains(&format!("\"{ip2}\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seen = Instant::now();
    let mut pending: Vec<&common::hosts::Host> = multi.node_hosts.iter().collect();
    let mut times = Vec::new();
    while !pending.is_empty() && seen.elapsed() < Duration::from_secs(30) {
        pending.retain(|host| {
            let out = host
                .command("nft")
                .args(["list", "table", "ip", "keelson-proxy"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(&ip2) {
                times.push((host.name.clone(), seen.elapsed()));
                false
            } else {
                true
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("endpoint change → node rules (after the API shows it):");
    for (node, time) in &times {
        println!("  {node}: {time:?}");
    }
    assert!(pending.is_empty(), "some nodes never got the new endpoint");
}
