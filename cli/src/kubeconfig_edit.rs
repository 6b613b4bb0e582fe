//! Edits of kubeconfig files for `kctl config use-context` and `set-context`: one key is
//! changed and the rest of the file kept, then the file is replaced atomically (temporary file
//! and rename) with mode 0600, as kubectl writes it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_norway::{Mapping, Value};

use crate::kubeconfig::{read_small_file, KubeconfigError};

#[derive(Debug, thiserror::Error)]
pub(crate) enum EditError {
    #[error(transparent)]
    Read(#[from] KubeconfigError),
    #[error("cannot parse kubeconfig {}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("kubeconfig {} is not a mapping", .path.display())]
    NotAMapping { path: PathBuf },
    #[error("\"{0}\" of the kubeconfig is not a list")]
    NotAList(&'static str),
    #[error("cannot encode the kubeconfig: {0}")]
    Encode(serde_norway::Error),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Fields `set-context` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ContextFields {
    pub(crate) cluster: Option<String>,
    pub(crate) user: Option<String>,
    pub(crate) namespace: Option<String>,
}

/// A new, empty kubeconfig document (kubectl's header).
fn empty_document() -> Mapping {
    let mut map = Mapping::new();
    map.insert("apiVersion".into(), "v1".into());
    map.insert("kind".into(), "Config".into());
    map
}

fn as_mapping(doc: &mut Value) -> Option<&mut Mapping> {
    if doc.is_null() {
        *doc = Value::Mapping(empty_document());
    }
    doc.as_mapping_mut()
}

/// Sets `current-context` (pure).
pub(crate) fn set_current_context(
    doc: &mut Value,
    name: &str,
    path: &Path,
) -> Result<(), EditError> {
    let map = as_mapping(doc).ok_or_else(|| EditError::NotAMapping {
        path: path.to_path_buf(),
    })?;
    map.insert("current-context".into(), name.into());
    Ok(())
}

/// Sets the fields of context `name`, adding it when missing (pure). Returns whether the
/// context was created.
pub(crate) fn set_context_fields(
    doc: &mut Value,
    name: &str,
    fields: &ContextFields,
    path: &Path,
) -> Result<bool, EditError> {
    let map = as_mapping(doc).ok_or_else(|| EditError::NotAMapping {
        path: path.to_path_buf(),
    })?;
    let contexts = map
        .entry("contexts".into())
        .or_insert(Value::Sequence(Vec::new()));
    if contexts.is_null() {
        *contexts = Value::Sequence(Vec::new());
    }
    let list = contexts
        .as_sequence_mut()
        .ok_or(EditError::NotAList("contexts"))?;
    let position = list
        .iter()
        .position(|entry| entry.get("name").and_then(Value::as_str) == Some(name));
    let created = position.is_none();
    let index = match position {
        Some(index) => index,
        None => {
            let mut entry = Mapping::new();
            entry.insert("name".into(), name.into());
            entry.insert("context".into(), Value::Mapping(Mapping::new()));
            list.push(Value::Mapping(entry));
            list.len() - 1
        }
    };
    let Some(entry) = list.get_mut(index).and_then(Value::as_mapping_mut) else {
        return Err(EditError::NotAList("contexts"));
    };
    let context = entry
        .entry("context".into())
        .or_insert(Value::Mapping(Mapping::new()));
    if !context.is_mapping() {
        *context = Value::Mapping(Mapping::new());
    }
    if let Some(context) = context.as_mapping_mut() {
        for (key, value) in [
            ("cluster", &fields.cluster),
            ("user", &fields.user),
            ("namespace", &fields.namespace),
        ] {
            if let Some(value) = value {
                context.insert(key.into(), value.as_str().into());
            }
        }
    }
    Ok(created)
}

/// Reads a kubeconfig as a YAML document; a missing or empty file is an empty document.
pub(crate) fn read_document(path: &Path) -> Result<Value, EditError> {
    let bytes = match read_small_file(path) {
        Ok(bytes) => bytes,
        Err(KubeconfigError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(Value::Null)
        }
        Err(err) => return Err(err.into()),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_norway::from_slice(&bytes).map_err(|source| EditError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Replaces the file atomically: a temporary file (mode 0600) beside it, then a rename. A
/// symbolic link is followed, so the file it points at is the one replaced.
pub(crate) fn write_document(path: &Path, doc: &Value) -> Result<(), EditError> {
    use std::os::unix::fs::PermissionsExt as _;
    let text = serde_norway::to_string(doc).map_err(EditError::Encode)?;
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let write_err = |source| EditError::Write {
        path: target.clone(),
        source,
    };
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(write_err)?;
    let mut file = tempfile::NamedTempFile::new_in(&dir).map_err(write_err)?;
    file.write_all(text.as_bytes()).map_err(write_err)?;
    file.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(write_err)?;
    file.as_file().sync_all().map_err(write_err)?;
    file.persist(&target).map_err(|err| write_err(err.error))?;
    Ok(())
}

/// Reads `path`, applies `edit`, and writes it back.
pub(crate) fn edit_file<T>(
    path: &Path,
    edit: impl FnOnce(&mut Value) -> Result<T, EditError>,
) -> Result<T, EditError> {
    let mut doc = read_document(path)?;
    let result = edit(&mut doc)?;
    write_document(path, &doc)?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const CONFIG: &str = "apiVersion: v1
kind: Config
preferences:
  colors: true
clusters:
- name: c
  cluster:
    server: https://c:1
contexts:
- name: a
  context:
    cluster: c
    user: u
- name: b
  context:
    cluster: c
current-context: a
users:
- name: u
  user:
    token: t
";

    #[test]
    fn use_context_changes_only_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, CONFIG).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = read_document(&path).unwrap();
        // Phase 1: edit.
        edit_file(&path, |doc| set_current_context(doc, "b", &path)).unwrap();
        // Phase 2: only current-context differs; preferences and users are kept.
        let after = read_document(&path).unwrap();
        assert_eq!(
            after.get("current-context").and_then(Value::as_str),
            Some("b")
        );
        let mut expected = before.clone();
        set_current_context(&mut expected, "b", &path).unwrap();
        assert_eq!(after, expected);
        assert_eq!(
            after["preferences"]["colors"].as_bool(),
            Some(true),
            "unknown keys are kept"
        );
        // Phase 3: the file is 0600 and no temporary file is left behind.
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn writing_through_a_symlink_replaces_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let link = dir.path().join("link");
        std::fs::write(&real, CONFIG).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        edit_file(&link, |doc| set_current_context(doc, "b", &link)).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let doc = read_document(&real).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("b"));
    }

    #[test]
    fn a_missing_file_is_created_with_a_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("config");
        edit_file(&path, |doc| set_current_context(doc, "x", &path)).unwrap();
        let doc = read_document(&path).unwrap();
        assert_eq!(doc["kind"].as_str(), Some("Config"));
        assert_eq!(doc["current-context"].as_str(), Some("x"));
    }

    #[test]
    fn set_context_edits_or_adds_an_entry() {
        let path = Path::new("/unused");
        let mut doc: Value = serde_norway::from_str(CONFIG).unwrap();
        let ns = |ns: &str| ContextFields {
            namespace: Some(ns.to_string()),
            ..ContextFields::default()
        };
        // Phase 1: an existing context keeps its cluster and user.
        assert!(!set_context_fields(&mut doc, "a", &ns("team"), path).unwrap());
        assert_eq!(
            doc["contexts"][0]["context"]["namespace"].as_str(),
            Some("team")
        );
        assert_eq!(doc["contexts"][0]["context"]["user"].as_str(), Some("u"));
        // Phase 2: a new context is appended.
        assert!(set_context_fields(&mut doc, "new", &ns("x"), path).unwrap());
        assert_eq!(doc["contexts"][2]["name"].as_str(), Some("new"));
        assert_eq!(
            doc["contexts"][2]["context"]["namespace"].as_str(),
            Some("x")
        );
        // Phase 3: a document whose contexts are not a list is refused, not overwritten.
        let mut bad: Value = serde_norway::from_str("contexts: 5\n").unwrap();
        assert!(matches!(
            set_context_fields(&mut bad, "a", &ns("x"), path),
            Err(EditError::NotAList("contexts"))
        ));
    }
}
