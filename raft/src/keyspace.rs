//! The MVCC keyspace: every version of every key inside the history window, on RocksDB.
//!
//! Writes happen only through [`Keyspace::apply_txn`] and [`Keyspace::compact_into`] into a
//! [`PendingWrite`], called by the state machine in log order; reads may run on any task at any time. A read at revision `r`
//! is stable while writes continue, because writes only add versions above the current
//! revision and compaction only removes versions below the compacted revision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{DBRawIterator, Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use crate::codec::{
    decode, encode, mvcc_key, mvcc_prefix, mvcc_seek, read_u64, rev_key, split_mvcc_key,
    split_rev_key, DecodeError,
};
use crate::command::{
    Check, Event, EventKind, KeyRange, KeyValue, Op, OpResult, RangeResponse, Txn, TxnResponse,
    RANGE_KEYS_MAX,
};
use crate::db::{cf, one_prefix, total_order, CF_KV, CF_REVS, CF_SM};
use crate::newest::NewestVersions;
use crate::watch::WatchHub;

/// Keys of the `sm` family.
pub(crate) const SM_APPLIED: &[u8] = b"applied";
pub(crate) const SM_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const SM_REVISION: &[u8] = b"revision";
pub(crate) const SM_COMPACTED: &[u8] = b"compacted";

/// The newest version seen so far of a key being scanned, with its revision.
/// The newest version of a key found so far in a scan: its revision and its stored bytes,
/// decoded only once the scan has passed the key (older versions are never decoded).
type Best = Option<(u64, Box<[u8]>)>;

/// One version of a key as stored in the `kv` family; the revision is in the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Version {
    pub(crate) create_revision: u64,
    pub(crate) version: u64,
    /// `None` is a deletion (tombstone).
    #[serde(with = "crate::codec::opt_bytes")]
    pub(crate) value: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyspaceError {
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: u64, current: u64 },
    #[error("rocksdb: {0}")]
    Db(#[from] rocksdb::Error),
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
}

/// The effect of one log entry, built in memory and written to disk as one RocksDB write batch,
/// so that a crash leaves all of it applied or none of it (re-applying the entry is then exact).
///
/// An entry may hold several transactions ([`crate::Command::Batch`]). Each commits on top of
/// the ones before it: their writes are not on disk yet, so later transactions read them from
/// `overlay`, and everything else from disk at `base`.
///
/// The reads from disk share one iterator, made at the first of them: making a RocksDB
/// iterator (pinning the memtables and table files, building the merge over them) cost more
/// than the seeks themselves, and an entry holds many transactions. Nothing else writes the
/// keyspace while an entry is applied, so the iterator's view is the disk at `base`.
pub struct PendingWrite<'a> {
    /// The revision on disk under this write.
    base: u64,
    /// The revision after the transactions applied so far.
    revision: u64,
    /// The newest version, with its revision, of every key written so far; a tombstone for a
    /// deletion.
    overlay: HashMap<Vec<u8>, (u64, Version)>,
    batch: WriteBatch,
    /// The changes so far, in revision order.
    events: Vec<Event>,
    db: &'a DB,
    /// Over the `kv` family at `base`, in prefix mode; made at the first read from disk.
    versions: Option<DBRawIterator<'a>>,
}

impl PendingWrite<'_> {
    /// The write batch, for the state machine's own records (applied id, membership) and for
    /// compaction.
    pub fn batch_mut(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    /// The revision after every transaction applied so far.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Ends the write: the batch to write (with the new revision counter, if it moved), and
    /// what to publish after writing it ([`Keyspace::publish`]).
    pub fn finish(mut self) -> (WriteBatch, Written) {
        if self.revision != self.base {
            self.batch
                .put_cf(cf(self.db, CF_SM), SM_REVISION, self.revision.to_be_bytes());
        }
        let written = Written {
            revision: self.revision,
            events: self.events,
            versions: self.overlay,
        };
        (self.batch, written)
    }
}

/// What one log entry wrote, to publish once its batch is on disk.
pub struct Written {
    /// The revision after the entry.
    revision: u64,
    /// Its changes, in revision order.
    events: Vec<Event>,
    /// The newest version, with its revision, of every key it wrote.
    versions: HashMap<Vec<u8>, (u64, Version)>,
}

/// The MVCC keyspace shared by the state machine (writer) and readers.
pub struct Keyspace {
    db: Arc<DB>,
    revision: AtomicU64,
    compacted: AtomicU64,
    hub: WatchHub,
    newest: NewestVersions,
}

impl Keyspace {
    pub fn open(db: Arc<DB>, watch_buffer_events_max: usize) -> Result<Self, KeyspaceError> {
        let keyspace = Keyspace {
            db,
            revision: AtomicU64::new(0),
            compacted: AtomicU64::new(0),
            hub: WatchHub::new(watch_buffer_events_max),
            newest: NewestVersions::default(),
        };
        keyspace.reload()?;
        Ok(keyspace)
    }

    /// Re-reads the revision counters from disk (after open or a snapshot install), and
    /// forgets the newest versions known in memory (a snapshot replaced them), before a
    /// reader can take the new revision.
    pub fn reload(&self) -> Result<(), KeyspaceError> {
        self.newest.clear();
        let revision = self.read_sm_u64(SM_REVISION)?;
        let compacted = self.read_sm_u64(SM_COMPACTED)?;
        self.revision.store(revision, Ordering::SeqCst);
        self.compacted.store(compacted, Ordering::SeqCst);
        Ok(())
    }

    fn read_sm_u64(&self, key: &[u8]) -> Result<u64, KeyspaceError> {
        match self.db.get_cf(cf(&self.db, CF_SM), key)? {
            Some(bytes) => Ok(read_u64("state machine counter", &bytes)?),
            None => Ok(0),
        }
    }

    pub fn db(&self) -> &Arc<DB> {
        &self.db
    }

    pub fn hub(&self) -> &WatchHub {
        &self.hub
    }

    /// The revision of the last applied write (0 before the first).
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// Revisions below this are gone from history.
    pub fn compacted(&self) -> u64 {
        self.compacted.load(Ordering::SeqCst)
    }

    /// Publishes a write already on disk: records the newest versions it wrote, then moves
    /// the revision and tells the watchers, in one step under the hub's lock so that a
    /// watcher registering concurrently sees each event exactly once (from disk or live).
    pub fn publish(&self, written: Written) {
        for (key, (revision, version)) in &written.versions {
            self.newest.record(key, *revision, version);
        }
        let revision = written.revision;
        if revision == self.revision() {
            return;
        }
        self.hub.publish(written.events, || {
            self.revision.store(revision, Ordering::SeqCst);
        });
    }

    pub fn set_compacted(&self, compacted: u64) {
        self.compacted.store(compacted, Ordering::SeqCst);
    }

    /// The newest version of `key` at or below `revision`, tombstones included.
    fn version_at(
        &self,
        key: &[u8],
        revision: u64,
    ) -> Result<Option<(u64, Version)>, KeyspaceError> {
        if let Some(newest) = self.newest.get(key).filter(|(r, _)| *r <= revision) {
            return Ok(Some(newest));
        }
        let mut iter = self
            .db
            .raw_iterator_cf_opt(cf(&self.db, CF_KV), one_prefix());
        newest_at(&mut iter, key, revision)
    }

    /// The live value of `key` at `revision`.
    fn get_at(&self, key: &[u8], revision: u64) -> Result<Option<KeyValue>, KeyspaceError> {
        Ok(self
            .version_at(key, revision)?
            .and_then(|(mod_revision, v)| to_kv(key.to_vec(), mod_revision, v)))
    }

    /// Starts the write of one log entry on top of the current revision.
    pub fn begin_write(&self) -> PendingWrite<'_> {
        let base = self.revision();
        PendingWrite {
            base,
            revision: base,
            overlay: HashMap::new(),
            batch: WriteBatch::default(),
            events: Vec::new(),
            db: &self.db,
            versions: None,
        }
    }

    /// The newest version of `key` as of `pending`: written earlier in it, else on disk.
    fn pending_version(
        &self,
        pending: &mut PendingWrite<'_>,
        key: &[u8],
    ) -> Result<Option<(u64, Version)>, KeyspaceError> {
        if let Some(newest) = pending.overlay.get(key) {
            return Ok(Some(newest.clone()));
        }
        // Everything on disk is published, so a version known in memory is the newest at
        // `base`.
        if let Some(newest) = self.newest.get(key) {
            return Ok(Some(newest));
        }
        let db = pending.db;
        let iter = pending
            .versions
            .get_or_insert_with(|| db.raw_iterator_cf_opt(cf(db, CF_KV), one_prefix()));
        newest_at(iter, key, pending.base)
    }

    /// The live value of `key` as of `pending`.
    fn pending_get(
        &self,
        pending: &mut PendingWrite<'_>,
        key: &[u8],
    ) -> Result<Option<KeyValue>, KeyspaceError> {
        Ok(self
            .pending_version(pending, key)?
            .and_then(|(mod_revision, v)| to_kv(key.to_vec(), mod_revision, v)))
    }

    /// Adds a transaction to `pending`, on top of the revision after the transactions already
    /// in it, exactly as if it were applied alone: one new revision if it writes anything.
    /// Deterministic: reads only the store and `pending`, never the clock.
    pub fn apply_txn(
        &self,
        pending: &mut PendingWrite<'_>,
        txn: &Txn,
    ) -> Result<TxnResponse, KeyspaceError> {
        let current = pending.revision;
        let mut succeeded = true;
        for compare in &txn.compare {
            let kv = self.pending_get(pending, &compare.key)?;
            let holds = match (compare.check, &kv) {
                (Check::ModRevision(rev), Some(kv)) => kv.mod_revision == rev,
                (Check::ModRevision(_), None) => false,
                (Check::Version(v), kv) => kv.as_ref().map_or(0, |kv| kv.version) == v,
                (Check::Absent, kv) => kv.is_none(),
                (Check::Present, kv) => kv.is_some(),
            };
            if !holds {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };

        let new_revision = current + 1;
        let kv_cf = cf(&self.db, CF_KV);
        let revs_cf = cf(&self.db, CF_REVS);
        let mut results = Vec::with_capacity(branch.len());
        // What this transaction has written so far, for its own later `Get`s.
        let mut written: HashMap<&[u8], Option<KeyValue>> = HashMap::new();
        // The versions it writes; they enter the overlay once the whole branch is built, since
        // its ops read the state before the transaction.
        let mut versions: Vec<(&[u8], Version)> = Vec::new();
        let mut events = Vec::new();
        for op in branch {
            match op {
                Op::Get { key } => {
                    let kv = match written.get(key.as_slice()) {
                        Some(kv) => kv.clone(),
                        None => self.pending_get(pending, key)?,
                    };
                    results.push(OpResult::Get { kv });
                }
                Op::Put { key, value } => {
                    let prev = self.pending_get(pending, key)?;
                    let version = Version {
                        create_revision: prev.as_ref().map_or(new_revision, |p| p.create_revision),
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        value: Some(value.clone()),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: version.create_revision,
                        mod_revision: new_revision,
                        version: version.version,
                    };
                    events.push(Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        prev: prev.clone(),
                    });
                    versions.push((key, version));
                    written.insert(key, Some(kv));
                    results.push(OpResult::Put { prev });
                }
                Op::Delete { key } => {
                    let prev = self.pending_get(pending, key)?;
                    if let Some(prev) = &prev {
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: deleted_kv(key.clone(), new_revision),
                            prev: Some(prev.clone()),
                        });
                        versions.push((
                            key,
                            Version {
                                create_revision: 0,
                                version: 0,
                                value: None,
                            },
                        ));
                    }
                    written.insert(key, None);
                    results.push(OpResult::Delete { prev });
                }
            }
        }
        if !versions.is_empty() {
            // The branch writes each key at most once (`Txn::validate`), so `sub` numbers the
            // changes of this revision in op order, as the events are.
            for (sub, (key, version)) in (0u32..).zip(versions) {
                pending
                    .batch
                    .put_cf(kv_cf, mvcc_key(key, new_revision), encode(&version));
                pending
                    .batch
                    .put_cf(revs_cf, rev_key(new_revision, sub), key);
                pending
                    .overlay
                    .insert(key.to_vec(), (new_revision, version));
            }
            pending.events.append(&mut events);
            pending.revision = new_revision;
        }
        Ok(TxnResponse {
            succeeded,
            revision: pending.revision,
            results,
        })
    }

    /// Adds to `batch` the removal of history below `compact_to`: every version that a newer
    /// version at or below `compact_to` hides, every deletion below it, and the revision index
    /// below it. The newest live version of each key below `compact_to` stays.
    pub fn compact_into(
        &self,
        compact_to: u64,
        batch: &mut WriteBatch,
    ) -> Result<(), KeyspaceError> {
        let kv_cf = cf(&self.db, CF_KV);
        let revs_cf = cf(&self.db, CF_REVS);
        let end = rev_key(compact_to, 0);
        for item in self.db.iterator_cf(revs_cf, IteratorMode::Start) {
            let (raw_rev, user_key) = item?;
            if raw_rev.as_ref() >= end.as_slice() {
                break;
            }
            let (revision, _) = split_rev_key(&raw_rev)?;
            // Everything older than this version of the key is hidden by it.
            let from = mvcc_key(&user_key, 0);
            let to = mvcc_key(&user_key, revision);
            for older in self.db.iterator_cf_opt(
                kv_cf,
                total_order(),
                IteratorMode::From(&from, Direction::Forward),
            ) {
                let (raw_key, _) = older?;
                if raw_key.as_ref() >= to.as_slice() {
                    break;
                }
                batch.delete_cf(kv_cf, raw_key);
            }
            if let Some((mod_revision, version)) = self.version_at(&user_key, revision)? {
                if mod_revision == revision && version.value.is_none() {
                    batch.delete_cf(kv_cf, &to);
                }
            }
            batch.delete_cf(revs_cf, raw_rev);
        }
        batch.put_cf(cf(&self.db, CF_SM), SM_COMPACTED, compact_to.to_be_bytes());
        Ok(())
    }

    fn check_readable(&self, revision: u64) -> Result<u64, KeyspaceError> {
        let current = self.revision();
        let revision = if revision == 0 { current } else { revision };
        if revision > current {
            return Err(KeyspaceError::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compacted = self.compacted();
        if revision < compacted {
            return Err(KeyspaceError::Compacted {
                requested: revision,
                compacted,
            });
        }
        Ok(revision)
    }

    /// The live keys of `range` at `revision` (0: current), at most `limit` (0: the cap).
    /// Returns the keys, the revision read at, and where the next page starts.
    pub fn range(
        &self,
        range: &KeyRange,
        revision: u64,
        limit: usize,
    ) -> Result<RangeResponse, KeyspaceError> {
        let revision = self.check_readable(revision)?;
        let limit = if limit == 0 {
            RANGE_KEYS_MAX
        } else {
            limit.min(RANGE_KEYS_MAX)
        };
        if let Some(key) = range.single_key() {
            // One seek in prefix mode (Bloom filters skip the tables without the key) instead
            // of a scan in total order over every version of the key: reads of one object
            // come with every update of it.
            let kvs = self.get_at(key, revision)?.into_iter().collect();
            self.check_readable(revision)?;
            return Ok(RangeResponse {
                kvs,
                revision,
                next_key: None,
            });
        }
        let seek = mvcc_seek(&range.start);
        let iter = self.db.iterator_cf_opt(
            cf(&self.db, CF_KV),
            total_order(),
            IteratorMode::From(&seek, Direction::Forward),
        );
        let mut kvs = Vec::new();
        let mut next_key = None;
        // The newest version at or below `revision` of the key being scanned.
        let mut current: Option<(Vec<u8>, Best)> = None;
        let emit = |key: Vec<u8>, best: Best, kvs: &mut Vec<KeyValue>| {
            let Some((mod_revision, raw)) = best else {
                return Ok(());
            };
            let version: Version = decode("mvcc version", &raw)?;
            if let Some(kv) = to_kv(key, mod_revision, version) {
                kvs.push(kv);
            }
            Ok::<(), KeyspaceError>(())
        };
        for item in iter {
            let (raw_key, raw_value) = item?;
            let (key, mod_revision) = split_mvcc_key(&raw_key)?;
            if !range.contains(&key) {
                if key.as_slice() < range.start.as_slice() {
                    continue;
                }
                break;
            }
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                if let Some((k, best)) = current.take() {
                    emit(k, best, &mut kvs)?;
                }
                if kvs.len() == limit {
                    // Another key follows; the page is full only if that key is live, which
                    // the next page will tell. Start there.
                    next_key = Some(key);
                    break;
                }
                current = Some((key, None));
            }
            if mod_revision <= revision {
                if let Some((_, best)) = current.as_mut() {
                    *best = Some((mod_revision, raw_value));
                }
            }
        }
        if let Some((k, best)) = current.take() {
            emit(k, best, &mut kvs)?;
        }
        // Compaction may have run during the scan and removed versions it needed.
        self.check_readable(revision)?;
        Ok(RangeResponse {
            kvs,
            revision,
            next_key,
        })
    }

    /// The changes in `range` from revision `from` through `to`, at most `max` of them, in
    /// revision order. Returns them and the revision to continue from.
    pub fn events(
        &self,
        range: &KeyRange,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<(Vec<Event>, u64), KeyspaceError> {
        let compacted = self.compacted();
        if from < compacted {
            return Err(KeyspaceError::Compacted {
                requested: from,
                compacted,
            });
        }
        let start = rev_key(from, 0);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_REVS),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut events = Vec::new();
        let mut next = to.saturating_add(1);
        for item in iter {
            let (raw_rev, user_key) = item?;
            let (revision, _) = split_rev_key(&raw_rev)?;
            if revision > to {
                break;
            }
            if events.len() >= max {
                // Stop at a revision boundary so a transaction is never split across pages.
                if events
                    .last()
                    .is_some_and(|e: &Event| e.kv.mod_revision != revision)
                {
                    next = revision;
                    break;
                }
            }
            if !range.contains(&user_key) {
                continue;
            }
            let Some((mod_revision, version)) = self.version_at(&user_key, revision)? else {
                continue;
            };
            if mod_revision != revision {
                // Only a compaction past `from` removes a version we are reading.
                return Err(KeyspaceError::Compacted {
                    requested: from,
                    compacted: self.compacted(),
                });
            }
            let prev = match revision.checked_sub(1) {
                Some(before) => self.get_at(&user_key, before)?,
                None => None,
            };
            let event = match to_kv(user_key.to_vec(), mod_revision, version) {
                Some(kv) => Event {
                    kind: EventKind::Put,
                    kv,
                    prev,
                },
                None => Event {
                    kind: EventKind::Delete,
                    kv: deleted_kv(user_key.to_vec(), revision),
                    prev,
                },
            };
            events.push(event);
        }
        let compacted = self.compacted();
        if from < compacted {
            return Err(KeyspaceError::Compacted {
                requested: from,
                compacted,
            });
        }
        Ok((events, next))
    }
}

/// The newest version of `key` at or below `revision` that `iter` (over the `kv` family, in
/// prefix mode) sees, tombstones included.
fn newest_at(
    iter: &mut DBRawIterator<'_>,
    key: &[u8],
    revision: u64,
) -> Result<Option<(u64, Version)>, KeyspaceError> {
    iter.seek_for_prev(mvcc_key(key, revision));
    let (Some(raw_key), Some(raw_value)) = (iter.key(), iter.value()) else {
        iter.status()?;
        return Ok(None);
    };
    if !raw_key.starts_with(&mvcc_prefix(key)) {
        return Ok(None);
    }
    let (_, mod_revision) = split_mvcc_key(raw_key)?;
    let version: Version = decode("mvcc version", raw_value)?;
    Ok(Some((mod_revision, version)))
}

fn to_kv(key: Vec<u8>, mod_revision: u64, version: Version) -> Option<KeyValue> {
    version.value.map(|value| KeyValue {
        key,
        value,
        create_revision: version.create_revision,
        mod_revision,
        version: version.version,
    })
}

fn deleted_kv(key: Vec<u8>, revision: u64) -> KeyValue {
    KeyValue {
        key,
        value: Vec::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
    }
}
