//! Random transactions (alone and in batches), compactions and reads against the state
//! machine, each answer and read compared with a simple in-memory model of etcd's MVCC
//! semantics, in which a batch is its transactions applied one after another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use keelson_raft::storage::{open, Keyspace, StateMachineStore};
use keelson_raft::{
    Check, Command, CommandResponse, Compare, EventKind, KeyRange, KeyValue, Op, OpResult, Txn,
    TxnResponse, WatchRequest, WatchStream,
};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;

/// A key's versions, oldest first: (revision, value or deletion).
type Versions = Vec<(u64, Option<Vec<u8>>)>;

/// Every version of every key, as etcd would keep it.
#[derive(Default)]
struct Model {
    revision: u64,
    compacted: u64,
    /// key -> (revision, value or deletion), oldest first
    versions: BTreeMap<Vec<u8>, Versions>,
    /// (revision, key, kind) in commit order
    events: Vec<(u64, Vec<u8>, EventKind)>,
}

impl Model {
    fn get_at(&self, key: &[u8], revision: u64) -> Option<KeyValue> {
        let versions = self.versions.get(key)?;
        let upto: Vec<&(u64, Option<Vec<u8>>)> =
            versions.iter().filter(|(r, _)| *r <= revision).collect();
        let (mod_revision, value) = upto.last()?;
        let value = value.clone()?;
        // The key's life started after its last deletion at or before `revision`.
        let life: Vec<&&(u64, Option<Vec<u8>>)> =
            upto.iter().rev().take_while(|(_, v)| v.is_some()).collect();
        Some(KeyValue {
            key: key.to_vec(),
            value,
            create_revision: life.last().map(|(r, _)| *r).unwrap_or(*mod_revision),
            mod_revision: *mod_revision,
            version: life.len() as u64,
        })
    }

    fn range_at(&self, range: &KeyRange, revision: u64) -> Vec<KeyValue> {
        self.versions
            .keys()
            .filter(|k| range.contains(k))
            .filter_map(|k| self.get_at(k, revision))
            .collect()
    }

    fn apply(&mut self, txn: &Txn) -> TxnResponse {
        let current = self.revision;
        let succeeded = txn.compare.iter().all(|c| {
            let kv = self.get_at(&c.key, current);
            match c.check {
                Check::ModRevision(r) => kv.is_some_and(|kv| kv.mod_revision == r),
                Check::Version(v) => kv.map_or(0, |kv| kv.version) == v,
                Check::Absent => kv.is_none(),
                Check::Present => kv.is_some(),
            }
        });
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let new_revision = current + 1;
        let mut results = Vec::new();
        let mut wrote = false;
        let mut pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for op in branch {
            match op {
                Op::Get { key } => {
                    let kv = match pending.iter().find(|(k, _)| k == key) {
                        Some((_, Some(v))) => {
                            let before = self.get_at(key, current);
                            Some(KeyValue {
                                key: key.clone(),
                                value: v.clone(),
                                create_revision: before
                                    .as_ref()
                                    .map_or(new_revision, |b| b.create_revision),
                                mod_revision: new_revision,
                                version: before.map_or(1, |b| b.version + 1),
                            })
                        }
                        Some((_, None)) => None,
                        None => self.get_at(key, current),
                    };
                    results.push(OpResult::Get { kv });
                }
                Op::Put { key, value } => {
                    results.push(OpResult::Put {
                        prev: self.get_at(key, current),
                    });
                    pending.push((key.clone(), Some(value.clone())));
                    self.events
                        .push((new_revision, key.clone(), EventKind::Put));
                    wrote = true;
                }
                Op::Delete { key } => {
                    let prev = self.get_at(key, current);
                    if prev.is_some() {
                        self.events
                            .push((new_revision, key.clone(), EventKind::Delete));
                        wrote = true;
                        pending.push((key.clone(), None));
                    } else {
                        pending.push((key.clone(), None));
                    }
                    results.push(OpResult::Delete { prev });
                }
            }
        }
        if wrote {
            for (key, value) in pending {
                let existed = self.get_at(&key, current).is_some();
                if value.is_some() || existed {
                    self.versions
                        .entry(key)
                        .or_default()
                        .push((new_revision, value));
                }
            }
            self.revision = new_revision;
        }
        TxnResponse {
            succeeded,
            revision: self.revision,
            results,
        }
    }
}

const KEYS: [&[u8]; 6] = [b"a", b"a/x", b"b", b"b\0y", b"c", b"a\0"];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS.to_vec()).prop_map(|k| k.to_vec())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key(), "[a-z]{0,3}").prop_map(|(k, v)| Op::Put { key: k, value: v.into_bytes() }),
        1 => key().prop_map(|k| Op::Delete { key: k }),
        1 => key().prop_map(|k| Op::Get { key: k }),
    ]
}

/// A branch writes each key at most once (the store refuses anything else).
fn branch() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 0..4).prop_map(|ops| {
        let mut written: Vec<Vec<u8>> = Vec::new();
        ops.into_iter()
            .filter(|op| {
                if matches!(op, Op::Get { .. }) {
                    return true;
                }
                if written.iter().any(|k| k.as_slice() == op.key()) {
                    return false;
                }
                written.push(op.key().to_vec());
                true
            })
            .collect()
    })
}

/// A transaction to build against the model's revision when it is applied.
#[derive(Debug, Clone)]
struct TxnSpec {
    compare: Vec<(Vec<u8>, u8, u64)>,
    success: Vec<Op>,
    failure: Vec<Op>,
    /// Made invalid (an empty key): the state machine must refuse it alone.
    invalid: bool,
}

impl TxnSpec {
    fn build(self, model: &Model) -> Txn {
        let compare = self
            .compare
            .into_iter()
            .map(|(key, kind, n)| Compare {
                key,
                check: match kind {
                    0 => Check::ModRevision(model.revision.saturating_sub(n)),
                    1 => Check::Version(n % 3),
                    2 => Check::Absent,
                    _ => Check::Present,
                },
            })
            .collect();
        let mut success = self.success;
        if self.invalid {
            success.push(Op::put("", "x"));
        }
        Txn {
            compare,
            success,
            failure: self.failure,
        }
    }

    /// What the state machine answers: the model's answer, or a refusal.
    fn expect(txn: &Txn, model: &mut Model) -> CommandResponse {
        match txn.validate() {
            Ok(()) => CommandResponse::Txn(model.apply(txn)),
            Err(reason) => CommandResponse::Rejected { reason },
        }
    }
}

fn txn_spec(invalid_weight: u32) -> impl Strategy<Value = TxnSpec> {
    let compare = (key(), 0u8..4, 0u64..6);
    (
        prop::collection::vec(compare, 0..3),
        branch(),
        branch(),
        prop::bool::weighted(f64::from(invalid_weight) / 100.0),
    )
        .prop_map(|(compare, success, failure, invalid)| TxnSpec {
            compare,
            success,
            failure,
            invalid,
        })
}

#[derive(Debug, Clone)]
enum Step {
    Txn(TxnSpec),
    /// Transactions proposed together as one log entry.
    Batch(Vec<TxnSpec>),
    /// Compact to this fraction (per mille) of the way from compacted to current.
    Compact(u64),
    /// Read a prefix at this fraction of the readable window, with this page size.
    Range {
        prefix: Vec<u8>,
        at: u64,
        limit: usize,
    },
    /// Replay events from this fraction of the readable window.
    Events {
        prefix: Vec<u8>,
        from: u64,
    },
    /// Write RocksDB's memtables out to table files, so that reads go through table files
    /// (and their Bloom filters) too, not only the memtable.
    Flush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => txn_spec(0).prop_map(Step::Txn),
        4 => prop::collection::vec(txn_spec(10), 1..8).prop_map(Step::Batch),
        1 => (0u64..=1000).prop_map(Step::Compact),
        2 => (prop::sample::select(vec![b"".to_vec(), b"a".to_vec(), b"b".to_vec()]), 0u64..=1000, 0usize..4)
            .prop_map(|(prefix, at, limit)| Step::Range { prefix, at, limit }),
        1 => (prop::sample::select(vec![b"".to_vec(), b"a".to_vec()]), 0u64..=1000)
            .prop_map(|(prefix, from)| Step::Events { prefix, from }),
        1 => Just(Step::Flush),
    ]
}

fn within(low: u64, high: u64, per_mille: u64) -> u64 {
    low + (high - low) * per_mille / 1000
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db")).unwrap();
    let keyspace = Arc::new(Keyspace::open(db, 1024).unwrap());
    let mut sm = StateMachineStore::open(keyspace.clone(), dir.path().join("snapshot")).unwrap();
    let mut model = Model::default();
    let mut index = 0;
    let mut apply = |command: Command| {
        index += 1;
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(command),
        }
    };
    for step in steps {
        match step {
            Step::Txn(spec) => {
                let txn = spec.build(&model);
                let expected = model.apply(&txn);
                let got = sm.apply([apply(Command::Txn(txn.clone()))]).await.unwrap();
                prop_assert_eq!(&got[0], &CommandResponse::Txn(expected), "txn {:?}", txn);
            }
            Step::Batch(specs) => {
                // Each transaction is built against the revision the ones before it leave,
                // as clients that read before they write would build them.
                let mut txns = Vec::new();
                let mut expected = Vec::new();
                for spec in specs {
                    let txn = spec.build(&model);
                    expected.push(TxnSpec::expect(&txn, &mut model));
                    txns.push(txn);
                }
                let got = sm
                    .apply([apply(Command::Batch(txns.clone()))])
                    .await
                    .unwrap();
                prop_assert_eq!(
                    &got[0],
                    &CommandResponse::Batch(expected),
                    "batch {:?}",
                    txns
                );
            }
            Step::Compact(per_mille) => {
                let target = within(model.compacted, model.revision, per_mille);
                let got = sm
                    .apply([apply(Command::Compact { revision: target })])
                    .await
                    .unwrap();
                model.compacted = model.compacted.max(target);
                prop_assert_eq!(
                    &got[0],
                    &CommandResponse::Compacted {
                        compacted: model.compacted
                    }
                );
            }
            Step::Range { prefix, at, limit } => {
                let at = within(model.compacted.max(1), model.revision.max(1), at);
                if model.revision == 0 {
                    continue;
                }
                let range = KeyRange::prefix(prefix);
                let expected = model.range_at(&range, at);
                // Page through with `limit`, as clients continue a list.
                let mut got = Vec::new();
                let mut page_range = range.clone();
                loop {
                    let page = keyspace.range(&page_range, at, limit).unwrap();
                    prop_assert_eq!(page.revision, at);
                    got.extend(page.kvs);
                    match page.next_key {
                        Some(next) => page_range.start = next,
                        None => break,
                    }
                }
                prop_assert_eq!(got, expected, "range at {}", at);
                // A range of one key is read by one seek, not a scan: the same answers.
                for key in KEYS {
                    let one = KeyRange::key(key.to_vec());
                    let page = keyspace.range(&one, at, limit).unwrap();
                    prop_assert_eq!(page.next_key, None);
                    prop_assert_eq!(page.kvs, model.range_at(&one, at), "{:?} at {}", key, at);
                }
            }
            Step::Events { prefix, from } => {
                let from = within(model.compacted.max(1), model.revision + 1, from);
                let range = KeyRange::prefix(prefix);
                let (events, _) = keyspace
                    .events(&range, from, model.revision, 100_000)
                    .unwrap();
                let got: Vec<(u64, Vec<u8>, EventKind)> = events
                    .into_iter()
                    .map(|e| (e.kv.mod_revision, e.kv.key, e.kind))
                    .collect();
                let expected: Vec<(u64, Vec<u8>, EventKind)> = model
                    .events
                    .iter()
                    .filter(|(r, k, _)| *r >= from && range.contains(k))
                    .cloned()
                    .collect();
                prop_assert_eq!(got, expected, "events from {}", from);
            }
            Step::Flush => {
                let db = keyspace.db();
                for family in ["kv", "revs", "sm"] {
                    db.flush_cf(db.cf_handle(family).unwrap()).unwrap();
                }
            }
        }
        prop_assert_eq!(keyspace.revision(), model.revision);
        prop_assert_eq!(keyspace.compacted(), model.compacted);
    }
    // Reading below the compacted revision is an error, never a wrong answer.
    if model.compacted > 1 {
        let below = keyspace.range(&KeyRange::prefix(""), model.compacted - 1, 0);
        prop_assert!(
            matches!(below, Err(keyspace_error) if keyspace_error.to_string().contains("compacted"))
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_transactions_match_the_model(steps in prop::collection::vec(step(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(run(steps))?;
    }
}

fn entry(index: u64, command: Command) -> Entry<keelson_raft::TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(command),
    }
}

fn answer_of(response: &CommandResponse) -> &TxnResponse {
    match response {
        CommandResponse::Txn(answer) => answer,
        other => panic!("expected a transaction's answer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_commits_consecutive_revisions_and_its_transactions_stand_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(&dir.path().join("db")).unwrap();
    let keyspace = Arc::new(Keyspace::open(db, 1024).unwrap());
    let mut sm = StateMachineStore::open(keyspace.clone(), dir.path().join("snapshot")).unwrap();
    sm.apply([entry(1, Command::Txn(Txn::put("/x", "0")))])
        .await
        .unwrap();
    let mut watch = WatchStream::open(
        keyspace.clone(),
        WatchRequest {
            range: KeyRange::prefix(""),
            start_revision: 0,
        },
    )
    .unwrap();

    // Phase 1: five transactions in one entry; the third's compare fails, the fourth only
    // reads, the fifth checks what the second wrote.
    let create_y = |value: &str| Txn {
        compare: vec![Compare {
            key: b"/y".to_vec(),
            check: Check::Absent,
        }],
        success: vec![Op::put("/y", value)],
        failure: vec![Op::get("/y")],
    };
    let batch = vec![
        Txn::put("/x", "1"),
        create_y("first"),
        create_y("second"),
        Txn {
            success: vec![Op::get("/x")],
            ..Txn::default()
        },
        Txn {
            compare: vec![Compare {
                key: b"/y".to_vec(),
                check: Check::ModRevision(3),
            }],
            success: vec![Op::delete("/x"), Op::put("/z", "1")],
            failure: vec![],
        },
    ];
    let got = sm.apply([entry(2, Command::Batch(batch))]).await.unwrap();
    let [CommandResponse::Batch(answers)] = &got[..] else {
        panic!("expected a batch's answers, got {got:?}");
    };
    let answers: Vec<&TxnResponse> = answers.iter().map(answer_of).collect();
    let revisions: Vec<u64> = answers.iter().map(|a| a.revision).collect();
    let succeeded: Vec<bool> = answers.iter().map(|a| a.succeeded).collect();
    assert_eq!(revisions, vec![2, 3, 3, 3, 4]);
    assert_eq!(succeeded, vec![true, true, false, true, true]);
    // The failed compare saw the write of the transaction before it, and changed nothing.
    match &answers[2].results[..] {
        [OpResult::Get { kv: Some(kv) }] => {
            assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"first"[..], 3))
        }
        other => panic!("unexpected results {other:?}"),
    }
    match &answers[3].results[..] {
        [OpResult::Get { kv: Some(kv) }] => {
            assert_eq!((kv.value.as_slice(), kv.version), (&b"1"[..], 2))
        }
        other => panic!("unexpected results {other:?}"),
    }
    assert_eq!(keyspace.revision(), 4);

    // Phase 2: reads at each revision of the batch see exactly the transactions up to it.
    let values_at = |revision: u64| -> Vec<(Vec<u8>, Vec<u8>)> {
        keyspace
            .range(&KeyRange::prefix(""), revision, 0)
            .unwrap()
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect()
    };
    let kv = |k: &str, v: &str| (k.as_bytes().to_vec(), v.as_bytes().to_vec());
    assert_eq!(values_at(1), vec![kv("/x", "0")]);
    assert_eq!(values_at(2), vec![kv("/x", "1")]);
    assert_eq!(values_at(3), vec![kv("/x", "1"), kv("/y", "first")]);
    assert_eq!(values_at(4), vec![kv("/y", "first"), kv("/z", "1")]);

    // Phase 3: a live watcher gets every change, one revision after another.
    let events = watch.next().await.unwrap().unwrap();
    let changes: Vec<(u64, &[u8], EventKind)> = events
        .iter()
        .map(|e| (e.kv.mod_revision, e.kv.key.as_slice(), e.kind))
        .collect();
    assert_eq!(
        changes,
        vec![
            (2, &b"/x"[..], EventKind::Put),
            (3, b"/y", EventKind::Put),
            (4, b"/x", EventKind::Delete),
            (4, b"/z", EventKind::Put),
        ]
    );
    assert_eq!(
        events[2].prev.as_ref().map(|p| p.value.as_slice()),
        Some(&b"1"[..])
    );
}
