//! The history of a run: every client operation as an invocation followed by its completion
//! (ok, fail or info — the outcome is unknown), and every nemesis action, with times in
//! nanoseconds since the run started. Written as JSON lines, read back by the checkers.

use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How an operation record ends (or starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The client is about to send the operation.
    Invoke,
    /// It happened, with the result in `value`.
    Ok,
    /// It certainly did not happen (for a compare-and-set: the comparison failed).
    Fail,
    /// Unknown: it may or may not have happened (a timeout, a dropped connection, a 5xx). The
    /// process that saw it never invokes again; the client goes on under a new process id.
    Info,
}

/// What an operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F {
    /// Register: read a key; ok value is `Int` or `None` (absent).
    Read,
    /// Register: write `Int`.
    Write,
    /// Register: compare-and-set `Cas { from, to }`; `Fail` when the value was not `from`.
    Cas,
    /// Set: add the element `Int`.
    Add,
    /// Set: read every element; ok value is `Ints`.
    ReadAll,
    /// Watch: one event a watcher received (`Event`), recorded as a lone `Ok`.
    Event,
    /// Watch: the watcher had to start over from a fresh list (410 Gone); recorded as a lone
    /// `Info`, it breaks the watcher's sequence.
    Relist,
}

/// An operation's argument or result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    #[default]
    None,
    Int(i64),
    Cas {
        from: i64,
        to: i64,
    },
    Ints(Vec<i64>),
    /// A watch event: the store revision (resourceVersion) of the change, the object's key and
    /// the event type (`ADDED`, `MODIFIED`, `DELETED`).
    Event {
        rv: u64,
        key: String,
        kind: String,
    },
}

/// One record of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The logical client; at most one operation outstanding per process.
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub f: F,
    /// The object the operation is on (register key; absent for whole-set reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Value,
    /// Nanoseconds since the run started.
    pub time: u64,
    /// The master the client spoke to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why it failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Whether a nemesis record opens or closes a fault window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Start,
    Stop,
}

/// What became of a fault the nemesis tried to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultStatus {
    Installed,
    /// Not possible on this machine (the detail says why).
    Skipped,
    /// Tried, but whether it took effect is not known.
    Indeterminate,
}

/// One nemesis action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Nanoseconds since the run started.
    pub time: u64,
    /// The fault's name, e.g. `partition-halves`, `kill`, `pause`.
    pub fault: String,
    pub phase: Phase,
    pub status: FaultStatus,
    /// Which masters, which grudge, or why it was skipped.
    pub detail: String,
}

/// Errors reading or writing a history file.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {source}")]
    Parse {
        path: String,
        line: usize,
        source: serde_json::Error,
    },
}

/// Writes records as JSON lines.
pub fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<(), HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::new(file);
    for record in records {
        serde_json::to_writer(&mut out, record).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

/// Reads records written by [`write_jsonl`]; blank lines are skipped.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.display().to_string(),
            line: n + 1,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_round_trip_through_json_lines() {
        let ops = vec![
            Op {
                process: 3,
                kind: Kind::Invoke,
                f: F::Cas,
                key: Some("r7".into()),
                value: Value::Cas { from: 4, to: 9 },
                time: 1_000,
                node: Some("m1".into()),
                error: None,
            },
            Op {
                process: 3,
                kind: Kind::Ok,
                f: F::Read,
                key: Some("r7".into()),
                value: Value::None,
                time: 2_000,
                node: None,
                error: Some("x".into()),
            },
            Op {
                process: 4,
                kind: Kind::Ok,
                f: F::Event,
                key: None,
                value: Value::Event {
                    rv: 12,
                    key: "default/s1".into(),
                    kind: "ADDED".into(),
                },
                time: 3_000,
                node: None,
                error: None,
            },
            Op {
                process: 5,
                kind: Kind::Ok,
                f: F::ReadAll,
                key: None,
                value: Value::Ints(vec![1, 2]),
                time: 4_000,
                node: None,
                error: None,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        write_jsonl(&path, &ops).unwrap();
        let back: Vec<Op> = read_jsonl(&path).unwrap();
        assert_eq!(back, ops);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""type":"invoke""#), "{text}");
    }
}
