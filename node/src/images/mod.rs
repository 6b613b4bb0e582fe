//! The node's image store: pulls images from registries (with oci-client), imports OCI
//! archives for air-gapped nodes, and unpacks layers into directories that the runtime mounts
//! as overlayfs lower layers.
//!
//! On disk, under the store's directory: `blobs/sha256/<hex>` (compressed blobs, each verified
//! against its digest before it is renamed into place), `layers/<layer digest hex>/` (unpacked
//! layers, shared between images, unpacked into a temporary directory and renamed), and
//! `images.json` (normalized reference → manifest digest, layers and config; replaced
//! atomically).

mod busybox;
mod digest;
mod layout;
mod reference;
mod registry;
mod store;
mod unpack;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use busybox::{build_busybox_oci_layout, BUILTIN_BUSYBOX};
pub use reference::{default_pull_policy, normalize_reference};
pub use store::ImageStore;

/// Largest manifest or image config accepted, in bytes.
pub const MANIFEST_BYTES_MAX: u64 = 4 << 20;
/// Largest compressed layer accepted, in bytes.
pub const LAYER_BYTES_MAX: u64 = 2 << 30;
/// Most layers an image may have.
pub const IMAGE_LAYERS_MAX: usize = 256;

/// When the kubelet pulls an image (a container's `imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// Credentials for a registry, from a pod's `imagePullSecrets`.
#[derive(Clone)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Options for [`ImageStore::open`].
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Registries (`host:port`) pulled over plain HTTP. `localhost` and `127.0.0.1` (any port)
    /// always are, as docker does.
    pub insecure_registries: Vec<String>,
    /// Layers downloaded at once per pull.
    pub pull_concurrency: usize,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            insecure_registries: Vec::new(),
            pull_concurrency: 3,
        }
    }
}

/// An image present in the store, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Normalized reference, e.g. `docker.io/library/busybox:1.35`.
    pub reference: String,
    /// Digest of the image manifest.
    pub digest: String,
    /// Unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
    pub config: ImageConfig,
    /// Compressed size of the config and layers (what a pull downloads).
    pub size_bytes: u64,
}

/// How far a pull in progress has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullProgress {
    /// Bytes downloaded, or found on disk already.
    pub done_bytes: u64,
    /// Compressed size of the config and layers.
    pub total_bytes: u64,
}

/// The parts of an image's config that decide how its containers run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// One image in [`ImageStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Normalized references that name this manifest.
    pub references: Vec<String>,
    pub digest: String,
    /// Compressed size of the config and layers.
    pub size_bytes: u64,
}

/// Why an image could not be made available.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Pull policy `Never` and the image is absent (the kubelet's `ErrImageNeverPull`).
    #[error("{0}")]
    NeverPull(String),
    /// The registry's or the transport's message, prefixed with the reference.
    #[error("{0}")]
    Pull(String),
    #[error("invalid image reference: {0}")]
    InvalidReference(String),
    #[error("image store i/o: {0}")]
    Io(String),
    /// Content that does not match its digest, or that cannot be parsed or unpacked.
    #[error("corrupt image content: {0}")]
    Corrupt(String),
}

impl ImageError {
    fn io(context: impl std::fmt::Display, e: std::io::Error) -> ImageError {
        ImageError::Io(format!("{context}: {e}"))
    }
}
