//! `kctl wait --for=condition=TYPE[=STATUS] | --for=delete`: polls the objects every
//! `WAIT_POLL_INTERVAL_MS` until each meets the condition (printing `pod/x condition met`) or
//! the timeout passes. The decision for one observation is the pure [`condition_met`].

use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::client::ApiError;
use crate::discovery::ApiResource;
use crate::list::{list_objects, ListRequest, LIST_PAGE_LIMIT_DEFAULT};
use crate::printer::{meta_str, out};
use crate::resource_args::ResourceArgs;
use crate::selector::Selectors;
use crate::session::{Failures, Session};

/// Pause between two rounds of checks.
const WAIT_POLL_INTERVAL_MS: u64 = 500;
/// The most objects one `kctl wait` waits for.
const WAIT_OBJECTS_MAX: usize = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum WaitError {
    #[error(
        "unrecognized condition: {0:?} (use --for=delete or --for=condition=TYPE[=true|false])"
    )]
    BadCondition(String),
}

#[derive(Debug, clap::Args)]
pub(crate) struct WaitArgs {
    /// TYPE/NAME..., TYPE NAME..., or TYPE with -l / --all
    args: Vec<String>,
    /// What to wait for: delete, or condition=TYPE[=true|false] (e.g. condition=Ready)
    #[arg(long = "for", value_name = "CONDITION", required = true)]
    wait_for: String,
    /// Wait for the objects matching this label selector
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Wait for the objects matching this field selector
    #[arg(long)]
    field_selector: Option<String>,
    /// Wait for every object of the type in the namespace
    #[arg(long)]
    all: bool,
    /// With -l or --all: across all namespaces
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// How long to wait (0: check once)
    #[arg(long, default_value = "30s")]
    timeout: String,
}

/// What `--for` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WaitFor {
    /// The object is gone (or replaced by another with the same name).
    Delete,
    /// `status.conditions[type=kind].status` equals `status` (case-insensitively).
    Condition { kind: String, status: String },
}

impl WaitFor {
    pub(crate) fn parse(text: &str) -> Result<WaitFor, WaitError> {
        let bad = || WaitError::BadCondition(text.to_string());
        if text.eq_ignore_ascii_case("delete") {
            return Ok(WaitFor::Delete);
        }
        let rest = text.strip_prefix("condition=").ok_or_else(bad)?;
        let (kind, status) = match rest.split_once('=') {
            Some((kind, status)) => (kind, status),
            None => (rest, "true"),
        };
        if kind.is_empty() || status.is_empty() {
            return Err(bad());
        }
        Ok(WaitFor::Condition {
            kind: kind.to_string(),
            status: status.to_string(),
        })
    }
}

/// Whether one observation meets the wait (pure). `current` is the object as read now (`None`:
/// not found); `uid` the uid it had when the wait began (empty if unknown).
pub(crate) fn condition_met(wait_for: &WaitFor, current: Option<&Value>, uid: &str) -> bool {
    match (wait_for, current) {
        (WaitFor::Delete, None) => true,
        (WaitFor::Delete, Some(object)) => !uid.is_empty() && meta_str(object, "uid") != uid,
        (WaitFor::Condition { .. }, None) => false,
        (WaitFor::Condition { kind, status }, Some(object)) => {
            let generation = object
                .pointer("/metadata/generation")
                .and_then(Value::as_i64);
            let conditions = object
                .pointer("/status/conditions")
                .and_then(Value::as_array);
            conditions.into_iter().flatten().any(|condition| {
                let field = |name: &str| condition.get(name).and_then(Value::as_str).unwrap_or("");
                // A condition written for an older generation says nothing about this one.
                let observed = condition.get("observedGeneration").and_then(Value::as_i64);
                let current = match (generation, observed) {
                    (Some(generation), Some(observed)) => generation == observed,
                    _ => true,
                };
                field("type").eq_ignore_ascii_case(kind)
                    && field("status").eq_ignore_ascii_case(status)
                    && current
            })
        }
    }
}

/// One object waited for.
struct Waited {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    uid: String,
}

impl Waited {
    fn path(&self) -> String {
        self.resource
            .object_path(self.namespace.as_deref(), &self.name)
    }
}

pub(crate) async fn run(session: &mut Session, args: WaitArgs) -> anyhow::Result<()> {
    let wait_for = WaitFor::parse(&args.wait_for)?;
    let timeout = crate::duration::parse_duration(&args.timeout).context("--timeout")?;
    let selectors = Selectors::new(args.selector.as_deref(), args.field_selector.as_deref());
    let by_selector = selectors.label.is_some() || selectors.field.is_some() || args.all;
    let parsed = ResourceArgs::parse(&args.args, "wait")?;
    if parsed.has_names() && by_selector {
        bail!("name cannot be provided when a selector or --all is specified");
    }
    if !parsed.has_names() && !by_selector {
        bail!("resource(s) were provided, but no name was specified");
    }
    let mut waited: Vec<Waited> = Vec::new();
    for target in session.targets(&parsed).await? {
        let namespace = session.namespace_for(&target.resource, args.all_namespaces);
        if target.names.is_empty() {
            let req = ListRequest {
                resource: &target.resource,
                namespace: namespace.as_deref(),
                selectors: &selectors,
                limit: LIST_PAGE_LIMIT_DEFAULT,
            };
            let (items, _) = list_objects(&session.client, &req).await?;
            for item in items {
                let ns = meta_str(&item, "namespace");
                waited.push(Waited {
                    resource: target.resource.clone(),
                    namespace: (!ns.is_empty()).then(|| ns.to_string()),
                    name: meta_str(&item, "name").to_string(),
                    uid: meta_str(&item, "uid").to_string(),
                });
            }
        } else {
            for name in target.names {
                waited.push(Waited {
                    resource: target.resource.clone(),
                    namespace: namespace.clone(),
                    name,
                    uid: String::new(),
                });
            }
        }
        if waited.len() > WAIT_OBJECTS_MAX {
            bail!("more than {WAIT_OBJECTS_MAX} objects to wait for; narrow them with -l");
        }
    }
    if waited.is_empty() {
        bail!("no matching resources found");
    }
    let mut failures = Failures::default();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first_round = true;
    loop {
        let mut pending = Vec::with_capacity(waited.len());
        for mut item in waited {
            let current = match session.client.get(&item.path(), &[]).await {
                Ok(object) => Some(object),
                Err(err) if err.is_not_found() => {
                    // Waiting for a condition on an object that never existed fails at once,
                    // as kubectl's does.
                    if first_round && item.uid.is_empty() && wait_for != WaitFor::Delete {
                        failures.api(&err);
                        continue;
                    }
                    None
                }
                Err(ApiError::Connect(_)) => {
                    pending.push(item);
                    continue;
                }
                Err(ApiError::Status(status)) if status.code >= 500 => {
                    pending.push(item);
                    continue;
                }
                Err(err) => {
                    failures.api(&err);
                    continue;
                }
            };
            if item.uid.is_empty() {
                if let Some(object) = &current {
                    item.uid = meta_str(object, "uid").to_string();
                }
            }
            if condition_met(&wait_for, current.as_ref(), &item.uid) {
                out(&format!(
                    "{}/{} condition met\n",
                    item.resource.type_name(),
                    item.name
                ))?;
            } else {
                pending.push(item);
            }
        }
        first_round = false;
        waited = pending;
        if waited.is_empty() {
            break;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            for item in &waited {
                failures.other(&anyhow::anyhow!(
                    "timed out waiting for the condition on {}/{}",
                    item.resource.qualified_plural(),
                    item.name
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(WAIT_POLL_INTERVAL_MS).min(deadline - now)).await;
    }
    failures.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn for_flag_forms() {
        let condition = |kind: &str, status: &str| WaitFor::Condition {
            kind: kind.to_string(),
            status: status.to_string(),
        };
        for (text, expected) in [
            ("delete", Ok(WaitFor::Delete)),
            ("condition=Ready", Ok(condition("Ready", "true"))),
            ("condition=Ready=false", Ok(condition("Ready", "false"))),
            (
                "condition=Available=True",
                Ok(condition("Available", "True")),
            ),
            ("condition=", Err(())),
            ("condition=Ready=", Err(())),
            ("jsonpath={.x}=1", Err(())),
            ("ready", Err(())),
        ] {
            assert_eq!(WaitFor::parse(text).map_err(|_| ()), expected, "{text}");
        }
    }

    fn pod(uid: &str, generation: i64, conditions: Value) -> Value {
        json!({"metadata": {"name": "x", "uid": uid, "generation": generation},
               "status": {"conditions": conditions}})
    }

    #[test]
    fn observations() {
        let ready = WaitFor::parse("condition=Ready").unwrap();
        let not_ready = WaitFor::parse("condition=ready=False").unwrap();
        let delete = WaitFor::Delete;
        let ready_pod = pod("u1", 1, json!([{"type": "Ready", "status": "True"}]));
        let unready_pod = pod("u1", 1, json!([{"type": "Ready", "status": "False"}]));
        let stale = pod(
            "u1",
            3,
            json!([{"type": "Ready", "status": "True", "observedGeneration": 2}]),
        );
        let fresh = pod(
            "u1",
            3,
            json!([{"type": "Ready", "status": "True", "observedGeneration": 3}]),
        );
        let no_status = json!({"metadata": {"name": "x", "uid": "u1"}});
        let replaced = pod("u2", 1, json!([]));
        for (name, wait_for, current, uid, expected) in [
            ("ready pod", &ready, Some(&ready_pod), "u1", true),
            ("unready pod", &ready, Some(&unready_pod), "u1", false),
            (
                "waiting for false",
                &not_ready,
                Some(&unready_pod),
                "u1",
                true,
            ),
            (
                "condition of an older generation",
                &ready,
                Some(&stale),
                "u1",
                false,
            ),
            (
                "condition of this generation",
                &ready,
                Some(&fresh),
                "u1",
                true,
            ),
            ("no status", &ready, Some(&no_status), "u1", false),
            ("gone, condition", &ready, None, "u1", false),
            ("gone, delete", &delete, None, "u1", true),
            (
                "still there, delete",
                &delete,
                Some(&ready_pod),
                "u1",
                false,
            ),
            ("replaced, delete", &delete, Some(&replaced), "u1", true),
            ("uid unknown, delete", &delete, Some(&ready_pod), "", false),
        ] {
            assert_eq!(condition_met(wait_for, current, uid), expected, "{name}");
        }
    }
}
