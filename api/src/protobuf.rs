//! Kubernetes' protobuf request bodies, for the kinds kubectl's typed `create` helpers send
//! that way (`kubectl create configmap|secret|namespace|serviceaccount`): the `k8s\0` magic,
//! a `runtime.Unknown` envelope, and the object's message, decoded into the JSON the API
//! serves. Fields the server derives or that these helpers never set are not decoded.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Map, Value};

// Hand-written rather than `prost`: prost's derive macros change the features RocksDB's
// build scripts are compiled with, which costs a 30-minute rebuild; the protobuf wire format
// needed here is four field types and a handful of messages.

/// The prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";
/// The kinds decoded here.
pub const KINDS: &[&str] = &["ConfigMap", "Secret", "Namespace", "ServiceAccount"];

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the protobuf body does not start with Kubernetes' magic bytes")]
    NoMagic,
    #[error("the protobuf body is malformed: {0}")]
    Malformed(&'static str),
    #[error("the protobuf envelope names no kind")]
    NoKind,
    #[error(
        "protobuf bodies are decoded only for ConfigMap, Secret, Namespace and ServiceAccount, \
         not {0}; send application/json or application/yaml"
    )]
    Unsupported(String),
    #[error("the protobuf body is encoded with {0:?}, which this server does not decode")]
    Encoding(String),
}

/// One field's value on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// The fields of one message, in order.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ProtobufError> {
    fn varint(buf: &mut &[u8]) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf
                .split_first()
                .ok_or(ProtobufError::Malformed("a varint is cut short"))?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtobufError::Malformed("a varint is longer than 10 bytes"))
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (tag, wire_type) = (key >> 3, key & 7);
        let wire = match wire_type {
            0 => Wire::Varint(varint(&mut buf)?),
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err(ProtobufError::Malformed("a fixed-size field is cut short"));
                }
                buf = &buf[n..];
                Wire::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?)
                    .map_err(|_| ProtobufError::Malformed("a length does not fit"))?;
                if buf.len() < len {
                    return Err(ProtobufError::Malformed(
                        "a length-delimited field is cut short",
                    ));
                }
                let (bytes, rest) = buf.split_at(len);
                buf = rest;
                Wire::Bytes(bytes)
            }
            _ => return Err(ProtobufError::Malformed("an unknown wire type")),
        };
        out.push((tag, wire));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::Malformed("a string is not UTF-8"))
}

/// A map entry (key = 1, value = 2) with a string key and raw value bytes.
fn map_entry(bytes: &[u8]) -> Result<(String, Vec<u8>), ProtobufError> {
    let mut key = String::new();
    let mut value = Vec::new();
    for (tag, wire) in fields(bytes)? {
        match (tag, wire) {
            (1, Wire::Bytes(b)) => key = text(b)?,
            (2, Wire::Bytes(b)) => value = b.to_vec(),
            _ => {}
        }
    }
    Ok((key, value))
}

#[derive(Default)]
struct ObjectMeta {
    name: Option<String>,
    generate_name: Option<String>,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    finalizers: Vec<String>,
}

impl ObjectMeta {
    fn decode(bytes: &[u8]) -> Result<Self, ProtobufError> {
        let mut meta = ObjectMeta::default();
        for (tag, wire) in fields(bytes)? {
            let Wire::Bytes(b) = wire else { continue };
            match tag {
                1 => meta.name = Some(text(b)?),
                2 => meta.generate_name = Some(text(b)?),
                3 => meta.namespace = Some(text(b)?),
                11 | 12 => {
                    let (k, v) = map_entry(b)?;
                    let map = if tag == 11 {
                        &mut meta.labels
                    } else {
                        &mut meta.annotations
                    };
                    map.insert(k, text(&v)?);
                }
                14 => meta.finalizers.push(text(b)?),
                _ => {}
            }
        }
        Ok(meta)
    }
}

fn metadata_json(meta: Option<ObjectMeta>) -> Value {
    let meta = meta.unwrap_or_default();
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.to_string(), value);
        }
    };
    put("name", meta.name.map(Value::String));
    put("generateName", meta.generate_name.map(Value::String));
    put("namespace", meta.namespace.map(Value::String));
    put(
        "labels",
        (!meta.labels.is_empty()).then(|| json!(meta.labels)),
    );
    put(
        "annotations",
        (!meta.annotations.is_empty()).then(|| json!(meta.annotations)),
    );
    put(
        "finalizers",
        (!meta.finalizers.is_empty()).then(|| json!(meta.finalizers)),
    );
    Value::Object(out)
}

/// Decodes a protobuf request body into the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtobufError::NoMagic)?;
    let mut kind = None;
    let mut api_version = None;
    let mut raw: &[u8] = &[];
    for (tag, wire) in fields(envelope)? {
        let Wire::Bytes(b) = wire else { continue };
        match tag {
            1 => {
                for (tag, wire) in fields(b)? {
                    match (tag, wire) {
                        (1, Wire::Bytes(v)) => api_version = Some(text(v)?),
                        (2, Wire::Bytes(v)) => kind = Some(text(v)?),
                        _ => {}
                    }
                }
            }
            2 => raw = b,
            3 if !b.is_empty() => return Err(ProtobufError::Encoding(text(b)?)),
            _ => {}
        }
    }
    let kind = kind
        .filter(|k| !k.is_empty())
        .ok_or(ProtobufError::NoKind)?;
    if !KINDS.contains(&kind.as_str()) {
        return Err(ProtobufError::Unsupported(kind));
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let mut object = Map::new();
    let mut metadata = None;
    let put_map = |object: &mut Map<String, Value>, field: &str, k: String, v: Value| {
        let entry = object
            .entry(field.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = entry.as_object_mut() {
            map.insert(k, v);
        }
    };
    for (tag, wire) in fields(raw)? {
        match (kind.as_str(), tag, wire) {
            (_, 1, Wire::Bytes(b)) => metadata = Some(ObjectMeta::decode(b)?),
            ("ConfigMap", 2, Wire::Bytes(b)) | ("Secret", 4, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let field = if kind == "ConfigMap" {
                    "data"
                } else {
                    "stringData"
                };
                put_map(&mut object, field, k, Value::String(text(&v)?));
            }
            ("ConfigMap", 3, Wire::Bytes(b)) | ("Secret", 2, Wire::Bytes(b)) => {
                let (k, v) = map_entry(b)?;
                let field = if kind == "ConfigMap" {
                    "binaryData"
                } else {
                    "data"
                };
                put_map(&mut object, field, k, Value::String(engine.encode(v)));
            }
            ("ConfigMap", 4, Wire::Varint(v)) | ("Secret", 5, Wire::Varint(v)) => {
                object.insert("immutable".into(), json!(v != 0));
            }
            ("Secret", 3, Wire::Bytes(b)) => {
                object.insert("type".into(), Value::String(text(b)?));
            }
            ("Namespace", 2, Wire::Bytes(b)) => {
                let mut finalizers = Vec::new();
                for (tag, wire) in fields(b)? {
                    if let (1, Wire::Bytes(f)) = (tag, wire) {
                        finalizers.push(text(f)?);
                    }
                }
                if !finalizers.is_empty() {
                    object.insert("spec".into(), json!({"finalizers": finalizers}));
                }
            }
            ("ServiceAccount", 3, Wire::Bytes(b)) => {
                let mut name = String::new();
                for (tag, wire) in fields(b)? {
                    if let (1, Wire::Bytes(n)) = (tag, wire) {
                        name = text(n)?;
                    }
                }
                let list = object
                    .entry("imagePullSecrets".to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Some(list) = list.as_array_mut() {
                    list.push(json!({"name": name}));
                }
            }
            ("ServiceAccount", 4, Wire::Varint(v)) => {
                object.insert("automountServiceAccountToken".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    object.insert("metadata".into(), metadata_json(metadata));
    object.insert(
        "apiVersion".into(),
        Value::String(api_version.unwrap_or_else(|| "v1".into())),
    );
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(tag: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, k.as_bytes(), &mut out);
        bytes_field(2, v, &mut out);
        out
    }

    fn envelope(kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut type_meta = Vec::new();
        bytes_field(1, b"v1", &mut type_meta);
        bytes_field(2, kind.as_bytes(), &mut type_meta);
        let mut body = MAGIC.to_vec();
        bytes_field(1, &type_meta, &mut body);
        bytes_field(2, raw, &mut body);
        bytes_field(3, b"", &mut body);
        body
    }

    fn meta(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, name.as_bytes(), &mut out);
        bytes_field(11, &entry("app", b"web"), &mut out);
        out
    }

    #[test]
    fn configmaps_secrets_and_namespaces_decode_to_their_json() {
        let mut cm = Vec::new();
        bytes_field(1, &meta("settings"), &mut cm);
        bytes_field(2, &entry("k", b"v"), &mut cm);
        assert_eq!(
            decode(&envelope("ConfigMap", &cm)).unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "settings", "labels": {"app": "web"}},
                   "data": {"k": "v"}})
        );
        let mut secret = Vec::new();
        bytes_field(1, &meta("token"), &mut secret);
        bytes_field(2, &entry("k", b"\x00\xff"), &mut secret);
        bytes_field(3, b"Opaque", &mut secret);
        let json = decode(&envelope("Secret", &secret)).unwrap();
        assert_eq!(json["data"]["k"], "AP8=");
        assert_eq!(json["type"], "Opaque");
        let mut ns = Vec::new();
        bytes_field(1, &meta("team"), &mut ns);
        assert_eq!(
            decode(&envelope("Namespace", &ns)).unwrap()["metadata"]["name"],
            "team"
        );
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(decode(b"{}"), Err(ProtobufError::NoMagic)));
        assert!(matches!(
            decode(b"k8s\0\x0a\xff\xff"),
            Err(ProtobufError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"k8s\0\x0a\x05ab"),
            Err(ProtobufError::Malformed(_))
        ));
        assert!(matches!(
            decode(&envelope("Deployment", b"")),
            Err(ProtobufError::Unsupported(_))
        ));
        assert!(matches!(decode(b"k8s\0"), Err(ProtobufError::NoKind)));
    }
}
