//! The registry of resources Keelson serves, and the discovery and OpenAPI v3 documents
//! standard clients (kubectl, the Python client) read to find them.

use serde_json::{json, Map, Value};

/// The verbs of an ordinary resource, as Kubernetes lists them.
const VERBS_ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces have no `deletecollection`.
const VERBS_NO_COLLECTION_DELETE: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// The verbs of `status` and `scale` subresources.
const VERBS_GET_PATCH_UPDATE: &[&str] = &["get", "patch", "update"];
const VERBS_CREATE: &[&str] = &["create"];
const VERBS_GET: &[&str] = &["get"];
const CATEGORIES_ALL: &[&str] = &["all"];

/// The version string `/version` reports and the OpenAPI documents carry.
pub const KUBERNETES_VERSION: &str = "v1.37.0";

/// A subresource such as `pods/status` or `deployments/scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subresource {
    /// The part after the slash: `status`, `scale`, `log`.
    pub name: &'static str,
    /// The group of the subresource's kind ("" for core).
    pub group: &'static str,
    /// The version of the subresource's kind.
    pub version: &'static str,
    /// The kind it reads and writes (`Scale`, `Binding`, or the parent's kind).
    pub kind: &'static str,
    /// The verbs it supports.
    pub verbs: &'static [&'static str],
}

/// A served resource (one group/version/plural).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group, "" for core.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `pods`.
    pub plural: &'static str,
    /// Singular name, e.g. `pod`.
    pub singular: &'static str,
    /// Short names for kubectl, e.g. `po`.
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Verbs supported on the resource itself.
    pub verbs: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Subresources.
    pub subresources: &'static [Subresource],
}

const fn status_of(kind: &'static str, group: &'static str) -> Subresource {
    Subresource {
        name: "status",
        group,
        version: "v1",
        kind,
        verbs: VERBS_GET_PATCH_UPDATE,
    }
}

const SCALE: Subresource = Subresource {
    name: "scale",
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
    verbs: VERBS_GET_PATCH_UPDATE,
};

/// Every resource Keelson serves, core first.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        verbs: VERBS_NO_COLLECTION_DELETE,
        categories: &[],
        subresources: &[status_of("Namespace", "")],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[status_of("Node", "")],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: CATEGORIES_ALL,
        subresources: &[
            Subresource {
                name: "binding",
                group: "",
                version: "v1",
                kind: "Binding",
                verbs: VERBS_CREATE,
            },
            Subresource {
                name: "eviction",
                group: "policy",
                version: "v1",
                kind: "Eviction",
                verbs: VERBS_CREATE,
            },
            Subresource {
                name: "log",
                group: "",
                version: "v1",
                kind: "Pod",
                verbs: VERBS_GET,
            },
            status_of("Pod", ""),
        ],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ReplicationController",
        plural: "replicationcontrollers",
        singular: "replicationcontroller",
        short_names: &["rc"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: CATEGORIES_ALL,
        subresources: &[SCALE, status_of("ReplicationController", "")],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: CATEGORIES_ALL,
        subresources: &[status_of("Service", "")],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: CATEGORIES_ALL,
        subresources: &[SCALE, status_of("Deployment", "apps")],
    },
    Resource {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: CATEGORIES_ALL,
        subresources: &[SCALE, status_of("ReplicaSet", "apps")],
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        verbs: VERBS_ALL,
        categories: &[],
        subresources: &[],
    },
];

/// The group and version of the resource metrics API (metrics-server's).
pub const METRICS_GROUP: &str = "metrics.k8s.io";
pub const METRICS_VERSION: &str = "v1beta1";
const VERBS_GET_LIST: &[&str] = &["get", "list"];

/// The resource metrics API: listed by discovery (so `kubectl top` finds it) but not stored
/// (no OpenAPI document, not a kind `find` resolves): the API server asks the nodes.
pub static METRICS_RESOURCES: &[Resource] = &[
    Resource {
        group: METRICS_GROUP,
        version: METRICS_VERSION,
        kind: "NodeMetrics",
        plural: "nodes",
        singular: "",
        short_names: &[],
        namespaced: false,
        verbs: VERBS_GET_LIST,
        categories: &[],
        subresources: &[],
    },
    Resource {
        group: METRICS_GROUP,
        version: METRICS_VERSION,
        kind: "PodMetrics",
        plural: "pods",
        singular: "",
        short_names: &[],
        namespaced: true,
        verbs: VERBS_GET_LIST,
        categories: &[],
        subresources: &[],
    },
];

/// Every resource discovery lists: the stored ones, then the metrics API's.
fn discovered() -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().chain(METRICS_RESOURCES)
}

impl Resource {
    /// `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    /// The kind of a list of these objects, e.g. `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `pods`, or `deployments.apps` for a non-core group (as in Kubernetes messages).
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The subresource with this name, e.g. `status`.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }

    /// Whether the resource supports a verb.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The URL path of the collection: `/api/v1/namespaces/{ns}/pods`, `/api/v1/nodes`,
    /// `/apis/apps/v1/deployments` (all namespaces when `namespace` is `None`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match namespace {
            Some(ns) if self.namespaced => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }
}

fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// The resource served at `group`/`version`/`plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an `apiVersion` (`v1`, `apps/v1`) and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The resource a user means by `name` (plural, singular, short name or kind, any case;
/// optionally qualified by group, e.g. `deployments.apps`), as kubectl resolves it.
pub fn find_by_name(name: &str) -> Option<&'static Resource> {
    let name = name.to_ascii_lowercase();
    let (base, group) = match name.split_once('.') {
        Some((base, group)) => (base, Some(group)),
        None => (name.as_str(), None),
    };
    RESOURCES.iter().find(|r| {
        group.is_none_or(|g| g == r.group)
            && (r.plural == base
                || r.singular == base
                || r.short_names.contains(&base)
                || r.kind.eq_ignore_ascii_case(base))
    })
}

/// The groups other than core that Keelson serves, in order.
fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in discovered() {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

/// `GET /api`: the `APIVersions` object, with an empty `serverAddressByClientCIDRs` (the
/// Python client requires the field to be present).
pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [],
    })
}

/// `GET /api` naming the address clients should use (as Kubernetes does, for `0.0.0.0/0`).
pub fn api_versions_with_address(server_address: &str) -> Value {
    let mut versions = api_versions();
    versions["serverAddressByClientCIDRs"] =
        json!([{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]);
    versions
}

/// `GET /apis`: the `APIGroupList` of the groups served (apps, coordination.k8s.io).
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(api_group).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`: the `APIGroup` object, if the group is served.
pub fn api_group(group: &str) -> Value {
    let versions: Vec<&str> = {
        let mut versions = Vec::new();
        for r in discovered().filter(|r| r.group == group) {
            if !versions.contains(&r.version) {
                versions.push(r.version);
            }
        }
        versions
    };
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": group_version(group, v), "version": v}))
        .collect();
    let preferred = entries.first().cloned().unwrap_or(Value::Null);
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": preferred,
    })
}

/// Whether `group` is served (core counts as served).
pub fn serves_group(group: &str) -> bool {
    discovered().any(|r| r.group == group)
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`: the `APIResourceList` with every
/// resource and subresource, sorted by name; `None` when the group/version is not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries: Vec<(String, Value)> = Vec::new();
    for r in discovered().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push((r.plural.to_owned(), entry));
        for sub in r.subresources {
            let name = format!("{}/{}", r.plural, sub.name);
            let mut entry = json!({
                "name": name,
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            if sub.group != r.group || sub.version != r.version {
                entry["group"] = Value::from(sub.group);
                entry["version"] = Value::from(sub.version);
            }
            entries.push((name, entry));
        }
    }
    if entries.is_empty() {
        return None;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let resources: Vec<Value> = entries.into_iter().map(|(_, e)| e).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version(group, version),
        "resources": resources,
    }))
}

/// The OpenAPI v3 path key of a group/version: `api/v1`, `apis/apps/v1`.
fn openapi_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The served group/versions, core first.
fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out.sort_by_key(|(g, _)| !g.is_empty());
    out
}

/// FNV-1a, 64 bits: a stable content hash for the OpenAPI `hash=` query (cache busting only).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// `GET /openapi/v3`: where each group/version's document lives, with a content hash.
pub fn openapi_v3_root() -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions() {
        let key = openapi_key(group, version);
        let hash = openapi_v3_document(group, version)
            .map(|doc| fnv1a_64(doc.to_string().as_bytes()))
            .unwrap_or_default();
        paths.insert(
            key.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash:016X}")}),
        );
    }
    json!({"paths": paths})
}

fn query_parameter(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": "string", "uniqueItems": true},
    })
}

/// `GET /openapi/v3/api/v1` (or `apis/{group}/{version}`): per resource the item path with
/// `get`, `put` and `patch` operations carrying `x-kubernetes-group-version-kind` and the
/// `fieldValidation` query parameter — what kubectl checks before it asks for server-side
/// strict validation. No schemas are served: without them kubectl computes strategic merge
/// patches from its built-in types, which is correct; a partial schema would not be.
pub fn openapi_v3_document(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in resources {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let write_params = vec![
            query_parameter(
                "dryRun",
                "When present, indicates that modifications should not be persisted.",
            ),
            query_parameter(
                "fieldManager",
                "The name of the actor or entity making these changes.",
            ),
            query_parameter(
                "fieldValidation",
                "Ignore, Warn or Strict: how to treat unknown or duplicate fields in the request.",
            ),
        ];
        let mut patch_params = write_params.clone();
        patch_params.push(query_parameter(
            "force",
            "Force apply (server-side apply only).",
        ));
        let op = |verb: &str, params: Vec<Value>| {
            json!({
                "tags": [openapi_key(r.group, r.version).replace('/', "_")],
                "operationId": format!("{verb}{}", r.kind),
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let mut item = json!({
            "get": op("get", Vec::new()),
            "put": op("put", write_params.clone()),
            "patch": op("patch", patch_params),
            "parameters": [
                {"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}},
            ],
        });
        let collection = r.collection_path(Some("{namespace}"));
        if r.namespaced {
            if let Some(params) = item["parameters"].as_array_mut() {
                params.push(json!({
                    "name": "namespace", "in": "path", "required": true,
                    "schema": {"type": "string", "uniqueItems": true},
                }));
            }
        }
        paths.insert(format!("{collection}/{{name}}"), item);
        paths.insert(collection, json!({"post": op("post", write_params)}));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_has_kubernetes_names() {
        let cases = [
            ("", "namespaces", "Namespace", &["ns"][..], false),
            ("", "pods", "Pod", &["po"][..], true),
            ("", "nodes", "Node", &["no"][..], false),
            ("", "services", "Service", &["svc"][..], true),
            ("", "endpoints", "Endpoints", &["ep"][..], true),
            ("", "serviceaccounts", "ServiceAccount", &["sa"][..], true),
            ("", "secrets", "Secret", &[][..], true),
            ("", "configmaps", "ConfigMap", &["cm"][..], true),
            (
                "",
                "replicationcontrollers",
                "ReplicationController",
                &["rc"][..],
                true,
            ),
            ("", "events", "Event", &["ev"][..], true),
            ("apps", "replicasets", "ReplicaSet", &["rs"][..], true),
            ("apps", "deployments", "Deployment", &["deploy"][..], true),
            ("coordination.k8s.io", "leases", "Lease", &[][..], true),
        ];
        assert_eq!(RESOURCES.len(), cases.len());
        for (group, plural, kind, short, namespaced) in cases {
            let r = find(group, "v1", plural).unwrap();
            assert_eq!(r.kind, kind);
            assert_eq!(r.short_names, short);
            assert_eq!(r.namespaced, namespaced, "{plural}");
            assert_eq!(find_kind(&r.api_version(), kind), Some(r));
        }
        assert!(find("", "v1", "widgets").is_none());
        assert!(find_kind("apps/v1", "Pod").is_none());
    }

    #[test]
    fn names_and_paths() {
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.list_kind(), "DeploymentList");
        assert_eq!(deploy.group_resource(), "deployments.apps");
        assert_eq!(
            deploy.collection_path(Some("ns")),
            "/apis/apps/v1/namespaces/ns/deployments"
        );
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.api_version(), "v1");
        assert_eq!(pods.group_resource(), "pods");
        assert_eq!(pods.collection_path(None), "/api/v1/pods");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.collection_path(Some("ns")), "/api/v1/nodes");
        assert!(pods.subresource("log").is_some());
        assert!(pods.subresource("scale").is_none());
        assert!(!find("", "v1", "namespaces")
            .unwrap()
            .supports("deletecollection"));
        assert!(pods.supports("deletecollection"));
    }

    #[test]
    fn find_by_name_resolves_like_kubectl() {
        let cases = [
            ("po", Some("pods")),
            ("Pod", Some("pods")),
            ("PODS", Some("pods")),
            ("pod", Some("pods")),
            ("deploy", Some("deployments")),
            ("deployments.apps", Some("deployments")),
            ("svc", Some("services")),
            ("rs", Some("replicasets")),
            ("lease", Some("leases")),
            ("ep", Some("endpoints")),
            ("pods.apps", None),
            ("widgets", None),
        ];
        for (name, plural) in cases {
            assert_eq!(find_by_name(name).map(|r| r.plural), plural, "{name}");
        }
    }

    #[test]
    fn discovery_documents() {
        let versions = api_versions();
        assert_eq!(versions["versions"], json!(["v1"]));
        assert!(versions["serverAddressByClientCIDRs"].is_array());
        assert_eq!(
            api_versions_with_address("127.0.0.1:6443")["serverAddressByClientCIDRs"][0]
                ["serverAddress"],
            "127.0.0.1:6443"
        );
        let groups = api_group_list();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["apps", "coordination.k8s.io", "metrics.k8s.io"]);
        assert_eq!(
            groups["groups"][0]["preferredVersion"]["groupVersion"],
            "apps/v1"
        );
        assert!(serves_group("") && serves_group("apps") && !serves_group("batch"));

        let core = api_resource_list("", "v1").unwrap();
        assert_eq!(core["groupVersion"], "v1");
        let by_name = |list: &Value, name: &str| {
            list["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .cloned()
                .unwrap()
        };
        let pods = by_name(&core, "pods");
        assert_eq!(pods["singularName"], "pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["verbs"].as_array().unwrap().len(), 8);
        assert_eq!(
            by_name(&core, "pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert_eq!(by_name(&core, "pods/log")["kind"], "Pod");
        assert_eq!(by_name(&core, "pods/eviction")["group"], "policy");
        assert_eq!(
            by_name(&core, "replicationcontrollers/scale")["group"],
            "autoscaling"
        );
        assert!(by_name(&core, "secrets").get("shortNames").is_none());
        assert!(by_name(&core, "pods/status").get("group").is_none());
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);

        let apps = api_resource_list("apps", "v1").unwrap();
        let scale = by_name(&apps, "deployments/scale");
        assert_eq!(
            (
                scale["group"].as_str(),
                scale["version"].as_str(),
                scale["kind"].as_str()
            ),
            (Some("autoscaling"), Some("v1"), Some("Scale"))
        );
        assert_eq!(
            by_name(&apps, "deployments")["shortNames"],
            json!(["deploy"])
        );
        assert!(api_resource_list("batch", "v1").is_none());
        assert!(api_resource_list("apps", "v2").is_none());

        // The metrics API is discovered (kubectl top looks for it) but not stored.
        let metrics = api_resource_list(METRICS_GROUP, METRICS_VERSION).unwrap();
        assert_eq!(metrics["groupVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(by_name(&metrics, "pods")["kind"], "PodMetrics");
        assert_eq!(by_name(&metrics, "pods")["namespaced"], true);
        assert_eq!(by_name(&metrics, "nodes")["verbs"], json!(["get", "list"]));
        assert_eq!(
            api_group(METRICS_GROUP)["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        assert!(find(METRICS_GROUP, METRICS_VERSION, "pods").is_none());
        assert!(openapi_v3_document(METRICS_GROUP, METRICS_VERSION).is_none());
    }

    #[test]
    fn openapi_v3_has_what_kubectl_checks() {
        let root = openapi_v3_root();
        for key in ["api/v1", "apis/apps/v1", "apis/coordination.k8s.io/v1"] {
            let url = root["paths"][key]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
        }
        for r in RESOURCES {
            let doc = openapi_v3_document(r.group, r.version).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|path| {
                let patch = &path["patch"];
                patch["x-kubernetes-group-version-kind"]
                    == json!({"group": r.group, "version": r.version, "kind": r.kind})
                    && patch["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
            });
            assert!(found, "{}", r.kind);
        }
        assert!(openapi_v3_document("batch", "v1").is_none());
    }
}
