//! When a snapshot is due by size. A snapshot serializes the whole state machine, so its cost
//! grows with the state while a count of log entries between snapshots does not: at a few
//! thousand writes per second, snapshots every 10,000 entries took a sixth of the leader's
//! CPU once the state held tens of thousands of objects. A member therefore builds one when
//! the log written since its last snapshot outgrows that snapshot (and a floor): building
//! snapshots then costs at most about one byte serialized per byte logged, and the log on
//! disk stays within about the state's size. openraft's entry count
//! (`--snapshot-entries`, etcd's `--snapshot-count`) still applies as well.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Log bytes written between snapshots at least (the default of
/// `StoreConfig::snapshot_log_bytes_min`): a small state is not snapshotted for every few of
/// its own sizes of log.
pub(crate) const LOG_BYTES_MIN: u64 = 64 << 20;
/// How often a member looks whether a snapshot is due.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Whether `logged` bytes written since the last snapshot, of `snapshot` bytes, call for a
/// new one, `floor` bytes at least.
pub(crate) fn due(logged: u64, snapshot: u64, floor: u64) -> bool {
    logged >= snapshot.max(floor)
}

/// The log's growth since the last snapshot, shared by the log store (which counts what it
/// appends) and the state machine (which records each snapshot it writes).
#[derive(Debug)]
pub(crate) struct LogGrowth {
    /// Bytes appended to the log since the last snapshot was written or asked for.
    logged: AtomicU64,
    /// The size of the last snapshot written (or found on disk at start).
    snapshot: AtomicU64,
    /// Log bytes between snapshots at least.
    floor: AtomicU64,
}

impl LogGrowth {
    pub(crate) fn new(snapshot: u64) -> Self {
        LogGrowth {
            logged: AtomicU64::new(0),
            snapshot: AtomicU64::new(snapshot),
            floor: AtomicU64::new(LOG_BYTES_MIN),
        }
    }

    pub(crate) fn set_floor(&self, bytes: u64) {
        self.floor.store(bytes, Ordering::Relaxed);
    }

    pub(crate) fn appended(&self, bytes: u64) {
        self.logged.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn snapshot_written(&self, bytes: u64) {
        self.snapshot.store(bytes, Ordering::Relaxed);
        self.logged.store(0, Ordering::Relaxed);
    }

    /// Whether a snapshot is due; if so, counting starts again (the log written while it is
    /// built counts towards the next).
    pub(crate) fn take_due(&self) -> bool {
        let snapshot = self.snapshot.load(Ordering::Relaxed);
        let logged = self.logged.load(Ordering::Relaxed);
        if !due(logged, snapshot, self.floor.load(Ordering::Relaxed)) {
            return false;
        }
        // Saturating: a snapshot written meanwhile may have reset the count already.
        let _ = self
            .logged
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                Some(now.saturating_sub(logged))
            });
        true
    }

    #[cfg(test)]
    pub(crate) fn logged(&self) -> u64 {
        self.logged.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_once_the_log_outgrows_the_last_one_and_the_floor() {
        let mib = 1 << 20;
        for (logged, snapshot, expected) in [
            (0, 0, false),
            (LOG_BYTES_MIN - 1, 0, false),
            (LOG_BYTES_MIN, 0, true),
            (LOG_BYTES_MIN, 10 * mib, true),
            (LOG_BYTES_MIN, 200 * mib, false),
            (200 * mib - 1, 200 * mib, false),
            (200 * mib, 200 * mib, true),
        ] {
            assert_eq!(
                due(logged, snapshot, LOG_BYTES_MIN),
                expected,
                "{logged} logged, {snapshot} snapshot"
            );
        }
    }

    #[test]
    fn counting_restarts_when_a_snapshot_is_asked_for_or_written() {
        let growth = LogGrowth::new(100 << 20);
        growth.appended(60 << 20);
        assert!(!growth.take_due(), "60 MiB logged of a 100 MiB snapshot");
        growth.appended(40 << 20);
        assert!(growth.take_due(), "100 MiB logged");
        assert_eq!(growth.logged(), 0, "asked for: counting starts again");
        assert!(!growth.take_due(), "asked for once");

        growth.appended(10 << 20);
        growth.snapshot_written(20 << 20);
        assert_eq!(growth.logged(), 0, "written: counting starts again");
        growth.appended(LOG_BYTES_MIN);
        assert!(growth.take_due(), "a 20 MiB snapshot: the floor decides");
    }
}
