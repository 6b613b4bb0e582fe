//! Scores of the nodes a pod fits (each 0-100, summed with kube-scheduler's default
//! weights), and the choice of the best, ties taken in turn so that equal nodes fill evenly.

use super::cache::NodeInfo;
use super::pod::{NodeView, PodView, Resources};

/// The score's upper bound per plugin.
pub(crate) const SCORE_MAX: i64 = 100;
/// What a pod without a CPU request counts for in scoring (kube: 100m).
pub(crate) const DEFAULT_CPU_MILLI: i64 = 100;
/// What a pod without a memory request counts for in scoring (kube: 200Mi).
pub(crate) const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

const WEIGHT_LEAST_ALLOCATED: i64 = 1;
const WEIGHT_BALANCED: i64 = 1;
const WEIGHT_NODE_AFFINITY: i64 = 2;
const WEIGHT_SPREAD: i64 = 2;

/// A request as scoring counts it: zero becomes the default.
pub(crate) fn non_zero(requests: Resources) -> Resources {
    Resources {
        cpu_milli: if requests.cpu_milli == 0 {
            DEFAULT_CPU_MILLI
        } else {
            requests.cpu_milli
        },
        memory: if requests.memory == 0 {
            DEFAULT_MEMORY
        } else {
            requests.memory
        },
    }
}

fn least_one(allocatable: i64, requested: i64) -> i64 {
    if allocatable <= 0 || requested > allocatable {
        return 0;
    }
    (allocatable - requested).saturating_mul(SCORE_MAX) / allocatable
}

/// Free share of the node after placing the pod, CPU and memory averaged.
pub(crate) fn least_allocated(allocatable: Resources, requested: Resources) -> i64 {
    (least_one(allocatable.cpu_milli, requested.cpu_milli)
        + least_one(allocatable.memory, requested.memory))
        / 2
}

fn fraction(allocatable: i64, requested: i64) -> f64 {
    if allocatable <= 0 {
        return 1.0;
    }
    (requested as f64 / allocatable as f64).min(1.0)
}

/// How evenly CPU and memory are used after placing the pod (100: the same share of both).
pub(crate) fn balanced_allocation(allocatable: Resources, requested: Resources) -> i64 {
    let cpu = fraction(allocatable.cpu_milli, requested.cpu_milli);
    let memory = fraction(allocatable.memory, requested.memory);
    let deviation = (cpu - memory).abs() / 2.0;
    ((1.0 - deviation) * SCORE_MAX as f64) as i64
}

/// The sum of the weights of the pod's preferred node affinity terms the node matches.
pub(crate) fn preferred_affinity(pod: &PodView, node: &NodeView) -> i64 {
    pod.preferred_terms
        .iter()
        .filter(|p| p.term.matches(node))
        .map(|p| p.weight)
        .sum()
}

/// Pods of the pod's controller already on the node.
pub(crate) fn owner_count(pod: &PodView, info: &NodeInfo) -> i64 {
    pod.owner_uid
        .as_ref()
        .and_then(|uid| info.owners.get(uid))
        .map(|n| i64::from(*n))
        .unwrap_or(0)
}

/// The raw scores of one feasible node, before normalisation across nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) least_allocated: i64,
    pub(crate) balanced: i64,
    pub(crate) affinity: i64,
    pub(crate) owner_pods: i64,
}

/// Scores `pod` on `node`.
pub(crate) fn raw_score(pod: &PodView, node: &NodeView, info: &NodeInfo) -> Raw {
    let mut requested = info.non_zero_requested;
    requested.add(non_zero(pod.requests));
    Raw {
        least_allocated: least_allocated(node.allocatable, requested),
        balanced: balanced_allocation(node.allocatable, requested),
        affinity: preferred_affinity(pod, node),
        owner_pods: owner_count(pod, info),
    }
}

/// Normalises the raw scores across the feasible nodes and sums them with weights.
pub(crate) fn total_scores(raws: &[Raw]) -> Vec<i64> {
    let affinity_max = raws.iter().map(|r| r.affinity).max().unwrap_or(0);
    let owners_max = raws.iter().map(|r| r.owner_pods).max().unwrap_or(0);
    raws.iter()
        .map(|r| {
            let affinity = if affinity_max > 0 {
                r.affinity.max(0) * SCORE_MAX / affinity_max
            } else {
                0
            };
            let spread = if owners_max > 0 {
                (owners_max - r.owner_pods) * SCORE_MAX / owners_max
            } else {
                SCORE_MAX
            };
            r.least_allocated * WEIGHT_LEAST_ALLOCATED
                + r.balanced * WEIGHT_BALANCED
                + affinity * WEIGHT_NODE_AFFINITY
                + spread * WEIGHT_SPREAD
        })
        .collect()
}

/// The index of the best score; among equal best, the `turn`-th (mod their number).
pub(crate) fn select(scores: &[i64], turn: u64) -> Option<usize> {
    let best = *scores.iter().max()?;
    let ties: Vec<usize> = (0..scores.len()).filter(|i| scores[*i] == best).collect();
    let pick = usize::try_from(turn % ties.len() as u64).unwrap_or(0);
    ties.get(pick).copied()
}

#[cfg(test)]
mod tests {
    use super::super::pod::{NodeRequirement, NodeSelectorTerm, PreferredTerm};
    use super::*;

    fn res(cpu_milli: i64, memory: i64) -> Resources {
        Resources { cpu_milli, memory }
    }

    #[test]
    fn resource_scores() {
        // (allocatable, requested, least allocated, balanced)
        let cases = [
            (res(1000, 1000), res(0, 0), 100, 100),
            (res(1000, 1000), res(500, 500), 50, 100),
            (res(1000, 1000), res(1000, 0), 50, 50),
            (res(1000, 1000), res(250, 750), 50, 75),
            (res(1000, 1000), res(2000, 2000), 0, 100),
            (res(0, 0), res(100, 100), 0, 100),
        ];
        for (allocatable, requested, least, balanced) in cases {
            assert_eq!(
                (
                    least_allocated(allocatable, requested),
                    balanced_allocation(allocatable, requested)
                ),
                (least, balanced),
                "{allocatable:?} {requested:?}"
            );
        }
    }

    #[test]
    fn preferred_affinity_sums_matching_weights() {
        let node = NodeView {
            name: "n".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            ..NodeView::default()
        };
        let preferred = |weight: i64, zone: &str| PreferredTerm {
            weight,
            term: NodeSelectorTerm {
                expressions: vec![NodeRequirement {
                    key: "zone".into(),
                    operator: "In".into(),
                    values: vec![zone.into()],
                }],
                fields: Vec::new(),
            },
        };
        let cases = [
            (vec![], 0),
            (vec![preferred(10, "a")], 10),
            (
                vec![preferred(10, "a"), preferred(5, "b"), preferred(3, "a")],
                13,
            ),
        ];
        for (terms, expected) in cases {
            let pod = PodView {
                preferred_terms: terms,
                ..PodView::default()
            };
            assert_eq!(preferred_affinity(&pod, &node), expected);
        }
    }

    #[test]
    fn totals_normalise_affinity_and_spread() {
        let raw = |affinity: i64, owner_pods: i64| Raw {
            least_allocated: 50,
            balanced: 100,
            affinity,
            owner_pods,
        };
        let cases = [
            (vec![raw(0, 0), raw(0, 0)], vec![350, 350]),
            (vec![raw(10, 0), raw(5, 0)], vec![550, 450]),
            (vec![raw(0, 2), raw(0, 1), raw(0, 0)], vec![150, 250, 350]),
        ];
        for (raws, expected) in cases {
            assert_eq!(total_scores(&raws), expected, "{raws:?}");
        }
    }

    #[test]
    fn select_takes_ties_in_turn() {
        let cases: [(&[i64], u64, Option<usize>); 5] = [
            (&[], 0, None),
            (&[1, 3, 2], 7, Some(1)),
            (&[3, 1, 3], 0, Some(0)),
            (&[3, 1, 3], 1, Some(2)),
            (&[3, 1, 3], 2, Some(0)),
        ];
        for (scores, turn, expected) in cases {
            assert_eq!(select(scores, turn), expected, "{scores:?} {turn}");
        }
    }
}
