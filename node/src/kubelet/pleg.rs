//! The pod lifecycle event generator, as the kubelet's PLEG: one task lists the runtime every
//! period and publishes the whole state as a snapshot; pod workers read their pod's part and
//! are woken when the snapshot changes. A worker that has just acted asks for a relist at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Mutex};

use crate::runtime::{ContainerInfo, Runtime, SandboxInfo};

/// Everything the runtime holds, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sandboxes: Vec<SandboxInfo>,
    pub containers: Vec<ContainerInfo>,
}

/// Handle to the relisting; clones share it.
#[derive(Clone)]
pub struct Pleg {
    runtime: Arc<dyn Runtime>,
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
    /// Serializes relists, so a snapshot never replaces a newer one.
    lock: Arc<Mutex<()>>,
}

impl Pleg {
    pub fn new(runtime: Arc<dyn Runtime>) -> Pleg {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Pleg {
            runtime,
            tx: Arc::new(tx),
            lock: Arc::new(Mutex::new(())),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    /// Lists the runtime now and publishes the result if it changed; `false` if the runtime
    /// could not be listed.
    pub async fn relist(&self) -> bool {
        let _guard = self.lock.lock().await;
        match self.runtime.list().await {
            Ok((mut sandboxes, mut containers)) => {
                sandboxes.sort_by(|a, b| a.id.cmp(&b.id));
                containers.sort_by(|a, b| a.id.cmp(&b.id));
                let next = Snapshot {
                    sandboxes,
                    containers,
                };
                self.tx.send_if_modified(|current| {
                    if **current == next {
                        false
                    } else {
                        *current = Arc::new(next);
                        true
                    }
                });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the runtime");
                false
            }
        }
    }

    /// Relists every `period` until `stop`.
    pub async fn run(self, period: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            self.relist().await;
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(period) => {}
            }
        }
    }
}
