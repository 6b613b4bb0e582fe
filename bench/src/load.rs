//! The load: closed-loop clients that put unique keys or read random prepopulated ones for a
//! fixed time after a warm-up, with a latency histogram of the successful operations.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bytes of every value written.
pub(crate) const VALUE_BYTES: usize = 256;
/// Keys prepopulated for the read workload.
pub(crate) const READ_KEYS: usize = 1000;
/// Concurrent writers while prepopulating.
const PREPOPULATE_CLIENTS: usize = 16;
/// The largest latency the histogram tells apart; slower operations count as this.
const LATENCY_US_MAX: u64 = 60_000_000;
/// A client pauses this long after a failed operation, so a broken cluster is not hammered.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// A store under load: one handle, cloned for each client task.
pub(crate) trait Target: Clone + Send + 'static {
    /// A durable, unconditional put.
    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A linearizable read of one key: its value, or `None` if absent.
    fn get(&mut self, key: String) -> impl Future<Output = Result<Option<Vec<u8>>, String>> + Send;
    /// A page of a collection (only the API measures this).
    fn list(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        async { Err("this system does not list".to_string()) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Each client puts `/bench/{client}/{n}`, n = 0, 1, ...
    Write,
    /// Each client reads random keys of the [`READ_KEYS`] prepopulated ones.
    Read,
    /// Each client reads a page of the collection.
    List,
}

impl Workload {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Workload::Write => "write",
            Workload::Read => "read",
            Workload::List => "list",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadConfig {
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
    /// An operation not answered in this time counts as an error.
    pub(crate) op_timeout: Duration,
}

/// What one run of one workload measured.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    /// Successful operations that began and ended within the measured window.
    pub(crate) ops: u64,
    /// Failed (or timed out, or wrong) operations that began within the measured window.
    pub(crate) errors: u64,
    /// The first error seen, to show what went wrong.
    pub(crate) first_error: Option<String>,
    pub(crate) measure: Duration,
    /// Latency of the successful operations, in microseconds.
    pub(crate) latency_us: Histogram<u64>,
}

impl Measurement {
    pub(crate) fn empty(measure: Duration) -> anyhow::Result<Self> {
        Self::new(measure)
    }

    fn new(measure: Duration) -> anyhow::Result<Self> {
        Ok(Measurement {
            ops: 0,
            errors: 0,
            first_error: None,
            measure,
            latency_us: Histogram::new_with_bounds(1, LATENCY_US_MAX, 3)
                .context("cannot create a latency histogram")?,
        })
    }

    fn merge(&mut self, other: Measurement) -> anyhow::Result<()> {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_us
            .add(&other.latency_us)
            .map_err(|e| anyhow!("cannot merge latency histograms: {e:?}"))
    }

    pub(crate) fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.measure.as_secs_f64()
    }

    /// The latency at `quantile` in milliseconds (0 when nothing succeeded).
    pub(crate) fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// The value stored under read key `i` (incompressible, cheap to recompute), so a read can
/// check what it got back.
fn read_value(i: usize) -> Vec<u8> {
    let mut value = Vec::with_capacity(VALUE_BYTES);
    let mut state = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while value.len() < VALUE_BYTES {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        value.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    value.truncate(VALUE_BYTES);
    value
}

fn read_key(i: usize) -> String {
    format!("/bench/read/{i:04}")
}

/// Writes the [`READ_KEYS`] keys the read workload reads; fails on the first error.
pub(crate) async fn prepopulate<T: Target>(target: &T, op_timeout: Duration) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for stripe in 0..PREPOPULATE_CLIENTS {
        let mut target = target.clone();
        tasks.push(tokio::spawn(async move {
            for i in (stripe..READ_KEYS).step_by(PREPOPULATE_CLIENTS) {
                let key = read_key(i);
                match tokio::time::timeout(op_timeout, target.put(key.clone(), read_value(i))).await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(anyhow!("put {key}: {e}")),
                    Err(_) => return Err(anyhow!("put {key}: no answer within {op_timeout:?}")),
                }
            }
            Ok(())
        }));
    }
    for task in tasks {
        task.await.context("a prepopulating task panicked")??;
    }
    Ok(())
}

/// Runs `workload` with `clients` concurrent clients, numbered from `first_client` (so keys
/// stay unique across runs), each sharing a clone of `target`.
pub(crate) async fn run<T: Target>(
    target: &T,
    workload: Workload,
    clients: usize,
    first_client: usize,
    config: LoadConfig,
) -> anyhow::Result<Measurement> {
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let end = measure_from + config.measure;
    let mut tasks = Vec::with_capacity(clients);
    for client in first_client..first_client + clients {
        let target = target.clone();
        tasks.push(tokio::spawn(client_loop(
            target,
            workload,
            client,
            measure_from,
            end,
            config,
        )));
    }
    let mut total = Measurement::new(config.measure)?;
    for task in tasks {
        total.merge(task.await.context("a client task panicked")??)?;
    }
    Ok(total)
}

/// One closed-loop client: issues operations one after another until `end`, recording those
/// that began at or after `measure_from`.
async fn client_loop<T: Target>(
    mut target: T,
    workload: Workload,
    client: usize,
    measure_from: Instant,
    end: Instant,
    config: LoadConfig,
) -> anyhow::Result<Measurement> {
    let mut out = Measurement::new(config.measure)?;
    let mut rng = StdRng::seed_from_u64(client as u64 ^ 0x6b65_656c_736f_6e00);
    let mut value = vec![0u8; VALUE_BYTES];
    rng.fill(&mut value[..]);
    let mut n: u64 = 0;
    loop {
        let began = Instant::now();
        if began >= end {
            break;
        }
        let result = match workload {
            Workload::Write => {
                let key = format!("/bench/{client}/{n}");
                n += 1;
                timed(config.op_timeout, target.put(key, value.clone())).await
            }
            Workload::Read => {
                let i = rng.random_range(0..READ_KEYS);
                match timed(config.op_timeout, target.get(read_key(i))).await {
                    Ok(Some(got)) if got == read_value(i) => Ok(()),
                    Ok(Some(_)) => Err(format!("{} read back a wrong value", read_key(i))),
                    Ok(None) => Err(format!("{} is missing", read_key(i))),
                    Err(e) => Err(e),
                }
            }
            Workload::List => timed(config.op_timeout, target.list()).await,
        };
        let done = Instant::now();
        if began < measure_from {
            if result.is_err() {
                tokio::time::sleep(ERROR_PAUSE).await;
            }
            continue;
        }
        match result {
            Ok(()) if done <= end => {
                out.ops += 1;
                let us = u64::try_from(done.duration_since(began).as_micros()).unwrap_or(u64::MAX);
                out.latency_us.saturating_record(us.max(1));
            }
            // Finished after the window closed: neither counted nor timed.
            Ok(()) => {}
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    Ok(out)
}

async fn timed<R>(
    timeout: Duration,
    op: impl Future<Output = Result<R, String>>,
) -> Result<R, String> {
    match tokio::time::timeout(timeout, op).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}
