//! `kctl config`: the kubeconfig's contexts (`get-contexts`, `current-context`, `use-context`,
//! `set-context`), read from the merged `$KUBECONFIG` list and written to the file kubectl
//! would write.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::kubeconfig::{ContextSummary, Kubeconfig, KubeconfigError};
use crate::kubeconfig_edit::{self, ContextFields};
use crate::printer::{out, TabWriter};
use crate::session::{kubeconfig_files, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Describe one or many contexts
    GetContexts(GetContextsArgs),
    /// Display the current-context
    CurrentContext,
    /// Set the current-context in a kubeconfig file
    UseContext {
        /// The context to switch to
        name: String,
    },
    /// Set a context entry in kubeconfig (the namespace comes from --namespace)
    SetContext(SetContextArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct GetContextsArgs {
    /// Only these contexts
    names: Vec<String>,
    /// Output format: name
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// Do not print the header
    #[arg(long)]
    no_headers: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct SetContextArgs {
    /// The context to set (or --current)
    name: Option<String>,
    /// Modify the current context
    #[arg(long, conflicts_with = "name")]
    current: bool,
    /// The context's cluster
    #[arg(long)]
    cluster: Option<String>,
    /// The context's user
    #[arg(long)]
    user: Option<String>,
}

pub(crate) fn run(global: &GlobalArgs, command: ConfigCommand) -> anyhow::Result<()> {
    let (paths, _) = kubeconfig_files(global);
    let config = match Kubeconfig::load_merged(&paths) {
        Ok(config) => config,
        Err(KubeconfigError::NotFound { .. }) => Kubeconfig::default(),
        Err(err) => return Err(err.into()),
    };
    match command {
        ConfigCommand::GetContexts(args) => {
            let text = get_contexts(&config.contexts(), config.current_context(), &args)?;
            out(&text)?;
        }
        ConfigCommand::CurrentContext => match config.current_context() {
            Some(name) => out(&format!("{name}\n"))?,
            None => bail!("current-context is not set"),
        },
        ConfigCommand::UseContext { name } => {
            if !config.contexts().iter().any(|c| c.name == name) {
                bail!("no context exists with the name: {name:?}");
            }
            let path = current_context_file(&config, &paths)?;
            kubeconfig_edit::edit_file(&path, |doc| {
                kubeconfig_edit::set_current_context(doc, &name, &path)
            })?;
            out(&format!("Switched to context {name:?}.\n"))?;
        }
        ConfigCommand::SetContext(args) => {
            let name = match (&args.name, args.current) {
                (Some(name), _) => name.clone(),
                (None, true) => match config.current_context() {
                    Some(name) => name.to_string(),
                    None => bail!("no current context is set"),
                },
                (None, false) => bail!("you must specify a context name or --current"),
            };
            let fields = ContextFields {
                cluster: args.cluster,
                user: args.user,
                namespace: global.namespace.clone(),
            };
            let path = match config.context_source(&name) {
                Some(path) => path.to_path_buf(),
                None => first_file(&config, &paths)?,
            };
            let created = kubeconfig_edit::edit_file(&path, |doc| {
                kubeconfig_edit::set_context_fields(doc, &name, &fields, &path)
            })?;
            let verb = if created { "created" } else { "modified" };
            out(&format!("Context {name:?} {verb}.\n"))?;
        }
    }
    Ok(())
}

/// The first file that exists, else the first of the list: where kubectl writes what no file
/// defines yet.
fn first_file(config: &Kubeconfig, paths: &[PathBuf]) -> anyhow::Result<PathBuf> {
    match config.files().first().or(paths.first()) {
        Some(path) => Ok(path.clone()),
        None => Err(KubeconfigError::NoHome.into()),
    }
}

/// Where `use-context` writes: the file that sets `current-context`, else [`first_file`].
fn current_context_file(config: &Kubeconfig, paths: &[PathBuf]) -> anyhow::Result<PathBuf> {
    match config.current_context_source() {
        Some(path) => Ok(Path::to_path_buf(path)),
        None => first_file(config, paths),
    }
}

/// kubectl's `config get-contexts` output (pure): sorted by name, `*` on the current one.
fn get_contexts(
    contexts: &[ContextSummary],
    current: Option<&str>,
    args: &GetContextsArgs,
) -> anyhow::Result<String> {
    let by_name = args.output.as_deref() == Some("name");
    if !matches!(args.output.as_deref(), None | Some("") | Some("name")) {
        bail!("output must be one of '' or 'name'");
    }
    let mut shown: Vec<&ContextSummary> = Vec::new();
    if args.names.is_empty() {
        shown.extend(contexts);
    } else {
        for name in &args.names {
            match contexts.iter().find(|c| &c.name == name) {
                Some(context) => shown.push(context),
                None => bail!("context {name} not found"),
            }
        }
    }
    shown.sort_by(|a, b| a.name.cmp(&b.name));
    shown.dedup_by(|a, b| a.name == b.name);
    if by_name {
        return Ok(shown.iter().map(|c| format!("{}\n", c.name)).collect());
    }
    let mut text = String::new();
    if !args.no_headers {
        text.push_str("CURRENT\tNAME\tCLUSTER\tAUTHINFO\tNAMESPACE\n");
    }
    for c in shown {
        let mark = if current == Some(c.name.as_str()) {
            "*"
        } else {
            ""
        };
        text.push_str(&format!(
            "{mark}\t{}\t{}\t{}\t{}\n",
            c.name, c.cluster, c.user, c.namespace
        ));
    }
    Ok(TabWriter::new(6, 3).format(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(name: &str, namespace: &str) -> ContextSummary {
        ContextSummary {
            name: name.to_string(),
            cluster: format!("{name}-cluster"),
            user: "admin".to_string(),
            namespace: namespace.to_string(),
        }
    }

    fn args(names: &[&str], output: Option<&str>) -> GetContextsArgs {
        GetContextsArgs {
            names: names.iter().map(|s| s.to_string()).collect(),
            output: output.map(str::to_string),
            no_headers: false,
        }
    }

    #[test]
    fn get_contexts_table_and_names() {
        let contexts = [context("prod", "shop"), context("dev", "")];
        let table = get_contexts(&contexts, Some("prod"), &args(&[], None)).unwrap();
        assert_eq!(
            table,
            "CURRENT   NAME   CLUSTER        AUTHINFO   NAMESPACE\n\
             \x20         dev    dev-cluster    admin      \n\
             *         prod   prod-cluster   admin      shop\n"
        );
        let names = get_contexts(&contexts, None, &args(&[], Some("name"))).unwrap();
        assert_eq!(names, "dev\nprod\n");
        let one = get_contexts(&contexts, None, &args(&["prod"], Some("name"))).unwrap();
        assert_eq!(one, "prod\n");
        let err = get_contexts(&contexts, None, &args(&["x"], None)).unwrap_err();
        assert_eq!(err.to_string(), "context x not found");
        assert!(get_contexts(&contexts, None, &args(&[], Some("json"))).is_err());
    }
}
