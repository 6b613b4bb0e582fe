//! The newest version of each recently written key, kept in memory: every update of an
//! object reads it first, and every write reads the key's previous version for its event,
//! so most reads of one key at the newest revision are of a key written moments ago. Those
//! skip RocksDB's seek through the memtables and every level's tables (Bloom filters or not),
//! which was the largest part of a read.
//!
//! Exactness: only the state machine writes the index, with the newest version of each key
//! an entry wrote, after the entry is on disk and before its revision is published. So an
//! entry present here is always the newest applied version of its key; a reader at revision
//! `r` may use it when its revision is at most `r` (nothing newer at or below `r` exists),
//! and reads RocksDB otherwise or when the key is not here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::keyspace::Version;

/// Bytes of keys and values kept (a control plane's objects are a few KB each: this holds
/// the newest version of thousands of them).
const NEWEST_BYTES_MAX: usize = 16 << 20;
/// Keys kept.
const NEWEST_KEYS_MAX: usize = 1 << 16;

#[derive(Default)]
struct Index {
    by_key: HashMap<Arc<[u8]>, (u64, Version)>,
    /// Keys in the order of their writes, with the revision written, to forget the least
    /// recently written first; an entry whose key was written again since is passed over.
    order: VecDeque<(Arc<[u8]>, u64)>,
    bytes: usize,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct NewestVersions {
    index: Mutex<Index>,
}

fn size(key: &[u8], version: &Version) -> usize {
    key.len() + version.value.as_ref().map_or(0, Vec::len)
}

impl NewestVersions {
    /// The newest applied version of `key` if it is known, with its revision.
    pub(crate) fn get(&self, key: &[u8]) -> Option<(u64, Version)> {
        self.lock().by_key.get(key).cloned()
    }

    /// Records `version` as the newest of `key`, written at `revision` (called in revision
    /// order, after the write is on disk and before it is published).
    pub(crate) fn record(&self, key: &[u8], revision: u64, version: &Version) {
        let mut index = self.lock();
        let index = &mut *index;
        let bytes = size(key, version);
        let key: Arc<[u8]> = match index.by_key.get_key_value(key) {
            Some((known, _)) => known.clone(),
            None => Arc::from(key),
        };
        if let Some((_, old)) = index
            .by_key
            .insert(key.clone(), (revision, version.clone()))
        {
            index.bytes -= size(&key, &old);
        }
        index.bytes += bytes;
        index.order.push_back((key, revision));
        while index.bytes > NEWEST_BYTES_MAX
            || index.by_key.len() > NEWEST_KEYS_MAX
            || index.order.len() > 2 * NEWEST_KEYS_MAX
        {
            let Some((key, revision)) = index.order.pop_front() else {
                break;
            };
            if index.by_key.get(&key).is_some_and(|(r, _)| *r == revision) {
                if let Some((_, old)) = index.by_key.remove(&key) {
                    index.bytes -= size(&key, &old);
                }
            }
        }
    }

    /// Forgets everything (the keyspace on disk was replaced by a snapshot).
    pub(crate) fn clear(&self) {
        *self.lock() = Index::default();
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn totals(&self) -> (usize, usize) {
        let index = self.lock();
        (index.by_key.len(), index.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(value: &str) -> Version {
        Version {
            create_revision: 1,
            version: 1,
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_newest_version_of_a_key_replaces_the_one_before() {
        let newest = NewestVersions::default();
        assert!(newest.get(b"a").is_none());
        newest.record(b"a", 3, &version("one"));
        newest.record(b"a", 5, &version("three"));
        assert_eq!(newest.get(b"a"), Some((5, version("three"))));
        assert_eq!(newest.totals(), (1, 1 + 5));
        let gone = Version {
            create_revision: 0,
            version: 0,
            value: None,
        };
        newest.record(b"a", 6, &gone);
        assert_eq!(newest.get(b"a"), Some((6, gone)), "a deletion is known too");
        newest.clear();
        assert!(newest.get(b"a").is_none());
        assert_eq!(newest.totals(), (0, 0));
    }

    #[test]
    fn the_least_recently_written_keys_are_forgotten_past_the_bounds() {
        let newest = NewestVersions::default();
        for n in 0..NEWEST_KEYS_MAX as u64 + 10 {
            newest.record(format!("k{n}").as_bytes(), n + 1, &version("v"));
            // A key written again and again stays.
            newest.record(b"hot", n + 1, &version("h"));
        }
        assert_eq!(newest.totals().0, NEWEST_KEYS_MAX);
        assert!(newest.get(b"k0").is_none());
        assert!(newest.get(b"hot").is_some());
        assert!(newest
            .get(format!("k{}", NEWEST_KEYS_MAX + 9).as_bytes())
            .is_some());

        let big = "x".repeat(1 << 20);
        for n in 0..(NEWEST_BYTES_MAX >> 20) as u64 + 4 {
            newest.record(format!("big{n}").as_bytes(), 1_000_000 + n, &version(&big));
        }
        assert!(newest.totals().1 <= NEWEST_BYTES_MAX);
        assert!(newest.get(b"big0").is_none());
        assert!(newest
            .get(format!("big{}", (NEWEST_BYTES_MAX >> 20) + 3).as_bytes())
            .is_some());
    }
}
