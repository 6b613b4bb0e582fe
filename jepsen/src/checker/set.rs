//! The set: every element whose add was acknowledged is in the final read, and the final read
//! holds nothing that was never added. Adds of unknown outcome may be either way.

use std::collections::{BTreeSet, HashMap};

use super::{Anomaly, CheckResult, Validity};
use crate::history::{Kind, Op, Value, F};

/// Checks adds against the last successful whole-set read.
pub fn check_set(history: &[Op]) -> CheckResult {
    // For each element: its invocation and, if any, its completion.
    let mut open: HashMap<u64, &Op> = HashMap::new();
    let mut attempts: HashMap<i64, (Op, Option<Op>)> = HashMap::new();
    let mut final_read: Option<&Op> = None;
    let mut read_invokes: HashMap<u64, &Op> = HashMap::new();
    for op in history {
        match (op.f, op.kind) {
            (F::Add, Kind::Invoke) => {
                if let Value::Int(e) = op.value {
                    attempts.insert(e, (op.clone(), None));
                    open.insert(op.process, op);
                }
            }
            (F::Add, _) => {
                if let (Some(invoke), Value::Int(e)) = (open.remove(&op.process), &op.value) {
                    if let Some(entry) = attempts.get_mut(e) {
                        debug_assert_eq!(entry.0.process, invoke.process);
                        entry.1 = Some(op.clone());
                    }
                }
            }
            (F::ReadAll, Kind::Invoke) => {
                read_invokes.insert(op.process, op);
            }
            (F::ReadAll, Kind::Ok) => final_read = Some(op),
            _ => {}
        }
    }
    let Some(read) = final_read else {
        return CheckResult {
            name: "set".into(),
            validity: Validity::Unknown,
            summary: format!("{} adds, but no final read succeeded", attempts.len()),
            anomalies: Vec::new(),
        };
    };
    let present: BTreeSet<i64> = match &read.value {
        Value::Ints(elements) => elements.iter().copied().collect(),
        _ => BTreeSet::new(),
    };
    let mut read_ops: Vec<Op> = read_invokes
        .get(&read.process)
        .map(|i| vec![(*i).clone()])
        .unwrap_or_default();
    read_ops.push(read.clone());
    let mut anomalies = Vec::new();
    let (mut ok, mut lost, mut recovered, mut not_recovered) = (0, 0, 0, 0);
    let mut elements: Vec<&i64> = attempts.keys().collect();
    elements.sort();
    for e in elements {
        let (invoke, done) = &attempts[e];
        let kind = done.as_ref().map(|d| d.kind).unwrap_or(Kind::Info);
        match kind {
            Kind::Ok if present.contains(e) => ok += 1,
            Kind::Ok => {
                lost += 1;
                let mut ops = vec![invoke.clone()];
                ops.extend(done.clone());
                ops.extend(read_ops.iter().cloned());
                anomalies.push(Anomaly {
                    kind: "lost".into(),
                    key: Some(e.to_string()),
                    message: format!(
                        "element {e} was acknowledged at {:.3} s but is missing from the final read",
                        done.as_ref().map(|d| d.time).unwrap_or_default() as f64 / 1e9
                    ),
                    ops,
                });
            }
            Kind::Fail if present.contains(e) => {
                let mut ops = vec![invoke.clone()];
                ops.extend(done.clone());
                ops.extend(read_ops.iter().cloned());
                anomalies.push(Anomaly {
                    kind: "failed-but-present".into(),
                    key: Some(e.to_string()),
                    message: format!("the add of {e} failed, yet the final read holds it"),
                    ops,
                });
            }
            Kind::Fail => {}
            _ if present.contains(e) => recovered += 1,
            _ => not_recovered += 1,
        }
    }
    for e in present.iter().filter(|e| !attempts.contains_key(e)) {
        anomalies.push(Anomaly {
            kind: "unexpected".into(),
            key: Some(e.to_string()),
            message: format!("the final read holds {e}, which no client ever added"),
            ops: read_ops.clone(),
        });
    }
    CheckResult {
        name: "set".into(),
        validity: if anomalies.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        summary: format!(
            "{} adds: {ok} acknowledged and present, {lost} acknowledged and lost; of unknown outcome {recovered} present, {not_recovered} absent; final read of {}",
            attempts.len(),
            present.len()
        ),
        anomalies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u64, kind: Kind, f: F, value: Value, time: u64) -> Op {
        Op {
            process,
            kind,
            f,
            key: None,
            value,
            time,
            node: None,
            error: None,
        }
    }

    fn adds(outcomes: &[(i64, Kind)], read: Option<Vec<i64>>) -> Vec<Op> {
        let mut ops = Vec::new();
        for (i, (e, kind)) in outcomes.iter().enumerate() {
            let p = i as u64;
            ops.push(op(p, Kind::Invoke, F::Add, Value::Int(*e), 2 * p));
            ops.push(op(p, *kind, F::Add, Value::Int(*e), 2 * p + 1));
        }
        if let Some(elements) = read {
            ops.push(op(99, Kind::Invoke, F::ReadAll, Value::None, 1000));
            ops.push(op(99, Kind::Ok, F::ReadAll, Value::Ints(elements), 1001));
        }
        ops
    }

    #[test]
    fn verdicts() {
        use Kind::{Fail, Info, Ok};
        let cases = [
            (
                "all present",
                adds(&[(1, Ok), (2, Ok)], Some(vec![1, 2])),
                Validity::Valid,
                None,
            ),
            (
                "unknown adds either way",
                adds(&[(1, Info), (2, Info), (3, Ok)], Some(vec![1, 3])),
                Validity::Valid,
                None,
            ),
            (
                "a lost add",
                adds(&[(1, Ok), (2, Ok)], Some(vec![1])),
                Validity::Invalid,
                Some("lost"),
            ),
            (
                "an element nobody added",
                adds(&[(1, Ok)], Some(vec![1, 5])),
                Validity::Invalid,
                Some("unexpected"),
            ),
            (
                "a failed add that is present",
                adds(&[(1, Fail)], Some(vec![1])),
                Validity::Invalid,
                Some("failed-but-present"),
            ),
            (
                "no final read",
                adds(&[(1, Ok)], None),
                Validity::Unknown,
                None,
            ),
        ];
        for (name, history, validity, kind) in cases {
            let result = check_set(&history);
            assert_eq!(result.validity, validity, "{name}: {result:?}");
            if let Some(kind) = kind {
                assert_eq!(result.anomalies[0].kind, kind, "{name}");
                assert!(!result.anomalies[0].ops.is_empty(), "{name}");
            }
        }
    }
}
