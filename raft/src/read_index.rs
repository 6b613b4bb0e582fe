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

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{LogId, Raft};
use tokio::sync::oneshot;

use crate::types::{Member, MemberId, TypeConfig};

/// What a round tells its readers: the read log id, or why leadership could not be confirmed.
pub(crate) type Confirmed =
    Result<Option<LogId<MemberId>>, RaftError<MemberId, CheckIsLeaderError<MemberId, Member>>>;

/// One leadership confirmation. Raft's is the real one; the unit tests hold a round open to see
/// who joins it.
pub(crate) trait Round: Send + Sync + 'static {
    fn confirm(&self) -> impl Future<Output = Confirmed> + Send;
}

impl Round for Raft<TypeConfig> {
    async fn confirm(&self) -> Confirmed {
        self.ensure_linearizable().await
    }
}

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
pub(crate) struct ReadIndex<R = Raft<TypeConfig>> {
    round: R,
    /// How long one round may take before its readers are told to try again.
    round_max: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: bool,
    waiting: Vec<oneshot::Sender<Confirmed>>,
}

impl<R: Round> ReadIndex<R> {
    pub(crate) fn new(round: R, round_max: Duration) -> Arc<ReadIndex<R>> {
        Arc::new(ReadIndex {
            round,
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
            let round = tokio::time::timeout(self.round_max, self.round.confirm());
            // Timed out: the readers' senders are dropped, and each of them tries again.
            if let Ok(confirmed) = round.await {
                for reader in readers {
                    let _ = reader.send(confirmed.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Semaphore;

    /// Rounds that each wait for a permit, so a test decides when one ends.
    struct Gated {
        started: AtomicUsize,
        permits: Arc<Semaphore>,
    }

    impl Gated {
        /// No round ends until the test adds a permit.
        fn closed() -> Arc<Gated> {
            Arc::new(Gated {
                started: AtomicUsize::new(0),
                permits: Arc::new(Semaphore::new(0)),
            })
        }
    }

    impl Round for Arc<Gated> {
        async fn confirm(&self) -> Confirmed {
            let round = self.started.fetch_add(1, Ordering::SeqCst) as u64;
            self.permits.acquire().await.expect("open").forget();
            Ok(Some(LogId::new(
                openraft::CommittedLeaderId::new(1, 0),
                round,
            )))
        }
    }

    async fn until(what: impl Fn() -> bool) {
        for _ in 0..1_000 {
            if what() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("condition not reached within 1 s");
    }

    #[tokio::test]
    async fn readers_that_arrive_during_a_round_share_the_next_one_and_never_the_running_one() {
        let gated = Gated::closed();
        let reads = ReadIndex::new(gated.clone(), Duration::from_secs(10));
        let first = tokio::spawn({
            let reads = reads.clone();
            async move { reads.confirm().await }
        });
        until(|| gated.started.load(Ordering::SeqCst) == 1).await;
        // Round 0 runs; these 100 arrive after it started, so none may take its answer.
        let later: Vec<_> = (0..100)
            .map(|_| {
                let reads = reads.clone();
                tokio::spawn(async move { reads.confirm().await })
            })
            .collect();
        until(|| reads.lock().waiting.len() == 100).await;
        gated.permits.add_permits(1);
        let round_of = |answer: Result<Confirmed, NotConfirmed>| {
            answer
                .expect("confirmed")
                .expect("leader")
                .expect("log id")
                .index
        };
        assert_eq!(round_of(first.await.expect("reader")), 0);
        until(|| gated.started.load(Ordering::SeqCst) == 2).await;
        gated.permits.add_permits(1);
        for reader in later {
            assert_eq!(round_of(reader.await.expect("reader")), 1);
        }
        assert_eq!(
            gated.started.load(Ordering::SeqCst),
            2,
            "one round for all 100"
        );
        // The task ends when nobody waits; the next reader starts a round of its own.
        until(|| !reads.lock().running).await;
        gated.permits.add_permits(1);
        assert_eq!(round_of(reads.confirm().await), 2);
    }

    #[tokio::test]
    async fn a_round_over_its_limit_sends_its_readers_to_try_again() {
        let gated = Gated::closed();
        let reads = ReadIndex::new(gated.clone(), Duration::from_millis(20));
        assert!(matches!(
            reads.confirm().await,
            Err(NotConfirmed::Abandoned)
        ));
    }
}
