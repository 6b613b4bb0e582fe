//! `kctl logs POD|TYPE/NAME [CONTAINER]` and `kctl logs -l SELECTOR`: streams
//! `GET .../pods/NAME/log` to stdout. One pod's log is copied as raw bytes; a workload's pods
//! or a selector's are merged line by line (`--prefix` names each line's pod and container,
//! as kubectl's `[pod/NAME/CONTAINER]`). With `-f` and several pods, at most
//! `--max-log-requests` streams are open at once, and the pods are watched: a new pod is
//! followed once its container has started, a deleted one is dropped.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::client::{ApiError, Client, ACCEPT_ANY, ACCEPT_JSON};
use crate::printer::{meta_str, warn};
use crate::selector::label_selector_text;
use crate::session::Session;
use crate::watch::WatchStream;

/// The annotation naming a pod's default container.
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
/// A log line longer than this is written out in pieces (each piece prefixed).
const LINE_BYTES_MAX: usize = 1 << 20;
/// Pods listed for a selector at most.
const PODS_LISTED_MAX: usize = 500;
/// Times the pod watch is reopened in a row before `-f` gives up.
const WATCH_REOPENS_MAX: u32 = 10;

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// POD, or TYPE/NAME (deploy/web, rs/web-1, rc/web, pod/web-1); a workload's pods are
    /// merged
    target: Option<String>,
    /// The container (same as -c)
    container_arg: Option<String>,
    /// The container whose logs to print
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// The pods whose logs to print, by label selector (e.g. app=web)
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Prefix each line with its source: [pod/NAME/CONTAINER]
    #[arg(long)]
    prefix: bool,
    /// With several pods and -f: the most log streams open at once
    #[arg(long, default_value_t = 5)]
    max_log_requests: usize,
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

fn container_names(pod: &Value) -> Vec<&str> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect()
}

/// The container to read: the one asked for, else the pod's default-container annotation,
/// else its first container; and whether it was a default among several (worth a warning).
pub(crate) fn default_container(pod: &Value, asked: Option<&str>) -> Option<(String, bool)> {
    if let Some(asked) = asked {
        return Some((asked.to_string(), false));
    }
    let names = container_names(pod);
    let annotated = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        .and_then(Value::as_str)
        .filter(|c| names.contains(c));
    let chosen = annotated.or_else(|| names.first().copied())?;
    Some((chosen.to_string(), names.len() > 1 && annotated.is_none()))
}

/// [`default_container`], warning as kubectl does when it picked one of several.
pub(crate) fn pick_container(pod: &Value, asked: Option<&str>) -> anyhow::Result<String> {
    let Some((chosen, defaulted)) = default_container(pod, asked) else {
        bail!("pod {} has no containers", meta_str(pod, "name"));
    };
    if defaulted {
        warn(&format!(
            "Defaulted container {chosen:?} out of: {}",
            container_names(pod).join(", ")
        ));
    }
    Ok(chosen)
}

/// Whether `container` of `pod` has started once (running or terminated now, or before): only
/// then has it a log to read.
pub(crate) fn has_started(pod: &Value, container: &str) -> bool {
    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return false;
    }
    let statuses = ["/status/containerStatuses", "/status/initContainerStatuses"];
    statuses
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter(|s| s.get("name").and_then(Value::as_str) == Some(container))
        .any(|s| {
            let state = |k: &str| s.pointer(k).is_some_and(|v| !v.is_null());
            state("/state/running") || state("/state/terminated") || state("/lastState/terminated")
        })
}

/// kubectl's prefix: `[pod/NAME/CONTAINER] `.
pub(crate) fn line_prefix(pod: &str, container: &str) -> String {
    format!("[pod/{pod}/{container}] ")
}

/// Takes the complete lines out of `pending`, each with `prefix` (a line longer than
/// [`LINE_BYTES_MAX`] is cut, each piece its own line); `end` flushes an unterminated last
/// line too.
pub(crate) fn take_lines(pending: &mut Vec<u8>, prefix: &str, end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut start = 0;
    loop {
        let rest = &pending[start..];
        let cut = match rest.iter().position(|b| *b == b'\n') {
            Some(at) if at <= LINE_BYTES_MAX => Some((at, at + 1)),
            _ if rest.len() > LINE_BYTES_MAX => Some((LINE_BYTES_MAX, LINE_BYTES_MAX)),
            _ if end && !rest.is_empty() => Some((rest.len(), rest.len())),
            _ => None,
        };
        let Some((line_end, next)) = cut else { break };
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(&rest[..line_end]);
        out.push(b'\n');
        start += next;
    }
    pending.drain(..start);
    out
}

/// What the `-f` follower does on seeing a pod.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Open a stream of this container.
    Start(String),
    /// Close the pod's stream.
    Stop,
    /// Over `--max-log-requests`: say so once.
    OverLimit,
    Nothing,
}

/// The follower's decision for one pod event (`ADDED`, `MODIFIED`, `DELETED`): `followed` is
/// whether the pod has (or had) a stream, `open` the streams open now.
pub(crate) fn follow_decision(
    kind: &str,
    pod: &Value,
    asked: Option<&str>,
    followed: bool,
    open: usize,
    max: usize,
) -> Follow {
    // A pod being deleted keeps its stream until its container ends (its last lines are
    // worth reading); a deleted one loses it. `has_started` is false for a pod being deleted,
    // so none is started then.
    if kind == "DELETED" {
        return if followed {
            Follow::Stop
        } else {
            Follow::Nothing
        };
    }
    if followed {
        return Follow::Nothing;
    }
    let Some((container, _)) = default_container(pod, asked) else {
        return Follow::Nothing;
    };
    if !has_started(pod, &container) {
        return Follow::Nothing;
    }
    if open >= max {
        return Follow::OverLimit;
    }
    Follow::Start(container)
}

/// The container asked for, with `-c` or as the second argument.
fn asked(args: &LogsArgs) -> Option<&str> {
    args.container.as_deref().or(args.container_arg.as_deref())
}

fn since_seconds(args: &LogsArgs) -> anyhow::Result<Option<u64>> {
    match &args.since {
        Some(text) => Ok(Some(
            crate::duration::parse_duration(text)
                .context("--since")?
                .as_secs(),
        )),
        None => Ok(None),
    }
}

pub(crate) async fn run(session: &mut Session, args: LogsArgs) -> anyhow::Result<()> {
    let ns = session.namespace.clone();
    let selector = match (&args.selector, &args.target) {
        (Some(_), Some(_)) => bail!("only a selector (-l) or a POD name is allowed"),
        (None, None) => bail!("expected POD, TYPE/NAME or -l SELECTOR"),
        (Some(selector), None) => selector.clone(),
        (None, Some(target)) => match target.split_once('/') {
            None => return one_pod(session, &args, &ns, target).await,
            Some((typ, name)) => {
                let resource = session.resolve(typ).await?;
                if resource.kind == "Pod" && resource.group.is_empty() {
                    return one_pod(session, &args, &ns, name).await;
                }
                selector_of_workload(session, &resource, &ns, name).await?
            }
        },
    };
    if args.follow {
        follow_pods(session, &args, &ns, &selector).await
    } else {
        read_pods(session, &args, &ns, &selector).await
    }
}

/// One pod's log, copied as it comes (prefixed line by line with `--prefix`).
async fn one_pod(
    session: &Session,
    args: &LogsArgs,
    ns: &str,
    pod_name: &str,
) -> anyhow::Result<()> {
    let pod_path = format!("/api/v1/namespaces/{ns}/pods/{pod_name}");
    let pod = session.client.get(&pod_path, &[]).await?;
    let container = pick_container(&pod, asked(args))?;
    let query = log_query(args, &container, since_seconds(args)?);
    let prefix = args.prefix.then(|| line_prefix(pod_name, &container));
    stream(&session.client, &pod_path, &query, prefix.as_deref()).await
}

/// Streams one log to stdout: raw without a prefix, else line by line (whole lines, so
/// streams of several pods never mix within a line).
async fn stream(
    client: &Client,
    pod_path: &str,
    query: &[(&'static str, String)],
    prefix: Option<&str>,
) -> anyhow::Result<()> {
    let url = client.url(&format!("{pod_path}/log"), query);
    let mut response = client
        .send_raw(Method::GET, url, ACCEPT_ANY, None, true)
        .await?;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|err| ApiError::Connect(format!("log stream broken: {err}")))?;
        let Some(chunk) = chunk else { break };
        match prefix {
            None => write_stdout(&chunk)?,
            Some(prefix) => {
                pending.extend_from_slice(&chunk);
                write_stdout(&take_lines(&mut pending, prefix, false))?;
            }
        }
    }
    if let Some(prefix) = prefix {
        write_stdout(&take_lines(&mut pending, prefix, true))?;
    }
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()
}

/// The pods of `selector`, sorted by name, and the list's resourceVersion.
async fn list_pods(
    client: &Client,
    ns: &str,
    selector: &str,
) -> anyhow::Result<(Vec<Value>, String)> {
    let list = client
        .get(
            &format!("/api/v1/namespaces/{ns}/pods"),
            &[
                ("labelSelector", selector.to_string()),
                ("limit", PODS_LISTED_MAX.to_string()),
            ],
        )
        .await?;
    let mut pods: Vec<Value> = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    pods.sort_by(|a, b| meta_str(a, "name").cmp(meta_str(b, "name")));
    let rv = list
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    Ok((pods, rv))
}

/// Without `-f`: each pod's log in turn, in pod-name order.
async fn read_pods(
    session: &Session,
    args: &LogsArgs,
    ns: &str,
    selector: &str,
) -> anyhow::Result<()> {
    let (pods, _) = list_pods(&session.client, ns, selector).await?;
    if pods.is_empty() {
        bail!("no pods found for selector {selector:?} in namespace {ns}");
    }
    let since = since_seconds(args)?;
    let mut failed = 0;
    for pod in &pods {
        let name = meta_str(pod, "name");
        let container = pick_container(pod, asked(args))?;
        let prefix = args.prefix.then(|| line_prefix(name, &container));
        let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
        let query = log_query(args, &container, since);
        if let Err(err) = stream(
            &session.client,
            &path,
            &query,
            Some(prefix.as_deref().unwrap_or("")),
        )
        .await
        {
            failed += 1;
            warn(&format!(
                "error: pod/{name}: {}",
                crate::session::error_message(&err)
            ));
        }
    }
    if failed == pods.len() {
        bail!("no pod's log could be read");
    }
    Ok(())
}

/// One followed pod's stream.
struct Followed {
    task: JoinHandle<()>,
}

/// With `-f`: follows every started pod of `selector` and, through a watch, pods as they
/// start; stops following pods that are deleted. Runs until interrupted.
async fn follow_pods(
    session: &Session,
    args: &LogsArgs,
    ns: &str,
    selector: &str,
) -> anyhow::Result<()> {
    let client = &session.client;
    let since = since_seconds(args)?;
    let asked = asked(args);
    let (pods, mut rv) = list_pods(client, ns, selector).await?;
    let started = pods
        .iter()
        .filter(|p| default_container(p, asked).is_some_and(|(c, _)| has_started(p, &c)))
        .count();
    if started > args.max_log_requests {
        bail!(
            "you are attempting to follow {started} log streams, but maximum allowed concurrency is {}, use --max-log-requests to increase the limit",
            args.max_log_requests
        );
    }
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let mut over_limit: HashSet<String> = HashSet::new();
    let mut act = |kind: &str, pod: &Value, followed: &mut HashMap<String, Followed>| {
        let uid = meta_str(pod, "uid").to_string();
        let name = meta_str(pod, "name").to_string();
        let open = followed.values().filter(|f| !f.task.is_finished()).count();
        let decision = follow_decision(
            kind,
            pod,
            asked,
            followed.contains_key(&uid),
            open,
            args.max_log_requests,
        );
        match decision {
            Follow::Start(container) => {
                let prefix = if args.prefix {
                    line_prefix(&name, &container)
                } else {
                    String::new()
                };
                let client = client.clone();
                let path = format!("/api/v1/namespaces/{ns}/pods/{name}");
                let query = log_query(args, &container, since);
                let shown = name.clone();
                let task = tokio::spawn(async move {
                    if let Err(err) = stream(&client, &path, &query, Some(&prefix)).await {
                        warn(&format!(
                            "error: pod/{shown}: {}",
                            crate::session::error_message(&err)
                        ));
                    }
                });
                over_limit.remove(&uid);
                followed.insert(uid, Followed { task });
            }
            Follow::Stop => {
                if let Some(gone) = followed.remove(&uid) {
                    gone.task.abort();
                }
            }
            Follow::OverLimit => {
                if over_limit.insert(uid) {
                    warn(&format!(
                        "warning: not following pod/{name}: --max-log-requests={} streams are open",
                        args.max_log_requests
                    ));
                }
            }
            Follow::Nothing => {}
        }
    };
    for pod in &pods {
        act("ADDED", pod, &mut followed);
    }
    let mut reopened: u32 = 0;
    loop {
        let query = vec![
            ("labelSelector", selector.to_string()),
            ("watch", "true".to_string()),
            ("allowWatchBookmarks", "true".to_string()),
            ("resourceVersion", rv.clone()),
        ];
        let url = client.url(&format!("/api/v1/namespaces/{ns}/pods"), &query);
        let opened = client
            .send_raw(Method::GET, url, ACCEPT_JSON, None, true)
            .await;
        let mut watch = match opened {
            Ok(response) => WatchStream::new(response),
            Err(err) if reopened < WATCH_REOPENS_MAX => {
                reopened += 1;
                if err.code() == Some(410) {
                    rv = resync(client, ns, selector, &mut followed, &mut act).await?;
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(500 * u64::from(reopened)))
                        .await;
                }
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        loop {
            match watch.next().await {
                Ok(Some(event)) => {
                    if let Some(next) = event
                        .object
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                    {
                        rv = next.to_string();
                    }
                    match event.kind.as_str() {
                        "ADDED" | "MODIFIED" | "DELETED" => {
                            reopened = 0;
                            act(&event.kind, &event.object, &mut followed);
                        }
                        "ERROR" if event.error_status().code == 410 => {
                            rv = resync(client, ns, selector, &mut followed, &mut act).await?;
                            break;
                        }
                        "ERROR" => {
                            bail!("watch failed: {}", event.error_status().message)
                        }
                        _ => {}
                    }
                }
                // The server ended the watch (its timeout): open another from `rv`.
                Ok(None) => break,
                Err(err) => {
                    warn(&format!("warning: pod watch broken, reopening: {err}"));
                    break;
                }
            }
        }
    }
}

/// After a 410: lists again, drops pods that are gone and offers every listed one.
async fn resync<F>(
    client: &Client,
    ns: &str,
    selector: &str,
    followed: &mut HashMap<String, Followed>,
    act: &mut F,
) -> anyhow::Result<String>
where
    F: FnMut(&str, &Value, &mut HashMap<String, Followed>),
{
    let (pods, rv) = list_pods(client, ns, selector).await?;
    let listed: HashSet<&str> = pods.iter().map(|p| meta_str(p, "uid")).collect();
    followed.retain(|uid, f| {
        let keep = listed.contains(uid.as_str());
        if !keep {
            f.task.abort();
        }
        keep
    });
    for pod in &pods {
        act("ADDED", pod, followed);
    }
    Ok(rv)
}

/// The label selector of a deployment, replica set, replication controller (or any object
/// with a `spec.selector`).
async fn selector_of_workload(
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
    Ok(selector)
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

    #[test]
    fn lines_are_prefixed_whole() {
        let prefix = line_prefix("web-1", "app");
        assert_eq!(prefix, "[pod/web-1/app] ");
        // (chunks fed in turn, end of stream, output)
        let cases: [(&[&str], &str); 4] = [
            (&["a\nb", "c\n"], "[p] a\n[p] bc\n"),
            (&["a\n", "tail"], "[p] a\n[p] tail\n"),
            (&["\n"], "[p] \n"),
            (&[""], ""),
        ];
        for (chunks, want) in cases {
            let mut pending = Vec::new();
            let mut out = Vec::new();
            for chunk in chunks {
                pending.extend_from_slice(chunk.as_bytes());
                out.extend(take_lines(&mut pending, "[p] ", false));
            }
            out.extend(take_lines(&mut pending, "[p] ", true));
            assert_eq!(String::from_utf8_lossy(&out), want, "{chunks:?}");
            assert!(pending.is_empty());
        }
        // A partial line waits for its end; a huge one is cut.
        let mut pending = b"no end yet".to_vec();
        assert!(take_lines(&mut pending, "", false).is_empty());
        let mut huge = vec![b'x'; LINE_BYTES_MAX + 10];
        let out = take_lines(&mut huge, "", false);
        assert_eq!(out.len(), LINE_BYTES_MAX + 1);
        assert_eq!(huge.len(), 10);
    }

    fn web_pod(uid: &str, started: bool, deleting: bool) -> Value {
        let mut pod = json!({"metadata": {"name": format!("web-{uid}"), "uid": uid},
            "spec": {"containers": [{"name": "app"}]},
            "status": {"containerStatuses": [{"name": "app",
                "state": if started { json!({"running": {"startedAt": "t"}}) }
                         else { json!({"waiting": {"reason": "ContainerCreating"}}) }}]}});
        if deleting {
            pod["metadata"]["deletionTimestamp"] = json!("t");
        }
        pod
    }

    #[test]
    fn the_follower_starts_started_pods_within_the_limit_and_stops_deleted_ones() {
        let start = || Follow::Start("app".to_string());
        // (event, started, deleting, followed, open, max, decision)
        let cases = [
            ("ADDED", true, false, false, 0, 5, start()),
            ("ADDED", false, false, false, 0, 5, Follow::Nothing),
            ("MODIFIED", true, false, false, 4, 5, start()),
            ("MODIFIED", true, false, false, 5, 5, Follow::OverLimit),
            ("MODIFIED", true, false, true, 1, 5, Follow::Nothing),
            ("MODIFIED", true, true, false, 0, 5, Follow::Nothing),
            ("MODIFIED", true, true, true, 1, 5, Follow::Nothing),
            ("DELETED", true, true, true, 1, 5, Follow::Stop),
            ("DELETED", true, true, false, 1, 5, Follow::Nothing),
        ];
        for (kind, started, deleting, followed, open, max, want) in cases {
            let pod = web_pod("1", started, deleting);
            assert_eq!(
                follow_decision(kind, &pod, None, followed, open, max),
                want,
                "{kind} started={started} deleting={deleting} followed={followed} open={open}"
            );
        }
        let terminated = json!({"spec": {"containers": [{"name": "app"}]},
            "status": {"containerStatuses": [{"name": "app", "state": {"waiting": {}},
                "lastState": {"terminated": {"exitCode": 1}}}]}});
        assert!(has_started(&terminated, "app"));
        assert!(!has_started(&terminated, "other"));
    }

    #[test]
    fn selectors_and_targets_parse() {
        let w = Wrapper::parse_from([
            "logs",
            "-l",
            "app=web",
            "-f",
            "--prefix",
            "--max-log-requests",
            "2",
        ]);
        assert_eq!(w.logs.selector.as_deref(), Some("app=web"));
        assert!(w.logs.target.is_none() && w.logs.prefix && w.logs.follow);
        assert_eq!(w.logs.max_log_requests, 2);
        let d = Wrapper::parse_from(["logs", "deployment/web"]);
        assert_eq!(d.logs.max_log_requests, 5);
        assert_eq!(d.logs.target.as_deref(), Some("deployment/web"));
    }
}
