//! Checkers: each reads the history of a run and says whether it kept a promise, with the
//! smallest failing sub-history for each anomaly it finds.

pub mod linear;
pub mod set;
pub mod watch;

use serde::{Deserialize, Serialize};

use crate::history::Op;

/// A checker's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Invalid,
    /// The checker ran out of its budget (e.g. a key whose history is too tangled to search):
    /// neither proven valid nor invalid.
    Unknown,
}

/// One broken promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    /// E.g. `nonlinearizable`, `lost`, `unexpected`, `watch-gap`, `watch-divergence`,
    /// `rv-went-backwards`, `slow-recovery`, `double-binding`, `too-many-replicas`.
    pub kind: String,
    /// The key (register) or object it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What is wrong, for a person.
    pub message: String,
    /// The smallest sub-history that shows it (invocations with their completions).
    pub ops: Vec<Op>,
}

/// What one checker found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// The checker's name, e.g. `linearizable-register`, `set`, `watch`.
    pub name: String,
    pub validity: Validity,
    /// Counts and facts worth a line in the report (e.g. "2000 keys, 1 unknown").
    pub summary: String,
    pub anomalies: Vec<Anomaly>,
}

/// Every checker over one history; `budget` is the linearizability search's time per key.
pub fn check_all(history: &[Op], budget: std::time::Duration) -> Vec<CheckResult> {
    vec![
        linear::check_register(history, budget),
        set::check_set(history),
        watch::check_watch(history),
    ]
}
