//! The scheduler's view of the cluster: each node with the sum of what its pods request, the
//! host ports they take and how many each controller has there, kept up to date pod by pod
//! (bound pods from the informer, and pods this scheduler has bound that the informer has not
//! shown yet: "assumed"); and the decision for one pod over it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use super::filter::{self, Domains, Reason};
use super::pod::{HostPort, NodeView, PodView, Resources};
use super::score;

/// The pods on one node, summed.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeInfo {
    /// `None` while pods name a node the informer does not (or no longer) have.
    pub(crate) node: Option<NodeView>,
    pub(crate) requested: Resources,
    /// Requests with zeros replaced by scoring's defaults.
    pub(crate) non_zero_requested: Resources,
    pub(crate) pod_count: usize,
    pub(crate) ports: Vec<HostPort>,
    /// Pods per controller uid.
    pub(crate) owners: HashMap<String, u32>,
    /// Keys of the pods here.
    pub(crate) pods: HashSet<String>,
}

impl NodeInfo {
    fn add(&mut self, key: &str, pod: &PodView) {
        if !self.pods.insert(key.to_string()) {
            return;
        }
        self.requested.add(pod.requests);
        self.non_zero_requested.add(score::non_zero(pod.requests));
        self.pod_count += 1;
        self.ports.extend(pod.host_ports.iter().cloned());
        if let Some(owner) = &pod.owner_uid {
            *self.owners.entry(owner.clone()).or_insert(0) += 1;
        }
    }

    fn remove(&mut self, key: &str, pod: &PodView) {
        if !self.pods.remove(key) {
            return;
        }
        self.requested.sub(pod.requests);
        self.non_zero_requested.sub(score::non_zero(pod.requests));
        self.pod_count = self.pod_count.saturating_sub(1);
        for port in &pod.host_ports {
            if let Some(i) = self.ports.iter().position(|p| p == port) {
                self.ports.swap_remove(i);
            }
        }
        if let Some(owner) = &pod.owner_uid {
            if let Some(n) = self.owners.get_mut(owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.owners.remove(owner);
                }
            }
        }
    }
}

/// A pod the cache counts on a node.
#[derive(Debug, Clone)]
pub(crate) struct PlacedPod {
    pub(crate) node: String,
    pub(crate) pod: Arc<PodView>,
    /// Bound by this scheduler, not yet seen bound by the informer.
    pub(crate) assumed: bool,
}

/// Why a pod was not placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FitError {
    pub(crate) message: String,
}

/// A decision stops filtering once it has this many feasible nodes, unless the share of the
/// cluster [`feasible_nodes_to_find`] asks for is larger (kube-scheduler's
/// `minFeasibleNodesToFind`).
const FEASIBLE_NODES_MIN: usize = 100;
/// The smallest share of a large cluster a decision considers, in percent (kube-scheduler's
/// `minFeasibleNodesPercentageToFind`).
const FEASIBLE_NODES_PERCENT_MIN: usize = 5;

/// How many feasible nodes a decision looks for among `nodes`, as kube-scheduler's adaptive
/// `percentageOfNodesToScore`: every node in clusters under 100 nodes; 50% less 1% per 125
/// nodes in larger ones (42% of 1,000 nodes, 10% of 5,000), at least 5% and 100 nodes.
pub(crate) fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < FEASIBLE_NODES_MIN {
        return nodes;
    }
    let percent = 50usize
        .saturating_sub(nodes / 125)
        .max(FEASIBLE_NODES_PERCENT_MIN);
    (nodes * percent / 100).max(FEASIBLE_NODES_MIN)
}

/// Nodes and the pods counted on them.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    nodes: BTreeMap<String, NodeInfo>,
    pods: HashMap<String, PlacedPod>,
    /// Keys of placed pods with required anti-affinity terms.
    anti_affinity_pods: HashSet<String>,
    /// Advances on every decision: which of equally good nodes comes next.
    turn: u64,
    /// The last node the previous decision looked at: the next one starts after it, so that
    /// decisions that stop early still go round every node.
    last_visited: Option<String>,
}

impl Cache {
    /// Adds or replaces a node.
    pub(crate) fn set_node(&mut self, node: NodeView) {
        let name = node.name.clone();
        self.nodes.entry(name).or_default().node = Some(node);
    }

    /// Forgets a node (its pods stay counted until they are gone).
    pub(crate) fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// Replaces every node.
    pub(crate) fn replace_nodes(&mut self, nodes: Vec<NodeView>) {
        let names: HashSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove_node(&name);
        }
        for node in nodes {
            self.set_node(node);
        }
    }

    pub(crate) fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name).and_then(|i| i.node.as_ref())
    }

    /// Counts `pod` (key `key`) on `node`, replacing what was counted for the key before.
    pub(crate) fn place(&mut self, key: &str, node: &str, pod: Arc<PodView>, assumed: bool) {
        self.unplace(key);
        self.nodes
            .entry(node.to_string())
            .or_default()
            .add(key, &pod);
        if !pod.anti_affinity.is_empty() {
            self.anti_affinity_pods.insert(key.to_string());
        }
        self.pods.insert(
            key.to_string(),
            PlacedPod {
                node: node.to_string(),
                pod,
                assumed,
            },
        );
    }

    /// Stops counting the pod `key`; returns what was counted.
    pub(crate) fn unplace(&mut self, key: &str) -> Option<PlacedPod> {
        let placed = self.pods.remove(key)?;
        self.anti_affinity_pods.remove(key);
        if let Some(info) = self.nodes.get_mut(&placed.node) {
            info.remove(key, &placed.pod);
            if info.pods.is_empty() && info.node.is_none() {
                self.nodes.remove(&placed.node);
            }
        }
        Some(placed)
    }

    pub(crate) fn placed(&self, key: &str) -> Option<&PlacedPod> {
        self.pods.get(key)
    }

    /// Keys of every placed pod.
    pub(crate) fn placed_keys(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.values().filter(|i| i.node.is_some()).count()
    }

    /// The topology domains `pod` may not join: where pods its anti-affinity terms select
    /// run, and where pods run whose terms select it.
    fn forbidden_domains(&self, pod: &PodView) -> Domains {
        let mut domains: HashSet<(String, String)> = HashSet::new();
        let mut add = |node: &str, key: &str| {
            if let Some(value) = self.node(node).and_then(|n| n.topology_value(key)) {
                domains.insert((key.to_string(), value.to_string()));
            }
        };
        if !pod.anti_affinity.is_empty() {
            for placed in self.pods.values() {
                for term in &pod.anti_affinity {
                    if term.selects(&pod.namespace, &placed.pod.namespace, &placed.pod.labels) {
                        add(&placed.node, &term.topology_key);
                    }
                }
            }
        }
        for key in &self.anti_affinity_pods {
            let Some(placed) = self.pods.get(key) else {
                continue;
            };
            for term in &placed.pod.anti_affinity {
                if term.selects(&placed.pod.namespace, &pod.namespace, &pod.labels) {
                    add(&placed.node, &term.topology_key);
                }
            }
        }
        domains.into_iter().collect()
    }

    /// The node for `pod`: the best scored of those it fits, or why none fits. Like
    /// kube-scheduler, a decision in a large cluster stops filtering once it has found
    /// [`feasible_nodes_to_find`] nodes that fit, and starts where the previous one stopped;
    /// when fewer fit, it has looked at every node and the reasons cover them all.
    pub(crate) fn find_node(&mut self, pod: &PodView) -> Result<String, FitError> {
        let forbidden = self.forbidden_domains(pod);
        let wanted = feasible_nodes_to_find(self.node_count());
        let mut reasons: HashMap<Reason, usize> = HashMap::new();
        let mut feasible: Vec<&str> = Vec::new();
        let mut raws = Vec::new();
        let mut total = 0;
        let mut last_visited = None;
        let (after, upto) = match &self.last_visited {
            Some(last) => (
                (Bound::Excluded(last.as_str()), Bound::Unbounded),
                (Bound::Unbounded, Bound::Included(last.as_str())),
            ),
            None => (
                (Bound::Unbounded, Bound::Unbounded),
                (Bound::Unbounded, Bound::Excluded("")),
            ),
        };
        let in_turn = self
            .nodes
            .range::<str, _>(after)
            .chain(self.nodes.range::<str, _>(upto));
        for (name, info) in in_turn {
            if feasible.len() >= wanted {
                break;
            }
            let Some(node) = &info.node else {
                continue;
            };
            total += 1;
            last_visited = Some(name);
            let failed = filter::filter(pod, node, info, &forbidden);
            if failed.is_empty() {
                feasible.push(name);
                raws.push(score::raw_score(pod, node, info));
            } else {
                for reason in failed {
                    *reasons.entry(reason).or_insert(0) += 1;
                }
            }
        }
        let scores = score::total_scores(&raws);
        let chosen = score::select(&scores, self.turn)
            .and_then(|i| feasible.get(i))
            .map(|name| (*name).to_string());
        let last_visited = last_visited.cloned();
        self.turn = self.turn.wrapping_add(1);
        if last_visited.is_some() {
            self.last_visited = last_visited;
        }
        chosen.ok_or_else(|| FitError {
            message: filter::fit_message(total, &reasons),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::pod::{AntiAffinityTerm, Taint, HOSTNAME_LABEL};
    use super::*;
    use keelson_api::selectors::LabelSelector;

    fn node(name: &str, cpu_milli: i64) -> NodeView {
        NodeView {
            name: name.into(),
            labels: [(HOSTNAME_LABEL.to_string(), name.to_string())].into(),
            allocatable: Resources {
                cpu_milli,
                memory: 4 << 30,
            },
            pods_max: 110,
            ready: true,
            unschedulable: false,
            taints: Vec::new(),
        }
    }

    fn pod(name: &str, cpu_milli: i64) -> PodView {
        PodView {
            namespace: "default".into(),
            uid: name.into(),
            requests: Resources {
                cpu_milli,
                memory: 0,
            },
            ..PodView::default()
        }
    }

    #[test]
    fn equal_nodes_fill_evenly_and_assumed_pods_count() {
        let mut cache = Cache::default();
        for n in ["a", "b", "c"] {
            cache.set_node(node(n, 1000));
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for i in 0..9 {
            let p = pod(&format!("p{i}"), 300);
            let chosen = cache.find_node(&p).unwrap();
            cache.place(&format!("default/p{i}"), &chosen, Arc::new(p), true);
            *counts.entry(chosen).or_insert(0) += 1;
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);
        let err = cache.find_node(&pod("big", 300)).unwrap_err();
        assert_eq!(err.message, "0/3 nodes are available: 3 Insufficient cpu.");
        cache.unplace("default/p0");
        assert!(cache.find_node(&pod("big", 300)).is_ok());
    }

    #[test]
    fn reasons_are_aggregated_over_nodes() {
        let mut cache = Cache::default();
        cache.set_node(node("a", 100));
        cache.set_node(node("b", 100));
        let mut tainted = node("c", 4000);
        tainted.taints = vec![Taint {
            key: "key".into(),
            value: "value".into(),
            effect: "NoSchedule".into(),
        }];
        cache.set_node(tainted);
        let err = cache.find_node(&pod("p", 500)).unwrap_err();
        assert_eq!(
            err.message,
            "0/3 nodes are available: 1 node(s) had untolerated taint {key: value}, 2 Insufficient cpu."
        );
    }

    #[test]
    fn anti_affinity_keeps_matching_pods_apart_both_ways() {
        let mut cache = Cache::default();
        cache.set_node(node("a", 4000));
        cache.set_node(node("b", 4000));
        let selector = LabelSelector::parse("app=web").unwrap();
        let web = |name: &str| PodView {
            labels: [("app".to_string(), "web".to_string())].into(),
            anti_affinity: vec![AntiAffinityTerm {
                selector: Some(selector.clone()),
                namespaces: Vec::new(),
                topology_key: HOSTNAME_LABEL.into(),
            }],
            ..pod(name, 0)
        };
        let first = cache.find_node(&web("w1")).unwrap();
        cache.place("default/w1", &first, Arc::new(web("w1")), true);
        let second = cache.find_node(&web("w2")).unwrap();
        assert_ne!(first, second);
        cache.place("default/w2", &second, Arc::new(web("w2")), false);
        let err = cache.find_node(&web("w3")).unwrap_err();
        assert_eq!(
            err.message,
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
        );
        // A plain pod labelled app=web is kept away by the placed pods' terms.
        let mut plain = pod("plain", 0);
        plain.labels = [("app".to_string(), "web".to_string())].into();
        assert!(cache.find_node(&plain).is_err());
        // Another namespace is not selected.
        let mut other = web("w4");
        other.namespace = "other".into();
        assert!(cache.find_node(&other).is_ok());
    }

    #[test]
    fn pods_spread_across_nodes_by_owner() {
        let mut cache = Cache::default();
        cache.set_node(node("a", 4000));
        cache.set_node(node("b", 4000));
        // Node a holds unrelated load: owner spreading still places the first replica on b.
        let owned = |name: &str| PodView {
            owner_uid: Some("rs-1".into()),
            ..pod(name, 0)
        };
        cache.place("default/x", "b", Arc::new(pod("x", 0)), false);
        let mut placed: Vec<String> = Vec::new();
        for i in 0..4 {
            let p = owned(&format!("r{i}"));
            let chosen = cache.find_node(&p).unwrap();
            cache.place(&format!("default/r{i}"), &chosen, Arc::new(p), false);
            placed.push(chosen);
        }
        placed.sort();
        assert_eq!(placed, vec!["a", "a", "b", "b"]);
    }

    #[test]
    fn large_clusters_are_sampled_as_kube_scheduler_does() {
        let cases = [
            (0, 0),
            (3, 3),
            (99, 99),
            (100, 100),
            (200, 100),
            (1000, 420),
            (5000, 500),
            (6000, 300),
            (100_000, 5000),
        ];
        for (nodes, wanted) in cases {
            assert_eq!(feasible_nodes_to_find(nodes), wanted, "{nodes} nodes");
        }
    }

    #[test]
    fn a_decision_in_a_large_cluster_looks_at_a_share_and_the_next_goes_on_from_there() {
        let mut cache = Cache::default();
        for i in 0..1000 {
            cache.set_node(node(&format!("n{i:04}"), 1000));
        }
        let first = cache.find_node(&pod("p0", 100)).unwrap();
        cache.place("default/p0", &first, Arc::new(pod("p0", 100)), true);
        let second = cache.find_node(&pod("p1", 100)).unwrap();
        // The first looked at the first 420 nodes, the second at the next 420.
        assert!(first.as_str() < "n0420", "{first}");
        assert!(("n0420".."n0840").contains(&second.as_str()), "{second}");
        // Fewer fitting nodes than the share: every node is looked at, wherever they are.
        cache.set_node(node("n0777", 8000));
        assert_eq!(cache.find_node(&pod("large", 4000)).unwrap(), "n0777");
        let err = cache.find_node(&pod("huge", 16_000)).unwrap_err();
        assert_eq!(
            err.message,
            "0/1000 nodes are available: 1000 Insufficient cpu."
        );
    }

    #[test]
    fn nodes_without_objects_are_not_candidates() {
        let mut cache = Cache::default();
        cache.place("default/p", "ghost", Arc::new(pod("p", 0)), false);
        assert_eq!(cache.node_count(), 0);
        assert_eq!(
            cache.find_node(&pod("q", 0)).unwrap_err().message,
            "no nodes available to schedule pods"
        );
        cache.set_node(node("ghost", 1000));
        cache.remove_node("ghost");
        assert!(cache.placed("default/p").is_some());
        cache.unplace("default/p");
        assert!(cache.nodes.is_empty());
    }
}
