//! `kctl delete`: by name, by `-f` manifest, or by selector/`--all`; DELETE with
//! `DeleteOptions`, then (by default) wait until each object is gone.

use std::time::Duration;

use anyhow::bail;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{ApiError, Body, ACCEPT_JSON};
use crate::discovery::ApiResource;
use crate::list::{list_objects, ListRequest, LIST_PAGE_LIMIT_DEFAULT};
use crate::manifest::read_manifests;
use crate::printer::{meta_str, out, warn};
use crate::resource_args::ResourceArgs;
use crate::selector::Selectors;
use crate::session::{Failures, Session};

/// Longest pause between two checks while waiting for a deletion.
const WAIT_POLL_INTERVAL_MAX_MS: u64 = 1_000;
const WAIT_POLL_INTERVAL_MIN_MS: u64 = 100;

#[derive(Debug, clap::Args)]
pub(crate) struct DeleteArgs {
    /// TYPE NAME..., TYPE/NAME..., or TYPE with -l / --all
    args: Vec<String>,
    /// Delete the objects of these manifests (files, directories, - for stdin)
    #[arg(short = 'f', long = "filename")]
    filenames: Vec<String>,
    /// Delete the objects matching this label selector
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Delete the objects matching this field selector
    #[arg(long)]
    field_selector: Option<String>,
    /// Delete every object of the type in the namespace
    #[arg(long)]
    all: bool,
    /// With -l or --all: across all namespaces
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Seconds the object gets to terminate (-1: the object's default)
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    grace_period: i64,
    /// Shorthand for --grace-period=1
    #[arg(long)]
    now: bool,
    /// Delete immediately (--grace-period=0)
    #[arg(long)]
    force: bool,
    /// Wait until the objects are gone
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    wait: bool,
    /// How long --wait waits
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// Treat "not found" as success
    #[arg(long)]
    ignore_not_found: bool,
    /// background, foreground or orphan
    #[arg(long, default_value = "background")]
    cascade: String,
}

/// One object to delete.
struct Doomed {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    /// The manifest it came from, for error messages.
    source: Option<String>,
}

/// The `DeleteOptions` body.
pub(crate) fn delete_options(cascade: &str, grace_period: Option<i64>) -> anyhow::Result<Value> {
    let policy = match cascade {
        "background" | "true" => "Background",
        "foreground" => "Foreground",
        "orphan" | "false" => "Orphan",
        other => bail!(
            "invalid cascade value ({other}); must be one of: background, foreground, or orphan"
        ),
    };
    let mut body = serde_json::Map::new();
    body.insert("kind".to_string(), json!("DeleteOptions"));
    body.insert("apiVersion".to_string(), json!("v1"));
    body.insert("propagationPolicy".to_string(), json!(policy));
    if let Some(grace) = grace_period {
        body.insert("gracePeriodSeconds".to_string(), json!(grace));
    }
    Ok(Value::Object(body))
}

pub(crate) async fn run(session: &mut Session, args: DeleteArgs) -> anyhow::Result<()> {
    let timeout = crate::duration::parse_duration(&args.timeout)?;
    let selectors = Selectors::new(args.selector.as_deref(), args.field_selector.as_deref());
    let by_selector = selectors.label.is_some() || selectors.field.is_some() || args.all;
    let grace = if args.force {
        warn("Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely.");
        Some(0)
    } else if args.now {
        Some(1)
    } else if args.grace_period >= 0 {
        Some(args.grace_period)
    } else {
        None
    };
    let body = delete_options(&args.cascade, grace)?;
    let doomed = collect(session, &args, &selectors, by_selector).await?;
    if doomed.is_empty() {
        if by_selector {
            warn("No resources found");
        }
        return Ok(());
    }
    let mut failures = Failures::default();
    let mut waiting: Vec<(Doomed, String)> = Vec::new();
    for item in doomed {
        let path = item
            .resource
            .object_path(item.namespace.as_deref(), &item.name);
        let result = session
            .client
            .send(
                Method::DELETE,
                &path,
                &[],
                ACCEPT_JSON,
                Some(Body::json(&body)),
            )
            .await;
        match result {
            Ok(answer) => {
                out(&format!(
                    "{} {:?} deleted\n",
                    item.resource.type_name(),
                    item.name
                ))?;
                let finished = answer.get("kind").and_then(Value::as_str) == Some("Status");
                if !finished {
                    let uid = meta_str(&answer, "uid").to_string();
                    waiting.push((item, uid));
                }
            }
            Err(err) if err.is_not_found() && args.ignore_not_found => {}
            Err(err) => match &item.source {
                Some(source) => failures.api(&err.with_source("deleting", source)),
                None => failures.api(&err),
            },
        }
    }
    if args.wait && !waiting.is_empty() {
        let deadline = tokio::time::Instant::now() + timeout;
        for (item, uid) in &waiting {
            if let Err(err) = wait_gone(session, item, uid, deadline).await {
                failures.other(&err);
            }
        }
    }
    failures.finish()
}

async fn collect(
    session: &mut Session,
    args: &DeleteArgs,
    selectors: &Selectors,
    by_selector: bool,
) -> anyhow::Result<Vec<Doomed>> {
    let mut doomed = Vec::new();
    if !args.filenames.is_empty() {
        if !args.args.is_empty() {
            bail!("cannot delete both from files and by resource arguments");
        }
        let manifests = read_manifests(&args.filenames, &mut std::io::stdin().lock())?;
        for manifest in manifests {
            let (resource, namespace) = session.manifest_target(&manifest).await?;
            let name = manifest.str_field("/metadata/name").to_string();
            if name.is_empty() {
                bail!("resource name may not be empty (in {:?})", manifest.source);
            }
            doomed.push(Doomed {
                resource,
                namespace,
                name,
                source: Some(manifest.source.clone()),
            });
        }
        return Ok(doomed);
    }
    let parsed = ResourceArgs::parse(&args.args, "delete")?;
    if parsed.has_names() && by_selector {
        bail!("name cannot be provided when a selector or --all is specified");
    }
    if !parsed.has_names() && !by_selector {
        bail!("resource(s) were provided, but no name was specified");
    }
    if args.all_namespaces && !by_selector {
        bail!("a resource cannot be deleted by name across all namespaces");
    }
    for target in session.targets(&parsed).await? {
        let namespace = session.namespace_for(&target.resource, args.all_namespaces);
        if target.names.is_empty() {
            let req = ListRequest {
                resource: &target.resource,
                namespace: namespace.as_deref(),
                selectors,
                limit: LIST_PAGE_LIMIT_DEFAULT,
            };
            let (items, _) = list_objects(&session.client, &req).await?;
            for item in items {
                let ns = meta_str(&item, "namespace");
                doomed.push(Doomed {
                    resource: target.resource.clone(),
                    namespace: (!ns.is_empty()).then(|| ns.to_string()),
                    name: meta_str(&item, "name").to_string(),
                    source: None,
                });
            }
        } else {
            for name in target.names {
                doomed.push(Doomed {
                    resource: target.resource.clone(),
                    namespace: namespace.clone(),
                    name,
                    source: None,
                });
            }
        }
    }
    Ok(doomed)
}

/// Polls until the object is gone (404, or replaced by one with another uid).
async fn wait_gone(
    session: &Session,
    item: &Doomed,
    uid: &str,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let path = item
        .resource
        .object_path(item.namespace.as_deref(), &item.name);
    let mut interval = WAIT_POLL_INTERVAL_MIN_MS;
    loop {
        match session.client.get(&path, &[]).await {
            Err(err) if err.is_not_found() => return Ok(()),
            Ok(object) if !uid.is_empty() && meta_str(&object, "uid") != uid => return Ok(()),
            Ok(_) => {}
            Err(ApiError::Status(status)) if status.code >= 500 => {}
            Err(ApiError::Connect(_)) => {}
            Err(err) => return Err(err.into()),
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!(
                "timed out waiting for the condition on {}/{}",
                item.resource.qualified_plural(),
                item.name
            );
        }
        let pause = Duration::from_millis(interval).min(deadline - now);
        tokio::time::sleep(pause).await;
        interval = (interval * 2).min(WAIT_POLL_INTERVAL_MAX_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_body() {
        assert_eq!(
            delete_options("background", None).unwrap(),
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})
        );
        assert_eq!(
            delete_options("foreground", Some(0)).unwrap(),
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground", "gracePeriodSeconds": 0})
        );
        assert!(delete_options("sideways", None).is_err());
    }
}
