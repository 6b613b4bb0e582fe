//! Linearizability of registers, key by key: the Wing–Gong–Lowe search with Lowe's memoization
//! of (linearized set, state), as Porcupine does it. Unknown outcomes (`info`, or no completion)
//! may take effect at any time after their invocation or never; a failed compare-and-set took
//! effect as a read that saw another value. Each key has a time budget: a key whose search
//! exceeds it is unknown, not valid.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::{Anomaly, CheckResult, Validity};
use crate::history::{Kind, Op, Value, F};

/// What one operation did, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// Saw this value (`None`: the key was absent).
    Read(Option<i64>),
    Write(i64),
    /// Saw `from` and set `to`.
    Cas(i64, i64),
    /// Saw anything but `from`.
    CasFailed(i64),
}

/// The register model: the state after `action`, or `None` if it cannot happen in `state`.
fn step(state: Option<i64>, action: Action) -> Option<Option<i64>> {
    match action {
        Action::Read(v) => (state == v).then_some(state),
        Action::Write(v) => Some(Some(v)),
        Action::Cas(from, to) => (state == Some(from)).then_some(Some(to)),
        Action::CasFailed(from) => (state != Some(from)).then_some(state),
    }
}

/// One operation of a key's history: its action, when it was invoked and when it completed
/// (`None`: unknown outcome), and the records it came from.
#[derive(Clone, Debug)]
struct Call {
    action: Action,
    invoked: u64,
    completed: Option<u64>,
    records: Vec<Op>,
}

/// Turns a key's records into calls: invocations paired with their completions per process.
fn calls(ops: &[&Op]) -> Vec<Call> {
    let mut open: HashMap<u64, &Op> = HashMap::new();
    let mut calls = Vec::new();
    let mut finish = |invoke: &Op, done: Option<&Op>| {
        let kind = done.map(|d| d.kind).unwrap_or(Kind::Info);
        let action = match (invoke.f, kind, &invoke.value) {
            (F::Read, Kind::Ok, _) => match done.map(|d| &d.value) {
                Some(Value::Int(v)) => Action::Read(Some(*v)),
                _ => Action::Read(None),
            },
            // A read that failed or whose answer is unknown says nothing.
            (F::Read, _, _) => return,
            (F::Write, Kind::Fail, _) => return,
            (F::Write, _, Value::Int(v)) => Action::Write(*v),
            (F::Cas, Kind::Fail, Value::Cas { from, .. }) => Action::CasFailed(*from),
            (F::Cas, _, Value::Cas { from, to }) => Action::Cas(*from, *to),
            _ => return,
        };
        let completed = match kind {
            Kind::Ok | Kind::Fail => done.map(|d| d.time),
            _ => None,
        };
        let mut records = vec![invoke.clone()];
        records.extend(done.cloned());
        calls.push(Call {
            action,
            invoked: invoke.time,
            completed,
            records,
        });
    };
    for op in ops {
        match op.kind {
            Kind::Invoke => {
                if let Some(previous) = open.insert(op.process, op) {
                    finish(previous, None);
                }
            }
            _ => {
                if let Some(invoke) = open.remove(&op.process) {
                    finish(invoke, Some(op));
                }
            }
        }
    }
    let mut rest: Vec<&Op> = open.into_values().collect();
    rest.sort_by_key(|op| op.time);
    for invoke in rest {
        finish(invoke, None);
    }
    calls.sort_by_key(|c| c.invoked);
    calls
}

/// The search's answer for one history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    /// No order explains it.
    Not,
    /// Out of time.
    Unknown,
}

/// An entry of the search's list: a call or a return of call `id`.
#[derive(Clone, Copy)]
struct Entry {
    id: usize,
    is_call: bool,
    prev: usize,
    next: usize,
}

/// Search steps between looks at the clock.
const CLOCK_EVERY: u64 = 4096;

/// Wing–Gong–Lowe with memoization over `calls`; gives up at `deadline`.
fn search(calls: &[Call], deadline: Instant) -> Verdict {
    let n = calls.len();
    // Events by time; at equal times calls come first (the operations overlap).
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (id, call) in calls.iter().enumerate() {
        events.push((call.invoked, true, id));
        if let Some(t) = call.completed {
            events.push((t, false, id));
        }
    }
    events.sort_by_key(|(t, is_call, id)| (*t, !*is_call, *id));
    // A doubly linked list with a head sentinel at index 0; `NIL` ends it.
    const NIL: usize = usize::MAX;
    let mut list: Vec<Entry> = Vec::with_capacity(events.len() + 1);
    list.push(Entry {
        id: NIL,
        is_call: false,
        prev: NIL,
        next: NIL,
    });
    let mut call_at = vec![NIL; n];
    let mut return_at = vec![NIL; n];
    for (i, (_, is_call, id)) in events.iter().enumerate() {
        let index = i + 1;
        list.push(Entry {
            id: *id,
            is_call: *is_call,
            prev: index - 1,
            next: NIL,
        });
        list[index - 1].next = index;
        if *is_call {
            call_at[*id] = index;
        } else {
            return_at[*id] = index;
        }
    }
    let mut returns_left = calls.iter().filter(|c| c.completed.is_some()).count();
    let unlink = |list: &mut Vec<Entry>, at: usize| {
        let (prev, next) = (list[at].prev, list[at].next);
        list[prev].next = next;
        if next != NIL {
            list[next].prev = prev;
        }
    };
    let relink = |list: &mut Vec<Entry>, at: usize| {
        let (prev, next) = (list[at].prev, list[at].next);
        list[prev].next = at;
        if next != NIL {
            list[next].prev = at;
        }
    };
    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<i64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<i64>)> = Vec::new();
    let mut state: Option<i64> = None;
    let mut entry = list[0].next;
    let mut steps = 0u64;
    loop {
        if returns_left == 0 {
            return Verdict::Linearizable;
        }
        steps += 1;
        if steps % CLOCK_EVERY == 0 && Instant::now() > deadline {
            return Verdict::Unknown;
        }
        if entry == NIL {
            // Only calls without returns were left to try, yet returns remain: cannot be.
            return Verdict::Not;
        }
        let e = list[entry];
        if e.is_call {
            if let Some(next_state) = step(state, calls[e.id].action) {
                linearized[e.id / 64] |= 1 << (e.id % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((e.id, state));
                    state = next_state;
                    unlink(&mut list, call_at[e.id]);
                    if return_at[e.id] != NIL {
                        unlink(&mut list, return_at[e.id]);
                        returns_left -= 1;
                    }
                    entry = list[0].next;
                    continue;
                }
                linearized[e.id / 64] &= !(1 << (e.id % 64));
            }
            entry = e.next;
        } else {
            // A call returned before anything explained it: undo the last choice.
            let Some((id, before)) = stack.pop() else {
                return Verdict::Not;
            };
            state = before;
            linearized[id / 64] &= !(1 << (id % 64));
            if return_at[id] != NIL {
                relink(&mut list, return_at[id]);
                returns_left += 1;
            }
            relink(&mut list, call_at[id]);
            entry = list[call_at[id]].next;
        }
    }
}

/// The values some remaining operation saw, which the writes of must be kept when shrinking.
fn values_seen(calls: &[Call]) -> HashSet<i64> {
    calls
        .iter()
        .filter_map(|c| match c.action {
            Action::Read(Some(v)) | Action::Cas(v, _) => Some(v),
            _ => None,
        })
        .collect()
}

fn writes_value(call: &Call) -> Option<i64> {
    match call.action {
        Action::Write(v) | Action::Cas(_, v) => Some(v),
        _ => None,
    }
}

/// A small non-linearizable sub-history of `calls` (which are not linearizable): the shortest
/// prefix by invocation that is already not, then calls dropped one at a time while it stays
/// so (writes of values someone saw are kept, so that the story still makes sense).
fn shrink(calls: &[Call], deadline: Instant) -> Vec<Call> {
    let mut prefix = calls.len();
    for k in 1..=calls.len() {
        if Instant::now() > deadline {
            break;
        }
        if search(&calls[..k], deadline) == Verdict::Not {
            prefix = k;
            break;
        }
    }
    let mut kept: Vec<Call> = calls[..prefix].to_vec();
    // Latest first: readers go before the writes they saw, which may then go too. Passes
    // repeat while they remove something.
    let mut changed = true;
    while changed && Instant::now() < deadline {
        changed = false;
        let mut i = kept.len();
        while i > 0 && Instant::now() < deadline {
            i -= 1;
            let seen = values_seen(&kept);
            if writes_value(&kept[i]).is_some_and(|v| seen.contains(&v)) {
                continue;
            }
            let mut candidate = kept.clone();
            candidate.remove(i);
            if search(&candidate, deadline) == Verdict::Not {
                kept = candidate;
                changed = true;
            }
        }
    }
    kept
}

fn describe(call: &Call) -> String {
    let process = call.records.first().map(|r| r.process).unwrap_or_default();
    let what = match call.action {
        Action::Read(Some(v)) => format!("read of {v}"),
        Action::Read(None) => "read of nothing (absent)".to_string(),
        Action::Write(v) => format!("write of {v}"),
        Action::Cas(from, to) => format!("cas {from}→{to}"),
        Action::CasFailed(from) => format!("failed cas from {from}"),
    };
    format!(
        "{what} by process {process} at {:.3} s",
        call.invoked as f64 / 1e9
    )
}

/// Checks every key's register history for linearizability, each within `budget`.
pub fn check_register(history: &[Op], budget: Duration) -> CheckResult {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if matches!(op.f, F::Read | F::Write | F::Cas) {
            if let Some(key) = op.key.as_deref() {
                by_key.entry(key).or_default().push(op);
            }
        }
    }
    let (mut valid, mut invalid, mut unknown, mut total) = (0usize, 0usize, 0usize, 0usize);
    let mut anomalies = Vec::new();
    let mut unknown_keys = Vec::new();
    for (key, ops) in &by_key {
        total += ops.len();
        let calls = calls(ops);
        let deadline = Instant::now() + budget;
        match search(&calls, deadline) {
            Verdict::Linearizable => valid += 1,
            Verdict::Unknown => {
                unknown += 1;
                unknown_keys.push(key.to_string());
            }
            Verdict::Not => {
                invalid += 1;
                let small = shrink(&calls, Instant::now() + budget);
                let culprit = small
                    .iter()
                    .filter(|c| c.completed.is_some())
                    .max_by_key(|c| c.completed)
                    .or(small.last());
                let message = match culprit {
                    Some(c) => format!(
                        "key {key}: {}: no order of the {} operations around it explains it",
                        describe(c),
                        small.len()
                    ),
                    None => format!("key {key}: not linearizable"),
                };
                let mut ops: Vec<Op> = small.iter().flat_map(|c| c.records.clone()).collect();
                ops.sort_by_key(|o| o.time);
                anomalies.push(Anomaly {
                    kind: "nonlinearizable".into(),
                    key: Some(key.to_string()),
                    message,
                    ops,
                });
            }
        }
    }
    let validity = if invalid > 0 {
        Validity::Invalid
    } else if unknown > 0 {
        Validity::Unknown
    } else {
        Validity::Valid
    };
    let mut summary = format!(
        "{} keys, {total} records: {valid} linearizable, {invalid} not, {unknown} unknown",
        by_key.len()
    );
    if !unknown_keys.is_empty() {
        summary.push_str(&format!(
            " (out of time on {})",
            unknown_keys
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    CheckResult {
        name: "linearizable-register".into(),
        validity,
        summary,
        anomalies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record: (process, kind, f, value, time in ms).
    type Row = (u64, Kind, F, Value, u64);

    /// A history from a table of rows.
    fn history(rows: &[Row]) -> Vec<Op> {
        rows.iter()
            .map(|(process, kind, f, value, ms)| Op {
                process: *process,
                kind: *kind,
                f: *f,
                key: Some("k".into()),
                value: value.clone(),
                time: ms * 1_000_000,
                node: None,
                error: None,
            })
            .collect()
    }

    use Kind::{Fail, Info, Invoke, Ok as Done};
    use Value::{Int, None as Nil};
    use F::{Cas, Read, Write};

    fn cas(from: i64, to: i64) -> Value {
        Value::Cas { from, to }
    }

    fn check(rows: &[Row]) -> Validity {
        check_register(&history(rows), Duration::from_secs(5)).validity
    }

    #[test]
    fn histories_that_must_pass() {
        let cases: Vec<(&str, Vec<Row>)> = vec![
            (
                "a read of an absent key",
                vec![(0, Invoke, Read, Nil, 0), (0, Done, Read, Nil, 1)],
            ),
            (
                "sequential write then read",
                vec![
                    (0, Invoke, Write, Int(1), 0),
                    (0, Done, Write, Int(1), 1),
                    (1, Invoke, Read, Nil, 2),
                    (1, Done, Read, Int(1), 3),
                ],
            ),
            (
                "a read concurrent with a write may see either",
                vec![
                    (0, Invoke, Write, Int(1), 0),
                    (0, Done, Write, Int(1), 1),
                    (1, Invoke, Write, Int(2), 2),
                    (2, Invoke, Read, Nil, 3),
                    (2, Done, Read, Int(1), 4),
                    (1, Done, Write, Int(2), 5),
                ],
            ),
            (
                "an unknown write seen later took effect",
                vec![
                    (0, Invoke, Write, Int(7), 0),
                    (0, Info, Write, Int(7), 1),
                    (1, Invoke, Read, Nil, 5),
                    (1, Done, Read, Int(7), 6),
                ],
            ),
            (
                "an unknown write never seen did not",
                vec![
                    (0, Invoke, Write, Int(7), 0),
                    (0, Info, Write, Int(7), 1),
                    (1, Invoke, Read, Nil, 5),
                    (1, Done, Read, Nil, 6),
                ],
            ),
            (
                "an unknown cas whose comparison could not hold",
                vec![
                    (0, Invoke, Cas, cas(3, 4), 0),
                    (1, Invoke, Read, Nil, 5),
                    (1, Done, Read, Nil, 6),
                ],
            ),
            (
                "cas ok and cas failed",
                vec![
                    (0, Invoke, Write, Int(1), 0),
                    (0, Done, Write, Int(1), 1),
                    (0, Invoke, Cas, cas(1, 2), 2),
                    (0, Done, Cas, cas(1, 2), 3),
                    (1, Invoke, Cas, cas(1, 3), 4),
                    (1, Fail, Cas, cas(1, 3), 5),
                    (1, Invoke, Read, Nil, 6),
                    (1, Done, Read, Int(2), 7),
                ],
            ),
            (
                "a failed write and a failed read say nothing",
                vec![
                    (0, Invoke, Write, Int(9), 0),
                    (0, Fail, Write, Int(9), 1),
                    (1, Invoke, Read, Nil, 2),
                    (1, Fail, Read, Nil, 3),
                    (1, Invoke, Read, Nil, 4),
                    (1, Done, Read, Nil, 5),
                ],
            ),
        ];
        for (name, rows) in cases {
            assert_eq!(check(&rows), Validity::Valid, "{name}");
        }
    }

    #[test]
    fn histories_that_must_fail() {
        let cases: Vec<(&str, Vec<Row>)> = vec![
            (
                "a stale read after a completed write",
                vec![
                    (0, Invoke, Write, Int(1), 0),
                    (0, Done, Write, Int(1), 1),
                    (0, Invoke, Write, Int(2), 2),
                    (0, Done, Write, Int(2), 3),
                    (1, Invoke, Read, Nil, 4),
                    (1, Done, Read, Int(1), 5),
                ],
            ),
            (
                "a read of a value never written",
                vec![(1, Invoke, Read, Nil, 4), (1, Done, Read, Int(5), 5)],
            ),
            (
                "a cas that failed although the value was `from`",
                vec![
                    (0, Invoke, Write, Int(1), 0),
                    (0, Done, Write, Int(1), 1),
                    (1, Invoke, Cas, cas(1, 2), 2),
                    (1, Fail, Cas, cas(1, 2), 3),
                ],
            ),
            (
                "two successful cas from the same value",
                vec![
                    (0, Invoke, Write, Int(1), 0),
                    (0, Done, Write, Int(1), 1),
                    (1, Invoke, Cas, cas(1, 2), 2),
                    (2, Invoke, Cas, cas(1, 3), 2),
                    (1, Done, Cas, cas(1, 2), 3),
                    (2, Done, Cas, cas(1, 3), 3),
                ],
            ),
        ];
        for (name, rows) in cases {
            assert_eq!(check(&rows), Validity::Invalid, "{name}");
        }
    }

    #[test]
    fn an_anomaly_comes_with_a_small_failing_sub_history() {
        let mut rows = Vec::new();
        // Noise first: many fine operations.
        for i in 0..40u64 {
            rows.push((0, Invoke, Write, Int(100 + i as i64), 10 * i));
            rows.push((0, Done, Write, Int(100 + i as i64), 10 * i + 1));
            rows.push((1, Invoke, Read, Nil, 10 * i + 2));
            rows.push((1, Done, Read, Int(100 + i as i64), 10 * i + 3));
        }
        // Then a stale read.
        rows.push((1, Invoke, Read, Nil, 1000));
        rows.push((1, Done, Read, Int(120), 1001));
        let result = check_register(&history(&rows), Duration::from_secs(5));
        assert_eq!(result.validity, Validity::Invalid, "{result:?}");
        let anomaly = &result.anomalies[0];
        assert!(anomaly.ops.len() <= 8, "{:#?}", anomaly.ops);
        assert!(
            anomaly.message.contains("read of 120"),
            "{}",
            anomaly.message
        );
        assert!(anomaly
            .ops
            .iter()
            .any(|o| o.value == Int(120) && o.f == Write));
    }

    /// A valid history: `keys` keys, `procs` processes per key, each operation concurrent with
    /// the others of its round, values read from the true state at a point inside each op.
    fn generated(keys: usize, procs: u64, rounds: u64) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut value = 0i64;
        for k in 0..keys {
            let key = format!("k{k}");
            let mut state: Option<i64> = None;
            let mut t = 0u64;
            for round in 0..rounds {
                // All of a round's ops overlap; they take effect in process order.
                let mut completions = Vec::new();
                for p in 0..procs {
                    let process = k as u64 * procs + p;
                    let choice = (round + p) % 3;
                    let (f, invoke_value, done_kind, done_value) = match choice {
                        0 => (Read, Nil, Done, state.map(Int).unwrap_or(Nil)),
                        1 => {
                            value += 1;
                            state = Some(value);
                            (
                                Write,
                                Int(value),
                                if p == 0 && round % 7 == 0 { Info } else { Done },
                                Int(value),
                            )
                        }
                        _ => {
                            value += 1;
                            match state {
                                Some(from) => {
                                    state = Some(value);
                                    (Cas, cas(from, value), Done, cas(from, value))
                                }
                                None => (Cas, cas(-1, value), Fail, cas(-1, value)),
                            }
                        }
                    };
                    ops.push(Op {
                        process,
                        kind: Invoke,
                        f,
                        key: Some(key.clone()),
                        value: invoke_value.clone(),
                        time: t + p,
                        node: None,
                        error: None,
                    });
                    let done = if f == Read { done_value } else { invoke_value };
                    completions.push((process, done_kind, f, done));
                }
                t += procs + 1;
                for (process, kind, f, value) in completions {
                    ops.push(Op {
                        process,
                        kind,
                        f,
                        key: Some(key.clone()),
                        value,
                        time: t,
                        node: None,
                        error: None,
                    });
                    t += 1;
                }
            }
        }
        ops
    }

    #[test]
    fn twenty_thousand_operations_are_checked_quickly() {
        let ops = generated(100, 5, 20);
        assert!(ops.len() >= 20_000, "{}", ops.len());
        let start = Instant::now();
        let result = check_register(&ops, Duration::from_secs(10));
        println!(
            "{} records checked in {:?}: {}",
            ops.len(),
            start.elapsed(),
            result.summary
        );
        assert_eq!(result.validity, Validity::Valid, "{}", result.summary);
    }

    #[test]
    fn a_search_out_of_budget_is_unknown_not_valid() {
        // Many concurrent unknown writes and reads of other values make the search wide.
        let mut rows = Vec::new();
        for p in 0..60u64 {
            rows.push((p, Invoke, Write, Int(p as i64), 0));
        }
        for p in 0..60u64 {
            rows.push((100 + p, Invoke, Read, Nil, 1));
            rows.push((100 + p, Done, Read, Int(((p * 7) % 60) as i64), 1000));
        }
        let result = check_register(&history(&rows), Duration::from_millis(1));
        assert_eq!(result.validity, Validity::Unknown, "{}", result.summary);
    }
}
