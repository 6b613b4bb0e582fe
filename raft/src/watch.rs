//! Watch: every change of a key range from a start revision, in order, with no gap and no
//! duplicate.
//!
//! A watcher registers with the hub under the same lock that publishes each applied write, and
//! notes the revision current at that moment. Changes up to it are replayed from the `revs`
//! index on disk; changes after it arrive live through a bounded buffer. A watcher whose buffer
//! fills is cut off with [`WatchError::Overflowed`]; it never grows memory without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc::{self, error::TrySendError};

use crate::command::{Event, KeyRange, WatchRequest};
use crate::keyspace::{Keyspace, KeyspaceError};

/// The most events one [`WatchStream::next`] returns.
pub(crate) const WATCH_BATCH_EVENTS_MAX: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    #[error("revision {requested} has been compacted (oldest available: {compacted})")]
    Compacted { requested: u64, compacted: u64 },
    #[error(
        "watcher fell {0} events behind and was cut off; watch again from the last revision seen"
    )]
    Overflowed(usize),
    #[error(
        "this member's state was replaced by a snapshot; watch again from the last revision seen"
    )]
    Reset,
    #[error("the store is shutting down")]
    Closed,
    #[error("storage: {0}")]
    Storage(String),
}

impl From<KeyspaceError> for WatchError {
    fn from(e: KeyspaceError) -> Self {
        match e {
            KeyspaceError::Compacted {
                requested,
                compacted,
            } => WatchError::Compacted {
                requested,
                compacted,
            },
            other => WatchError::Storage(other.to_string()),
        }
    }
}

type EndSlot = Arc<Mutex<Option<WatchError>>>;

struct Slot {
    range: KeyRange,
    tx: mpsc::Sender<Arc<Event>>,
    end: EndSlot,
}

/// The registry of live watchers of one member.
pub struct WatchHub {
    buffer_events_max: usize,
    watchers: Mutex<HashMap<u64, Slot>>,
    next_id: Mutex<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the map consistent (every operation on it is a
    // single insert, retain or clear), so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl WatchHub {
    pub fn new(buffer_events_max: usize) -> Self {
        WatchHub {
            buffer_events_max: buffer_events_max.max(1),
            watchers: Mutex::new(HashMap::new()),
            next_id: Mutex::new(0),
        }
    }

    /// Runs `commit` (which makes the write visible) and hands `events` to every watcher whose
    /// range they touch, as one step with respect to [`WatchHub::register`].
    pub fn publish(&self, events: Vec<Event>, commit: impl FnOnce()) {
        let mut watchers = lock(&self.watchers);
        commit();
        if events.is_empty() || watchers.is_empty() {
            return;
        }
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let buffer_events_max = self.buffer_events_max;
        watchers.retain(|_, slot| {
            for event in events.iter().filter(|e| slot.range.contains(&e.kv.key)) {
                match slot.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        *lock(&slot.end) = Some(WatchError::Overflowed(buffer_events_max));
                        return false;
                    }
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Ends every watcher with `error`.
    pub fn end_all(&self, error: WatchError) {
        let mut watchers = lock(&self.watchers);
        for (_, slot) in watchers.drain() {
            *lock(&slot.end) = Some(error.clone());
        }
    }

    /// How many watchers are registered.
    pub fn len(&self) -> usize {
        lock(&self.watchers).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn register(
        &self,
        range: KeyRange,
        current: impl FnOnce() -> u64,
    ) -> (u64, mpsc::Receiver<Arc<Event>>, EndSlot) {
        let (tx, rx) = mpsc::channel(self.buffer_events_max);
        let end: EndSlot = Arc::new(Mutex::new(None));
        let id = {
            let mut next = lock(&self.next_id);
            *next += 1;
            *next
        };
        let mut watchers = lock(&self.watchers);
        let revision = current();
        watchers.insert(
            id,
            Slot {
                range,
                tx,
                end: end.clone(),
            },
        );
        (revision, rx, end)
    }
}

/// One watcher's stream of changes.
pub struct WatchStream {
    keyspace: Arc<Keyspace>,
    range: KeyRange,
    /// The first revision this watcher reports.
    start: u64,
    /// The next revision to replay from disk, while `<= replay_to`.
    next_replay: u64,
    replay_to: u64,
    live: mpsc::Receiver<Arc<Event>>,
    /// A live event received past a full batch, first of the next one.
    pending: Option<Arc<Event>>,
    end: EndSlot,
    ended: bool,
}

impl WatchStream {
    /// Starts watching: `start_revision` 0 means "changes after now".
    pub fn open(keyspace: Arc<Keyspace>, request: WatchRequest) -> Result<Self, WatchError> {
        let (current, live, end) = keyspace
            .hub()
            .register(request.range.clone(), || keyspace.revision());
        let start = if request.start_revision == 0 {
            current + 1
        } else {
            request.start_revision
        };
        let compacted = keyspace.compacted();
        if start < compacted {
            return Err(WatchError::Compacted {
                requested: start,
                compacted,
            });
        }
        Ok(WatchStream {
            keyspace,
            range: request.range,
            start,
            next_replay: start,
            replay_to: current,
            live,
            pending: None,
            end,
            ended: false,
        })
    }

    /// The first revision this watch reports.
    pub fn start_revision(&self) -> u64 {
        self.start
    }

    /// The next changes in revision order; `None` never comes before an error says why the
    /// watch ended, except after that error has been returned.
    pub async fn next(&mut self) -> Option<Result<Vec<Event>, WatchError>> {
        if self.ended {
            return None;
        }
        if self.next_replay <= self.replay_to {
            let page = self.keyspace.events(
                &self.range,
                self.next_replay,
                self.replay_to,
                WATCH_BATCH_EVENTS_MAX,
            );
            return match page {
                Ok((events, next)) => {
                    self.next_replay = next;
                    if events.is_empty() {
                        Box::pin(self.next()).await
                    } else {
                        Some(Ok(events))
                    }
                }
                Err(e) => {
                    self.ended = true;
                    Some(Err(e.into()))
                }
            };
        }
        let first = match self.pending.take() {
            Some(event) => event,
            None => match self.live.recv().await {
                Some(event) => event,
                None => {
                    self.ended = true;
                    let error = lock(&self.end).clone().unwrap_or(WatchError::Closed);
                    return Some(Err(error));
                }
            },
        };
        let mut events: Vec<Event> = Vec::new();
        let mut last_revision = first.kv.mod_revision;
        if first.kv.mod_revision >= self.start {
            events.push(Arc::unwrap_or_clone(first));
        }
        while let Ok(event) = self.live.try_recv() {
            // Past the batch size, stop at a revision boundary: a transaction's changes are
            // never split across batches, so a watcher can resume after any batch's revision.
            if events.len() >= WATCH_BATCH_EVENTS_MAX && event.kv.mod_revision != last_revision {
                self.pending = Some(event);
                break;
            }
            last_revision = event.kv.mod_revision;
            if event.kv.mod_revision >= self.start {
                events.push(Arc::unwrap_or_clone(event));
            }
        }
        if events.is_empty() {
            return Box::pin(self.next()).await;
        }
        Some(Ok(events))
    }
}
