//! Service ClusterIP and NodePort ranges, and the pure planning of what a Service create or
//! update claims and releases in them (no I/O: the caller reads what is taken and writes the
//! plan in one store transaction).
//!
//! Architecture invariant: every allocated IP or port is one store key under
//! [`RANGES_PREFIX`], written in the same transaction as the Service that holds it, with an
//! "absent" compare; so two masters can never hand out the same value.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use keelson_api::status::{Cause, StatusError};
use rand::Rng;
use serde_json::{json, Value};

/// Where allocation keys live. No resource is named `ranges`, so they are in no API list.
pub(crate) const RANGES_PREFIX: &str = "/registry/ranges/";
pub(crate) const SERVICE_IPS_PREFIX: &str = "/registry/ranges/serviceips/";
pub(crate) const NODE_PORTS_PREFIX: &str = "/registry/ranges/servicenodeports/";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("service CIDR {0:?} is not an IPv4 CIDR like 10.96.0.0/12")]
    Cidr(String),
    #[error("service CIDR {0:?} is too small: it needs a prefix length of at most /30")]
    CidrTooSmall(String),
    #[error("node port range {0:?} is not MIN-MAX with 1 <= MIN <= MAX <= 65535")]
    Ports(String),
}

/// The IPv4 range ClusterIPs come from (`--service-cidr`). Its network and broadcast
/// addresses are never handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceIpRange {
    network: u32,
    prefix_len: u8,
}

impl ServiceIpRange {
    /// How many addresses can be allocated.
    pub fn size(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix_len))) - 2
    }

    /// The `index`th allocatable address (0: the first, which is `default/kubernetes`'s).
    pub fn nth(&self, index: u32) -> Option<Ipv4Addr> {
        (index < self.size()).then(|| Ipv4Addr::from(self.network + 1 + index))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip > self.network && ip - self.network <= self.size()
    }
}

impl FromStr for ServiceIpRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, RangeError> {
        let bad = || RangeError::Cidr(s.to_string());
        let (ip, len) = s.trim().split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if prefix_len > 32 {
            return Err(bad());
        }
        if prefix_len > 30 {
            return Err(RangeError::CidrTooSmall(s.to_string()));
        }
        let mask = u32::MAX
            .checked_shl(32 - u32::from(prefix_len))
            .unwrap_or(0);
        Ok(ServiceIpRange {
            network: u32::from(ip) & mask,
            prefix_len,
        })
    }
}

impl fmt::Display for ServiceIpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix_len)
    }
}

/// The ports NodePorts come from (`--service-node-port-range`), both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    min: u16,
    max: u16,
}

impl NodePortRange {
    pub fn size(&self) -> u32 {
        u32::from(self.max - self.min) + 1
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.min..=self.max).contains(&port)
    }

    fn nth(&self, index: u32) -> Option<u16> {
        u16::try_from(index)
            .ok()
            .and_then(|i| self.min.checked_add(i))
            .filter(|p| *p <= self.max)
    }
}

impl FromStr for NodePortRange {
    type Err = RangeError;

    fn from_str(s: &str) -> Result<Self, RangeError> {
        let bad = || RangeError::Ports(s.to_string());
        let (min, max) = s.trim().split_once('-').ok_or_else(bad)?;
        let min: u16 = min.trim().parse().map_err(|_| bad())?;
        let max: u16 = max.trim().parse().map_err(|_| bad())?;
        if min == 0 || min > max {
            return Err(bad());
        }
        Ok(NodePortRange { min, max })
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// Both ranges, as every master of a cluster must be configured alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceRanges {
    pub ips: ServiceIpRange,
    pub node_ports: NodePortRange,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            ips: ServiceIpRange {
                network: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
                prefix_len: 12,
            },
            node_ports: NodePortRange {
                min: 30000,
                max: 32767,
            },
        }
    }
}

pub(crate) fn ip_key(ip: Ipv4Addr) -> String {
    format!("{SERVICE_IPS_PREFIX}{ip}")
}

pub(crate) fn port_key(port: u16) -> String {
    format!("{NODE_PORTS_PREFIX}{port}")
}

/// The value of an allocation key: who holds it.
pub(crate) fn owner_value(service: &Value) -> Vec<u8> {
    json!({
        "namespace": service.pointer("/metadata/namespace").cloned().unwrap_or(Value::Null),
        "name": service.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "uid": service.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    })
    .to_string()
    .into_bytes()
}

/// The uid an allocation key's value names.
pub(crate) fn owner_uid(value: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(value)
        .ok()?
        .get("uid")?
        .as_str()
        .map(str::to_string)
}

/// What is taken in both ranges (by any Service, including the one being written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Used {
    pub(crate) ips: BTreeSet<Ipv4Addr>,
    pub(crate) ports: BTreeSet<u16>,
}

impl Used {
    /// Adds an allocation key read from the store; other keys are ignored.
    pub(crate) fn add_key(&mut self, key: &[u8]) {
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        if let Some(ip) = key.strip_prefix(SERVICE_IPS_PREFIX) {
            if let Ok(ip) = ip.parse() {
                self.ips.insert(ip);
            }
        } else if let Some(port) = key.strip_prefix(NODE_PORTS_PREFIX) {
            if let Ok(port) = port.parse() {
                self.ports.insert(port);
            }
        }
    }
}

/// The allocations a stored Service holds: its IPv4 clusterIP and its nodePorts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) ip: Option<Ipv4Addr>,
    pub(crate) ports: BTreeSet<u16>,
}

impl Held {
    pub(crate) fn of(service: &Value) -> Held {
        let ip = service
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let ports = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
            .filter_map(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .collect();
        Held { ip, ports }
    }

    /// The store keys of these allocations.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.ip
            .iter()
            .map(|ip| ip_key(*ip))
            .chain(self.ports.iter().map(|p| port_key(*p)))
            .collect()
    }
}

/// What one write of a Service claims (new keys) and releases (keys it no longer holds).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) claim: Held,
    pub(crate) release: Held,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PlanError {
    /// A requested IP or port is out of range or taken (422).
    Invalid(Vec<Cause>),
    IpRangeFull,
    PortRangeFull,
}

impl PlanError {
    pub(crate) fn status(self, name: &str) -> StatusError {
        match self {
            PlanError::Invalid(causes) => StatusError::invalid("", "Service", name, causes),
            PlanError::IpRangeFull => {
                StatusError::internal("failed to allocate a serviceIP: range is full")
            }
            PlanError::PortRangeFull => {
                StatusError::internal("failed to allocate a nodePort: range is full")
            }
        }
    }
}

/// A free value: a random start, then the first free one after it (cyclically). `size`
/// values `nth(0..size)`; `skip` counts values at the start never picked at random.
fn pick<T: Ord + Copy>(
    size: u32,
    skip: u32,
    nth: impl Fn(u32) -> Option<T>,
    taken: impl Fn(&T) -> bool,
    rng: &mut impl Rng,
) -> Option<T> {
    let pool = size.checked_sub(skip).filter(|p| *p > 0)?;
    let start = rng.random_range(0..pool);
    (0..pool)
        .map(|i| skip + (start + i) % pool)
        .filter_map(nth)
        .find(|v| !taken(v))
}

fn service_type(service: &Value) -> &str {
    service
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn wants_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => {
            service
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false)
        }
        _ => false,
    }
}

/// Fills `new`'s clusterIP(s) and nodePorts from the ranges and returns what to claim and
/// release, given the stored version `old` (update) and what is `used` cluster-wide.
pub(crate) fn plan(
    ranges: &ServiceRanges,
    old: Option<&Value>,
    new: &mut Value,
    used: &Used,
    rng: &mut impl Rng,
) -> Result<Plan, PlanError> {
    let held = old.map(Held::of).unwrap_or_default();
    let mut causes = Vec::new();
    let mut claim = Held::default();
    let new_ip = plan_ip(ranges, &held, new, used, &mut causes, rng)?;
    if let Some(ip) = new_ip.filter(|ip| held.ip != Some(*ip)) {
        claim.ip = Some(ip);
    }
    let new_ports = plan_ports(ranges, &held, new, used, &mut causes, &mut claim, rng)?;
    if !causes.is_empty() {
        return Err(PlanError::Invalid(causes));
    }
    let release = Held {
        ip: held.ip.filter(|ip| new_ip != Some(*ip)),
        ports: held.ports.difference(&new_ports).copied().collect(),
    };
    Ok(Plan { claim, release })
}

fn plan_ip(
    ranges: &ServiceRanges,
    held: &Held,
    new: &mut Value,
    used: &Used,
    causes: &mut Vec<Cause>,
    rng: &mut impl Rng,
) -> Result<Option<Ipv4Addr>, PlanError> {
    if service_type(new) == "ExternalName" {
        return Ok(None);
    }
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let given = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.get("clusterIPs")
                .and_then(|ips| ips.get(0))
                .and_then(Value::as_str)
        })
        .unwrap_or_default()
        .to_string();
    let ip = match given.as_str() {
        "None" => {
            spec.insert("clusterIP".into(), json!("None"));
            spec.insert("clusterIPs".into(), json!(["None"]));
            return Ok(None);
        }
        "" => pick(
            ranges.ips.size(),
            1,
            |i| ranges.ips.nth(i),
            |ip| used.ips.contains(ip),
            rng,
        )
        .ok_or(PlanError::IpRangeFull)?,
        text => {
            let parsed = text.parse::<Ipv4Addr>().ok();
            match parsed {
                Some(ip) if held.ip == Some(ip) => ip,
                Some(ip) if !ranges.ips.contains(ip) => {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        text,
                        &format!(
                            "provided IP is not in the valid range. The range of valid IPs is {}",
                            ranges.ips
                        ),
                    ));
                    return Ok(None);
                }
                Some(ip) if used.ips.contains(&ip) => {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        text,
                        "provided IP is already allocated",
                    ));
                    return Ok(None);
                }
                Some(ip) => ip,
                None => {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs",
                        text,
                        &format!(
                            "provided IP is not in the valid range. The range of valid IPs is {}",
                            ranges.ips
                        ),
                    ));
                    return Ok(None);
                }
            }
        }
    };
    spec.insert("clusterIP".into(), json!(ip.to_string()));
    spec.insert("clusterIPs".into(), json!([ip.to_string()]));
    Ok(Some(ip))
}

/// Checks the requested nodePorts, then allocates one for every port without (ports with the
/// same `port` number share one, as Kubernetes does for TCP and UDP of one port).
fn plan_ports(
    ranges: &ServiceRanges,
    held: &Held,
    new: &mut Value,
    used: &Used,
    causes: &mut Vec<Cause>,
    claim: &mut Held,
    rng: &mut impl Rng,
) -> Result<BTreeSet<u16>, PlanError> {
    let wanted = wants_node_ports(new);
    let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return Ok(BTreeSet::new());
    };
    let mut kept = BTreeSet::new();
    let mut seen: BTreeSet<(u16, String)> = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Some(node_port) = port
            .get("nodePort")
            .and_then(Value::as_u64)
            .filter(|p| *p != 0)
        else {
            continue;
        };
        let field = format!("spec.ports[{i}].nodePort");
        let Ok(node_port) = u16::try_from(node_port) else {
            continue; // validation refuses it
        };
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        if !seen.insert((node_port, protocol)) {
            causes.push(Cause::duplicate(&field, node_port));
            continue;
        }
        if held.ports.contains(&node_port) || kept.contains(&node_port) {
            kept.insert(node_port);
            continue;
        }
        if !ranges.node_ports.contains(node_port) {
            causes.push(Cause::invalid(
                &field,
                node_port,
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {}",
                    ranges.node_ports
                ),
            ));
        } else if used.ports.contains(&node_port) {
            causes.push(Cause::invalid(
                &field,
                node_port,
                "provided port is already allocated",
            ));
        } else {
            kept.insert(node_port);
            claim.ports.insert(node_port);
        }
    }
    if !wanted {
        return Ok(kept);
    }
    let mut by_port: Vec<(Option<u64>, u16)> = Vec::new();
    for port in ports.iter_mut() {
        let Some(port) = port.as_object_mut() else {
            continue;
        };
        let number = port.get("port").and_then(Value::as_u64);
        if let Some(node_port) = port
            .get("nodePort")
            .and_then(Value::as_u64)
            .filter(|p| *p != 0)
            .and_then(|p| u16::try_from(p).ok())
        {
            by_port.push((number, node_port));
            continue;
        }
        let shared = by_port
            .iter()
            .find(|(n, _)| *n == number && number.is_some())
            .map(|(_, p)| *p);
        let node_port = match shared {
            Some(p) => p,
            None => pick(
                ranges.node_ports.size(),
                0,
                |i| ranges.node_ports.nth(i),
                |p| used.ports.contains(p) || kept.contains(p),
                rng,
            )
            .ok_or(PlanError::PortRangeFull)?,
        };
        port.insert("nodePort".into(), json!(node_port));
        by_port.push((number, node_port));
        if kept.insert(node_port) {
            claim.ports.insert(node_port);
        }
    }
    Ok(kept)
}

/// What an update does before defaulting, as Kubernetes' Service REST update does: the
/// allocated clusterIP(s) and nodePorts are carried over when the update leaves them out,
/// and those the new type does not have are dropped when the update did not change them.
pub(crate) fn prepare_update(old: &Value, new: &mut Value) {
    let old_type = service_type(old).to_string();
    let new_type = service_type(new).to_string();
    let Some(old_spec) = old.get("spec").and_then(Value::as_object) else {
        return;
    };
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let unset = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    };
    if new_type == "ExternalName" {
        if old_type != "ExternalName" {
            for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if spec.get(key) == old_spec.get(key) {
                    spec.remove(key);
                }
            }
        }
    } else if old_type != "ExternalName" {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if unset(spec.get(key)) {
                if let Some(value) = old_spec.get(key) {
                    spec.insert(key.to_string(), value.clone());
                }
            }
        }
    }
    let old_node_port = |port: &Value| -> Option<Value> {
        let key = |p: &Value| {
            (
                p.get("port").and_then(Value::as_i64),
                p.get("protocol")
                    .and_then(Value::as_str)
                    .unwrap_or("TCP")
                    .to_string(),
            )
        };
        old_spec
            .get("ports")
            .and_then(Value::as_array)?
            .iter()
            .find(|p| key(p) == key(port))?
            .get("nodePort")
            .cloned()
    };
    let node_ports = matches!(new_type.as_str(), "NodePort" | "LoadBalancer");
    let old_node_ports = matches!(old_type.as_str(), "NodePort" | "LoadBalancer");
    if old_node_ports && !node_ports {
        for key in ["externalTrafficPolicy", "healthCheckNodePort"] {
            if spec.get(key) == old_spec.get(key) {
                spec.remove(key);
            }
        }
    }
    if old_type == "LoadBalancer"
        && new_type != "LoadBalancer"
        && spec.get("allocateLoadBalancerNodePorts")
            == old_spec.get("allocateLoadBalancerNodePorts")
    {
        spec.remove("allocateLoadBalancerNodePorts");
    }
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in ports.iter_mut() {
        let previous = old_node_port(port);
        let Some(map) = port.as_object_mut() else {
            continue;
        };
        let given = map
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|p| *p != 0);
        if node_ports {
            if given.is_none() {
                if let Some(previous) = previous {
                    map.insert("nodePort".into(), previous);
                }
            }
        } else if given.is_some() && map.get("nodePort") == previous.as_ref() {
            map.remove("nodePort");
        }
    }
}

/// An allocation key as read from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) key: String,
    pub(crate) mod_revision: u64,
    pub(crate) value: Vec<u8>,
}

/// What the repair loop finds comparing Services with allocation keys read at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Audit {
    /// Keys a Service holds but the store lacks (written before allocation keys existed).
    pub(crate) missing: Vec<(String, Vec<u8>)>,
    /// Keys whose owner (by uid) does not exist or no longer holds them, with the revision
    /// they were last written at.
    pub(crate) orphaned: Vec<(String, u64)>,
}

pub(crate) fn audit(services: &[Value], claims: &[Claim]) -> Audit {
    use std::collections::BTreeMap;
    let mut expected: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    for service in services {
        let Some(uid) = service.pointer("/metadata/uid").and_then(Value::as_str) else {
            continue;
        };
        let external = service_type(service) == "ExternalName";
        let held = Held::of(service);
        let keys = held
            .ip
            .filter(|_| !external)
            .map(ip_key)
            .into_iter()
            .chain(held.ports.iter().map(|p| port_key(*p)));
        for key in keys {
            expected
                .entry(key)
                .or_insert_with(|| (uid.to_string(), owner_value(service)));
        }
    }
    let mut audit = Audit::default();
    let present: BTreeSet<&str> = claims.iter().map(|c| c.key.as_str()).collect();
    for claim in claims {
        let owner = owner_uid(&claim.value);
        let held = expected
            .get(&claim.key)
            .is_some_and(|(uid, _)| owner.as_deref() == Some(uid.as_str()));
        if !held {
            audit.orphaned.push((claim.key.clone(), claim.mod_revision));
        }
    }
    for (key, (_, value)) in expected {
        if !present.contains(key.as_str()) {
            audit.missing.push((key, value));
        }
    }
    audit
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use rand::SeedableRng;

    fn ranges(cidr: &str, ports: &str) -> ServiceRanges {
        ServiceRanges {
            ips: cidr.parse().unwrap(),
            node_ports: ports.parse().unwrap(),
        }
    }

    /// Input, and the parsed range (its canonical text and size) or the error.
    type ParseCase<'a> = (&'a str, Result<(&'a str, u32), RangeError>);

    #[test]
    fn ranges_parse() {
        let cases: &[ParseCase<'_>] = &[
            ("10.96.0.0/12", Ok(("10.96.0.0/12", (1 << 20) - 2))),
            ("10.96.0.7/26", Ok(("10.96.0.0/26", 62))),
            ("10.0.0.0/30", Ok(("10.0.0.0/30", 2))),
            (
                "10.0.0.0/31",
                Err(RangeError::CidrTooSmall("10.0.0.0/31".into())),
            ),
            ("10.0.0.0/33", Err(RangeError::Cidr("10.0.0.0/33".into()))),
            ("fd00::/108", Err(RangeError::Cidr("fd00::/108".into()))),
            ("10.0.0.0", Err(RangeError::Cidr("10.0.0.0".into()))),
        ];
        for (text, want) in cases {
            let got = text
                .parse::<ServiceIpRange>()
                .map(|r| (r.to_string(), r.size()));
            let want = want.clone().map(|(s, n)| (s.to_string(), n));
            assert_eq!(got, want, "{text}");
        }
        let ports: &[(&str, Option<(u32, &str)>)] = &[
            ("30000-32767", Some((2768, "30000-32767"))),
            ("30000-30000", Some((1, "30000-30000"))),
            ("0-10", None),
            ("20-10", None),
            ("30000", None),
            ("30000-70000", None),
        ];
        for (text, want) in ports {
            let got = text
                .parse::<NodePortRange>()
                .ok()
                .map(|r| (r.size(), r.to_string()));
            assert_eq!(got, want.map(|(n, s)| (n, s.to_string())), "{text}");
        }
    }

    #[test]
    fn ip_range_contains_only_host_addresses() {
        let r: ServiceIpRange = "10.96.0.0/26".parse().unwrap();
        for (ip, want) in [
            ("10.96.0.0", false),
            ("10.96.0.1", true),
            ("10.96.0.62", true),
            ("10.96.0.63", false),
            ("10.96.0.64", false),
            ("10.95.255.255", false),
        ] {
            assert_eq!(r.contains(ip.parse().unwrap()), want, "{ip}");
        }
        assert_eq!(r.nth(0), Some(Ipv4Addr::new(10, 96, 0, 1)));
        assert_eq!(r.nth(61), Some(Ipv4Addr::new(10, 96, 0, 62)));
        assert_eq!(r.nth(62), None);
    }

    #[test]
    fn pick_finds_every_free_value_and_reports_full() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let taken: BTreeSet<u32> = (0..10).filter(|i| *i != 6).collect();
        for _ in 0..20 {
            assert_eq!(pick(10, 0, Some, |v| taken.contains(v), &mut rng), Some(6));
        }
        let all: BTreeSet<u32> = (0..10).collect();
        assert_eq!(pick(10, 0, Some, |v| all.contains(v), &mut rng), None);
        // The skipped head is never picked.
        assert_eq!(pick(1, 1, Some, |_| false, &mut rng), None);
        for _ in 0..20 {
            assert_ne!(pick(3, 1, Some, |_| false, &mut rng), Some(0));
        }
    }

    fn service(spec: Value) -> Value {
        json!({"metadata": {"name": "s", "namespace": "default", "uid": "u1"}, "spec": spec})
    }

    struct Case {
        name: &'static str,
        old: Option<Value>,
        new: Value,
        used_ips: &'static [&'static str],
        used_ports: &'static [u16],
        want: Result<(Held, Held), String>,
    }

    fn held(ip: Option<&str>, ports: &[u16]) -> Held {
        Held {
            ip: ip.map(|ip| ip.parse().unwrap()),
            ports: ports.iter().copied().collect(),
        }
    }

    #[test]
    fn plans() {
        let r = ranges("10.96.0.0/29", "30000-30002");
        let cases = vec![
            Case {
                name: "given free IP",
                old: None,
                new: service(json!({"type": "ClusterIP", "clusterIP": "10.96.0.3"})),
                used_ips: &[],
                used_ports: &[],
                want: Ok((held(Some("10.96.0.3"), &[]), Held::default())),
            },
            Case {
                name: "given taken IP",
                old: None,
                new: service(json!({"type": "ClusterIP", "clusterIP": "10.96.0.3"})),
                used_ips: &["10.96.0.3"],
                used_ports: &[],
                want: Err("spec.clusterIPs: Invalid value: \"10.96.0.3\": provided IP is already allocated".into()),
            },
            Case {
                name: "given IP out of range",
                old: None,
                new: service(json!({"type": "ClusterIP", "clusterIP": "10.97.0.3"})),
                used_ips: &[],
                used_ports: &[],
                want: Err("spec.clusterIPs: Invalid value: \"10.97.0.3\": provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/29".into()),
            },
            Case {
                name: "the only free IP besides the reserved first",
                old: None,
                new: service(json!({"type": "ClusterIP"})),
                used_ips: &["10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5", "10.96.0.6"],
                used_ports: &[],
                want: Err("range full".into()),
            },
            Case {
                name: "headless and ExternalName claim nothing",
                old: None,
                new: service(json!({"type": "ClusterIP", "clusterIP": "None"})),
                used_ips: &[],
                used_ports: &[],
                want: Ok((Held::default(), Held::default())),
            },
            Case {
                name: "ExternalName",
                old: None,
                new: service(json!({"type": "ExternalName", "externalName": "a.b"})),
                used_ips: &[],
                used_ports: &[],
                want: Ok((Held::default(), Held::default())),
            },
            Case {
                name: "node ports: given, then allocated, shared by port number",
                old: None,
                new: service(json!({"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [
                    {"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"},
                    {"port": 80, "nodePort": 30000}]})),
                used_ips: &[],
                used_ports: &[30001],
                want: Ok((held(Some("10.96.0.2"), &[30000, 30002]), Held::default())),
            },
            Case {
                name: "node port taken and out of range",
                old: None,
                new: service(json!({"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [
                    {"port": 80, "nodePort": 30001}, {"port": 81, "nodePort": 40000}]})),
                used_ips: &[],
                used_ports: &[30001],
                want: Err("spec.ports[0].nodePort: Invalid value: 30001: provided port is already allocated, spec.ports[1].nodePort: Invalid value: 40000: provided port is not in the valid range. The range of valid ports is 30000-30002".into()),
            },
            Case {
                name: "node ports full",
                old: None,
                new: service(json!({"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [{"port": 80}]})),
                used_ips: &[],
                used_ports: &[30000, 30001, 30002],
                want: Err("port range full".into()),
            },
            Case {
                name: "update keeps what it holds and swaps ports among them",
                old: Some(service(json!({"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [
                    {"port": 80, "nodePort": 30000}, {"port": 81, "nodePort": 30001}]}))),
                new: service(json!({"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [
                    {"port": 80, "nodePort": 30001}, {"port": 81, "nodePort": 30000}]})),
                used_ips: &["10.96.0.2"],
                used_ports: &[30000, 30001],
                want: Ok((Held::default(), Held::default())),
            },
            Case {
                name: "NodePort to ClusterIP releases the ports",
                old: Some(service(json!({"type": "NodePort", "clusterIP": "10.96.0.2", "ports": [
                    {"port": 80, "nodePort": 30000}]}))),
                new: service(json!({"type": "ClusterIP", "clusterIP": "10.96.0.2", "ports": [{"port": 80}]})),
                used_ips: &["10.96.0.2"],
                used_ports: &[30000],
                want: Ok((Held::default(), held(None, &[30000]))),
            },
            Case {
                name: "to ExternalName releases the IP",
                old: Some(service(json!({"type": "ClusterIP", "clusterIP": "10.96.0.2"}))),
                new: service(json!({"type": "ExternalName", "externalName": "x.y"})),
                used_ips: &["10.96.0.2"],
                used_ports: &[],
                want: Ok((Held::default(), held(Some("10.96.0.2"), &[]))),
            },
        ];
        for case in cases {
            let mut rng = rand::rngs::StdRng::seed_from_u64(1);
            let used = Used {
                ips: case.used_ips.iter().map(|s| s.parse().unwrap()).collect(),
                ports: case.used_ports.iter().copied().collect(),
            };
            let mut new = case.new.clone();
            let got = plan(&r, case.old.as_ref(), &mut new, &used, &mut rng);
            let got = match got {
                Ok(p) => Ok((p.claim, p.release)),
                Err(PlanError::Invalid(causes)) => Err(causes
                    .iter()
                    .map(Cause::to_text)
                    .collect::<Vec<_>>()
                    .join(", ")),
                Err(PlanError::IpRangeFull) => Err("range full".into()),
                Err(PlanError::PortRangeFull) => Err("port range full".into()),
            };
            assert_eq!(got, case.want, "{}", case.name);
            if let Ok((claim, _)) = &got {
                let after = Held::of(&new);
                if let Some(ip) = claim.ip {
                    assert_eq!(after.ip, Some(ip), "{}", case.name);
                    assert_eq!(new["spec"]["clusterIPs"], json!([ip.to_string()]));
                }
                assert!(claim.ports.is_subset(&after.ports), "{}", case.name);
            }
        }
    }

    #[test]
    fn allocates_a_free_ip_and_fills_both_fields() {
        let r = ranges("10.96.0.0/29", "30000-30002");
        let used = Used {
            ips: ["10.96.0.2", "10.96.0.3", "10.96.0.4", "10.96.0.5"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect(),
            ports: BTreeSet::new(),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut new = service(json!({"type": "ClusterIP", "ports": [{"port": 80}]}));
        let p = plan(&r, None, &mut new, &used, &mut rng).unwrap();
        assert_eq!(p.claim.ip, Some(Ipv4Addr::new(10, 96, 0, 6)));
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.6");
        assert_eq!(new["spec"]["clusterIPs"], json!(["10.96.0.6"]));
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn audit_finds_orphans_and_missing_keys() {
        let a = service(json!({"type": "NodePort", "clusterIP": "10.96.0.2",
            "ports": [{"port": 80, "nodePort": 30000}]}));
        let mut b = service(json!({"type": "ClusterIP", "clusterIP": "10.96.0.3"}));
        b["metadata"]["uid"] = json!("u2");
        let claim = |key: String, rev: u64, owner: &Value| Claim {
            key,
            mod_revision: rev,
            value: owner_value(owner),
        };
        let mut gone = service(json!({}));
        gone["metadata"]["uid"] = json!("gone");
        let claims = vec![
            claim(ip_key(Ipv4Addr::new(10, 96, 0, 2)), 5, &a),
            claim(port_key(30001), 6, &a),
            claim(ip_key(Ipv4Addr::new(10, 96, 0, 9)), 7, &gone),
            // Held by b in the Service, but the key names another owner.
            claim(ip_key(Ipv4Addr::new(10, 96, 0, 3)), 8, &gone),
        ];
        let got = audit(&[a.clone(), b], &claims);
        assert_eq!(
            got.orphaned,
            vec![
                ("/registry/ranges/servicenodeports/30001".to_string(), 6),
                ("/registry/ranges/serviceips/10.96.0.9".to_string(), 7),
                ("/registry/ranges/serviceips/10.96.0.3".to_string(), 8),
            ]
        );
        assert_eq!(got.missing, vec![(port_key(30000), owner_value(&a))]);
    }

    #[test]
    fn prepare_update_carries_and_drops() {
        let old = service(json!({"type": "NodePort", "clusterIP": "10.96.0.2",
            "clusterIPs": ["10.96.0.2"], "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30000}]}));
        // A PUT that leaves the allocations out keeps them.
        let mut new = service(json!({"type": "NodePort", "ports": [{"port": 80}]}));
        prepare_update(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.2");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30000);
        // To ClusterIP: the unchanged nodePort goes.
        let mut old = old.clone();
        old["spec"]["externalTrafficPolicy"] = json!("Cluster");
        let mut new = old.clone();
        new["spec"]["type"] = json!("ClusterIP");
        prepare_update(&old, &mut new);
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert!(new["spec"].get("externalTrafficPolicy").is_none());
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.2");
        // To ExternalName: the unchanged IP fields go.
        let mut new = old.clone();
        new["spec"]["type"] = json!("ExternalName");
        new["spec"]["externalName"] = json!("x.example");
        prepare_update(&old, &mut new);
        assert!(new["spec"].get("clusterIP").is_none());
        assert!(new["spec"].get("clusterIPs").is_none());
        assert!(new["spec"].get("ipFamilies").is_none());
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
    }
}
