//! openraft's storage conformance suite against the RocksDB log store and state machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::sync::{Arc, Mutex};

use keelson_raft::storage::{open, Keyspace, LogStore, StateMachineStore};
use keelson_raft::TypeConfig;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

/// Builds a fresh store in its own temporary directory for each suite case; the directories
/// live as long as the builder.
struct RocksBuilder {
    dirs: Mutex<Vec<tempfile::TempDir>>,
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
        let log_store = LogStore::new(db, false);
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir);
        Ok(((), log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes() -> Result<(), StorageError<u64>> {
    Suite::test_all(RocksBuilder {
        dirs: Mutex::new(Vec::new()),
    })
}
