//! `kctl describe TYPE [NAME_PREFIX...]`: fetches the objects and what their description
//! needs (events, pods, replica sets) and prints [`crate::describe`]'s rendering.

use jiff::{tz::TimeZone, Timestamp};
use serde_json::Value;

use crate::describe::{describe, DescribeContext, DESCRIBE_EVENTS_MAX};
use crate::discovery::ApiResource;
use crate::list::{list_objects, ListRequest, LIST_PAGE_LIMIT_DEFAULT};
use crate::printer::{meta_str, out, warn};
use crate::resource_args::ResourceArgs;
use crate::selector::{label_selector_text, Selectors};
use crate::session::{Failures, Session};

#[derive(Debug, clap::Args)]
pub(crate) struct DescribeArgs {
    /// TYPE [NAME_PREFIX...] or TYPE/NAME...
    args: Vec<String>,
    /// Label selector (e.g. app=web)
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Describe objects of all namespaces
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Show the objects' events
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    show_events: bool,
}

pub(crate) async fn run(session: &mut Session, args: DescribeArgs) -> anyhow::Result<()> {
    let parsed = ResourceArgs::parse(&args.args, "describe")?;
    let targets = session.targets(&parsed).await?;
    let selectors = Selectors::new(args.selector.as_deref(), None);
    let mut failures = Failures::default();
    let mut first = true;
    let mut listed_nothing = true;
    let tz = TimeZone::system();
    for target in &targets {
        let ns = session.namespace_for(&target.resource, args.all_namespaces);
        let objects = if target.names.is_empty() {
            let req = ListRequest {
                resource: &target.resource,
                namespace: ns.as_deref(),
                selectors: &selectors,
                limit: LIST_PAGE_LIMIT_DEFAULT,
            };
            list_objects(&session.client, &req).await?.0
        } else {
            let mut found = Vec::new();
            for name in &target.names {
                match get_or_prefix(session, &target.resource, ns.as_deref(), name).await {
                    Ok(objects) => found.extend(objects),
                    Err(err) => failures.api(&err),
                }
            }
            found
        };
        for object in objects {
            listed_nothing = false;
            let text =
                describe_one(session, &target.resource, &object, args.show_events, &tz).await;
            if !first {
                out("\n\n")?;
            }
            first = false;
            out(&text)?;
        }
    }
    if listed_nothing && !parsed.has_names() {
        let scoped = targets.iter().any(|t| t.resource.namespaced) && !args.all_namespaces;
        if scoped {
            warn(&format!(
                "No resources found in {} namespace.",
                session.namespace
            ));
        } else {
            warn("No resources found");
        }
    }
    failures.finish()
}

/// The object named `name`, or (as kubectl) every object whose name starts with it.
async fn get_or_prefix(
    session: &Session,
    resource: &ApiResource,
    ns: Option<&str>,
    name: &str,
) -> Result<Vec<Value>, crate::client::ApiError> {
    match session
        .client
        .get(&resource.object_path(ns, name), &[])
        .await
    {
        Ok(object) => Ok(vec![object]),
        Err(err) if err.is_not_found() => {
            let req = ListRequest {
                resource,
                namespace: ns,
                selectors: &Selectors::default(),
                limit: LIST_PAGE_LIMIT_DEFAULT,
            };
            let matching: Vec<Value> = match list_objects(&session.client, &req).await {
                Ok((items, _)) => items
                    .into_iter()
                    .filter(|o| meta_str(o, "name").starts_with(name))
                    .collect(),
                Err(_) => Vec::new(),
            };
            if matching.is_empty() {
                Err(err)
            } else {
                Ok(matching)
            }
        }
        Err(err) => Err(err),
    }
}

async fn describe_one(
    session: &Session,
    resource: &ApiResource,
    object: &Value,
    show_events: bool,
    tz: &TimeZone,
) -> String {
    let ns = meta_str(object, "namespace");
    let ns = (!ns.is_empty()).then_some(ns);
    let events = if show_events {
        fetch_events(session, object, ns).await
    } else {
        None
    };
    let selector = object
        .pointer("/spec/selector")
        .and_then(label_selector_text)
        .filter(|s| !s.is_empty());
    let pods = match (resource.kind.as_str(), &selector) {
        ("ReplicaSet" | "ReplicationController", Some(selector)) => {
            list_in(session, "/api/v1", "pods", ns, Some(selector)).await
        }
        _ => None,
    };
    let replica_sets = match (resource.kind.as_str(), &selector) {
        ("Deployment", Some(selector)) => {
            list_in(session, "/apis/apps/v1", "replicasets", ns, Some(selector)).await
        }
        _ => None,
    };
    let ctx = DescribeContext {
        events: events.as_deref(),
        pods: pods.as_deref(),
        replica_sets: replica_sets.as_deref(),
        now: Timestamp::now(),
        tz,
    };
    describe(object, &ctx)
}

/// A best-effort list for the description; `None` when the server refuses.
async fn list_in(
    session: &Session,
    group_path: &str,
    plural: &str,
    ns: Option<&str>,
    selector: Option<&str>,
) -> Option<Vec<Value>> {
    let path = match ns {
        Some(ns) => format!("{group_path}/namespaces/{ns}/{plural}"),
        None => format!("{group_path}/{plural}"),
    };
    let mut query = vec![("limit", LIST_PAGE_LIMIT_DEFAULT.to_string())];
    if let Some(selector) = selector {
        query.push(("labelSelector", selector.to_string()));
    }
    let list = session.client.get(&path, &query).await.ok()?;
    list.get("items").and_then(Value::as_array).cloned()
}

/// The object's events, as kubectl asks for them; `None` (no `Events:` section) when the
/// server cannot answer.
async fn fetch_events(session: &Session, object: &Value, ns: Option<&str>) -> Option<Vec<Value>> {
    let name = meta_str(object, "name");
    let uid = meta_str(object, "uid");
    let mut terms = vec![format!("involvedObject.name={name}")];
    if let Some(ns) = ns {
        terms.push(format!("involvedObject.namespace={ns}"));
    }
    if !uid.is_empty() {
        terms.push(format!("involvedObject.uid={uid}"));
    }
    let path = match ns {
        Some(ns) => format!("/api/v1/namespaces/{ns}/events"),
        None => "/api/v1/events".to_string(),
    };
    let query = [
        ("fieldSelector", terms.join(",")),
        ("limit", DESCRIBE_EVENTS_MAX.to_string()),
    ];
    let list = session.client.get(&path, &query).await.ok()?;
    Some(
        list.get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    )
}
