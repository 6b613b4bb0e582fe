//! Manifests for `-f`: reading files, directories and stdin, splitting multi-document YAML and
//! JSON streams, and expanding `List` kinds into their items.

use std::io::Read;
use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

/// The largest manifest file (or stdin) read.
pub(crate) const MANIFEST_BYTES_MAX: usize = 64 << 20;
/// The most objects taken from all `-f` sources together.
pub(crate) const MANIFEST_OBJECTS_MAX: usize = 10_000;
/// How deep `List`s may nest.
const LIST_DEPTH_MAX: usize = 8;

/// One object and where it came from (`pod.yaml`, `STDIN`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) source: String,
    pub(crate) object: Value,
}

impl Manifest {
    pub(crate) fn str_field(&self, pointer: &str) -> &str {
        self.object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("the path \"{0}\" does not exist")]
    Missing(String),
    #[error("cannot read \"{path}\": {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("\"{0}\" is larger than {MANIFEST_BYTES_MAX} bytes")]
    TooLarge(String),
    #[error("\"{0}\" is not UTF-8 text")]
    NotText(String),
    #[error("error parsing {source_name}: {message}")]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("unable to decode \"{source_name}\": {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("more than {MANIFEST_OBJECTS_MAX} objects in the manifests")]
    TooMany,
}

/// Reads every `-f` argument (`-` is `stdin`) in order. Directories contribute their
/// `.yaml`, `.yml` and `.json` files, sorted by name (not recursively).
pub(crate) fn read_manifests(
    paths: &[String],
    stdin: &mut dyn Read,
) -> Result<Vec<Manifest>, ManifestError> {
    let mut manifests = Vec::new();
    for path in paths {
        if path == "-" {
            let text = read_bounded(stdin, "STDIN")?;
            push_all(&mut manifests, parse_documents(&text, "STDIN")?, "STDIN")?;
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ManifestError::Missing(path.clone())
            } else {
                ManifestError::Read {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let files = if meta.is_dir() {
            directory_files(Path::new(path))?
        } else {
            vec![path.clone()]
        };
        for file in files {
            let mut handle = std::fs::File::open(&file).map_err(|source| ManifestError::Read {
                path: file.clone(),
                source,
            })?;
            let text = read_bounded(&mut handle, &file)?;
            push_all(&mut manifests, parse_documents(&text, &file)?, &file)?;
        }
    }
    Ok(manifests)
}

fn push_all(
    manifests: &mut Vec<Manifest>,
    objects: Vec<Value>,
    source: &str,
) -> Result<(), ManifestError> {
    if manifests.len() + objects.len() > MANIFEST_OBJECTS_MAX {
        return Err(ManifestError::TooMany);
    }
    manifests.extend(objects.into_iter().map(|object| Manifest {
        source: source.to_string(),
        object,
    }));
    Ok(())
}

fn directory_files(dir: &Path) -> Result<Vec<String>, ManifestError> {
    let read_err = |source| ManifestError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if wanted && path.is_file() {
            files.push(path.display().to_string());
        }
    }
    files.sort();
    Ok(files)
}

fn read_bounded(reader: &mut dyn Read, name: &str) -> Result<String, ManifestError> {
    let mut bytes = Vec::new();
    reader
        .take(MANIFEST_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ManifestError::Read {
            path: name.to_string(),
            source,
        })?;
    if bytes.len() > MANIFEST_BYTES_MAX {
        return Err(ManifestError::TooLarge(name.to_string()));
    }
    String::from_utf8(bytes).map_err(|_| ManifestError::NotText(name.to_string()))
}

/// Splits one source into objects: a JSON stream (`{...}{...}` or an array) when it starts
/// with `{` or `[`, else multi-document YAML. Empty documents are skipped and `List`s expanded.
pub(crate) fn parse_documents(text: &str, source: &str) -> Result<Vec<Value>, ManifestError> {
    let parse_err = |message: String| ManifestError::Parse {
        source_name: source.to_string(),
        message,
    };
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    let mut documents = Vec::new();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        for doc in serde_json::Deserializer::from_str(trimmed).into_iter::<Value>() {
            match doc.map_err(|e| parse_err(e.to_string()))? {
                Value::Array(items) => documents.extend(items),
                other => documents.push(other),
            }
            if documents.len() > MANIFEST_OBJECTS_MAX {
                return Err(ManifestError::TooMany);
            }
        }
    } else {
        for doc in serde_norway::Deserializer::from_str(text) {
            let value = Value::deserialize(doc).map_err(|e| parse_err(e.to_string()))?;
            documents.push(value);
            if documents.len() > MANIFEST_OBJECTS_MAX {
                return Err(ManifestError::TooMany);
            }
        }
    }
    let mut objects = Vec::new();
    for doc in documents {
        expand(doc, source, 0, &mut objects)?;
    }
    Ok(objects)
}

fn expand(
    doc: Value,
    source: &str,
    depth: usize,
    out: &mut Vec<Value>,
) -> Result<(), ManifestError> {
    let invalid = |message: &str| ManifestError::Invalid {
        source_name: source.to_string(),
        message: message.to_string(),
    };
    let map = match doc {
        Value::Null => return Ok(()),
        Value::Object(map) if map.is_empty() => return Ok(()),
        Value::Object(map) => map,
        _ => return Err(invalid("a document is not an object")),
    };
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err(invalid("Object 'Kind' is missing"));
    }
    if api_version.is_empty() {
        return Err(invalid("Object 'apiVersion' is missing"));
    }
    if kind.ends_with("List") {
        if let Some(Value::Array(items)) = map.get("items") {
            if depth >= LIST_DEPTH_MAX {
                return Err(invalid("Lists nest too deeply"));
            }
            for item in items.clone() {
                expand(item, source, depth + 1, out)?;
            }
            return Ok(());
        }
        if kind == "List" {
            return Ok(());
        }
    }
    if out.len() >= MANIFEST_OBJECTS_MAX {
        return Err(ManifestError::TooMany);
    }
    out.push(Value::Object(map));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(objects: &[Value]) -> Vec<String> {
        objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    }

    #[test]
    fn multi_document_yaml_with_empty_documents() {
        let text = "---\n# a comment only\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels:\n    app: demo\nspec:\n  containers:\n  - name: main\n    image: nginx:1.27\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n...\n";
        let objects = parse_documents(text, "f.yaml").unwrap();
        assert_eq!(names(&objects), vec!["Pod/a", "Deployment/b"]);
        assert_eq!(
            objects[0]["spec"]["containers"][0],
            json!({"name": "main", "image": "nginx:1.27"})
        );
    }

    #[test]
    fn json_objects_streams_and_arrays() {
        let one = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#;
        assert_eq!(
            names(&parse_documents(one, "a.json").unwrap()),
            vec!["Pod/a"]
        );
        let stream = format!("{one}\n{}", one.replace("\"a\"", "\"b\""));
        assert_eq!(
            names(&parse_documents(&stream, "s.json").unwrap()),
            vec!["Pod/a", "Pod/b"]
        );
        let array = format!("[{one}]");
        assert_eq!(
            names(&parse_documents(&array, "arr.json").unwrap()),
            vec!["Pod/a"]
        );
    }

    #[test]
    fn lists_are_expanded() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c1}\n- apiVersion: v1\n  kind: PodList\n  items:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: p1}\n";
        let objects = parse_documents(text, "l.yaml").unwrap();
        assert_eq!(names(&objects), vec!["ConfigMap/c1", "Pod/p1"]);
        let empty = parse_documents("apiVersion: v1\nkind: List\nitems: []\n", "e.yaml").unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn errors_name_the_source() {
        let err = parse_documents("metadata:\n  name: x\n", "bad.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to decode \"bad.yaml\": Object 'Kind' is missing"
        );
        let err = parse_documents("kind: Pod\n  bad: [indent\n", "broken.yaml").unwrap_err();
        assert!(
            err.to_string().starts_with("error parsing broken.yaml: "),
            "{err}"
        );
        let err = parse_documents("- 1\n- 2\n", "seq.yaml").unwrap_err();
        assert!(err.to_string().contains("not an object"));
    }

    #[test]
    fn files_directories_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("b.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let mut stdin = "apiVersion: v1\nkind: Pod\nmetadata: {name: s}\n".as_bytes();
        let manifests = read_manifests(
            &[dir.path().display().to_string(), "-".to_string()],
            &mut stdin,
        )
        .unwrap();
        let got: Vec<(String, &str)> = manifests
            .iter()
            .map(|m| {
                let file = Path::new(&m.source)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                (file, m.str_field("/metadata/name"))
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.json".to_string(), "a"),
                ("b.yaml".to_string(), "b"),
                ("STDIN".to_string(), "s")
            ]
        );
        let missing =
            read_manifests(&["/no/such/file.yaml".to_string()], &mut &b""[..]).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "the path \"/no/such/file.yaml\" does not exist"
        );
    }
}
