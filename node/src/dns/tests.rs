//! End-to-end tests of the cluster DNS server: real UDP and TCP sockets on loopback, queried with
//! hickory's client; forwarding goes to a second ClusterDns (a real DNS server) as upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_client::client::{Client, ClientHandle};
use hickory_client::proto::op::ResponseCode;
use hickory_client::proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::udp::UdpClientStream;
use hickory_client::proto::xfer::DnsResponse;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ClusterDns, DnsConfig, DnsError};

/// A running server; stops it (and waits) on [`Running::stop`].
struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), DnsError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.send_replace(true);
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns promptly once stopped")
            .expect("serve task did not panic");
        result.expect("serve ends without error");
    }
}

/// A loopback port free for both UDP and TCP right now.
fn free_port() -> SocketAddr {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no loopback port free for both udp and tcp");
}

async fn start(dns: Arc<ClusterDns>) -> Running {
    let addr = free_port();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move { dns.serve(addr, stop_rx).await });
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "dns server did not start on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Running { addr, stop, task }
}

fn dns(domain: &str, upstreams: Vec<SocketAddr>) -> Arc<ClusterDns> {
    Arc::new(
        ClusterDns::new(DnsConfig {
            cluster_domain: domain.to_owned(),
            upstreams,
            ttl_secs: 5,
        })
        .unwrap(),
    )
}

async fn udp_client(addr: SocketAddr) -> Client {
    let conn = UdpClientStream::builder(addr, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(5)))
        .build();
    let (client, background) = Client::connect(conn).await.unwrap();
    tokio::spawn(background);
    client
}

async fn tcp_client(addr: SocketAddr) -> Client {
    let (stream, sender) = TcpClientStream::new(addr, None, None, TokioRuntimeProvider::new());
    let (client, background) = Client::new(stream, sender, None).await.unwrap();
    tokio::spawn(background);
    client
}

async fn ask(client: &mut Client, name: &str, rtype: RecordType) -> DnsResponse {
    client
        .query(Name::from_ascii(name).unwrap(), DNSClass::IN, rtype)
        .await
        .unwrap_or_else(|e| panic!("query {name} {rtype}: {e}"))
}

/// The answer section as sorted "TYPE rdata" strings.
fn answer_texts(response: &DnsResponse) -> Vec<String> {
    let mut texts: Vec<String> = response
        .answers()
        .iter()
        .map(|r| format!("{} {}", r.record_type(), r.data()))
        .collect();
    texts.sort();
    texts
}

fn services() -> Vec<Value> {
    vec![
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}}),
        json!({"metadata": {"name": "db", "namespace": "prod"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    ]
}

fn db_endpoints(ips: &[&str]) -> Vec<Value> {
    let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
    vec![
        json!({"metadata": {"name": "db", "namespace": "prod"}, "subsets": [{
        "addresses": addresses, "notReadyAddresses": [{"ip": "10.0.0.99"}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
    ]
}

#[tokio::test]
async fn dns_serves_cluster_records_over_udp_and_tcp() {
    let server = dns("cluster.local", vec![]);
    server.update(&services(), &db_endpoints(&["10.0.0.1", "10.0.0.2"]));
    let running = start(server.clone()).await;
    let mut udp = udp_client(running.addr).await;
    let mut tcp = tcp_client(running.addr).await;

    tracing::info!("phase: ClusterIP A over udp and tcp, any case");
    for client in [&mut udp, &mut tcp] {
        let response = ask(client, "Web.Default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(response.authoritative());
        assert_eq!(answer_texts(&response), ["A 10.96.0.10"]);
        assert_eq!(response.answers()[0].ttl(), 5);
    }

    tracing::info!("phase: SRV for a named port");
    let response = ask(
        &mut udp,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        answer_texts(&response),
        ["SRV 0 100 80 web.default.svc.cluster.local."]
    );
    let response = ask(
        &mut tcp,
        "_pg._tcp.db.prod.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    assert_eq!(
        answer_texts(&response),
        [
            "SRV 0 100 5432 10-0-0-1.db.prod.svc.cluster.local.",
            "SRV 0 100 5432 10-0-0-2.db.prod.svc.cluster.local."
        ]
    );

    tracing::info!("phase: headless A set follows updates");
    let response = ask(&mut udp, "db.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer_texts(&response), ["A 10.0.0.1", "A 10.0.0.2"]);
    server.update(&services(), &db_endpoints(&["10.0.0.3"]));
    let response = ask(&mut udp, "db.prod.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer_texts(&response), ["A 10.0.0.3"]);
    let response = ask(
        &mut tcp,
        "10-0-0-3.db.prod.svc.cluster.local.",
        RecordType::A,
    )
    .await;
    assert_eq!(answer_texts(&response), ["A 10.0.0.3"]);

    tracing::info!("phase: NXDOMAIN with SOA; NODATA for another type");
    let response = ask(&mut udp, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(response.response_code(), ResponseCode::NXDomain);
    assert!(response.answers().is_empty());
    assert!(matches!(
        response.name_servers().first().map(|r| r.data()),
        Some(RData::SOA(_))
    ));
    let response = ask(&mut tcp, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(response.response_code(), ResponseCode::NoError);
    assert!(response.answers().is_empty());

    tracing::info!("phase: PTR for a ClusterIP");
    let response = ask(&mut udp, "10.0.96.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(
        answer_texts(&response),
        ["PTR web.default.svc.cluster.local."]
    );

    tracing::info!("phase: names outside the domain with no upstreams are SERVFAIL");
    let response = ask(&mut udp, "example.com.", RecordType::A).await;
    assert_eq!(response.response_code(), ResponseCode::ServFail);

    running.stop().await;
}

#[tokio::test]
async fn dns_forwards_other_names_to_upstreams() {
    tracing::info!("phase: an upstream that is itself a ClusterDns for another domain");
    let upstream = dns("upstream.test", vec![]);
    upstream.update(
        &[json!({"metadata": {"name": "api", "namespace": "ext"},
                 "spec": {"clusterIP": "10.200.0.1"}})],
        &[],
    );
    let upstream_running = start(upstream).await;
    // A UDP socket that never answers: a dead first upstream, tried before the live one.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    let server = dns("cluster.local", vec![dead_addr, upstream_running.addr]);
    server.update(&services(), &[]);
    let running = start(server).await;
    let mut udp = udp_client(running.addr).await;
    let mut tcp = tcp_client(running.addr).await;

    tracing::info!("phase: forwarded answers over udp and tcp; local names still local");
    for client in [&mut udp, &mut tcp] {
        let response = ask(client, "API.ext.svc.upstream.test.", RecordType::A).await;
        assert_eq!(response.response_code(), ResponseCode::NoError);
        assert!(!response.authoritative());
        assert_eq!(answer_texts(&response), ["A 10.200.0.1"]);
        let response = ask(client, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(answer_texts(&response), ["A 10.96.0.10"]);
    }

    tracing::info!("phase: upstream NXDOMAIN is passed on with its SOA");
    let response = ask(&mut udp, "nope.upstream.test.", RecordType::A).await;
    assert_eq!(response.response_code(), ResponseCode::NXDomain);
    assert!(matches!(
        response.name_servers().first().map(|r| r.data()),
        Some(RData::SOA(_))
    ));

    tracing::info!("phase: only dead upstreams → SERVFAIL within the forward timeout");
    let lonely = dns("cluster.local", vec![dead_addr]);
    let lonely_running = start(lonely).await;
    let mut client = udp_client(lonely_running.addr).await;
    let asked = Instant::now();
    let response = ask(&mut client, "anything.example.", RecordType::A).await;
    assert_eq!(response.response_code(), ResponseCode::ServFail);
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "took {:?}",
        asked.elapsed()
    );

    lonely_running.stop().await;
    running.stop().await;
    upstream_running.stop().await;
    drop(dead);
}

#[tokio::test]
async fn dns_survives_garbage_packets() {
    use tokio::io::AsyncWriteExt;
    let server = dns("cluster.local", vec![]);
    server.update(&services(), &[]);
    let running = start(server).await;

    tracing::info!("phase: garbage over udp and tcp");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x00",
        b"hello, this is not dns",
        &[0xff; 12],
        &[
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0c,
        ],
    ];
    for packet in garbage {
        socket.send_to(packet, running.addr).await.unwrap();
    }
    let mut stream = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let _ = stream
        .write_all(&[0x00, 0x05, 1, 2, 3, 4, 5, 0xff, 0xff, 9])
        .await;
    drop(stream);
    // Also a query with two questions (FORMERR) and one of class CH (NOTIMP).
    let mut query = hickory_client::proto::op::Message::new();
    query
        .set_id(7)
        .add_query(hickory_client::proto::op::Query::query(
            Name::from_ascii("a.").unwrap(),
            RecordType::A,
        ))
        .add_query(hickory_client::proto::op::Query::query(
            Name::from_ascii("b.").unwrap(),
            RecordType::A,
        ));
    socket
        .send_to(&query.to_vec().unwrap(), running.addr)
        .await
        .unwrap();
    // Garbage with a readable header gets its own FORMERR replies first: skip to ours.
    let mut buf = vec![0u8; 4096];
    let reply = loop {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
            .await
            .expect("a reply to the two-question query")
            .unwrap();
        if let Ok(reply) = hickory_client::proto::op::Message::from_vec(&buf[..len]) {
            if reply.id() == 7 {
                break reply;
            }
        }
    };
    assert_eq!(reply.id(), 7);
    assert_eq!(reply.response_code(), ResponseCode::FormErr);

    tracing::info!("phase: the server still answers");
    let mut udp = udp_client(running.addr).await;
    let response = ask(&mut udp, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(answer_texts(&response), ["A 10.96.0.10"]);
    running.stop().await;
}

#[test]
fn dns_rejects_bad_cluster_domains() {
    for domain in ["", ".", "a..b"] {
        let result = ClusterDns::new(DnsConfig {
            cluster_domain: domain.to_owned(),
            upstreams: vec![],
            ttl_secs: 5,
        });
        assert!(matches!(result, Err(DnsError::Domain { .. })), "{domain:?}");
    }
}
