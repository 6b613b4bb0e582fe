//! A controller's work queue, as client-go's: a key is queued at most once, is handed to one
//! worker at a time (a key added while it is processed comes back once processing is done),
//! and failed keys are retried after a per-key exponential back-off.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// The first retry delay of a failing key.
const RETRY_DELAY_BASE: Duration = Duration::from_millis(20);
/// The longest retry delay.
const RETRY_DELAY_MAX: Duration = Duration::from_secs(30);
/// Gauge by `queue`: keys waiting to be processed.
const DEPTH: &str = "keelson_workqueue_depth";
/// Counter by `controller` (the queue's name): reconciles that failed and were retried.
const RECONCILE_ERRORS: &str = "keelson_controller_reconcile_errors_total";

/// Pure back-off: the delay before retry number `failures` (1-based).
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    RETRY_DELAY_BASE
        .saturating_mul(1u32 << exponent)
        .min(RETRY_DELAY_MAX)
}

struct State<K> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    /// Keys added again while processing.
    dirty: HashSet<K>,
    /// Keys waiting for a delayed add.
    delayed: HashSet<K>,
    failures: HashMap<K, u32>,
    shut_down: bool,
}

/// A deduplicating, bounded work queue; clones share it.
pub struct WorkQueue<K> {
    state: Arc<Mutex<State<K>>>,
    ready: Arc<Notify>,
    keys_max: usize,
    name: &'static str,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            state: self.state.clone(),
            ready: self.ready.clone(),
            keys_max: self.keys_max,
            name: self.name,
        }
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// A queue holding at most `keys_max` distinct keys; `name` labels its metrics.
    pub fn new(name: &'static str, keys_max: usize) -> Self {
        // Present from the start, so a scrape shows every controller's queue and error count.
        metrics::gauge!(DEPTH, "queue" => name).set(0.0);
        metrics::counter!(RECONCILE_ERRORS, "controller" => name).increment(0);
        WorkQueue {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: HashSet::new(),
                failures: HashMap::new(),
                shut_down: false,
            })),
            ready: Arc::new(Notify::new()),
            keys_max,
            name,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` unless it is queued already; returns false if the queue is full (the key
    /// is dropped: controllers resync periodically, so it is seen again).
    pub fn add(&self, key: K) -> bool {
        let mut state = self.lock();
        if state.shut_down || state.queued.contains(&key) {
            return true;
        }
        if state.processing.contains(&key) {
            state.dirty.insert(key);
            return true;
        }
        if state.queued.len() >= self.keys_max {
            drop(state);
            metrics::counter!("keelson_workqueue_dropped_total", "queue" => self.name).increment(1);
            return false;
        }
        state.queued.insert(key.clone());
        state.queue.push_back(key);
        let depth = state.queue.len();
        drop(state);
        metrics::gauge!(DEPTH, "queue" => self.name).set(depth as f64);
        self.ready.notify_one();
        true
    }

    /// Queues `key` after `delay` (once, however often it is asked meanwhile).
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        {
            let mut state = self.lock();
            if state.shut_down || !state.delayed.insert(key.clone()) {
                return;
            }
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.lock().delayed.remove(&key);
            queue.add(key);
        });
    }

    /// Retries `key` after its back-off; returns the number of failures so far.
    pub fn retry(&self, key: K) -> u32 {
        let failures = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            *failures = failures.saturating_add(1);
            *failures
        };
        metrics::counter!("keelson_workqueue_retries_total", "queue" => self.name).increment(1);
        // Every caller retries a key because its reconcile failed.
        metrics::counter!(RECONCILE_ERRORS, "controller" => self.name).increment(1);
        self.add_after(key, retry_delay(failures));
        failures
    }

    /// Forgets `key`'s failures (after it succeeded).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// The next key to process, waiting for one; `None` after [`WorkQueue::shut_down`].
    /// Call [`WorkQueue::done`] when finished with it.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if state.shut_down {
                    return None;
                }
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.processing.insert(key.clone());
                    let depth = state.queue.len();
                    drop(state);
                    metrics::gauge!(DEPTH, "queue" => self.name).set(depth as f64);
                    let more = depth > 0;
                    if more {
                        self.ready.notify_one();
                    }
                    return Some(key);
                }
            }
            notified.await;
        }
    }

    /// Marks `key` processed; if it was added meanwhile it is queued again.
    pub fn done(&self, key: &K) {
        let again = {
            let mut state = self.lock();
            state.processing.remove(key);
            state.dirty.remove(key)
        };
        if again {
            self.add(key.clone());
        }
    }

    /// Stops handing out keys; waiting workers get `None`.
    pub fn shut_down(&self) {
        self.lock().shut_down = true;
        self.ready.notify_waiters();
    }

    /// Keys waiting to be processed.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_requeued_when_added_during_processing() {
        let queue = WorkQueue::new("test", 10);
        queue.add("a");
        queue.add("a");
        queue.add("b");
        assert_eq!(queue.len(), 2);
        let first = queue.next().await.unwrap();
        assert_eq!(first, "a");
        queue.add("a");
        assert_eq!(queue.len(), 1, "a key in processing is not queued twice");
        queue.done(&first);
        assert_eq!(queue.len(), 2, "a key added during processing comes back");
        assert_eq!(queue.next().await.unwrap(), "b");
        assert_eq!(queue.next().await.unwrap(), "a");
    }

    #[tokio::test]
    async fn a_full_queue_drops_new_keys() {
        let queue = WorkQueue::new("test", 2);
        assert!(queue.add(1));
        assert!(queue.add(2));
        assert!(!queue.add(3));
        assert!(queue.add(1), "an already queued key is not refused");
    }

    #[tokio::test]
    async fn shut_down_wakes_waiting_workers() {
        let queue: WorkQueue<u32> = WorkQueue::new("test", 2);
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        queue.shut_down();
        assert_eq!(waiter.await.unwrap(), None);
    }

    #[tokio::test]
    async fn retries_back_off_and_arrive() {
        let queue = WorkQueue::new("test", 2);
        assert_eq!(queue.retry("k"), 1);
        assert!(queue.is_empty(), "a retry waits for its back-off");
        let key = tokio::time::timeout(Duration::from_secs(2), queue.next())
            .await
            .unwrap();
        assert_eq!(key, Some("k"));
    }

    #[test]
    fn retry_delay_doubles_up_to_the_limit() {
        assert_eq!(retry_delay(1), RETRY_DELAY_BASE);
        assert_eq!(retry_delay(2), RETRY_DELAY_BASE * 2);
        assert_eq!(retry_delay(100), RETRY_DELAY_MAX);
    }
}
