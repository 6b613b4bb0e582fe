//! Dispatch: authentication, then the endpoint the path names and the verb the method and
//! query name; every error leaves as a Kubernetes `Status`.

use std::time::Instant;

use http::{Method, StatusCode};
use keelson_api::resources;
use keelson_api::status::StatusError;
use serde_json::{json, Value};
use warp::reply::Response;

use super::objects::{self, Reply};
use super::request::{json_reply, status_reply, text_reply, ApiRequest};
use super::route::{route, ResourcePath, Route};
use super::{list, subresources, watch, ApiState};

/// Answers one request.
pub(crate) async fn serve(state: ApiState, mut req: ApiRequest) -> Response {
    let started = Instant::now();
    super::ui::cookie_credential(&mut req.headers);
    let (verb, resource, response) = match route(&req.path) {
        Err(e) => (
            "unknown",
            String::new(),
            status_reply(&crate::apiserver::not_found_path(e.to_string())),
        ),
        Ok(route) => {
            let (verb, resource) = describe(&req, &route);
            let response = match authorize(&state, &req, &route) {
                Err(e) => status_reply(&e),
                Ok(()) => match route {
                    Route::Resource(_) => match super::forward::to_leader(&state, &req).await {
                        Some(response) => response,
                        None => dispatch(&state, &req, route).await,
                    },
                    _ => dispatch(&state, &req, route).await,
                },
            };
            (verb, resource, response)
        }
    };
    let code = response.status().as_u16().to_string();
    metrics::counter!(
        "apiserver_request_total",
        "verb" => verb,
        "resource" => resource.clone(),
        "code" => code,
    )
    .increment(1);
    if verb != "watch" {
        metrics::histogram!(
            "apiserver_request_duration_seconds",
            "verb" => verb,
            "resource" => resource,
        )
        .record(started.elapsed().as_secs_f64());
    }
    response
}

/// A resource request the dashboard makes on a user's behalf: authentication, forwarding to
/// the leader and the resource's handler, as for any API request. Only resource paths: the
/// dashboard's own paths are not served here (they would be served recursively).
pub(crate) async fn serve_resource(state: &ApiState, req: &ApiRequest) -> Response {
    let path = match route(&req.path) {
        Ok(Route::Resource(path)) => path,
        _ => {
            return status_reply(&crate::apiserver::not_found_path(format!(
                "{} names no resource",
                req.path
            )))
        }
    };
    if let Err(e) = authorize_request(state, req) {
        return status_reply(&e);
    }
    match super::forward::to_leader(state, req).await {
        Some(response) => response,
        None => resource(state, req, &path).await,
    }
}

/// The verb and resource a request is counted under.
fn describe(req: &ApiRequest, route: &Route) -> (&'static str, String) {
    let Route::Resource(path) = route else {
        return ("get", String::new());
    };
    let resource = match &path.subresource {
        Some(sub) => format!("{}/{sub}", path.resource.plural),
        None => path.resource.plural.to_string(),
    };
    let verb = match (&req.method, path.name.is_some()) {
        (&Method::GET, _) if path.watch || req.flag("watch") => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// Health and version answer anyone; everything else needs a bearer token: the admin token
/// (checked first), or a service-account token held by a Secret of type
/// `kubernetes.io/service-account-token` that exists now (a deleted Secret's token gets 401).
///
/// There is no RBAC yet: a valid service-account token has the same full access as the admin
/// token.
///
/// The dashboard's pages check its cookie themselves (see `ui`); its cookie stands for a bearer
/// token on API requests that carry `X-Keelson-UI: 1`.
fn authorize(state: &ApiState, req: &ApiRequest, route: &Route) -> Result<(), StatusError> {
    if matches!(
        route,
        Route::Version | Route::Livez | Route::Readyz | Route::Healthz | Route::Ui
    ) {
        return Ok(());
    }
    authorize_request(state, req)
}

/// Checks the request's bearer token.
pub(crate) fn authorize_request(state: &ApiState, req: &ApiRequest) -> Result<(), StatusError> {
    let token = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    check_token(state, token)
}

/// Whether `token` is a credential of this cluster (the admin token, a service account's
/// token, a node's credential).
pub(crate) fn check_token(state: &ApiState, token: Option<&str>) -> Result<(), StatusError> {
    match token {
        Some(token) if constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) => Ok(()),
        Some(token) if state.sa_tokens.lookup(token).is_some() => Ok(()),
        // A node's credential: user `system:node:<name>` (full access: there is no RBAC).
        Some(token)
            if state
                .node_keys
                .as_ref()
                .is_some_and(|keys| keys.verify(token).is_some()) =>
        {
            Ok(())
        }
        Some(_) => Err(StatusError::unauthorized(
            "the bearer token is not valid for this cluster".to_string(),
        )),
        None => Err(StatusError::unauthorized(
            "a bearer token is required: send `Authorization: Bearer <token>` (the admin token \
             is in the master's admin.kubeconfig)"
                .to_string(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn dispatch(state: &ApiState, req: &ApiRequest, route: Route) -> Response {
    let reply: Reply = match route {
        Route::Version => Ok((StatusCode::OK, version())),
        Route::Livez | Route::Healthz => return text_reply(StatusCode::OK, "ok"),
        Route::Readyz => return readyz(state).await,
        Route::Metrics => return super::metrics::render(state).await,
        Route::CoreVersions => Ok((StatusCode::OK, resources::api_versions())),
        Route::Groups => Ok((StatusCode::OK, resources::api_group_list())),
        Route::Group(group) => group_document(&group),
        Route::ResourceList { group, version } => resources::api_resource_list(&group, &version)
            .map(|v| (StatusCode::OK, v))
            .ok_or_else(|| crate::apiserver::not_found_path(format!("the server could not find the requested resource: no group version {group}/{version}"))),
        Route::OpenApiRoot => Ok((StatusCode::OK, resources::openapi_v3_root())),
        Route::OpenApi { group, version } => resources::openapi_v3_document(&group, &version)
            .map(|v| (StatusCode::OK, v))
            .ok_or_else(|| crate::apiserver::not_found_path(format!("no OpenAPI document for {group}/{version}"))),
        Route::Cluster => Ok((StatusCode::OK, super::cluster::cluster_info(state).await)),
        Route::Ui => return super::ui::serve(state, req).await,
        Route::NodeStats(node) => {
            return super::resource_metrics::node_stats_here(state, req, &node).await
        }
        Route::ResourceMetrics(path) => {
            return super::resource_metrics::serve(state, req, &path).await
        }
        Route::Unknown => Err(crate::apiserver::not_found_path(
            "the server could not find the requested resource".to_string(),
        )),
        Route::Resource(path) => return resource(state, req, &path).await,
    };
    match reply {
        Ok((code, value)) => json_reply(code, &value),
        Err(e) => status_reply(&e),
    }
}

fn group_document(group: &str) -> Reply {
    let groups = resources::api_group_list();
    groups["groups"]
        .as_array()
        .and_then(|all| all.iter().find(|g| g["name"] == group))
        .map(|g| {
            let mut g = g.clone();
            if let Some(map) = g.as_object_mut() {
                map.insert("kind".into(), json!("APIGroup"));
                map.insert("apiVersion".into(), json!("v1"));
            }
            (StatusCode::OK, g)
        })
        .ok_or_else(|| crate::apiserver::not_found_path(format!("no API group {group}")))
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "37",
        "gitVersion": format!("v1.37.0-keelson.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "keelson",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

async fn readyz(state: &ApiState) -> Response {
    let status = state.storage.store().status().await;
    if !status.members.iter().any(|m| m.name == status.name) {
        return text_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "this master is not a member of the store (removed, or not added yet); it forwards \
             what it can: add it with `keelson store member add NAME=ADDR`",
        );
    }
    match status.leader {
        Some(_) if status.applied_index + READY_LAG_ENTRIES_MAX >= status.last_log_index => {
            text_reply(StatusCode::OK, "ok")
        }
        Some(_) => text_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "this master is catching up with the leader",
        ),
        None => text_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "the control plane has no leader at the moment",
        ),
    }
}

/// How far behind its log this master's applied state may be and still be ready.
const READY_LAG_ENTRIES_MAX: u64 = 1000;

async fn resource(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Response {
    let reply = match (
        &req.method,
        path.name.is_some(),
        path.subresource.as_deref(),
    ) {
        (&Method::GET, false, None) if path.watch || req.flag("watch") => {
            return match watch::watch(state, req, path).await {
                Ok(response) => response,
                Err(e) => status_reply(&e),
            }
        }
        (&Method::GET, true, None) if path.watch => {
            // The legacy watch path of one object.
            let mut single = path.clone();
            single.name = None;
            let mut req_single = ApiRequest {
                method: req.method.clone(),
                path: req.path.clone(),
                query: req.query.clone(),
                headers: req.headers.clone(),
                body: req.body.clone(),
            };
            req_single.query.insert(
                "fieldSelector".into(),
                format!("metadata.name={}", path.name.clone().unwrap_or_default()),
            );
            return match watch::watch(state, &req_single, &single).await {
                Ok(response) => response,
                Err(e) => status_reply(&e),
            };
        }
        (&Method::GET, false, None) => list::list(state, req, path).await,
        (&Method::POST, false, None) => {
            if path.resource.namespaced && path.namespace.is_none() {
                Err(StatusError::method_not_allowed(
                    "create needs a namespace in the path".to_string(),
                ))
            } else {
                objects::create(state, req, path).await
            }
        }
        (&Method::DELETE, false, None) => objects::delete_collection(state, req, path).await,
        (&Method::GET, true, None) | (&Method::GET, true, Some("status")) => {
            objects::get(state, req, path).await.map(|(code, obj)| {
                if req.wants_table() {
                    (
                        code,
                        keelson_api::table::table(
                            path.resource.kind,
                            &[obj],
                            jiff::Timestamp::now(),
                        ),
                    )
                } else {
                    (code, obj)
                }
            })
        }
        (&Method::PUT, true, None) | (&Method::PUT, true, Some("status")) => {
            objects::update(state, req, path).await
        }
        (&Method::PATCH, true, None) | (&Method::PATCH, true, Some("status")) => {
            objects::patch_object(state, req, path).await
        }
        (&Method::DELETE, true, None) => objects::delete(state, req, path).await,
        (&Method::GET, true, Some("scale")) => subresources::get_scale(state, req, path).await,
        (&Method::PUT, true, Some("scale")) | (&Method::PATCH, true, Some("scale")) => {
            subresources::update_scale(state, req, path).await
        }
        (&Method::POST, true, Some("binding")) => subresources::bind(state, req, path).await,
        (&Method::POST, true, Some("eviction")) => {
            let mut pod = path.clone();
            pod.subresource = None;
            objects::delete(state, req, &pod).await.map(|_| {
                (
                    StatusCode::CREATED,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                )
            })
        }
        (&Method::GET, true, Some("log")) => return subresources::log(state, req, path).await,
        (method, _, sub) => Err(StatusError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {method} {}{}",
            path.resource.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    };
    match reply {
        Ok((code, value)) => json_reply(code, &value),
        Err(e) => status_reply(&e),
    }
}
