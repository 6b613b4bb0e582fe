//! `kctl label TYPE NAME k=v k2- [--overwrite]`: GET each object, check the changes as kubectl
//! does, then a merge PATCH of `metadata.labels`.

use std::collections::BTreeMap;

use anyhow::bail;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{Body, ACCEPT_JSON, CONTENT_MERGE_PATCH};
use crate::list::{list_objects, ListRequest, LIST_PAGE_LIMIT_DEFAULT};
use crate::printer::{meta_str, out, warn};
use crate::resource_args::ResourceArgs;
use crate::selector::Selectors;
use crate::session::{Failures, Session};

#[derive(Debug, clap::Args)]
pub(crate) struct LabelArgs {
    /// TYPE NAME... or TYPE/NAME..., then KEY=VALUE to set and KEY- to remove
    #[arg(required = true)]
    args: Vec<String>,
    /// Allow changing the value of an existing label
    #[arg(long)]
    overwrite: bool,
    /// Label the objects matching this selector
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Label every object of the type in the namespace
    #[arg(long)]
    all: bool,
    /// Only change the object if its resourceVersion is this
    #[arg(long)]
    resource_version: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LabelError {
    #[error("invalid label spec: {0}")]
    InvalidSpec(String),
    #[error("at least one label update is required")]
    NoUpdates,
    #[error("can not both modify and remove a label in the same command")]
    ModifyAndRemove,
    #[error("'{key}' already has a value ({value}), and --overwrite is false")]
    Exists { key: String, value: String },
}

/// One label change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LabelOp {
    Set(String, String),
    Remove(String),
}

/// Whether an argument is a label change rather than a resource argument.
fn is_label_arg(arg: &str) -> bool {
    arg.contains('=') || arg.ends_with('-')
}

/// Splits the arguments into resource arguments and label changes.
pub(crate) fn split_label_args(args: &[String]) -> Result<(Vec<String>, Vec<LabelOp>), LabelError> {
    let mut resources = Vec::new();
    let mut ops = Vec::new();
    for arg in args {
        if is_label_arg(arg) {
            ops.push(parse_label_op(arg)?);
        } else {
            resources.push(arg.clone());
        }
    }
    if ops.is_empty() {
        return Err(LabelError::NoUpdates);
    }
    let removed: Vec<&String> = ops
        .iter()
        .filter_map(|op| match op {
            LabelOp::Remove(k) => Some(k),
            LabelOp::Set(..) => None,
        })
        .collect();
    if ops
        .iter()
        .any(|op| matches!(op, LabelOp::Set(k, _) if removed.contains(&k)))
    {
        return Err(LabelError::ModifyAndRemove);
    }
    Ok((resources, ops))
}

pub(crate) fn parse_label_op(arg: &str) -> Result<LabelOp, LabelError> {
    let invalid = || LabelError::InvalidSpec(arg.to_string());
    if let Some(key) = arg.strip_suffix('-') {
        if !arg.contains('=') {
            return if valid_key(key) {
                Ok(LabelOp::Remove(key.to_string()))
            } else {
                Err(invalid())
            };
        }
    }
    let (key, value) = arg.split_once('=').ok_or_else(invalid)?;
    if value.contains('=') || !valid_key(key) || !valid_value(value) {
        return Err(invalid());
    }
    Ok(LabelOp::Set(key.to_string(), value.to_string()))
}

/// A label name: alphanumerics, `-`, `_`, `.`, starting and ending alphanumeric, at most 63.
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `[prefix/]name`, the prefix a DNS subdomain.
fn valid_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    let b = part.as_bytes();
                    !b.is_empty()
                        && b[0].is_ascii_alphanumeric()
                        && b[b.len() - 1].is_ascii_alphanumeric()
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                })
                && valid_name(name)
        }
        None => valid_name(key),
    }
}

fn valid_value(value: &str) -> bool {
    value.is_empty() || valid_name(value)
}

/// The `metadata.labels` merge patch turning `current` into the labelled object, or `None`
/// when nothing changes. Keys to remove that are absent are reported through `missing`.
pub(crate) fn label_patch(
    current: &Map<String, Value>,
    ops: &[LabelOp],
    overwrite: bool,
    missing: &mut Vec<String>,
) -> Result<Option<Map<String, Value>>, LabelError> {
    let mut patch: BTreeMap<String, Value> = BTreeMap::new();
    for op in ops {
        match op {
            LabelOp::Set(key, value) => match current.get(key).and_then(Value::as_str) {
                Some(old) if old == value => {}
                Some(old) if !overwrite => {
                    return Err(LabelError::Exists {
                        key: key.clone(),
                        value: old.to_string(),
                    })
                }
                _ => {
                    patch.insert(key.clone(), Value::String(value.clone()));
                }
            },
            LabelOp::Remove(key) => {
                if current.contains_key(key) {
                    patch.insert(key.clone(), Value::Null);
                } else {
                    missing.push(key.clone());
                }
            }
        }
    }
    Ok((!patch.is_empty()).then(|| patch.into_iter().collect()))
}

pub(crate) async fn run(session: &mut Session, args: LabelArgs) -> anyhow::Result<()> {
    let (resource_args, ops) = split_label_args(&args.args)?;
    let parsed = ResourceArgs::parse(&resource_args, "label")?;
    let selectors = Selectors::new(args.selector.as_deref(), None);
    let by_selector = selectors.label.is_some() || args.all;
    if parsed.has_names() == by_selector {
        if by_selector {
            bail!("name cannot be provided when a selector or --all is specified");
        }
        bail!("resource(s) were provided, but no name was specified");
    }
    let mut failures = Failures::default();
    for target in session.targets(&parsed).await? {
        let ns = session.namespace_for(&target.resource, false);
        let objects: Vec<Value> = if by_selector {
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
                match session
                    .client
                    .get(&target.resource.object_path(ns.as_deref(), name), &[])
                    .await
                {
                    Ok(object) => found.push(object),
                    Err(err) => failures.api(&err),
                }
            }
            found
        };
        for object in objects {
            let name = meta_str(&object, "name").to_string();
            let current = object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut missing = Vec::new();
            let patch = match label_patch(&current, &ops, args.overwrite, &mut missing) {
                Ok(patch) => patch,
                Err(err) => {
                    failures.other(&err.into());
                    continue;
                }
            };
            for key in missing {
                warn(&format!("label {key:?} not found."));
            }
            let shown = format!("{}/{name}", target.resource.type_name());
            let Some(labels) = patch else {
                out(&format!("{shown} not labeled\n"))?;
                continue;
            };
            let mut metadata = json!({ "labels": labels });
            if let (Some(rv), Some(meta)) = (&args.resource_version, metadata.as_object_mut()) {
                meta.insert("resourceVersion".to_string(), Value::String(rv.clone()));
            }
            let body = json!({ "metadata": metadata });
            let path = target.resource.object_path(ns.as_deref(), &name);
            match session
                .client
                .send(
                    Method::PATCH,
                    &path,
                    &[],
                    ACCEPT_JSON,
                    Some(Body::with_type(CONTENT_MERGE_PATCH, &body)),
                )
                .await
            {
                Ok(_) => out(&format!("{shown} labeled\n"))?,
                Err(err) => failures.api(&err),
            }
        }
    }
    failures.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_arguments() {
        let (resources, ops) = split_label_args(&args(&[
            "pods",
            "web",
            "app=x",
            "tier-",
            "example.com/team=a_b",
            "empty=",
        ]))
        .unwrap();
        assert_eq!(resources, args(&["pods", "web"]));
        assert_eq!(
            ops,
            vec![
                LabelOp::Set("app".into(), "x".into()),
                LabelOp::Remove("tier".into()),
                LabelOp::Set("example.com/team".into(), "a_b".into()),
                LabelOp::Set("empty".into(), String::new()),
            ]
        );
        let (resources, _) = split_label_args(&args(&["pod/web", "a=b"])).unwrap();
        assert_eq!(resources, args(&["pod/web"]));
    }

    #[test]
    fn bad_label_arguments() {
        for bad in [
            "a=b=c",
            "=v",
            "-a=b",
            "a=-b",
            "Bad Key=x",
            "UPPER.com/x=1",
            "k=v v",
        ] {
            assert_eq!(
                parse_label_op(bad),
                Err(LabelError::InvalidSpec(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            split_label_args(&args(&["pods", "web"])),
            Err(LabelError::NoUpdates)
        );
        assert_eq!(
            split_label_args(&args(&["pods", "web", "a=1", "a-"])),
            Err(LabelError::ModifyAndRemove)
        );
    }

    #[test]
    fn patches() {
        let current: Map<String, Value> =
            serde_json::from_str(r#"{"app": "x", "tier": "web"}"#).unwrap();
        let mut missing = Vec::new();
        let ops = vec![
            LabelOp::Set("app".into(), "x".into()),
            LabelOp::Set("new".into(), "1".into()),
            LabelOp::Remove("tier".into()),
            LabelOp::Remove("ghost".into()),
        ];
        let patch = label_patch(&current, &ops, false, &mut missing)
            .unwrap()
            .unwrap();
        assert_eq!(Value::Object(patch), json!({"new": "1", "tier": null}));
        assert_eq!(missing, vec!["ghost".to_string()]);

        let change = vec![LabelOp::Set("app".into(), "y".into())];
        assert_eq!(
            label_patch(&current, &change, false, &mut missing),
            Err(LabelError::Exists {
                key: "app".into(),
                value: "x".into()
            })
        );
        assert_eq!(
            LabelError::Exists {
                key: "app".into(),
                value: "x".into()
            }
            .to_string(),
            "'app' already has a value (x), and --overwrite is false"
        );
        let patch = label_patch(&current, &change, true, &mut missing)
            .unwrap()
            .unwrap();
        assert_eq!(Value::Object(patch), json!({"app": "y"}));
        let same = vec![LabelOp::Set("app".into(), "x".into())];
        assert_eq!(label_patch(&current, &same, false, &mut missing), Ok(None));
    }
}
