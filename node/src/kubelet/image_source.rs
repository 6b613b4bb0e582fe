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
            let policy = match policy {
                "Always" => PullPolicy::Always,
                "IfNotPresent" => PullPolicy::IfNotPresent,
                "Never" => PullPolicy::Never,
                _ => default_pull_policy(reference),
            };
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
            })
        })
    }
}
