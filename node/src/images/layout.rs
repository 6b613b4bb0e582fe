//! OCI and docker manifest formats, image configs, and reading an OCI image layout directory
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) as `skopeo copy ... oci:DIR` writes it.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Deserialize;

use super::{digest, ImageConfig, ImageError, MANIFEST_BYTES_MAX};

pub(crate) const IMAGE_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const IMAGE_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const IMAGE_LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";

/// A content descriptor (OCI and docker schema 2 share the fields used here).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: i64,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) os: String,
}

/// An image manifest (OCI or docker schema 2).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Manifest {
    pub(crate) config: Descriptor,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
}

/// Anything `index.json` or a manifest blob can hold: an index (`manifests`) or an image
/// manifest (`config`, `layers`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ContainerConfig>,
}

/// The runtime-relevant part of an image config blob.
pub(crate) fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
    let file: ConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::Corrupt(format!("image config: {e}")))?;
    let c = file.config.unwrap_or_default();
    let env = c
        .env
        .unwrap_or_default()
        .into_iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv, String::new()),
        })
        .collect();
    Ok(ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env,
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
    })
}

/// Parses a manifest; indexes are refused here (the caller resolves them first).
pub(crate) fn parse_manifest(bytes: &[u8]) -> Result<Manifest, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Corrupt(format!("image manifest: {e}")))
}

fn is_index(media_type: &str) -> bool {
    media_type == IMAGE_INDEX_MEDIA_TYPE || media_type == DOCKER_MANIFEST_LIST_MEDIA_TYPE
}

/// The linux/amd64 entry of an index, else the first one without a platform.
pub(crate) fn pick_platform(manifests: &[Descriptor]) -> Option<&Descriptor> {
    manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .or_else(|| manifests.iter().find(|d| d.platform.is_none()))
}

/// An image found in a layout.
#[derive(Debug, Clone)]
pub(crate) struct LayoutImage {
    /// The name from the index annotations (`io.containerd.image.name`, else
    /// `org.opencontainers.image.ref.name`), not yet normalized.
    pub(crate) name: Option<String>,
    pub(crate) manifest_digest: String,
    pub(crate) manifest: Manifest,
}

/// A blob of the layout, read whole and checked against its digest.
pub(crate) fn read_blob(
    dir: &Path,
    descriptor: &Descriptor,
    bytes_max: u64,
) -> Result<Vec<u8>, ImageError> {
    let hex = digest::sha256_hex(&descriptor.digest)?;
    if descriptor.size < 0 || descriptor.size as u64 > bytes_max {
        return Err(ImageError::Corrupt(format!(
            "blob {} has size {} (limit {bytes_max})",
            descriptor.digest, descriptor.size
        )));
    }
    let path = dir.join("blobs/sha256").join(hex);
    let bytes = fs::read(&path).map_err(|e| ImageError::io(path.display(), e))?;
    digest::verify(&bytes, &descriptor.digest)?;
    Ok(bytes)
}

/// The images of an OCI layout directory, one per `index.json` entry (nested indexes are
/// resolved to linux/amd64).
pub(crate) fn read_layout(dir: &Path) -> Result<Vec<LayoutImage>, ImageError> {
    let index_path = dir.join("index.json");
    let index = fs::read(&index_path).map_err(|e| ImageError::io(index_path.display(), e))?;
    let index: AnyManifest = serde_json::from_slice(&index)
        .map_err(|e| ImageError::Corrupt(format!("{}: {e}", index_path.display())))?;
    let mut images = Vec::new();
    for entry in index.manifests.unwrap_or_default() {
        let name = entry
            .annotations
            .get(CONTAINERD_NAME_ANNOTATION)
            .or_else(|| entry.annotations.get(REF_NAME_ANNOTATION))
            .cloned();
        let mut descriptor = entry;
        // Nested indexes, bounded.
        for _ in 0..4 {
            let bytes = read_blob(dir, &descriptor, MANIFEST_BYTES_MAX)?;
            let any: AnyManifest = serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Corrupt(format!("manifest {}: {e}", descriptor.digest)))?;
            let index_like = any.manifests.is_some()
                || is_index(&descriptor.media_type)
                || any.media_type.as_deref().is_some_and(is_index);
            if index_like {
                let manifests = any.manifests.unwrap_or_default();
                descriptor = pick_platform(&manifests)
                    .ok_or_else(|| {
                        ImageError::Corrupt(format!(
                            "index {} has no linux/amd64 image",
                            descriptor.digest
                        ))
                    })?
                    .clone();
                continue;
            }
            let config = any.config.ok_or_else(|| {
                ImageError::Corrupt(format!("manifest {} has no config", descriptor.digest))
            })?;
            images.push(LayoutImage {
                name: name.clone(),
                manifest_digest: descriptor.digest.clone(),
                manifest: Manifest {
                    config,
                    layers: any.layers,
                },
            });
            break;
        }
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_parse() {
        let c = parse_config(
            br#"{"config":{"Entrypoint":["/e"],"Cmd":["sh"],"Env":["PATH=/bin","EMPTY=","ODD"],"WorkingDir":"","User":"1000"}}"#,
        )
        .unwrap();
        assert_eq!(c.entrypoint, vec!["/e"]);
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(
            c.env,
            vec![
                ("PATH".to_string(), "/bin".to_string()),
                ("EMPTY".to_string(), String::new()),
                ("ODD".to_string(), String::new())
            ]
        );
        assert_eq!(c.working_dir, None);
        assert_eq!(c.user.as_deref(), Some("1000"));
        assert_eq!(parse_config(b"{}").unwrap(), ImageConfig::default());
        assert!(parse_config(b"[").is_err());
    }

    #[test]
    fn the_busybox_layout_reads_back() {
        let Ok(_) = fs::metadata("/bin/busybox") else {
            panic!("/bin/busybox is missing: install Debian's busybox-static");
        };
        let dir = tempfile::tempdir().unwrap();
        super::super::build_busybox_oci_layout(Path::new("/bin/busybox"), dir.path(), "x.io/bb:1")
            .unwrap();
        let images = read_layout(dir.path()).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].name.as_deref(), Some("x.io/bb:1"));
        assert_eq!(images[0].manifest.layers.len(), 1);
        let config = read_blob(dir.path(), &images[0].manifest.config, MANIFEST_BYTES_MAX).unwrap();
        assert_eq!(parse_config(&config).unwrap().cmd, vec!["sh"]);
    }
}
