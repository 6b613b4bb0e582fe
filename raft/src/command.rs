//! What the replicated log carries and what reads return: transactions over byte keys with
//! MVCC revisions, range requests, watch events.
//!
//! Architecture invariant: nothing here knows what a key means. Keys and values are bytes.

use serde::{Deserialize, Serialize};

/// The largest value one key may hold. Larger puts are refused before they reach the log.
pub const VALUE_BYTES_MAX: usize = 1536 * 1024;
/// The largest key.
pub const KEY_BYTES_MAX: usize = 4096;
/// The most operations one transaction may carry (compares and ops of both branches).
pub const TXN_OPS_MAX: usize = 128;
/// The most bytes of keys and values one transaction may carry.
pub const TXN_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The most transactions one [`Command::Batch`] may carry.
pub const BATCH_TXNS_MAX: usize = 256;
/// The most bytes of keys and values (see [`Txn::bytes`]) one [`Command::Batch`] may carry.
/// Equal to [`TXN_BYTES_MAX`], so any valid transaction fits a batch of its own.
pub const BATCH_BYTES_MAX: usize = TXN_BYTES_MAX;

/// An entry of the replicated log.
///
/// Encoded by variant index (postcard): new variants go at the end, so that logs and snapshots
/// written before them still decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An atomic compare-then-write transaction; commits at most one new revision.
    Txn(Txn),
    /// Forget history older than `revision` (see [`crate::StateMachineStore`]).
    Compact { revision: u64 },
    /// Transactions applied one after another, each exactly as if it were its own entry (its
    /// own revision, its own compares), and all of them atomically on disk. Answered by
    /// [`CommandResponse::Batch`]. Members combine concurrent transactions into one batch so
    /// that Raft pays its per-entry costs once for all of them.
    Batch(Vec<Txn>),
}

impl Command {
    /// Checks a command before it is proposed. The state machine checks again, because entries
    /// from peers are not trusted; there an invalid transaction is answered
    /// [`CommandResponse::Rejected`] and changes nothing.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Command::Txn(txn) => txn.validate(),
            Command::Compact { .. } => Ok(()),
            Command::Batch(txns) => {
                validate_batch(txns)?;
                for (i, txn) in txns.iter().enumerate() {
                    txn.validate()
                        .map_err(|e| format!("transaction {i} of the batch: {e}"))?;
                }
                Ok(())
            }
        }
    }
}

/// The result of applying a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CommandResponse {
    /// Membership changes and blank entries answer nothing.
    #[default]
    None,
    Txn(TxnResponse),
    Compacted {
        /// The compacted revision now in force (never lower than before).
        compacted: u64,
    },
    /// The command was refused by the state machine; nothing changed.
    Rejected {
        reason: String,
    },
    /// One answer per transaction of a [`Command::Batch`], in order: [`CommandResponse::Txn`],
    /// or [`CommandResponse::Rejected`] for a transaction refused on its own.
    Batch(Vec<CommandResponse>),
}

/// Compare every `compare`; if all hold, run `success`, else run `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// A condition on one key, evaluated at the revision the transaction commits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    #[serde(with = "crate::codec::bytes")]
    pub key: Vec<u8>,
    pub check: Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Check {
    /// The key exists and was last changed at this revision.
    ModRevision(u64),
    /// The key's version (puts since it was created) equals this; 0 means absent.
    Version(u64),
    /// The key does not exist.
    Absent,
    /// The key exists.
    Present,
}

/// One write or read inside a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        #[serde(with = "crate::codec::bytes")]
        key: Vec<u8>,
        #[serde(with = "crate::codec::bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "crate::codec::bytes")]
        key: Vec<u8>,
    },
    /// Read the key as it is after the branch's earlier ops.
    Get {
        #[serde(with = "crate::codec::bytes")]
        key: Vec<u8>,
    },
}

impl Op {
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Op::Delete { key: key.into() }
    }

    pub fn get(key: impl Into<Vec<u8>>) -> Self {
        Op::Get { key: key.into() }
    }

    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Get { key } => key,
        }
    }
}

impl Txn {
    /// A transaction of one unconditional put.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Txn {
            success: vec![Op::put(key, value)],
            ..Txn::default()
        }
    }

    /// The bytes of keys and values the transaction carries: what [`TXN_BYTES_MAX`] and
    /// [`BATCH_BYTES_MAX`] limit.
    pub fn bytes(&self) -> usize {
        let compares: usize = self.compare.iter().map(|c| c.key.len()).sum();
        let ops: usize = self
            .success
            .iter()
            .chain(&self.failure)
            .map(|op| match op {
                Op::Put { key, value } => key.len() + value.len(),
                Op::Delete { key } | Op::Get { key } => key.len(),
            })
            .sum();
        compares + ops
    }

    /// Checks the limits and shape before the transaction is proposed: sizes, no key written
    /// twice in one branch.
    pub fn validate(&self) -> Result<(), String> {
        let ops = self.compare.len() + self.success.len() + self.failure.len();
        if ops > TXN_OPS_MAX {
            return Err(format!(
                "transaction has {ops} compares and ops, more than the limit of {TXN_OPS_MAX}"
            ));
        }
        for compare in &self.compare {
            check_key(&compare.key)?;
        }
        for branch in [&self.success, &self.failure] {
            let mut written: Vec<&[u8]> = Vec::new();
            for op in branch {
                check_key(op.key())?;
                if let Op::Put { value, .. } = op {
                    if value.len() > VALUE_BYTES_MAX {
                        return Err(format!(
                            "value of {} bytes for key {:?} exceeds the limit of {VALUE_BYTES_MAX} bytes",
                            value.len(),
                            String::from_utf8_lossy(op.key())
                        ));
                    }
                }
                if !matches!(op, Op::Get { .. }) {
                    if written.contains(&op.key()) {
                        return Err(format!(
                            "key {:?} is written twice in one transaction branch",
                            String::from_utf8_lossy(op.key())
                        ));
                    }
                    written.push(op.key());
                }
            }
        }
        let bytes = self.bytes();
        if bytes > TXN_BYTES_MAX {
            return Err(format!(
                "transaction carries {bytes} bytes, more than the limit of {TXN_BYTES_MAX}"
            ));
        }
        Ok(())
    }
}

/// Checks the shape of a [`Command::Batch`] as a whole: at least one and at most
/// [`BATCH_TXNS_MAX`] transactions, at most [`BATCH_BYTES_MAX`] bytes unless it holds a single
/// transaction. Each transaction is checked on its own with [`Txn::validate`].
pub fn validate_batch(txns: &[Txn]) -> Result<(), String> {
    if txns.is_empty() {
        return Err("empty batch".to_string());
    }
    if txns.len() > BATCH_TXNS_MAX {
        return Err(format!(
            "batch has {} transactions, more than the limit of {BATCH_TXNS_MAX}",
            txns.len()
        ));
    }
    let bytes: usize = txns.iter().map(Txn::bytes).sum();
    if txns.len() > 1 && bytes > BATCH_BYTES_MAX {
        return Err(format!(
            "batch carries {bytes} bytes, more than the limit of {BATCH_BYTES_MAX}"
        ));
    }
    Ok(())
}

fn check_key(key: &[u8]) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key".to_string());
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(format!(
            "key of {} bytes exceeds the limit of {KEY_BYTES_MAX} bytes",
            key.len()
        ));
    }
    Ok(())
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TxnResponse {
    /// Whether the compares held (and so `success` ran).
    pub succeeded: bool,
    /// The store's revision after the transaction: the new revision if it wrote anything.
    pub revision: u64,
    /// One result per op of the branch that ran.
    pub results: Vec<OpResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The key's value before the put, if it existed.
    Put {
        prev: Option<KeyValue>,
    },
    /// The deleted value, if the key existed.
    Delete {
        prev: Option<KeyValue>,
    },
    Get {
        kv: Option<KeyValue>,
    },
}

/// A key's value at one revision, with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "crate::codec::bytes")]
    pub key: Vec<u8>,
    #[serde(with = "crate::codec::bytes")]
    pub value: Vec<u8>,
    /// The revision that created the key (since it was last deleted).
    pub create_revision: u64,
    /// The revision that last changed it: the API's resourceVersion.
    pub mod_revision: u64,
    /// Puts since creation, starting at 1.
    pub version: u64,
}

/// Keys `start <= key < end`; an empty `end` means "to the end of the keyspace".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(with = "crate::codec::bytes")]
    pub start: Vec<u8>,
    #[serde(with = "crate::codec::bytes")]
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        let start = key.into();
        let mut end = start.clone();
        end.push(0);
        KeyRange { start, end }
    }

    /// Every key starting with `prefix`; an empty prefix is the whole keyspace.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let start = prefix.into();
        let end = prefix_end(&start);
        KeyRange { start, end }
    }

    /// The key, when the range holds exactly one ([`KeyRange::key`]).
    pub fn single_key(&self) -> Option<&[u8]> {
        let (last, start) = self.end.split_last()?;
        (*last == 0 && start == self.start.as_slice()).then_some(start)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// The first key after every key starting with `prefix` (empty: no such key).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// How a read is ordered against writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Consistency {
    /// Sees every write acknowledged before the read began (Raft read-index on the leader).
    #[default]
    Linearizable,
    /// This member's applied state, possibly behind the leader; no network round.
    Serializable,
}

/// Read the keys of `range` as they were at `revision` (0: the current revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub range: KeyRange,
    pub revision: u64,
    /// At most this many keys (0: no limit beyond [`RANGE_KEYS_MAX`]).
    pub limit: usize,
    pub consistency: Consistency,
}

/// The most keys one range answer holds; more are paged with `next_key`.
pub const RANGE_KEYS_MAX: usize = 10_000;

impl RangeRequest {
    pub fn new(range: KeyRange) -> Self {
        RangeRequest {
            range,
            revision: 0,
            limit: 0,
            consistency: Consistency::Linearizable,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// The revision the range was read at: pass it back with `next_key` to page consistently.
    pub revision: u64,
    /// Where the next page starts, when the limit cut the answer short.
    #[serde(with = "crate::codec::opt_bytes")]
    pub next_key: Option<Vec<u8>>,
}

/// Watch `range` from `start_revision` (0: changes after the current revision).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub range: KeyRange,
    pub start_revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key, in the order of (revision, position in its transaction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// For a put, the new value; for a delete, the key with an empty value and
    /// `mod_revision` set to the deleting revision.
    pub kv: KeyValue,
    /// The value before this change, if it existed and is still in history.
    pub prev: Option<KeyValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(KeyRange::prefix(b"ab".to_vec()).end, b"ac".to_vec());
        assert_eq!(KeyRange::prefix(vec![b'a', 0xff]).end, b"b".to_vec());
        assert_eq!(KeyRange::prefix(vec![0xff, 0xff]).end, Vec::<u8>::new());
        let range = KeyRange::prefix(b"/pods/".to_vec());
        assert!(range.contains(b"/pods/a"));
        assert!(!range.contains(b"/pods"));
        assert!(!range.contains(b"/podt"));
        assert!(KeyRange::key(b"k".to_vec()).contains(b"k"));
        assert!(!KeyRange::key(b"k".to_vec()).contains(b"k\0"));
    }

    #[test]
    fn a_range_of_one_key_is_known_as_one() {
        assert_eq!(KeyRange::key(b"k".to_vec()).single_key(), Some(&b"k"[..]));
        assert_eq!(
            KeyRange::key(b"k\0".to_vec()).single_key(),
            Some(&b"k\0"[..])
        );
        assert_eq!(KeyRange::prefix(b"k".to_vec()).single_key(), None);
        let two = KeyRange {
            start: b"k".to_vec(),
            end: b"l\0".to_vec(),
        };
        assert_eq!(two.single_key(), None);
        assert_eq!(KeyRange::prefix(Vec::new()).single_key(), None);
    }

    #[test]
    fn validation_rejects_oversized_and_duplicate_writes() {
        let big = Txn::put(b"k".to_vec(), vec![0u8; VALUE_BYTES_MAX + 1]);
        assert!(big.validate().unwrap_err().contains("exceeds the limit"));
        let twice = Txn {
            success: vec![Op::put("k", "1"), Op::delete("k")],
            ..Txn::default()
        };
        assert!(twice.validate().unwrap_err().contains("written twice"));
        assert!(Txn::put("", "v").validate().is_err());
        assert!(Txn::put("k", "v").validate().is_ok());
    }
}
