//! Proposal batching: the transactions a member is asked to run concurrently are combined into
//! one [`Command::Batch`] log entry, so that Raft's per-entry costs (an append, a log sync, a
//! replication message, an apply and its disk write) are paid once for all of them.
//!
//! Callers queue a transaction and wait for its answer. One task per member takes the first
//! queued transaction and every other one already waiting (up to [`BATCH_TXNS_MAX`] and
//! [`BATCH_BYTES_MAX`]) and proposes them as one batch; at most [`BATCHES_IN_FLIGHT_MAX`]
//! batches are in flight. There is no timer: under light load a batch holds one transaction
//! and goes at once; under load, transactions queue while batches are in flight and the next
//! batch takes them all.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::command::{
    validate_batch, Command, CommandResponse, Txn, BATCH_BYTES_MAX, BATCH_TXNS_MAX,
};
use crate::error::StoreError;

/// How many transactions may wait for a batch before callers wait to queue theirs.
pub(crate) const PROPOSAL_QUEUE_TXNS_MAX: usize = 4096;
/// How many batches may be proposed and not yet answered at once.
///
/// Few: openraft 0.9 keeps one AppendEntries in flight per follower, so entries proposed while
/// one is out all ride the next one anyway, and every extra entry costs the leader and the
/// followers an append, a log sync, a replication message and an apply. Measured with
/// `store-bench` at 64 clients (docs/benchmarks.md): 8 in flight ~4,000 writes/s, 4 ~5,500,
/// 2 and 1 ~6,000-6,500 (within noise of each other). 2 rather than 1, so that one slow batch
/// (a forward that waits, a large transaction) does not hold every write of the member.
pub(crate) const BATCHES_IN_FLIGHT_MAX: usize = 2;

/// The answer to one transaction: what the state machine answered for it, or why its outcome
/// is not known or it was not applied.
pub(crate) type Answer = Result<CommandResponse, StoreError>;

/// One caller's transaction, waiting for a batch.
pub(crate) struct Proposal {
    txn: Txn,
    /// When the caller stops waiting for the transaction to commit.
    deadline: Instant,
    reply: oneshot::Sender<Answer>,
}

/// Where callers queue transactions. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Proposer {
    queue: mpsc::Sender<Proposal>,
}

/// The receiving end of the queue, for [`run`].
pub(crate) struct ProposalQueue {
    queue: mpsc::Receiver<Proposal>,
}

impl Proposer {
    pub(crate) fn new() -> (Proposer, ProposalQueue) {
        let (tx, rx) = mpsc::channel(PROPOSAL_QUEUE_TXNS_MAX);
        (Proposer { queue: tx }, ProposalQueue { queue: rx })
    }

    /// Queues `txn` (already validated) for the next batch and waits for its answer.
    pub(crate) async fn propose(&self, txn: Txn, deadline: Instant) -> Answer {
        let (reply, answer) = oneshot::channel();
        let proposal = Proposal {
            txn,
            deadline,
            reply,
        };
        if self.queue.send(proposal).await.is_err() {
            return Err(StoreError::Shutdown);
        }
        // The proposer task and the task of each batch in flight answer every proposal they
        // take; a dropped sender means the member stopped before proposing it.
        answer.await.unwrap_or(Err(StoreError::Shutdown))
    }
}

/// Takes proposals from `queue` and proposes them in batches with `write`, which replicates
/// a command through the leader before the deadline it is given and returns what applying it
/// answered. Runs until the queue closes (or the task is aborted at shutdown).
pub(crate) async fn run<W, F>(mut queue: ProposalQueue, write: W)
where
    W: Fn(Command, Instant) -> F,
    F: Future<Output = Answer> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    let mut carried = None;
    loop {
        // Wait for a free slot before taking proposals, so that while every slot is busy
        // proposals gather in the queue and the next batch takes them all.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(proposal) => proposal,
            None => match queue.queue.recv().await {
                Some(proposal) => proposal,
                None => return,
            },
        };
        let (batch, rest) = fill(first, || queue.queue.try_recv().ok());
        carried = rest;
        let Some(batch) = Batch::split(batch, Instant::now()) else {
            continue;
        };
        let future = write(Command::Batch(batch.txns), batch.deadline);
        let replies = batch.replies;
        tokio::spawn(async move {
            let answers = answers(future.await, replies.len());
            drop(permit);
            for (reply, answer) in replies.into_iter().zip(answers) {
                // A caller that stopped waiting does not want the answer.
                let _ = reply.send(answer);
            }
        });
    }
}

/// The transactions of one batch, ready to propose, and where their answers go.
struct Batch {
    txns: Vec<Txn>,
    replies: Vec<oneshot::Sender<Answer>>,
    /// The earliest deadline of its callers: no caller waits longer than it asked.
    deadline: Instant,
}

impl Batch {
    /// Splits proposals into a batch. Proposals whose deadline passed while they waited in the
    /// queue are answered at once (they were never proposed); `None` if none is left.
    fn split(proposals: Vec<Proposal>, now: Instant) -> Option<Batch> {
        let mut txns = Vec::with_capacity(proposals.len());
        let mut replies = Vec::with_capacity(proposals.len());
        let mut deadline: Option<Instant> = None;
        for proposal in proposals {
            if proposal.deadline <= now {
                let _ = proposal.reply.send(Err(StoreError::NoLeader(
                    "the write waited for its turn past its deadline; it was not applied"
                        .to_string(),
                )));
                continue;
            }
            deadline = Some(deadline.map_or(proposal.deadline, |d| d.min(proposal.deadline)));
            txns.push(proposal.txn);
            replies.push(proposal.reply);
        }
        let deadline = deadline?;
        // `fill` keeps to the limits and every transaction was validated when it was queued.
        if let Err(reason) = validate_batch(&txns) {
            tracing::error!("the proposer built an invalid batch: {reason}");
            for reply in replies {
                let _ = reply.send(Err(StoreError::Invalid(reason.clone())));
            }
            return None;
        }
        Some(Batch {
            txns,
            replies,
            deadline,
        })
    }
}

/// Starts a batch with `first` and adds what `next` yields while it fits the limits: at most
/// [`BATCH_TXNS_MAX`] transactions and [`BATCH_BYTES_MAX`] bytes (a larger transaction goes
/// alone). Returns the batch and the proposal that did not fit, which starts the next one.
fn fill<P: Weighed>(first: P, mut next: impl FnMut() -> Option<P>) -> (Vec<P>, Option<P>) {
    let mut bytes = first.bytes();
    let mut batch = vec![first];
    while batch.len() < BATCH_TXNS_MAX {
        let Some(proposal) = next() else {
            break;
        };
        let more = proposal.bytes();
        if bytes + more > BATCH_BYTES_MAX {
            return (batch, Some(proposal));
        }
        bytes += more;
        batch.push(proposal);
    }
    (batch, None)
}

/// What [`fill`] counts against [`BATCH_BYTES_MAX`].
trait Weighed {
    fn bytes(&self) -> usize;
}

impl Weighed for Proposal {
    fn bytes(&self) -> usize {
        self.txn.bytes()
    }
}

/// Each transaction's answer, in order, from the answer to its batch of `n`.
fn answers(result: Answer, n: usize) -> Vec<Answer> {
    match result {
        Ok(CommandResponse::Batch(answers)) if answers.len() == n => {
            answers.into_iter().map(Ok).collect()
        }
        // Refused as a whole: nothing changed.
        Ok(CommandResponse::Rejected { reason }) => {
            vec![Ok(CommandResponse::Rejected { reason }); n]
        }
        // Committed, but the answer does not say what happened to each transaction.
        Ok(other) => {
            let shape = match &other {
                CommandResponse::Batch(answers) => format!("{} answers", answers.len()),
                other => format!("{other:?}"),
            };
            vec![
                Err(StoreError::Unknown(format!(
                    "unexpected answer to a batch of {n} transactions: {shape}"
                )));
                n
            ]
        }
        // A timeout is `Unknown` for every transaction; an error that says the batch was not
        // applied says so for every transaction.
        Err(e) => vec![Err(e); n],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::TxnResponse;

    impl Weighed for usize {
        fn bytes(&self) -> usize {
            *self
        }
    }

    fn check_fill(first: usize, queued: &[usize], batch: &[usize], carried: Option<usize>) {
        let mut rest = queued.iter().copied();
        let (got, got_carried) = fill(first, || rest.next());
        assert_eq!(got, batch, "batch from {first} then {queued:?}");
        assert_eq!(got_carried, carried, "carried from {first} then {queued:?}");
    }

    #[test]
    fn batches_keep_to_the_limits() {
        // Nothing else queued: a batch of one, at once.
        check_fill(10, &[], &[10], None);
        // Everything queued fits.
        check_fill(10, &[20, 30], &[10, 20, 30], None);
        // The bytes limit: the transaction that does not fit starts the next batch.
        let half = BATCH_BYTES_MAX / 2;
        check_fill(half, &[half, 1, 2], &[half, half], Some(1));
        // A transaction larger than the limit on its own still goes, alone.
        check_fill(BATCH_BYTES_MAX + 1, &[1], &[BATCH_BYTES_MAX + 1], Some(1));
        check_fill(1, &[BATCH_BYTES_MAX + 1], &[1], Some(BATCH_BYTES_MAX + 1));
        // The count limit: the rest stays queued.
        let many = vec![1; BATCH_TXNS_MAX + 5];
        let mut rest = many.iter().copied();
        let (batch, carried) = fill(1, || rest.next());
        assert_eq!(batch.len(), BATCH_TXNS_MAX);
        assert_eq!(carried, None);
        assert_eq!(rest.count(), 6);
    }

    fn txn_answer(revision: u64) -> CommandResponse {
        CommandResponse::Txn(TxnResponse {
            succeeded: true,
            revision,
            results: Vec::new(),
        })
    }

    #[test]
    fn each_caller_gets_its_own_answer_or_the_batch_error() {
        let batch = CommandResponse::Batch(vec![
            txn_answer(7),
            CommandResponse::Rejected {
                reason: "bad".to_string(),
            },
            txn_answer(8),
        ]);
        assert_eq!(
            answers(Ok(batch), 3),
            vec![
                Ok(txn_answer(7)),
                Ok(CommandResponse::Rejected {
                    reason: "bad".to_string()
                }),
                Ok(txn_answer(8)),
            ]
        );
        // A timed-out batch is unknown for every transaction, never failed.
        let unknown = StoreError::Unknown("timeout".to_string());
        assert_eq!(
            answers(Err(unknown.clone()), 2),
            vec![Err(unknown.clone()); 2]
        );
        // An answer of the wrong shape: the batch committed, so the outcome is unknown.
        let short = answers(Ok(CommandResponse::Batch(vec![txn_answer(1)])), 2);
        assert!(
            short
                .iter()
                .all(|a| matches!(a, Err(StoreError::Unknown(m)) if m.contains("1 answers"))),
            "{short:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_transactions_share_batches_and_are_answered_in_order() {
        use std::sync::Mutex;
        use std::time::Duration;

        let (proposer, queue) = Proposer::new();
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let gate = Arc::new(tokio::sync::Notify::new());
        let opened = gate.clone();
        // A write that answers each transaction with its position and holds the first batch
        // until the gate opens, so that the rest queue up behind it.
        let write = move |command: Command, _deadline: Instant| {
            let seen = seen.clone();
            let gate = opened.clone();
            async move {
                let Command::Batch(txns) = command else {
                    return Err(StoreError::Invalid("not a batch".to_string()));
                };
                let first = {
                    let mut sizes = seen.lock().unwrap();
                    sizes.push(txns.len());
                    sizes.len() == 1
                };
                if first {
                    gate.notified().await;
                }
                Ok(CommandResponse::Batch(
                    txns.iter()
                        .map(|t| txn_answer(t.success.len() as u64))
                        .collect(),
                ))
            }
        };
        let runner = tokio::spawn(run(queue, write));
        let deadline = Instant::now() + Duration::from_secs(10);
        let put_n = |n: usize| Txn {
            success: (0..n)
                .map(|i| crate::Op::put(format!("k{i}"), "v"))
                .collect(),
            ..Txn::default()
        };
        let first = tokio::spawn({
            let proposer = proposer.clone();
            let txn = put_n(1);
            async move { proposer.propose(txn, deadline).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // The first batch is in flight; the rest share the other slot or queue.
        let callers: Vec<_> = (2..=40)
            .map(|n| {
                let proposer = proposer.clone();
                let txn = put_n(n % 5 + 1);
                tokio::spawn(async move { (n, proposer.propose(txn, deadline).await) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        gate.notify_one();
        assert_eq!(first.await.unwrap(), Ok(txn_answer(1)));
        for caller in callers {
            let (n, answer) = caller.await.unwrap();
            assert_eq!(answer, Ok(txn_answer((n % 5 + 1) as u64)), "caller {n}");
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 40, "{sizes:?}");
        assert!(
            sizes.len() < 40,
            "some transactions shared a batch: {sizes:?}"
        );
        // A proposal whose deadline passed while queued is not proposed.
        let late = proposer.propose(put_n(1), Instant::now()).await;
        assert!(matches!(late, Err(StoreError::NoLeader(_))), "{late:?}");
        runner.abort();
    }
}
