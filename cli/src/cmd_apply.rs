//! `kctl create -f` (POST) and `kctl apply -f` (Server-Side Apply: PATCH with
//! `application/apply-patch+yaml`, which creates the object when it is missing).

use anyhow::bail;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Body, ACCEPT_JSON, CONTENT_APPLY_PATCH};
use crate::manifest::{read_manifests, Manifest};
use crate::printer::{meta_str, out};
use crate::session::{Failures, Session};

/// The field manager of `create` (kubectl's is `kubectl-create`).
const CREATE_FIELD_MANAGER: &str = "kctl-create";
/// The default field manager of `apply`.
const APPLY_FIELD_MANAGER: &str = "kctl";

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// Manifest files or directories (.yaml, .yml, .json), or - for stdin
    #[arg(short = 'f', long = "filename", required = true)]
    filenames: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// Manifest files or directories (.yaml, .yml, .json), or - for stdin
    #[arg(short = 'f', long = "filename", required = true)]
    filenames: Vec<String>,
    /// The field manager recorded for the applied fields
    #[arg(long, default_value = APPLY_FIELD_MANAGER)]
    field_manager: String,
    /// Take over fields other managers own (Server-Side Apply's force)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    force_conflicts: bool,
    /// Accepted for kubectl compatibility: apply is always server-side
    #[arg(long, hide = true)]
    server_side: bool,
}

fn read(filenames: &[String], verb: &str) -> anyhow::Result<Vec<Manifest>> {
    let manifests = read_manifests(filenames, &mut std::io::stdin().lock())?;
    if manifests.is_empty() {
        bail!("no objects passed to {verb}");
    }
    Ok(manifests)
}

/// The manifest's object with the namespace it is sent to.
fn with_namespace(manifest: &Manifest, namespace: Option<&str>) -> Value {
    let mut object = manifest.object.clone();
    if let (Some(ns), Some(meta)) = (namespace, object.get_mut("metadata")) {
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("namespace".to_string(), Value::String(ns.to_string()));
        }
    } else if let (Some(ns), Some(map)) = (namespace, object.as_object_mut()) {
        map.insert(
            "metadata".to_string(),
            serde_json::json!({ "namespace": ns }),
        );
    }
    object
}

pub(crate) async fn create(session: &mut Session, args: CreateArgs) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    for manifest in read(&args.filenames, "create")? {
        match create_one(session, &manifest).await {
            Ok(name) => out(&format!("{name} created\n"))?,
            Err(err) => failures.other(&err),
        }
    }
    failures.finish()
}

async fn create_one(session: &mut Session, manifest: &Manifest) -> anyhow::Result<String> {
    let (resource, ns) = session.manifest_target(manifest).await?;
    let object = with_namespace(manifest, ns.as_deref());
    let created = session
        .client
        .send(
            Method::POST,
            &resource.collection_path(ns.as_deref()),
            &[("fieldManager", CREATE_FIELD_MANAGER.to_string())],
            ACCEPT_JSON,
            Some(Body::json(&object)),
        )
        .await
        .map_err(|err| err.with_source("creating", &manifest.source))?;
    let name = match meta_str(&created, "name") {
        "" => manifest.str_field("/metadata/name"),
        name => name,
    };
    Ok(format!("{}/{name}", resource.type_name()))
}

pub(crate) async fn apply(session: &mut Session, args: ApplyArgs) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    for manifest in read(&args.filenames, "apply")? {
        match apply_one(session, &manifest, &args).await {
            Ok(line) => out(&format!("{line}\n"))?,
            Err(err) => failures.other(&err),
        }
    }
    failures.finish()
}

/// What `apply` reports for one object, from the object before and after. Status,
/// resourceVersion and managedFields are left out of the comparison: controllers write status
/// all the time (a Deployment's, while its pods start), which is no change made by the apply.
pub(crate) fn apply_outcome(before: Option<&Value>, after: &Value) -> &'static str {
    fn applied_part(object: &Value) -> Value {
        let mut object = object.clone();
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        object
    }
    match before {
        None => "created",
        Some(before) if applied_part(before) == applied_part(after) => "unchanged",
        Some(_) => "configured",
    }
}

async fn apply_one(
    session: &mut Session,
    manifest: &Manifest,
    args: &ApplyArgs,
) -> anyhow::Result<String> {
    let (resource, ns) = session.manifest_target(manifest).await?;
    let name = manifest.str_field("/metadata/name");
    if name.is_empty() {
        bail!(
            "error when retrieving current configuration of {} from {:?}: resource name may not be empty",
            resource.type_name(),
            manifest.source
        );
    }
    let path = resource.object_path(ns.as_deref(), name);
    let before = match session.client.get(&path, &[]).await {
        Ok(object) => Some(object),
        Err(err) if err.is_not_found() => None,
        Err(err) => {
            return Err(err
                .with_source("retrieving current configuration of", &manifest.source)
                .into())
        }
    };
    let object = with_namespace(manifest, ns.as_deref());
    let mut query = vec![("fieldManager", args.field_manager.clone())];
    if args.force_conflicts {
        query.push(("force", "true".to_string()));
    }
    let after = session
        .client
        .send(
            Method::PATCH,
            &path,
            &query,
            ACCEPT_JSON,
            Some(Body::with_type(CONTENT_APPLY_PATCH, &object)),
        )
        .await
        .map_err(|err| err.with_source("applying", &manifest.source))?;
    let outcome = apply_outcome(before.as_ref(), &after);
    Ok(format!("{}/{name} {outcome}", resource.type_name()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outcomes() {
        let before = json!({"metadata": {"name": "a", "resourceVersion": "5"}, "spec": {"replicas": 1}, "status": {"replicas": 0}});
        let status_moved = json!({"metadata": {"name": "a", "resourceVersion": "7"}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let spec_changed =
            json!({"metadata": {"name": "a", "resourceVersion": "8"}, "spec": {"replicas": 2}});
        assert_eq!(apply_outcome(None, &before), "created");
        assert_eq!(apply_outcome(Some(&before), &before), "unchanged");
        assert_eq!(
            apply_outcome(Some(&before), &status_moved),
            "unchanged",
            "a controller's status write is not the apply's change"
        );
        assert_eq!(apply_outcome(Some(&before), &spec_changed), "configured");
    }

    #[test]
    fn namespace_is_set_in_the_body() {
        let manifest = Manifest {
            source: "p.yaml".into(),
            object: json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
        };
        assert_eq!(
            with_namespace(&manifest, Some("team")),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "namespace": "team"}})
        );
        assert_eq!(with_namespace(&manifest, None), manifest.object);
    }
}
