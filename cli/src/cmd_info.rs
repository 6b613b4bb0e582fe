//! `kctl api-resources` (discovery as a table) and `kctl version` (client and `GET /version`).

use serde_json::{json, Value};

use crate::discovery::ApiResource;
use crate::printer::{out, to_yaml, OutputFormat, TabWriter, TABLE_MINWIDTH, TABLE_PADDING};
use crate::session::{GlobalArgs, Session};

#[derive(Debug, clap::Args)]
pub(crate) struct ApiResourcesArgs {
    /// Output format: wide or name
    #[arg(short = 'o', long)]
    output: Option<String>,
    /// Only namespaced (true) or cluster-scoped (false) resources
    #[arg(long)]
    namespaced: Option<bool>,
    /// Only resources of this API group ("" for core)
    #[arg(long)]
    api_group: Option<String>,
    /// Only resources supporting these verbs
    #[arg(long, value_delimiter = ',')]
    verbs: Vec<String>,
    /// Do not print the header
    #[arg(long)]
    no_headers: bool,
}

#[derive(Debug, clap::Args)]
pub(crate) struct VersionArgs {
    /// Only the client version (no server needed)
    #[arg(long)]
    client: bool,
    /// Output format: json or yaml
    #[arg(short = 'o', long)]
    output: Option<String>,
}

/// The api-resources table (or names), from resources already filtered and sorted.
pub(crate) fn api_resources_text(
    resources: &[ApiResource],
    format: OutputFormat,
    no_headers: bool,
) -> String {
    if format == OutputFormat::Name {
        return resources
            .iter()
            .map(|r| r.qualified_plural() + "\n")
            .collect();
    }
    let wide = format == OutputFormat::Wide;
    let mut text = String::new();
    if !no_headers {
        text.push_str("NAME\tSHORTNAMES\tAPIVERSION\tNAMESPACED\tKIND");
        if wide {
            text.push_str("\tVERBS\tCATEGORIES");
        }
        text.push('\n');
    }
    for r in resources {
        text.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}",
            r.name,
            r.short_names.join(","),
            r.api_version(),
            r.namespaced,
            r.kind
        ));
        if wide {
            text.push_str(&format!(
                "\t[{}]\t{}",
                r.verbs.join(" "),
                r.categories.join(",")
            ));
        }
        text.push('\n');
    }
    TabWriter::new(TABLE_MINWIDTH, TABLE_PADDING).format(&text)
}

pub(crate) async fn api_resources(
    session: &mut Session,
    args: ApiResourcesArgs,
) -> anyhow::Result<()> {
    let format = OutputFormat::parse(args.output.as_deref())?;
    if matches!(format, OutputFormat::Yaml | OutputFormat::Json) {
        return Err(
            crate::printer::PrinterError::UnknownFormat(args.output.unwrap_or_default()).into(),
        );
    }
    let mut resources: Vec<ApiResource> = session
        .discovery
        .all_resources(&session.client)
        .await?
        .into_iter()
        .filter(|r| !r.verbs.is_empty())
        .filter(|r| args.namespaced.is_none_or(|n| r.namespaced == n))
        .filter(|r| args.api_group.as_ref().is_none_or(|g| &r.group == g))
        .filter(|r| args.verbs.iter().all(|v| r.verbs.contains(v)))
        .collect();
    resources.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
    out(&api_resources_text(&resources, format, args.no_headers))?;
    Ok(())
}

/// Go's name for an architecture, as Kubernetes version strings use it.
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn client_version() -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let mut parts = version.split('.');
    json!({
        "major": parts.next().unwrap_or("0"),
        "minor": parts.next().unwrap_or("0"),
        "gitVersion": format!("v{version}"),
        "platform": format!("{}/{}", std::env::consts::OS, go_arch(std::env::consts::ARCH)),
    })
}

pub(crate) async fn version(global: &GlobalArgs, args: VersionArgs) -> anyhow::Result<()> {
    let format = args.output.as_deref().unwrap_or("");
    if !matches!(format, "" | "json" | "yaml") {
        anyhow::bail!("--output must be 'yaml' or 'json'");
    }
    let client = client_version();
    let server = if args.client {
        None
    } else {
        let session = Session::connect(global)?;
        Some(session.client.get("/version", &[]).await)
    };
    let server_value = match &server {
        Some(Ok(value)) => Some(value.clone()),
        _ => None,
    };
    match format {
        "" => {
            let mut text = format!(
                "Client Version: {}\n",
                client["gitVersion"].as_str().unwrap_or("")
            );
            if let Some(value) = &server_value {
                let git = value
                    .get("gitVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                text.push_str(&format!("Server Version: {git}\n"));
            }
            out(&text)?;
        }
        _ => {
            let mut doc = json!({ "clientVersion": client });
            if let (Some(value), Some(map)) = (&server_value, doc.as_object_mut()) {
                map.insert("serverVersion".to_string(), value.clone());
            }
            let text = if format == "json" {
                serde_json::to_string_pretty(&doc)? + "\n"
            } else {
                to_yaml(&doc)
            };
            out(&text)?;
        }
    }
    match server {
        Some(Err(err)) => Err(err.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        name: &str,
        short: &[&str],
        group: &str,
        namespaced: bool,
        kind: &str,
    ) -> ApiResource {
        ApiResource {
            group: group.to_string(),
            version: "v1".to_string(),
            name: name.to_string(),
            singular: String::new(),
            kind: kind.to_string(),
            namespaced,
            short_names: short.iter().map(|s| s.to_string()).collect(),
            verbs: vec!["get".to_string(), "list".to_string()],
            categories: vec![],
            subresources: vec![],
        }
    }

    #[test]
    fn api_resources_like_kubectl() {
        let resources = vec![
            resource("pods", &["po"], "", true, "Pod"),
            resource(
                "replicationcontrollers",
                &["rc"],
                "",
                true,
                "ReplicationController",
            ),
            resource("secrets", &[], "", true, "Secret"),
            resource("deployments", &["deploy"], "apps", true, "Deployment"),
        ];
        assert_eq!(
            api_resources_text(&resources, OutputFormat::Table, false),
            "\
NAME                     SHORTNAMES   APIVERSION   NAMESPACED   KIND
pods                     po           v1           true         Pod
replicationcontrollers   rc           v1           true         ReplicationController
secrets                               v1           true         Secret
deployments              deploy       apps/v1      true         Deployment
"
        );
        assert_eq!(
            api_resources_text(&resources[2..], OutputFormat::Name, false),
            "secrets\ndeployments.apps\n"
        );
    }
}
