//! What the scheduler reads from a pod and a node, parsed once: resource requests, host ports,
//! tolerations, node selection, anti-affinity terms; taints, allocatable and readiness.

use std::collections::BTreeMap;

use keelson_api::object;
use keelson_api::selectors::LabelSelector;
use keelson_api::validation::Quantity;
use serde_json::Value;

/// Scheduling hints that cannot be read from an object.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    #[error("invalid quantity {value:?} for {resource}")]
    Quantity { resource: String, value: String },
    #[error("invalid label selector: {0}")]
    Selector(String),
}

/// The hostname label every node carries.
pub(crate) const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// The taint key an unschedulable node is treated as carrying.
pub(crate) const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
/// Pods a node holds when it does not say (the kubelet's default).
const NODE_PODS_DEFAULT: i64 = 110;

/// CPU (millicores) and memory (bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Resources {
    pub(crate) cpu_milli: i64,
    pub(crate) memory: i64,
}

impl Resources {
    pub(crate) fn add(&mut self, other: Resources) {
        self.cpu_milli = self.cpu_milli.saturating_add(other.cpu_milli);
        self.memory = self.memory.saturating_add(other.memory);
    }

    pub(crate) fn sub(&mut self, other: Resources) {
        self.cpu_milli = self.cpu_milli.saturating_sub(other.cpu_milli);
        self.memory = self.memory.saturating_sub(other.memory);
    }

    fn max(self, other: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.max(other.cpu_milli),
            memory: self.memory.max(other.memory),
        }
    }
}

/// A host port a pod takes: protocol, host IP ("0.0.0.0" for all), port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct HostPort {
    pub(crate) protocol: String,
    pub(crate) ip: String,
    pub(crate) port: i64,
}

impl HostPort {
    /// Whether two host ports cannot both be taken on one node.
    pub(crate) fn conflicts(&self, other: &HostPort) -> bool {
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// One `matchExpressions`/`matchFields` entry of a node selector term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRequirement {
    pub(crate) key: String,
    pub(crate) operator: String,
    pub(crate) values: Vec<String>,
}

impl NodeRequirement {
    fn matches(&self, value: Option<&str>) -> bool {
        match self.operator.as_str() {
            "In" => value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| self.values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(actual), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == "Gt" {
                    actual > bound
                } else {
                    actual < bound
                }
            }
            _ => false,
        }
    }
}

/// A node selector term: its requirements ANDed; a term without any matches no node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeSelectorTerm {
    pub(crate) expressions: Vec<NodeRequirement>,
    /// Requirements on fields (only `metadata.name` exists).
    pub(crate) fields: Vec<NodeRequirement>,
}

impl NodeSelectorTerm {
    pub(crate) fn matches(&self, node: &NodeView) -> bool {
        if self.expressions.is_empty() && self.fields.is_empty() {
            return false;
        }
        self.expressions
            .iter()
            .all(|r| r.matches(node.labels.get(&r.key).map(String::as_str)))
            && self.fields.iter().all(|r| {
                let value = (r.key == "metadata.name").then_some(node.name.as_str());
                r.matches(value)
            })
    }
}

/// A taint or a toleration's subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Taint {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) effect: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Toleration {
    pub(crate) key: String,
    /// `Equal` (also when empty) or `Exists`.
    pub(crate) operator: String,
    pub(crate) value: String,
    /// Empty tolerates every effect.
    pub(crate) effect: String,
}

impl Toleration {
    /// Kubernetes' `ToleratesTaint`.
    pub(crate) fn tolerates(&self, taint: &Taint) -> bool {
        if !self.effect.is_empty() && self.effect != taint.effect {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.operator.as_str() {
            "Exists" => true,
            "" | "Equal" => !self.key.is_empty() && self.value == taint.value,
            _ => false,
        }
    }
}

/// A required pod anti-affinity term.
#[derive(Debug, Clone)]
pub(crate) struct AntiAffinityTerm {
    /// `None` for a missing selector, which matches no pod.
    pub(crate) selector: Option<LabelSelector>,
    /// Empty for the pod's own namespace only.
    pub(crate) namespaces: Vec<String>,
    pub(crate) topology_key: String,
}

impl AntiAffinityTerm {
    /// Whether `other` (in `namespace` with `labels`) is a pod this term keeps away from;
    /// `own_namespace` is the namespace of the pod holding the term.
    pub(crate) fn selects(
        &self,
        own_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let in_namespace = if self.namespaces.is_empty() {
            namespace == own_namespace
        } else {
            self.namespaces.iter().any(|n| n == namespace)
        };
        in_namespace && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// A preferred node affinity term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreferredTerm {
    pub(crate) weight: i64,
    pub(crate) term: NodeSelectorTerm,
}

/// A pod as the scheduler sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PodView {
    pub(crate) namespace: String,
    pub(crate) uid: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) requests: Resources,
    pub(crate) host_ports: Vec<HostPort>,
    pub(crate) node_selector: BTreeMap<String, String>,
    /// Required node affinity terms (ORed); `None` when absent.
    pub(crate) required_terms: Option<Vec<NodeSelectorTerm>>,
    pub(crate) preferred_terms: Vec<PreferredTerm>,
    pub(crate) tolerations: Vec<Toleration>,
    pub(crate) anti_affinity: Vec<AntiAffinityTerm>,
    /// The uid of the pod's controller (ReplicaSet, StatefulSet...).
    pub(crate) owner_uid: Option<String>,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NodeView {
    pub(crate) name: String,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) allocatable: Resources,
    pub(crate) pods_max: i64,
    pub(crate) ready: bool,
    pub(crate) unschedulable: bool,
    pub(crate) taints: Vec<Taint>,
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn quantity(resource: &str, value: &Value) -> Result<Quantity, ParseError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    Quantity::parse(&text).map_err(|_| ParseError::Quantity {
        resource: resource.to_string(),
        value: text,
    })
}

fn clamp(value: i128) -> i64 {
    i64::try_from(value.max(0)).unwrap_or(i64::MAX)
}

/// CPU and memory of a `requests`/`allocatable` map (absent entries are zero).
pub(crate) fn resources_of(map: Option<&Value>) -> Result<Resources, ParseError> {
    let mut out = Resources::default();
    if let Some(cpu) = map.and_then(|m| m.get("cpu")) {
        out.cpu_milli = clamp(quantity("cpu", cpu)?.milli_value());
    }
    if let Some(memory) = map.and_then(|m| m.get("memory")) {
        out.memory = clamp(quantity("memory", memory)?.value());
    }
    Ok(out)
}

/// A pod's effective requests, as Kubernetes computes them: the sum over containers, at least
/// the largest init container's, plus the pod overhead.
pub(crate) fn pod_requests(spec: &Value) -> Result<Resources, ParseError> {
    let mut sum = Resources::default();
    for c in spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        sum.add(resources_of(c.pointer("/resources/requests"))?);
    }
    for c in spec
        .get("initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        sum = sum.max(resources_of(c.pointer("/resources/requests"))?);
    }
    sum.add(resources_of(spec.get("overhead"))?);
    Ok(sum)
}

/// The host ports a pod's containers take.
pub(crate) fn host_ports(spec: &Value) -> Vec<HostPort> {
    let mut out = Vec::new();
    for key in ["containers", "initContainers"] {
        for c in spec
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in c
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let port = p.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
                if port <= 0 {
                    continue;
                }
                let protocol = Some(str_of(p, "protocol"))
                    .filter(|s| !s.is_empty())
                    .unwrap_or("TCP");
                let ip = Some(str_of(p, "hostIP"))
                    .filter(|s| !s.is_empty())
                    .unwrap_or("0.0.0.0");
                out.push(HostPort {
                    protocol: protocol.to_string(),
                    ip: ip.to_string(),
                    port,
                });
            }
        }
    }
    out
}

fn node_requirements(value: Option<&Value>) -> Vec<NodeRequirement> {
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| NodeRequirement {
            key: str_of(r, "key").to_string(),
            operator: str_of(r, "operator").to_string(),
            values: strings(r.get("values")),
        })
        .collect()
}

fn node_selector_term(term: &Value) -> NodeSelectorTerm {
    NodeSelectorTerm {
        expressions: node_requirements(term.get("matchExpressions")),
        fields: node_requirements(term.get("matchFields")),
    }
}

fn tolerations(spec: &Value) -> Vec<Toleration> {
    spec.get("tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| Toleration {
            key: str_of(t, "key").to_string(),
            operator: str_of(t, "operator").to_string(),
            value: str_of(t, "value").to_string(),
            effect: str_of(t, "effect").to_string(),
        })
        .collect()
}

fn anti_affinity(spec: &Value) -> Result<Vec<AntiAffinityTerm>, ParseError> {
    let mut out = Vec::new();
    let terms = spec
        .pointer("/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution")
        .and_then(Value::as_array);
    for term in terms.into_iter().flatten() {
        let selector = match term.get("labelSelector") {
            None | Some(Value::Null) => None,
            Some(s) => Some(
                LabelSelector::from_value(s).map_err(|e| ParseError::Selector(e.to_string()))?,
            ),
        };
        out.push(AntiAffinityTerm {
            selector,
            namespaces: strings(term.get("namespaces")),
            topology_key: str_of(term, "topologyKey").to_string(),
        });
    }
    Ok(out)
}

impl PodView {
    /// Parses what scheduling needs from a pod.
    pub(crate) fn parse(pod: &Value) -> Result<PodView, ParseError> {
        let null = Value::Null;
        let spec = pod.get("spec").unwrap_or(&null);
        let affinity = spec.pointer("/affinity/nodeAffinity");
        let required_terms = affinity
            .and_then(|a| a.pointer("/requiredDuringSchedulingIgnoredDuringExecution"))
            .filter(|v| !v.is_null())
            .map(|r| {
                r.get("nodeSelectorTerms")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(node_selector_term)
                    .collect()
            });
        let preferred_terms = affinity
            .and_then(|a| a.get("preferredDuringSchedulingIgnoredDuringExecution"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| PreferredTerm {
                weight: p.get("weight").and_then(Value::as_i64).unwrap_or(0),
                term: p
                    .get("preference")
                    .map(node_selector_term)
                    .unwrap_or_default(),
            })
            .collect();
        Ok(PodView {
            namespace: object::namespace(pod).unwrap_or_default().to_string(),
            uid: object::uid(pod).unwrap_or_default().to_string(),
            labels: object::labels(pod),
            requests: pod_requests(spec)?,
            host_ports: host_ports(spec),
            node_selector: string_map(spec.get("nodeSelector")),
            required_terms,
            preferred_terms,
            tolerations: tolerations(spec),
            anti_affinity: anti_affinity(spec)?,
            owner_uid: object::controller_of(pod).map(|o| o.uid),
        })
    }
}

impl NodeView {
    /// Parses what scheduling needs from a node; unreadable quantities count as zero.
    pub(crate) fn parse(node: &Value) -> NodeView {
        let name = object::name(node).unwrap_or_default().to_string();
        let status = node.get("status");
        let allocatable = status
            .and_then(|s| s.get("allocatable"))
            .filter(|a| a.as_object().is_some_and(|m| !m.is_empty()))
            .or_else(|| status.and_then(|s| s.get("capacity")));
        let resources = resources_of(allocatable).unwrap_or_else(|e| {
            tracing::debug!(node = %name, error = %e, "unreadable allocatable resources");
            Resources::default()
        });
        let pods_max = allocatable
            .and_then(|a| a.get("pods"))
            .and_then(|p| quantity("pods", p).ok())
            .map(|q| clamp(q.value()))
            .unwrap_or(NODE_PODS_DEFAULT);
        let ready = status
            .and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| str_of(c, "type") == "Ready" && str_of(c, "status") == "True");
        let spec = node.get("spec");
        let taints = spec
            .and_then(|s| s.get("taints"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| Taint {
                key: str_of(t, "key").to_string(),
                value: str_of(t, "value").to_string(),
                effect: str_of(t, "effect").to_string(),
            })
            .collect();
        NodeView {
            labels: object::labels(node),
            allocatable: resources,
            pods_max,
            ready,
            unschedulable: spec
                .and_then(|s| s.get("unschedulable"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            taints,
            name,
        }
    }

    /// The value of the node's topology label `key` (its name for the hostname label when the
    /// label is missing).
    pub(crate) fn topology_value(&self, key: &str) -> Option<&str> {
        match self.labels.get(key) {
            Some(v) => Some(v.as_str()),
            None if key == HOSTNAME_LABEL => Some(self.name.as_str()),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_sum_containers_and_take_the_largest_init_container() {
        let cases = [
            (json!({}), 0, 0),
            (
                json!({"containers": [
                    {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}},
                    {"resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                ]}),
                1100,
                128 * 1024 * 1024 + 1024 * 1024 * 1024,
            ),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": "100m", "memory": "500M"}}}],
                       "initContainers": [{"resources": {"requests": {"cpu": "2"}}}]}),
                2000,
                500_000_000,
            ),
            (
                json!({"containers": [{"resources": {"requests": {"cpu": 0.5}}}],
                       "overhead": {"cpu": "10m"}}),
                510,
                0,
            ),
        ];
        for (spec, cpu, memory) in cases {
            let r = pod_requests(&spec).unwrap();
            assert_eq!((r.cpu_milli, r.memory), (cpu, memory), "{spec}");
        }
        assert!(
            pod_requests(&json!({"containers": [{"resources": {"requests": {"cpu": "x"}}}]}))
                .is_err()
        );
    }

    #[test]
    fn tolerations_match_taints_as_kubernetes_does() {
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: "NoSchedule".into(),
        };
        let t = |key: &str, operator: &str, value: &str, effect: &str| Toleration {
            key: key.into(),
            operator: operator.into(),
            value: value.into(),
            effect: effect.into(),
        };
        let cases = [
            (t("k", "Equal", "v", "NoSchedule"), true),
            (t("k", "", "v", ""), true),
            (t("k", "Equal", "w", "NoSchedule"), false),
            (t("k", "Exists", "", ""), true),
            (t("k", "Exists", "", "NoExecute"), false),
            (t("", "Exists", "", ""), true),
            (t("", "Equal", "v", ""), false),
            (t("other", "Exists", "", ""), false),
        ];
        for (toleration, expected) in cases {
            assert_eq!(toleration.tolerates(&taint), expected, "{toleration:?}");
        }
    }

    #[test]
    fn node_requirements_cover_every_operator() {
        let r = |op: &str, values: &[&str]| NodeRequirement {
            key: "k".into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let cases = [
            (r("In", &["a", "b"]), Some("a"), true),
            (r("In", &["a"]), None, false),
            (r("NotIn", &["a"]), Some("a"), false),
            (r("NotIn", &["a"]), None, true),
            (r("Exists", &[]), Some(""), true),
            (r("Exists", &[]), None, false),
            (r("DoesNotExist", &[]), None, true),
            (r("Gt", &["5"]), Some("6"), true),
            (r("Gt", &["5"]), Some("5"), false),
            (r("Lt", &["5"]), Some("4"), true),
            (r("Lt", &["5"]), Some("x"), false),
            (r("Bogus", &[]), Some("a"), false),
        ];
        for (req, value, expected) in cases {
            assert_eq!(req.matches(value), expected, "{req:?} {value:?}");
        }
    }

    #[test]
    fn nodes_parse_readiness_taints_and_allocatable() {
        let node = NodeView::parse(&json!({
            "metadata": {"name": "n1", "labels": {"zone": "a"}},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "30"},
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }));
        assert_eq!(node.allocatable.cpu_milli, 4000);
        assert_eq!(node.allocatable.memory, 8 << 30);
        assert_eq!(node.pods_max, 30);
        assert!(node.ready && node.unschedulable);
        assert_eq!(node.taints.len(), 1);
        assert_eq!(node.topology_value(HOSTNAME_LABEL), Some("n1"));
    }
}
