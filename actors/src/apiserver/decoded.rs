//! Stored values decoded once for every reader: each watch of a collection sees the same
//! changes, a change's previous value is an earlier change's new one, and an update reads the
//! object a watch parsed when it was written, so the parsed versions of recently written keys
//! are kept (bounded) and shared.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use keelson_api::status::StatusError;
use keelson_raft::KeyValue;
use serde_json::Value;

use super::storage::decode;

/// Versions kept of one key: the newest, for the next update's read, and the one before it,
/// the previous value of the newest change as its watchers see it.
const VERSIONS_PER_KEY: usize = 2;
/// Stored bytes whose parses are kept: a pod parses to a few times its stored size, so this
/// bounds the memory to about a hundred MiB while keeping a backlog of thousands of pods
/// parsed from their creation to their binding (Kubernetes' watch cache keeps every object).
const DECODED_BYTES_MAX: usize = 24 << 20;
/// Versions kept in all (a bound on the bookkeeping when values are small).
const DECODED_MAX: usize = 1 << 16;

/// One parsed version of a key.
struct Version {
    revision: u64,
    object: Arc<Value>,
    /// The stored size, counted against [`DECODED_BYTES_MAX`].
    bytes: usize,
}

#[derive(Default)]
struct Recent {
    /// The newest versions parsed of each key, newest last.
    by_key: HashMap<Arc<[u8]>, Vec<Version>>,
    /// Versions in the order they were kept, to drop the oldest; an entry whose version was
    /// already dropped (a key's third) is skipped.
    order: VecDeque<(Arc<[u8]>, u64)>,
    bytes: usize,
}

/// The recently decoded stored values, shared by all watches and reads of one API server.
#[derive(Default)]
pub(crate) struct Decoded {
    recent: Mutex<Recent>,
}

impl Decoded {
    /// The object stored in `kv` (with its resourceVersion), parsed at most once while recent.
    pub(crate) fn get(&self, kv: &KeyValue) -> Result<Arc<Value>, StatusError> {
        if let Some(found) = self.lock().find(kv) {
            return Ok(found);
        }
        let object = Arc::new(decode(kv)?.object);
        let mut recent = self.lock();
        if let Some(found) = recent.find(kv) {
            return Ok(found);
        }
        recent.keep(kv, object.clone());
        Ok(object)
    }

    /// The object stored in `kv`, if it was parsed recently (nothing is parsed or kept).
    pub(crate) fn find(&self, kv: &KeyValue) -> Option<Arc<Value>> {
        self.lock().find(kv)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_key.values().map(Vec::len).sum()
    }
}

impl Recent {
    fn find(&self, kv: &KeyValue) -> Option<Arc<Value>> {
        self.by_key
            .get(kv.key.as_slice())?
            .iter()
            .find(|version| version.revision == kv.mod_revision)
            .map(|version| version.object.clone())
    }

    fn keep(&mut self, kv: &KeyValue, object: Arc<Value>) {
        let key: Arc<[u8]> = match self.by_key.get_key_value(kv.key.as_slice()) {
            Some((key, _)) => key.clone(),
            None => Arc::from(kv.key.as_slice()),
        };
        let versions = self.by_key.entry(key.clone()).or_default();
        let at = versions.partition_point(|v| v.revision < kv.mod_revision);
        versions.insert(
            at,
            Version {
                revision: kv.mod_revision,
                object,
                bytes: kv.value.len(),
            },
        );
        self.bytes += kv.value.len();
        if versions.len() > VERSIONS_PER_KEY {
            let oldest = versions.remove(0);
            self.bytes -= oldest.bytes;
        }
        self.order.push_back((key, kv.mod_revision));
        while self.bytes > DECODED_BYTES_MAX || self.order.len() > DECODED_MAX {
            let Some((key, revision)) = self.order.pop_front() else {
                break;
            };
            self.forget(&key, revision);
        }
    }

    fn forget(&mut self, key: &[u8], revision: u64) {
        let Some(versions) = self.by_key.get_mut(key) else {
            return;
        };
        if let Some(at) = versions.iter().position(|v| v.revision == revision) {
            let gone = versions.remove(at);
            self.bytes -= gone.bytes;
        }
        if versions.is_empty() {
            self.by_key.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kv(key: &str, revision: u64, name: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: serde_json::to_vec(&json!({"metadata": {"name": name}})).unwrap_or_default(),
            create_revision: 1,
            mod_revision: revision,
            version: 1,
        }
    }

    #[test]
    fn a_change_is_parsed_once_and_shared() {
        let decoded = Decoded::default();
        assert!(
            decoded.find(&kv("/pods/a", 7, "a")).is_none(),
            "find parses nothing"
        );
        assert_eq!(decoded.len(), 0);
        let first = decoded.get(&kv("/pods/a", 7, "a")).expect("valid JSON");
        let found = decoded.find(&kv("/pods/a", 7, "a")).expect("kept");
        assert!(Arc::ptr_eq(&first, &found));
        assert!(
            decoded.find(&kv("/pods/a", 8, "a")).is_none(),
            "another version"
        );
        assert_eq!(first["metadata"]["resourceVersion"], "7");
        let again = decoded.get(&kv("/pods/a", 7, "a")).expect("valid JSON");
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second watcher shares the parse"
        );
        let other_key = decoded.get(&kv("/pods/b", 7, "b")).expect("valid JSON");
        assert_eq!(
            other_key["metadata"]["name"], "b",
            "same revision, other key"
        );
    }

    #[test]
    fn a_key_keeps_its_two_newest_versions_however_many_others_change_between() {
        let decoded = Decoded::default();
        let created = decoded.get(&kv("/pods/a", 3, "a")).expect("valid JSON");
        // Thousands of other pods are created and changed before this one is bound.
        for revision in 4..4 + DECODED_MAX as u64 / 2 {
            decoded
                .get(&kv(&format!("/pods/p{revision}"), revision, "p"))
                .expect("valid JSON");
        }
        let found = decoded.find(&kv("/pods/a", 3, "a")).expect("still kept");
        assert!(Arc::ptr_eq(&created, &found));

        decoded
            .get(&kv("/pods/a", 90_000, "a"))
            .expect("valid JSON");
        assert!(
            decoded.find(&kv("/pods/a", 3, "a")).is_some(),
            "the previous value of the newest change"
        );
        decoded
            .get(&kv("/pods/a", 90_001, "a"))
            .expect("valid JSON");
        assert!(decoded.find(&kv("/pods/a", 3, "a")).is_none(), "a third");
        assert!(decoded.find(&kv("/pods/a", 90_000, "a")).is_some());
        assert!(decoded.find(&kv("/pods/a", 90_001, "a")).is_some());

        // A late reader of an older version parses it without displacing the newer two.
        let old = decoded.get(&kv("/pods/a", 3, "a")).expect("valid JSON");
        assert!(!Arc::ptr_eq(&created, &old), "parsed anew");
        assert!(decoded.find(&kv("/pods/a", 90_000, "a")).is_some());
        assert!(decoded.find(&kv("/pods/a", 90_001, "a")).is_some());
    }

    #[test]
    fn the_versions_kept_are_bounded_in_number_and_the_oldest_go_first() {
        let decoded = Decoded::default();
        let first = decoded.get(&kv("/pods/a", 1, "a")).expect("valid JSON");
        for revision in 2..2 + DECODED_MAX as u64 {
            decoded
                .get(&kv(&format!("/pods/p{revision}"), revision, "p"))
                .expect("valid JSON");
        }
        assert_eq!(decoded.len(), DECODED_MAX, "bounded");
        assert!(decoded.find(&kv("/pods/a", 1, "a")).is_none(), "the oldest");
        assert!(decoded.find(&kv("/pods/p2", 2, "p")).is_some());
        let later = decoded.get(&kv("/pods/a", 1, "a")).expect("valid JSON");
        assert!(!Arc::ptr_eq(&first, &later), "evicted, parsed anew");
    }

    #[test]
    fn the_versions_kept_are_bounded_in_bytes() {
        let decoded = Decoded::default();
        let big = |key: &str, revision: u64| {
            let mut value = kv(key, revision, "big");
            value.value =
                serde_json::to_vec(&json!({"data": "x".repeat(1 << 20)})).expect("serializes");
            value
        };
        for revision in 1..=(DECODED_BYTES_MAX >> 20) as u64 + 8 {
            decoded
                .get(&big(&format!("/configmaps/c{revision}"), revision))
                .expect("valid JSON");
        }
        assert!(decoded.lock().bytes <= DECODED_BYTES_MAX);
        assert!(decoded.len() < (DECODED_BYTES_MAX >> 20));
        assert!(decoded.find(&big("/configmaps/c1", 1)).is_none());
        let newest = (DECODED_BYTES_MAX >> 20) as u64 + 8;
        assert!(decoded
            .find(&big(&format!("/configmaps/c{newest}"), newest))
            .is_some());
    }

    #[test]
    fn a_value_that_is_not_json_is_an_error() {
        let decoded = Decoded::default();
        let mut bad = kv("/pods/a", 3, "a");
        bad.value = b"{not json".to_vec();
        assert!(decoded.get(&bad).is_err());
        assert_eq!(decoded.len(), 0);
    }
}
