//! The cluster DNS table: a pure function from Services and Endpoints (Kubernetes JSON) to the
//! records of the cluster zone, and the lookup that answers one question from it.
//!
//! Records follow Kubernetes' DNS specification
//! (<https://github.com/kubernetes/dns/blob/master/docs/specification.md>):
//! - `svc.ns.svc.<zone>` A/AAAA → the ClusterIPs; for a headless service (clusterIP `None`) one
//!   record per ready endpoint address (`subsets[].addresses`, never `notReadyAddresses`);
//! - `<host>.svc.ns.svc.<zone>` A/AAAA per ready endpoint of a headless service, where `<host>` is
//!   the endpoint's `hostname` or else its IP with `.`/`:` replaced by `-`;
//! - `_port._proto.svc.ns.svc.<zone>` SRV for each named port: the target is the service name
//!   (ClusterIP services) or each endpoint's host name above (headless services);
//! - an ExternalName service is a CNAME to its `externalName`;
//! - PTR records for ClusterIPs and headless endpoint addresses.
//!
//! Names are matched case-insensitively (everything is stored lower-case).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde_json::Value;

/// What the table says about one question.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    /// The name exists and has records of the asked type (or is a CNAME).
    Records(Vec<Record>),
    /// The name exists in the zone but has no record of the asked type: NOERROR, SOA in authority.
    NoData(Record),
    /// The name is in the zone and does not exist: NXDOMAIN, SOA in authority.
    NxDomain(Record),
    /// The name is not ours: forward it to the upstream resolvers.
    Forward,
}

/// The records of the cluster zone (and of the reverse names of its addresses).
#[derive(Debug, Clone)]
pub(crate) struct Table {
    zone: Name,
    soa: Record,
    records: HashMap<(Name, RecordType), Vec<Record>>,
    /// Every name that exists in the zone, including empty non-terminals (`ns.svc.<zone>`), so
    /// that they answer NOERROR/no data rather than NXDOMAIN (RFC 8020).
    names: HashSet<Name>,
}

impl Table {
    /// Builds the table for `zone` (e.g. `cluster.local.`) from full lists of Services and
    /// Endpoints. Bad objects are logged and skipped.
    pub(crate) fn build(
        zone: &Name,
        ttl: u32,
        serial: u32,
        services: &[Value],
        endpoints: &[Value],
    ) -> Table {
        let zone = fqdn_lower(zone);
        let soa = soa_record(&zone, ttl, serial);
        let mut table = Table {
            zone: zone.clone(),
            soa,
            records: HashMap::new(),
            names: HashSet::new(),
        };
        table.names.insert(zone.clone());
        let endpoints_by_key: HashMap<(&str, &str), &Value> = endpoints
            .iter()
            .filter_map(|e| Some(((namespace_of(e), obj_name(e)?), e)))
            .collect();
        for service in services {
            if let Err(reason) = table.add_service(service, &endpoints_by_key, ttl) {
                tracing::warn!(
                    service = %format!("{}/{}", namespace_of(service), obj_name(service).unwrap_or("?")),
                    %reason,
                    "cluster dns: skipping service"
                );
            }
        }
        table
    }

    /// Answers a question. `name` may have any case.
    pub(crate) fn lookup(&self, name: &Name, rtype: RecordType) -> Lookup {
        let name = fqdn_lower(name);
        if !self.zone.zone_of(&name) {
            if rtype == RecordType::PTR {
                if let Some(records) = self.records.get(&(name, RecordType::PTR)) {
                    return Lookup::Records(records.clone());
                }
            }
            return Lookup::Forward;
        }
        if let Some(cname) = self.records.get(&(name.clone(), RecordType::CNAME)) {
            return Lookup::Records(cname.clone());
        }
        if rtype == RecordType::SOA && name == self.zone {
            return Lookup::Records(vec![self.soa.clone()]);
        }
        if rtype == RecordType::ANY {
            let mut all: Vec<Record> = self
                .records
                .iter()
                .filter(|((n, _), _)| *n == name)
                .flat_map(|(_, records)| records.iter().cloned())
                .collect();
            if !all.is_empty() {
                all.sort_by_key(|r| u16::from(r.record_type()));
                return Lookup::Records(all);
            }
        } else if let Some(records) = self.records.get(&(name.clone(), rtype)) {
            return Lookup::Records(records.clone());
        }
        if self.names.contains(&name) {
            Lookup::NoData(self.soa.clone())
        } else {
            Lookup::NxDomain(self.soa.clone())
        }
    }

    fn add_service(
        &mut self,
        service: &Value,
        endpoints: &HashMap<(&str, &str), &Value>,
        ttl: u32,
    ) -> Result<(), String> {
        let name = obj_name(service).ok_or("no metadata.name")?;
        let ns = namespace_of(service);
        let svc_name = self.name_in_zone(&[name, ns, "svc"])?;
        let spec = service.get("spec").unwrap_or(&Value::Null);
        let svc_type = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP");
        if svc_type == "ExternalName" {
            let target = spec
                .get("externalName")
                .and_then(Value::as_str)
                .ok_or("ExternalName service without spec.externalName")?;
            let mut target = Name::from_ascii(target).map_err(|e| format!("externalName: {e}"))?;
            target.set_fqdn(true);
            self.insert(
                &svc_name,
                Record::from_rdata(svc_name.clone(), ttl, RData::CNAME(CNAME(target))),
            );
            return Ok(());
        }
        let cluster_ips = cluster_ips(spec);
        let headless = cluster_ips.iter().any(|ip| ip.eq_ignore_ascii_case("None"));
        if headless {
            self.names.insert(svc_name.clone());
            let Some(eps) = endpoints.get(&(ns, name)) else {
                return Ok(());
            };
            for subset in array(eps.get("subsets")) {
                let ports: Vec<Port> = array(subset.get("ports")).filter_map(Port::parse).collect();
                for address in array(subset.get("addresses")) {
                    let Some(ip) = address
                        .get("ip")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<IpAddr>().ok())
                    else {
                        tracing::warn!(service = %svc_name, "cluster dns: skipping endpoint address without a valid ip");
                        continue;
                    };
                    let host = address
                        .get("hostname")
                        .and_then(Value::as_str)
                        .filter(|h| !h.is_empty())
                        .map(str::to_owned)
                        .unwrap_or_else(|| dashed(ip));
                    let host_name = match Name::from_ascii(&host)
                        .and_then(|h| h.append_domain(&svc_name))
                    {
                        Ok(n) => fqdn_lower(&n),
                        Err(e) => {
                            tracing::warn!(service = %svc_name, %host, error = %e, "cluster dns: skipping endpoint with a bad hostname");
                            continue;
                        }
                    };
                    self.insert_address(&svc_name, ip, ttl);
                    self.insert_address(&host_name, ip, ttl);
                    self.insert_ptr(ip, &host_name, ttl);
                    for port in &ports {
                        self.insert_srv(&svc_name, port, &host_name, ttl);
                    }
                }
            }
            return Ok(());
        }
        let ips: Vec<IpAddr> = cluster_ips.iter().filter_map(|s| s.parse().ok()).collect();
        if ips.is_empty() {
            return Err("no ClusterIP allocated yet".to_owned());
        }
        for ip in ips {
            self.insert_address(&svc_name, ip, ttl);
            self.insert_ptr(ip, &svc_name, ttl);
        }
        for port in array(spec.get("ports")).filter_map(Port::parse) {
            self.insert_srv(&svc_name, &port, &svc_name.clone(), ttl);
        }
        Ok(())
    }

    /// `labels` + the zone, lower-case, fully qualified.
    fn name_in_zone(&self, labels: &[&str]) -> Result<Name, String> {
        let relative = Name::from_labels(labels.iter().map(|l| l.as_bytes()))
            .map_err(|e| format!("bad dns name {labels:?}: {e}"))?;
        let name = relative
            .append_domain(&self.zone)
            .map_err(|e| format!("bad dns name {labels:?}: {e}"))?;
        Ok(fqdn_lower(&name))
    }

    fn insert_address(&mut self, name: &Name, ip: IpAddr, ttl: u32) {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.insert(name, Record::from_rdata(name.clone(), ttl, rdata));
    }

    fn insert_ptr(&mut self, ip: IpAddr, target: &Name, ttl: u32) {
        let reverse = fqdn_lower(&Name::from(ip));
        let record = Record::from_rdata(reverse.clone(), ttl, RData::PTR(PTR(target.clone())));
        let set = self.records.entry((reverse, RecordType::PTR)).or_default();
        if !set.contains(&record) {
            set.push(record);
        }
    }

    fn insert_srv(&mut self, svc_name: &Name, port: &Port, target: &Name, ttl: u32) {
        let Some(port_name) = &port.name else { return };
        let owner = match Name::from_labels([
            format!("_{port_name}").as_bytes(),
            format!("_{}", port.protocol).as_bytes(),
        ])
        .and_then(|n| n.append_domain(svc_name))
        {
            Ok(n) => fqdn_lower(&n),
            Err(e) => {
                tracing::warn!(service = %svc_name, port = %port_name, error = %e, "cluster dns: skipping a port with a bad name");
                return;
            }
        };
        let srv = SRV::new(0, 100, port.number, target.clone());
        self.insert(
            &owner,
            Record::from_rdata(owner.clone(), ttl, RData::SRV(srv)),
        );
    }

    /// Adds a record (deduplicated) and marks its name and all its ancestors in the zone as
    /// existing.
    fn insert(&mut self, name: &Name, record: Record) {
        let set = self
            .records
            .entry((name.clone(), record.record_type()))
            .or_default();
        if !set.contains(&record) {
            set.push(record);
        }
        let mut current = name.clone();
        while self.zone.zone_of(&current) && self.names.insert(current.clone()) {
            if current.is_root() {
                break;
            }
            current = current.base_name();
        }
    }
}

/// A service or endpoint port.
struct Port {
    name: Option<String>,
    number: u16,
    protocol: String,
}

impl Port {
    fn parse(value: &Value) -> Option<Port> {
        let number = value.get("port").and_then(Value::as_u64)?;
        let number = u16::try_from(number).ok()?;
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .map(str::to_ascii_lowercase);
        let protocol = value
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_ascii_lowercase();
        Some(Port {
            name,
            number,
            protocol,
        })
    }
}

fn soa_record(zone: &Name, ttl: u32, serial: u32) -> Record {
    // Both names are built from the zone, which is already a valid name; should the prefix
    // make one too long, the zone itself stands in.
    let mname = Name::from_ascii("ns.dns")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone());
    let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, ttl);
    Record::from_rdata(zone.clone(), ttl, RData::SOA(soa))
}

fn cluster_ips(spec: &Value) -> Vec<String> {
    let list: Vec<String> = array(spec.get("clusterIPs"))
        .filter_map(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if !list.is_empty() {
        return list;
    }
    spec.get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_owned()])
        .unwrap_or_default()
}

/// `10.0.0.1` → `10-0-0-1`; `fd00::1` → `fd00--1`.
fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

fn array(value: Option<&Value>) -> impl Iterator<Item = &Value> {
    value
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

fn obj_name(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/name").and_then(Value::as_str)
}

fn namespace_of(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
}

pub(crate) fn fqdn_lower(name: &Name) -> Name {
    let mut name = name.to_lowercase();
    name.set_fqdn(true);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Name {
        Name::from_ascii("cluster.local.").unwrap()
    }

    fn services() -> Vec<Value> {
        vec![
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.0.10", "ports": [
                       {"name": "http", "port": 80, "protocol": "TCP"},
                       {"port": 8080}]}}),
            json!({"metadata": {"name": "db", "namespace": "prod"},
                   "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "example.com"}}),
            json!({"metadata": {"name": "dual", "namespace": "default"},
                   "spec": {"clusterIPs": ["10.96.0.11", "fd00::11"], "ports": [
                       {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
            json!({"metadata": {"name": "pending", "namespace": "default"}, "spec": {}}),
            json!({"metadata": {"namespace": "default"}, "spec": {"clusterIP": "10.96.0.99"}}),
            json!("garbage"),
        ]
    }

    fn endpoints() -> Vec<Value> {
        vec![
            json!({"metadata": {"name": "db", "namespace": "prod"}, "subsets": [{
                "addresses": [{"ip": "10.0.0.1", "hostname": "db-0"}, {"ip": "10.0.0.2"},
                              {"ip": "not-an-ip"}],
                "notReadyAddresses": [{"ip": "10.0.0.3"}],
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}]}),
            json!({"metadata": {"name": "web", "namespace": "default"}, "subsets": [{
                "addresses": [{"ip": "10.0.1.1"}], "ports": [{"name": "http", "port": 8000}]}]}),
            json!(42),
        ]
    }

    /// One row: a question and the expected answer, written as text (rdata strings sorted, or
    /// "NODATA" / "NXDOMAIN" / "FORWARD").
    fn check(table: &Table, cases: &[(&str, RecordType, &[&str])]) {
        for (name, rtype, expected) in cases {
            let got = match table.lookup(&Name::from_ascii(name).unwrap(), *rtype) {
                Lookup::Records(records) => {
                    let mut texts: Vec<String> = records
                        .iter()
                        .map(|r| format!("{} {}", r.record_type(), r.data()))
                        .collect();
                    texts.sort();
                    texts
                }
                Lookup::NoData(soa) => {
                    assert_eq!(soa.record_type(), RecordType::SOA);
                    vec!["NODATA".to_owned()]
                }
                Lookup::NxDomain(soa) => {
                    assert_eq!(soa.record_type(), RecordType::SOA);
                    vec!["NXDOMAIN".to_owned()]
                }
                Lookup::Forward => vec!["FORWARD".to_owned()],
            };
            let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            assert_eq!(got, expected, "{name} {rtype}");
        }
    }

    #[test]
    fn dns_records_answer_per_kubernetes_spec() {
        use RecordType::*;
        let table = Table::build(&zone(), 5, 1, &services(), &endpoints());
        check(
            &table,
            &[
                // ClusterIP service; case-insensitive; with or without the trailing dot.
                ("web.default.svc.cluster.local.", A, &["A 10.96.0.10"]),
                ("WEB.Default.SVC.cluster.LOCAL", A, &["A 10.96.0.10"]),
                ("web.default.svc.cluster.local.", AAAA, &["NODATA"]),
                ("web.default.svc.cluster.local.", TXT, &["NODATA"]),
                (
                    "_http._tcp.web.default.svc.cluster.local.",
                    SRV,
                    &["SRV 0 100 80 web.default.svc.cluster.local."],
                ),
                // Unnamed ports have no SRV record.
                ("_tcp.web.default.svc.cluster.local.", SRV, &["NODATA"]),
                // Dual-stack.
                ("dual.default.svc.cluster.local.", A, &["A 10.96.0.11"]),
                ("dual.default.svc.cluster.local.", AAAA, &["AAAA fd00::11"]),
                (
                    "_dns._udp.dual.default.svc.cluster.local.",
                    SRV,
                    &["SRV 0 100 53 dual.default.svc.cluster.local."],
                ),
                // Headless: ready addresses only; per-endpoint names and SRV targets.
                (
                    "db.prod.svc.cluster.local.",
                    A,
                    &["A 10.0.0.1", "A 10.0.0.2"],
                ),
                ("db-0.db.prod.svc.cluster.local.", A, &["A 10.0.0.1"]),
                ("10-0-0-2.db.prod.svc.cluster.local.", A, &["A 10.0.0.2"]),
                ("10-0-0-3.db.prod.svc.cluster.local.", A, &["NXDOMAIN"]),
                (
                    "_pg._tcp.db.prod.svc.cluster.local.",
                    SRV,
                    &[
                        "SRV 0 100 5432 10-0-0-2.db.prod.svc.cluster.local.",
                        "SRV 0 100 5432 db-0.db.prod.svc.cluster.local.",
                    ],
                ),
                // ExternalName → CNAME whatever the type asked.
                ("ext.default.svc.cluster.local.", A, &["CNAME example.com."]),
                (
                    "ext.default.svc.cluster.local.",
                    CNAME,
                    &["CNAME example.com."],
                ),
                // Services without an allocated ClusterIP or name are skipped.
                ("pending.default.svc.cluster.local.", A, &["NXDOMAIN"]),
                // Empty non-terminals exist; unknown names don't.
                ("default.svc.cluster.local.", A, &["NODATA"]),
                ("svc.cluster.local.", A, &["NODATA"]),
                ("cluster.local.", A, &["NODATA"]),
                ("nope.default.svc.cluster.local.", A, &["NXDOMAIN"]),
                ("web.nope.svc.cluster.local.", A, &["NXDOMAIN"]),
                (
                    "cluster.local.",
                    SOA,
                    &["SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5"],
                ),
                // PTR for ClusterIPs and headless endpoints; other reverse names are forwarded.
                (
                    "10.0.96.10.in-addr.arpa.",
                    PTR,
                    &["PTR web.default.svc.cluster.local."],
                ),
                (
                    "1.0.0.10.in-addr.arpa.",
                    PTR,
                    &["PTR db-0.db.prod.svc.cluster.local."],
                ),
                ("9.9.9.9.in-addr.arpa.", PTR, &["FORWARD"]),
                // Outside the cluster domain.
                ("example.com.", A, &["FORWARD"]),
                ("local.", A, &["FORWARD"]),
                ("web.default.svc.cluster.local.evil.", A, &["FORWARD"]),
            ],
        );
    }

    #[test]
    fn dns_headless_answers_follow_endpoints() {
        let eps = |ips: &[&str]| {
            let addresses: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
            vec![json!({"metadata": {"name": "db", "namespace": "prod"},
                        "subsets": [{"addresses": addresses}]})]
        };
        let t1 = Table::build(&zone(), 5, 1, &services(), &eps(&["10.0.0.1"]));
        check(
            &t1,
            &[("db.prod.svc.cluster.local.", RecordType::A, &["A 10.0.0.1"])],
        );
        let t2 = Table::build(&zone(), 5, 2, &services(), &eps(&["10.0.0.7", "10.0.0.8"]));
        check(
            &t2,
            &[(
                "db.prod.svc.cluster.local.",
                RecordType::A,
                &["A 10.0.0.7", "A 10.0.0.8"],
            )],
        );
        // A headless service with no endpoints exists but has no addresses.
        let t3 = Table::build(&zone(), 5, 3, &services(), &[]);
        check(
            &t3,
            &[("db.prod.svc.cluster.local.", RecordType::A, &["NODATA"])],
        );
    }

    #[test]
    fn dns_other_cluster_domain() {
        let zone = Name::from_ascii("Example.Internal").unwrap();
        let table = Table::build(&zone, 30, 1, &services(), &endpoints());
        check(
            &table,
            &[
                (
                    "web.default.svc.example.internal.",
                    RecordType::A,
                    &["A 10.96.0.10"],
                ),
                (
                    "web.default.svc.cluster.local.",
                    RecordType::A,
                    &["FORWARD"],
                ),
            ],
        );
        match table.lookup(
            &Name::from_ascii("web.default.svc.example.internal").unwrap(),
            RecordType::A,
        ) {
            Lookup::Records(r) => assert_eq!(r[0].ttl(), 30),
            other => panic!("{other:?}"),
        }
    }
}
