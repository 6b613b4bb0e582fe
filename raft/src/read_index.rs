//! Shared read-index rounds: linearizable reads that arrive at a member together wait for one
//! leadership confirmation (openraft's `ensure_linearizable`: a heartbeat answered by a quorum,
//! then the state machine applied up to the leader's commit index) instead of one round each.
//! With 64 concurrent readers that was 64 heartbeat rounds to every follower for what one round
//! proves.
//!
//! A reader only ever joins a round that starts after it arrived: it queues, and the task
//! running rounds takes the whole queue just before it starts the next one. So every read still
//! sees every write acknowledged before the read began, exactly as with a round of its own.
//! There is no timer: a lone reader starts a round at once.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{LogId, Raft};
use tokio::sync::oneshot;

use crate::types::{Member, MemberId, TypeConfig};

/// What a round tells its readers: the read log id, or why leadership could not be confirmed.
pub(crate) type Confirmed =
    Result<Option<LogId<MemberId>>, RaftError<MemberId, CheckIsLeaderError<MemberId, Member>>>;

/// Readers that may wait for the next round at once; beyond, a read is turned away (the API and
/// the peer service bound the requests in flight far below this).
const READERS_WAITING_MAX: usize = 65_536;

/// Why a reader got no confirmation.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotConfirmed {
    /// Too many readers wait already.
    Busy,
    /// The round gave up (it took longer than the round limit) or its task ended: try again.
    Abandoned,
}

/// The queue of readers waiting for a round, and whether a task runs rounds. Cheap to share.
pub(crate) struct ReadIndex {
    raft: Raft<TypeConfig>,
    /// How long one round may take before its readers are told to try again.
    round_max: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: bool,
    waiting: Vec<oneshot::Sender<Confirmed>>,
}

impl ReadIndex {
    pub(crate) fn new(raft: Raft<TypeConfig>, round_max: Duration) -> Arc<ReadIndex> {
        Arc::new(ReadIndex {
            raft,
            round_max,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a leadership confirmation that started after this call, and for this member's
    /// state machine to have applied everything committed before it.
    pub(crate) async fn confirm(self: &Arc<Self>) -> Result<Confirmed, NotConfirmed> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            if state.waiting.len() >= READERS_WAITING_MAX {
                return Err(NotConfirmed::Busy);
            }
            state.waiting.push(reply);
            !std::mem::replace(&mut state.running, true)
        };
        metrics::counter!(crate::metrics::LINEARIZABLE_READS).increment(1);
        if start {
            tokio::spawn(self.clone().rounds());
        }
        answer.await.map_err(|_| NotConfirmed::Abandoned)
    }

    /// Runs rounds while readers wait, each for everyone queued before it started.
    async fn rounds(self: Arc<Self>) {
        loop {
            let readers = {
                let mut state = self.lock();
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            metrics::counter!(crate::metrics::READ_INDEX_ROUNDS).increment(1);
            let round = tokio::time::timeout(self.round_max, self.raft.ensure_linearizable());
            // Timed out: the readers' senders are dropped, and each of them tries again.
            if let Ok(confirmed) = round.await {
                for reader in readers {
                    let _ = reader.send(confirmed.clone());
                }
            }
        }
    }
}
