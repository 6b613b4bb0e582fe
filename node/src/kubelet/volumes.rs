//! A pod's volumes on the node (emptyDir, hostPath, configMap, secret, and the
//! service-account token Kubernetes mounts by default) and its containers' environment values
//! that come from fields, ConfigMaps and Secrets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, KeyToPath, PodSpec, Volume};
use reqwest::Method;
use serde_json::Value;

use crate::api::ApiClient;
use crate::runtime::Mount;

/// Where Kubernetes mounts the service-account token.
pub const SA_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume name the token directory gets in the pod's volume directory.
const SA_VOLUME: &str = "kube-api-access";

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The user can fix it (a missing ConfigMap, an unsupported volume type): shown as
    /// `CreateContainerConfigError`.
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
}

fn io(context: &str, e: std::io::Error) -> VolumeError {
    VolumeError::Io(format!("{context}: {e}"))
}

/// What the volumes and the environment need to know about the pod.
pub struct PodRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub node_name: &'a str,
    pub host_ip: &'a str,
    pub pod_ip: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub annotations: &'a BTreeMap<String, String>,
    pub spec: &'a PodSpec,
    /// The pod's own directory on the node.
    pub dir: &'a Path,
}

async fn get_object(api: &ApiClient, path: &str, what: &str) -> Result<Value, VolumeError> {
    api.request(Method::GET, path, "application/json", None)
        .await
        .map_err(|e| {
            if e.is_not_found() {
                VolumeError::Config(format!("{what} not found"))
            } else {
                VolumeError::Io(format!("cannot read {what}: {e}"))
            }
        })
}

/// The key → bytes of a ConfigMap or Secret.
fn data_of(object: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Some(map) = object["data"].as_object() {
        for (key, value) in map {
            let Some(text) = value.as_str() else { continue };
            let bytes = if secret {
                match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(bytes) => bytes,
                    Err(_) => continue,
                }
            } else {
                text.as_bytes().to_vec()
            };
            out.insert(key.clone(), bytes);
        }
    }
    if let Some(map) = object["binaryData"].as_object() {
        for (key, value) in map {
            if let Some(bytes) = value
                .as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            {
                out.insert(key.clone(), bytes);
            }
        }
    }
    out
}

/// A relative path that stays inside its directory.
fn safe_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The link in a projected volume to the current version of its files.
const DATA_LINK: &str = "..data";

/// Writes `data` (all keys, or `items`) into `dir` the way Kubernetes' atomic writer does, so
/// that containers with `dir` mounted see a new version all at once: the files go into a new
/// hidden `..<version>` directory, the `..data` link is renamed over to point at it, and each
/// top-level name in `dir` is a link through `..data`. Returns whether anything changed.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    what: &str,
) -> Result<bool, VolumeError> {
    let files: BTreeMap<String, &Vec<u8>> = match items {
        Some(items) => items
            .iter()
            .map(|item| {
                data.get(&item.key)
                    .map(|bytes| (item.path.clone(), bytes))
                    .ok_or_else(|| VolumeError::Config(format!("{what} has no key {:?}", item.key)))
            })
            .collect::<Result<_, _>>()?,
        None => data.iter().map(|(k, v)| (k.clone(), v)).collect(),
    };
    if let Some(bad) = files
        .keys()
        .find(|p| !safe_relative(p) || p.starts_with(".."))
    {
        return Err(VolumeError::Config(format!(
            "{what}: path {bad:?} leaves the volume"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| io("creating a volume", e))?;
    let current = dir.join(DATA_LINK);
    let unchanged = std::fs::read_link(&current).is_ok()
        && files
            .iter()
            .all(|(path, bytes)| std::fs::read(current.join(path)).is_ok_and(|b| &b == *bytes))
        && listed_files(&current) == files.keys().cloned().collect::<Vec<_>>();
    if unchanged {
        return Ok(false);
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let version = format!("..{stamp}");
    let staging = dir.join(&version);
    for (path, bytes) in &files {
        let target = staging.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io("creating a volume", e))?;
        }
        std::fs::write(&target, bytes).map_err(|e| io("writing a volume file", e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| io("creating a volume", e))?;
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&version, &tmp_link).map_err(|e| io("linking a volume", e))?;
    std::fs::rename(&tmp_link, &current).map_err(|e| io("switching a volume", e))?;
    // Top-level names: links through ..data; names no longer present are removed.
    let tops: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_ok_and(|m| !m.file_type().is_symlink()) {
            // A file of the layout before atomic writes.
            let _ = std::fs::remove_dir_all(&link).or_else(|_| std::fs::remove_file(&link));
        }
        if std::fs::read_link(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_LINK).join(top), &link)
                .map_err(|e| io("linking a volume file", e))?;
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let stale_version = name.starts_with("..") && name != DATA_LINK && name != version;
            if stale_version {
                let _ = std::fs::remove_dir_all(entry.path());
            } else if !name.starts_with("..") && !tops.contains(&name) {
                let path = entry.path();
                let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
            }
        }
    }
    Ok(true)
}

/// The files under `dir` (following the ..data link), as relative paths, sorted.
fn listed_files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 16 {
                walk(base, &path, out, depth + 1);
            } else if let Ok(rel) = path.strip_prefix(base) {
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out, 0);
    out.sort();
    out
}

/// Rewrites the pod's configMap and secret volumes whose sources changed (containers see the
/// new files through their mounts). Returns the names of the volumes that changed.
pub async fn refresh(
    api: &ApiClient,
    namespace: &str,
    pod_dir: &Path,
    spec: &PodSpec,
) -> Result<Vec<String>, VolumeError> {
    let mut changed = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        if volume.config_map.is_none() && volume.secret.is_none() {
            continue;
        }
        if project(api, namespace, pod_dir, volume).await? {
            changed.push(volume.name.clone());
        }
    }
    Ok(changed)
}

/// The ConfigMaps and Secrets a pod's volumes project: (plural, name).
pub fn projected_sources(spec: &PodSpec) -> Vec<(&'static str, String)> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            if let Some(cm) = &v.config_map {
                Some(("configmaps", cm.name.clone()))
            } else {
                v.secret
                    .as_ref()
                    .and_then(|s| s.secret_name.clone())
                    .map(|name| ("secrets", name))
            }
        })
        .collect()
}

/// Writes a configMap or secret volume's files; returns whether they changed.
async fn project(
    api: &ApiClient,
    namespace: &str,
    pod_dir: &Path,
    volume: &Volume,
) -> Result<bool, VolumeError> {
    let dir = pod_dir.join("volumes").join(&volume.name);
    let (path, what, optional, items, secret) = if let Some(source) = &volume.config_map {
        (
            format!("/api/v1/namespaces/{namespace}/configmaps/{}", source.name),
            format!("configmap {:?}", source.name),
            source.optional == Some(true),
            source.items.as_ref(),
            false,
        )
    } else if let Some(source) = &volume.secret {
        let name = source.secret_name.clone().unwrap_or_default();
        (
            format!("/api/v1/namespaces/{namespace}/secrets/{name}"),
            format!("secret {name:?}"),
            source.optional == Some(true),
            source.items.as_ref(),
            true,
        )
    } else {
        return Ok(false);
    };
    match get_object(api, &path, &what).await {
        Ok(object) => write_files(&dir, &data_of(&object, secret), items, &what),
        Err(VolumeError::Config(_)) if optional => write_files(&dir, &BTreeMap::new(), None, &what),
        Err(e) => Err(e),
    }
}

/// Prepares a volume and returns the host directory (or file) it is.
async fn prepare(
    api: &ApiClient,
    pod: &PodRef<'_>,
    volume: &Volume,
) -> Result<PathBuf, VolumeError> {
    let dir = pod.dir.join("volumes").join(&volume.name);
    if volume.empty_dir.is_some() {
        std::fs::create_dir_all(&dir).map_err(|e| io("creating an emptyDir", e))?;
        return Ok(dir);
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => {
                std::fs::create_dir_all(&path).map_err(|e| io("creating a hostPath", e))?
            }
            "Directory" if !path.is_dir() => {
                return Err(VolumeError::Config(format!(
                    "hostPath {} is not a directory",
                    host.path
                )))
            }
            "File" if !path.is_file() => {
                return Err(VolumeError::Config(format!(
                    "hostPath {} is not a file",
                    host.path
                )))
            }
            _ => {}
        }
        return Ok(path);
    }
    if volume.config_map.is_some() || volume.secret.is_some() {
        project(api, pod.namespace, pod.dir, volume).await?;
        return Ok(dir);
    }
    Err(VolumeError::Config(format!(
        "volume {:?}: this kubelet supports emptyDir, hostPath, configMap and secret volumes",
        volume.name
    )))
}

/// The service account's token, CA and namespace, from its token Secret.
async fn service_account_files(api: &ApiClient, pod: &PodRef<'_>) -> Result<PathBuf, VolumeError> {
    let account = pod
        .spec
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let list = api
        .request(
            Method::GET,
            &format!(
                "/api/v1/namespaces/{}/secrets?fieldSelector=type%3Dkubernetes.io%2Fservice-account-token",
                pod.namespace
            ),
            "application/json",
            None,
        )
        .await
        .map_err(|e| VolumeError::Io(format!("cannot list service-account tokens: {e}")))?;
    let secret = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| {
            s.pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                == Some(account.as_str())
        })
        .ok_or_else(|| {
            VolumeError::Config(format!(
                "the token of service account {account:?} does not exist yet"
            ))
        })?;
    let mut data = data_of(secret, true);
    data.entry("namespace".to_string())
        .or_insert_with(|| pod.namespace.as_bytes().to_vec());
    let dir = pod.dir.join("volumes").join(SA_VOLUME);
    write_files(&dir, &data, None, "the service-account token")?;
    Ok(dir)
}

/// The mounts of one container (volumes prepared on the way).
pub async fn mounts(
    api: &ApiClient,
    pod: &PodRef<'_>,
    container: &Container,
) -> Result<Vec<Mount>, VolumeError> {
    let mut out = Vec::new();
    let volumes = pod.spec.volumes.clone().unwrap_or_default();
    for mount in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .ok_or_else(|| {
                VolumeError::Config(format!(
                    "volume mount {:?} names no volume of the pod",
                    mount.name
                ))
            })?;
        let mut host = prepare(api, pod, volume).await?;
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if !safe_relative(sub) {
                return Err(VolumeError::Config(format!(
                    "subPath {sub:?} leaves the volume"
                )));
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| io("creating a subPath", e))?;
            }
        }
        out.push(Mount {
            host_path: host,
            container_path: mount.mount_path.clone(),
            read_only: mount.read_only.unwrap_or(false)
                || volume.config_map.is_some()
                || volume.secret.is_some(),
        });
    }
    let automount = container
        .volume_mounts
        .iter()
        .flatten()
        .all(|m| m.mount_path != SA_MOUNT_PATH)
        && pod.spec.automount_service_account_token != Some(false);
    if automount {
        out.push(Mount {
            host_path: service_account_files(api, pod).await?,
            container_path: SA_MOUNT_PATH.to_string(),
            read_only: true,
        });
    }
    Ok(out)
}

/// The value of `key` in ConfigMap or Secret (`plural`) `name`, if it has that key.
async fn key_ref(
    api: &ApiClient,
    namespace: &str,
    plural: &str,
    name: &str,
    key: &str,
) -> Result<Option<String>, VolumeError> {
    let secret = plural == "secrets";
    let what = format!("{} {name:?}", if secret { "secret" } else { "configmap" });
    let object = get_object(
        api,
        &format!("/api/v1/namespaces/{namespace}/{plural}/{name}"),
        &what,
    )
    .await?;
    Ok(data_of(&object, secret)
        .remove(key)
        .map(|bytes| String::from_utf8_lossy(&bytes).to_string()))
}

fn no_key(kind: &str, name: &str, key: &str) -> VolumeError {
    VolumeError::Config(format!("{kind} {name:?} has no key {key:?}"))
}

/// A field of the pod for `valueFrom.fieldRef`.
pub fn field(pod: &PodRef<'_>, path: &str) -> Result<String, VolumeError> {
    let key_of = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => pod.name.to_string(),
        "metadata.namespace" => pod.namespace.to_string(),
        "metadata.uid" => pod.uid.to_string(),
        "spec.nodeName" => pod.node_name.to_string(),
        "spec.serviceAccountName" => pod.spec.service_account_name.clone().unwrap_or_default(),
        "status.hostIP" => pod.host_ip.to_string(),
        "status.podIP" => pod.pod_ip.to_string(),
        _ => {
            if let Some(key) = key_of("metadata.labels['") {
                pod.labels.get(&key).cloned().unwrap_or_default()
            } else if let Some(key) = key_of("metadata.annotations['") {
                pod.annotations.get(&key).cloned().unwrap_or_default()
            } else {
                return Err(VolumeError::Config(format!(
                    "fieldRef {path:?} is not supported"
                )));
            }
        }
    })
}

/// The container's environment in order: `envFrom` first, then `env`.
pub async fn env(
    api: &ApiClient,
    pod: &PodRef<'_>,
    container: &Container,
) -> Result<Vec<(String, String)>, VolumeError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |name: String, value: String| match out.iter_mut().find(|(n, _)| *n == name) {
        Some(slot) => slot.1 = value,
        None => out.push((name, value)),
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        let (path, what, secret, optional) = if let Some(cm) = &source.config_map_ref {
            (
                format!(
                    "/api/v1/namespaces/{}/configmaps/{}",
                    pod.namespace, cm.name
                ),
                format!("configmap {:?}", cm.name),
                false,
                cm.optional,
            )
        } else if let Some(s) = &source.secret_ref {
            (
                format!("/api/v1/namespaces/{}/secrets/{}", pod.namespace, s.name),
                format!("secret {:?}", s.name),
                true,
                s.optional,
            )
        } else {
            continue;
        };
        match get_object(api, &path, &what).await {
            Ok(object) => {
                for (key, bytes) in data_of(&object, secret) {
                    push(
                        format!("{prefix}{key}"),
                        String::from_utf8_lossy(&bytes).to_string(),
                    );
                }
            }
            Err(VolumeError::Config(_)) if optional == Some(true) => {}
            Err(e) => return Err(e),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                if let Some(f) = &from.field_ref {
                    field(pod, &f.field_path)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let found = key_ref(api, pod.namespace, "configmaps", &r.name, &r.key).await;
                    match found {
                        Ok(Some(value)) => value,
                        Ok(None) | Err(VolumeError::Config(_)) if r.optional == Some(true) => {
                            continue
                        }
                        Ok(None) => return Err(no_key("configmap", &r.name, &r.key)),
                        Err(e) => return Err(e),
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let found = key_ref(api, pod.namespace, "secrets", &r.name, &r.key).await;
                    match found {
                        Ok(Some(value)) => value,
                        Ok(None) | Err(VolumeError::Config(_)) if r.optional == Some(true) => {
                            continue
                        }
                        Ok(None) => return Err(no_key("secret", &r.name, &r.key)),
                        Err(e) => return Err(e),
                    }
                } else {
                    return Err(VolumeError::Config(format!(
                        "env {:?}: only fieldRef, configMapKeyRef and secretKeyRef are supported",
                        var.name
                    )));
                }
            }
            (Some(value), None) => value.clone(),
            (None, None) => String::new(),
        };
        push(var.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths_stay_inside() {
        for ok in ["a", "a/b", "key.txt"] {
            assert!(safe_relative(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "./a"] {
            assert!(!safe_relative(bad), "{bad}");
        }
    }

    #[test]
    fn files_are_written_from_data_and_items() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("cm");
        let data = BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        assert!(write_files(&target, &data, None, "cm").unwrap());
        assert_eq!(std::fs::read(target.join("b")).unwrap(), b"2");
        assert!(
            !write_files(&target, &data, None, "cm").unwrap(),
            "the same data again changes nothing"
        );
        assert!(std::fs::read_link(target.join("..data")).is_ok());
        assert!(
            std::fs::read_link(target.join("b")).is_ok(),
            "files are links through ..data"
        );
        let items = vec![KeyToPath {
            key: "a".into(),
            path: "sub/x".into(),
            mode: None,
            ..KeyToPath::default()
        }];
        assert!(write_files(&target, &data, Some(&items), "cm").unwrap());
        assert_eq!(std::fs::read(target.join("sub/x")).unwrap(), b"1");
        let versions = std::fs::read_dir(&target)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name().to_string_lossy().starts_with("..") && e.file_name() != "..data"
            })
            .count();
        assert_eq!(versions, 1, "old versions are removed");
        assert!(
            !target.join("b").exists(),
            "a rewrite replaces the old files"
        );
        let bad = vec![KeyToPath {
            key: "a".into(),
            path: "../x".into(),
            mode: None,
            ..KeyToPath::default()
        }];
        assert!(matches!(
            write_files(&target, &data, Some(&bad), "cm"),
            Err(VolumeError::Config(_))
        ));
        let missing = vec![KeyToPath {
            key: "zz".into(),
            path: "x".into(),
            mode: None,
            ..KeyToPath::default()
        }];
        assert!(matches!(
            write_files(&target, &data, Some(&missing), "cm"),
            Err(VolumeError::Config(_))
        ));
    }

    #[test]
    fn secret_data_is_decoded() {
        let secret = serde_json::json!({"data": {"token": "aGVsbG8=", "bad": "%%%"}});
        let data = data_of(&secret, true);
        assert_eq!(data["token"], b"hello");
        assert!(!data.contains_key("bad"));
    }
}
