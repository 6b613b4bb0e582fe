//! `kctl edit TYPE NAME`: the object as YAML in `$KUBE_EDITOR`/`$EDITOR` (default `vi`), then
//! a PUT of the edited object if it changed.

use std::io::Write as _;

use anyhow::{bail, Context as _};
use reqwest::Method;
use serde_json::Value;

use crate::client::{Body, ACCEPT_JSON};
use crate::printer::{meta_str, out, strip_managed_fields, to_yaml, warn};
use crate::resource_args::ResourceArgs;
use crate::session::Session;

const EDIT_HEADER: &str = "\
# Please edit the object below. Lines beginning with a '#' will be ignored,
# and an empty file will abort the edit. If an error occurs while saving, a copy of
# your changes is kept and its path printed.
#
";

#[derive(Debug, clap::Args)]
pub(crate) struct EditArgs {
    /// TYPE NAME or TYPE/NAME
    #[arg(required = true)]
    args: Vec<String>,
}

/// What the user left in the file.
#[derive(Debug, PartialEq)]
pub(crate) enum Edited {
    /// Nothing but comments and blank lines.
    Empty,
    Object(Value),
}

/// Parses the edited file.
pub(crate) fn parse_edited(text: &str) -> anyhow::Result<Edited> {
    let meaningful = text
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if !meaningful {
        return Ok(Edited::Empty);
    }
    let value: Value = serde_norway::from_str(text).context("the edited file is not valid YAML")?;
    if !value.is_object() {
        bail!("the edited file must hold one object");
    }
    Ok(Edited::Object(value))
}

/// The editor command line: `$KUBE_EDITOR`, else `$EDITOR`, else `vi`.
fn editor() -> String {
    ["KUBE_EDITOR", "EDITOR"]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .find(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string())
}

pub(crate) async fn run(session: &mut Session, args: EditArgs) -> anyhow::Result<()> {
    let parsed = ResourceArgs::parse(&args.args, "edit")?;
    let targets = session.targets(&parsed).await?;
    let [target] = targets.as_slice() else {
        bail!("edit takes exactly one object");
    };
    let [name] = target.names.as_slice() else {
        bail!("edit takes exactly one object (TYPE NAME or TYPE/NAME)");
    };
    let ns = session.namespace_for(&target.resource, false);
    let path = target.resource.object_path(ns.as_deref(), name);
    let mut original = session.client.get(&path, &[]).await?;
    strip_managed_fields(&mut original);

    let mut file = tempfile::Builder::new()
        .prefix("kctl-edit-")
        .suffix(".yaml")
        .tempfile()
        .context("cannot create a temporary file")?;
    file.write_all(EDIT_HEADER.as_bytes())?;
    file.write_all(to_yaml(&original).as_bytes())?;
    file.flush()?;
    let file_path = file.path().to_path_buf();

    let editor = editor();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("kctl-editor")
        .arg(&file_path)
        .status()
        .await
        .with_context(|| format!("cannot start the editor {editor:?}"))?;
    if !status.success() {
        bail!("the editor {editor:?} exited with {status}; no changes made");
    }
    let text = std::fs::read_to_string(&file_path).context("cannot read the edited file")?;
    let edited = match parse_edited(&text) {
        Ok(Edited::Empty) => {
            warn("Edit cancelled, no changes made.");
            return Ok(());
        }
        Ok(Edited::Object(value)) => value,
        Err(err) => return Err(keep_copy(file, err)),
    };
    if edited == original {
        warn("Edit cancelled, no changes made.");
        return Ok(());
    }
    for field in ["/apiVersion", "/kind", "/metadata/name"] {
        let before = original
            .pointer(field)
            .and_then(Value::as_str)
            .unwrap_or("");
        let after = edited.pointer(field).and_then(Value::as_str).unwrap_or("");
        if before != after {
            let err = anyhow::anyhow!(
                "{} cannot be changed by edit ({before:?} to {after:?})",
                field[1..].replace('/', ".")
            );
            return Err(keep_copy(file, err));
        }
    }
    match session
        .client
        .send(
            Method::PUT,
            &path,
            &[],
            ACCEPT_JSON,
            Some(Body::json(&edited)),
        )
        .await
    {
        Ok(saved) => {
            let shown = match meta_str(&saved, "name") {
                "" => name.as_str(),
                n => n,
            };
            out(&format!("{}/{shown} edited\n", target.resource.type_name()))?;
            Ok(())
        }
        Err(err) => Err(keep_copy(file, err.into())),
    }
}

/// Keeps the edited file and adds its path to the error.
fn keep_copy(file: tempfile::NamedTempFile, err: anyhow::Error) -> anyhow::Error {
    match file.keep() {
        Ok((_, path)) => {
            warn(&crate::session::error_message(&err));
            warn(&format!(
                "A copy of your changes has been stored to {:?}",
                path.display().to_string()
            ));
            crate::session::Reported.into()
        }
        Err(_) => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edited_files() {
        assert_eq!(parse_edited(EDIT_HEADER).unwrap(), Edited::Empty);
        assert_eq!(parse_edited("\n  \n").unwrap(), Edited::Empty);
        let text = format!("{EDIT_HEADER}apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n");
        assert_eq!(
            parse_edited(&text).unwrap(),
            Edited::Object(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}))
        );
        assert!(parse_edited("- a\n- b\n").is_err());
        assert!(parse_edited("a: [\n").is_err());
    }

    #[test]
    fn round_trip_is_unchanged() {
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "resourceVersion": "5"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]}});
        let text = format!("{EDIT_HEADER}{}", to_yaml(&object));
        assert_eq!(parse_edited(&text).unwrap(), Edited::Object(object));
    }
}
