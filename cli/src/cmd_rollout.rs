//! `kctl rollout status|history|undo|restart deployment/NAME`, as kubectl does them: status
//! polls the deployment until its rollout is complete, history lists the revisions of its
//! ReplicaSets, undo copies an old ReplicaSet's template back into the deployment (client-side,
//! a JSON patch), restart stamps `kubectl.kubernetes.io/restartedAt` on the template.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Body, ACCEPT_JSON, CONTENT_MERGE_PATCH};
use crate::discovery::ApiResource;
use crate::printer::{meta_str, out, TabWriter, TABLE_MINWIDTH, TABLE_PADDING};
use crate::resource_args::ResourceArgs;
use crate::session::Session;

/// The revision annotation the deployment controller writes.
const REVISION: &str = "deployment.kubernetes.io/revision";
const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
const CONTENT_JSON_PATCH: &str = "application/json-patch+json";
/// How often `rollout status` looks at the deployment.
const STATUS_POLL_INTERVAL_MS: u64 = 500;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum RolloutCommand {
    /// Watch a rollout until it completes
    Status(StatusArgs),
    /// List the revisions of a rollout
    History(TargetArgs),
    /// Roll back to a previous revision
    Undo(UndoArgs),
    /// Restart every pod of a deployment with a rolling update
    Restart(TargetArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct TargetArgs {
    /// deployment/NAME or deployment NAME
    #[arg(required = true, num_args = 1..=2)]
    args: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// deployment/NAME or deployment NAME
    #[arg(required = true, num_args = 1..=2)]
    args: Vec<String>,
    /// Give up after this long (e.g. 5m); 0 waits forever
    #[arg(long, default_value = "0s")]
    timeout: String,
    /// Keep watching until the rollout is complete
    #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
    watch: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct UndoArgs {
    /// deployment/NAME or deployment NAME
    #[arg(required = true, num_args = 1..=2)]
    args: Vec<String>,
    /// The revision to roll back to; 0 is the previous one
    #[arg(long, default_value_t = 0)]
    to_revision: i64,
}

pub(crate) async fn run(session: &mut Session, command: RolloutCommand) -> anyhow::Result<()> {
    match command {
        RolloutCommand::Status(args) => status(session, args).await,
        RolloutCommand::History(args) => history(session, &args.args).await,
        RolloutCommand::Undo(args) => undo(session, args).await,
        RolloutCommand::Restart(args) => restart(session, &args.args).await,
    }
}

/// The deployment resource and the one name given.
async fn target(session: &mut Session, args: &[String]) -> anyhow::Result<(ApiResource, String)> {
    let parsed = ResourceArgs::parse(args, "rollout")?;
    let (typ, name) = match parsed {
        ResourceArgs::Pairs(pairs) if pairs.len() == 1 => pairs[0].clone(),
        ResourceArgs::Types { types, names } if types.len() == 1 && names.len() == 1 => {
            (types[0].clone(), names[0].clone())
        }
        _ => bail!("rollout takes exactly one resource, e.g. deployment/NAME"),
    };
    let resource = session.resolve(&typ).await?;
    if resource.name != "deployments" || resource.group != "apps" {
        bail!(
            "no rollout support has been implemented for {}",
            resource.qualified_plural()
        );
    }
    Ok((resource, name))
}

/// kubectl's rollout status line for a deployment, and whether the rollout is done.
pub(crate) fn status_line(deployment: &Value) -> Result<(String, bool), String> {
    let name = meta_str(deployment, "name");
    let generation = deployment
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let status = &deployment["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    if generation > observed {
        return Ok((
            "Waiting for deployment spec update to be observed...\n".to_string(),
            false,
        ));
    }
    let progressing = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"));
    if progressing.is_some_and(|c| c["reason"] == "ProgressDeadlineExceeded") {
        return Err(format!(
            "deployment \"{name}\" exceeded its progress deadline"
        ));
    }
    let count = |v: &Value| v.as_i64().unwrap_or(0);
    let desired = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = count(&status["updatedReplicas"]);
    let replicas = count(&status["replicas"]);
    let available = count(&status["availableReplicas"]);
    if updated < desired {
        return Ok((
            format!("Waiting for deployment \"{name}\" rollout to finish: {updated} out of {desired} new replicas have been updated...\n"),
            false,
        ));
    }
    if replicas > updated {
        return Ok((
            format!("Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...\n", replicas - updated),
            false,
        ));
    }
    if available < updated {
        return Ok((
            format!("Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available...\n"),
            false,
        ));
    }
    Ok((
        format!("deployment \"{name}\" successfully rolled out\n"),
        true,
    ))
}

async fn status(session: &mut Session, args: StatusArgs) -> anyhow::Result<()> {
    let (resource, name) = target(session, &args.args).await?;
    let timeout = crate::duration::parse_duration(&args.timeout).context("--timeout")?;
    let ns = session.namespace_for(&resource, false);
    let path = resource.object_path(ns.as_deref(), &name);
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let deployment = session.client.get(&path, &[]).await?;
        let (line, done) = status_line(&deployment).map_err(|e| anyhow!(e))?;
        if line != last {
            out(&line)?;
            last = line;
        }
        if done || !args.watch {
            return Ok(());
        }
        if !timeout.is_zero() && started.elapsed() >= timeout {
            bail!("timed out waiting for the condition");
        }
        tokio::time::sleep(Duration::from_millis(STATUS_POLL_INTERVAL_MS)).await;
    }
}

/// The ReplicaSets the deployment controls.
async fn owned_replica_sets(
    session: &mut Session,
    deployment: &Value,
    ns: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let replica_sets = session.resolve("replicasets.apps").await?;
    let list = session
        .client
        .get(&replica_sets.collection_path(ns), &[])
        .await?;
    let uid = meta_str(deployment, "uid");
    Ok(list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|rs| {
                    rs.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|refs| {
                            refs.iter()
                                .any(|r| r["controller"] == true && r["uid"] == uid)
                        })
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

fn revision_of(rs: &Value) -> i64 {
    rs.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// (revision, change cause) of each ReplicaSet, by revision.
pub(crate) fn history_rows(replica_sets: &[Value]) -> Vec<(i64, String)> {
    let mut rows: Vec<(i64, String)> = replica_sets
        .iter()
        .filter(|rs| revision_of(rs) > 0)
        .map(|rs| {
            let cause = rs
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(CHANGE_CAUSE))
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            (revision_of(rs), cause.to_string())
        })
        .collect();
    rows.sort();
    rows.dedup_by_key(|r| r.0);
    rows
}

async fn history(session: &mut Session, args: &[String]) -> anyhow::Result<()> {
    let (resource, name) = target(session, args).await?;
    let ns = session.namespace_for(&resource, false);
    let deployment = session
        .client
        .get(&resource.object_path(ns.as_deref(), &name), &[])
        .await?;
    let replica_sets = owned_replica_sets(session, &deployment, ns.as_deref()).await?;
    let mut text = format!("{}/{name} \n", resource.type_name());
    let mut table = String::from("REVISION\tCHANGE-CAUSE\n");
    for (revision, cause) in history_rows(&replica_sets) {
        table.push_str(&format!("{revision}\t{cause}\n"));
    }
    text.push_str(&TabWriter::new(TABLE_MINWIDTH, TABLE_PADDING).format(&table));
    text.push('\n');
    out(&text)?;
    Ok(())
}

/// The template to roll back to (without its `pod-template-hash` label), and its revision.
/// `to_revision` 0 is the revision before the newest, as kubectl picks it.
pub(crate) fn rollback_template(
    deployment_name: &str,
    replica_sets: &[Value],
    to_revision: i64,
) -> Result<(Value, i64), String> {
    let chosen = if to_revision > 0 {
        replica_sets
            .iter()
            .find(|rs| revision_of(rs) == to_revision)
            .ok_or_else(|| format!("unable to find specified revision {to_revision} in history"))?
    } else {
        let mut by_revision: Vec<&Value> = replica_sets
            .iter()
            .filter(|rs| revision_of(rs) > 0)
            .collect();
        by_revision.sort_by_key(|rs| std::cmp::Reverse(revision_of(rs)));
        by_revision.get(1).copied().ok_or_else(|| {
            format!("no rollout history found for deployment \"{deployment_name}\"")
        })?
    };
    let mut template = chosen["spec"]["template"].clone();
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH);
    }
    Ok((template, revision_of(chosen)))
}

async fn undo(session: &mut Session, args: UndoArgs) -> anyhow::Result<()> {
    let (resource, name) = target(session, &args.args).await?;
    let ns = session.namespace_for(&resource, false);
    let path = resource.object_path(ns.as_deref(), &name);
    let deployment = session.client.get(&path, &[]).await?;
    if deployment["spec"]["paused"] == true {
        bail!("you cannot rollback a paused deployment; resume it first with 'kctl rollout resume' and try again");
    }
    let replica_sets = owned_replica_sets(session, &deployment, ns.as_deref()).await?;
    let (template, revision) =
        rollback_template(&name, &replica_sets, args.to_revision).map_err(|e| anyhow!(e))?;
    let type_name = resource.type_name();
    if template == deployment["spec"]["template"] {
        out(&format!(
            "{type_name}/{name} skipped rollback (current template already matches revision {revision})\n"
        ))?;
        return Ok(());
    }
    // A JSON patch replaces the template whole (a merge patch would keep fields the old
    // template lacks, such as a restartedAt annotation).
    let patch = json!([{"op": "replace", "path": "/spec/template", "value": template}]);
    session
        .client
        .send(
            Method::PATCH,
            &path,
            &[],
            ACCEPT_JSON,
            Some(Body::with_type(CONTENT_JSON_PATCH, &patch)),
        )
        .await?;
    out(&format!("{type_name}/{name} rolled back\n"))?;
    Ok(())
}

async fn restart(session: &mut Session, args: &[String]) -> anyhow::Result<()> {
    let (resource, name) = target(session, args).await?;
    let ns = session.namespace_for(&resource, false);
    let path = resource.object_path(ns.as_deref(), &name);
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
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
    out(&format!("{}/{name} restarted\n", resource.type_name()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn status_lines_follow_kubectl() {
        let cases = [
            (deployment(2, json!({"observedGeneration": 1})),
             Ok(("Waiting for deployment spec update to be observed...\n", false))),
            (deployment(1, json!({"observedGeneration": 1, "updatedReplicas": 1, "replicas": 3})),
             Ok(("Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated...\n", false))),
            (deployment(1, json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 4})),
             Ok(("Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination...\n", false))),
            (deployment(1, json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 1})),
             Ok(("Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas are available...\n", false))),
            (deployment(1, json!({"observedGeneration": 1, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3})),
             Ok(("deployment \"web\" successfully rolled out\n", true))),
            (deployment(1, json!({"observedGeneration": 1, "conditions": [{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}]})),
             Err("deployment \"web\" exceeded its progress deadline")),
        ];
        for (d, expected) in cases {
            let got = status_line(&d);
            let expected = expected
                .map(|(l, done)| (l.to_string(), done))
                .map_err(str::to_string);
            assert_eq!(got, expected);
        }
    }

    fn rs(revision: &str, image: &str) -> Value {
        json!({"metadata": {"annotations": {REVISION: revision}},
               "spec": {"template": {"metadata": {"labels": {"app": "web", POD_TEMPLATE_HASH: "abc"}},
                                     "spec": {"containers": [{"image": image}]}}}})
    }

    #[test]
    fn undo_picks_the_previous_or_the_named_revision() {
        let sets = vec![rs("1", "a"), rs("3", "c"), rs("2", "b")];
        let (template, revision) = rollback_template("web", &sets, 0).unwrap();
        assert_eq!(revision, 2);
        assert_eq!(template["spec"]["containers"][0]["image"], "b");
        assert_eq!(template["metadata"]["labels"], json!({"app": "web"}));
        let (template, _) = rollback_template("web", &sets, 1).unwrap();
        assert_eq!(template["spec"]["containers"][0]["image"], "a");
        assert_eq!(
            rollback_template("web", &sets, 9).unwrap_err(),
            "unable to find specified revision 9 in history"
        );
        assert_eq!(
            rollback_template("web", &sets[..1], 0).unwrap_err(),
            "no rollout history found for deployment \"web\""
        );
    }

    #[test]
    fn history_is_sorted_by_revision() {
        let mut with_cause = rs("2", "b");
        with_cause["metadata"]["annotations"][CHANGE_CAUSE] = json!("kctl set image");
        let rows = history_rows(&[with_cause, rs("1", "a")]);
        assert_eq!(
            rows,
            vec![(1, "<none>".to_string()), (2, "kctl set image".to_string())]
        );
    }
}
