//! The nftables ruleset for a snapshot, as kube-proxy's nftables mode builds it: pure text for
//! `nft -f -`, one transaction that recreates the table `ip keelson-proxy` whole.
//!
//! Packets to `clusterIP . proto . port` (and load-balancer IPs, and node ports on the node's
//! addresses) jump through the `service-ips` / `service-nodeports` verdict maps to a chain per
//! service port, which picks an endpoint chain (`numgen random`, or the client's affinity set
//! first); the endpoint chain DNATs. Services without ready endpoints are rejected in filter
//! chains instead. Marked packets (hairpin, node ports, traffic from outside the cluster CIDR)
//! are masqueraded on the way out.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use sha2::{Digest, Sha256};

use super::cache::ServiceSnapshot;
use super::services::{service_ports, ServicePort};

/// The table the proxy owns (family `ip`).
pub const TABLE: &str = "keelson-proxy";
/// The packet mark that asks for masquerading (kube-proxy's 0x4000).
const MASQUERADE_MARK: &str = "0x4000";
/// The longest chain or set name generated (nftables allows 255).
const NAME_CHARS_MAX: usize = 200;

/// The whole ruleset for `snapshot`. `node_ips` restricts node ports to those (IPv4)
/// addresses; when empty, every local address but loopback serves them. `cluster_cidr`
/// (e.g. `10.244.0.0/16`; empty or invalid = unknown) decides which ClusterIP traffic is
/// masqueraded: the traffic from outside it.
pub fn ruleset(snapshot: &ServiceSnapshot, node_ips: &[IpAddr], cluster_cidr: &str) -> String {
    let ports = service_ports(snapshot);
    let node_ips: Vec<Ipv4Addr> = node_ips
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .collect();
    let cidr = parse_cidr(cluster_cidr);
    if cidr.is_none() && !cluster_cidr.is_empty() {
        tracing::warn!(
            cluster_cidr,
            "not an IPv4 CIDR; ClusterIP traffic is not masqueraded"
        );
    }
    let mut out = Builder::default();
    out.line(format!("add table ip {TABLE}"));
    out.line(format!("delete table ip {TABLE}"));
    out.line(format!(
        "add table ip {TABLE} {{ comment \"rules for keelson services\" ; }}"
    ));
    base_chains(&mut out, &node_ips);
    for port in &ports {
        service_port(&mut out, port, cidr.as_deref());
    }
    out.finish()
}

/// The text that removes the proxy's table (when it exists).
pub fn delete_ruleset() -> String {
    format!("add table ip {TABLE}\ndelete table ip {TABLE}\n")
}

/// Accumulates declarations, rules and map elements apart: nft needs every chain and map
/// declared before a rule or element names it.
#[derive(Default)]
struct Builder {
    head: String,
    declarations: String,
    rules: String,
    elements: String,
    element_keys: BTreeSet<(String, String)>,
}

impl Builder {
    fn line(&mut self, text: String) {
        self.head.push_str(&text);
        self.head.push('\n');
    }

    fn chain(&mut self, name: &str, hook: Option<&str>) {
        match hook {
            Some(hook) => {
                let _ = writeln!(
                    self.declarations,
                    "add chain ip {TABLE} {name} {{ {hook} ; }}"
                );
            }
            None => {
                let _ = writeln!(self.declarations, "add chain ip {TABLE} {name}");
            }
        }
    }

    fn declare(&mut self, kind: &str, name: &str, body: &str) {
        let _ = writeln!(
            self.declarations,
            "add {kind} ip {TABLE} {name} {{ {body} ; }}"
        );
    }

    fn rule(&mut self, chain: &str, rule: &str) {
        let _ = writeln!(self.rules, "add rule ip {TABLE} {chain} {rule}");
    }

    /// Adds `key : verdict` to `map` unless the key is there already (two services claiming
    /// one address and port: the first, by key order, wins).
    fn element(&mut self, map: &str, key: &str, verdict: &str) {
        if !self.element_keys.insert((map.to_string(), key.to_string())) {
            tracing::warn!(
                map,
                key,
                "two services claim the same address and port; keeping the first"
            );
            return;
        }
        let _ = writeln!(
            self.elements,
            "add element ip {TABLE} {map} {{ {key} : {verdict} }}"
        );
    }

    fn finish(self) -> String {
        self.head + &self.declarations + &self.rules + &self.elements
    }
}

fn base_chains(out: &mut Builder, node_ips: &[Ipv4Addr]) {
    out.declare(
        "map",
        "service-ips",
        "type ipv4_addr . inet_proto . inet_service : verdict",
    );
    out.declare(
        "map",
        "service-nodeports",
        "type inet_proto . inet_service : verdict",
    );
    out.declare(
        "map",
        "no-endpoint-services",
        "type ipv4_addr . inet_proto . inet_service : verdict",
    );
    out.declare(
        "map",
        "no-endpoint-nodeports",
        "type inet_proto . inet_service : verdict",
    );
    let node_addresses = if node_ips.is_empty() {
        "fib daddr type local ip daddr != 127.0.0.0/8".to_string()
    } else {
        let list: Vec<String> = node_ips.iter().map(Ipv4Addr::to_string).collect();
        format!("ip daddr {{ {} }}", list.join(", "))
    };

    // NAT: services first, masquerading last.
    out.chain(
        "nat-prerouting",
        Some("type nat hook prerouting priority -100"),
    );
    out.chain("nat-output", Some("type nat hook output priority -100"));
    out.chain(
        "nat-postrouting",
        Some("type nat hook postrouting priority 100"),
    );
    out.chain("services", None);
    out.chain("masquerading", None);
    out.chain("mark-for-masquerade", None);
    out.rule("nat-prerouting", "jump services");
    out.rule("nat-output", "jump services");
    out.rule("nat-postrouting", "jump masquerading");
    out.rule(
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    out.rule(
        "services",
        &format!("{node_addresses} meta l4proto . th dport vmap @service-nodeports"),
    );
    out.rule(
        "mark-for-masquerade",
        &format!("meta mark set meta mark or {MASQUERADE_MARK}"),
    );
    out.rule(
        "masquerading",
        &format!("meta mark & {MASQUERADE_MARK} == 0 return"),
    );
    out.rule(
        "masquerading",
        &format!("meta mark set meta mark xor {MASQUERADE_MARK}"),
    );
    out.rule("masquerading", "masquerade fully-random");

    // Filter: new connections to services without endpoints are rejected.
    for (chain, hook) in [
        ("filter-input", "input"),
        ("filter-forward", "forward"),
        ("filter-output", "output"),
    ] {
        out.chain(
            chain,
            Some(&format!("type filter hook {hook} priority -110")),
        );
        out.rule(chain, "ct state new jump service-endpoints-check");
    }
    out.chain("service-endpoints-check", None);
    out.chain("reject-chain", None);
    out.rule(
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
    out.rule(
        "service-endpoints-check",
        &format!("{node_addresses} meta l4proto . th dport vmap @no-endpoint-nodeports"),
    );
    out.rule("reject-chain", "reject");
}

fn service_port(out: &mut Builder, port: &ServicePort, cluster_cidr: Option<&str>) {
    let key = port.key();
    let proto = port.protocol.nft();
    if port.endpoints.is_empty() {
        if let Some(ip) = port.cluster_ip {
            out.element(
                "no-endpoint-services",
                &format!("{ip} . {proto} . {}", port.port),
                "goto reject-chain",
            );
        }
        for ip in &port.load_balancer_ips {
            out.element(
                "no-endpoint-services",
                &format!("{ip} . {proto} . {}", port.port),
                "goto reject-chain",
            );
        }
        if let Some(node_port) = port.node_port {
            out.element(
                "no-endpoint-nodeports",
                &format!("{proto} . {node_port}"),
                "goto reject-chain",
            );
        }
        return;
    }

    let service_chain = chain_name("service", &key);
    let external_chain = chain_name("external", &key);
    out.chain(&service_chain, None);
    if let Some(ip) = port.cluster_ip {
        if let Some(cidr) = cluster_cidr {
            out.rule(
                &service_chain,
                &format!(
                    "ip daddr {ip} {proto} dport {} ip saddr != {cidr} jump mark-for-masquerade",
                    port.port
                ),
            );
        }
        out.element(
            "service-ips",
            &format!("{ip} . {proto} . {}", port.port),
            &format!("goto {service_chain}"),
        );
    }
    if port.node_port.is_some() || !port.load_balancer_ips.is_empty() {
        out.chain(&external_chain, None);
        out.rule(&external_chain, "jump mark-for-masquerade");
        out.rule(&external_chain, &format!("goto {service_chain}"));
        for ip in &port.load_balancer_ips {
            out.element(
                "service-ips",
                &format!("{ip} . {proto} . {}", port.port),
                &format!("goto {external_chain}"),
            );
        }
        if let Some(node_port) = port.node_port {
            out.element(
                "service-nodeports",
                &format!("{proto} . {node_port}"),
                &format!("goto {external_chain}"),
            );
        }
    }

    let mut picks = Vec::new();
    for (index, (ip, target)) in port.endpoints.iter().enumerate() {
        let endpoint_key = format!("{key}__{ip}/{target}");
        let endpoint_chain = chain_name("endpoint", &endpoint_key);
        out.chain(&endpoint_chain, None);
        out.rule(
            &endpoint_chain,
            &format!("ip saddr {ip} jump mark-for-masquerade"),
        );
        if let Some(timeout) = port.affinity_timeout_seconds {
            let set = chain_name("affinity", &endpoint_key);
            out.declare(
                "set",
                &set,
                &format!("type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s"),
            );
            out.rule(&endpoint_chain, &format!("update @{set} {{ ip saddr }}"));
            out.rule(
                &service_chain,
                &format!("ip saddr @{set} goto {endpoint_chain}"),
            );
        }
        out.rule(
            &endpoint_chain,
            &format!("meta l4proto {proto} dnat to {ip}:{target}"),
        );
        picks.push(format!("{index} : goto {endpoint_chain}"));
    }
    out.rule(
        &service_chain,
        &format!(
            "numgen random mod {} vmap {{ {} }}",
            picks.len(),
            picks.join(" , ")
        ),
    );
}

/// `prefix-HASH-readable`: valid as an nft identifier whatever `key` holds, bounded in
/// length, and unique through the hash of the whole key.
pub fn chain_name(prefix: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02X}")).collect();
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(NAME_CHARS_MAX.saturating_sub(prefix.len() + 10))
        .collect();
    format!("{prefix}-{hash}-{readable}")
}

/// `a.b.c.d/n` normalised, or `None`.
fn parse_cidr(text: &str) -> Option<String> {
    let (ip, bits) = text.trim().split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok().filter(|b| *b <= 32)?;
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    };
    Some(format!("{}/{bits}", Ipv4Addr::from(u32::from(ip) & mask)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn service(name: &str, extra_spec: Value, ports: Value) -> Value {
        let mut spec = json!({"clusterIP": "10.96.0.10", "ports": ports});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        json!({"metadata": {"namespace": "default", "name": name}, "spec": spec})
    }

    fn endpoints(name: &str, ips: &[&str], port: u16) -> Value {
        let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        json!({"metadata": {"namespace": "default", "name": name},
               "subsets": [{"addresses": addresses, "ports": [{"name": "http", "port": port}]}]})
    }

    fn snapshot(services: Vec<Value>, endpoints: Vec<Value>) -> ServiceSnapshot {
        ServiceSnapshot {
            services,
            endpoints,
            synced: true,
        }
    }

    /// Each case: a snapshot, lines that must appear, lines that must not.
    fn check(name: &str, snap: ServiceSnapshot, present: &[&str], absent: &[&str]) {
        let text = ruleset(&snap, &[], "10.244.0.0/16");
        for line in present {
            assert!(
                text.lines().any(|l| l.contains(line)),
                "{name}: missing {line:?} in\n{text}"
            );
        }
        for line in absent {
            assert!(
                !text.lines().any(|l| l.contains(line)),
                "{name}: unexpected {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn rulesets() {
        let web_ports = json!([{"name": "http", "port": 80, "nodePort": 30080}]);
        let svc = chain_name("service", "default/web/tcp/http");
        let ep1 = chain_name("endpoint", "default/web/tcp/http__10.244.1.2/8080");
        let aff1 = chain_name("affinity", "default/web/tcp/http__10.244.1.2/8080");
        let ext = chain_name("external", "default/web/tcp/http");
        check(
            "cluster ip, two endpoints",
            snapshot(
                vec![service("web", json!({}), web_ports.clone())],
                vec![endpoints("web", &["10.244.1.2", "10.244.1.3"], 8080)],
            ),
            &[
                &format!("service-ips {{ 10.96.0.10 . tcp . 80 : goto {svc} }}"),
                "numgen random mod 2 vmap { 0 : goto endpoint-",
                &format!("{ep1} meta l4proto tcp dnat to 10.244.1.2:8080"),
                &format!("{ep1} ip saddr 10.244.1.2 jump mark-for-masquerade"),
                "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade",
            ],
            &[
                "add element ip keelson-proxy service-nodeports",
                "add element ip keelson-proxy no-endpoint-services",
                "affinity-",
            ],
        );
        check(
            "node port and affinity",
            snapshot(
                vec![service(
                    "web",
                    json!({"type": "NodePort", "sessionAffinity": "ClientIP",
                           "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
                    web_ports.clone(),
                )],
                vec![endpoints("web", &["10.244.1.2"], 8080)],
            ),
            &[
                &format!("service-nodeports {{ tcp . 30080 : goto {ext} }}"),
                &format!("{ext} jump mark-for-masquerade"),
                &format!("{ext} goto {svc}"),
                &format!("add set ip keelson-proxy {aff1} {{ type ipv4_addr ; flags dynamic,timeout ; timeout 30s ; }}"),
                &format!("{svc} ip saddr @{aff1} goto {ep1}"),
                &format!("{ep1} update @{aff1} {{ ip saddr }}"),
            ],
            &[],
        );
        check(
            "no ready endpoints rejects",
            snapshot(
                vec![service(
                    "web",
                    json!({"type": "NodePort"}),
                    web_ports.clone(),
                )],
                vec![],
            ),
            &[
                "no-endpoint-services { 10.96.0.10 . tcp . 80 : goto reject-chain }",
                "no-endpoint-nodeports { tcp . 30080 : goto reject-chain }",
            ],
            &[
                "add element ip keelson-proxy service-ips",
                &format!("add chain ip keelson-proxy {svc}"),
            ],
        );
        check(
            "load balancer and udp",
            snapshot(
                vec![json!({"metadata": {"namespace": "default", "name": "dns"},
                    "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.53",
                             "ports": [{"name": "http", "port": 53, "protocol": "UDP", "nodePort": 30053}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}})],
                vec![json!({"metadata": {"namespace": "default", "name": "dns"},
                    "subsets": [{"addresses": [{"ip": "10.244.2.2"}], "ports": [{"name": "http", "port": 5353, "protocol": "UDP"}]}]})],
            ),
            &[
                "192.0.2.7 . udp . 53 : goto external-",
                "10.96.0.53 . udp . 53 : goto service-",
                "udp . 30053 : goto external-",
                "meta l4proto udp dnat to 10.244.2.2:5353",
            ],
            &[],
        );
        check(
            "deleted service leaves only the base",
            snapshot(vec![], vec![endpoints("web", &["10.244.1.2"], 8080)]),
            &[
                "add chain ip keelson-proxy services",
                "delete table ip keelson-proxy",
            ],
            &["add element", "add chain ip keelson-proxy endpoint-"],
        );
    }

    #[test]
    fn node_ips_restrict_node_ports() {
        let text = ruleset(
            &snapshot(vec![], vec![]),
            &["192.168.1.5".parse().unwrap(), "fd00::1".parse().unwrap()],
            "",
        );
        assert!(text
            .contains("ip daddr { 192.168.1.5 } meta l4proto . th dport vmap @service-nodeports"));
        assert!(!text.contains("fib daddr"));
    }

    #[test]
    fn chain_names_are_valid_and_bounded() {
        let long = format!("ns/{}/tcp/x y\"z;", "n".repeat(400));
        for key in ["default/web/tcp/http", long.as_str(), "", "a/b/udp/"] {
            let name = chain_name("endpoint", key);
            assert!(name.len() <= NAME_CHARS_MAX, "{name}");
            assert!(name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-')));
        }
        assert_ne!(
            chain_name("service", &format!("{long}1")),
            chain_name("service", &format!("{long}2"))
        );
    }

    #[test]
    fn cidrs() {
        for (text, want) in [
            ("10.244.0.0/16", Some("10.244.0.0/16")),
            ("10.244.3.1/16", Some("10.244.0.0/16")),
            ("0.0.0.0/0", Some("0.0.0.0/0")),
            ("10.0.0.0/33", None),
            ("", None),
            ("fd00::/64", None),
            ("10.0.0.0/8; flush ruleset", None),
        ] {
            assert_eq!(parse_cidr(text).as_deref(), want, "{text}");
        }
    }

    /// `nft -c` accepts every generated ruleset (needs root and nft).
    #[test]
    fn nft_accepts_generated_rulesets() {
        let snap = snapshot(
            vec![
                service(
                    "web",
                    json!({"type": "NodePort", "sessionAffinity": "ClientIP"}),
                    json!([{"name": "http", "port": 80, "nodePort": 30080}]),
                ),
                json!({"metadata": {"namespace": "default", "name": "empty"},
                       "spec": {"type": "NodePort", "clusterIP": "10.96.0.11",
                                "ports": [{"name": "http", "port": 80, "protocol": "UDP", "nodePort": 30081}]}}),
            ],
            vec![endpoints("web", &["10.244.1.2", "10.244.1.3"], 8080)],
        );
        for (node_ips, cidr) in [
            (vec![], "10.244.0.0/16"),
            (vec!["192.168.1.5".parse().unwrap()], ""),
        ] {
            let text = ruleset(&snap, &node_ips, cidr);
            let check = super::super::nft::check_blocking(&text);
            assert!(check.is_ok(), "{check:?}\n{text}");
        }
    }
}
