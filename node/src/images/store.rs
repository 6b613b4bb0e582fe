//! `ImageStore`: the images a node has, on disk; pulls (shared between concurrent callers),
//! imports of OCI archives and layout directories, and the built-in busybox image.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::layout::{self, Descriptor, Manifest};
use super::reference::{self, normalize_reference};
use super::registry::RemoteImage;
use super::unpack::unpack_layer;
use super::{
    busybox, digest, Image, ImageConfig, ImageError, ImageOptions, ImageSummary, PullPolicy,
    PullProgress, RegistryAuth, IMAGE_LAYERS_MAX, LAYER_BYTES_MAX, MANIFEST_BYTES_MAX,
};

const INDEX_FILE: &str = "images.json";
const BUSYBOX_PATH: &str = "/bin/busybox";
/// Archives imported from one air-gap directory, at most.
const IMPORT_DIR_ARCHIVES_MAX: usize = 1024;

/// One image in `images.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    /// Manifest digest.
    digest: String,
    config_digest: String,
    /// Layer digests, lowest first.
    layers: Vec<String>,
    size_bytes: u64,
    config: ImageConfig,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    images: BTreeMap<String, ImageRecord>,
}

type PullFuture = Shared<BoxFuture<'static, Result<Image, ImageError>>>;

struct Inner {
    dir: PathBuf,
    options: ImageOptions,
    index: Mutex<Index>,
    /// Pulls in progress by normalized reference: a second `ensure` joins the first.
    pulls: Mutex<HashMap<String, PullFuture>>,
    /// Layers being fetched, by digest: two images sharing a layer download it once.
    layer_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Progress of the pulls in progress, by normalized reference.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
}

/// A pull's byte counters.
#[derive(Default)]
struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

/// The node's images. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep going with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn create_dir(path: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(path).map_err(|e| ImageError::io(path.display(), e))
}

/// Removes leftovers (`.tmp-*`) of an interrupted write or unpack.
fn remove_temporaries(dir: &Path) -> Result<(), ImageError> {
    let entries = fs::read_dir(dir).map_err(|e| ImageError::io(dir.display(), e))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".tmp-") {
            let path = entry.path();
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(e) = result {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a temporary file");
            }
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| ImageError::io(dir.display(), e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| ImageError::io(tmp.path().display(), e))?;
    tmp.persist(path)
        .map_err(|e| ImageError::io(path.display(), e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io(dir.display(), e))
}

fn blocking_error(e: tokio::task::JoinError) -> ImageError {
    ImageError::Io(format!("image store task failed: {e}"))
}

impl ImageStore {
    /// Opens (creating it if needed) the store in `dir`. Images whose layers are missing are
    /// forgotten, with a warning.
    pub fn open(dir: &Path, options: ImageOptions) -> Result<ImageStore, ImageError> {
        // reqwest is built without a crypto provider; the process may have installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        for sub in ["blobs/sha256", "layers", "tmp"] {
            create_dir(&dir.join(sub))?;
        }
        for sub in ["blobs/sha256", "layers", "tmp", "."] {
            remove_temporaries(&dir.join(sub))?;
        }
        let index_path = dir.join(INDEX_FILE);
        let mut index: Index = match fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| ImageError::Corrupt(format!("{}: {e}", index_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(ImageError::io(index_path.display(), e)),
        };
        index.images.retain(|name, record| {
            let complete = record.layers.iter().all(|l| {
                digest::sha256_hex(l).is_ok_and(|hex| dir.join("layers").join(hex).is_dir())
            });
            if !complete {
                tracing::warn!(image = %name, "image has missing layers; forgetting it");
            }
            complete
        });
        let options = ImageOptions {
            pull_concurrency: options.pull_concurrency.clamp(1, 16),
            ..options
        };
        Ok(ImageStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                index: Mutex::new(index),
                pulls: Mutex::new(HashMap::new()),
                layer_locks: Mutex::new(HashMap::new()),
                progress: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn blobs_dir(&self) -> PathBuf {
        self.inner.dir.join("blobs/sha256")
    }

    fn layer_dir(&self, layer_digest: &str) -> Result<PathBuf, ImageError> {
        Ok(self
            .inner
            .dir
            .join("layers")
            .join(digest::sha256_hex(layer_digest)?))
    }

    fn image(&self, name: &str, record: &ImageRecord) -> Image {
        let layers = record
            .layers
            .iter()
            .filter_map(|l| self.layer_dir(l).ok())
            .collect();
        Image {
            reference: name.to_string(),
            digest: record.digest.clone(),
            layers,
            config: record.config.clone(),
            size_bytes: record.size_bytes,
        }
    }

    /// Whether [`ImageStore::ensure`] with `policy` would pull `reference` now.
    pub fn will_pull(&self, reference: &str, policy: PullPolicy) -> bool {
        match policy {
            PullPolicy::Never => false,
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => self.get(reference).is_none(),
        }
    }

    /// How far the pull of `reference` has come, while one runs (and knows its size).
    pub fn pull_progress(&self, reference: &str) -> Option<PullProgress> {
        let name = normalize_reference(reference).ok()?;
        let progress = lock(&self.inner.progress).get(&name)?.clone();
        let total_bytes = progress.total.load(Ordering::Relaxed);
        (total_bytes > 0).then(|| PullProgress {
            done_bytes: progress.done.load(Ordering::Relaxed).min(total_bytes),
            total_bytes,
        })
    }

    /// Records `name` → `record` and rewrites `images.json`.
    fn record(&self, name: &str, record: ImageRecord) -> Result<Image, ImageError> {
        let mut index = lock(&self.inner.index);
        index.images.insert(name.to_string(), record.clone());
        let bytes = serde_json::to_vec_pretty(&*index)
            .map_err(|e| ImageError::Io(format!("encoding {INDEX_FILE}: {e}")))?;
        write_atomically(&self.inner.dir.join(INDEX_FILE), &bytes)?;
        Ok(self.image(name, &record))
    }

    /// The image `reference` names, if present.
    pub fn get(&self, reference: &str) -> Option<Image> {
        let name = normalize_reference(reference).ok()?;
        let index = lock(&self.inner.index);
        index.images.get(&name).map(|r| self.image(&name, r))
    }

    /// Every image, references that share a manifest grouped together.
    pub fn list(&self) -> Vec<ImageSummary> {
        let index = lock(&self.inner.index);
        let mut by_digest: BTreeMap<&str, ImageSummary> = BTreeMap::new();
        for (name, record) in &index.images {
            let summary = by_digest
                .entry(&record.digest)
                .or_insert_with(|| ImageSummary {
                    references: Vec::new(),
                    digest: record.digest.clone(),
                    size_bytes: record.size_bytes,
                });
            summary.references.push(name.clone());
        }
        by_digest.into_values().collect()
    }

    /// Makes `reference` available according to `policy` (the kubelet's image pull).
    pub async fn ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
        auth: Option<&RegistryAuth>,
    ) -> Result<Image, ImageError> {
        let name = normalize_reference(reference)?;
        match policy {
            PullPolicy::Never => {
                return self.get(&name).ok_or_else(|| {
                    ImageError::NeverPull(format!(
                        "container image {name:?} is not present with pull policy of Never"
                    ))
                })
            }
            PullPolicy::IfNotPresent => {
                if let Some(image) = self.get(&name) {
                    return Ok(image);
                }
            }
            PullPolicy::Always => {}
        }
        self.shared_pull(name, auth.cloned()).await
    }

    /// Joins the pull of `name` in progress, or starts one. The pull runs as its own task, so
    /// a caller that gives up does not cancel it for the others.
    fn shared_pull(
        &self,
        name: String,
        auth: Option<RegistryAuth>,
    ) -> impl std::future::Future<Output = Result<Image, ImageError>> {
        let mut pulls = lock(&self.inner.pulls);
        if let Some(pull) = pulls.get(&name) {
            return pull.clone();
        }
        let store = self.clone();
        let key = name.clone();
        let task = tokio::spawn(async move {
            let progress = Arc::new(Progress::default());
            lock(&store.inner.progress).insert(key.clone(), progress.clone());
            let result = store.pull(&key, auth.as_ref(), &progress).await;
            lock(&store.inner.progress).remove(&key);
            lock(&store.inner.pulls).remove(&key);
            result
        });
        let pull = async move {
            task.await
                .unwrap_or_else(|e| Err(ImageError::Pull(format!("pull task failed: {e}"))))
        }
        .boxed()
        .shared();
        pulls.insert(name, pull.clone());
        pull
    }

    async fn pull(
        &self,
        name: &str,
        auth: Option<&RegistryAuth>,
        progress: &Progress,
    ) -> Result<Image, ImageError> {
        let parsed = reference::parse(name)?;
        let remote = RemoteImage::new(name, &parsed.domain, auth, &self.inner.options)?;
        tracing::info!(image = %name, "pulling image");
        let (manifest, manifest_digest) = remote.manifest().await?;
        check_manifest(name, &manifest)?;
        let total = std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .map(|d| d.size.max(0) as u64)
            .sum();
        progress.total.store(total, Ordering::Relaxed);
        let config_bytes = remote
            .blob_bytes(&manifest.config, MANIFEST_BYTES_MAX)
            .await?;
        progress
            .done
            .fetch_add(config_bytes.len() as u64, Ordering::Relaxed);
        let config = layout::parse_config(&config_bytes)?;
        let remote = &remote;
        futures::stream::iter(manifest.layers.clone())
            .map(|layer| async move { self.fetch_layer(remote, &layer, &progress.done).await })
            .buffer_unordered(self.inner.options.pull_concurrency)
            .try_collect::<Vec<()>>()
            .await?;
        let image = self.record(name, record_of(&manifest, manifest_digest, config))?;
        tracing::info!(image = %name, digest = %image.digest, "pulled image");
        Ok(image)
    }

    /// Downloads and unpacks one layer unless it is already unpacked; one fetch per layer at
    /// a time, whichever images share it.
    async fn fetch_layer(
        &self,
        remote: &RemoteImage,
        layer: &Descriptor,
        progress: &AtomicU64,
    ) -> Result<(), ImageError> {
        let guard = {
            let mut locks = lock(&self.inner.layer_locks);
            locks.entry(layer.digest.clone()).or_default().clone()
        };
        let result = {
            let _held = guard.lock().await;
            self.fetch_layer_locked(remote, layer, progress).await
        };
        // Waiters hold their own handle on the lock; the next fetch finds the layer unpacked.
        lock(&self.inner.layer_locks).remove(&layer.digest);
        result
    }

    async fn fetch_layer_locked(
        &self,
        remote: &RemoteImage,
        layer: &Descriptor,
        progress: &AtomicU64,
    ) -> Result<(), ImageError> {
        let have = || progress.fetch_add(layer.size.max(0) as u64, Ordering::Relaxed);
        if self.layer_dir(&layer.digest)?.is_dir() {
            have();
            return Ok(());
        }
        let blob = self.blobs_dir().join(digest::sha256_hex(&layer.digest)?);
        if blob.is_file() {
            have();
        } else {
            remote
                .blob_to_file(layer, &self.blobs_dir(), LAYER_BYTES_MAX, progress)
                .await?;
        }
        let store = self.clone();
        let layer_digest = layer.digest.clone();
        tokio::task::spawn_blocking(move || store.unpack_blob(&layer_digest))
            .await
            .map_err(blocking_error)?
    }

    /// Unpacks the stored blob `layer_digest` into `layers/<hex>` through a temporary
    /// directory. A blob that does not unpack is deleted.
    fn unpack_blob(&self, layer_digest: &str) -> Result<(), ImageError> {
        use std::os::unix::fs::PermissionsExt;
        let layer_dir = self.layer_dir(layer_digest)?;
        if layer_dir.is_dir() {
            return Ok(());
        }
        let blob = self.blobs_dir().join(digest::sha256_hex(layer_digest)?);
        let layers = self.inner.dir.join("layers");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&layers)
            .map_err(|e| ImageError::io(layers.display(), e))?;
        let file = fs::File::open(&blob).map_err(|e| ImageError::io(blob.display(), e))?;
        if let Err(e) = unpack_layer(file, tmp.path()) {
            if matches!(e, ImageError::Corrupt(_)) {
                let _ = fs::remove_file(&blob);
            }
            return Err(e);
        }
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| ImageError::io(tmp.path().display(), e))?;
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &layer_dir) {
            // Someone else unpacked the same layer first: theirs is as good.
            let _ = fs::remove_dir_all(&tmp);
            if !layer_dir.is_dir() {
                return Err(ImageError::io(layer_dir.display(), e));
            }
        }
        Ok(())
    }

    /// Imports every image of an OCI layout directory; returns the references imported.
    fn import_layout(&self, dir: &Path) -> Result<Vec<String>, ImageError> {
        let mut imported = Vec::new();
        for image in layout::read_layout(dir)? {
            let Some(raw_name) = image.name.as_deref() else {
                tracing::warn!(digest = %image.manifest_digest, "image without a name in the archive; skipped");
                continue;
            };
            let name = match normalize_reference(raw_name) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(name = %raw_name, error = %e, "image with an invalid name in the archive; skipped");
                    continue;
                }
            };
            check_manifest(&name, &image.manifest)?;
            let config_bytes = layout::read_blob(dir, &image.manifest.config, MANIFEST_BYTES_MAX)?;
            let config = layout::parse_config(&config_bytes)?;
            for layer in &image.manifest.layers {
                if self.layer_dir(&layer.digest)?.is_dir() {
                    continue;
                }
                let hex = digest::sha256_hex(&layer.digest)?;
                let source = dir.join("blobs/sha256").join(hex);
                let file =
                    fs::File::open(&source).map_err(|e| ImageError::io(source.display(), e))?;
                digest::copy_verified(file, &self.blobs_dir(), &layer.digest, LAYER_BYTES_MAX)?;
                self.unpack_blob(&layer.digest)?;
            }
            self.record(
                &name,
                record_of(&image.manifest, image.manifest_digest.clone(), config),
            )?;
            tracing::info!(image = %name, "imported image");
            imported.push(name);
        }
        Ok(imported)
    }

    fn import_archive_blocking(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let tmp_root = self.inner.dir.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&tmp_root)
            .map_err(|e| ImageError::io(tmp_root.display(), e))?;
        let file = fs::File::open(path).map_err(|e| ImageError::io(path.display(), e))?;
        let mut reader = std::io::BufReader::new(file);
        let gzip = std::io::BufRead::fill_buf(&mut reader)
            .map_err(|e| ImageError::io(path.display(), e))?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn std::io::Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        // tar's own unpack skips entries that would land outside `tmp`.
        tar::Archive::new(reader)
            .unpack(tmp.path())
            .map_err(|e| ImageError::Corrupt(format!("{}: {e}", path.display())))?;
        self.import_layout(tmp.path())
    }

    /// Imports an OCI archive (an OCI image layout in a tar, optionally gzip-compressed, as
    /// `skopeo copy ... oci-archive:F:ref` writes); returns the normalized references
    /// imported, from the `org.opencontainers.image.ref.name` annotations.
    pub async fn import_oci_archive(&self, path: &Path) -> Result<Vec<String>, ImageError> {
        let store = self.clone();
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || store.import_archive_blocking(&path))
            .await
            .map_err(blocking_error)?
    }

    /// Imports every `*.tar`, `*.tar.gz` and `*.tgz` OCI archive of `dir` (the air-gap
    /// directory, as k3s does with `agent/images/`). An archive that fails is logged and
    /// skipped; a missing directory imports nothing.
    pub async fn import_dir(&self, dir: &Path) -> Result<Vec<String>, ImageError> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ImageError::io(dir.display(), e)),
        };
        let mut archives: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                p.is_file()
                    && [".tar", ".tar.gz", ".tgz"]
                        .iter()
                        .any(|ext| name.ends_with(ext))
            })
            .collect();
        archives.sort();
        archives.truncate(IMPORT_DIR_ARCHIVES_MAX);
        let mut imported = Vec::new();
        for archive in archives {
            match self.import_oci_archive(&archive).await {
                Ok(names) => imported.extend(names),
                Err(e) => {
                    tracing::warn!(archive = %archive.display(), error = %e, "cannot import image archive")
                }
            }
        }
        Ok(imported)
    }

    /// Builds [`busybox::BUILTIN_BUSYBOX`] from `/bin/busybox` and imports it, unless the store
    /// has it. `None` when the host has no `/bin/busybox`.
    pub async fn ensure_builtin_busybox(&self) -> Result<Option<String>, ImageError> {
        let busybox_path = Path::new(BUSYBOX_PATH);
        if !busybox_path.is_file() {
            return Ok(None);
        }
        let name = normalize_reference(busybox::BUILTIN_BUSYBOX)?;
        if self.get(&name).is_some() {
            return Ok(Some(name));
        }
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let tmp_root = store.inner.dir.join("tmp");
            let tmp = tempfile::Builder::new()
                .prefix(".tmp-")
                .tempdir_in(&tmp_root)
                .map_err(|e| ImageError::io(tmp_root.display(), e))?;
            busybox::build_busybox_oci_layout(busybox_path, tmp.path(), busybox::BUILTIN_BUSYBOX)?;
            store.import_layout(tmp.path())
        })
        .await
        .map_err(blocking_error)??;
        match self.get(&name) {
            Some(_) => Ok(Some(name)),
            None => Err(ImageError::Corrupt(format!(
                "{name} was built but not imported"
            ))),
        }
    }
}

fn check_manifest(name: &str, manifest: &Manifest) -> Result<(), ImageError> {
    if manifest.layers.len() > IMAGE_LAYERS_MAX {
        return Err(ImageError::Corrupt(format!(
            "{name}: {} layers (limit {IMAGE_LAYERS_MAX})",
            manifest.layers.len()
        )));
    }
    digest::sha256_hex(&manifest.config.digest)?;
    for layer in &manifest.layers {
        digest::sha256_hex(&layer.digest)?;
        if layer.size < 0 || layer.size as u64 > LAYER_BYTES_MAX {
            return Err(ImageError::Corrupt(format!(
                "{name}: layer {} has size {} (limit {LAYER_BYTES_MAX})",
                layer.digest, layer.size
            )));
        }
    }
    Ok(())
}

fn record_of(manifest: &Manifest, digest: String, config: ImageConfig) -> ImageRecord {
    let size_bytes = std::iter::once(&manifest.config)
        .chain(&manifest.layers)
        .map(|d| d.size.max(0) as u64)
        .sum();
    ImageRecord {
        digest,
        config_digest: manifest.config.digest.clone(),
        layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
        size_bytes,
        config,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busybox_layout(dir: &Path) {
        assert!(
            Path::new(BUSYBOX_PATH).is_file(),
            "{BUSYBOX_PATH} is missing: install Debian's busybox-static"
        );
        busybox::build_busybox_oci_layout(Path::new(BUSYBOX_PATH), dir, "x.io/bb:1").unwrap();
    }

    #[test]
    fn a_tampered_layer_is_refused_and_not_kept() {
        let layout_dir = tempfile::tempdir().unwrap();
        busybox_layout(layout_dir.path());
        let image = layout::read_layout(layout_dir.path()).unwrap().remove(0);
        let layer = &image.manifest.layers[0];
        let hex = digest::sha256_hex(&layer.digest).unwrap();
        let blob = layout_dir.path().join("blobs/sha256").join(hex);
        let mut bytes = fs::read(&blob).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&blob, bytes).unwrap();

        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
        let err = store.import_layout(layout_dir.path()).unwrap_err();
        assert!(matches!(err, ImageError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("digest mismatch"), "{err}");
        assert_eq!(fs::read_dir(store.blobs_dir()).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(store_dir.path().join("layers"))
                .unwrap()
                .count(),
            0
        );
        assert!(store.get("x.io/bb:1").is_none());
    }

    #[test]
    fn imports_survive_a_reopen_and_an_unpacked_layer_missing_forgets_the_image() {
        let layout_dir = tempfile::tempdir().unwrap();
        busybox_layout(layout_dir.path());
        let store_dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
        assert_eq!(
            store.import_layout(layout_dir.path()).unwrap(),
            vec!["x.io/bb:1"]
        );
        let image = store.get("x.io/bb:1").unwrap();
        assert_eq!(image.config.cmd, vec!["sh"]);
        drop(store);

        let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
        assert_eq!(store.get("x.io/bb:1"), Some(image.clone()));
        drop(store);

        fs::remove_dir_all(&image.layers[0]).unwrap();
        let store = ImageStore::open(store_dir.path(), ImageOptions::default()).unwrap();
        assert!(store.get("x.io/bb:1").is_none());
        assert!(store.list().is_empty());
    }
}
