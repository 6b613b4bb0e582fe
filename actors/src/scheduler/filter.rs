//! Filters: whether a pod fits a node, and if not why, in kube-scheduler's words; and the
//! aggregated "0/3 nodes are available: ..." message of a pod that fits nowhere.

use std::collections::HashMap;
use std::fmt;

use super::cache::NodeInfo;
use super::pod::{NodeView, PodView, Taint, UNSCHEDULABLE_TAINT};

/// Why a node does not fit a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Reason {
    NotReady,
    Unschedulable,
    Taint { key: String, value: String },
    NodeAffinity,
    Ports,
    TooManyPods,
    InsufficientCpu,
    InsufficientMemory,
    AntiAffinity,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotReady => f.write_str("node(s) were not ready"),
            Reason::Unschedulable => f.write_str("node(s) were unschedulable"),
            Reason::Taint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Reason::NodeAffinity => {
                f.write_str("node(s) didn't match Pod's node affinity/selector")
            }
            Reason::Ports => {
                f.write_str("node(s) didn't have free ports for the requested pod ports")
            }
            Reason::TooManyPods => f.write_str("Too many pods"),
            Reason::InsufficientCpu => f.write_str("Insufficient cpu"),
            Reason::InsufficientMemory => f.write_str("Insufficient memory"),
            Reason::AntiAffinity => f.write_str("node(s) didn't match pod anti-affinity rules"),
        }
    }
}

/// Topology domains (`topologyKey`, value) a pod may not join because of required pod
/// anti-affinity (its own terms, or those of pods already there).
pub(crate) type Domains = Vec<(String, String)>;

fn in_domains(node: &NodeView, domains: &Domains) -> bool {
    domains
        .iter()
        .any(|(key, value)| node.topology_value(key) == Some(value.as_str()))
}

/// The first NoSchedule/NoExecute taint of `taints` that `pod` does not tolerate.
fn untolerated<'a>(pod: &PodView, taints: &'a [Taint]) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        (t.effect == "NoSchedule" || t.effect == "NoExecute")
            && !pod.tolerations.iter().any(|tol| tol.tolerates(t))
    })
}

/// Whether `pod`'s nodeSelector and required node affinity accept `node`.
pub(crate) fn matches_node_selection(pod: &PodView, node: &NodeView) -> bool {
    let selector_ok = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    selector_ok
        && pod
            .required_terms
            .as_ref()
            .is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
}

/// Why `pod` does not fit `node` (holding `info`'s pods); empty when it fits. Filters run in
/// kube-scheduler's order and stop at the first that fails (resources report every shortage).
pub(crate) fn filter(
    pod: &PodView,
    node: &NodeView,
    info: &NodeInfo,
    forbidden: &Domains,
) -> Vec<Reason> {
    if !node.ready {
        return vec![Reason::NotReady];
    }
    if node.unschedulable {
        let tolerated = pod.tolerations.iter().any(|t| {
            t.tolerates(&Taint {
                key: UNSCHEDULABLE_TAINT.to_string(),
                value: String::new(),
                effect: "NoSchedule".to_string(),
            })
        });
        if !tolerated {
            return vec![Reason::Unschedulable];
        }
    }
    if let Some(taint) = untolerated(pod, &node.taints) {
        return vec![Reason::Taint {
            key: taint.key.clone(),
            value: taint.value.clone(),
        }];
    }
    if !matches_node_selection(pod, node) {
        return vec![Reason::NodeAffinity];
    }
    if pod
        .host_ports
        .iter()
        .any(|p| info.ports.iter().any(|used| used.conflicts(p)))
    {
        return vec![Reason::Ports];
    }
    let mut reasons = Vec::new();
    if i64::try_from(info.pod_count).unwrap_or(i64::MAX) + 1 > node.pods_max {
        reasons.push(Reason::TooManyPods);
    }
    let free_cpu = node.allocatable.cpu_milli - info.requested.cpu_milli;
    if pod.requests.cpu_milli > 0 && pod.requests.cpu_milli > free_cpu {
        reasons.push(Reason::InsufficientCpu);
    }
    let free_memory = node.allocatable.memory - info.requested.memory;
    if pod.requests.memory > 0 && pod.requests.memory > free_memory {
        reasons.push(Reason::InsufficientMemory);
    }
    if !reasons.is_empty() {
        return reasons;
    }
    if in_domains(node, forbidden) {
        return vec![Reason::AntiAffinity];
    }
    Vec::new()
}

/// kube-scheduler's message for a pod no node fits: each reason with the number of nodes
/// that gave it, as "COUNT REASON" sorted as text.
pub(crate) fn fit_message(nodes_total: usize, reasons: &HashMap<Reason, usize>) -> String {
    if nodes_total == 0 {
        return "no nodes available to schedule pods".to_string();
    }
    let mut parts: Vec<String> = reasons
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    format!("0/{nodes_total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::super::pod::{HostPort, NodeRequirement, NodeSelectorTerm, Resources, Toleration};
    use super::*;

    fn node() -> NodeView {
        NodeView {
            name: "n1".into(),
            labels: [("disk".to_string(), "ssd".to_string())].into(),
            allocatable: Resources {
                cpu_milli: 1000,
                memory: 1 << 30,
            },
            pods_max: 10,
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        }
    }

    fn toleration(key: &str, operator: &str, value: &str) -> Toleration {
        Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: String::new(),
        }
    }

    fn term(key: &str, operator: &str, values: &[&str]) -> NodeSelectorTerm {
        NodeSelectorTerm {
            expressions: vec![NodeRequirement {
                key: key.into(),
                operator: operator.into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }],
            fields: Vec::new(),
        }
    }

    struct Case {
        name: &'static str,
        pod: PodView,
        node: NodeView,
        info: NodeInfo,
        forbidden: Domains,
        expected: Vec<Reason>,
    }

    fn case(name: &'static str) -> Case {
        Case {
            name,
            pod: PodView::default(),
            node: node(),
            info: NodeInfo::default(),
            forbidden: Vec::new(),
            expected: Vec::new(),
        }
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            assert_eq!(
                filter(&c.pod, &c.node, &c.info, &c.forbidden),
                c.expected,
                "case {}",
                c.name
            );
        }
    }

    #[test]
    fn node_state_taints_and_tolerations() {
        let mut cases = Vec::new();
        cases.push(case("an empty pod fits a ready node"));

        let mut c = case("a node that is not ready");
        c.node.ready = false;
        c.expected = vec![Reason::NotReady];
        cases.push(c);

        let mut c = case("a cordoned node");
        c.node.unschedulable = true;
        c.expected = vec![Reason::Unschedulable];
        cases.push(c);

        let mut c = case("a cordoned node tolerated");
        c.node.unschedulable = true;
        c.pod.tolerations = vec![toleration(UNSCHEDULABLE_TAINT, "Exists", "")];
        cases.push(c);

        let mut c = case("an untolerated NoSchedule taint");
        c.node.taints = vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("dedicated", "gpu", "NoSchedule"),
        ];
        c.expected = vec![Reason::Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
        }];
        cases.push(c);

        let mut c = case("a tolerated taint");
        c.node.taints = vec![taint("dedicated", "gpu", "NoExecute")];
        c.pod.tolerations = vec![toleration("dedicated", "Equal", "gpu")];
        cases.push(c);

        let mut c = case("a toleration with the wrong value");
        c.node.taints = vec![taint("dedicated", "gpu", "NoSchedule")];
        c.pod.tolerations = vec![toleration("dedicated", "Equal", "cpu")];
        c.expected = vec![Reason::Taint {
            key: "dedicated".into(),
            value: "gpu".into(),
        }];
        cases.push(c);

        let mut c = case("an empty key with Exists tolerates everything");
        c.node.taints = vec![taint("a", "", "NoSchedule"), taint("b", "1", "NoExecute")];
        c.pod.tolerations = vec![toleration("", "Exists", "")];
        cases.push(c);

        let mut c = case("a PreferNoSchedule taint does not filter");
        c.node.taints = vec![taint("soft", "", "PreferNoSchedule")];
        cases.push(c);
        check(cases);
    }

    #[test]
    fn node_selectors_and_required_affinity() {
        let mut cases = Vec::new();
        let mut c = case("a matching nodeSelector");
        c.pod.node_selector = [("disk".to_string(), "ssd".to_string())].into();
        cases.push(c);

        let mut c = case("a nodeSelector with another value");
        c.pod.node_selector = [("disk".to_string(), "hdd".to_string())].into();
        c.expected = vec![Reason::NodeAffinity];
        cases.push(c);

        let mut c = case("terms are ORed");
        c.pod.required_terms = Some(vec![
            term("disk", "In", &["hdd"]),
            term("disk", "Exists", &[]),
        ]);
        cases.push(c);

        let mut c = case("NotIn excludes");
        c.pod.required_terms = Some(vec![term("disk", "NotIn", &["ssd"])]);
        c.expected = vec![Reason::NodeAffinity];
        cases.push(c);

        let mut c = case("DoesNotExist on a missing label");
        c.pod.required_terms = Some(vec![term("gpu", "DoesNotExist", &[])]);
        cases.push(c);

        let mut c = case("no terms match nothing");
        c.pod.required_terms = Some(Vec::new());
        c.expected = vec![Reason::NodeAffinity];
        cases.push(c);

        let mut c = case("an empty term matches nothing");
        c.pod.required_terms = Some(vec![NodeSelectorTerm::default()]);
        c.expected = vec![Reason::NodeAffinity];
        cases.push(c);

        let mut c = case("matchFields on the node name");
        c.pod.required_terms = Some(vec![NodeSelectorTerm {
            expressions: Vec::new(),
            fields: vec![NodeRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: vec!["n1".into()],
            }],
        }]);
        cases.push(c);
        check(cases);
    }

    #[test]
    fn resources_ports_and_anti_affinity() {
        let mut cases = Vec::new();
        let mut c = case("requests that fit exactly");
        c.pod.requests = Resources {
            cpu_milli: 600,
            memory: 1 << 29,
        };
        c.info.requested = Resources {
            cpu_milli: 400,
            memory: 1 << 29,
        };
        cases.push(c);

        let mut c = case("too much cpu and memory");
        c.pod.requests = Resources {
            cpu_milli: 601,
            memory: (1 << 29) + 1,
        };
        c.info.requested = Resources {
            cpu_milli: 400,
            memory: 1 << 29,
        };
        c.expected = vec![Reason::InsufficientCpu, Reason::InsufficientMemory];
        cases.push(c);

        let mut c = case("a full node");
        c.info.pod_count = 10;
        c.expected = vec![Reason::TooManyPods];
        cases.push(c);

        let mut c = case("a zero request fits an overcommitted node");
        c.info.requested = Resources {
            cpu_milli: 5000,
            memory: 0,
        };
        cases.push(c);

        let port = |ip: &str, port: i64, protocol: &str| HostPort {
            protocol: protocol.into(),
            ip: ip.into(),
            port,
        };
        let mut c = case("a taken host port");
        c.pod.host_ports = vec![port("0.0.0.0", 80, "TCP")];
        c.info.ports = vec![port("10.0.0.1", 80, "TCP")];
        c.expected = vec![Reason::Ports];
        cases.push(c);

        let mut c = case("the same port over another protocol");
        c.pod.host_ports = vec![port("0.0.0.0", 80, "UDP")];
        c.info.ports = vec![port("0.0.0.0", 80, "TCP")];
        cases.push(c);

        let mut c = case("the same port on another address");
        c.pod.host_ports = vec![port("10.0.0.2", 80, "TCP")];
        c.info.ports = vec![port("10.0.0.1", 80, "TCP")];
        cases.push(c);

        let mut c = case("a forbidden hostname domain");
        c.forbidden = vec![("kubernetes.io/hostname".into(), "n1".into())];
        c.expected = vec![Reason::AntiAffinity];
        cases.push(c);

        let mut c = case("another forbidden host");
        c.forbidden = vec![("kubernetes.io/hostname".into(), "n2".into())];
        cases.push(c);
        check(cases);
    }

    /// Nodes in all, the count of nodes per reason, the message.
    type MessageCase = (usize, Vec<(Reason, usize)>, &'static str);

    #[test]
    fn messages_count_reasons_per_node_sorted_as_text() {
        let cases: Vec<MessageCase> = vec![
            (0, vec![], "no nodes available to schedule pods"),
            (
                3,
                vec![
                    (
                        Reason::Taint {
                            key: "key".into(),
                            value: "value".into(),
                        },
                        1,
                    ),
                    (Reason::InsufficientCpu, 2),
                ],
                "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu.",
            ),
            (
                4,
                vec![
                    (Reason::NodeAffinity, 2),
                    (Reason::Unschedulable, 1),
                    (Reason::InsufficientMemory, 1),
                    (Reason::TooManyPods, 1),
                ],
                "0/4 nodes are available: 1 Insufficient memory, 1 Too many pods, 1 node(s) were unschedulable, 2 node(s) didn't match Pod's node affinity/selector.",
            ),
            (
                2,
                vec![(Reason::Ports, 1), (Reason::AntiAffinity, 1)],
                "0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't match pod anti-affinity rules.",
            ),
            (
                1,
                vec![(Reason::NotReady, 1)],
                "0/1 nodes are available: 1 node(s) were not ready.",
            ),
        ];
        for (total, reasons, expected) in cases {
            let reasons: HashMap<Reason, usize> = reasons.into_iter().collect();
            assert_eq!(fit_message(total, &reasons), expected);
        }
    }
}
