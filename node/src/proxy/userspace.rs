//! The fallback proxy without root or nft: listens on 0.0.0.0:nodePort (TCP and UDP) for
//! NodePort and LoadBalancer services and forwards to ready endpoints, picked at random
//! (ClientIP affinity honoured). ClusterIPs are not reachable in this mode.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::cache::ServiceSnapshot;
use super::services::{service_ports, Protocol};

/// TCP connections forwarded at once, per listener.
const TCP_CONNECTIONS_MAX: usize = 1024;
/// UDP flows (client address → upstream socket) per listener.
const UDP_FLOWS_MAX: usize = 1024;
/// A UDP flow with no traffic for this long is dropped.
const UDP_FLOW_IDLE: Duration = Duration::from_secs(30);
/// Clients remembered for ClientIP affinity, per listener.
const AFFINITY_ENTRIES_MAX: usize = 4096;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const UDP_DATAGRAM_BYTES_MAX: usize = 65_535;
/// The pause after a failed accept or receive, so that a persistent error does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    #[error("the snapshot channel closed")]
    Closed,
}

/// Where one listener forwards to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backends {
    pub endpoints: Vec<SocketAddr>,
    pub affinity_timeout: Option<Duration>,
}

/// Picks backends: random, or the client's previous one while its affinity lasts.
#[derive(Debug, Default)]
pub struct Picker {
    affinity: HashMap<IpAddr, (SocketAddr, Instant)>,
}

impl Picker {
    /// The endpoint for a new connection from `client` at `now` (`None` without endpoints).
    pub fn pick(
        &mut self,
        backends: &Backends,
        client: IpAddr,
        now: Instant,
    ) -> Option<SocketAddr> {
        if backends.endpoints.is_empty() {
            return None;
        }
        if let Some(timeout) = backends.affinity_timeout {
            if let Some((endpoint, last)) = self.affinity.get(&client) {
                if now.duration_since(*last) < timeout && backends.endpoints.contains(endpoint) {
                    let endpoint = *endpoint;
                    self.affinity.insert(client, (endpoint, now));
                    return Some(endpoint);
                }
            }
        }
        let index = rand::rng().random_range(0..backends.endpoints.len());
        let endpoint = backends.endpoints[index];
        if let Some(timeout) = backends.affinity_timeout {
            if self.affinity.len() >= AFFINITY_ENTRIES_MAX {
                self.affinity
                    .retain(|_, (_, last)| now.duration_since(*last) < timeout);
            }
            if self.affinity.len() < AFFINITY_ENTRIES_MAX {
                self.affinity.insert(client, (endpoint, now));
            }
        }
        Some(endpoint)
    }
}

/// The listeners a snapshot asks for: (protocol, node port) → backends.
pub fn listeners_of(snapshot: &ServiceSnapshot) -> BTreeMap<(Protocol, u16), Backends> {
    let mut wanted = BTreeMap::new();
    for port in service_ports(snapshot) {
        let Some(node_port) = port.node_port else {
            continue;
        };
        if port.protocol == Protocol::Sctp {
            continue;
        }
        wanted
            .entry((port.protocol, node_port))
            .or_insert(Backends {
                endpoints: port
                    .endpoints
                    .iter()
                    .map(|(ip, p)| SocketAddr::new(IpAddr::V4(*ip), *p))
                    .collect(),
                affinity_timeout: port
                    .affinity_timeout_seconds
                    .map(|s| Duration::from_secs(u64::from(s))),
            });
    }
    wanted
}

struct Listener {
    backends: watch::Sender<Backends>,
    task: JoinHandle<()>,
}

/// Keeps one listener per wanted node port until `stop` turns true.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<ServiceSnapshot>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), UserspaceError> {
    tracing::warn!("user-space proxy: only node ports are served; ClusterIPs are not reachable");
    let mut listeners: BTreeMap<(Protocol, u16), Listener> = BTreeMap::new();
    let result = loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.synced {
            let started = std::time::Instant::now();
            let wanted = listeners_of(&snapshot);
            listeners.retain(|key, listener| {
                let keep = wanted.contains_key(key) && !listener.task.is_finished();
                if !keep {
                    listener.task.abort();
                }
                keep
            });
            for (key, backends) in wanted {
                if let Some(listener) = listeners.get(&key) {
                    listener.backends.send_if_modified(|current| {
                        let changed = *current != backends;
                        *current = backends.clone();
                        changed
                    });
                    continue;
                }
                let (sender, receiver) = watch::channel(backends);
                let task = match key.0 {
                    Protocol::Udp => tokio::spawn(serve_udp(key.1, receiver)),
                    _ => tokio::spawn(serve_tcp(key.1, receiver)),
                };
                listeners.insert(
                    key,
                    Listener {
                        backends: sender,
                        task,
                    },
                );
            }
            crate::monitoring::record_proxy_sync(started.elapsed(), true);
        }
        tokio::select! {
            _ = stop.changed() => break Ok(()),
            changed = snapshots.changed() => if changed.is_err() { break Err(UserspaceError::Closed) },
        }
        if *stop.borrow() {
            break Ok(());
        }
    };
    for listener in listeners.values() {
        listener.task.abort();
    }
    result
}

fn unspecified(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
}

async fn serve_tcp(port: u16, backends: watch::Receiver<Backends>) {
    let listener = match TcpListener::bind(unspecified(port)).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(port, error = %e, "cannot listen on the node port");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS_MAX));
    let picker = Arc::new(Mutex::new(Picker::default()));
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await; // e.g. out of file descriptors
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(port, "too many connections; refusing one");
            continue;
        };
        let current = backends.borrow().clone();
        let endpoint = match picker.lock() {
            Ok(mut picker) => picker.pick(&current, peer.ip(), Instant::now()),
            Err(_) => return,
        };
        let Some(endpoint) = endpoint else {
            continue; // no endpoints: the connection is closed at once
        };
        tokio::spawn(async move {
            let _slot = slot;
            let mut client = client;
            let upstream =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await;
            if let Ok(Ok(mut upstream)) = upstream {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

async fn serve_udp(port: u16, backends: watch::Receiver<Backends>) {
    let socket = match UdpSocket::bind(unspecified(port)).await {
        Ok(socket) => Arc::new(socket),
        Err(e) => {
            tracing::warn!(port, error = %e, "cannot listen on the UDP node port");
            return;
        }
    };
    let mut picker = Picker::default();
    let mut flows: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let mut buffer = vec![0u8; UDP_DATAGRAM_BYTES_MAX];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buffer).await else {
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            continue;
        };
        flows.retain(|_, (_, task)| !task.is_finished());
        if let Some((upstream, _)) = flows.get(&peer) {
            let _ = upstream.send(&buffer[..len]).await;
            continue;
        }
        if flows.len() >= UDP_FLOWS_MAX {
            tracing::debug!(port, "too many UDP flows; dropping a datagram");
            continue;
        }
        let current = backends.borrow().clone();
        let Some(endpoint) = picker.pick(&current, peer.ip(), Instant::now()) else {
            continue;
        };
        let Ok(upstream) = UdpSocket::bind(unspecified(0)).await else {
            continue;
        };
        if upstream.connect(endpoint).await.is_err() {
            continue;
        }
        let upstream = Arc::new(upstream);
        let _ = upstream.send(&buffer[..len]).await;
        let task = tokio::spawn(udp_replies(upstream.clone(), socket.clone(), peer));
        flows.insert(peer, (upstream, task));
    }
}

/// Relays an endpoint's replies to the client until the flow is idle.
async fn udp_replies(upstream: Arc<UdpSocket>, socket: Arc<UdpSocket>, peer: SocketAddr) {
    let mut buffer = vec![0u8; UDP_DATAGRAM_BYTES_MAX];
    while let Ok(Ok(len)) = tokio::time::timeout(UDP_FLOW_IDLE, upstream.recv(&mut buffer)).await {
        let _ = socket.send_to(&buffer[..len], peer).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picker_honours_affinity_until_timeout() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let backends = Backends {
            endpoints: vec![a, b],
            affinity_timeout: Some(Duration::from_secs(10)),
        };
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let mut picker = Picker::default();
        let now = Instant::now();
        let first = picker.pick(&backends, client, now).unwrap();
        for i in 0..50 {
            assert_eq!(
                picker.pick(&backends, client, now + Duration::from_secs(i % 9)),
                Some(first)
            );
        }
        // A removed endpoint is not kept for affinity.
        let other = if first == a { b } else { a };
        let only_other = Backends {
            endpoints: vec![other],
            ..backends.clone()
        };
        assert_eq!(picker.pick(&only_other, client, now), Some(other));
        assert_eq!(picker.pick(&Backends::default(), client, now), None);
    }

    #[test]
    fn picker_spreads_without_affinity() {
        let backends = Backends {
            endpoints: vec![
                "10.0.0.1:80".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
            ],
            affinity_timeout: None,
        };
        let mut picker = Picker::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let picks: std::collections::BTreeSet<_> = (0..100)
            .filter_map(|_| picker.pick(&backends, client, Instant::now()))
            .collect();
        assert_eq!(picks.len(), 2);
    }

    #[test]
    fn listeners_only_for_node_ports() {
        let snapshot = ServiceSnapshot {
            services: vec![
                json!({"metadata": {"namespace": "a", "name": "np"},
                       "spec": {"type": "NodePort", "clusterIP": "10.96.0.1",
                                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP", "nodePort": 30053}]}}),
                json!({"metadata": {"namespace": "a", "name": "cip"},
                       "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80, "nodePort": 30090}]}}),
            ],
            endpoints: vec![json!({"metadata": {"namespace": "a", "name": "np"},
                "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "ports": [{"port": 8080}]}]})],
            synced: true,
        };
        let wanted = listeners_of(&snapshot);
        let keys: Vec<_> = wanted.keys().copied().collect();
        assert_eq!(keys, vec![(Protocol::Tcp, 30080), (Protocol::Udp, 30053)]);
        assert_eq!(
            wanted[&(Protocol::Tcp, 30080)].endpoints,
            vec!["10.244.0.5:8080".parse::<SocketAddr>().unwrap()]
        );
        assert!(wanted[&(Protocol::Udp, 30053)].endpoints.is_empty());
    }

    /// A node port forwards TCP to the ready endpoint, and a port without endpoints closes
    /// connections at once.
    #[tokio::test]
    async fn forwards_tcp_node_ports() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend_port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = backend.accept().await {
                let _ = stream.write_all(b"hello from the endpoint").await;
            }
        });
        let free = |_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (node_port, empty_port) = (free(0), free(1));
        let snapshot = ServiceSnapshot {
            services: vec![
                json!({"metadata": {"namespace": "a", "name": "np"},
                       "spec": {"type": "NodePort", "clusterIP": "10.96.0.1",
                                "ports": [{"port": 80, "nodePort": node_port}]}}),
                json!({"metadata": {"namespace": "a", "name": "empty"},
                       "spec": {"type": "NodePort", "clusterIP": "10.96.0.2",
                                "ports": [{"port": 80, "nodePort": empty_port}]}}),
            ],
            endpoints: vec![json!({"metadata": {"namespace": "a", "name": "np"},
                "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"port": backend_port}]}]})],
            synced: true,
        };
        let (_snapshots, receiver) = watch::channel(Arc::new(snapshot));
        let (stop, stopped) = watch::channel(false);
        let proxy = tokio::spawn(run(receiver, stopped));
        let mut answer = String::new();
        for _ in 0..50 {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", node_port)).await {
                answer.clear();
                let _ = stream.read_to_string(&mut answer).await;
                if !answer.is_empty() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(answer, "hello from the endpoint");
        let mut stream = TcpStream::connect(("127.0.0.1", empty_port)).await.unwrap();
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        stop.send(true).unwrap();
        proxy.await.unwrap().unwrap();
    }
}
