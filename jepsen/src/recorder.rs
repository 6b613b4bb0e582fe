//! Records the history as the run happens: operations from every client and the nemesis's
//! actions, timestamped against one start instant, with a bound on how many are kept.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::history::{FaultStatus, Kind, NemesisEvent, Op, Phase, Value, F};

/// The most operations one run keeps; clients stop when it is reached. A 30-minute run with
/// every nemesis records about 4.5 million (watch events are most of them); 2 million stopped
/// one half-way.
pub const OPS_MAX: usize = 8_000_000;
/// Records kept beyond [`OPS_MAX`] for the final reads, which the checkers need even when
/// the clients filled the history.
const FINAL_OPS_RESERVE: usize = 10_000;

pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    nemesis: Mutex<Vec<NemesisEvent>>,
    next_process: AtomicU64,
    /// When the history reached [`OPS_MAX`] (ns since start), if it did.
    full_at: Mutex<Option<u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            nemesis: Mutex::new(Vec::new()),
            next_process: AtomicU64::new(0),
            full_at: Mutex::new(None),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A fresh process id (a client starts with one, and takes another after an `info`).
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends an operation record; false once the run holds [`OPS_MAX`] of them.
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        &self,
        process: u64,
        kind: Kind,
        f: F,
        key: Option<&str>,
        value: Value,
        node: Option<&str>,
        error: Option<String>,
    ) -> bool {
        let op = Op {
            process,
            kind,
            f,
            key: key.map(str::to_string),
            value,
            time: self.now(),
            node: node.map(str::to_string),
            error,
        };
        let mut ops = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let max = if f == F::ReadAll {
            OPS_MAX + FINAL_OPS_RESERVE
        } else {
            OPS_MAX
        };
        if ops.len() >= max {
            let mut full_at = self.full_at.lock().unwrap_or_else(|e| e.into_inner());
            if full_at.is_none() {
                tracing::warn!(
                    ops = ops.len(),
                    "the history is full: clients stop recording"
                );
                *full_at = Some(op.time);
            }
            return false;
        }
        ops.push(op);
        true
    }

    pub fn nemesis(&self, fault: &str, phase: Phase, status: FaultStatus, detail: String) {
        tracing::info!(fault, ?phase, ?status, detail, "nemesis");
        let event = NemesisEvent {
            time: self.now(),
            fault: fault.to_string(),
            phase,
            status,
            detail,
        };
        self.nemesis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event);
    }

    /// When the history filled up (ns since start), if it did: the clients stopped there.
    pub fn full_at(&self) -> Option<u64> {
        *self.full_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn nemesis_events(&self) -> Vec<NemesisEvent> {
        self.nemesis
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
