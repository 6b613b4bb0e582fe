//! A [`Runtime`] that times every call of the one it wraps, by operation, into the kubelet's
//! runtime series (see `crate::monitoring`). The kubelet wraps whichever runtime it is given.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{
    ContainerConfig, ContainerInfo, ExecOutput, Listing, Runtime, RuntimeError, SandboxConfig,
    SandboxInfo, Usage,
};
use crate::monitoring;

pub struct MeteredRuntime {
    inner: Arc<dyn Runtime>,
}

impl MeteredRuntime {
    pub fn new(inner: Arc<dyn Runtime>) -> MeteredRuntime {
        MeteredRuntime { inner }
    }
}

/// Times `call` as `operation`.
fn timed<'a, T: Send + 'a>(
    operation: &'static str,
    call: impl Future<Output = Result<T, RuntimeError>> + Send + 'a,
) -> BoxFuture<'a, Result<T, RuntimeError>> {
    async move {
        let started = Instant::now();
        let result = call.await;
        monitoring::record_runtime_call(operation, started.elapsed(), result.is_ok());
        result
    }
    .boxed()
}

impl Runtime for MeteredRuntime {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn create_sandbox(
        &self,
        config: &SandboxConfig,
    ) -> BoxFuture<'_, Result<SandboxInfo, RuntimeError>> {
        timed("create_sandbox", self.inner.create_sandbox(config))
    }

    fn remove_sandbox(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        timed("remove_sandbox", self.inner.remove_sandbox(id))
    }

    fn start_container(
        &self,
        sandbox: &SandboxInfo,
        config: &ContainerConfig,
    ) -> BoxFuture<'_, Result<ContainerInfo, RuntimeError>> {
        timed(
            "start_container",
            self.inner.start_container(sandbox, config),
        )
    }

    fn kill(&self, id: &str, signal: i32) -> BoxFuture<'_, Result<(), RuntimeError>> {
        timed("kill", self.inner.kill(id, signal))
    }

    fn remove_container(&self, id: &str) -> BoxFuture<'_, Result<(), RuntimeError>> {
        timed("remove_container", self.inner.remove_container(id))
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, RuntimeError>> {
        timed("list", self.inner.list())
    }

    fn exec(
        &self,
        id: &str,
        args: &[String],
        timeout: Duration,
    ) -> BoxFuture<'_, Result<ExecOutput, RuntimeError>> {
        timed("exec", self.inner.exec(id, args, timeout))
    }

    fn network_ready(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.inner.network_ready()
    }

    fn usage(&self, id: &str) -> BoxFuture<'_, Result<Usage, RuntimeError>> {
        timed("usage", self.inner.usage(id))
    }
}
