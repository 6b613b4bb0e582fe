//! The node's image store as the kubelet's [`Images`]: a container's `imagePullPolicy`
//! (or Kubernetes' default for its reference) decides whether to pull.

use futures::future::BoxFuture;

use super::{Images, ResolvedImage};
use crate::images::{default_pull_policy, ImageStore, PullPolicy};

impl Images for ImageStore {
    fn ensure<'a>(
        &'a self,
        reference: &'a str,
        policy: &'a str,
    ) -> BoxFuture<'a, Result<ResolvedImage, String>> {
        Box::pin(async move {
            let policy = pull_policy(reference, policy);
            let image = ImageStore::ensure(self, reference, policy, None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(ResolvedImage {
                id: image.digest,
                layers: image.layers,
                entrypoint: image.config.entrypoint,
                cmd: image.config.cmd,
                env: image.config.env,
                working_dir: image.config.working_dir,
                user: image.config.user,
                size_bytes: image.size_bytes,
            })
        })
    }

    fn will_pull(&self, reference: &str, policy: &str) -> bool {
        ImageStore::will_pull(self, reference, pull_policy(reference, policy))
    }

    fn pull_progress(&self, reference: &str) -> Option<(u64, u64)> {
        ImageStore::pull_progress(self, reference).map(|p| (p.done_bytes, p.total_bytes))
    }
}

/// The container's `imagePullPolicy`, or Kubernetes' default for the reference.
fn pull_policy(reference: &str, policy: &str) -> PullPolicy {
    match policy {
        "Always" => PullPolicy::Always,
        "IfNotPresent" => PullPolicy::IfNotPresent,
        "Never" => PullPolicy::Never,
        _ => default_pull_policy(reference),
    }
}
