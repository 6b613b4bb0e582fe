//! Resource use for the metrics API, as the kubelet's summary API gives metrics-server: each
//! running container's CPU (a rate between two cumulative samples of its cgroup) and memory
//! working set, and the node's totals from `/proc/stat` and `/proc/meminfo`.
//!
//! The core is pure: [`RateTracker`] turns cumulative samples into rates over a window, and
//! the `/proc` parsers read text. [`StatsSource`] is the shell: it samples every
//! [`SAMPLE_PERIOD`] and on demand when a container has no rate yet.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use keelson_api::node_link::{
    ContainerStats, NodeStats, PodStats, StatsRequest, Usage, STATS_CONTAINERS_MAX,
};
use tokio::sync::{watch, Mutex};

use super::pleg::Pleg;
use crate::runtime::{ContainerState, Runtime};

/// How often every running container is sampled.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);
/// The shortest window a CPU rate is computed over (a sample closer to the last is ignored).
pub const WINDOW_MIN: Duration = Duration::from_secs(1);
/// The key of the node's own totals in the tracker.
const NODE_KEY: &str = "";
/// Nanoseconds per `/proc/stat` tick (USER_HZ is 100 on Linux).
const TICK_NANOS: u64 = 10_000_000;

/// One cumulative sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub at: Instant,
    /// Wall-clock time of the sample, ms since the Unix epoch (what the API reports).
    pub unix_ms: i64,
    pub cpu_nanos: u64,
    pub memory_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct History {
    previous: Option<Sample>,
    last: Sample,
}

/// The last two samples of each container (and the node), and the usage they give.
#[derive(Debug, Default)]
pub struct RateTracker {
    entries: HashMap<String, History>,
}

impl RateTracker {
    /// Records a sample of `key`. One taken less than [`WINDOW_MIN`] after the last is
    /// ignored (the rate keeps its longer window); a counter that went backwards (a new
    /// cgroup under the same name) starts over.
    pub fn record(&mut self, key: &str, sample: Sample) {
        match self.entries.get_mut(key) {
            Some(history) => {
                if sample.cpu_nanos < history.last.cpu_nanos || sample.at < history.last.at {
                    *history = History {
                        previous: None,
                        last: sample,
                    };
                } else if sample.at.duration_since(history.last.at) >= WINDOW_MIN {
                    history.previous = Some(history.last);
                    history.last = sample;
                }
            }
            None => {
                if self.entries.len() < STATS_CONTAINERS_MAX + 1 {
                    self.entries.insert(
                        key.to_string(),
                        History {
                            previous: None,
                            last: sample,
                        },
                    );
                }
            }
        }
    }

    /// The usage of `key`: CPU over the window between its last two samples, memory at the
    /// last; `None` before two samples.
    pub fn usage(&self, key: &str) -> Option<Usage> {
        let history = self.entries.get(key)?;
        let previous = history.previous?;
        let last = history.last;
        let window = last.at.duration_since(previous.at);
        let window_nanos = window.as_nanos();
        if window_nanos == 0 {
            return None;
        }
        let used = u128::from(last.cpu_nanos - previous.cpu_nanos);
        let nanocores = used * 1_000_000_000 / window_nanos;
        Some(Usage {
            timestamp_unix_ms: last.unix_ms,
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            cpu_nanocores: u64::try_from(nanocores).unwrap_or(u64::MAX),
            memory_working_set_bytes: last.memory_bytes,
        })
    }

    /// Whether `key` has a rate yet.
    pub fn has_rate(&self, key: &str) -> bool {
        self.entries
            .get(key)
            .is_some_and(|history| history.previous.is_some())
    }

    /// Forgets every key but the node's and `keep`.
    pub fn retain(&mut self, keep: &std::collections::HashSet<String>) {
        self.entries
            .retain(|key, _| key == NODE_KEY || keep.contains(key));
    }
}

/// The node's cumulative busy CPU time from `/proc/stat` (every state but idle and iowait;
/// guest time is already in user), in nanoseconds.
pub fn proc_stat_busy_nanos(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    if fields.len() < 4 {
        return None;
    }
    let busy = field(0) + field(1) + field(2) + field(5) + field(6) + field(7);
    Some(busy.saturating_mul(TICK_NANOS))
}

/// The node's memory working set from `/proc/meminfo`: MemTotal − MemAvailable, in bytes.
pub fn meminfo_working_set_bytes(text: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.split(':').next() == Some(name))?;
        let kib: u64 = line
            .split(':')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib.saturating_mul(1024))
    };
    Some(field("MemTotal")?.saturating_sub(field("MemAvailable")?))
}

/// A running container as the stats see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningContainer {
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
}

/// The answer for `request` from the tracker: the node's usage and each running container's
/// that has a rate, grouped by pod (pods in name order, at most [`STATS_CONTAINERS_MAX`]
/// containers).
pub fn node_stats(
    node: &str,
    tracker: &RateTracker,
    running: &[RunningContainer],
    request: &StatsRequest,
) -> NodeStats {
    let mut pods: Vec<PodStats> = Vec::new();
    let mut containers = 0usize;
    let mut sorted: Vec<&RunningContainer> = running
        .iter()
        .filter(|c| request.namespace.is_empty() || c.namespace == request.namespace)
        .collect();
    sorted.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    for c in sorted {
        if containers >= STATS_CONTAINERS_MAX {
            break;
        }
        let Some(usage) = tracker.usage(&c.id) else {
            continue;
        };
        containers += 1;
        let stats = ContainerStats {
            name: c.container.clone(),
            usage,
        };
        match pods.last_mut() {
            Some(p) if p.namespace == c.namespace && p.name == c.pod && p.uid == c.pod_uid => {
                p.containers.push(stats);
            }
            _ => pods.push(PodStats {
                namespace: c.namespace.clone(),
                name: c.pod.clone(),
                uid: c.pod_uid.clone(),
                containers: vec![stats],
            }),
        }
    }
    NodeStats {
        node: node.to_string(),
        usage: tracker.usage(NODE_KEY).unwrap_or_default(),
        pods,
    }
}

/// Samples the runtime's running containers and the node; clones share the samples.
#[derive(Clone)]
pub struct StatsSource {
    node_name: String,
    pleg: Pleg,
    runtime: Arc<dyn Runtime>,
    tracker: Arc<Mutex<RateTracker>>,
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl StatsSource {
    pub fn new(node_name: &str, pleg: Pleg, runtime: Arc<dyn Runtime>) -> StatsSource {
        StatsSource {
            node_name: node_name.to_string(),
            pleg,
            runtime,
            tracker: Arc::new(Mutex::new(RateTracker::default())),
        }
    }

    fn running(&self) -> Vec<RunningContainer> {
        self.pleg
            .current()
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running { .. }))
            .take(STATS_CONTAINERS_MAX)
            .map(|c| RunningContainer {
                id: c.id.clone(),
                namespace: c.labels.pod_namespace.clone(),
                pod: c.labels.pod_name.clone(),
                pod_uid: c.labels.pod_uid.clone(),
                container: c.labels.container_name.clone(),
            })
            .collect()
    }

    /// Samples the node and every running container once; returns whether every one of them
    /// has a rate now.
    async fn sample(&self, running: &[RunningContainer]) -> bool {
        let mut tracker = self.tracker.lock().await;
        let at = Instant::now();
        let now_ms = unix_ms(SystemTime::now());
        let cpu = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| proc_stat_busy_nanos(&t));
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_working_set_bytes(&t));
        if let (Some(cpu_nanos), Some(memory_bytes)) = (cpu, memory) {
            tracker.record(
                NODE_KEY,
                Sample {
                    at,
                    unix_ms: now_ms,
                    cpu_nanos,
                    memory_bytes,
                },
            );
        }
        let mut complete = tracker.has_rate(NODE_KEY);
        for c in running {
            match self.runtime.usage(&c.id).await {
                Ok(usage) => {
                    tracker.record(
                        &c.id,
                        Sample {
                            at: Instant::now(),
                            unix_ms: unix_ms(SystemTime::now()),
                            cpu_nanos: usage.cpu_usage_nanos,
                            memory_bytes: usage.memory_bytes,
                        },
                    );
                    complete &= tracker.has_rate(&c.id);
                }
                // It may have just exited; it is left out.
                Err(e) => {
                    tracing::debug!(id = %c.id, error = %e, "cannot read a container's usage")
                }
            }
        }
        let keep = running.iter().map(|c| c.id.clone()).collect();
        tracker.retain(&keep);
        complete
    }

    /// The node's and its pods' usage now. Containers sampled once only (just started, or
    /// the first request) are sampled again after [`WINDOW_MIN`].
    pub async fn stats(&self, request: &StatsRequest) -> NodeStats {
        let running = self.running();
        if !self.sample(&running).await {
            tokio::time::sleep(WINDOW_MIN).await;
            self.sample(&running).await;
        }
        let tracker = self.tracker.lock().await;
        node_stats(&self.node_name, &tracker, &running, request)
    }

    /// Samples every [`SAMPLE_PERIOD`] until `stop`.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let running = self.running();
            self.sample(&running).await;
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(SAMPLE_PERIOD) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(base: Instant, secs_ms: u64, cpu_nanos: u64, memory_bytes: u64) -> Sample {
        Sample {
            at: base + Duration::from_millis(secs_ms),
            unix_ms: 1_700_000_000_000 + secs_ms as i64,
            cpu_nanos,
            memory_bytes,
        }
    }

    #[test]
    fn rates_come_from_the_last_two_samples() {
        let base = Instant::now();
        // (samples as (ms, cpu ns, memory), wanted (cpu nanocores, window ms, memory))
        type Case = (&'static [(u64, u64, u64)], Option<(u64, u64, u64)>);
        let cases: &[Case] = &[
            (&[], None),
            (&[(0, 5, 10)], None),
            // Half a core over 10 s.
            (
                &[(0, 0, 10), (10_000, 5_000_000_000, 20)],
                Some((500_000_000, 10_000, 20)),
            ),
            // A sample under WINDOW_MIN after the last is ignored.
            (
                &[
                    (0, 0, 1),
                    (2_000, 2_000_000_000, 2),
                    (2_500, 9_000_000_000, 3),
                ],
                Some((1_000_000_000, 2_000, 2)),
            ),
            // Only the last two count.
            (
                &[
                    (0, 0, 1),
                    (1_000, 1_000_000_000, 2),
                    (5_000, 1_000_000_000, 3),
                ],
                Some((0, 4_000, 3)),
            ),
            // A counter that goes backwards starts over.
            (&[(0, 100, 1), (2_000, 200, 2), (4_000, 50, 3)], None),
            (
                &[(0, 100, 1), (2_000, 50, 2), (4_000, 250_000_050, 3)],
                Some((125_000_000, 2_000, 3)),
            ),
        ];
        for (samples, want) in cases {
            let mut tracker = RateTracker::default();
            for (ms, cpu, mem) in *samples {
                tracker.record("c", sample(base, *ms, *cpu, *mem));
            }
            let got = tracker
                .usage("c")
                .map(|u| (u.cpu_nanocores, u.window_ms, u.memory_working_set_bytes));
            assert_eq!(got, *want, "{samples:?}");
            assert_eq!(tracker.has_rate("c"), want.is_some());
        }
    }

    #[test]
    fn the_proc_files_give_node_totals() {
        let stat = "cpu  100 20 30 1000 50 5 5 2 7 0\ncpu0 50 10 15 500 25 2 3 1 0 0\nintr 1\n";
        let cases: &[(&str, Option<u64>)] = &[
            (stat, Some(162 * TICK_NANOS)),
            ("cpu  1 2 3 4\n", Some(6 * TICK_NANOS)),
            ("cpu  1 2\n", None),
            ("cpu  1 x 3 4\n", None),
            ("intr 1\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(proc_stat_busy_nanos(text), *want, "{text:?}");
        }
        let meminfo = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\n";
        let cases: &[(&str, Option<u64>)] = &[
            (meminfo, Some(10_000_000 * 1024)),
            ("MemTotal: 10 kB\n", None),
            ("MemTotal: 10 kB\nMemAvailable: 20 kB\n", Some(0)),
        ];
        for (text, want) in cases {
            assert_eq!(meminfo_working_set_bytes(text), *want, "{text:?}");
        }
    }

    #[test]
    fn stats_group_containers_by_pod_and_leave_out_those_without_a_rate() {
        let base = Instant::now();
        let mut tracker = RateTracker::default();
        let running = [
            ("a1", "ns", "a", "u1", "main"),
            ("a2", "ns", "a", "u1", "side"),
            ("b1", "ns", "b", "u2", "main"),
            ("c1", "other", "c", "u3", "main"),
            ("new", "ns", "d", "u4", "main"),
        ]
        .map(|(id, ns, pod, uid, c)| RunningContainer {
            id: id.into(),
            namespace: ns.into(),
            pod: pod.into(),
            pod_uid: uid.into(),
            container: c.into(),
        });
        for c in &running[..4] {
            tracker.record(&c.id, sample(base, 0, 0, 0));
            tracker.record(&c.id, sample(base, 2_000, 1_000_000_000, 4096));
        }
        tracker.record("new", sample(base, 2_000, 0, 1));
        tracker.record(NODE_KEY, sample(base, 0, 0, 0));
        tracker.record(NODE_KEY, sample(base, 1_000, 3_000_000_000, 99));

        let all = node_stats("n1", &tracker, &running, &StatsRequest::default());
        assert_eq!(all.node, "n1");
        assert_eq!(all.usage.cpu_nanocores, 3_000_000_000);
        assert_eq!(all.usage.memory_working_set_bytes, 99);
        let pods: Vec<(&str, &str, Vec<&str>)> = all
            .pods
            .iter()
            .map(|p| {
                (
                    p.namespace.as_str(),
                    p.name.as_str(),
                    p.containers.iter().map(|c| c.name.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            pods,
            [
                ("ns", "a", vec!["main", "side"]),
                ("ns", "b", vec!["main"]),
                ("other", "c", vec!["main"]),
            ]
        );
        assert_eq!(all.pods[0].containers[0].usage.cpu_nanocores, 500_000_000);
        assert_eq!(all.pods[0].containers[0].usage.window_ms, 2_000);

        let other = node_stats(
            "n1",
            &tracker,
            &running,
            &StatsRequest {
                namespace: "other".into(),
            },
        );
        assert_eq!(other.pods.len(), 1);
        assert_eq!(other.pods[0].name, "c");

        let keep = ["a1".to_string()].into_iter().collect();
        tracker.retain(&keep);
        assert!(tracker.has_rate("a1") && !tracker.has_rate("b1") && tracker.has_rate(NODE_KEY));
    }
}
