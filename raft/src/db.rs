//! Opens the member's RocksDB database and names its column families.
//!
//! | family      | key                       | value                                    |
//! |-------------|---------------------------|------------------------------------------|
//! | `log`       | log index (u64 BE)        | postcard `Entry<TypeConfig>`             |
//! | `vote`      | `vote`                    | postcard `Vote`                          |
//! | `committed` | `committed`               | postcard `Option<LogId>`                 |
//! | `purged`    | `purged`                  | postcard `LogId` of the last purged entry |
//! | `kv`        | MVCC key (see `codec`)    | postcard `Version`                       |
//! | `revs`      | revision BE, sub BE       | the user key changed                     |
//! | `sm`        | `applied`, `membership`, `revision`, `compacted` | postcard values   |

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, Options, DB};

pub(crate) const CF_LOG: &str = "log";
pub(crate) const CF_VOTE: &str = "vote";
pub(crate) const CF_COMMITTED: &str = "committed";
pub(crate) const CF_PURGED: &str = "purged";
pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_REVS: &str = "revs";
pub(crate) const CF_SM: &str = "sm";

const FAMILIES: [&str; 7] = [
    CF_LOG,
    CF_VOTE,
    CF_COMMITTED,
    CF_PURGED,
    CF_KV,
    CF_REVS,
    CF_SM,
];

/// Opens (creating if needed) the database in `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Bound the memory RocksDB may hold in memtables and open files.
    options.set_write_buffer_size(32 * 1024 * 1024);
    options.set_max_open_files(512);
    // Writes only fill RocksDB's WAL buffer; the log's sync thread writes and fsyncs it for
    // every append waiting (group commit), and synced writes (votes) flush it themselves.
    // Without this, every write went to the file at once and each leader append ended up
    // waiting for its own fsync.
    options.set_manual_wal_flush(true);
    let families = FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    DB::open_cf_descriptors(&options, dir, families).map(Arc::new)
}

/// The handle of a family this module created at open.
pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> &'a ColumnFamily {
    // Every name passed here is one of FAMILIES, all created by `open` (create_missing_column_families).
    #[allow(clippy::expect_used)]
    db.cf_handle(name).expect("column family created at open")
}

/// Closes the database: stops background work, then drops the last handle.
///
/// RocksDB aborts the process at exit if the DB is still open on another thread, so the owner
/// calls this once every other clone of the `Arc` is gone; while clones remain it hands the
/// handle back.
pub fn close(db: Arc<DB>) -> Result<(), Arc<DB>> {
    let db = Arc::try_unwrap(db)?;
    // Write out what the hand-flushed WAL still buffers (state machine writes).
    if let Err(e) = db.flush_wal(true) {
        tracing::warn!("cannot flush the write-ahead log at close: {e}");
    }
    db.cancel_all_background_work(true);
    drop(db);
    Ok(())
}
