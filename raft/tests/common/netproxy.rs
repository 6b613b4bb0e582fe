//! A UDP proxy in front of each member, so tests can partition members on loopback.
//!
//! Each proxy forwards datagrams between any client and its member, with one upstream socket
//! per client. A member marked isolated gets nothing through its own proxy, and nothing it
//! sends from its real address passes any other proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

#[derive(Clone, Default)]
pub struct Net {
    inner: Arc<Mutex<NetState>>,
}

#[derive(Default)]
struct NetState {
    /// Real addresses of isolated members.
    isolated_addrs: HashSet<SocketAddr>,
    isolated_names: HashSet<String>,
    /// Links cut between two members (real addresses, both directions).
    cut_links: HashSet<(SocketAddr, SocketAddr)>,
}

impl Net {
    pub fn isolate(&self, name: &str, addr: SocketAddr) {
        let mut state = self.inner.lock().unwrap();
        state.isolated_addrs.insert(addr);
        state.isolated_names.insert(name.to_string());
    }

    /// Cuts the link between the members at `a` and `b` only.
    pub fn cut(&self, a: SocketAddr, b: SocketAddr) {
        let mut state = self.inner.lock().unwrap();
        state.cut_links.insert((a, b));
        state.cut_links.insert((b, a));
    }

    pub fn heal(&self) {
        let mut state = self.inner.lock().unwrap();
        state.isolated_addrs.clear();
        state.isolated_names.clear();
        state.cut_links.clear();
    }

    pub fn is_isolated(&self, name: &str) -> bool {
        self.inner.lock().unwrap().isolated_names.contains(name)
    }

    fn passes(&self, target: SocketAddr, client: SocketAddr) -> bool {
        let state = self.inner.lock().unwrap();
        !state.isolated_addrs.contains(&target)
            && !state.isolated_addrs.contains(&client)
            && !state.cut_links.contains(&(target, client))
    }
}

pub struct UdpProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl UdpProxy {
    pub async fn start(target: SocketAddr, net: Net) -> UdpProxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy"));
        let addr = front.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let mut upstreams: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((len, client)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                if !net.passes(target, client) {
                    continue;
                }
                let upstream = match upstreams.get(&client) {
                    Some(socket) => socket.clone(),
                    None => {
                        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
                        socket.connect(target).await.expect("connect upstream");
                        let back = socket.clone();
                        let front = front.clone();
                        let net = net.clone();
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 65_536];
                            loop {
                                // A connected UDP socket reports an ICMP error from an earlier
                                // send (member not listening yet) as a failed receive: go on.
                                let Ok(len) = back.recv(&mut buf).await else {
                                    continue;
                                };
                                if net.passes(target, client) {
                                    let _ = front.send_to(&buf[..len], client).await;
                                }
                            }
                        });
                        upstreams.insert(client, socket.clone());
                        socket
                    }
                };
                let _ = upstream.send(&buf[..len]).await;
            }
        });
        UdpProxy { addr, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
