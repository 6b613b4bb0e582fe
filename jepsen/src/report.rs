//! The report of a run, for a person: `summary.md` (run info, operation counts, fault windows,
//! verdicts with each anomaly's sub-history), `results.json`, and two charts, `timeline.svg`
//! (every operation as a bar on a client lane) and `latency.svg`, both with fault windows shaded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use serde::Serialize;

use crate::checker::{CheckResult, Validity};
use crate::history::{FaultStatus, Kind, NemesisEvent, Op, Phase, F};

/// Bars in the timeline and points in the latency chart; beyond this they are sampled evenly.
pub const CHART_MARKS_MAX: usize = 20_000;
/// Anomalies listed per checker in the summary.
pub const ANOMALIES_LISTED_MAX: usize = 20;
/// Lines of sub-history shown per anomaly.
pub const ANOMALY_OPS_MAX: usize = 50;

/// What the run was.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub name: String,
    pub started: String,
    pub duration: Duration,
    pub masters: usize,
    pub workloads: Vec<String>,
    pub nemeses: Vec<String>,
    pub extra: Vec<(String, String)>,
}

/// Everything a report is made from.
pub struct Report<'a> {
    pub info: &'a RunInfo,
    pub ops: &'a [Op],
    pub nemesis: &'a [NemesisEvent],
    pub results: &'a [CheckResult],
}

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("encoding results: {0}")]
    Json(#[from] serde_json::Error),
    #[error("drawing {chart}: {message}")]
    Chart { chart: String, message: String },
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Fail,
    /// Unknown, or never completed (then it runs to the end of the run).
    Info,
}

/// One operation from invocation to completion, in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Interval {
    start: u64,
    end: u64,
    outcome: Outcome,
    /// Whether a completion was recorded (latency is only meaningful then).
    completed: bool,
    lane: usize,
}

/// A span of time a fault was (or may have been) in effect, in nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    fault: String,
    start: u64,
    end: u64,
}

/// The end of the run in nanoseconds: its duration, or the last record if later.
fn run_end(report: &Report<'_>) -> u64 {
    let d = u64::try_from(report.info.duration.as_nanos()).unwrap_or(u64::MAX);
    let last_op = report.ops.iter().map(|o| o.time).max().unwrap_or(0);
    let last_ev = report.nemesis.iter().map(|e| e.time).max().unwrap_or(0);
    d.max(last_op).max(last_ev)
}

/// Pairs invocations with completions and puts each on the first lane free at its start.
/// Lone records (watch events, relists) are skipped.
fn intervals(ops: &[Op], end: u64) -> Vec<Interval> {
    let mut open: BTreeMap<u64, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for op in ops {
        if matches!(op.f, F::Event | F::Relist) {
            continue;
        }
        match op.kind {
            Kind::Invoke => {
                open.insert(op.process, op.time);
            }
            Kind::Ok | Kind::Fail | Kind::Info => {
                let Some(start) = open.remove(&op.process) else {
                    continue;
                };
                let outcome = match op.kind {
                    Kind::Ok => Outcome::Ok,
                    Kind::Fail => Outcome::Fail,
                    _ => Outcome::Info,
                };
                out.push(Interval {
                    start,
                    end: op.time.max(start),
                    outcome,
                    completed: true,
                    lane: 0,
                });
            }
        }
    }
    for start in open.into_values() {
        out.push(Interval {
            start,
            end: end.max(start),
            outcome: Outcome::Info,
            completed: false,
            lane: 0,
        });
    }
    out.sort_by_key(|i| (i.start, i.end));
    let mut lanes_free_at: Vec<u64> = Vec::new();
    for i in &mut out {
        match lanes_free_at.iter().position(|&free| free <= i.start) {
            Some(lane) => {
                lanes_free_at[lane] = i.end;
                i.lane = lane;
            }
            None => {
                i.lane = lanes_free_at.len();
                lanes_free_at.push(i.end);
            }
        }
    }
    out
}

/// Windows of installed or indeterminate faults; a window never stopped runs to `end`.
fn windows(events: &[NemesisEvent], end: u64) -> Vec<Window> {
    let mut events: Vec<&NemesisEvent> = events.iter().collect();
    events.sort_by_key(|e| e.time);
    let mut open: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        match e.phase {
            Phase::Start if e.status != FaultStatus::Skipped => {
                open.entry(&e.fault).or_insert(e.time);
            }
            Phase::Start => {}
            Phase::Stop => {
                if let Some(start) = open.remove(e.fault.as_str()) {
                    out.push(Window {
                        fault: e.fault.clone(),
                        start,
                        end: e.time.max(start),
                    });
                }
            }
        }
    }
    for (fault, start) in open {
        out.push(Window {
            fault: fault.to_string(),
            start,
            end: end.max(start),
        });
    }
    out.sort_by_key(|w| w.start);
    out
}

/// Every `n`th item so that at most `max` remain.
fn sample<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    if items.len() <= max || max == 0 {
        return items.to_vec();
    }
    (0..max)
        .map(|k| items[k * items.len() / max].clone())
        .collect()
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn colour(o: Outcome) -> RGBColor {
    match o {
        Outcome::Ok => RGBColor(40, 160, 60),
        Outcome::Fail => RGBColor(210, 40, 40),
        Outcome::Info => RGBColor(240, 150, 20),
    }
}

const BAND: RGBAColor = RGBAColor(90, 110, 230, 0.18);

fn f_name(f: F) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{f:?}"))
}

impl Report<'_> {
    /// Writes summary.md, results.json, timeline.svg and latency.svg into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), ReportError> {
        let put = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|source| ReportError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        put("summary.md", &self.summary())?;
        #[derive(Serialize)]
        struct Results<'a> {
            info: &'a RunInfo,
            results: &'a [CheckResult],
        }
        let json = serde_json::to_string_pretty(&Results {
            info: self.info,
            results: self.results,
        })?;
        put("results.json", &json)?;
        put("timeline.svg", &self.timeline_svg()?)?;
        put("latency.svg", &self.latency_svg()?)?;
        Ok(())
    }

    /// The verdict over every checker: any invalid wins, then any unknown.
    pub fn verdict(&self) -> String {
        let anomalies: usize = self
            .results
            .iter()
            .filter(|r| r.validity == Validity::Invalid)
            .map(|r| r.anomalies.len().max(1))
            .sum();
        if self.results.iter().any(|r| r.validity == Validity::Invalid) {
            format!("INVALID: {anomalies} anomalies")
        } else if self.results.iter().any(|r| r.validity == Validity::Unknown) {
            "UNKNOWN".to_string()
        } else {
            "VALID".to_string()
        }
    }

    /// The Markdown summary.
    pub fn summary(&self) -> String {
        let i = self.info;
        let mut s = String::new();
        let _ = writeln!(s, "# Jepsen run {}\n", i.name);
        let _ = writeln!(s, "- started: {}", i.started);
        let _ = writeln!(s, "- duration: {:.1} s", i.duration.as_secs_f64());
        let _ = writeln!(s, "- masters: {}", i.masters);
        let _ = writeln!(s, "- workloads: {}", i.workloads.join(", "));
        let _ = writeln!(s, "- nemeses: {}", i.nemeses.join(", "));
        for (k, v) in &i.extra {
            let _ = writeln!(s, "- {k}: {v}");
        }

        let _ = writeln!(s, "\n## Operations\n");
        let _ = writeln!(s, "| f | ok | fail | info |\n|---|---:|---:|---:|");
        let mut counts: BTreeMap<String, [usize; 3]> = BTreeMap::new();
        for op in self.ops {
            let slot = match op.kind {
                Kind::Invoke => continue,
                Kind::Ok => 0,
                Kind::Fail => 1,
                Kind::Info => 2,
            };
            counts.entry(f_name(op.f)).or_default()[slot] += 1;
        }
        for (f, [ok, fail, info]) in &counts {
            let _ = writeln!(s, "| {f} | {ok} | {fail} | {info} |");
        }

        let _ = writeln!(s, "\n## Faults\n");
        if self.nemesis.is_empty() {
            let _ = writeln!(s, "None.");
        }
        let mut faults: BTreeMap<&str, Vec<&NemesisEvent>> = BTreeMap::new();
        for e in self.nemesis {
            faults.entry(&e.fault).or_default().push(e);
        }
        let end = run_end(self);
        let wins = windows(self.nemesis, end);
        for (fault, events) in &faults {
            let _ = writeln!(s, "### {fault}\n");
            for w in wins.iter().filter(|w| w.fault == *fault) {
                let _ = writeln!(s, "- window {:.1}–{:.1} s", secs(w.start), secs(w.end));
            }
            for e in events {
                let phase = match e.phase {
                    Phase::Start => "start",
                    Phase::Stop => "stop",
                };
                let status = match e.status {
                    FaultStatus::Installed => "installed",
                    FaultStatus::Skipped => "skipped",
                    FaultStatus::Indeterminate => "indeterminate",
                };
                let why = if e.status == FaultStatus::Skipped {
                    "because: "
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "- {:.1} s {phase} {status}: {why}{}",
                    secs(e.time),
                    e.detail
                );
            }
            let _ = writeln!(s);
        }

        let _ = writeln!(s, "## Checkers\n");
        for r in self.results {
            let v = match r.validity {
                Validity::Valid => "valid",
                Validity::Invalid => "INVALID",
                Validity::Unknown => "unknown",
            };
            let _ = writeln!(s, "### {}: {v}\n\n{}\n", r.name, r.summary);
            for a in r.anomalies.iter().take(ANOMALIES_LISTED_MAX) {
                let key = a
                    .key
                    .as_deref()
                    .map(|k| format!(" ({k})"))
                    .unwrap_or_default();
                let _ = writeln!(s, "#### {}{key}\n\n{}\n\n```json", a.kind, a.message);
                for op in a.ops.iter().take(ANOMALY_OPS_MAX) {
                    let line = serde_json::to_string(op).unwrap_or_else(|e| e.to_string());
                    let _ = writeln!(s, "{line}");
                }
                if a.ops.len() > ANOMALY_OPS_MAX {
                    let _ = writeln!(s, "... {} more ops", a.ops.len() - ANOMALY_OPS_MAX);
                }
                let _ = writeln!(s, "```\n");
            }
            if r.anomalies.len() > ANOMALIES_LISTED_MAX {
                let _ = writeln!(
                    s,
                    "... and {} more anomalies (see results.json)\n",
                    r.anomalies.len() - ANOMALIES_LISTED_MAX
                );
            }
        }

        let _ = writeln!(s, "## Charts\n");
        let _ = writeln!(s, "- [timeline](timeline.svg)\n- [latency](latency.svg)\n");
        let _ = writeln!(s, "{}", self.verdict());
        s
    }

    /// Every operation as a bar on a client lane, fault windows shaded.
    fn timeline_svg(&self) -> Result<String, ReportError> {
        let end = run_end(self);
        let all = intervals(self.ops, end);
        let lanes = all.iter().map(|i| i.lane + 1).max().unwrap_or(1) as f64;
        let bars = sample(&all, CHART_MARKS_MAX);
        let mut title = format!("{}: operations by client lane", self.info.name);
        if bars.len() < all.len() {
            let _ = write!(title, " (sampled {} of {})", bars.len(), all.len());
        }
        let wins = windows(self.nemesis, end);
        let err = |e: &dyn std::fmt::Display| ReportError::Chart {
            chart: "timeline".into(),
            message: e.to_string(),
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1400, 700)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let x_max = secs(end).max(1e-3);
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..x_max, 0f64..lanes)
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("time (s)")
                .y_desc("client lane")
                .draw()
                .map_err(|e| err(&e))?;
            draw_windows(&mut chart, &wins, lanes).map_err(|e| err(&e))?;
            chart
                .draw_series(bars.iter().map(|i| {
                    let y = i.lane as f64;
                    Rectangle::new(
                        [(secs(i.start), y + 0.15), (secs(i.end), y + 0.85)],
                        colour(i.outcome).filled(),
                    )
                }))
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }

    /// Latency of each completed operation over time, fault windows shaded.
    fn latency_svg(&self) -> Result<String, ReportError> {
        let end = run_end(self);
        let all: Vec<(f64, f64, Outcome)> = intervals(self.ops, end)
            .into_iter()
            .filter(|i| i.completed)
            .map(|i| {
                let ms = ((i.end - i.start) as f64 / 1e6).max(0.01);
                (secs(i.start), ms, i.outcome)
            })
            .collect();
        let points = sample(&all, CHART_MARKS_MAX);
        let mut title = format!("{}: latency of completed operations", self.info.name);
        if points.len() < all.len() {
            let _ = write!(title, " (sampled {} of {})", points.len(), all.len());
        }
        let y_max = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 2.0;
        let wins = windows(self.nemesis, end);
        let err = |e: &dyn std::fmt::Display| ReportError::Chart {
            chart: "latency".into(),
            message: e.to_string(),
        };
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (1400, 600)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let x_max = secs(end).max(1e-3);
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0f64..x_max, (0.01f64..y_max).log_scale())
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("time (s)")
                .y_desc("latency (ms, log)")
                .draw()
                .map_err(|e| err(&e))?;
            chart
                .draw_series(wins.iter().map(|w| {
                    Rectangle::new([(secs(w.start), 0.01), (secs(w.end), y_max)], BAND.filled())
                }))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(wins.iter().map(|w| {
                    Text::new(
                        w.fault.clone(),
                        (secs(w.start), y_max / 1.5),
                        ("sans-serif", 12),
                    )
                }))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&(x, y, o)| Circle::new((x, y), 2, colour(o).filled())),
                )
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }
}

type LinearChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Shades each fault window as a translucent band labelled with the fault's name.
fn draw_windows(
    chart: &mut LinearChart<'_, '_>,
    wins: &[Window],
    top: f64,
) -> Result<(), DrawingAreaErrorKind<std::io::Error>> {
    chart.draw_series(
        wins.iter()
            .map(|w| Rectangle::new([(secs(w.start), 0.0), (secs(w.end), top)], BAND.filled())),
    )?;
    chart.draw_series(wins.iter().map(|w| {
        Text::new(
            w.fault.clone(),
            (secs(w.start), top - 0.1),
            ("sans-serif", 12),
        )
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::Anomaly;
    use crate::history::Value;

    fn op(process: u64, kind: Kind, f: F, time_ms: u64) -> Op {
        Op {
            process,
            kind,
            f,
            key: Some("r1".into()),
            value: Value::Int(1),
            time: time_ms * 1_000_000,
            node: None,
            error: None,
        }
    }

    fn ev(
        time_ms: u64,
        fault: &str,
        phase: Phase,
        status: FaultStatus,
        detail: &str,
    ) -> NemesisEvent {
        NemesisEvent {
            time: time_ms * 1_000_000,
            fault: fault.into(),
            phase,
            status,
            detail: detail.into(),
        }
    }

    fn history() -> (Vec<Op>, Vec<NemesisEvent>) {
        let ops = vec![
            op(0, Kind::Invoke, F::Write, 0),
            op(1, Kind::Invoke, F::Read, 10),
            op(0, Kind::Ok, F::Write, 50),
            op(1, Kind::Fail, F::Read, 80),
            op(2, Kind::Invoke, F::Cas, 100),
            op(0, Kind::Invoke, F::Read, 120),
            op(2, Kind::Info, F::Cas, 3_100),
            op(0, Kind::Ok, F::Read, 200),
            op(5, Kind::Ok, F::Event, 250),
            op(3, Kind::Invoke, F::Write, 3_200),
            op(4, Kind::Invoke, F::Write, 3_300),
            op(3, Kind::Ok, F::Write, 3_400),
        ];
        let nem = vec![
            ev(
                1_000,
                "partition-halves",
                Phase::Start,
                FaultStatus::Installed,
                "m1 m2 | m3",
            ),
            ev(
                2_000,
                "partition-halves",
                Phase::Stop,
                FaultStatus::Installed,
                "healed",
            ),
            ev(
                2_500,
                "kill",
                Phase::Start,
                FaultStatus::Indeterminate,
                "m2",
            ),
            ev(
                3_000,
                "kill",
                Phase::Stop,
                FaultStatus::Installed,
                "m2 restarted",
            ),
            ev(
                3_100,
                "clock-skew",
                Phase::Start,
                FaultStatus::Skipped,
                "libfaketime not installed",
            ),
        ];
        (ops, nem)
    }

    #[test]
    fn report_writes_summary_results_and_charts() {
        let (ops, nem) = history();
        let info = RunInfo {
            name: "test-run".into(),
            started: "2026-11-28T08:00:00Z".into(),
            duration: Duration::from_secs(4),
            masters: 3,
            workloads: vec!["register".into()],
            nemeses: vec![
                "partition-halves".into(),
                "kill".into(),
                "clock-skew".into(),
            ],
            extra: vec![("seed".into(), "7".into())],
        };
        let results = vec![CheckResult {
            name: "linearizable-register".into(),
            validity: Validity::Invalid,
            summary: "1 key, 1 anomaly".into(),
            anomalies: vec![Anomaly {
                kind: "nonlinearizable".into(),
                key: Some("r1".into()),
                message: "read 1 after the write of 2 completed".into(),
                ops: ops[..4].to_vec(),
            }],
        }];
        let dir = tempfile::tempdir().unwrap();
        Report {
            info: &info,
            ops: &ops,
            nemesis: &nem,
            results: &results,
        }
        .write(dir.path())
        .unwrap();
        for f in ["summary.md", "results.json", "timeline.svg", "latency.svg"] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(
            summary.trim_end().ends_with("INVALID: 1 anomalies"),
            "{summary}"
        );
        assert!(summary.contains("libfaketime not installed"), "{summary}");
        assert!(
            summary.contains("read 1 after the write of 2 completed"),
            "{summary}"
        );
        assert!(summary.contains("window 1.0–2.0 s"), "{summary}");
        assert!(summary.contains("| write | 2 | 0 | 0 |"), "{summary}");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("results.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["results"][0]["validity"], "invalid");
        for f in ["timeline.svg", "latency.svg"] {
            let svg = std::fs::read_to_string(dir.path().join(f)).unwrap();
            assert!(svg.contains("<svg"), "{f}");
            assert!(svg.contains("<text"), "{f}");
            assert!(svg.contains("opacity=\"0.18\""), "{f}: no translucent band");
            assert!(svg.contains("partition-halves"), "{f}: no fault label");
        }
    }

    #[test]
    fn report_lanes_are_reused_and_unfinished_ops_run_to_the_end() {
        let (ops, _) = history();
        let iv = intervals(&ops, 4_000_000_000);
        // The event record is skipped; 6 invocations make 6 bars.
        assert_eq!(iv.len(), 6);
        let lanes = iv.iter().map(|i| i.lane).max().unwrap() + 1;
        assert!(lanes <= 3, "{iv:?}");
        let never = iv.iter().find(|i| !i.completed).unwrap();
        assert_eq!((never.end, never.outcome), (4_000_000_000, Outcome::Info));
    }

    #[test]
    fn report_windows_skip_skipped_faults_and_close_open_ones() {
        let (_, mut nem) = history();
        nem.push(ev(
            3_500,
            "pause",
            Phase::Start,
            FaultStatus::Installed,
            "m1",
        ));
        let w = windows(&nem, 4_000_000_000);
        let names: Vec<_> = w.iter().map(|w| w.fault.as_str()).collect();
        assert_eq!(names, ["partition-halves", "kill", "pause"]);
        assert_eq!(w[2].end, 4_000_000_000);
    }

    #[test]
    fn report_sample_keeps_at_most_max() {
        let v: Vec<u32> = (0..100).collect();
        assert_eq!(sample(&v, 10).len(), 10);
        assert_eq!(sample(&v, 200).len(), 100);
    }
}
