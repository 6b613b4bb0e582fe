//! What every command shares: the global flags, the API client, the run's discovery cache,
//! the namespace, and the way failures reach the user.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::client::{ApiError, Client, RequestTimeouts};
use crate::discovery::{ApiResource, Discovery, DiscoveryError};
use crate::kubeconfig::{self, ConnectionConfig, Kubeconfig, KubeconfigError};
use crate::manifest::Manifest;
use crate::resource_args::ResourceArgs;

/// Flags every command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct GlobalArgs {
    /// Path to the kubeconfig file, read alone (default: the files of $KUBECONFIG, merged,
    /// then ~/.kube/config)
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context)
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// The namespace (default: the context's namespace, else "default")
    #[arg(short = 'n', long, global = true, value_name = "NS")]
    pub(crate) namespace: Option<String>,
    /// Bound on each request (e.g. 30s, 1m; 0 = none). Default: 60s, watches and -f unbounded
    #[arg(long, global = true, value_name = "DURATION")]
    pub(crate) request_timeout: Option<String>,
    /// Override the API server URL of the kubeconfig
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) server: Option<String>,
    /// Override the bearer token of the kubeconfig
    #[arg(long, global = true, value_name = "TOKEN")]
    pub(crate) token: Option<String>,
    /// Do not verify the server's certificate (insecure)
    #[arg(long, global = true)]
    pub(crate) insecure_skip_tls_verify: bool,
}

/// A failure already printed to stderr; the process only has to exit non-zero.
#[derive(Debug, thiserror::Error)]
#[error("errors were reported")]
pub(crate) struct Reported;

/// The most per-object error messages kept for the end of a command.
const FAILURE_MESSAGES_MAX: usize = 1000;

/// Per-object failures of a command that goes on after one; like kubectl, their messages are
/// printed together once the command's output is done.
#[derive(Debug, Default)]
pub(crate) struct Failures {
    messages: Vec<String>,
    dropped: usize,
}

impl Failures {
    pub(crate) fn api(&mut self, err: &ApiError) {
        self.push(err.kubectl_message());
    }

    pub(crate) fn other(&mut self, err: &anyhow::Error) {
        self.push(error_message(err));
    }

    fn push(&mut self, message: String) {
        if self.messages.len() < FAILURE_MESSAGES_MAX {
            self.messages.push(message);
        } else {
            self.dropped += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.dropped == 0
    }

    /// Prints the failures; an error (already reported) if there was any.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        for message in &self.messages {
            crate::printer::warn(message);
        }
        if self.dropped > 0 {
            crate::printer::warn(&format!("error: {} more errors not shown", self.dropped));
        }
        if self.is_empty() {
            Ok(())
        } else {
            Err(Reported.into())
        }
    }
}

/// What kubectl would print for this error.
pub(crate) fn error_message(err: &anyhow::Error) -> String {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return api.kubectl_message();
    }
    if let Some(DiscoveryError::Api(api)) = err.downcast_ref::<DiscoveryError>() {
        return api.kubectl_message();
    }
    if let Some(crate::list::ListError::Api(api)) = err.downcast_ref::<crate::list::ListError>() {
        return api.kubectl_message();
    }
    if let Some(crate::watch::WatchError::Api(api)) = err.downcast_ref::<crate::watch::WatchError>()
    {
        return api.kubectl_message();
    }
    let text = format!("{err:#}");
    if text.starts_with("error: ") {
        text
    } else {
        format!("error: {text}")
    }
}

/// The kubeconfig files the global flags and the environment point at, first one first, and
/// whether they were asked for explicitly (`--kubeconfig` or `$KUBECONFIG`).
pub(crate) fn kubeconfig_files(global: &GlobalArgs) -> (Vec<PathBuf>, bool) {
    let env = std::env::var_os("KUBECONFIG");
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let explicit = global.kubeconfig.is_some() || env.as_ref().is_some_and(|e| !e.is_empty());
    let paths = kubeconfig::kubeconfig_paths(
        global.kubeconfig.as_deref(),
        env.as_deref(),
        home.as_deref(),
    );
    (paths, explicit)
}

/// Loads the connection settings the global flags point at.
pub(crate) fn connection_config(global: &GlobalArgs) -> anyhow::Result<ConnectionConfig> {
    let (paths, explicit) = kubeconfig_files(global);
    // Without a kubeconfig file: the pod's service account, or just the --server flag.
    let fallback = |missing: KubeconfigError| -> anyhow::Result<ConnectionConfig> {
        match (kubeconfig::in_cluster(), &global.server) {
            (Some(config), _) => Ok(config),
            (None, Some(_)) => Ok(ConnectionConfig::default()),
            (None, None) => Err(missing.into()),
        }
    };
    let mut config = if paths.is_empty() {
        fallback(KubeconfigError::NoHome)?
    } else {
        match Kubeconfig::load_merged(&paths) {
            Ok(file) => file.connection(global.context.as_deref())?,
            Err(missing @ KubeconfigError::NotFound { .. }) if !explicit => fallback(missing)?,
            Err(err) => return Err(err.into()),
        }
    };
    if let Some(server) = &global.server {
        config.server = server.trim_end_matches('/').to_string();
    }
    if let Some(token) = &global.token {
        config.token = Some(token.clone());
    }
    if global.insecure_skip_tls_verify {
        config.insecure_skip_tls_verify = true;
    }
    Ok(config)
}

/// The namespace of a run: `-n` (when not empty), else the context's namespace, else
/// `default`.
pub(crate) fn default_namespace(flag: Option<&str>, context: Option<&str>) -> String {
    flag.filter(|ns| !ns.is_empty())
        .or(context.filter(|ns| !ns.is_empty()))
        .unwrap_or("default")
        .to_string()
}

/// Parses `--request-timeout`.
pub(crate) fn request_timeouts(global: &GlobalArgs) -> anyhow::Result<RequestTimeouts> {
    let flag = match &global.request_timeout {
        Some(text) => Some(crate::duration::parse_duration(text).context("--request-timeout")?),
        None => None,
    };
    Ok(RequestTimeouts::from_flag(flag))
}

/// One resource type and the names asked of it (none = every object).
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) resource: ApiResource,
    pub(crate) names: Vec<String>,
}

/// A connected command run.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) discovery: Discovery,
    pub(crate) connection: ConnectionConfig,
    pub(crate) timeouts: RequestTimeouts,
    /// `-n`, else the context's namespace, else `default`.
    pub(crate) namespace: String,
    /// Whether `-n` was given (a manifest's own namespace must then agree with it).
    pub(crate) namespace_explicit: bool,
}

impl Session {
    pub(crate) fn connect(global: &GlobalArgs) -> anyhow::Result<Session> {
        let connection = connection_config(global)?;
        let timeouts = request_timeouts(global)?;
        let client = Client::new(&connection, timeouts)?;
        let namespace =
            default_namespace(global.namespace.as_deref(), connection.namespace.as_deref());
        Ok(Session {
            client,
            discovery: Discovery::new(),
            connection,
            timeouts,
            namespace,
            namespace_explicit: global.namespace.as_deref().is_some_and(|ns| !ns.is_empty()),
        })
    }

    pub(crate) async fn resolve(&mut self, arg: &str) -> Result<ApiResource, DiscoveryError> {
        self.discovery.resolve(&self.client, arg).await
    }

    /// Resolves types, expanding `all` into the `all` category, without duplicates.
    pub(crate) async fn resolve_types(
        &mut self,
        types: &[String],
    ) -> Result<Vec<ApiResource>, DiscoveryError> {
        let mut resolved: Vec<ApiResource> = Vec::new();
        for name in types {
            let found = if name.eq_ignore_ascii_case("all") {
                self.discovery.category(&self.client, "all").await?
            } else {
                vec![self.resolve(name).await?]
            };
            for r in found {
                if !resolved
                    .iter()
                    .any(|x| x.group == r.group && x.name == r.name)
                {
                    resolved.push(r);
                }
            }
        }
        Ok(resolved)
    }

    /// Resolves resource arguments into targets, in the order typed; `TYPE/NAME` pairs of one
    /// type are grouped.
    pub(crate) async fn targets(
        &mut self,
        args: &ResourceArgs,
    ) -> Result<Vec<Target>, DiscoveryError> {
        match args {
            ResourceArgs::Types { types, names } => Ok(self
                .resolve_types(types)
                .await?
                .into_iter()
                .map(|resource| Target {
                    resource,
                    names: names.clone(),
                })
                .collect()),
            ResourceArgs::Pairs(pairs) => {
                let mut targets: Vec<Target> = Vec::new();
                for (typ, name) in pairs {
                    let resource = self.resolve(typ).await?;
                    match targets.iter_mut().find(|t| {
                        t.resource.group == resource.group && t.resource.name == resource.name
                    }) {
                        Some(target) => target.names.push(name.clone()),
                        None => targets.push(Target {
                            resource,
                            names: vec![name.clone()],
                        }),
                    }
                }
                Ok(targets)
            }
        }
    }

    /// The namespace of requests for `resource`: `None` for cluster-scoped resources and for
    /// `-A`.
    pub(crate) fn namespace_for(
        &self,
        resource: &ApiResource,
        all_namespaces: bool,
    ) -> Option<String> {
        (resource.namespaced && !all_namespaces).then(|| self.namespace.clone())
    }

    /// A manifest's resource and namespace: its own `metadata.namespace`, else `-n`, else the
    /// context's; refused when it disagrees with an explicit `-n`, as kubectl refuses.
    pub(crate) async fn manifest_target(
        &mut self,
        manifest: &Manifest,
    ) -> anyhow::Result<(ApiResource, Option<String>)> {
        let api_version = manifest.str_field("/apiVersion").to_string();
        let kind = manifest.str_field("/kind").to_string();
        let resource = self
            .discovery
            .resolve_kind(&self.client, &api_version, &kind)
            .await
            .map_err(|err| match err {
                DiscoveryError::Api(api) => anyhow::Error::new(api),
                other => anyhow::anyhow!(
                    "resource mapping not found for name: {:?} namespace: {:?} from {:?}: {other}",
                    manifest.str_field("/metadata/name"),
                    manifest.str_field("/metadata/namespace"),
                    manifest.source
                ),
            })?;
        if !resource.namespaced {
            return Ok((resource, None));
        }
        let own = manifest.str_field("/metadata/namespace");
        if !own.is_empty() && self.namespace_explicit && own != self.namespace {
            anyhow::bail!(
                "the namespace from the provided object {own:?} does not match the namespace {:?}. You must pass '--namespace={own}' to perform this operation.",
                self.namespace
            );
        }
        let namespace = if own.is_empty() {
            self.namespace.clone()
        } else {
            own.to_string()
        };
        Ok((resource, Some(namespace)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Status;

    fn not_found() -> ApiError {
        ApiError::Status(Box::new(Status {
            status: "Failure".into(),
            message: "pods \"x\" not found".into(),
            reason: "NotFound".into(),
            code: 404,
            details: None,
        }))
    }

    #[test]
    fn namespace_defaults() {
        for (flag, context, expected) in [
            (Some("team"), Some("ctx"), "team"),
            (None, Some("ctx"), "ctx"),
            (Some(""), Some("ctx"), "ctx"),
            (None, None, "default"),
            (None, Some(""), "default"),
        ] {
            assert_eq!(
                default_namespace(flag, context),
                expected,
                "{flag:?} {context:?}"
            );
        }
    }

    #[test]
    fn the_context_flag_picks_the_context_and_its_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "clusters:\n- name: a\n  cluster: {server: 'https://a:1'}\n\
             - name: b\n  cluster: {server: 'https://b:1'}\n\
             contexts:\n- name: a\n  context: {cluster: a}\n\
             - name: b\n  context: {cluster: b, namespace: team-b}\n\
             current-context: a\n",
        )
        .unwrap();
        let global = |context: Option<&str>| GlobalArgs {
            kubeconfig: Some(path.clone()),
            context: context.map(str::to_string),
            ..GlobalArgs::default()
        };
        let current = connection_config(&global(None)).unwrap();
        assert_eq!(current.server, "https://a:1");
        assert_eq!(current.namespace, None);
        let b = connection_config(&global(Some("b"))).unwrap();
        assert_eq!(b.server, "https://b:1");
        assert_eq!(default_namespace(None, b.namespace.as_deref()), "team-b");
        let err = connection_config(&global(Some("nope"))).unwrap_err();
        assert_eq!(
            error_message(&err),
            "error: context was not found for specified context: nope"
        );
    }

    #[test]
    fn errors_print_like_kubectl_however_wrapped() {
        let expected = "Error from server (NotFound): pods \"x\" not found";
        assert_eq!(error_message(&not_found().into()), expected);
        assert_eq!(
            error_message(&DiscoveryError::Api(not_found()).into()),
            expected
        );
        assert_eq!(
            error_message(&crate::list::ListError::Api(not_found()).into()),
            expected
        );
        assert_eq!(
            error_message(&DiscoveryError::UnknownType("foo".into()).into()),
            "error: the server doesn't have a resource type \"foo\""
        );
        assert_eq!(
            error_message(&ApiError::Connect("\"https://h/api\": refused".into()).into()),
            "Unable to connect to the server: \"https://h/api\": refused"
        );
    }
}
