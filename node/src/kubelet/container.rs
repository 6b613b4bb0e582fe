//! From a pod's container spec and its image to the runtime's [`ContainerConfig`], without
//! I/O: argv as Kubernetes combines `command`/`args` with the image's entrypoint and cmd,
//! environment with `$(VAR)` references expanded, working directory, user and limits.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};
use keelson_api::validation::Quantity;

use crate::runtime::{ContainerConfig, ContainerLabels, Mount};

/// An image as the kubelet needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The digest the pod status reports as `imageID`.
    pub id: String,
    pub layers: Vec<PathBuf>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// `uid[:gid]` (numeric only; names are not resolved).
    pub user: Option<String>,
    /// Compressed size of the config and layers, as the Pulled event reports it.
    pub size_bytes: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContainerError {
    #[error("no command specified: neither the container nor its image gives one")]
    NoCommand,
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Expands `$(NAME)` from `vars`; `$$` escapes; unknown references stay as written, as
/// Kubernetes does.
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        if let Some(after) = tail.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = tail;
        }
    }
    out.push_str(rest);
    out
}

/// The argv: `command` replaces the entrypoint (and drops the image's cmd), `args` replace
/// the cmd.
pub fn argv(
    container: &Container,
    image: &ResolvedImage,
    vars: &HashMap<String, String>,
) -> Result<Vec<String>, ContainerError> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let (head, tail) = match (command.is_empty(), args.is_empty()) {
        (false, false) => (command, args),
        (false, true) => (command, Vec::new()),
        (true, false) => (image.entrypoint.clone(), args),
        (true, true) => (image.entrypoint.clone(), image.cmd.clone()),
    };
    let argv: Vec<String> = head
        .iter()
        .chain(tail.iter())
        .map(|a| expand(a, vars))
        .collect();
    if argv.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(argv)
}

fn quantity(field: &str, text: &str) -> Result<Quantity, ContainerError> {
    Quantity::parse(text).map_err(|e| ContainerError::Invalid {
        field: field.to_string(),
        message: format!("{text}: {e}"),
    })
}

/// Memory limit (bytes), CPU limit and CPU request (millicores).
pub type Limits = (Option<u64>, Option<u64>, Option<u64>);

/// The container's [`Limits`].
pub fn resources(container: &Container) -> Result<Limits, ContainerError> {
    let Some(resources) = &container.resources else {
        return Ok((None, None, None));
    };
    let get = |map: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
               key: &str| map.as_ref().and_then(|m| m.get(key)).map(|q| q.0.clone());
    let memory = get(&resources.limits, "memory")
        .map(|q| quantity("resources.limits.memory", &q).map(|q| q.value().max(0) as u64))
        .transpose()?;
    let cpu = get(&resources.limits, "cpu")
        .map(|q| quantity("resources.limits.cpu", &q).map(|q| q.milli_value().max(0) as u64))
        .transpose()?;
    let request = get(&resources.requests, "cpu")
        .map(|q| quantity("resources.requests.cpu", &q).map(|q| q.milli_value().max(0) as u64))
        .transpose()?;
    Ok((memory, cpu, request))
}

/// uid and gid: the container's security context, then the pod's, then the image's user.
pub fn user(
    container: &Container,
    pod: Option<&PodSecurityContext>,
    image: &ResolvedImage,
) -> (u32, u32) {
    let sc = container.security_context.as_ref();
    let image_user = image.user.as_deref().unwrap_or("");
    let (image_uid, image_gid) = match image_user.split_once(':') {
        Some((u, g)) => (u.parse().ok(), g.parse().ok()),
        None => (image_user.parse().ok(), None),
    };
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(pod.and_then(|p| p.run_as_user))
        .and_then(|u| u32::try_from(u).ok())
        .or(image_uid)
        .unwrap_or(0);
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(pod.and_then(|p| p.run_as_group))
        .and_then(|g| u32::try_from(g).ok())
        .or(image_gid)
        .unwrap_or(0);
    (uid, gid)
}

/// What the worker knows besides the spec and the image.
pub struct Placement {
    pub id: String,
    pub labels: ContainerLabels,
    pub hostname: String,
    pub log_path: PathBuf,
    pub mounts: Vec<Mount>,
    /// The container's environment in order, already resolved (values from fields, Secrets
    /// and ConfigMaps), before `$(VAR)` expansion.
    pub env: Vec<(String, String)>,
}

/// The runtime's configuration of one run of a container.
pub fn config(
    container: &Container,
    pod_security: Option<&PodSecurityContext>,
    image: &ResolvedImage,
    placement: Placement,
) -> Result<ContainerConfig, ContainerError> {
    // The image's environment first, the container's over it, each value expanded with the
    // variables defined before it.
    let mut env: Vec<(String, String)> = image.env.clone();
    let mut vars: HashMap<String, String> = env.iter().cloned().collect();
    for (name, value) in placement.env {
        let value = expand(&value, &vars);
        vars.insert(name.clone(), value.clone());
        match env.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => env.push((name, value)),
        }
    }
    if !env.iter().any(|(n, _)| n == "PATH") {
        env.push(("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    if !env.iter().any(|(n, _)| n == "HOSTNAME") {
        env.push(("HOSTNAME".to_string(), placement.hostname.clone()));
    }
    let args = argv(container, image, &vars)?;
    let (memory_limit_bytes, cpu_limit_millis, cpu_request_millis) = resources(container)?;
    let working_dir = container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    Ok(ContainerConfig {
        id: placement.id,
        labels: placement.labels,
        layers: image.layers.clone(),
        args,
        env,
        working_dir,
        mounts: placement.mounts,
        hostname: placement.hostname,
        user: user(container, pod_security, image),
        memory_limit_bytes,
        cpu_limit_millis,
        cpu_request_millis,
        log_path: placement.log_path,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn container(value: serde_json::Value) -> Container {
        serde_json::from_value(value).expect("a valid container")
    }

    fn image() -> ResolvedImage {
        ResolvedImage {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec![
                ("PATH".into(), "/bin".into()),
                ("MODE".into(), "image".into()),
            ],
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            ..ResolvedImage::default()
        }
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        let cases = [
            ("$(A)", "1"),
            ("x$(A)y", "x1y"),
            ("$$(A)", "$(A)"),
            ("$(B)", "$(B)"),
            ("$(A", "$(A"),
            ("cost $5", "cost $5"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &vars), want, "{input}");
        }
    }

    #[test]
    fn command_and_args_combine_with_the_image() {
        let vars = HashMap::from([("NAME".to_string(), "w".to_string())]);
        let cases = [
            (json!({"name": "c"}), vec!["/entry", "serve", "--port=80"]),
            (json!({"name": "c", "args": ["x"]}), vec!["/entry", "x"]),
            (json!({"name": "c", "command": ["sh"]}), vec!["sh"]),
            (
                json!({"name": "c", "command": ["sh", "-c"], "args": ["echo $(NAME)"]}),
                vec!["sh", "-c", "echo w"],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(
                argv(&container(spec.clone()), &image(), &vars).unwrap(),
                want,
                "{spec}"
            );
        }
        let empty = ResolvedImage::default();
        assert_eq!(
            argv(&container(json!({"name": "c"})), &empty, &vars),
            Err(ContainerError::NoCommand)
        );
    }

    #[test]
    fn config_layers_env_limits_and_user() {
        let c = container(json!({
            "name": "c",
            "env": [{"name": "MODE", "value": "pod"}, {"name": "GREETING", "value": "mode=$(MODE)"}],
            "resources": {"limits": {"memory": "16Mi", "cpu": "500m"}, "requests": {"cpu": "100m"}},
            "securityContext": {"runAsUser": 7},
        }));
        let placement = Placement {
            id: "k-1-c-0".into(),
            labels: ContainerLabels {
                pod_uid: "1".into(),
                pod_namespace: "default".into(),
                pod_name: "p".into(),
                container_name: "c".into(),
                attempt: 0,
            },
            hostname: "p".into(),
            log_path: "/tmp/log".into(),
            mounts: vec![],
            env: vec![
                ("MODE".into(), "pod".into()),
                ("GREETING".into(), "mode=$(MODE)".into()),
            ],
        };
        let config = config(&c, None, &image(), placement).unwrap();
        let env: HashMap<_, _> = config.env.iter().cloned().collect();
        assert_eq!(env["MODE"], "pod");
        assert_eq!(env["GREETING"], "mode=pod");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["HOSTNAME"], "p");
        assert_eq!(config.memory_limit_bytes, Some(16 << 20));
        assert_eq!(config.cpu_limit_millis, Some(500));
        assert_eq!(config.cpu_request_millis, Some(100));
        assert_eq!(config.user, (7, 1000));
        assert_eq!(config.working_dir, "/srv");
    }
}
