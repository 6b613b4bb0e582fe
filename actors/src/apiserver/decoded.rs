//! Stored changes decoded once for every watch: each watch of a collection sees the same
//! changes, and a change's previous value is an earlier change's new one, so the parsed
//! objects of the latest changes are kept (bounded) and shared.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use keelson_api::status::StatusError;
use keelson_raft::KeyValue;
use serde_json::Value;

use super::storage::decode;

/// Decoded values kept: watchers read the same change within moments of each other, so a
/// short window serves them all while bounding memory (a pod parses to ~10 KB).
const DECODED_MAX: usize = 1024;

/// The objects one revision wrote, by key.
type Written = Vec<(Vec<u8>, Arc<Value>)>;

#[derive(Default)]
struct Recent {
    /// Values by the revision that wrote them.
    by_revision: HashMap<u64, Written>,
    /// Revisions in the order their first value was kept, one per value, to evict the oldest.
    order: VecDeque<u64>,
}

/// The recently decoded stored values, shared by all watches of one API server.
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
        recent
            .by_revision
            .entry(kv.mod_revision)
            .or_default()
            .push((kv.key.clone(), object.clone()));
        recent.order.push_back(kv.mod_revision);
        while recent.order.len() > DECODED_MAX {
            let Some(oldest) = recent.order.pop_front() else {
                break;
            };
            if let Some(values) = recent.by_revision.get_mut(&oldest) {
                values.remove(0);
                if values.is_empty() {
                    recent.by_revision.remove(&oldest);
                }
            }
        }
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
        self.lock().by_revision.values().map(Vec::len).sum()
    }
}

impl Recent {
    fn find(&self, kv: &KeyValue) -> Option<Arc<Value>> {
        self.by_revision
            .get(&kv.mod_revision)?
            .iter()
            .find(|(key, _)| *key == kv.key)
            .map(|(_, object)| object.clone())
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
    fn a_change_is_parsed_once_and_shared_until_it_is_old() {
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

        for revision in 8..8 + DECODED_MAX as u64 {
            decoded
                .get(&kv("/pods/c", revision, "c"))
                .expect("valid JSON");
        }
        assert_eq!(decoded.len(), DECODED_MAX, "bounded");
        let later = decoded.get(&kv("/pods/a", 7, "a")).expect("valid JSON");
        assert!(!Arc::ptr_eq(&first, &later), "evicted, parsed anew");
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
