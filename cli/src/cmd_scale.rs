//! `kctl scale TYPE/NAME --replicas=N`: a merge PATCH of the `scale` subresource, or with
//! `--current-replicas`/`--resource-version` a GET and a conditional PUT of it.

use anyhow::bail;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Body, ACCEPT_JSON, CONTENT_MERGE_PATCH};
use crate::discovery::ApiResource;
use crate::resource_args::ResourceArgs;
use crate::session::{Failures, Session};

#[derive(Debug, clap::Args)]
pub(crate) struct ScaleArgs {
    /// TYPE NAME... or TYPE/NAME... (deployments, replicasets, replicationcontrollers)
    #[arg(required = true)]
    args: Vec<String>,
    /// The new number of replicas
    #[arg(long)]
    replicas: i32,
    /// Only scale if the current number of replicas is this
    #[arg(long)]
    current_replicas: Option<i32>,
    /// Only scale if the scale's resourceVersion is this
    #[arg(long)]
    resource_version: Option<String>,
}

pub(crate) async fn run(session: &mut Session, args: ScaleArgs) -> anyhow::Result<()> {
    if args.replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let parsed = ResourceArgs::parse(&args.args, "scale")?;
    if !parsed.has_names() {
        bail!("resource(s) were provided, but no name was specified");
    }
    let mut failures = Failures::default();
    for target in session.targets(&parsed).await? {
        if !target.resource.has_subresource("scale") {
            failures.other(&anyhow::anyhow!(
                "the server does not allow scaling {}",
                target.resource.qualified_plural()
            ));
            continue;
        }
        let ns = session.namespace_for(&target.resource, false);
        for name in &target.names {
            match scale_one(session, &target.resource, ns.as_deref(), name, &args).await {
                Ok(()) => crate::printer::out(&format!(
                    "{}/{name} scaled\n",
                    target.resource.type_name()
                ))?,
                Err(err) => failures.other(&err),
            }
        }
    }
    failures.finish()
}

async fn scale_one(
    session: &Session,
    resource: &ApiResource,
    ns: Option<&str>,
    name: &str,
    args: &ScaleArgs,
) -> anyhow::Result<()> {
    let path = format!("{}/scale", resource.object_path(ns, name));
    if args.current_replicas.is_none() && args.resource_version.is_none() {
        let patch = json!({"spec": {"replicas": args.replicas}});
        session
            .client
            .send(
                Method::PATCH,
                &path,
                &[],
                ACCEPT_JSON,
                Some(Body::with_type(CONTENT_MERGE_PATCH, &patch)),
            )
            .await?;
        return Ok(());
    }
    let mut scale = session.client.get(&path, &[]).await?;
    let current = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Some(expected) = args.current_replicas {
        if i64::from(expected) != current {
            bail!("Expected replicas to be {expected}, was {current}");
        }
    }
    if let Some(expected) = &args.resource_version {
        let actual = crate::printer::meta_str(&scale, "resourceVersion");
        if expected != actual {
            bail!("Expected resource version to be {expected}, was {actual}");
        }
    }
    let Some(map) = scale.as_object_mut() else {
        bail!("the server's Scale of {name} is not an object");
    };
    match map.get_mut("spec") {
        Some(Value::Object(spec)) => {
            spec.insert("replicas".to_string(), json!(args.replicas));
        }
        _ => {
            map.insert("spec".to_string(), json!({"replicas": args.replicas}));
        }
    }
    session
        .client
        .send(
            Method::PUT,
            &path,
            &[],
            ACCEPT_JSON,
            Some(Body::json(&scale)),
        )
        .await?;
    Ok(())
}
