//! The Raft log, vote, committed and purged ids on RocksDB (openraft's `RaftLogStorage`).
//!
//! Durability: appended entries go to RocksDB's WAL at once (so readers see them) and a
//! dedicated sync thread writes out and fsyncs the WAL (flushed by hand, see `db::open`) before
//! it reports them flushed to Raft. Appends that
//! arrive while a sync runs share the next one (group commit). Votes are written synced.
//! In `no_sync` mode (Jepsen only, `UnsafeMode`) appends and votes are acknowledged before
//! any fsync: the WAL is written out to the OS but never synced.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use tokio::sync::watch;

use crate::codec::{decode, encode, read_u64, u64_key};
use crate::db::{cf, CF_COMMITTED, CF_LOG, CF_PURGED, CF_VOTE};
use crate::log_growth::LogGrowth;
use crate::types::{MemberId, TypeConfig};

type StorageResult<T> = Result<T, StorageError<MemberId>>;

/// How many appends may wait for one fsync before `append` itself waits.
const PENDING_SYNCS_MAX: usize = 4096;

/// How long a purge waits for the snapshot that covers it to be on disk (a large install
/// takes a few seconds; the Raft core waits meanwhile, as it would for the install); past it, the log is
/// purged only as far as the snapshot on disk goes (the rest waits for a later purge).
const PURGE_WAIT_MAX: Duration = Duration::from_secs(10);

/// The last log id of the snapshot on disk (fsynced), as the state machine publishes it.
pub type DurableSnapshot = watch::Receiver<Option<LogId<MemberId>>>;

/// The log side of a member's storage. Cheap to clone: clones share the database and the
/// sync thread.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    sync: SyncSender<LogFlushed<TypeConfig>>,
    /// Acknowledge appends and meta writes without fsync (unsafe; Jepsen only).
    no_sync: bool,
    /// When set, the log is never purged past the snapshot on disk (see [`LogStore::purge`]).
    snapshot: Option<DurableSnapshot>,
    /// How long a purge waits for its snapshot ([`PURGE_WAIT_MAX`]; tests shorten it).
    purge_wait: Duration,
    /// Where the bytes appended are counted, for a snapshot due by size.
    growth: Option<Arc<LogGrowth>>,
}

impl LogStore {
    pub fn new(db: Arc<DB>, no_sync: bool) -> Self {
        let (sync, pending) = mpsc::sync_channel(PENDING_SYNCS_MAX);
        let sync_db = db.clone();
        thread::Builder::new()
            .name("raft-log-sync".to_string())
            .spawn(move || sync_loop(&sync_db, &pending, no_sync))
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start the log sync thread: {e}"));
        LogStore {
            db,
            sync,
            no_sync,
            snapshot: None,
            purge_wait: PURGE_WAIT_MAX,
            growth: None,
        }
    }

    /// Counts the bytes appended into `growth` (see [`crate::log_growth`]).
    pub(crate) fn counting_into(mut self, growth: Arc<LogGrowth>) -> Self {
        self.growth = Some(growth);
        self
    }

    /// Purges wait for `snapshot` to cover them. openraft 0.9 purges the log up to a snapshot
    /// received from the leader while the state machine is still installing it: killed in
    /// between, a member restarted with its log purged past its snapshot file, a hole openraft
    /// refuses to start with (found by the Jepsen suite).
    pub fn purge_within(mut self, snapshot: DurableSnapshot) -> Self {
        self.snapshot = Some(snapshot);
        self
    }

    /// How far the log may be purged towards `upto`: all the way once the snapshot on disk
    /// covers it (waiting at most [`PURGE_WAIT_MAX`]), else as far as that snapshot goes.
    async fn purgeable(&self, upto: LogId<MemberId>) -> Option<LogId<MemberId>> {
        let Some(snapshot) = &self.snapshot else {
            return Some(upto);
        };
        let mut snapshot = snapshot.clone();
        let covered = snapshot.wait_for(|last| last.as_ref() >= Some(&upto));
        if let Ok(Ok(_)) = tokio::time::timeout(self.purge_wait, covered).await {
            return Some(upto);
        }
        let on_disk = *snapshot.borrow();
        tracing::warn!(
            upto = %upto,
            snapshot = ?on_disk,
            "the snapshot on disk does not cover this purge yet: purging only as far as it goes"
        );
        on_disk.filter(|last| last.index < upto.index)
    }

    /// Called before Raft starts: keeps the persisted vote (term and candidate) but forgets
    /// that a quorum granted it. openraft 0.9 otherwise restores a member whose committed vote
    /// names itself as leader at once, without an election, even when that member has since
    /// been removed from the membership: a leader that removed itself and restarts would lead
    /// a cluster it is not part of, and name itself leader to every client. Forgetting the
    /// grant costs one election after a leader restarts (a follower learns its leader from the
    /// next heartbeat); what Raft's safety rests on, never voting twice in a term, is kept.
    pub fn forget_vote_grant(&self) -> Result<(), StorageIOError<MemberId>> {
        let Some(vote) = self.read_meta::<Vote<MemberId>>(CF_VOTE)? else {
            return Ok(());
        };
        if !vote.is_committed() {
            return Ok(());
        }
        let (term, candidate) = (vote.leader_id().term, vote.leader_id().node_id);
        self.write_meta(CF_VOTE, &Vote::new(term, candidate), true)
            .map_err(|e| StorageIOError::write_vote(&e))
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        family: &'static str,
    ) -> Result<Option<T>, StorageIOError<MemberId>> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, family), family)
            .map_err(|e| StorageIOError::read(&e))?;
        bytes
            .map(|b| decode(family, &b))
            .transpose()
            .map_err(|e| StorageIOError::read(&e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        family: &'static str,
        value: &T,
        sync: bool,
    ) -> Result<(), rocksdb::Error> {
        let fsync = sync && !self.no_sync;
        let mut options = WriteOptions::default();
        options.set_sync(fsync);
        self.db
            .put_cf_opt(cf(&self.db, family), family, encode(value), &options)?;
        if sync {
            // The WAL is flushed by hand (see `db::open`): write out the buffer, and fsync it
            // unless `no_sync` (Jepsen only) acknowledges before any sync.
            self.db.flush_wal(fsync)?;
        }
        Ok(())
    }

    fn last_entry_id(&self) -> StorageResult<Option<LogId<MemberId>>> {
        let mut iter = self.db.iterator_cf(cf(&self.db, CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry<TypeConfig> =
                    decode("log entry", &value).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// Waits for appends, fsyncs the WAL once for all that are waiting, then reports them. With
/// `no_sync` the WAL is only written out to the OS, never fsynced, before the report.
fn sync_loop(db: &DB, pending: &Receiver<LogFlushed<TypeConfig>>, no_sync: bool) {
    while let Ok(first) = pending.recv() {
        let mut batch = vec![first];
        batch.extend(pending.try_iter().take(PENDING_SYNCS_MAX));
        let result = db.flush_wal(!no_sync);
        for callback in batch {
            let result = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(format!(
                    "fsync of the raft log failed: {e}"
                ))),
            };
            callback.log_io_completed(result);
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let from = u64_key(start);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOG),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = read_u64("log index", &key).map_err(|e| StorageIOError::read_logs(&e))?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = decode("log entry", &value)
                .map_err(|e| StorageIOError::read_log_at_index(index, &e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<MemberId>> = self.read_meta(CF_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> StorageResult<()> {
        self.write_meta(CF_VOTE, vote, true)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<MemberId>>> {
        self.read_meta(CF_VOTE)
            .map_err(|_| StorageIOError::read_vote(&io::Error::other("corrupt vote")).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<MemberId>>) -> StorageResult<()> {
        // Not synced: a committed id lost in a crash is learned again from the leader.
        self.write_meta(CF_COMMITTED, &committed, false)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<MemberId>>> {
        Ok(self
            .read_meta::<Option<LogId<MemberId>>>(CF_COMMITTED)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log = cf(&self.db, CF_LOG);
        let mut batch = WriteBatch::default();
        let mut bytes = 0;
        for entry in entries {
            let encoded = encode(&entry);
            bytes += encoded.len() as u64;
            batch.put_cf(log, u64_key(entry.log_id.index), encoded);
        }
        if let Some(growth) = &self.growth {
            growth.appended(bytes);
        }
        self.db
            .write(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        self.sync.send(callback).map_err(|_| {
            StorageIOError::write_logs(&io::Error::other("the log sync thread has stopped"))
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> StorageResult<()> {
        self.db
            .delete_range_cf(
                cf(&self.db, CF_LOG),
                u64_key(log_id.index),
                u64_key(u64::MAX),
            )
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<MemberId>) -> StorageResult<()> {
        let Some(log_id) = self.purgeable(log_id).await else {
            return Ok(());
        };
        // Record the purge point first: a crash between the two leaves extra entries, which
        // openraft tolerates, never a gap.
        self.write_meta(CF_PURGED, &log_id, true)
            .map_err(|e| StorageIOError::write(&e))?;
        self.db
            .delete_range_cf(
                cf(&self.db, CF_LOG),
                u64_key(0),
                u64_key(log_id.index.saturating_add(1)),
            )
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log_id(index: u64) -> LogId<MemberId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    async fn purged(log: &LogStore) -> Option<LogId<MemberId>> {
        log.clone()
            .get_log_state()
            .await
            .expect("log state")
            .last_purged_log_id
    }

    #[tokio::test]
    async fn the_log_is_purged_no_further_than_the_snapshot_on_disk() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = crate::db::open(dir.path()).expect("open");
        let (snapshot, on_disk) = watch::channel(Some(log_id(100)));
        let mut log = LogStore::new(db, false).purge_within(on_disk);
        log.purge_wait = Duration::from_millis(400);
        // Covered by the snapshot on disk: at once.
        log.clone().purge(log_id(90)).await.expect("purge");
        assert_eq!(purged(&log).await, Some(log_id(90)));
        // Past it: waits until a snapshot that covers it is on disk.
        let purge = tokio::spawn({
            let mut log = log.clone();
            async move { log.purge(log_id(200)).await }
        });
        tokio::time::sleep(log.purge_wait / 2).await;
        assert_eq!(purged(&log).await, Some(log_id(90)));
        snapshot.send_replace(Some(log_id(250)));
        purge.await.expect("task").expect("purge");
        assert_eq!(purged(&log).await, Some(log_id(200)));
        // A snapshot that never comes: only as far as the one on disk, after the wait.
        log.clone().purge(log_id(400)).await.expect("purge");
        assert_eq!(purged(&log).await, Some(log_id(250)));
        close(log).await;
    }

    /// Closes the database once the sync thread, which stops when the last clone of the log
    /// is dropped, has let go of it: the test process exiting with the database still open on
    /// that thread aborts with SIGSEGV now and then.
    async fn close(log: LogStore) {
        let mut db = log.db.clone();
        drop(log);
        for _ in 0..200 {
            match crate::db::close(db) {
                Ok(()) => return,
                Err(shared) => db = shared,
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the log sync thread still holds the database after 2 s");
    }
}
