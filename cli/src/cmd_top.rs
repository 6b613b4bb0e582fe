//! `kctl top nodes|pods`: CPU and memory use from the resource metrics API
//! (`metrics.k8s.io/v1beta1`), printed as kubectl prints it: nodes with their share of
//! allocatable, pods summed over their containers (or per container with `--containers`).

use anyhow::bail;
use serde_json::Value;

use crate::client::ApiError;
use crate::printer::{meta_str, warn, TabWriter, TABLE_MINWIDTH, TABLE_PADDING};
use crate::session::Session;

const METRICS_ROOT: &str = "/apis/metrics.k8s.io/v1beta1";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TopCommand {
    /// CPU and memory use of nodes
    #[command(alias = "node", alias = "no")]
    Nodes(TopNodesArgs),
    /// CPU and memory use of pods
    #[command(alias = "pod", alias = "po")]
    Pods(TopPodsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct TopNodesArgs {
    /// One node (default: every node)
    name: Option<String>,
    /// Label selector (e.g. role=worker)
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Sort by cpu or memory
    #[arg(long, value_parser = ["cpu", "memory"])]
    sort_by: Option<String>,
    /// Percentages of capacity instead of allocatable
    #[arg(long)]
    show_capacity: bool,
    /// Print no header line
    #[arg(long)]
    no_headers: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct TopPodsArgs {
    /// One pod (default: every pod of the namespace)
    name: Option<String>,
    /// Label selector (e.g. app=web)
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Pods of every namespace
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// One line per container
    #[arg(long)]
    containers: bool,
    /// Sort by cpu or memory
    #[arg(long, value_parser = ["cpu", "memory"])]
    sort_by: Option<String>,
    /// Print no header line
    #[arg(long)]
    no_headers: bool,
}

/// A Kubernetes quantity (`250m`, `123456n`, `2`, `64Mi`, `1G`, `1e3`) as a number.
pub(crate) fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * multiplier)
}

/// Usage as kubectl top prints it: CPU in millicores, memory in MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Use {
    pub(crate) cpu_cores: f64,
    pub(crate) memory_bytes: f64,
}

impl Use {
    fn of(usage: &Value) -> Use {
        let get = |key: &str| {
            usage
                .get(key)
                .and_then(Value::as_str)
                .and_then(parse_quantity)
                .unwrap_or(0.0)
        };
        Use {
            cpu_cores: get("cpu"),
            memory_bytes: get("memory"),
        }
    }

    fn add(self, other: Use) -> Use {
        Use {
            cpu_cores: self.cpu_cores + other.cpu_cores,
            memory_bytes: self.memory_bytes + other.memory_bytes,
        }
    }

    pub(crate) fn cpu_text(self) -> String {
        // Rounded up, as kubectl rounds quantities to millicores (less float noise).
        format!(
            "{}m",
            (self.cpu_cores * 1000.0 - 1e-6).ceil().max(0.0) as u64
        )
    }

    pub(crate) fn memory_text(self) -> String {
        format!("{}Mi", (self.memory_bytes / 1024.0 / 1024.0) as u64)
    }
}

fn percent(used: f64, of: f64) -> String {
    if of <= 0.0 {
        return "<unknown>".to_string();
    }
    format!("{}%", (used * 100.0 / of) as u64)
}

/// The rows of `kctl top nodes`: NAME CPU(cores) CPU(%) MEMORY(bytes) MEMORY(%), from the
/// NodeMetrics and the Node objects (allocatable, or capacity); nodes without metrics show
/// `<unknown>`, as kubectl shows them.
pub(crate) fn node_rows(metrics: &[Value], nodes: &[Value], capacity: bool) -> Vec<[String; 5]> {
    let field = if capacity { "capacity" } else { "allocatable" };
    nodes
        .iter()
        .map(|node| {
            let name = meta_str(node, "name").to_string();
            let found = metrics.iter().find(|m| meta_str(m, "name") == name);
            match found {
                None => [
                    name,
                    "<unknown>".into(),
                    "<unknown>".into(),
                    "<unknown>".into(),
                    "<unknown>".into(),
                ],
                Some(m) => {
                    let used = Use::of(&m["usage"]);
                    let of = Use::of(&node["status"][field]);
                    [
                        name,
                        used.cpu_text(),
                        percent(used.cpu_cores, of.cpu_cores),
                        used.memory_text(),
                        percent(used.memory_bytes, of.memory_bytes),
                    ]
                }
            }
        })
        .collect()
}

/// The rows of `kctl top pods`: (namespace, pod, container or "", use), summed per pod
/// unless `containers`.
pub(crate) fn pod_rows(metrics: &[Value], containers: bool) -> Vec<(String, String, String, Use)> {
    let mut rows = Vec::new();
    for m in metrics {
        let namespace = meta_str(m, "namespace").to_string();
        let pod = meta_str(m, "name").to_string();
        let list = m["containers"].as_array().cloned().unwrap_or_default();
        if containers {
            for c in &list {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                rows.push((namespace.clone(), pod.clone(), name, Use::of(&c["usage"])));
            }
        } else {
            let total = list
                .iter()
                .fold(Use::default(), |acc, c| acc.add(Use::of(&c["usage"])));
            rows.push((namespace, pod, String::new(), total));
        }
    }
    rows
}

fn sort_rows<T>(rows: &mut [T], sort_by: Option<&str>, key: impl Fn(&T) -> Use) {
    match sort_by {
        Some("cpu") => rows.sort_by(|a, b| key(b).cpu_cores.total_cmp(&key(a).cpu_cores)),
        Some("memory") => rows.sort_by(|a, b| key(b).memory_bytes.total_cmp(&key(a).memory_bytes)),
        _ => {}
    }
}

/// GET of a metrics path; a 404 of the whole API says the metrics API is missing.
async fn get_metrics(
    session: &Session,
    path: &str,
    query: &[(&str, String)],
    one: bool,
) -> anyhow::Result<Value> {
    match session.client.get(path, query).await {
        Ok(value) => Ok(value),
        Err(err) if err.is_not_found() && !one => {
            bail!("Metrics API not available")
        }
        Err(err) => Err(err.into()),
    }
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

pub(crate) async fn run(session: &mut Session, command: TopCommand) -> anyhow::Result<()> {
    match command {
        TopCommand::Nodes(args) => nodes(session, args).await,
        TopCommand::Pods(args) => pods(session, args).await,
    }
}

async fn nodes(session: &mut Session, args: TopNodesArgs) -> anyhow::Result<()> {
    let mut query = Vec::new();
    if let Some(selector) = &args.selector {
        query.push(("labelSelector", selector.clone()));
    }
    let (metrics, nodes) = match &args.name {
        Some(name) => {
            let m =
                get_metrics(session, &format!("{METRICS_ROOT}/nodes/{name}"), &[], true).await?;
            let node = session
                .client
                .get(&format!("/api/v1/nodes/{name}"), &[])
                .await?;
            (vec![m], vec![node])
        }
        None => {
            let m = get_metrics(session, &format!("{METRICS_ROOT}/nodes"), &query, false).await?;
            let nodes = session.client.get("/api/v1/nodes", &query).await?;
            (items(&m), items(&nodes))
        }
    };
    if nodes.is_empty() {
        warn("No resources found");
        return Ok(());
    }
    let mut rows = node_rows(&metrics, &nodes, args.show_capacity);
    let used = |row: &[String; 5]| {
        metrics
            .iter()
            .find(|m| meta_str(m, "name") == row[0])
            .map(|m| Use::of(&m["usage"]))
            .unwrap_or_default()
    };
    sort_rows(&mut rows, args.sort_by.as_deref(), used);
    let mut text = String::new();
    if !args.no_headers {
        text.push_str("NAME\tCPU(cores)\tCPU(%)\tMEMORY(bytes)\tMEMORY(%)\t\n");
    }
    for row in rows {
        text.push_str(&row.join("\t"));
        text.push_str("\t\n");
    }
    crate::printer::out(&TabWriter::new(TABLE_MINWIDTH, TABLE_PADDING).format(&text))?;
    Ok(())
}

async fn pods(session: &mut Session, args: TopPodsArgs) -> anyhow::Result<()> {
    if args.name.is_some() && args.selector.is_some() {
        bail!("only one of NAME or --selector can be provided");
    }
    let mut query = Vec::new();
    if let Some(selector) = &args.selector {
        query.push(("labelSelector", selector.clone()));
    }
    let namespace = session.namespace.clone();
    let metrics = match &args.name {
        Some(name) => {
            let path = format!("{METRICS_ROOT}/namespaces/{namespace}/pods/{name}");
            match get_metrics(session, &path, &[], true).await {
                Ok(m) => vec![m],
                Err(err)
                    if err
                        .downcast_ref::<ApiError>()
                        .is_some_and(ApiError::is_not_found) =>
                {
                    bail!("metrics not available yet for pod {namespace}/{name}")
                }
                Err(err) => return Err(err),
            }
        }
        None if args.all_namespaces => {
            items(&get_metrics(session, &format!("{METRICS_ROOT}/pods"), &query, false).await?)
        }
        None => items(
            &get_metrics(
                session,
                &format!("{METRICS_ROOT}/namespaces/{namespace}/pods"),
                &query,
                false,
            )
            .await?,
        ),
    };
    if metrics.is_empty() {
        if args.all_namespaces {
            warn("No resources found");
        } else {
            warn(&format!("No resources found in {namespace} namespace."));
        }
        return Ok(());
    }
    let mut rows = pod_rows(&metrics, args.containers);
    sort_rows(&mut rows, args.sort_by.as_deref(), |row| row.3);
    let mut text = String::new();
    if !args.no_headers {
        if args.all_namespaces {
            text.push_str("NAMESPACE\t");
        }
        text.push_str(if args.containers {
            "POD\tNAME\tCPU(cores)\tMEMORY(bytes)\t\n"
        } else {
            "NAME\tCPU(cores)\tMEMORY(bytes)\t\n"
        });
    }
    for (ns, pod, container, used) in rows {
        if args.all_namespaces {
            text.push_str(&ns);
            text.push('\t');
        }
        text.push_str(&pod);
        text.push('\t');
        if args.containers {
            text.push_str(&container);
            text.push('\t');
        }
        text.push_str(&format!("{}\t{}\t\n", used.cpu_text(), used.memory_text()));
    }
    crate::printer::out(&TabWriter::new(TABLE_MINWIDTH, TABLE_PADDING).format(&text))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse() {
        let cases: &[(&str, Option<f64>)] = &[
            ("2", Some(2.0)),
            ("250m", Some(0.25)),
            ("123456n", Some(0.000_123_456)),
            ("1500u", Some(0.0015)),
            ("64Mi", Some(64.0 * 1024.0 * 1024.0)),
            ("20480Ki", Some(20.0 * 1024.0 * 1024.0)),
            ("1G", Some(1e9)),
            ("1e3", Some(1000.0)),
            ("0.5", Some(0.5)),
            ("12Xi", None),
            ("", None),
        ];
        for (text, want) in cases {
            let got = parse_quantity(text);
            match (got, want) {
                (Some(g), Some(w)) => assert!((g - w).abs() < 1e-12 * w.max(1.0), "{text}: {g}"),
                _ => assert_eq!(got, *want, "{text}"),
            }
        }
    }

    #[test]
    fn node_rows_use_allocatable_and_mark_missing_metrics() {
        let metrics = vec![json!({
            "metadata": {"name": "n1"},
            "usage": {"cpu": "500000000n", "memory": "1048576Ki"},
        })];
        let nodes = vec![
            json!({"metadata": {"name": "n1"}, "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi"},
                "capacity": {"cpu": "4", "memory": "8Gi"}}}),
            json!({"metadata": {"name": "n2"}, "status": {"allocatable": {"cpu": "2"}}}),
        ];
        let rows = node_rows(&metrics, &nodes, false);
        assert_eq!(
            rows[0],
            ["n1", "500m", "25%", "1024Mi", "25%"].map(String::from)
        );
        assert_eq!(rows[1][1], "<unknown>");
        let rows = node_rows(&metrics, &nodes, true);
        assert_eq!(rows[0][2], "12%");
    }

    #[test]
    fn pod_rows_sum_containers_unless_asked_for_each() {
        let metrics = vec![json!({
            "metadata": {"name": "web", "namespace": "default"},
            "containers": [
                {"name": "main", "usage": {"cpu": "1000000n", "memory": "20480Ki"}},
                {"name": "side", "usage": {"cpu": "1500000n", "memory": "1024Ki"}},
            ],
        })];
        let rows = pod_rows(&metrics, false);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].3.cpu_text(), rows[0].3.memory_text()),
            ("3m".to_string(), "21Mi".to_string())
        );
        let rows = pod_rows(&metrics, true);
        let names: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        assert_eq!(names, ["main", "side"]);
        assert_eq!(rows[1].3.cpu_text(), "2m");
    }
}
