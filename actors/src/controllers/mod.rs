//! The controllers of the controller manager, each a level-triggered reconcile core wrapped by
//! a thin loop over shared informers and a work queue.

pub(crate) mod cidr;
pub(crate) mod deployment;
pub(crate) mod endpoints;
pub(crate) mod event_ttl;
pub(crate) mod gc;
pub(crate) mod namespace;
pub(crate) mod node;
pub(crate) mod replication;
pub(crate) mod serviceaccounts;

use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::informer::{Change, Informer};
use crate::supervisor::StopSignal;
use crate::workqueue::WorkQueue;

/// Keys a controller's queue holds at most.
pub(crate) const QUEUE_KEYS_MAX: usize = 100_000;
/// Failures of one key before it is dropped until its next change or resync.
pub(crate) const KEY_RETRIES_MAX: u32 = 15;
/// How often every key is looked at again without a change.
pub(crate) const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// What a reconcile asks of its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeue {
    /// Wait for a change.
    Done,
    /// Look again after this long.
    After(Duration),
}

/// Forwards each change of `informer` to `queue` as the keys `keys_of` picks, until the
/// informer stops. `Resynced` is passed on so the mapping can queue everything.
pub(crate) fn feed<K, F>(informer: &Informer, queue: &WorkQueue<K>, keys_of: F) -> JoinHandle<()>
where
    K: Clone + Eq + Hash + Send + 'static,
    F: Fn(&Change) -> Vec<K> + Send + 'static,
{
    let mut changes = informer.subscribe();
    let queue = queue.clone();
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            for key in keys_of(&change) {
                queue.add(key);
            }
        }
    })
}

/// Runs `reconcile` on queued keys until `stop`; `resync` queues every key now and then.
/// Failed keys are retried with back-off, at most [`KEY_RETRIES_MAX`] times in a row.
pub(crate) async fn work<K, R, Fut, S>(
    name: &'static str,
    queue: WorkQueue<K>,
    feeders: Vec<JoinHandle<()>>,
    stop: &mut StopSignal,
    resync: S,
    mut reconcile: R,
) where
    K: Clone + Eq + Hash + Send + std::fmt::Debug + 'static,
    R: FnMut(K) -> Fut,
    Fut: Future<Output = anyhow::Result<Requeue>>,
    S: Fn(&WorkQueue<K>),
{
    resync(&queue);
    tracing::info!(
        controller = name,
        queued = queue.len(),
        "synced; reconciling"
    );
    let mut ticker = tokio::time::interval(RESYNC_INTERVAL);
    ticker.tick().await;
    loop {
        let key = tokio::select! {
            _ = stop.stopped() => break,
            _ = ticker.tick() => { resync(&queue); continue; }
            key = queue.next() => match key { Some(key) => key, None => break },
        };
        let outcome = tokio::select! {
            _ = stop.stopped() => { queue.done(&key); break; }
            outcome = reconcile(key.clone()) => outcome,
        };
        match outcome {
            Ok(Requeue::Done) => queue.forget(&key),
            Ok(Requeue::After(delay)) => {
                queue.forget(&key);
                queue.add_after(key.clone(), delay);
            }
            Err(e) => {
                let failures = queue.retry(key.clone());
                if failures >= KEY_RETRIES_MAX {
                    tracing::warn!(controller = name, ?key, error = %e, "giving up on a key until it changes");
                    queue.forget(&key);
                } else {
                    tracing::debug!(controller = name, ?key, error = %e, "reconcile failed; retrying");
                }
            }
        }
        queue.done(&key);
    }
    queue.shut_down();
    for feeder in feeders {
        feeder.abort();
    }
}
