//! openraft's storage conformance suite against the RocksDB log store and state machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keelson_raft::storage::{close, open, Keyspace, LogStore, StateMachineStore};
use keelson_raft::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

/// A database the suite opened, with the temporary directory it lives in.
type Opened = (Arc<rocksdb::DB>, tempfile::TempDir);

/// Builds a fresh store in its own temporary directory for each suite case; the databases and
/// their directories are kept for [`close_all`].
struct RocksBuilder {
    opened: Arc<Mutex<Vec<Opened>>>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for RocksBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        let db = open(&dir.path().join("db"))
            .map_err(|e| StorageError::from(openraft::StorageIOError::write(&e)))?;
        let keyspace = Arc::new(
            Keyspace::open(db.clone(), 1024)
                .map_err(|e| StorageError::from(openraft::StorageIOError::read(&e)))?,
        );
        let state_machine = StateMachineStore::open(keyspace, dir.path().join("snapshot"))?;
        let log_store = LogStore::new(db.clone(), false);
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((db, dir));
        Ok(((), log_store, state_machine))
    }
}

/// Closes every database once the stores' log sync threads (which stop when their last log
/// store is dropped) have let go of it: the process exiting with a database still open on
/// another thread aborts now and then.
fn close_all(opened: &Mutex<Vec<Opened>>) {
    let opened = std::mem::take(&mut *opened.lock().unwrap_or_else(|e| e.into_inner()));
    for (mut db, _dir) in opened {
        let mut tries = 0;
        while let Err(shared) = close(db) {
            tries += 1;
            assert!(
                tries < 200,
                "a log sync thread still holds its database after 2 s"
            );
            std::thread::sleep(Duration::from_millis(10));
            db = shared;
        }
    }
}

#[test]
fn openraft_storage_suite_passes() -> Result<(), StorageError<u64>> {
    let opened = Arc::new(Mutex::new(Vec::new()));
    let result = Suite::test_all(RocksBuilder {
        opened: opened.clone(),
    });
    close_all(&opened);
    result
}
