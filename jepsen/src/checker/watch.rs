//! Watches: each watcher's events come in revision order with no duplicate (also across its
//! resumptions after errors and restarts), and any two watchers saw exactly the same changes
//! over the revisions both covered — no gap, no divergence. A relist (410) starts a new segment.

use std::collections::BTreeMap;

use super::{Anomaly, CheckResult, Validity};
use crate::history::{Kind, Op, Value, F};

/// One change as a watcher saw it.
type Change = (u64, String, String);

/// One uninterrupted stretch of a watcher's events.
struct Segment {
    watcher: u64,
    events: Vec<(Change, Op)>,
}

impl Segment {
    fn range(&self) -> Option<(u64, u64)> {
        Some((self.events.first()?.0 .0, self.events.last()?.0 .0))
    }
}

/// Splits the events into segments per watcher (process).
fn segments(history: &[Op]) -> Vec<Segment> {
    let mut current: BTreeMap<u64, Segment> = BTreeMap::new();
    let mut done = Vec::new();
    for op in history {
        match (op.f, op.kind, &op.value) {
            (F::Event, Kind::Ok, Value::Event { rv, key, kind }) => {
                current
                    .entry(op.process)
                    .or_insert_with(|| Segment {
                        watcher: op.process,
                        events: Vec::new(),
                    })
                    .events
                    .push(((*rv, key.clone(), kind.clone()), op.clone()));
            }
            (F::Relist, _, _) => {
                if let Some(segment) = current.remove(&op.process) {
                    done.push(segment);
                }
            }
            _ => {}
        }
    }
    done.extend(current.into_values());
    done
}

/// Checks order within segments and agreement between them.
pub fn check_watch(history: &[Op]) -> CheckResult {
    let segments = segments(history);
    let mut anomalies = Vec::new();
    let mut events = 0usize;
    for segment in &segments {
        events += segment.events.len();
        for pair in segment.events.windows(2) {
            let ((a, op_a), (b, op_b)) = (&pair[0], &pair[1]);
            let kind = if b.0 < a.0 {
                "rv-went-backwards"
            } else if b.0 == a.0 && b.1 <= a.1 {
                "duplicate"
            } else {
                continue;
            };
            anomalies.push(Anomaly {
                kind: kind.into(),
                key: Some(b.1.clone()),
                message: format!(
                    "watcher {} saw revision {} ({} {}) after revision {} ({} {})",
                    segment.watcher, b.0, b.2, b.1, a.0, a.2, a.1
                ),
                ops: vec![op_a.clone(), op_b.clone()],
            });
        }
    }
    for (i, a) in segments.iter().enumerate() {
        for b in &segments[i + 1..] {
            if let Some(anomaly) = compare(a, b) {
                anomalies.push(anomaly);
            }
        }
    }
    let watchers: std::collections::BTreeSet<u64> = segments.iter().map(|s| s.watcher).collect();
    CheckResult {
        name: "watch".into(),
        validity: if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        summary: format!(
            "{} watchers, {} segments, {events} events",
            watchers.len(),
            segments.len()
        ),
        anomalies,
    }
}

/// The first disagreement of two segments over the revisions both cover.
fn compare(a: &Segment, b: &Segment) -> Option<Anomaly> {
    let ((a_lo, a_hi), (b_lo, b_hi)) = (a.range()?, b.range()?);
    let (lo, hi) = (a_lo.max(b_lo), a_hi.min(b_hi));
    if lo > hi {
        return None;
    }
    let within = |s: &Segment| -> Vec<(Change, Op)> {
        s.events
            .iter()
            .filter(|((rv, _, _), _)| *rv >= lo && *rv <= hi)
            .cloned()
            .collect()
    };
    let (xs, ys) = (within(a), within(b));
    let mut i = 0;
    while i < xs.len().max(ys.len()) {
        let (x, y) = (xs.get(i), ys.get(i));
        if x.map(|e| &e.0) != y.map(|e| &e.0) {
            // The one with the smaller revision has an event the other lacks.
            let (has, lacks, event) = match (x, y) {
                (Some(x), Some(y)) if x.0 .0 <= y.0 .0 => (a, b, x),
                (Some(x), None) => (a, b, x),
                (_, Some(y)) => (b, a, y),
                (None, None) => return None,
            };
            let same_rv = x.zip(y).is_some_and(|(x, y)| x.0 .0 == y.0 .0);
            let mut ops = vec![event.1.clone()];
            ops.extend(x.filter(|e| e.1 != event.1).map(|e| e.1.clone()));
            ops.extend(y.filter(|e| e.1 != event.1).map(|e| e.1.clone()));
            let (rv, key, kind) = &event.0;
            return Some(Anomaly {
                kind: if same_rv { "watch-divergence" } else { "watch-gap" }.into(),
                key: Some(key.clone()),
                message: format!(
                    "watcher {} saw revision {rv} ({kind} {key}) but watcher {} did not, though both covered revisions {lo}..={hi}",
                    has.watcher, lacks.watcher
                ),
                ops,
            });
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(watcher: u64, rv: u64, key: &str) -> Op {
        Op {
            process: watcher,
            kind: Kind::Ok,
            f: F::Event,
            key: None,
            value: Value::Event {
                rv,
                key: key.into(),
                kind: "MODIFIED".into(),
            },
            time: rv,
            node: None,
            error: None,
        }
    }

    fn relist(watcher: u64) -> Op {
        Op {
            process: watcher,
            kind: Kind::Info,
            f: F::Relist,
            key: None,
            value: Value::None,
            time: 0,
            node: None,
            error: None,
        }
    }

    #[test]
    fn verdicts() {
        let cases: Vec<(&str, Vec<Op>, Option<&str>)> = vec![
            (
                "two watchers agree over their overlap",
                vec![
                    event(1, 3, "a"),
                    event(1, 4, "b"),
                    event(1, 6, "a"),
                    event(2, 4, "b"),
                    event(2, 6, "a"),
                    event(2, 9, "c"),
                ],
                None,
            ),
            (
                "one transaction's several keys at one revision",
                vec![
                    event(1, 5, "a"),
                    event(1, 5, "b"),
                    event(2, 5, "a"),
                    event(2, 5, "b"),
                ],
                None,
            ),
            (
                "a watcher misses a change the other saw",
                vec![
                    event(1, 3, "a"),
                    event(1, 4, "b"),
                    event(1, 6, "a"),
                    event(2, 3, "a"),
                    event(2, 6, "a"),
                ],
                Some("watch-gap"),
            ),
            (
                "a revision going backwards",
                vec![event(1, 5, "a"), event(1, 4, "b")],
                Some("rv-went-backwards"),
            ),
            (
                "a duplicate",
                vec![event(1, 5, "a"), event(1, 5, "a")],
                Some("duplicate"),
            ),
            (
                "a relist starts a new segment",
                vec![event(1, 5, "a"), relist(1), event(1, 2, "x")],
                None,
            ),
            (
                "watchers disagree about what changed at one revision",
                vec![event(1, 5, "a"), event(2, 5, "b")],
                Some("watch-divergence"),
            ),
        ];
        for (name, history, kind) in cases {
            let result = check_watch(&history);
            match kind {
                None => assert_eq!(result.validity, Validity::Valid, "{name}: {result:?}"),
                Some(kind) => {
                    assert_eq!(result.validity, Validity::Invalid, "{name}: {result:?}");
                    assert_eq!(result.anomalies[0].kind, kind, "{name}: {result:?}");
                    assert!(!result.anomalies[0].ops.is_empty(), "{name}");
                }
            }
        }
    }
}
