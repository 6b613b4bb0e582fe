//! Request paths: which endpoint a URL names (discovery, health, a resource collection, an
//! object, a subresource). Pure; the handler acts on the result.

use keelson_api::resources::{self, Resource};

/// The most bytes of a request path this server looks at.
pub(crate) const PATH_BYTES_MAX: usize = 2048;

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Version,
    Livez,
    Readyz,
    Healthz,
    Metrics,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    ResourceList {
        group: String,
        version: String,
    },
    /// `/openapi/v3`
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`
    OpenApi {
        group: String,
        version: String,
    },
    /// `/keelson/v1/cluster`: masters, leader, health.
    Cluster,
    /// `/ui` and below: the dashboard (it authenticates its pages itself).
    Ui,
    /// `/keelson/v1/nodes/{name}/stats`: a node's resource use, from this master's link to it
    /// (what masters ask each other for the metrics API).
    NodeStats(String),
    /// `/apis/metrics.k8s.io/v1beta1/...`: NodeMetrics and PodMetrics.
    ResourceMetrics(MetricsPath),
    /// A resource collection, object or subresource.
    Resource(ResourcePath),
    /// A path this server does not serve.
    Unknown,
}

/// A path under a group version that names a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourcePath {
    pub(crate) resource: &'static Resource,
    /// The namespace of the path; `None` for cluster-scoped resources and for lists across
    /// every namespace.
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
    /// The legacy `/watch/` path form.
    pub(crate) watch: bool,
}

/// What a metrics API path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MetricsPath {
    /// `nodes`, `nodes/{name}`.
    Nodes { name: Option<String> },
    /// `pods` (every namespace), `namespaces/{ns}/pods`, `namespaces/{ns}/pods/{name}`.
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// Why a path names a group version but not something in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("the server could not find the requested resource")]
    NotFound,
}

pub(crate) fn route(path: &str) -> Result<Route, RouteError> {
    if path.len() > PATH_BYTES_MAX {
        return Err(RouteError::NotFound);
    }
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    let route = match segments.as_slice() {
        ["version"] => Route::Version,
        ["livez"] => Route::Livez,
        ["readyz"] => Route::Readyz,
        ["healthz"] => Route::Healthz,
        ["metrics"] => Route::Metrics,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", group] => Route::Group((*group).to_string()),
        ["openapi", "v3"] => Route::OpenApiRoot,
        ["openapi", "v3", "api", version] => Route::OpenApi {
            group: String::new(),
            version: (*version).to_string(),
        },
        ["openapi", "v3", "apis", group, version] => Route::OpenApi {
            group: (*group).to_string(),
            version: (*version).to_string(),
        },
        ["keelson", "v1", "cluster"] => Route::Cluster,
        ["ui", ..] => Route::Ui,
        ["keelson", "v1", "nodes", name, "stats"] if !name.is_empty() => {
            Route::NodeStats((*name).to_string())
        }
        ["api", version] => Route::ResourceList {
            group: String::new(),
            version: (*version).to_string(),
        },
        ["apis", group, version] => Route::ResourceList {
            group: (*group).to_string(),
            version: (*version).to_string(),
        },
        ["apis", resources::METRICS_GROUP, resources::METRICS_VERSION, rest @ ..] => {
            Route::ResourceMetrics(metrics_route(rest)?)
        }
        ["api", version, rest @ ..] => resource_route("", version, rest)?,
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest)?,
        _ => Route::Unknown,
    };
    Ok(route)
}

fn metrics_route(rest: &[&str]) -> Result<MetricsPath, RouteError> {
    let name = |s: &&str| -> Result<String, RouteError> {
        if s.is_empty() {
            Err(RouteError::NotFound)
        } else {
            Ok((*s).to_string())
        }
    };
    Ok(match rest {
        ["nodes"] => MetricsPath::Nodes { name: None },
        ["nodes", node] => MetricsPath::Nodes {
            name: Some(name(node)?),
        },
        ["pods"] => MetricsPath::Pods {
            namespace: None,
            name: None,
        },
        ["namespaces", ns, "pods"] => MetricsPath::Pods {
            namespace: Some(name(ns)?),
            name: None,
        },
        ["namespaces", ns, "pods", pod] => MetricsPath::Pods {
            namespace: Some(name(ns)?),
            name: Some(name(pod)?),
        },
        _ => return Err(RouteError::NotFound),
    })
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Result<Route, RouteError> {
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let find = |plural: &str| resources::find(group, version, plural).ok_or(RouteError::NotFound);
    let segment = |s: &&str| -> Result<String, RouteError> {
        if s.is_empty() {
            Err(RouteError::NotFound)
        } else {
            Ok((*s).to_string())
        }
    };
    let path = match rest {
        // A namespaced collection, object or subresource.
        ["namespaces", namespace, plural, tail @ ..]
            if resources::find(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            let resource = find(plural)?;
            let (name, subresource) = match tail {
                [] => (None, None),
                [name] => (Some(segment(name)?), None),
                [name, sub] => (Some(segment(name)?), Some(segment(sub)?)),
                _ => return Err(RouteError::NotFound),
            };
            ResourcePath {
                resource,
                namespace: Some(segment(namespace)?),
                name,
                subresource,
                watch,
            }
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            let (name, subresource) = match tail {
                [] => (None, None),
                [name] => (Some(segment(name)?), None),
                [name, sub] => (Some(segment(name)?), Some(segment(sub)?)),
                _ => return Err(RouteError::NotFound),
            };
            // A namespaced resource is reachable without a namespace only as a list or watch
            // across every namespace.
            if resource.namespaced && name.is_some() {
                return Err(RouteError::NotFound);
            }
            ResourcePath {
                resource,
                namespace: None,
                name,
                subresource,
                watch,
            }
        }
        [] => return Err(RouteError::NotFound),
    };
    if let Some(sub) = &path.subresource {
        if path.resource.subresource(sub).is_none() {
            return Err(RouteError::NotFound);
        }
    }
    Ok(Route::Resource(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match route(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_and_health_paths() {
        assert_eq!(route("/version").unwrap(), Route::Version);
        assert_eq!(route("/api").unwrap(), Route::CoreVersions);
        assert_eq!(route("/api/").unwrap(), Route::CoreVersions);
        assert_eq!(route("/apis").unwrap(), Route::Groups);
        assert_eq!(
            route("/apis/apps/v1").unwrap(),
            Route::ResourceList {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(
            route("/openapi/v3/apis/apps/v1").unwrap(),
            Route::OpenApi {
                group: "apps".into(),
                version: "v1".into()
            }
        );
        assert_eq!(route("/nothing/here").unwrap(), Route::Unknown);
    }

    #[test]
    fn resource_paths() {
        let r = resource("/api/v1/namespaces/default/pods");
        assert_eq!(r.resource.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name, None);

        let r = resource("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.subresource.as_deref(), Some("status"));

        let r = resource("/api/v1/pods");
        assert_eq!(r.namespace, None);
        assert_eq!(r.resource.plural, "pods");

        let r = resource("/api/v1/namespaces/kube-system");
        assert_eq!(r.resource.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("kube-system"));

        let r = resource("/api/v1/namespaces/kube-system/status");
        assert_eq!(r.resource.plural, "namespaces");
        assert_eq!(r.subresource.as_deref(), Some("status"));

        let r = resource("/apis/apps/v1/namespaces/x/deployments/web/scale");
        assert_eq!(r.resource.kind, "Deployment");
        assert_eq!(r.subresource.as_deref(), Some("scale"));

        let r = resource("/api/v1/watch/namespaces/x/pods");
        assert!(r.watch);

        let r = resource("/api/v1/nodes/n1");
        assert_eq!(r.name.as_deref(), Some("n1"));
    }

    #[test]
    fn metrics_api_paths() {
        let metrics = |path: &str| match route(path) {
            Ok(Route::ResourceMetrics(m)) => Some(m),
            _ => None,
        };
        let cases: &[(&str, Option<MetricsPath>)] = &[
            (
                "/apis/metrics.k8s.io/v1beta1/nodes",
                Some(MetricsPath::Nodes { name: None }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/nodes/n1",
                Some(MetricsPath::Nodes {
                    name: Some("n1".into()),
                }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/pods",
                Some(MetricsPath::Pods {
                    namespace: None,
                    name: None,
                }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
                Some(MetricsPath::Pods {
                    namespace: Some("default".into()),
                    name: None,
                }),
            ),
            (
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web",
                Some(MetricsPath::Pods {
                    namespace: Some("default".into()),
                    name: Some("web".into()),
                }),
            ),
            ("/apis/metrics.k8s.io/v1beta1/namespaces/default", None),
            ("/apis/metrics.k8s.io/v1beta1/pods/web", None),
            ("/apis/metrics.k8s.io/v1beta1/nodes/n1/status", None),
        ];
        for (path, want) in cases {
            assert_eq!(metrics(path), *want, "{path}");
        }
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1").unwrap(),
            Route::ResourceList {
                group: "metrics.k8s.io".into(),
                version: "v1beta1".into()
            }
        );
        assert_eq!(
            route("/keelson/v1/nodes/n1/stats").unwrap(),
            Route::NodeStats("n1".into())
        );
    }

    #[test]
    fn unknown_resources_and_subresources() {
        for path in [
            "/api/v1/widgets",
            "/api/v1/namespaces/x/widgets/y",
            "/api/v1/namespaces/x/pods/y/nope",
            "/api/v1/pods/y",
            "/apis/apps/v1/pods",
            "/api/v1/namespaces/x/pods/a/b/c",
        ] {
            assert_eq!(route(path), Err(RouteError::NotFound), "{path}");
        }
    }
}
