//! Accessors and setters on objects held as JSON (`serde_json::Value`), the form the API
//! serves and the store keeps.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::{Map, Value};

/// Errors from changing an object's metadata.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    /// The object is not a JSON object.
    #[error("object is not a JSON object")]
    NotAnObject,
    /// `metadata` is present but not a JSON object.
    #[error("metadata is not a JSON object")]
    MetadataNotAnObject,
}

/// Formats a time as Kubernetes writes timestamps: RFC 3339 in UTC, whole seconds.
pub fn format_time(time: jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The object's `metadata`, if it is an object.
pub fn metadata(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

fn meta_str<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    metadata(obj)
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata.name`.
pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> Option<&str> {
    meta_str(obj, "namespace")
}

/// `metadata.generateName`.
pub fn generate_name(obj: &Value) -> Option<&str> {
    meta_str(obj, "generateName")
}

/// `metadata.resourceVersion`.
pub fn resource_version(obj: &Value) -> Option<&str> {
    meta_str(obj, "resourceVersion")
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

/// `metadata.creationTimestamp`.
pub fn creation_timestamp(obj: &Value) -> Option<&str> {
    meta_str(obj, "creationTimestamp")
}

/// `metadata.deletionTimestamp`.
pub fn deletion_timestamp(obj: &Value) -> Option<&str> {
    meta_str(obj, "deletionTimestamp")
}

/// `metadata.deletionGracePeriodSeconds`.
pub fn deletion_grace_period_seconds(obj: &Value) -> Option<i64> {
    metadata(obj)
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
}

/// `metadata.generation`.
pub fn generation(obj: &Value) -> Option<i64> {
    metadata(obj)
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
}

/// `metadata.labels` (non-string values are skipped).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    string_map(metadata(obj).and_then(|m| m.get("labels")))
}

/// `metadata.annotations` (non-string values are skipped).
pub fn annotations(obj: &Value) -> BTreeMap<String, String> {
    string_map(metadata(obj).and_then(|m| m.get("annotations")))
}

/// `metadata.ownerReferences` (malformed entries are skipped).
pub fn owner_references(obj: &Value) -> Vec<OwnerReference> {
    metadata(obj)
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(obj: &Value) -> Option<OwnerReference> {
    owner_references(obj)
        .into_iter()
        .find(|r| r.controller == Some(true))
}

/// `metadata.finalizers` (non-string entries are skipped).
pub fn finalizers(obj: &Value) -> Vec<String> {
    metadata(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `apiVersion`.
pub fn api_version(obj: &Value) -> Option<&str> {
    obj.get("apiVersion").and_then(Value::as_str)
}

/// `kind`.
pub fn kind(obj: &Value) -> Option<&str> {
    obj.get("kind").and_then(Value::as_str)
}

/// `metadata`, created empty when absent; an error when the object or its metadata is not
/// a JSON object.
pub fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ObjectError> {
    let map = obj.as_object_mut().ok_or(ObjectError::NotAnObject)?;
    map.entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(ObjectError::MetadataNotAnObject)
}

fn set_meta(obj: &mut Value, key: &str, value: Value) -> Result<(), ObjectError> {
    metadata_mut(obj)?.insert(key.to_owned(), value);
    Ok(())
}

/// Sets `metadata.name`.
pub fn set_name(obj: &mut Value, name: &str) -> Result<(), ObjectError> {
    set_meta(obj, "name", Value::from(name))
}

/// Sets `metadata.namespace`.
pub fn set_namespace(obj: &mut Value, namespace: &str) -> Result<(), ObjectError> {
    set_meta(obj, "namespace", Value::from(namespace))
}

/// Removes `metadata.namespace` (for cluster-scoped kinds).
pub fn clear_namespace(obj: &mut Value) -> Result<(), ObjectError> {
    metadata_mut(obj)?.remove("namespace");
    Ok(())
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, resource_version: &str) -> Result<(), ObjectError> {
    set_meta(obj, "resourceVersion", Value::from(resource_version))
}

/// Sets `metadata.uid`.
pub fn set_uid(obj: &mut Value, uid: &str) -> Result<(), ObjectError> {
    set_meta(obj, "uid", Value::from(uid))
}

/// Sets `metadata.creationTimestamp`.
pub fn set_creation_timestamp(obj: &mut Value, time: jiff::Timestamp) -> Result<(), ObjectError> {
    set_meta(obj, "creationTimestamp", Value::from(format_time(time)))
}

/// Sets `metadata.deletionTimestamp`.
pub fn set_deletion_timestamp(obj: &mut Value, time: jiff::Timestamp) -> Result<(), ObjectError> {
    set_meta(obj, "deletionTimestamp", Value::from(format_time(time)))
}

/// Sets `metadata.deletionGracePeriodSeconds`.
pub fn set_deletion_grace_period_seconds(obj: &mut Value, seconds: i64) -> Result<(), ObjectError> {
    set_meta(obj, "deletionGracePeriodSeconds", Value::from(seconds))
}

/// Sets `metadata.generation`.
pub fn set_generation(obj: &mut Value, generation: i64) -> Result<(), ObjectError> {
    set_meta(obj, "generation", Value::from(generation))
}

/// Sets `metadata.finalizers` (removing the field when empty).
pub fn set_finalizers(obj: &mut Value, finalizers: &[String]) -> Result<(), ObjectError> {
    let meta = metadata_mut(obj)?;
    if finalizers.is_empty() {
        meta.remove("finalizers");
    } else {
        meta.insert("finalizers".to_owned(), Value::from(finalizers.to_vec()));
    }
    Ok(())
}

/// Sets one label.
pub fn set_label(obj: &mut Value, key: &str, value: &str) -> Result<(), ObjectError> {
    set_in_string_map(obj, "labels", key, value)
}

/// Sets one annotation.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) -> Result<(), ObjectError> {
    set_in_string_map(obj, "annotations", key, value)
}

fn set_in_string_map(
    obj: &mut Value,
    field: &str,
    key: &str,
    value: &str,
) -> Result<(), ObjectError> {
    let meta = metadata_mut(obj)?;
    let map = meta
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !map.is_object() {
        *map = Value::Object(Map::new());
    }
    if let Some(map) = map.as_object_mut() {
        map.insert(key.to_owned(), Value::from(value));
    }
    Ok(())
}

/// The object reduced to `meta.k8s.io/v1 PartialObjectMetadata` (metadata copied).
pub fn partial_object_metadata(obj: &Value) -> Value {
    let metadata = metadata(obj).cloned().unwrap_or_default();
    serde_json::json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "generateName": "web-",
                "resourceVersion": "1003",
                "uid": "160eef17",
                "generation": 2,
                "creationTimestamp": "2026-11-27T16:11:25Z",
                "deletionTimestamp": "2026-11-27T16:12:25Z",
                "labels": {"app": "web", "bad": 1},
                "annotations": {"a": "b"},
                "finalizers": ["example.com/x", 3],
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true},
                    "malformed"
                ]
            },
            "spec": {}
        })
    }

    #[test]
    fn accessors_read_metadata() {
        let pod = pod();
        assert_eq!(name(&pod), Some("web-1"));
        assert_eq!(namespace(&pod), Some("default"));
        assert_eq!(generate_name(&pod), Some("web-"));
        assert_eq!(resource_version(&pod), Some("1003"));
        assert_eq!(uid(&pod), Some("160eef17"));
        assert_eq!(generation(&pod), Some(2));
        assert_eq!(creation_timestamp(&pod), Some("2026-11-27T16:11:25Z"));
        assert_eq!(deletion_timestamp(&pod), Some("2026-11-27T16:12:25Z"));
        assert_eq!(api_version(&pod), Some("v1"));
        assert_eq!(kind(&pod), Some("Pod"));
        assert_eq!(
            labels(&pod),
            BTreeMap::from([("app".to_owned(), "web".to_owned())])
        );
        assert_eq!(
            annotations(&pod),
            BTreeMap::from([("a".to_owned(), "b".to_owned())])
        );
        assert_eq!(finalizers(&pod), vec!["example.com/x".to_owned()]);
        let owners = owner_references(&pod);
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].name, "rs");
        assert_eq!(controller_of(&pod).map(|r| r.uid), Some("u1".to_owned()));
    }

    #[test]
    fn accessors_tolerate_missing_or_malformed_metadata() {
        for obj in [json!({}), json!({"metadata": "x"}), json!(null), json!([1])] {
            assert_eq!(name(&obj), None);
            assert!(labels(&obj).is_empty());
            assert!(finalizers(&obj).is_empty());
            assert!(owner_references(&obj).is_empty());
        }
    }

    #[test]
    fn setters_create_metadata() {
        let mut obj = json!({"kind": "Pod"});
        set_name(&mut obj, "a").unwrap();
        set_namespace(&mut obj, "ns").unwrap();
        set_resource_version(&mut obj, "7").unwrap();
        set_uid(&mut obj, "u").unwrap();
        set_generation(&mut obj, 1).unwrap();
        let t: jiff::Timestamp = "2026-11-27T16:11:25.5Z".parse().unwrap();
        set_creation_timestamp(&mut obj, t).unwrap();
        set_deletion_timestamp(&mut obj, t).unwrap();
        set_deletion_grace_period_seconds(&mut obj, 30).unwrap();
        set_label(&mut obj, "app", "web").unwrap();
        set_annotation(&mut obj, "note", "x").unwrap();
        set_finalizers(&mut obj, &["f".to_owned()]).unwrap();
        assert_eq!(
            obj,
            json!({"kind": "Pod", "metadata": {
                "name": "a", "namespace": "ns", "resourceVersion": "7", "uid": "u", "generation": 1,
                "creationTimestamp": "2026-11-27T16:11:25Z", "deletionTimestamp": "2026-11-27T16:11:25Z",
                "deletionGracePeriodSeconds": 30,
                "labels": {"app": "web"}, "annotations": {"note": "x"}, "finalizers": ["f"]
            }})
        );
        set_finalizers(&mut obj, &[]).unwrap();
        clear_namespace(&mut obj).unwrap();
        assert!(obj["metadata"].get("finalizers").is_none());
        assert!(obj["metadata"].get("namespace").is_none());
    }

    #[test]
    fn metadata_mut_rejects_non_objects() {
        assert_eq!(
            metadata_mut(&mut json!("x")).unwrap_err(),
            ObjectError::NotAnObject
        );
        assert_eq!(
            metadata_mut(&mut json!({"metadata": 1})).unwrap_err(),
            ObjectError::MetadataNotAnObject
        );
        assert_eq!(set_name(&mut json!([]), "a"), Err(ObjectError::NotAnObject));
    }

    #[test]
    fn partial_object_metadata_copies_metadata_only() {
        let partial = partial_object_metadata(&pod());
        assert_eq!(partial["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(partial["kind"], "PartialObjectMetadata");
        assert_eq!(partial["metadata"], pod()["metadata"]);
        assert!(partial.get("spec").is_none());
        assert_eq!(partial_object_metadata(&json!({}))["metadata"], json!({}));
    }
}
