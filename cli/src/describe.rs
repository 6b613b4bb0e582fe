//! `describe` rendering (no I/O): kubectl-like text for pods, deployments, replica sets and
//! replication controllers, a generic key/value rendering for every other kind, and the
//! `Events:` table.

use jiff::{tz::TimeZone, Timestamp};
use serde_json::{Map, Value};

use crate::printer::{format_time, human_duration, TabWriter, DESCRIBE_MINWIDTH, DESCRIBE_PADDING};
use crate::selector::label_selector_text;

/// The annotation kubectl leaves out of `Annotations:`.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The most events listed under one object.
pub(crate) const DESCRIBE_EVENTS_MAX: usize = 500;
/// The longest annotation value shown in full.
const ANNOTATION_CHARS_MAX: usize = 140;

/// What `describe` knows besides the object itself.
#[derive(Debug, Clone)]
pub(crate) struct DescribeContext<'a> {
    /// The object's events; `None` if they were not fetched (no `Events:` section).
    pub(crate) events: Option<&'a [Value]>,
    /// For replica sets and replication controllers: the pods their selector matches.
    pub(crate) pods: Option<&'a [Value]>,
    /// For deployments: the replica sets in the namespace.
    pub(crate) replica_sets: Option<&'a [Value]>,
    pub(crate) now: Timestamp,
    pub(crate) tz: &'a TimeZone,
}

/// The describe text of one object.
pub(crate) fn describe(object: &Value, ctx: &DescribeContext<'_>) -> String {
    let mut w = Writer::default();
    match str_at(object, "/kind") {
        "Pod" => describe_pod(&mut w, object, ctx),
        "Deployment" => describe_deployment(&mut w, object, ctx),
        "ReplicaSet" | "ReplicationController" => describe_replica_set(&mut w, object, ctx),
        _ => describe_generic(&mut w, object),
    }
    if let Some(events) = ctx.events {
        describe_events(&mut w, events, ctx.now);
    }
    TabWriter::new(DESCRIBE_MINWIDTH, DESCRIBE_PADDING).format(&w.text)
}

/// Lines with tab-separated cells, indented by level (two spaces each), as kubectl's
/// `PrefixWriter`.
#[derive(Debug, Default)]
struct Writer {
    text: String,
}

impl Writer {
    fn line(&mut self, level: usize, text: &str) {
        for _ in 0..level {
            self.text.push_str("  ");
        }
        self.text.push_str(text);
        self.text.push('\n');
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

fn array_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "<none>"
    } else {
        s
    }
}

/// A scalar as Go's `%v` would print it.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".to_string(),
        other => other.to_string(),
    }
}

fn labels_multiline(w: &mut Writer, level: usize, title: &str, labels: Option<&Value>) {
    let mut pairs: Vec<(String, String)> = labels
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() {
        w.line(level, &format!("{title}:\t<none>"));
        return;
    }
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i == 0 {
            w.line(level, &format!("{title}:\t{k}={v}"));
        } else {
            w.line(level, &format!("\t{k}={v}"));
        }
    }
}

fn annotations_multiline(w: &mut Writer, level: usize, title: &str, annotations: Option<&Value>) {
    let mut pairs: Vec<(String, String)> = annotations
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != LAST_APPLIED_ANNOTATION)
                .map(|(k, v)| {
                    let v = scalar(v);
                    let v = if v.chars().count() > ANNOTATION_CHARS_MAX {
                        v.chars().take(ANNOTATION_CHARS_MAX).collect::<String>() + "..."
                    } else {
                        v
                    };
                    (k.clone(), v.replace('\n', " "))
                })
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() {
        w.line(level, &format!("{title}:\t<none>"));
        return;
    }
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i == 0 {
            w.line(level, &format!("{title}:\t{k}: {v}"));
        } else {
            w.line(level, &format!("\t{k}: {v}"));
        }
    }
}

fn controlled_by(w: &mut Writer, object: &Value) {
    for owner in array_at(object, "/metadata/ownerReferences") {
        if owner.get("controller").and_then(Value::as_bool) == Some(true) {
            w.line(
                0,
                &format!(
                    "Controlled By:\t{}/{}",
                    str_at(owner, "/kind"),
                    str_at(owner, "/name")
                ),
            );
        }
    }
}

fn conditions_table(w: &mut Writer, conditions: &[Value], with_reason: bool) {
    if conditions.is_empty() {
        return;
    }
    w.line(0, "Conditions:");
    if with_reason {
        w.line(1, "Type\tStatus\tReason");
        w.line(1, "----\t------\t------");
    } else {
        w.line(1, "Type\tStatus");
    }
    for c in conditions {
        if with_reason {
            w.line(
                1,
                &format!(
                    "{} \t{}\t{}",
                    str_at(c, "/type"),
                    str_at(c, "/status"),
                    str_at(c, "/reason")
                ),
            );
        } else {
            w.line(
                1,
                &format!("{} \t{} ", str_at(c, "/type"), str_at(c, "/status")),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Pods

fn describe_pod(w: &mut Writer, pod: &Value, ctx: &DescribeContext<'_>) {
    w.line(0, &format!("Name:\t{}", str_at(pod, "/metadata/name")));
    w.line(
        0,
        &format!("Namespace:\t{}", str_at(pod, "/metadata/namespace")),
    );
    if let Some(priority) = int_at(pod, "/spec/priority") {
        w.line(0, &format!("Priority:\t{priority}"));
    }
    let sa = str_at(pod, "/spec/serviceAccountName");
    if !sa.is_empty() {
        w.line(0, &format!("Service Account:\t{sa}"));
    }
    let node = str_at(pod, "/spec/nodeName");
    let host_ip = str_at(pod, "/status/hostIP");
    match (node.is_empty(), host_ip.is_empty()) {
        (true, _) => w.line(0, "Node:\t<none>"),
        (false, true) => w.line(0, &format!("Node:\t{node}")),
        (false, false) => w.line(0, &format!("Node:\t{node}/{host_ip}")),
    }
    let start = str_at(pod, "/status/startTime");
    if !start.is_empty() {
        w.line(0, &format!("Start Time:\t{}", format_time(start, ctx.tz)));
    }
    labels_multiline(w, 0, "Labels", pod.pointer("/metadata/labels"));
    annotations_multiline(w, 0, "Annotations", pod.pointer("/metadata/annotations"));
    let deletion = str_at(pod, "/metadata/deletionTimestamp");
    if deletion.is_empty() {
        w.line(0, &format!("Status:\t{}", str_at(pod, "/status/phase")));
    } else {
        let lasts = match deletion.parse::<Timestamp>() {
            Ok(t) => human_duration(ctx.now.as_second() - t.as_second()),
            Err(_) => "<unknown>".to_string(),
        };
        w.line(0, &format!("Status:\tTerminating (lasts {lasts})"));
        if let Some(grace) = int_at(pod, "/metadata/deletionGracePeriodSeconds") {
            w.line(0, &format!("Termination Grace Period:\t{grace}s"));
        }
    }
    for (field, title) in [("reason", "Reason"), ("message", "Message")] {
        let value = str_at(pod, &format!("/status/{field}"));
        if !value.is_empty() {
            w.line(0, &format!("{title}:\t{value}"));
        }
    }
    w.line(0, &format!("IP:\t{}", str_at(pod, "/status/podIP")));
    let ips = array_at(pod, "/status/podIPs");
    if ips.is_empty() {
        w.line(0, "IPs:\t<none>");
    } else {
        w.line(0, "IPs:");
        for ip in ips {
            w.line(1, &format!("IP:\t{}", str_at(ip, "/ip")));
        }
    }
    controlled_by(w, pod);
    let init = array_at(pod, "/spec/initContainers");
    if !init.is_empty() {
        w.line(0, "Init Containers:");
        describe_containers(
            w,
            init,
            array_at(pod, "/status/initContainerStatuses"),
            "",
            ctx,
        );
    }
    w.line(0, "Containers:");
    describe_containers(
        w,
        array_at(pod, "/spec/containers"),
        array_at(pod, "/status/containerStatuses"),
        "",
        ctx,
    );
    conditions_table(w, array_at(pod, "/status/conditions"), false);
    describe_volumes(w, 0, array_at(pod, "/spec/volumes"));
    let qos = match str_at(pod, "/status/qosClass") {
        "" => qos_class(pod),
        given => given.to_string(),
    };
    w.line(0, &format!("QoS Class:\t{qos}"));
    node_selectors(w, 0, pod.pointer("/spec/nodeSelector"));
    tolerations(w, 0, array_at(pod, "/spec/tolerations"));
}

/// The QoS class from the containers' resources, when the status does not say.
fn qos_class(pod: &Value) -> String {
    let containers = array_at(pod, "/spec/containers");
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let limits = c.pointer("/resources/limits").and_then(Value::as_object);
        let requests = c.pointer("/resources/requests").and_then(Value::as_object);
        if limits.is_some_and(|m| !m.is_empty()) || requests.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for res in ["cpu", "memory"] {
            let limit = limits.and_then(|m| m.get(res));
            let request = requests.and_then(|m| m.get(res)).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort".to_string()
    } else if guaranteed {
        "Guaranteed".to_string()
    } else {
        "Burstable".to_string()
    }
}

fn describe_containers(
    w: &mut Writer,
    containers: &[Value],
    statuses: &[Value],
    space: &str,
    ctx: &DescribeContext<'_>,
) {
    for c in containers {
        let name = str_at(c, "/name");
        let status = statuses.iter().find(|s| str_at(s, "/name") == name);
        w.line(1, &format!("{space}{name}:"));
        if let Some(status) = status {
            w.line(
                2,
                &format!("Container ID:\t{}", str_at(status, "/containerID")),
            );
        }
        w.line(2, &format!("Image:\t{}", str_at(c, "/image")));
        if let Some(status) = status {
            w.line(2, &format!("Image ID:\t{}", str_at(status, "/imageID")));
        }
        let ports = array_at(c, "/ports");
        let port_text = |field: &str| -> String {
            let texts: Vec<String> = ports
                .iter()
                .map(|p| {
                    let proto = match str_at(p, "/protocol") {
                        "" => "TCP",
                        proto => proto,
                    };
                    format!("{}/{proto}", int_at(p, &format!("/{field}")).unwrap_or(0))
                })
                .collect();
            if texts.is_empty() {
                "<none>".to_string()
            } else {
                texts.join(", ")
            }
        };
        let (port_title, host_title) = if ports.len() > 1 {
            ("Ports", "Host Ports")
        } else {
            ("Port", "Host Port")
        };
        w.line(2, &format!("{port_title}:\t{}", port_text("containerPort")));
        w.line(2, &format!("{host_title}:\t{}", port_text("hostPort")));
        for (field, title) in [("command", "Command"), ("args", "Args")] {
            let items = array_at(c, &format!("/{field}"));
            if !items.is_empty() {
                w.line(2, &format!("{title}:"));
                for item in items {
                    w.line(3, &scalar(item));
                }
            }
        }
        if let Some(status) = status {
            container_state(w, "State", status.get("state"), ctx);
            if status
                .get("lastState")
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                container_state(w, "Last State", status.get("lastState"), ctx);
            }
            let ready = status
                .get("ready")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            w.line(
                2,
                &format!("Ready:\t{}", if ready { "True" } else { "False" }),
            );
            w.line(
                2,
                &format!(
                    "Restart Count:\t{}",
                    int_at(status, "/restartCount").unwrap_or(0)
                ),
            );
        }
        for (field, title) in [("limits", "Limits"), ("requests", "Requests")] {
            if let Some(map) = c
                .pointer(&format!("/resources/{field}"))
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty())
            {
                w.line(2, &format!("{title}:"));
                for (k, v) in map {
                    w.line(3, &format!("{k}:\t{}", scalar(v)));
                }
            }
        }
        let env = array_at(c, "/env");
        if env.is_empty() {
            w.line(2, "Environment:\t<none>");
        } else {
            w.line(2, "Environment:");
            for e in env {
                let name = str_at(e, "/name");
                if let Some(value) = e.get("value") {
                    w.line(3, &format!("{name}:\t{}", scalar(value)));
                } else if let Some(from) = e.pointer("/valueFrom").and_then(Value::as_object) {
                    let source = from.keys().next().map(String::as_str).unwrap_or("");
                    w.line(3, &format!("{name}:\t<set from {source}>"));
                } else {
                    w.line(3, &format!("{name}:\t"));
                }
            }
        }
        let mounts = array_at(c, "/volumeMounts");
        if mounts.is_empty() {
            w.line(2, "Mounts:\t<none>");
        } else {
            w.line(2, "Mounts:");
            for m in mounts {
                let ro = if m.get("readOnly").and_then(Value::as_bool) == Some(true) {
                    "ro"
                } else {
                    "rw"
                };
                w.line(
                    3,
                    &format!(
                        "{} from {} ({ro})",
                        str_at(m, "/mountPath"),
                        str_at(m, "/name")
                    ),
                );
            }
        }
    }
}

fn container_state(w: &mut Writer, title: &str, state: Option<&Value>, ctx: &DescribeContext<'_>) {
    let state = state.unwrap_or(&Value::Null);
    if let Some(running) = state.get("running") {
        w.line(2, &format!("{title}:\tRunning"));
        w.line(
            3,
            &format!(
                "Started:\t{}",
                format_time(str_at(running, "/startedAt"), ctx.tz)
            ),
        );
    } else if let Some(waiting) = state.get("waiting") {
        w.line(2, &format!("{title}:\tWaiting"));
        let reason = str_at(waiting, "/reason");
        if !reason.is_empty() {
            w.line(3, &format!("Reason:\t{reason}"));
        }
    } else if let Some(done) = state.get("terminated") {
        w.line(2, &format!("{title}:\tTerminated"));
        for (field, name) in [("reason", "Reason"), ("message", "Message")] {
            let value = str_at(done, &format!("/{field}"));
            if !value.is_empty() {
                w.line(3, &format!("{name}:\t{value}"));
            }
        }
        w.line(
            3,
            &format!("Exit Code:\t{}", int_at(done, "/exitCode").unwrap_or(0)),
        );
        if let Some(signal) = int_at(done, "/signal").filter(|s| *s > 0) {
            w.line(3, &format!("Signal:\t{signal}"));
        }
        w.line(
            3,
            &format!(
                "Started:\t{}",
                format_time(str_at(done, "/startedAt"), ctx.tz)
            ),
        );
        w.line(
            3,
            &format!(
                "Finished:\t{}",
                format_time(str_at(done, "/finishedAt"), ctx.tz)
            ),
        );
    } else {
        w.line(2, &format!("{title}:\tWaiting"));
    }
}

fn describe_volumes(w: &mut Writer, level: usize, volumes: &[Value]) {
    if volumes.is_empty() {
        w.line(level, "Volumes:\t<none>");
        return;
    }
    w.line(level, "Volumes:");
    for v in volumes {
        w.line(level + 1, &format!("{}:", str_at(v, "/name")));
        let Some(map) = v.as_object() else { continue };
        for (source, spec) in map.iter().filter(|(k, _)| k.as_str() != "name") {
            let (kind, what) = match source.as_str() {
                "emptyDir" => (
                    "EmptyDir",
                    "a temporary directory that shares a pod's lifetime",
                ),
                "hostPath" => ("HostPath", "bare host directory volume"),
                "configMap" => ("ConfigMap", "a volume populated by a ConfigMap"),
                "secret" => ("Secret", "a volume populated by a Secret"),
                "persistentVolumeClaim" => (
                    "PersistentVolumeClaim",
                    "a reference to a PersistentVolumeClaim in the same namespace",
                ),
                "projected" => (
                    "Projected",
                    "a volume that contains injected data from multiple sources",
                ),
                "downwardAPI" => (
                    "DownwardAPI",
                    "a volume populated by information about the pod",
                ),
                _ => ("", ""),
            };
            if kind.is_empty() {
                w.line(level + 2, &format!("Type:\t{source}"));
            } else {
                w.line(level + 2, &format!("Type:\t{kind} ({what})"));
            }
            if let Some(fields) = spec.as_object() {
                print_content(w, level + 2, fields);
            }
        }
    }
}

fn node_selectors(w: &mut Writer, level: usize, selector: Option<&Value>) {
    let mut pairs: Vec<String> = selector
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", scalar(v)))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() {
        w.line(level, "Node-Selectors:\t<none>");
        return;
    }
    for (i, pair) in pairs.iter().enumerate() {
        if i == 0 {
            w.line(level, &format!("Node-Selectors:\t{pair}"));
        } else {
            w.line(level, &format!("\t{pair}"));
        }
    }
}

fn tolerations(w: &mut Writer, level: usize, list: &[Value]) {
    if list.is_empty() {
        w.line(level, "Tolerations:\t<none>");
        return;
    }
    for (i, t) in list.iter().enumerate() {
        let mut text = str_at(t, "/key").to_string();
        let value = str_at(t, "/value");
        if !value.is_empty() {
            text = format!("{text}={value}");
        }
        let effect = str_at(t, "/effect");
        if !effect.is_empty() {
            text = format!("{text}:{effect}");
        }
        if str_at(t, "/operator") == "Exists" && value.is_empty() {
            text = if text.is_empty() {
                "op=Exists".to_string()
            } else {
                format!("{text} op=Exists")
            };
        }
        if let Some(secs) = int_at(t, "/tolerationSeconds") {
            text = format!("{text} for {secs}s");
        }
        if i == 0 {
            w.line(level, &format!("Tolerations:\t{text}"));
        } else {
            w.line(level, &format!("\t{text}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn describe_pod_template(w: &mut Writer, template: &Value, ctx: &DescribeContext<'_>) {
    w.line(0, "Pod Template:");
    labels_multiline(w, 1, "Labels", template.pointer("/metadata/labels"));
    if template
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        annotations_multiline(
            w,
            1,
            "Annotations",
            template.pointer("/metadata/annotations"),
        );
    }
    let sa = str_at(template, "/spec/serviceAccountName");
    if !sa.is_empty() {
        w.line(1, &format!("Service Account:\t{sa}"));
    }
    let init = array_at(template, "/spec/initContainers");
    if !init.is_empty() {
        w.line(1, "Init Containers:");
        describe_containers(w, init, &[], " ", ctx);
    }
    w.line(1, "Containers:");
    describe_containers(w, array_at(template, "/spec/containers"), &[], " ", ctx);
    describe_volumes(w, 1, array_at(template, "/spec/volumes"));
    node_selectors(w, 1, template.pointer("/spec/nodeSelector"));
    tolerations(w, 1, array_at(template, "/spec/tolerations"));
}

fn describe_deployment(w: &mut Writer, d: &Value, ctx: &DescribeContext<'_>) {
    w.line(0, &format!("Name:\t{}", str_at(d, "/metadata/name")));
    w.line(
        0,
        &format!("Namespace:\t{}", str_at(d, "/metadata/namespace")),
    );
    w.line(
        0,
        &format!(
            "CreationTimestamp:\t{}",
            format_time(str_at(d, "/metadata/creationTimestamp"), ctx.tz)
        ),
    );
    labels_multiline(w, 0, "Labels", d.pointer("/metadata/labels"));
    annotations_multiline(w, 0, "Annotations", d.pointer("/metadata/annotations"));
    let selector = d
        .pointer("/spec/selector")
        .and_then(label_selector_text)
        .unwrap_or_default();
    w.line(0, &format!("Selector:\t{}", or_none(&selector)));
    let n = |p: &str| int_at(d, p).unwrap_or(0);
    w.line(
        0,
        &format!(
            "Replicas:\t{} desired | {} updated | {} total | {} available | {} unavailable",
            int_at(d, "/spec/replicas").unwrap_or(1),
            n("/status/updatedReplicas"),
            n("/status/replicas"),
            n("/status/availableReplicas"),
            n("/status/unavailableReplicas")
        ),
    );
    let strategy = match str_at(d, "/spec/strategy/type") {
        "" => "RollingUpdate",
        s => s,
    };
    w.line(0, &format!("StrategyType:\t{strategy}"));
    w.line(
        0,
        &format!("MinReadySeconds:\t{}", n("/spec/minReadySeconds")),
    );
    if strategy == "RollingUpdate" {
        let value = |p: &str| {
            d.pointer(p)
                .map(scalar)
                .unwrap_or_else(|| "25%".to_string())
        };
        w.line(
            0,
            &format!(
                "RollingUpdateStrategy:\t{} max unavailable, {} max surge",
                value("/spec/strategy/rollingUpdate/maxUnavailable"),
                value("/spec/strategy/rollingUpdate/maxSurge")
            ),
        );
    }
    if let Some(template) = d.pointer("/spec/template") {
        describe_pod_template(w, template, ctx);
    }
    conditions_table(w, array_at(d, "/status/conditions"), true);
    if let Some(sets) = ctx.replica_sets {
        let uid = str_at(d, "/metadata/uid");
        let owned: Vec<&Value> = sets
            .iter()
            .filter(|rs| {
                array_at(rs, "/metadata/ownerReferences")
                    .iter()
                    .any(|o| !uid.is_empty() && str_at(o, "/uid") == uid)
            })
            .collect();
        let template_hash =
            |rs: &Value| str_at(rs, "/metadata/labels/pod-template-hash").to_string();
        let revision = |rs: &Value| {
            str_at(
                rs,
                "/metadata/annotations/deployment.kubernetes.io~1revision",
            )
            .parse::<i64>()
            .unwrap_or(0)
        };
        let newest = owned.iter().max_by_key(|rs| revision(rs)).copied();
        let describe_rs = |rs: &Value| {
            format!(
                "{} ({}/{} replicas created)",
                str_at(rs, "/metadata/name"),
                int_at(rs, "/status/replicas").unwrap_or(0),
                int_at(rs, "/spec/replicas").unwrap_or(0)
            )
        };
        let old: Vec<String> = owned
            .iter()
            .filter(|rs| newest.is_none_or(|n| template_hash(n) != template_hash(rs)))
            .filter(|rs| int_at(rs, "/spec/replicas").unwrap_or(0) > 0)
            .map(|rs| describe_rs(rs))
            .collect();
        w.line(0, &format!("OldReplicaSets:\t{}", or_none(&old.join(", "))));
        let new = newest.map(describe_rs).unwrap_or_default();
        w.line(0, &format!("NewReplicaSet:\t{}", or_none(&new)));
    }
}

fn describe_replica_set(w: &mut Writer, rs: &Value, ctx: &DescribeContext<'_>) {
    w.line(0, &format!("Name:\t{}", str_at(rs, "/metadata/name")));
    w.line(
        0,
        &format!("Namespace:\t{}", str_at(rs, "/metadata/namespace")),
    );
    let selector = rs
        .pointer("/spec/selector")
        .and_then(label_selector_text)
        .unwrap_or_default();
    w.line(0, &format!("Selector:\t{}", or_none(&selector)));
    labels_multiline(w, 0, "Labels", rs.pointer("/metadata/labels"));
    annotations_multiline(w, 0, "Annotations", rs.pointer("/metadata/annotations"));
    controlled_by(w, rs);
    w.line(
        0,
        &format!(
            "Replicas:\t{} current / {} desired",
            int_at(rs, "/status/replicas").unwrap_or(0),
            int_at(rs, "/spec/replicas").unwrap_or(1)
        ),
    );
    if let Some(pods) = ctx.pods {
        let count = |phase: &str| {
            pods.iter()
                .filter(|p| str_at(p, "/status/phase") == phase)
                .count()
        };
        let waiting = pods
            .iter()
            .filter(|p| matches!(str_at(p, "/status/phase"), "Pending" | ""))
            .count();
        w.line(
            0,
            &format!(
                "Pods Status:\t{} Running / {waiting} Waiting / {} Succeeded / {} Failed",
                count("Running"),
                count("Succeeded"),
                count("Failed")
            ),
        );
    }
    if let Some(template) = rs.pointer("/spec/template") {
        describe_pod_template(w, template, ctx);
    }
    conditions_table(w, array_at(rs, "/status/conditions"), true);
}

// ---------------------------------------------------------------------------------------------
// Generic

fn describe_generic(w: &mut Writer, object: &Value) {
    w.line(0, &format!("Name:\t{}", str_at(object, "/metadata/name")));
    w.line(
        0,
        &format!("Namespace:\t{}", str_at(object, "/metadata/namespace")),
    );
    labels_multiline(w, 0, "Labels", object.pointer("/metadata/labels"));
    annotations_multiline(w, 0, "Annotations", object.pointer("/metadata/annotations"));
    let Some(map) = object.as_object() else {
        return;
    };
    let mut content = map.clone();
    if let Some(Value::Object(meta)) = content.get_mut("metadata") {
        for skip in [
            "managedFields",
            "name",
            "namespace",
            "labels",
            "annotations",
        ] {
            meta.remove(skip);
        }
    }
    print_content(w, 0, &content);
}

/// kubectl's `printUnstructuredContent`: keys sorted and labelled in words, maps nested,
/// list items one per line.
fn print_content(w: &mut Writer, level: usize, content: &Map<String, Value>) {
    let mut keys: Vec<&String> = content.keys().collect();
    keys.sort();
    for key in keys {
        let label = smart_label(key);
        match &content[key.as_str()] {
            Value::Object(map) => {
                w.line(level, &format!("{label}:"));
                print_content(w, level + 1, map);
            }
            Value::Array(items) => {
                w.line(level, &format!("{label}:"));
                for item in items {
                    match item {
                        Value::Object(map) => print_content(w, level + 1, map),
                        other => w.line(level + 1, &scalar(other)),
                    }
                }
            }
            other => w.line(
                level,
                &format!("{label}:\t{}", scalar(other).replace('\n', " ")),
            ),
        }
    }
}

/// `creationTimestamp` → `Creation Timestamp`, `apiVersion` → `API Version`.
pub(crate) fn smart_label(key: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = key.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        // A new word starts at an upper-case letter after a lower-case one, or at the last
        // capital of an acronym followed by a word ("HTTPGet"), but not before a plural
        // "s" ending an acronym ("podIPs").
        let plural_acronym =
            chars.get(i + 1) == Some(&'s') && chars.get(i + 2).is_none_or(|n| n.is_uppercase());
        let boundary = c.is_uppercase()
            && !current.is_empty()
            && (chars[i - 1].is_lowercase()
                || (chars.get(i + 1).is_some_and(|n| n.is_lowercase()) && !plural_acronym));
        if boundary || c == '_' || c == '-' {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            if c == '_' || c == '-' {
                continue;
            }
        }
        current.push(c);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
        .into_iter()
        .map(|word| {
            let lower = word.to_lowercase();
            match lower.as_str() {
                "api" | "ip" | "uid" | "url" | "cidr" | "id" | "dns" | "tls" | "http" | "cpu"
                | "os" | "uri" => lower.to_uppercase(),
                "ips" => "IPs".to_string(),
                _ => {
                    let mut cs = word.chars();
                    match cs.next() {
                        Some(first) => first.to_uppercase().collect::<String>() + cs.as_str(),
                        None => String::new(),
                    }
                }
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------------
// Events

fn event_time(e: &Value) -> &str {
    for p in [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ] {
        let t = str_at(e, p);
        if !t.is_empty() {
            return t;
        }
    }
    ""
}

fn since(t: &str, now: Timestamp) -> String {
    match t.parse::<Timestamp>() {
        Ok(t) => human_duration(now.as_second() - t.as_second()),
        Err(_) => "<unknown>".to_string(),
    }
}

fn describe_events(w: &mut Writer, events: &[Value], now: Timestamp) {
    if events.is_empty() {
        w.line(0, "Events:\t<none>");
        return;
    }
    let mut sorted: Vec<&Value> = events.iter().take(DESCRIBE_EVENTS_MAX).collect();
    sorted.sort_by_key(|e| event_time(e).parse::<Timestamp>().ok());
    w.line(0, "Events:");
    w.line(1, "Type\tReason\tAge\tFrom\tMessage");
    w.line(1, "----\t------\t----\t----\t-------");
    for e in sorted {
        let first = match str_at(e, "/eventTime") {
            "" => str_at(e, "/firstTimestamp"),
            t => t,
        };
        let first = if first.is_empty() {
            event_time(e)
        } else {
            first
        };
        let first_since = since(first, now);
        let interval = if let Some(count) = int_at(e, "/series/count") {
            format!(
                "{} (x{count} over {first_since})",
                since(str_at(e, "/series/lastObservedTime"), now)
            )
        } else if let Some(count) = int_at(e, "/count").filter(|c| *c > 1) {
            format!(
                "{} (x{count} over {first_since})",
                since(str_at(e, "/lastTimestamp"), now)
            )
        } else {
            first_since
        };
        let source = match str_at(e, "/source/component") {
            "" => str_at(e, "/reportingComponent"),
            c => c,
        };
        let message = str_at(e, "/message").trim().replace('\n', " ");
        w.line(
            1,
            &format!(
                "{}\t{}\t{interval}\t{source}\t{message}",
                str_at(e, "/type"),
                str_at(e, "/reason")
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(events: Option<&'a [Value]>, tz: &'a TimeZone) -> DescribeContext<'a> {
        DescribeContext {
            events,
            pods: None,
            replica_sets: None,
            now: "2026-11-27T16:11:38Z".parse().unwrap(),
            tz,
        }
    }

    #[test]
    fn pod_like_kubectl() {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u1", "creationTimestamp": "2026-11-27T16:11:25Z"},
            "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}], "nodeName": "node-1"},
            "status": {
                "phase": "Running", "hostIP": "127.0.0.2", "podIP": "10.0.0.5", "startTime": "2026-11-27T16:11:25Z",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "main", "image": "nginx:1.27", "imageID": "", "ready": true,
                    "restartCount": 0, "state": {"running": {"startedAt": "2026-11-27T16:11:25Z"}}}]
            }
        });
        let events = vec![json!({
            "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web-1 to node-1",
            "source": {"component": "default-scheduler"}, "firstTimestamp": "2026-11-27T16:11:25Z",
            "lastTimestamp": "2026-11-27T16:11:25Z", "count": 1
        })];
        let tz = TimeZone::UTC;
        let text = describe(&pod, &ctx(Some(&events), &tz));
        let expected = "\
Name:         web-1
Namespace:    default
Node:         node-1/127.0.0.2
Start Time:   Fri, 27 Nov 2026 16:11:25 +0000
Labels:       <none>
Annotations:  <none>
Status:       Running
IP:           10.0.0.5
IPs:          <none>
Containers:
  main:
    Container ID:   
    Image:          nginx:1.27
    Image ID:       
    Port:           <none>
    Host Port:      <none>
    State:          Running
      Started:      Fri, 27 Nov 2026 16:11:25 +0000
    Ready:          True
    Restart Count:  0
    Environment:    <none>
    Mounts:         <none>
Conditions:
  Type           Status
  Ready          True 
Volumes:         <none>
QoS Class:       BestEffort
Node-Selectors:  <none>
Tolerations:     <none>
Events:
  Type    Reason     Age   From               Message
  ----    ------     ----  ----               -------
  Normal  Scheduled  13s   default-scheduler  Successfully assigned default/web-1 to node-1
";
        assert_eq!(text, expected);
    }

    #[test]
    fn generic_kinds_render_their_fields() {
        let cm = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "labels": {"b": "2", "a": "1"},
                         "creationTimestamp": "2026-11-27T16:11:25Z", "managedFields": [{}]},
            "data": {"key": "value"}
        });
        let tz = TimeZone::UTC;
        let text = describe(&cm, &ctx(Some(&[]), &tz));
        assert_eq!(
            text,
            "\
Name:         cfg
Namespace:    default
Labels:       a=1
              b=2
Annotations:  <none>
API Version:  v1
Data:
  Key:  value
Kind:   ConfigMap
Metadata:
  Creation Timestamp:  2026-11-27T16:11:25Z
Events:                <none>
"
        );
    }

    #[test]
    fn deployment_shows_replicas_template_and_replica_sets() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "d1", "creationTimestamp": "2026-11-27T16:11:25Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 3, "availableReplicas": 2, "unavailableReplicas": 1}
        });
        let sets = vec![json!({
            "metadata": {"name": "web-abc", "labels": {"pod-template-hash": "abc"},
                         "annotations": {"deployment.kubernetes.io/revision": "1"},
                         "ownerReferences": [{"uid": "d1", "kind": "Deployment", "name": "web", "controller": true}]},
            "spec": {"replicas": 3}, "status": {"replicas": 3}
        })];
        let tz = TimeZone::UTC;
        let mut c = ctx(None, &tz);
        c.replica_sets = Some(&sets);
        let text = describe(&d, &c);
        assert!(text.contains("Replicas:               3 desired | 3 updated | 3 total | 2 available | 1 unavailable\n"), "{text}");
        assert!(text.contains("Selector:               app=web\n"), "{text}");
        assert!(
            text.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge\n"),
            "{text}"
        );
        assert!(text.contains("Pod Template:\n  Labels:  app=web\n  Containers:\n   nginx:\n    Image:         nginx\n"), "{text}");
        assert!(text.contains("  Tolerations:     <none>\nOldReplicaSets:    <none>\nNewReplicaSet:     web-abc (3/3 replicas created)\n"), "{text}");
    }

    #[test]
    fn labels_in_words() {
        assert_eq!(smart_label("creationTimestamp"), "Creation Timestamp");
        assert_eq!(smart_label("apiVersion"), "API Version");
        assert_eq!(smart_label("podIPs"), "Pod IPs");
        assert_eq!(smart_label("uid"), "UID");
        assert_eq!(smart_label("data"), "Data");
    }

    #[test]
    fn repeated_events() {
        let events = vec![
            json!({"type": "Warning", "reason": "BackOff", "message": "Back-off restarting\n",
            "source": {"component": "kubelet"}, "firstTimestamp": "2026-11-27T16:00:00Z",
            "lastTimestamp": "2026-11-27T16:11:00Z", "count": 5}),
        ];
        let mut w = Writer::default();
        describe_events(&mut w, &events, "2026-11-27T16:11:38Z".parse().unwrap());
        assert!(
            w.text
                .ends_with("  Warning\tBackOff\t38s (x5 over 11m)\tkubelet\tBack-off restarting\n"),
            "{}",
            w.text
        );
    }
}
