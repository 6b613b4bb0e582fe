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

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Options, ReadOptions, SliceTransform,
    DB,
};

use crate::codec::{mvcc_key_prefix, MVCC_KEY_BYTES_MIN};

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

/// A family's memtable is written out to a table file past this size.
const MEMTABLE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The write-ahead log kept for replay at open, at most (see [`open`]).
const WAL_TOTAL_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// Opens (creating if needed) the database in `dir`.
pub fn open(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(rocksdb::DBCompressionType::Lz4);
    options.set_max_open_files(512);
    // Bound what a restart replays. The small families (`sm`, `vote`, `committed`) are
    // written with every entry but never fill a memtable, so without a bound no WAL file
    // was ever released: after half an hour of writes a member replayed hundreds of MiB at
    // open (seconds). Past this total RocksDB flushes the families holding the oldest file.
    options.set_max_total_wal_size(WAL_TOTAL_BYTES_MAX);
    // Writes only fill RocksDB's WAL buffer; the log's sync thread writes and fsyncs it for
    // every append waiting (group commit), and synced writes (votes) flush it themselves.
    // Without this, every write went to the file at once and each leader append ended up
    // waiting for its own fsync.
    options.set_manual_wal_flush(true);
    let families = FAMILIES.iter().map(|name| {
        let mut options = if *name == CF_KV {
            kv_options()
        } else {
            Options::default()
        };
        // Bound the memory each family may hold in memtables (RocksDB's default is 64 MiB
        // each) and so the WAL a restart replays.
        options.set_write_buffer_size(MEMTABLE_BYTES_MAX);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        ColumnFamilyDescriptor::new(*name, options)
    });
    DB::open_cf_descriptors(&options, dir, families).map(Arc::new)
}

/// The `kv` family knows where a key's versions start: every version of a user key shares the
/// prefix `mvcc_prefix(key)`, and a Bloom filter over those prefixes (in the memtable and in each
/// table file) lets a lookup of a key that is not there skip the search. Applying a transaction
/// looks up every key it writes, and new keys are common (creates): without the filter, that
/// search through the memtable's skip list was the largest single cost of applying.
///
/// Lookups of one key ask for prefix mode ([`Keyspace`](crate::keyspace::Keyspace)'s
/// `version_at`); every scan across keys must read in total order ([`total_order`]).
fn kv_options() -> Options {
    let mut options = Options::default();
    options.set_prefix_extractor(SliceTransform::create(
        "keelson.mvcc-prefix",
        mvcc_key_prefix,
        Some(|key: &[u8]| key.len() >= MVCC_KEY_BYTES_MIN),
    ));
    options.set_memtable_prefix_bloom_ratio(0.1);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    table.set_whole_key_filtering(false);
    options.set_block_based_table_factory(&table);
    options
}

/// Read options for scans that cross keys: in total order, never limited to one prefix.
pub(crate) fn total_order() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_total_order_seek(true);
    options
}

/// Read options for the versions of one key (see [`kv_options`]).
pub(crate) fn one_prefix() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.set_prefix_same_as_start(true);
    options
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
    quiesce(&db);
    drop(db);
    Ok(())
}

/// Writes out what the hand-flushed WAL still buffers (state machine writes) and stops
/// RocksDB's background threads: what the process needs to exit without aborting when a
/// handle could not be closed.
pub(crate) fn quiesce(db: &DB) {
    if let Err(e) = db.flush_wal(true) {
        tracing::warn!("cannot flush the write-ahead log at close: {e}");
    }
    db.cancel_all_background_work(true);
}
