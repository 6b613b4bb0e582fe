//! Pulling from a registry with oci-client: the manifest (indexes resolved to linux/amd64),
//! the config and layer blobs (streamed to disk, size-bounded and digest-checked), and error
//! messages that carry the registry's own words.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt;

use super::digest::{self, Hasher};
use super::layout::{Descriptor, Manifest};
use super::{ImageError, ImageOptions, RegistryAuth, MANIFEST_BYTES_MAX};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One image on one registry, with the credentials to pull it.
pub(crate) struct RemoteImage {
    client: Client,
    reference: Reference,
    auth: OciAuth,
    /// The normalized reference, for messages.
    name: String,
}

/// Whether `domain` (`host[:port]`) is pulled over plain HTTP.
pub(crate) fn is_insecure(domain: &str, options: &ImageOptions) -> bool {
    let host = match domain.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => domain,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
        || options.insecure_registries.iter().any(|r| r == domain)
}

/// The error chain as one line: reqwest's own message is "error sending request", and the
/// useful part ("Connection refused") is in its sources.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// A person-readable message for a failed pull of `name`.
pub(crate) fn pull_error(name: &str, e: OciDistributionError) -> ImageError {
    let message = match &e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|err| {
                let code = serde_json::to_value(&err.code)
                    .ok()
                    .and_then(|v| v.as_str().map(|s| s.to_lowercase().replace('_', " ")))
                    .unwrap_or_else(|| "error".to_string());
                format!("{code}: {}", err.message)
            })
            .collect::<Vec<_>>()
            .join("; "),
        OciDistributionError::ServerError { code, message, .. } => {
            format!("registry answered {code}: {}", message.trim())
        }
        OciDistributionError::UnauthorizedError { .. } => {
            "unauthorized: authentication required".to_string()
        }
        OciDistributionError::AuthenticationFailure(m) => format!("authentication failed: {m}"),
        OciDistributionError::ImageManifestNotFoundError(m) => m.clone(),
        _ => chain(&e),
    };
    ImageError::Pull(format!("{name}: {message}"))
}

impl RemoteImage {
    pub(crate) fn new(
        name: &str,
        domain: &str,
        auth: Option<&RegistryAuth>,
        options: &ImageOptions,
    ) -> Result<RemoteImage, ImageError> {
        let reference: Reference = name
            .parse()
            .map_err(|e| ImageError::InvalidReference(format!("{name:?}: {e}")))?;
        let protocol = if is_insecure(domain, options) {
            ClientProtocol::HttpsExcept(vec![domain.to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            ..Default::default()
        };
        let client = Client::try_from(config)
            .map_err(|e| ImageError::Pull(format!("{name}: building the registry client: {e}")))?;
        let auth = match auth {
            Some(a) => OciAuth::Basic(a.username.clone(), a.password.clone()),
            None => OciAuth::Anonymous,
        };
        Ok(RemoteImage {
            client,
            reference,
            auth,
            name: name.to_string(),
        })
    }

    fn error(&self, e: OciDistributionError) -> ImageError {
        pull_error(&self.name, e)
    }

    /// The image manifest (for an index, the linux/amd64 one) and its digest.
    pub(crate) async fn manifest(&self) -> Result<(Manifest, String), ImageError> {
        let (manifest, digest) = self
            .client
            .pull_image_manifest(&self.reference, &self.auth)
            .await
            .map_err(|e| self.error(e))?;
        // Round-trip through JSON into the store's own manifest type.
        let json = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Corrupt(format!("{}: manifest: {e}", self.name)))?;
        if json.len() as u64 > MANIFEST_BYTES_MAX {
            return Err(ImageError::Corrupt(format!(
                "{}: manifest too large",
                self.name
            )));
        }
        let manifest = super::layout::parse_manifest(&json)?;
        Ok((manifest, digest))
    }

    fn descriptor(d: &Descriptor) -> oci_client::manifest::OciDescriptor {
        oci_client::manifest::OciDescriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            ..Default::default()
        }
    }

    /// A small blob (the config), whole and checked.
    pub(crate) async fn blob_bytes(
        &self,
        d: &Descriptor,
        bytes_max: u64,
    ) -> Result<Vec<u8>, ImageError> {
        if d.size < 0 || d.size as u64 > bytes_max {
            return Err(ImageError::Corrupt(format!(
                "{}: blob {} has size {} (limit {bytes_max})",
                self.name, d.digest, d.size
            )));
        }
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &Self::descriptor(d))
            .await
            .map_err(|e| self.error(e))?;
        let mut hasher = Hasher::new(bytes_max);
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ImageError::Pull(format!("{}: {}", self.name, chain(&e))))?;
            hasher.update(&chunk)?;
            out.extend_from_slice(&chunk);
        }
        hasher.finish(&d.digest)?;
        Ok(out)
    }

    /// Streams a blob into `blobs_dir/<hex>` through a temporary file: bounded by the
    /// descriptor's size and `bytes_max`, checked against the digest before the rename.
    pub(crate) async fn blob_to_file(
        &self,
        d: &Descriptor,
        blobs_dir: &Path,
        bytes_max: u64,
        progress: &std::sync::atomic::AtomicU64,
    ) -> Result<(), ImageError> {
        let hex = digest::sha256_hex(&d.digest)?;
        if d.size < 0 || d.size as u64 > bytes_max {
            return Err(ImageError::Corrupt(format!(
                "{}: blob {} has size {} (limit {bytes_max})",
                self.name, d.digest, d.size
            )));
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(blobs_dir)
            .map_err(|e| ImageError::io(blobs_dir.display(), e))?;
        let (std_file, tmp_path) = tmp.into_parts();
        let mut file = tokio::fs::File::from_std(std_file);
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &Self::descriptor(d))
            .await
            .map_err(|e| self.error(e))?;
        let mut hasher = Hasher::new(d.size as u64);
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ImageError::Pull(format!("{}: {}", self.name, chain(&e))))?;
            hasher.update(&chunk)?;
            progress.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
            file.write_all(&chunk)
                .await
                .map_err(|e| ImageError::io(tmp_path.display(), e))?;
        }
        hasher.finish(&d.digest)?;
        file.sync_all()
            .await
            .map_err(|e| ImageError::io(tmp_path.display(), e))?;
        let dest = blobs_dir.join(hex);
        tmp_path
            .persist(&dest)
            .map_err(|e| ImageError::io(dest.display(), e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_for_loopback_and_listed_registries() {
        let options = ImageOptions {
            insecure_registries: vec!["reg.lan:5000".to_string()],
            pull_concurrency: 1,
        };
        for (domain, expected) in [
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:41234", true),
            ("reg.lan:5000", true),
            ("reg.lan", false),
            ("docker.io", false),
            ("127.0.0.1.example.com", false),
        ] {
            assert_eq!(is_insecure(domain, &options), expected, "{domain}");
        }
    }
}
