//! Objects in the replicated store: key layout, JSON values, and the compare-and-swap
//! transactions behind create, update and delete.
//!
//! Keys are `/registry/{resource}/{namespace}/{name}` (`/registry/{resource}/{name}` for
//! cluster-scoped kinds), where `{resource}` is the group-qualified plural (`pods`,
//! `deployments.apps`). Values are the object's JSON without `metadata.resourceVersion`: an
//! object's resourceVersion is the store revision that last changed its key, set on the way
//! out.

use std::sync::Arc;

use keelson_api::resources::Resource;
use keelson_api::status::StatusError;
use keelson_raft::{
    Check, Compare, Consistency, KeyRange, KeyValue, Op, OpResult, RangeRequest, Store, StoreError,
    Txn,
};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

use super::decoded::Decoded;

/// Where objects live in the store.
pub(crate) const REGISTRY_PREFIX: &str = "/registry/";

pub(crate) fn collection_prefix(resource: &Resource, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if resource.namespaced => {
            format!("{REGISTRY_PREFIX}{}/{ns}/", resource.group_resource())
        }
        _ => format!("{REGISTRY_PREFIX}{}/", resource.group_resource()),
    }
}

pub(crate) fn object_key(resource: &Resource, namespace: Option<&str>, name: &str) -> String {
    format!("{}{name}", collection_prefix(resource, namespace))
}

/// Turns a store error into the Status a client sees.
pub(crate) fn store_status(error: StoreError) -> StatusError {
    match error {
        StoreError::Compacted {
            requested,
            compacted,
        } => StatusError::expired(format!(
            "too old resource version: {requested} ({compacted})"
        )),
        StoreError::FutureRevision { requested, current } => StatusError::timeout(&format!(
            "Too large resource version: {requested}, current: {current}"
        )),
        StoreError::NoLeader(m) => StatusError::service_unavailable(
            format!("the control plane has no leader at the moment: {m}"),
            Some(1),
        ),
        StoreError::Unavailable(m) => {
            StatusError::service_unavailable(format!("the store is unavailable: {m}"), Some(1))
        }
        StoreError::Shutdown => {
            StatusError::service_unavailable("this master is shutting down".to_string(), Some(1))
        }
        StoreError::Unknown(m) => StatusError::timeout(&format!(
            "the write may or may not have been applied; read the object to find out: {m}"
        )),
        StoreError::Invalid(m) => {
            if m.contains("exceeds the limit") || m.contains("more than the limit") {
                StatusError::request_entity_too_large(&format!("the object is too large: {m}"))
            } else {
                StatusError::bad_request(m)
            }
        }
        other => StatusError::internal(&other.to_string()),
    }
}

/// An object read from the store, with its resourceVersion.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) key: Vec<u8>,
    pub(crate) object: Value,
    pub(crate) revision: u64,
}

/// Decodes a stored value and sets its resourceVersion.
pub(crate) fn decode(kv: &KeyValue) -> Result<Stored, StatusError> {
    let mut object: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        StatusError::internal(&format!(
            "stored object {} is not valid JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    set_resource_version(&mut object, kv.mod_revision);
    Ok(Stored {
        key: kv.key.clone(),
        object,
        revision: kv.mod_revision,
    })
}

pub(crate) fn set_resource_version(object: &mut Value, revision: u64) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert(
            "resourceVersion".to_string(),
            Value::String(revision.to_string()),
        );
    }
}

/// The bytes stored for an object: its JSON without the resourceVersion (the store keeps
/// the revision). Serialized as it is, without a copy to remove the field from.
pub(crate) fn encode(object: &Value) -> Result<Vec<u8>, StatusError> {
    serde_json::to_vec(&WithoutResourceVersion(object))
        .map_err(|e| StatusError::internal(&e.to_string()))
}

/// An object that serializes without `metadata.resourceVersion`.
struct WithoutResourceVersion<'a>(&'a Value);

/// An object's metadata that serializes without `resourceVersion`.
struct MetadataWithoutVersion<'a>(&'a serde_json::Map<String, Value>);

impl Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Value::Object(fields) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (name, value) in fields {
            match value {
                Value::Object(metadata) if name == "metadata" => {
                    map.serialize_entry(name, &MetadataWithoutVersion(metadata))?;
                }
                _ => map.serialize_entry(name, value)?,
            }
        }
        map.end()
    }
}

impl Serialize for MetadataWithoutVersion<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.0 {
            if name != "resourceVersion" {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

/// Why a conditional write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteRefused {
    /// The key exists (create).
    Exists,
    /// The key was changed or deleted since the expected revision (update, delete).
    Changed,
}

/// The outcome of [`Storage::write_with_claims`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimedWrite {
    /// Written at this revision.
    Done(u64),
    /// The object's own compare failed.
    Refused(WriteRefused),
    /// Another writer holds one of the claimed keys.
    ClaimTaken,
}

/// A page of a collection read at one revision.
pub(crate) struct Page {
    pub(crate) items: Vec<Stored>,
    pub(crate) revision: u64,
    /// The key the next page starts from.
    pub(crate) next_key: Option<Vec<u8>>,
}

/// The API's view of the store.
#[derive(Clone)]
pub(crate) struct Storage {
    store: Store,
    /// The values the API's watches parsed lately: an object read right after a change
    /// (a kubelet's status update after the binding it watched) is copied from there instead
    /// of parsed again.
    decoded: Arc<Decoded>,
}

impl Storage {
    pub(crate) fn new(store: Store, decoded: Arc<Decoded>) -> Self {
        Storage { store, decoded }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) async fn get(
        &self,
        key: &str,
        consistency: Consistency,
    ) -> Result<Option<Stored>, StatusError> {
        let mut request = RangeRequest::new(KeyRange::key(key.as_bytes()));
        request.consistency = consistency;
        let response = self.store.range(request).await.map_err(store_status)?;
        let Some(kv) = response.kvs.into_iter().next() else {
            return Ok(None);
        };
        match self.decoded.find(&kv) {
            Some(object) => Ok(Some(Stored {
                object: Value::clone(&object),
                revision: kv.mod_revision,
                key: kv.key,
            })),
            None => decode(&kv).map(Some),
        }
    }

    /// The value of `key` in this member's own copy of the store (no leader needed; possibly
    /// behind), for values written once and never changed.
    pub(crate) async fn get_local_raw(&self, key: &str) -> Result<Option<Vec<u8>>, StatusError> {
        let mut request = RangeRequest::new(KeyRange::key(key.as_bytes()));
        request.consistency = Consistency::Serializable;
        let response = self.store.range(request).await.map_err(store_status)?;
        Ok(response.kvs.into_iter().next().map(|kv| kv.value))
    }

    /// Reads up to `limit` keys of `prefix` starting at `start` (inclusive), at `revision`
    /// (0: the newest).
    pub(crate) async fn page(
        &self,
        prefix: &str,
        start: Option<&[u8]>,
        revision: u64,
        limit: usize,
        consistency: Consistency,
    ) -> Result<Page, StatusError> {
        let mut range = KeyRange::prefix(prefix.as_bytes());
        if let Some(start) = start {
            if !start.starts_with(prefix.as_bytes()) {
                return Err(StatusError::bad_request(
                    "the continue token does not belong to this collection".to_string(),
                ));
            }
            range.start = start.to_vec();
        }
        let request = RangeRequest {
            range,
            revision,
            limit,
            consistency,
        };
        let response = self.store.range(request).await.map_err(store_status)?;
        let items = response
            .kvs
            .iter()
            .map(decode)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page {
            items,
            revision: response.revision,
            next_key: response.next_key,
        })
    }

    /// Creates `key` if absent; returns the object as stored, with its resourceVersion.
    pub(crate) async fn create(
        &self,
        key: &str,
        object: Value,
    ) -> Result<Result<Stored, WriteRefused>, StatusError> {
        self.put_if(key, Check::Absent, object, WriteRefused::Exists)
            .await
    }

    /// Replaces `key` if it was last changed at `expected`.
    pub(crate) async fn update(
        &self,
        key: &str,
        expected: u64,
        object: Value,
    ) -> Result<Result<Stored, WriteRefused>, StatusError> {
        self.put_if(
            key,
            Check::ModRevision(expected),
            object,
            WriteRefused::Changed,
        )
        .await
    }

    /// Puts `object` under `key` if `check` holds, in one transaction; the object comes back
    /// with its new resourceVersion (taken, not copied: copies of whole objects were a large
    /// part of a write's cost).
    async fn put_if(
        &self,
        key: &str,
        check: Check,
        mut object: Value,
        refused: WriteRefused,
    ) -> Result<Result<Stored, WriteRefused>, StatusError> {
        let value = encode(&object)?;
        let txn = Txn {
            compare: vec![Compare {
                key: key.as_bytes().to_vec(),
                check,
            }],
            success: vec![Op::put(key.as_bytes(), value)],
            failure: vec![],
        };
        let response = self.store.txn(txn).await.map_err(store_status)?;
        if !response.succeeded {
            return Ok(Err(refused));
        }
        set_resource_version(&mut object, response.revision);
        Ok(Ok(Stored {
            key: key.as_bytes().to_vec(),
            object,
            revision: response.revision,
        }))
    }

    /// Deletes `key` if it was last changed at `expected`; returns the deleting revision.
    pub(crate) async fn delete(
        &self,
        key: &str,
        expected: u64,
    ) -> Result<Result<u64, WriteRefused>, StatusError> {
        let txn = Txn {
            compare: vec![Compare {
                key: key.as_bytes().to_vec(),
                check: Check::ModRevision(expected),
            }],
            success: vec![Op::delete(key.as_bytes())],
            failure: vec![],
        };
        let response = self.store.txn(txn).await.map_err(store_status)?;
        if response.succeeded {
            Ok(Ok(response.revision))
        } else {
            Ok(Err(WriteRefused::Changed))
        }
    }

    /// Writes `object` under `key` (or deletes `key` when `object` is `None`) if `check`
    /// holds and every key of `claims` is absent, putting the claims and deleting `releases`
    /// in the same transaction.
    pub(crate) async fn write_with_claims(
        &self,
        key: &str,
        check: Check,
        object: Option<&Value>,
        claims: &[(String, Vec<u8>)],
        releases: &[String],
    ) -> Result<ClaimedWrite, StatusError> {
        let mut compare = vec![Compare {
            key: key.as_bytes().to_vec(),
            check,
        }];
        compare.extend(claims.iter().map(|(claim, _)| Compare {
            key: claim.as_bytes().to_vec(),
            check: Check::Absent,
        }));
        let mut success = vec![match object {
            Some(object) => Op::put(key.as_bytes(), encode(object)?),
            None => Op::delete(key.as_bytes()),
        }];
        success.extend(
            claims
                .iter()
                .map(|(claim, value)| Op::put(claim.as_bytes(), value.clone())),
        );
        success.extend(
            releases
                .iter()
                .map(|release| Op::delete(release.as_bytes())),
        );
        let txn = Txn {
            compare,
            success,
            failure: vec![Op::get(key.as_bytes())],
        };
        let response = self.store.txn(txn).await.map_err(store_status)?;
        if response.succeeded {
            return Ok(ClaimedWrite::Done(response.revision));
        }
        let current = match response.results.first() {
            Some(OpResult::Get { kv }) => kv.as_ref().map(|kv| kv.mod_revision),
            _ => None,
        };
        let refused = match check {
            Check::Absent => current.map(|_| WriteRefused::Exists),
            Check::ModRevision(expected) => {
                (current != Some(expected)).then_some(WriteRefused::Changed)
            }
            _ => None,
        };
        Ok(match refused {
            Some(refused) => ClaimedWrite::Refused(refused),
            None => ClaimedWrite::ClaimTaken,
        })
    }

    /// Puts `key` only if absent, and returns what the key holds afterwards (what this call
    /// wrote, or what was there before). For cluster-wide values created once, like the CA.
    pub(crate) async fn put_if_absent_raw(
        &self,
        key: &str,
        value: Vec<u8>,
    ) -> Result<Vec<u8>, StatusError> {
        let txn = Txn {
            compare: vec![Compare {
                key: key.as_bytes().to_vec(),
                check: Check::Absent,
            }],
            success: vec![Op::put(key.as_bytes(), value.clone())],
            failure: vec![Op::get(key.as_bytes())],
        };
        let response = self.store.txn(txn).await.map_err(store_status)?;
        if response.succeeded {
            return Ok(value);
        }
        match response.results.first() {
            Some(OpResult::Get { kv: Some(kv) }) => Ok(kv.value.clone()),
            _ => Err(StatusError::internal(&format!(
                "{key} was neither absent nor present"
            ))),
        }
    }
}
