//! API discovery: which resources the server serves (`/api/v1`, `/apis`, `/apis/{g}/{v}`),
//! and resolving what users type (`po`, `pods`, `pod`, `Pod`, `deployments.apps`) to one.
//!
//! Group-versions are fetched on demand and cached for the run only. Name resolution follows
//! kubectl's priority: the core group first, then the groups in the server's order, each at
//! its preferred version; within one group-version a plural beats a singular, a short name,
//! then a kind.

use std::collections::HashMap;

use futures::StreamExt as _;
use serde::Deserialize;
use serde_json::Value;

use crate::client::{ApiError, Client};

/// Group-versions fetched at once when all of discovery is needed.
const DISCOVERY_CONCURRENCY_MAX: usize = 4;
/// The most group-versions loaded (a bound on a misbehaving `/apis`).
const GROUP_VERSIONS_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoveryError {
    #[error("the server doesn't have a resource type \"{0}\"")]
    UnknownType(String),
    #[error("no matches for kind \"{kind}\" in version \"{api_version}\"")]
    UnknownKind { api_version: String, kind: String },
    #[error("cannot decode the discovery document of {group_version}: {source}")]
    Decode {
        group_version: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// One resource type the server serves, at one group-version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiResource {
    /// `""` for the core group.
    pub(crate) group: String,
    pub(crate) version: String,
    /// The plural, as in paths: `pods`.
    pub(crate) name: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) namespaced: bool,
    pub(crate) short_names: Vec<String>,
    pub(crate) verbs: Vec<String>,
    pub(crate) categories: Vec<String>,
    /// Subresource names served under it: `status`, `scale`, `log`.
    pub(crate) subresources: Vec<String>,
}

impl ApiResource {
    /// `v1` or `apps/v1`.
    pub(crate) fn api_version(&self) -> String {
        group_version(&self.group, &self.version)
    }

    fn group_version_path(&self) -> String {
        group_version_path(&self.api_version())
    }

    /// The collection: `/api/v1/namespaces/NS/pods`, or without the namespace part when the
    /// resource is cluster-scoped or `namespace` is `None` (all namespaces).
    pub(crate) fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace.filter(|_| self.namespaced) {
            Some(ns) => format!(
                "{}/namespaces/{ns}/{}",
                self.group_version_path(),
                self.name
            ),
            None => format!("{}/{}", self.group_version_path(), self.name),
        }
    }

    /// One object: `/apis/apps/v1/namespaces/NS/deployments/NAME`.
    pub(crate) fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// How kubectl names the type in `pod/x` and `deployment.apps/x`.
    pub(crate) fn type_name(&self) -> String {
        type_name(&self.kind, &self.group)
    }

    /// The plural with its group, as in `deployments.apps` (used by `api-resources -o name`).
    pub(crate) fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.name, self.group)
        }
    }

    pub(crate) fn has_subresource(&self, name: &str) -> bool {
        self.subresources.iter().any(|s| s == name)
    }
}

/// `pod` or `deployment.apps`: the lower-case kind, qualified by a non-core group.
pub(crate) fn type_name(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_lowercase()
    } else {
        format!("{}.{group}", kind.to_lowercase())
    }
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn group_version_path(group_version: &str) -> String {
    if group_version.contains('/') {
        format!("/apis/{group_version}")
    } else {
        format!("/api/{group_version}")
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

#[derive(Debug, Deserialize)]
struct RawResourceList {
    #[serde(default, rename = "groupVersion")]
    group_version: String,
    #[serde(default)]
    resources: Option<Vec<RawResource>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResource {
    name: String,
    #[serde(default)]
    singular_name: String,
    #[serde(default)]
    namespaced: bool,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    verbs: Option<Vec<String>>,
    #[serde(default)]
    short_names: Option<Vec<String>>,
    #[serde(default)]
    categories: Option<Vec<String>>,
}

/// Decodes an `APIResourceList`. `group_version` is used when the document omits its own.
pub(crate) fn parse_resource_list(
    value: Value,
    group_version: &str,
) -> Result<Vec<ApiResource>, DiscoveryError> {
    let raw: RawResourceList =
        serde_json::from_value(value).map_err(|source| DiscoveryError::Decode {
            group_version: group_version.to_string(),
            source,
        })?;
    let gv = if raw.group_version.is_empty() {
        group_version.to_string()
    } else {
        raw.group_version
    };
    let (group, version) = split_api_version(&gv);
    let mut resources: Vec<ApiResource> = Vec::new();
    let mut subresources: Vec<(String, String)> = Vec::new();
    for r in raw.resources.unwrap_or_default() {
        if let Some((parent, sub)) = r.name.split_once('/') {
            subresources.push((parent.to_string(), sub.to_string()));
            continue;
        }
        let singular = if r.singular_name.is_empty() {
            r.kind.to_lowercase()
        } else {
            r.singular_name
        };
        resources.push(ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            name: r.name,
            singular,
            kind: r.kind,
            namespaced: r.namespaced,
            short_names: r.short_names.unwrap_or_default(),
            verbs: r.verbs.unwrap_or_default(),
            categories: r.categories.unwrap_or_default(),
            subresources: Vec::new(),
        });
    }
    for (parent, sub) in subresources {
        if let Some(r) = resources.iter_mut().find(|r| r.name == parent) {
            r.subresources.push(sub);
        }
    }
    Ok(resources)
}

/// What the user typed, taken apart: `deployments.v1.apps` gives resource `deployments`,
/// version `v1`, group `apps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceQuery {
    pub(crate) resource: String,
    pub(crate) group: Option<String>,
    pub(crate) version: Option<String>,
}

fn looks_like_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else {
        return false;
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return false;
    }
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return true;
    }
    ["alpha", "beta"].iter().any(|stage| {
        tail.strip_prefix(stage)
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

impl ResourceQuery {
    pub(crate) fn parse(arg: &str) -> ResourceQuery {
        let lower = arg.to_lowercase();
        match lower.split_once('.') {
            None => ResourceQuery {
                resource: lower,
                group: None,
                version: None,
            },
            Some((resource, rest)) => {
                if let Some((version, group)) = rest.split_once('.') {
                    if looks_like_version(version) {
                        return ResourceQuery {
                            resource: resource.to_string(),
                            group: Some(group.to_string()),
                            version: Some(version.to_string()),
                        };
                    }
                }
                ResourceQuery {
                    resource: resource.to_string(),
                    group: Some(rest.to_string()),
                    version: None,
                }
            }
        }
    }
}

/// The resource `name` (already lower-case) names in one group-version's list: plural, then
/// singular, then short name, then kind.
pub(crate) fn find_resource<'a>(
    resources: &'a [ApiResource],
    name: &str,
) -> Option<&'a ApiResource> {
    resources
        .iter()
        .find(|r| r.name == name)
        .or_else(|| resources.iter().find(|r| r.singular == name))
        .or_else(|| {
            resources
                .iter()
                .find(|r| r.short_names.iter().any(|s| s.to_lowercase() == name))
        })
        .or_else(|| resources.iter().find(|r| r.kind.to_lowercase() == name))
}

#[derive(Debug, Clone, Deserialize)]
struct RawGroupList {
    #[serde(default)]
    groups: Option<Vec<RawGroup>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGroup {
    name: String,
    #[serde(default)]
    versions: Option<Vec<RawGroupVersion>>,
    #[serde(default)]
    preferred_version: Option<RawGroupVersion>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawGroupVersion {
    group_version: String,
    #[serde(default)]
    version: String,
}

#[derive(Debug, Clone)]
struct GroupInfo {
    name: String,
    preferred: String,
    versions: Vec<String>,
}

/// The discovery cache of one run.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    lists: HashMap<String, Vec<ApiResource>>,
    groups: Option<Vec<GroupInfo>>,
}

async fn fetch_list(client: &Client, gv: &str) -> Result<Vec<ApiResource>, DiscoveryError> {
    let value = client.get(&group_version_path(gv), &[]).await?;
    parse_resource_list(value, gv)
}

impl Discovery {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The resources of one group-version (`v1`, `apps/v1`).
    async fn list(&mut self, client: &Client, gv: &str) -> Result<&[ApiResource], DiscoveryError> {
        if !self.lists.contains_key(gv) {
            let list = fetch_list(client, gv).await?;
            self.lists.insert(gv.to_string(), list);
        }
        Ok(self.lists.get(gv).map(Vec::as_slice).unwrap_or(&[]))
    }

    /// The API groups (`/apis`), in the server's order.
    async fn groups(&mut self, client: &Client) -> Result<Vec<GroupInfo>, DiscoveryError> {
        if let Some(groups) = &self.groups {
            return Ok(groups.clone());
        }
        let value = client.get("/apis", &[]).await?;
        let raw: RawGroupList =
            serde_json::from_value(value).map_err(|source| DiscoveryError::Decode {
                group_version: "/apis".to_string(),
                source,
            })?;
        let groups: Vec<GroupInfo> = raw
            .groups
            .unwrap_or_default()
            .into_iter()
            .take(GROUP_VERSIONS_MAX)
            .filter_map(|g| {
                let versions: Vec<String> = g
                    .versions
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| {
                        if v.version.is_empty() {
                            split_api_version(&v.group_version).1.to_string()
                        } else {
                            v.version
                        }
                    })
                    .collect();
                let preferred = g
                    .preferred_version
                    .map(|p| split_api_version(&p.group_version).1.to_string())
                    .or_else(|| versions.first().cloned())?;
                Some(GroupInfo {
                    name: g.name,
                    preferred,
                    versions,
                })
            })
            .collect();
        self.groups = Some(groups.clone());
        Ok(groups)
    }

    /// Fetches the group-versions not cached yet, a few at once. One that fails to answer is
    /// skipped with a warning (and cached as empty), as kubectl does.
    async fn load_many(&mut self, client: &Client, gvs: &[String]) {
        let wanted: Vec<String> = gvs
            .iter()
            .filter(|gv| !self.lists.contains_key(*gv))
            .cloned()
            .collect();
        let fetched: Vec<(String, Result<Vec<ApiResource>, DiscoveryError>)> =
            futures::stream::iter(wanted)
                .map(|gv| async move {
                    let result = fetch_list(client, &gv).await;
                    (gv, result)
                })
                .buffered(DISCOVERY_CONCURRENCY_MAX)
                .collect()
                .await;
        for (gv, result) in fetched {
            let list = result.unwrap_or_else(|err| {
                crate::printer::warn(&format!(
                    "warning: couldn't get resource list for {gv}: {err}"
                ));
                Vec::new()
            });
            self.lists.insert(gv, list);
        }
    }

    /// The preferred group-version of every group, in the server's order.
    async fn preferred_group_versions(
        &mut self,
        client: &Client,
    ) -> Result<Vec<String>, DiscoveryError> {
        Ok(self
            .groups(client)
            .await?
            .iter()
            .map(|g| group_version(&g.name, &g.preferred))
            .collect())
    }

    /// Loads the core group and every group's preferred version; returns them in priority
    /// order.
    async fn load_all(&mut self, client: &Client) -> Result<Vec<String>, DiscoveryError> {
        self.list(client, "v1").await?;
        let preferred = self.preferred_group_versions(client).await?;
        self.load_many(client, &preferred).await;
        let mut order = vec!["v1".to_string()];
        order.extend(preferred);
        Ok(order)
    }

    /// Every resource the server serves at its preferred version: core first, then the
    /// groups in the server's order.
    pub(crate) async fn all_resources(
        &mut self,
        client: &Client,
    ) -> Result<Vec<ApiResource>, DiscoveryError> {
        let order = self.load_all(client).await?;
        Ok(order
            .iter()
            .filter_map(|gv| self.lists.get(gv))
            .flatten()
            .cloned()
            .collect())
    }

    /// The resources of a category (`all`), in discovery order.
    pub(crate) async fn category(
        &mut self,
        client: &Client,
        category: &str,
    ) -> Result<Vec<ApiResource>, DiscoveryError> {
        Ok(self
            .all_resources(client)
            .await?
            .into_iter()
            .filter(|r| r.categories.iter().any(|c| c == category))
            .collect())
    }

    /// Resolves a resource type as typed on the command line.
    pub(crate) async fn resolve(
        &mut self,
        client: &Client,
        arg: &str,
    ) -> Result<ApiResource, DiscoveryError> {
        let query = ResourceQuery::parse(arg);
        let unknown = || DiscoveryError::UnknownType(arg.to_string());
        if let Some(group) = &query.group {
            let groups = self.groups(client).await?;
            let Some(info) = groups.iter().find(|g| &g.name == group) else {
                return Err(unknown());
            };
            let version = match &query.version {
                Some(v) if info.versions.iter().any(|known| known == v) => v.clone(),
                Some(_) => return Err(unknown()),
                None => info.preferred.clone(),
            };
            let gv = group_version(group, &version);
            let list = self.list(client, &gv).await?;
            return find_resource(list, &query.resource)
                .cloned()
                .ok_or_else(unknown);
        }
        // The core group alone answers most lookups with one request.
        if let Some(found) = find_resource(self.list(client, "v1").await?, &query.resource) {
            return Ok(found.clone());
        }
        // Then the groups in order, a few at a time, stopping at the first batch that knows it.
        let preferred = self.preferred_group_versions(client).await?;
        for batch in preferred.chunks(DISCOVERY_CONCURRENCY_MAX) {
            self.load_many(client, batch).await;
            for gv in batch {
                if let Some(found) = self
                    .lists
                    .get(gv)
                    .and_then(|l| find_resource(l, &query.resource))
                {
                    return Ok(found.clone());
                }
            }
        }
        Err(unknown())
    }

    /// The resource serving `kind` at `api_version` (for manifests).
    pub(crate) async fn resolve_kind(
        &mut self,
        client: &Client,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, DiscoveryError> {
        let unknown = || DiscoveryError::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        };
        let list = match self.list(client, api_version).await {
            Ok(list) => list,
            Err(DiscoveryError::Api(err)) if err.is_not_found() => return Err(unknown()),
            Err(err) => return Err(err),
        };
        list.iter()
            .find(|r| r.kind == kind)
            .cloned()
            .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn core_list() -> Vec<ApiResource> {
        let value = json!({
            "kind": "APIResourceList",
            "groupVersion": "v1",
            "resources": [
                {"name": "configmaps", "singularName": "configmap", "namespaced": true, "kind": "ConfigMap",
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["cm"]},
                {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
                 "verbs": ["get", "list"], "shortNames": ["ev"]},
                {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                 "verbs": ["get", "list"], "shortNames": ["ns"]},
                {"name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
                 "verbs": ["get", "list"], "shortNames": ["no"]},
                {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                 "verbs": ["get", "list"], "shortNames": ["po"], "categories": ["all"]},
                {"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
                {"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]},
                {"name": "replicationcontrollers", "singularName": "replicationcontroller", "namespaced": true,
                 "kind": "ReplicationController", "verbs": ["get"], "shortNames": ["rc"], "categories": ["all"]},
                {"name": "replicationcontrollers/scale", "singularName": "", "namespaced": true,
                 "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
                {"name": "services", "singularName": "service", "namespaced": true, "kind": "Service",
                 "verbs": ["get"], "shortNames": ["svc"], "categories": ["all"]},
                {"name": "serviceaccounts", "singularName": "serviceaccount", "namespaced": true,
                 "kind": "ServiceAccount", "verbs": ["get"], "shortNames": ["sa"]},
                {"name": "endpoints", "singularName": "endpoints", "namespaced": true, "kind": "Endpoints",
                 "verbs": ["get"], "shortNames": ["ep"]}
            ]
        });
        parse_resource_list(value, "v1").unwrap()
    }

    fn apps_list() -> Vec<ApiResource> {
        let value = json!({
            "kind": "APIResourceList",
            "groupVersion": "apps/v1",
            "resources": [
                {"name": "deployments", "singularName": "deployment", "namespaced": true, "kind": "Deployment",
                 "verbs": ["get"], "shortNames": ["deploy"], "categories": ["all"]},
                {"name": "deployments/scale", "singularName": "", "namespaced": true, "group": "autoscaling",
                 "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
                {"name": "replicasets", "singularName": "replicaset", "namespaced": true, "kind": "ReplicaSet",
                 "verbs": ["get"], "shortNames": ["rs"], "categories": ["all"]}
            ]
        });
        parse_resource_list(value, "apps/v1").unwrap()
    }

    fn check(list: &[ApiResource], typed: &str, expected: Option<&str>) {
        let query = ResourceQuery::parse(typed);
        let found = find_resource(list, &query.resource).map(|r| r.name.as_str());
        assert_eq!(found, expected, "resolving {typed:?}");
    }

    #[test]
    fn resolves_plural_singular_short_and_kind() {
        let core = core_list();
        for (typed, expected) in [
            ("pods", "pods"),
            ("pod", "pods"),
            ("po", "pods"),
            ("Pod", "pods"),
            ("PODS", "pods"),
            ("svc", "services"),
            ("rc", "replicationcontrollers"),
            ("ns", "namespaces"),
            ("no", "nodes"),
            ("cm", "configmaps"),
            ("ep", "endpoints"),
            ("sa", "serviceaccounts"),
            ("ev", "events"),
            ("ReplicationController", "replicationcontrollers"),
        ] {
            check(&core, typed, Some(expected));
        }
        check(&core, "deploy", None);
        let apps = apps_list();
        check(&apps, "deploy", Some("deployments"));
        check(&apps, "rs", Some("replicasets"));
        check(&apps, "deployments.apps", Some("deployments"));
    }

    #[test]
    fn subresources_attach_to_their_parent() {
        let core = core_list();
        let pods = core.iter().find(|r| r.name == "pods").unwrap();
        assert_eq!(pods.subresources, vec!["log", "status"]);
        assert!(!core.iter().any(|r| r.name.contains('/')));
        let apps = apps_list();
        let deploy = &apps[0];
        assert!(deploy.has_subresource("scale"));
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.type_name(), "deployment.apps");
        assert_eq!(
            deploy.object_path(Some("default"), "web"),
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
        let nodes = core.iter().find(|r| r.name == "nodes").unwrap();
        assert_eq!(nodes.collection_path(Some("default")), "/api/v1/nodes");
        assert_eq!(pods.collection_path(None), "/api/v1/pods");
        assert_eq!(pods.type_name(), "pod");
    }

    #[test]
    fn queries_with_group_and_version() {
        assert_eq!(
            ResourceQuery::parse("Deployments.v1.apps"),
            ResourceQuery {
                resource: "deployments".into(),
                group: Some("apps".into()),
                version: Some("v1".into())
            }
        );
        assert_eq!(
            ResourceQuery::parse("widgets.example.com"),
            ResourceQuery {
                resource: "widgets".into(),
                group: Some("example.com".into()),
                version: None
            }
        );
        assert_eq!(
            ResourceQuery::parse("crontabs.v1beta1.stable.example.com")
                .version
                .as_deref(),
            Some("v1beta1")
        );
        assert_eq!(ResourceQuery::parse("po").group, None);
    }
}
