//! The results as text: one table row per measurement, Keelson/etcd ratios per row, and
//! whether the goal holds (at least 2x etcd's ops/s at 64 clients with a p99 no worse).

use std::fmt::Write;

/// The client count at which the goal is judged.
pub(crate) const GOAL_CLIENTS: usize = 64;
/// Keelson's throughput must be at least this multiple of etcd's.
pub(crate) const GOAL_OPS_RATIO_MIN: f64 = 2.0;

pub(crate) const KEELSON: &str = "keelson";
pub(crate) const ETCD: &str = "etcd";
/// The Kubernetes API of the same Keelson cluster: write = ConfigMap create, read = get,
/// list = a page of 100, watch = ADDED events delivered while creates run (latency from the
/// create being sent).
pub(crate) const API: &str = "api";

/// One measured point, as printed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) system: &'static str,
    pub(crate) workload: &'static str,
    pub(crate) clients: usize,
    pub(crate) ops_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
    /// What the first failed operation said.
    pub(crate) first_error: Option<String>,
}

pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<8} {:>7} {:>10} {:>9} {:>9} {:>7}",
        "system", "workload", "clients", "ops/s", "p50 ms", "p99 ms", "errors"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<8} {:<8} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>7}",
            r.system, r.workload, r.clients, r.ops_per_sec, r.p50_ms, r.p99_ms, r.errors
        );
    }
    out
}

fn find<'a>(rows: &'a [Row], system: &str, workload: &str, clients: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.system == system && r.workload == workload && r.clients == clients)
}

/// The API's throughput against the raw store's at the same client counts (its overhead).
pub(crate) fn api_overhead(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>7} {:>20} {:>18}",
        "workload", "clients", "ops/s api/store", "p99 ms api/store"
    );
    for a in rows.iter().filter(|r| r.system == API) {
        if let Some(k) = find(rows, KEELSON, a.workload, a.clients) {
            let _ = writeln!(
                out,
                "{:<8} {:>7} {:>20.2} {:>18.2}",
                a.workload,
                a.clients,
                ratio(a.ops_per_sec, k.ops_per_sec),
                ratio(a.p99_ms, k.p99_ms)
            );
        }
    }
    out
}

/// keelson/etcd for ops/s (higher is better) and p99 (lower is better), for every Keelson row
/// that has an etcd row to compare with.
pub(crate) fn ratios(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>7} {:>18} {:>16}",
        "workload", "clients", "ops/s keelson/etcd", "p99 keelson/etcd"
    );
    for k in rows.iter().filter(|r| r.system == KEELSON) {
        if let Some(e) = find(rows, ETCD, k.workload, k.clients) {
            let _ = writeln!(
                out,
                "{:<8} {:>7} {:>17.2}x {:>15.2}x",
                k.workload,
                k.clients,
                ratio(k.ops_per_sec, e.ops_per_sec),
                ratio(k.p99_ms, e.p99_ms)
            );
        }
    }
    out
}

fn ratio(ours: f64, theirs: f64) -> f64 {
    if theirs > 0.0 {
        ours / theirs
    } else {
        f64::INFINITY
    }
}

/// One line per workload: whether Keelson at [`GOAL_CLIENTS`] clients has at least
/// [`GOAL_OPS_RATIO_MIN`] times etcd's ops/s, a p99 no worse, and no errors.
pub(crate) fn goal(rows: &[Row], workload: &str) -> String {
    let (Some(k), Some(e)) = (
        find(rows, KEELSON, workload, GOAL_CLIENTS),
        find(rows, ETCD, workload, GOAL_CLIENTS),
    ) else {
        return format!("goal for {workload}s: not judged (no keelson and etcd measurements at {GOAL_CLIENTS} clients)");
    };
    let ops = ratio(k.ops_per_sec, e.ops_per_sec);
    let mut misses = Vec::new();
    if ops < GOAL_OPS_RATIO_MIN {
        misses.push(format!("ops/s {ops:.2}x < {GOAL_OPS_RATIO_MIN:.2}x"));
    }
    if k.p99_ms > e.p99_ms {
        misses.push(format!(
            "p99 {:.2} ms > etcd's {:.2} ms",
            k.p99_ms, e.p99_ms
        ));
    }
    if k.errors > 0 {
        misses.push(format!("{} errors", k.errors));
    }
    let verdict = if misses.is_empty() {
        "MET".to_string()
    } else {
        format!("NOT MET ({})", misses.join(", "))
    };
    format!(
        "goal for {workload}s at {GOAL_CLIENTS} clients (>= {GOAL_OPS_RATIO_MIN:.0}x etcd's ops/s, p99 no worse): \
         {verdict}; ops/s {ops:.2}x, p99 {:.2} ms vs {:.2} ms",
        k.p99_ms, e.p99_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &'static str, ops_per_sec: f64, p99_ms: f64, errors: u64) -> Row {
        Row {
            system,
            workload: "write",
            clients: GOAL_CLIENTS,
            ops_per_sec,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            errors,
            first_error: None,
        }
    }

    #[test]
    fn goal_needs_twice_the_throughput_no_worse_p99_and_no_errors() {
        let check = |k: Row, e: Row, expected: &str| {
            let line = goal(&[k, e], "write");
            assert!(line.contains(expected), "{line}");
        };
        check(
            row(KEELSON, 2000.0, 9.0, 0),
            row(ETCD, 1000.0, 9.0, 0),
            ": MET;",
        );
        check(
            row(KEELSON, 1900.0, 5.0, 0),
            row(ETCD, 1000.0, 9.0, 0),
            "NOT MET (ops/s 1.90x < 2.00x)",
        );
        check(
            row(KEELSON, 3000.0, 9.5, 0),
            row(ETCD, 1000.0, 9.0, 0),
            "NOT MET (p99 9.50 ms > etcd's 9.00 ms)",
        );
        check(
            row(KEELSON, 3000.0, 5.0, 3),
            row(ETCD, 1000.0, 9.0, 0),
            "NOT MET (3 errors)",
        );
        let alone = goal(&[row(KEELSON, 3000.0, 5.0, 0)], "write");
        assert!(alone.contains("not judged"), "{alone}");
    }

    #[test]
    fn ratios_pair_rows_by_workload_and_clients() {
        let rows = [row(KEELSON, 3000.0, 4.0, 0), row(ETCD, 1500.0, 8.0, 0)];
        let text = ratios(&rows);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("2.00x") && l.contains("0.50x")),
            "{text}"
        );
        assert_eq!(
            ratios(&rows[..1]).lines().count(),
            1,
            "no etcd row, no ratio line"
        );
    }
}
