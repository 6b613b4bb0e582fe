//! Several hosts on one machine: each master and node runs in its own network namespace with
//! its own address on a bridge of the test's own, so multi-node behaviour crosses a real
//! network. The machine's root namespace is the network between them (the bridge's gateway and
//! the local cloud's router: masters install routes to nodes' pod CIDRs there). A host can be
//! cut off (its link goes down), stopped or paused; everything is removed on drop.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use super::cluster::Cluster;
use super::real_node::{require_root_and_runc, RealNode};

/// Runs `ip args`, failing the test with ip's message.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One host: a network namespace with one address on the test's bridge.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// Its `ip netns` name.
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The bridge side of its link.
    veth: String,
}

impl Host {
    /// `program args...` inside this host's network namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// Cuts the host off the network (its link goes down).
    pub fn cut_off(&self) {
        ip(&["link", "set", &self.veth, "down"]);
    }

    pub fn heal(&self) {
        ip(&["link", "set", &self.veth, "up"]);
    }
}

/// The test's network: a bridge in the root namespace and the hosts on it.
pub struct Net {
    /// A short prefix unique to this test process, in every name created.
    pub id: String,
    pub bridge: String,
    /// The hosts' subnet is `10.A.B.0/24`; the bridge is `.1`.
    pub subnet: (u8, u8),
    /// Pod CIDRs of this test's cluster: `10.C.0.0/16`, free on this machine.
    pub cluster_cidr: String,
    /// The root namespace under an `ip netns` name: the local cloud's router.
    pub router: String,
    pub hosts: Vec<Host>,
}

fn addresses_in_use() -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl Net {
    pub fn new() -> Net {
        require_root_and_runc();
        let pid = std::process::id();
        let id = format!("t{:04x}", pid % 0xffff);
        let used = addresses_in_use();
        // Subnets this test process may use, tried in a pid-dependent order.
        let start = pid % 50;
        let slot = (0..50)
            .map(|k| (start + k) % 50)
            .find(|s| {
                !used.contains(&format!("10.{}.", 100 + s))
                    && !used.contains(&format!("10.{}.", 150 + s))
            })
            .expect("a free 10.x subnet for the test network");
        let subnet = ((100 + slot) as u8, 1u8);
        let net = Net {
            bridge: format!("{id}br"),
            router: format!("{id}-router"),
            cluster_cidr: format!("10.{}.0.0/16", 150 + slot),
            id,
            subnet,
            hosts: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        let gateway = format!("{}/24", net.gateway());
        ip(&["addr", "add", &gateway, "dev", &net.bridge]);
        ip(&["link", "set", &net.bridge, "up"]);
        ip(&["netns", "attach", &net.router, &pid.to_string()]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("enable IP forwarding");
        net
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 1)
    }

    /// Adds a host named `name` (short: it is part of interface names).
    pub fn add_host(&mut self, name: &str) -> Host {
        let n = self.hosts.len() as u8 + 2;
        let host = Host {
            name: name.to_string(),
            netns: format!("{}-{name}", self.id),
            ip: Ipv4Addr::new(10, self.subnet.0, self.subnet.1, n),
            veth: format!("{}v{n}", self.id),
        };
        ip(&["netns", "add", &host.netns]);
        self.hosts.push(host.clone());
        ip(&[
            "link",
            "add",
            &host.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &host.netns,
        ]);
        ip(&["link", "set", &host.veth, "master", &self.bridge]);
        ip(&["link", "set", &host.veth, "up"]);
        let address = format!("{}/24", host.ip);
        let gateway = self.gateway().to_string();
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &address, "dev", "eth0"],
            vec!["link", "set", "eth0", "up"],
            vec!["route", "add", "default", "via", &gateway],
        ] {
            let mut all = vec!["-n", host.netns.as_str()];
            all.extend(args);
            ip(&all);
        }
        host
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in &self.hosts {
            let _ = Command::new("ip")
                .args(["netns", "delete", &host.netns])
                .output();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .output();
        // Unmounts the name only: the root namespace lives on.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.router])
            .output();
    }
}

/// Masters and runc nodes, each on its own host.
pub struct MultiHost {
    // Dropped in this order: nodes (and their containers), masters, then the network.
    pub nodes: Vec<RealNode>,
    pub cluster: Cluster,
    pub node_hosts: Vec<Host>,
    pub master_hosts: Vec<Host>,
    pub net: Net,
}

impl MultiHost {
    /// `masters` masters and `nodes` nodes (`n0`, `n1`, ...), each on its own host; waits
    /// until every node is Ready with a pod CIDR.
    pub async fn start(masters: usize, nodes: usize, master_args: &[&str]) -> MultiHost {
        let mut net = Net::new();
        let master_hosts: Vec<Host> = (0..masters)
            .map(|i| net.add_host(&format!("m{i}")))
            .collect();
        let node_hosts: Vec<Host> = (0..nodes).map(|i| net.add_host(&format!("n{i}"))).collect();
        let mut args: Vec<&str> = vec![
            "--cluster-cidr",
            &net.cluster_cidr,
            "--cloud-router-netns",
            &net.router,
        ];
        args.extend_from_slice(master_args);
        let on: Vec<(String, Ipv4Addr)> = master_hosts
            .iter()
            .map(|h| (h.netns.clone(), h.ip))
            .collect();
        let cluster = Cluster::start_on(&on, &args).await;
        let cidr = net.cluster_cidr.clone();
        let running: Vec<RealNode> = node_hosts
            .iter()
            .map(|h| {
                let ip = h.ip.to_string();
                RealNode::start_in(
                    &cluster,
                    &h.name,
                    Some(&h.netns),
                    &["--node-ip", &ip, "--cluster-cidr", &cidr],
                )
            })
            .collect();
        let multi = MultiHost {
            nodes: running,
            cluster,
            node_hosts,
            master_hosts,
            net,
        };
        for node in &multi.nodes {
            let path = format!("/api/v1/nodes/{}", node.name);
            super::real_node::wait_for(
                &multi.cluster.client(0),
                &path,
                Duration::from_secs(60),
                "node Ready with a pod CIDR",
                |n| {
                    n.pointer("/spec/podCIDR").is_some()
                        && n["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                },
            )
            .await;
        }
        multi
    }
}
