//! `kctl logs POD|TYPE/NAME [CONTAINER]`: streams `GET .../pods/NAME/log` to stdout as raw
//! bytes; for a workload, picks a pod its selector matches.

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::Value;

use crate::client::{ApiError, ACCEPT_ANY};
use crate::printer::{meta_str, warn};
use crate::selector::label_selector_text;
use crate::session::Session;

/// The annotation naming a pod's default container.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// POD, or TYPE/NAME (deploy/web, rs/web-1, rc/web, pod/web-1)
    target: String,
    /// The container (same as -c)
    container_arg: Option<String>,
    /// The container whose logs to print
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// Keep streaming new lines
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines (-1: all)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    tail: i64,
    /// Prefix each line with its timestamp
    #[arg(long)]
    timestamps: bool,
    /// Only lines newer than this (e.g. 5s, 2m, 3h)
    #[arg(long)]
    since: Option<String>,
    /// The previous, terminated instance of the container
    #[arg(short = 'p', long)]
    previous: bool,
    /// At most this many bytes
    #[arg(long)]
    limit_bytes: Option<u64>,
}

/// The log request's query parameters.
pub(crate) fn log_query(
    args: &LogsArgs,
    container: &str,
    since_seconds: Option<u64>,
) -> Vec<(&'static str, String)> {
    let mut query = vec![("container", container.to_string())];
    if args.follow {
        query.push(("follow", "true".to_string()));
    }
    if args.tail >= 0 {
        query.push(("tailLines", args.tail.to_string()));
    }
    if args.timestamps {
        query.push(("timestamps", "true".to_string()));
    }
    if let Some(seconds) = since_seconds {
        query.push(("sinceSeconds", seconds.max(1).to_string()));
    }
    if args.previous {
        query.push(("previous", "true".to_string()));
    }
    if let Some(limit) = args.limit_bytes {
        query.push(("limitBytes", limit.to_string()));
    }
    query
}

/// The container to read: the one asked for, else the pod's default-container annotation,
/// else its first container.
pub(crate) fn pick_container(pod: &Value, asked: Option<&str>) -> anyhow::Result<String> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    if let Some(asked) = asked {
        return Ok(asked.to_string());
    }
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|c| names.contains(c));
    let Some(chosen) = annotated.or_else(|| names.first().copied()) else {
        bail!("pod {} has no containers", meta_str(pod, "name"));
    };
    if names.len() > 1 && annotated.is_none() {
        warn(&format!(
            "Defaulted container {chosen:?} out of: {}",
            names.join(", ")
        ));
    }
    Ok(chosen.to_string())
}

pub(crate) async fn run(session: &mut Session, args: LogsArgs) -> anyhow::Result<()> {
    let ns = session.namespace.clone();
    let pod_name = match args.target.split_once('/') {
        None => args.target.clone(),
        Some((typ, name)) => {
            let resource = session.resolve(typ).await?;
            if resource.kind == "Pod" && resource.group.is_empty() {
                name.to_string()
            } else {
                pod_of_workload(session, &resource, &ns, name).await?
            }
        }
    };
    let pod_path = format!("/api/v1/namespaces/{ns}/pods/{pod_name}");
    let pod = session.client.get(&pod_path, &[]).await?;
    let asked = args.container.as_deref().or(args.container_arg.as_deref());
    let container = pick_container(&pod, asked)?;
    let since_seconds = match &args.since {
        Some(text) => Some(
            crate::duration::parse_duration(text)
                .context("--since")?
                .as_secs(),
        ),
        None => None,
    };
    let url = session.client.url(
        &format!("{pod_path}/log"),
        &log_query(&args, &container, since_seconds),
    );
    let mut response = session
        .client
        .send_raw(Method::GET, url, ACCEPT_ANY, None, true)
        .await?;
    use std::io::Write as _;
    let mut stdout = std::io::stdout();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|err| ApiError::Connect(format!("log stream broken: {err}")))?;
        let Some(chunk) = chunk else { break };
        stdout.write_all(&chunk)?;
        stdout.flush()?;
    }
    Ok(())
}

/// The pod to read for a deployment, replica set, replication controller (or any object with
/// a `spec.selector`): a running one if there is one, else the first by name.
async fn pod_of_workload(
    session: &Session,
    resource: &crate::discovery::ApiResource,
    ns: &str,
    name: &str,
) -> anyhow::Result<String> {
    let object = session
        .client
        .get(&resource.object_path(Some(ns), name), &[])
        .await?;
    let Some(selector) = object
        .pointer("/spec/selector")
        .and_then(label_selector_text)
        .filter(|s| !s.is_empty())
    else {
        bail!(
            "cannot get logs of {}/{name}: it has no pod selector",
            resource.type_name()
        );
    };
    let pods = session
        .client
        .get(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &[("labelSelector", selector), ("limit", "500".to_string())],
        )
        .await?;
    let mut items: Vec<&Value> = pods
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    items.sort_by_key(|p| meta_str(p, "name").to_string());
    let running = items
        .iter()
        .find(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Running"));
    let Some(chosen) = running.or(items.first()) else {
        bail!("no pods found for {}/{name}", resource.type_name());
    };
    if items.len() > 1 {
        warn(&format!(
            "Found {} pods, using pod/{}",
            items.len(),
            meta_str(chosen, "name")
        ));
    }
    Ok(meta_str(chosen, "name").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use serde_json::json;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        logs: LogsArgs,
    }

    #[test]
    fn query_from_flags() {
        let w = Wrapper::parse_from([
            "logs",
            "web-1",
            "-f",
            "--tail",
            "10",
            "--timestamps",
            "-p",
            "--limit-bytes",
            "100",
        ]);
        assert_eq!(
            log_query(&w.logs, "main", Some(300)),
            vec![
                ("container", "main".to_string()),
                ("follow", "true".to_string()),
                ("tailLines", "10".to_string()),
                ("timestamps", "true".to_string()),
                ("sinceSeconds", "300".to_string()),
                ("previous", "true".to_string()),
                ("limitBytes", "100".to_string()),
            ]
        );
        let plain = Wrapper::parse_from(["logs", "web-1"]);
        assert_eq!(
            log_query(&plain.logs, "c", None),
            vec![("container", "c".to_string())]
        );
    }

    #[test]
    fn containers() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main"}, {"name": "side"}]}});
        assert_eq!(pick_container(&pod, None).unwrap(), "main");
        assert_eq!(pick_container(&pod, Some("side")).unwrap(), "side");
        let annotated = json!({"metadata": {"name": "p", "annotations": {DEFAULT_CONTAINER_ANNOTATION: "side"}},
            "spec": {"containers": [{"name": "main"}, {"name": "side"}]}});
        assert_eq!(pick_container(&annotated, None).unwrap(), "side");
        assert!(pick_container(&json!({"metadata": {"name": "p"}}), None).is_err());
    }
}
