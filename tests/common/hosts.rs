//! Masters and runc nodes each on its own host (network namespace) of a `Net` from the Jepsen
//! crate's harness, so multi-node behaviour crosses a real network. A host can be cut off (its
//! link goes down), stopped or paused; everything is removed on drop.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

pub use keelson_jepsen::net::{Host, Net};

use super::cluster::Cluster;
use super::real_node::{require_root_and_runc, RealNode};

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
        require_root_and_runc();
        let mut net = Net::new().expect("a test network");
        let mut add = |name: String| net.add_host(&name).expect("a test host");
        let master_hosts: Vec<Host> = (0..masters).map(|i| add(format!("m{i}"))).collect();
        let node_hosts: Vec<Host> = (0..nodes).map(|i| add(format!("n{i}"))).collect();
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
