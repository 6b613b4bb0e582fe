//! The proxy's view of a snapshot: one [`ServicePort`] per (Service, port) with its ready
//! endpoints, read from Services and Endpoints JSON. Pure; bad objects are logged and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use keelson_api::object;
use serde_json::Value;

use super::cache::ServiceSnapshot;

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours), as in Kubernetes.
pub const AFFINITY_TIMEOUT_DEFAULT_SECONDS: u32 = 10_800;
/// The longest affinity timeout Kubernetes allows (one day).
const AFFINITY_TIMEOUT_MAX_SECONDS: u32 = 86_400;

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(text: Option<&str>) -> Option<Protocol> {
        match text.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The name nftables uses (`tcp`, `udp`, `sctp`).
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service, with where it is reachable and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name (empty when the Service has a single unnamed port).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: u16,
    pub node_port: Option<u16>,
    /// `status.loadBalancer.ingress[].ip`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `Some(timeout_seconds)` with `sessionAffinity: ClientIP`.
    pub affinity_timeout_seconds: Option<u32>,
    /// Ready endpoints (address, target port), sorted and without duplicates.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl ServicePort {
    /// `namespace/name/protocol/port-name`, as kube-proxy names a service port.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.nft(),
            self.port_name
        )
    }
}

/// Every proxied service port of a snapshot, sorted by key. Headless and ExternalName
/// Services and non-IPv4 addresses are left out.
pub fn service_ports(snapshot: &ServiceSnapshot) -> Vec<ServicePort> {
    let mut endpoints_by_service: BTreeMap<(&str, &str), &Value> = BTreeMap::new();
    for endpoints in &snapshot.endpoints {
        if let (Some(ns), Some(name)) = (object::namespace(endpoints), object::name(endpoints)) {
            endpoints_by_service.insert((ns, name), endpoints);
        }
    }
    let mut ports = Vec::new();
    for service in &snapshot.services {
        let (Some(namespace), Some(name)) = (object::namespace(service), object::name(service))
        else {
            tracing::warn!("skipping a Service without namespace or name");
            continue;
        };
        let endpoints = endpoints_by_service.get(&(namespace, name)).copied();
        ports.extend(ports_of(service, namespace, name, endpoints));
    }
    ports.sort_by_key(ServicePort::key);
    ports.dedup_by(|a, b| a.key() == b.key());
    ports
}

fn ports_of(
    service: &Value,
    namespace: &str,
    name: &str,
    endpoints: Option<&Value>,
) -> Vec<ServicePort> {
    let spec = &service["spec"];
    let service_type = spec["type"].as_str().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return Vec::new();
    }
    let cluster_ip = match spec["clusterIP"].as_str() {
        None | Some("") | Some("None") => return Vec::new(),
        Some(text) => match text.parse::<Ipv4Addr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                tracing::debug!(%namespace, %name, clusterIP = text, "not an IPv4 cluster IP; skipped");
                return Vec::new();
            }
        },
    };
    let exposes_node_ports = matches!(service_type, "NodePort" | "LoadBalancer");
    let load_balancer_ips: Vec<Ipv4Addr> = if service_type == "LoadBalancer" {
        service["status"]["loadBalancer"]["ingress"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ingress| ingress["ip"].as_str()?.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let affinity_timeout_seconds =
        (spec["sessionAffinity"].as_str() == Some("ClientIP")).then(|| {
            spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
                .as_u64()
                .map(|t| t.clamp(1, u64::from(AFFINITY_TIMEOUT_MAX_SECONDS)) as u32)
                .unwrap_or(AFFINITY_TIMEOUT_DEFAULT_SECONDS)
        });
    let mut ports = Vec::new();
    for port in spec["ports"].as_array().into_iter().flatten() {
        let Some(protocol) = Protocol::parse(port["protocol"].as_str()) else {
            tracing::warn!(%namespace, %name, "skipping a Service port with an unknown protocol");
            continue;
        };
        let Some(number) = port_number(&port["port"]) else {
            tracing::warn!(%namespace, %name, "skipping a Service port without a valid port");
            continue;
        };
        let port_name = port["name"].as_str().unwrap_or("").to_string();
        let node_port = if exposes_node_ports {
            port_number(&port["nodePort"])
        } else {
            None
        };
        ports.push(ServicePort {
            namespace: namespace.to_string(),
            name: name.to_string(),
            endpoints: endpoints
                .map(|e| ready_endpoints(e, &port_name, protocol))
                .unwrap_or_default(),
            port_name,
            protocol,
            cluster_ip,
            port: number,
            node_port,
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_timeout_seconds,
        });
    }
    ports
}

fn port_number(value: &Value) -> Option<u16> {
    value
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// The ready addresses of an Endpoints object for the port named `port_name`.
fn ready_endpoints(endpoints: &Value, port_name: &str, protocol: Protocol) -> Vec<(Ipv4Addr, u16)> {
    let mut ready = BTreeSet::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let target = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["name"].as_str().unwrap_or("") == port_name)
            .filter(|p| Protocol::parse(p["protocol"].as_str()) == Some(protocol))
            .find_map(|p| port_number(&p["port"]));
        let Some(target) = target else { continue };
        for address in subset["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = address["ip"].as_str().and_then(|ip| ip.parse().ok()) {
                ready.insert((ip, target));
            }
        }
    }
    ready.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(services: Vec<Value>, endpoints: Vec<Value>) -> ServiceSnapshot {
        ServiceSnapshot {
            services,
            endpoints,
            synced: true,
        }
    }

    #[test]
    fn reads_ports_endpoints_and_affinity() {
        let service = json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        });
        let endpoints = json!({
            "metadata": {"namespace": "default", "name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.1.2"}],
                         "notReadyAddresses": [{"ip": "10.244.1.9"}],
                         "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 5353, "protocol": "UDP"}]}]
        });
        let ports = service_ports(&snapshot(vec![service], vec![endpoints]));
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.key(), "default/web/tcp/http");
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_timeout_seconds, Some(10_800));
        assert_eq!(
            http.endpoints,
            vec![
                ("10.244.1.2".parse().unwrap(), 8080),
                ("10.244.1.3".parse().unwrap(), 8080)
            ]
        );
        let dns = &ports[1];
        assert_eq!(dns.key(), "default/web/udp/dns");
        assert_eq!(dns.endpoints.len(), 2);
        assert_eq!(dns.endpoints[0].1, 5353);
    }

    #[test]
    fn skips_headless_external_name_and_bad_objects() {
        let cases = [
            json!({"metadata": {"namespace": "a", "name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
            json!({"metadata": {"namespace": "a", "name": "e"}, "spec": {"type": "ExternalName", "externalName": "x"}}),
            json!({"metadata": {"namespace": "a", "name": "v6"}, "spec": {"clusterIP": "fd00::1", "ports": [{"port": 80}]}}),
            json!({"metadata": {"name": "no-namespace"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}}),
            json!({"metadata": {"namespace": "a", "name": "bad-port"}, "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 70000}]}}),
        ];
        for case in cases {
            assert!(
                service_ports(&snapshot(vec![case.clone()], vec![])).is_empty(),
                "{case}"
            );
        }
    }

    #[test]
    fn affinity_timeout_and_load_balancer_ips() {
        let service = json!({
            "metadata": {"namespace": "a", "name": "lb"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                     "ports": [{"port": 443, "nodePort": 31443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "x"}]}}
        });
        let ports = service_ports(&snapshot(vec![service], vec![]));
        assert_eq!(ports[0].affinity_timeout_seconds, Some(60));
        assert_eq!(
            ports[0].load_balancer_ips,
            vec!["192.0.2.10".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(ports[0].endpoints.is_empty());
    }
}
