//! Several hosts on one machine: each host is a network namespace with its own address on a
//! bridge of the run's own, so traffic between masters (and nodes) crosses a real network. The
//! machine's root namespace is the network between them (the bridge's gateway, and the router
//! the local cloud installs routes in). Used by the Jepsen harness and by the end-to-end tests;
//! everything created is removed on drop.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context};

/// Runs `ip args`, with ip's message in the error.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One host: a network namespace with one address on the run's bridge.
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
    pub fn cut_off(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.veth, "down"])
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        ip(&["link", "set", &self.veth, "up"])
    }

    /// The path of its network namespace, for `nsenter --net=`.
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }
}

/// The run's network: a bridge in the root namespace and the hosts on it.
pub struct Net {
    /// A short prefix unique to this process, in every name created.
    pub id: String,
    pub bridge: String,
    /// The hosts' subnet is `10.A.B.0/24`; the bridge is `.1`.
    pub subnet: (u8, u8),
    /// Pod CIDRs of this run's cluster: `10.C.0.0/16`, free on this machine.
    pub cluster_cidr: String,
    /// The root namespace under an `ip netns` name: the local cloud's router.
    pub router: String,
    pub hosts: Vec<Host>,
}

fn addresses_in_use() -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .context("run `ip` (install iproute2)")?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

impl Net {
    /// A new network with a bridge and subnets no other run on this machine uses. Needs root.
    pub fn new() -> anyhow::Result<Net> {
        if !nix::unistd::geteuid().is_root() {
            bail!("network namespaces need root: run as root (CI does)");
        }
        let pid = std::process::id();
        let id = format!("t{:04x}", pid % 0xffff);
        let used = addresses_in_use()?;
        // Subnets this process may use, tried in a pid-dependent order.
        let start = pid % 50;
        let Some(slot) = (0..50).map(|k| (start + k) % 50).find(|s| {
            !used.contains(&format!("10.{}.", 100 + s))
                && !used.contains(&format!("10.{}.", 150 + s))
        }) else {
            bail!("no free 10.x subnet for a test network: 50 are in use");
        };
        let net = Net {
            bridge: format!("{id}br"),
            router: format!("{id}-router"),
            cluster_cidr: format!("10.{}.0.0/16", 150 + slot),
            id,
            subnet: ((100 + slot) as u8, 1u8),
            hosts: Vec::new(),
        };
        ip(&["link", "add", &net.bridge, "type", "bridge"])?;
        let gateway = format!("{}/24", net.gateway());
        ip(&["addr", "add", &gateway, "dev", &net.bridge])?;
        ip(&["link", "set", &net.bridge, "up"])?;
        ip(&["netns", "attach", &net.router, &pid.to_string()])?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enable IP forwarding")?;
        Ok(net)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet.0, self.subnet.1, 1)
    }

    /// Adds a host named `name` (short: it is part of interface names).
    pub fn add_host(&mut self, name: &str) -> anyhow::Result<Host> {
        let n = u8::try_from(self.hosts.len() + 2)
            .ok()
            .filter(|n| *n < 255)
            .context("at most 252 hosts on one network")?;
        let host = Host {
            name: name.to_string(),
            netns: format!("{}-{name}", self.id),
            ip: Ipv4Addr::new(10, self.subnet.0, self.subnet.1, n),
            veth: format!("{}v{n}", self.id),
        };
        ip(&["netns", "add", &host.netns])?;
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
        ])?;
        ip(&["link", "set", &host.veth, "master", &self.bridge])?;
        ip(&["link", "set", &host.veth, "up"])?;
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
            ip(&all)?;
        }
        Ok(host)
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
