//! The store's Prometheus series, recorded through the `metrics` facade (the process that
//! runs the store installs the recorder and serves them): commit latency, leader changes and
//! snapshots. Revision, term and size are read from [`crate::StoreStatus`] at scrape time.

use std::time::Duration;

use openraft::metrics::RaftServerMetrics;
use tokio::sync::watch;

use crate::types::{Member, MemberId};

/// Histogram: seconds from a client's write reaching this member to its answer from the
/// state machine (replicated to a quorum, committed and applied).
pub(crate) const COMMIT_DURATION: &str = "keelson_store_commit_duration_seconds";
/// Counter: writes that did not commit (no leader in time, unknown outcome, rejected).
pub(crate) const WRITE_FAILURES: &str = "keelson_store_write_failures_total";
/// Counter: how often this member saw a new leader (as etcd's
/// `etcd_server_leader_changes_seen_total`).
pub(crate) const LEADER_CHANGES: &str = "keelson_raft_leader_changes_seen_total";
/// Gauge: bytes of the last snapshot this member built or installed.
pub(crate) const SNAPSHOT_SIZE: &str = "keelson_store_snapshot_size_bytes";
/// Counter by `operation` (`build`, `install`): snapshots built or installed.
pub(crate) const SNAPSHOTS: &str = "keelson_store_snapshots_total";

/// Counter: linearizable reads this member confirmed leadership for (see `read_index`).
pub(crate) const LINEARIZABLE_READS: &str = "keelson_store_linearizable_reads_total";
/// Counter: read-index rounds this member ran; reads per round is how well concurrent reads
/// share them.
pub(crate) const READ_INDEX_ROUNDS: &str = "keelson_store_read_index_rounds_total";

/// Registers the store's counters at zero, so that they are scraped before anything happens.
pub(crate) fn register() {
    metrics::counter!(WRITE_FAILURES).increment(0);
    metrics::counter!(LEADER_CHANGES).increment(0);
    metrics::counter!(LINEARIZABLE_READS).increment(0);
    metrics::counter!(READ_INDEX_ROUNDS).increment(0);
    for operation in ["build", "install"] {
        metrics::counter!(SNAPSHOTS, "operation" => operation).increment(0);
    }
}

/// Records one write that committed after `elapsed`, or one that failed.
pub(crate) fn record_write(elapsed: Duration, committed: bool) {
    if committed {
        metrics::histogram!(COMMIT_DURATION).record(elapsed.as_secs_f64());
    } else {
        metrics::counter!(WRITE_FAILURES).increment(1);
    }
}

/// Records a snapshot of `bytes` built (`build`) or installed from the leader (`install`).
pub(crate) fn record_snapshot(operation: &'static str, bytes: usize) {
    metrics::counter!(SNAPSHOTS, "operation" => operation).increment(1);
    metrics::gauge!(SNAPSHOT_SIZE).set(bytes as f64);
}

/// Sets the snapshot size gauge from a snapshot found on disk at start.
pub(crate) fn record_snapshot_on_disk(bytes: u64) {
    metrics::gauge!(SNAPSHOT_SIZE).set(bytes as f64);
}

/// Whether going from `last` to `now` is a leader change: a leader is known and it is not the
/// one last seen (losing the leader is not a change; finding one again is).
pub(crate) fn leader_changed(last: Option<MemberId>, now: Option<MemberId>) -> bool {
    now.is_some() && now != last
}

/// Counts leader changes from openraft's server metrics until the channel closes. These change
/// only with the vote, the role, the leader or the membership; the full metrics change with
/// every append and apply, and waking for each of those cost a busy member ~3% of its CPU.
pub(crate) async fn watch_leader(mut raft: watch::Receiver<RaftServerMetrics<MemberId, Member>>) {
    let mut last = None;
    loop {
        let now = raft.borrow_and_update().current_leader;
        if leader_changed(last, now) {
            metrics::counter!(LEADER_CHANGES).increment(1);
        }
        last = now;
        if raft.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_changes_are_new_leaders_only() {
        let cases = [
            (None, None, false),
            (None, Some(1), true),
            (Some(1), Some(1), false),
            (Some(1), None, false),
            (Some(1), Some(2), true),
        ];
        for (last, now, want) in cases {
            assert_eq!(leader_changed(last, now), want, "{last:?} -> {now:?}");
        }
    }
}
