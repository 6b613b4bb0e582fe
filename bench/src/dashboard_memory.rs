//! The dashboard memory benchmark (`store-bench --dashboard-memory`): one `keelson master`
//! process, its resident memory idle, then with `--pods` pods stored (default 1,000), then
//! with dashboards open on the pods page, and the ratios against idle in the same run.
//!
//! A dashboard is simulated by the requests its pods page makes, with its credential (the
//! login cookie and `X-Keelson-UI: 1`): the page and its script, the namespaces, the whole pod
//! list, and the pod watch held open and read while memory is measured. The master cannot
//! tell this from Chromium (the browser's own memory is not the master's).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};

use crate::api_target::ApiTarget;
use crate::processes::{free_tcp_ports, free_udp_ports, Processes};

/// The most pods one run creates.
pub(crate) const PODS_MAX: usize = 100_000;
/// The most dashboards held open at once.
pub(crate) const DASHBOARDS_MAX: usize = 64;
const TOKEN: &str = "keelson-bench-token-0123456789";
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";
/// Concurrent creators.
const CREATE_CLIENTS: usize = 16;
/// How long the master gets to serve its API.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long memory settles before it is sampled.
const SETTLE: Duration = Duration::from_secs(5);
/// Samples per measurement, one a second; the largest is reported.
const SAMPLES: usize = 5;
/// The most bytes of one page or list read.
const BODY_BYTES_MAX: usize = 256 * 1024 * 1024;

/// What one run measured, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Memory {
    pub(crate) idle: u64,
    pub(crate) with_pods: u64,
    pub(crate) with_dashboards: u64,
}

/// The report's lines (pure, for the numbers of one run).
pub(crate) fn report(memory: Memory, pods: usize, dashboards: usize, list_bytes: usize) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let ratio = |b: u64| {
        if memory.idle == 0 {
            0.0
        } else {
            b as f64 / memory.idle as f64
        }
    };
    let lines = [
        (
            "master VmRSS idle (empty cluster)".to_string(),
            format!("{:>7.1} MB", mb(memory.idle)),
        ),
        (
            format!("master VmRSS with {pods} pods stored"),
            format!(
                "{:>7.1} MB  ({:.2}x idle)",
                mb(memory.with_pods),
                ratio(memory.with_pods)
            ),
        ),
        (
            format!("master VmRSS with {dashboards} dashboard(s) on the pods page"),
            format!(
                "{:>7.1} MB  ({:.2}x idle; +{:.1} MB over the pods alone)",
                mb(memory.with_dashboards),
                ratio(memory.with_dashboards),
                mb(memory.with_dashboards.saturating_sub(memory.with_pods))
            ),
        ),
    ];
    let mut out = String::new();
    for (label, value) in lines {
        out.push_str(&format!("{label:<52} {value}\n"));
    }
    out.push_str(&format!(
        "the pod list the page reads: {:.1} MB of JSON",
        list_bytes as f64 / 1e6
    ));
    out
}

/// VmRSS of a process, in bytes.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024)
}

/// The largest of [`SAMPLES`] VmRSS readings after [`SETTLE`].
async fn sample(pid: u32, processes: &mut Processes) -> anyhow::Result<u64> {
    tokio::time::sleep(SETTLE).await;
    let mut max = 0;
    for _ in 0..SAMPLES {
        processes.check_running()?;
        let rss = rss_of(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"))?;
        max = max.max(rss);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(max)
}

fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("dash-{i:06}"), "labels": {"bench": "dashboard"}},
        "spec": {"containers": [{"name": "c", "image": "keelson.local/busybox:stable",
                                  "command": ["sleep", "3600"]}]},
    })
}

pub(crate) async fn run(
    keelson: &Path,
    dir: &Path,
    pods: usize,
    dashboards: usize,
) -> anyhow::Result<()> {
    if pods == 0 || pods > PODS_MAX {
        bail!("--pods must be 1 to {PODS_MAX} with --dashboard-memory");
    }
    if dashboards == 0 || dashboards > DASHBOARDS_MAX {
        bail!("--dashboards must be 1 to {DASHBOARDS_MAX}");
    }
    let peer = format!("127.0.0.1:{}", free_udp_ports(1)?[0]);
    let api_port = free_tcp_ports(1)?[0];
    let data = dir.join("m0");
    let mut processes = Processes::new();
    let mut command = Command::new(keelson);
    command
        .arg("master")
        .args(["--name", "m0", "--peer", &peer])
        .args(["--peers", &format!("m0={peer}"), "--token", TOKEN])
        .arg("--api")
        .arg(format!("127.0.0.1:{api_port}"))
        .arg("--data-dir")
        .arg(&data)
        .env("RUST_LOG", "warn");
    let pid = processes.spawn("keelson master m0", command, &dir.join("m0.log"))?;
    println!("one keelson master (pid {pid}), data in {}", data.display());

    let kubeconfig = data.join("admin.kubeconfig");
    let deadline = Instant::now() + READY_TIMEOUT;
    while !kubeconfig.exists() {
        processes.check_running()?;
        if Instant::now() > deadline {
            bail!("the master wrote no admin.kubeconfig in {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut api = ApiTarget::from_kubeconfig(&kubeconfig, ([127, 0, 0, 1], api_port).into())?;
    api.wait_ready(READY_TIMEOUT).await?;

    eprintln!("measuring the idle master");
    let idle = sample(pid, &mut processes).await?;

    eprintln!("creating {pods} pods");
    let started = Instant::now();
    let mut creators = Vec::new();
    for c in 0..CREATE_CLIENTS {
        let mut client = api.clone();
        creators.push(tokio::spawn(async move {
            for i in (c..pods).step_by(CREATE_CLIENTS) {
                let body = serde_json::to_vec(&pod(i)).map_err(|e| e.to_string())?;
                let (code, answer) = client
                    .request(hyper::Method::POST, PODS_PATH, Some(body))
                    .await?;
                if code != 201 {
                    return Err(format!(
                        "creating pod {i} answered {code}: {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for creator in creators {
        creator.await?.map_err(|e| anyhow!(e))?;
    }
    println!(
        "created {pods} pods in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let with_pods = sample(pid, &mut processes).await?;

    eprintln!("opening {dashboards} dashboard(s) on the pods page");
    let token = api
        .authorization()
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_string();
    let mut watches = Vec::new();
    let mut list_bytes = 0;
    for _ in 0..dashboards {
        let (bytes, watch) = open_dashboard(&api, &token).await?;
        list_bytes = bytes;
        watches.push(watch);
    }
    let with_dashboards = sample(pid, &mut processes).await?;
    for watch in &watches {
        if watch.is_finished() {
            bail!("a dashboard's pod watch ended while memory was measured");
        }
    }
    for watch in watches {
        watch.abort();
    }
    println!();
    println!(
        "{}",
        report(
            Memory {
                idle,
                with_pods,
                with_dashboards,
            },
            pods,
            dashboards,
            list_bytes,
        )
    );
    Ok(())
}

/// A GET with the dashboard's credential; the status and body.
async fn get(
    conn: &mut SendRequest<Full<Bytes>>,
    api: &ApiTarget,
    token: &str,
    path: &str,
) -> anyhow::Result<(u16, Bytes)> {
    conn.ready().await?;
    let response = conn.send_request(request(api, token, path)?).await?;
    let code = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), BODY_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| anyhow!("reading {path}: {e}"))?
        .to_bytes();
    Ok((code, body))
}

fn request(
    api: &ApiTarget,
    token: &str,
    path: &str,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    Ok(hyper::Request::builder()
        .uri(path)
        .header("host", api.addr().to_string())
        .header("cookie", format!("keelson_ui_token={token}"))
        .header("x-keelson-ui", "1")
        .header("accept", "application/json")
        .body(Full::new(Bytes::new()))?)
}

/// What the pods page requests; returns the size of the pod list and the task reading the
/// watch the page holds open.
async fn open_dashboard(
    api: &ApiTarget,
    token: &str,
) -> anyhow::Result<(usize, tokio::task::JoinHandle<()>)> {
    let mut conn = api.connect().await.map_err(|e| anyhow!(e))?;
    for path in ["/ui/pods", "/ui/assets/app.js", "/api/v1/namespaces"] {
        let (code, _) = get(&mut conn, api, token, path).await?;
        if code != 200 {
            bail!("the dashboard's GET {path} answered {code}");
        }
    }
    let (code, list) = get(&mut conn, api, token, "/api/v1/pods").await?;
    if code != 200 {
        bail!("the dashboard's pod list answered {code}");
    }
    let value: Value = serde_json::from_slice(&list).context("the pod list is not JSON")?;
    let rv = value["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    // The watch on a connection of its own, as the browser's streaming fetch.
    let mut watch_conn = api.connect().await.map_err(|e| anyhow!(e))?;
    watch_conn.ready().await?;
    let path = format!("/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={rv}");
    let response = watch_conn.send_request(request(api, token, &path)?).await?;
    if response.status().as_u16() != 200 {
        bail!("the dashboard's pod watch answered {}", response.status());
    }
    let task = tokio::spawn(async move {
        let _conn = watch_conn;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return;
            }
        }
    });
    Ok((list.len(), task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_gives_ratios_against_idle() {
        let text = report(
            Memory {
                idle: 50_000_000,
                with_pods: 60_000_000,
                with_dashboards: 75_000_000,
            },
            1000,
            1,
            2_500_000,
        );
        assert!(text.contains("50.0 MB"), "{text}");
        assert!(text.contains("(1.20x idle)"), "{text}");
        assert!(
            text.contains("(1.50x idle; +15.0 MB over the pods alone)"),
            "{text}"
        );
        assert!(text.contains("2.5 MB of JSON"), "{text}");
    }
}
