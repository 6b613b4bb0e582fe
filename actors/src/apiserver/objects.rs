//! The object verbs: get, create, update, patch, delete, on the main resource and its
//! `status` subresource, with Kubernetes' system fields, defaulting, validation and
//! optimistic concurrency on resourceVersion.

use http::StatusCode;
use keelson_api::resources::Resource;
use keelson_api::status::StatusError;
use keelson_api::{defaults, object, patch, validation};
use keelson_raft::Consistency;
use serde_json::{json, Map, Value};

use super::request::{decode_json, decode_yaml, ApiRequest};
use super::route::ResourcePath;
use super::services;
use super::storage::{collection_prefix, object_key, Stored, WriteRefused};
use super::ApiState;

/// How often a write that lost a race with another writer is retried when the client gave no
/// resourceVersion precondition.
const CONFLICT_RETRIES_MAX: usize = 8;
/// Characters of the random suffix of `generateName`, as Kubernetes picks them.
const GENERATE_NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
const GENERATE_NAME_SUFFIX_LEN: usize = 5;
/// Names longer than this get their generateName prefix cut, as Kubernetes does.
const GENERATE_NAME_PREFIX_MAX: usize = 58;

/// The time as Kubernetes writes it in metadata (RFC 3339, whole seconds, UTC).
pub(crate) fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn rfc3339_after(seconds: i64) -> String {
    let at = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(seconds))
        .unwrap_or_else(|_| jiff::Timestamp::now());
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn generated_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let cut: String = prefix.chars().take(GENERATE_NAME_PREFIX_MAX).collect();
    let suffix: String = (0..GENERATE_NAME_SUFFIX_LEN)
        .map(|_| {
            let i = rng.random_range(0..GENERATE_NAME_ALPHABET.len());
            GENERATE_NAME_ALPHABET[i] as char
        })
        .collect();
    format!("{cut}{suffix}")
}

pub(crate) fn not_found(resource: &Resource, name: &str) -> StatusError {
    StatusError::not_found(resource.group, resource.plural, name)
}

fn conflict(resource: &Resource, name: &str) -> StatusError {
    StatusError::conflict(
        resource.group,
        resource.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// The resourceVersion a client sent, as a revision.
fn parse_resource_version(value: &str) -> Result<u64, StatusError> {
    value.parse::<u64>().map_err(|_| {
        StatusError::bad_request(format!(
            "resourceVersion {value:?} is not valid: it must be a resourceVersion the server \
             returned"
        ))
    })
}

fn has_status_subresource(resource: &Resource) -> bool {
    resource.subresource("status").is_some()
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, StatusError> {
    object::metadata_mut(obj).map_err(|e| StatusError::bad_request(e.to_string()))
}

/// Checks and fills apiVersion and kind of a request body against the resource of the path.
fn check_type(resource: &Resource, obj: &mut Value) -> Result<(), StatusError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(StatusError::bad_request(
            "the request body must be a JSON object".to_string(),
        ));
    };
    let api_version = resource.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::String(api_version.clone()));
        }
        Some(given) if given == api_version => {}
        Some(given) => {
            return Err(StatusError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version \
                 ({api_version})"
            )))
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::String(resource.kind.to_string()));
        }
        Some(given) if given == resource.kind => {}
        Some(given) => {
            return Err(StatusError::bad_request(format!(
                "the kind in the data ({given}) does not match the kind of the path ({})",
                resource.kind
            )))
        }
    }
    Ok(())
}

/// Checks that the body's namespace and name agree with the path, and fills the namespace.
fn check_identity(path: &ResourcePath, obj: &mut Value) -> Result<(), StatusError> {
    let resource = path.resource;
    let body_namespace = object::namespace(obj).map(str::to_string);
    let metadata = metadata_mut(obj)?;
    if resource.namespaced {
        let namespace = path.namespace.clone().unwrap_or_default();
        match body_namespace {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(StatusError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on \
                     the request"
                        .to_string(),
                ))
            }
            _ => {
                metadata.insert("namespace".into(), Value::String(namespace));
            }
        }
    } else {
        metadata.remove("namespace");
    }
    if let Some(name) = &path.name {
        match metadata.get("name").and_then(Value::as_str) {
            Some(body) if body != name => {
                return Err(StatusError::bad_request(format!(
                    "the name of the object ({body}) does not match the name on the URL ({name})"
                )))
            }
            Some(_) => {}
            None => {
                metadata.insert("name".into(), Value::String(name.clone()));
            }
        }
    }
    Ok(())
}

/// The unknown fields of a write as its `fieldValidation` says: an error (`Strict`), nothing
/// (`Ignore`) or warnings.
fn strict_fields(req: &ApiRequest, unknown: &[String]) -> Result<Vec<String>, StatusError> {
    if unknown.is_empty() {
        return Ok(Vec::new());
    }
    match req.param("fieldValidation") {
        Some("Strict") => Err(StatusError::bad_request(format!(
            "strict decoding error: {}",
            unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Some("Ignore") => Ok(Vec::new()),
        _ => Ok(unknown.to_vec()),
    }
}

/// Reads an object or answers 404.
pub(crate) async fn read(
    state: &ApiState,
    path: &ResourcePath,
    consistency: Consistency,
) -> Result<Stored, StatusError> {
    let name = path.name.as_deref().unwrap_or_default();
    let key = object_key(path.resource, path.namespace.as_deref(), name);
    state
        .storage
        .get(&key, consistency)
        .await?
        .ok_or_else(|| not_found(path.resource, name))
}

pub(crate) fn read_consistency(req: &ApiRequest) -> Consistency {
    match req.param("resourceVersion") {
        Some("0") => Consistency::Serializable,
        _ => Consistency::Linearizable,
    }
}

pub(crate) async fn get(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let stored = read(state, path, read_consistency(req)).await?;
    Ok((StatusCode::OK, stored.object))
}

/// A verb's result: the status code and object, or the error.
pub(crate) type Reply = Result<(StatusCode, Value), StatusError>;

/// Refuses new objects in a namespace that is missing or being deleted.
async fn check_namespace(
    state: &ApiState,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), StatusError> {
    if !resource.namespaced {
        return Ok(());
    }
    let namespace = namespace.unwrap_or_default();
    let ns_resource = keelson_api::resources::find("", "v1", "namespaces")
        .ok_or_else(|| StatusError::internal("namespaces are not registered"))?;
    let key = object_key(ns_resource, None, namespace);
    // This master's applied state answers almost always (as Kubernetes' admission answers
    // from a cache); only a namespace not seen here yet costs a quorum read.
    let local = state.storage.get(&key, Consistency::Serializable).await?;
    let found = match local {
        Some(ns) => Some(ns),
        None => state.storage.get(&key, Consistency::Linearizable).await?,
    };
    let Some(ns) = found else {
        return Err(StatusError::not_found("", "namespaces", namespace));
    };
    if object::deletion_timestamp(&ns.object).is_some() {
        return Err(StatusError::forbidden(
            resource.group,
            resource.plural,
            name,
            &format!(
                "unable to create new content in namespace {namespace} because it is being \
                 terminated"
            ),
        ));
    }
    Ok(())
}

/// Resets what a client may not set on create, per kind (as Kubernetes' strategies do).
fn prepare_for_create(resource: &Resource, obj: &mut Value) -> Result<(), StatusError> {
    let now = now_rfc3339();
    let has_spec = obj.get("spec").is_some();
    {
        let metadata = metadata_mut(obj)?;
        if metadata
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|rv| !rv.is_empty())
        {
            return Err(StatusError::bad_request(
                "resourceVersion should not be set on objects to be created".to_string(),
            ));
        }
        metadata.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        metadata.insert("creationTimestamp".into(), Value::String(now));
        metadata.remove("deletionTimestamp");
        metadata.remove("deletionGracePeriodSeconds");
        metadata.remove("selfLink");
        if has_spec {
            metadata.insert("generation".into(), json!(1));
        } else {
            metadata.remove("generation");
        }
    }
    if let Some(map) = obj.as_object_mut() {
        match resource.kind {
            "Pod" => {
                map.insert("status".into(), json!({"phase": "Pending"}));
            }
            "Node" | "Namespace" | "Event" => {}
            _ if has_status_subresource(resource) => {
                map.insert("status".into(), json!({}));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Validates a new object and writes it; shared by create and server-side apply.
async fn create_object(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
    mut obj: Value,
) -> Reply {
    let resource = path.resource;
    if object::name(&obj).is_none_or(str::is_empty) {
        if let Some(prefix) = object::generate_name(&obj).filter(|p| !p.is_empty()) {
            let name = generated_name(prefix);
            object::set_name(&mut obj, &name)
                .map_err(|e| StatusError::bad_request(e.to_string()))?;
        }
    }
    prepare_for_create(resource, &mut obj)?;
    defaults::apply(resource, &mut obj);
    let checked = validation::check(resource, &obj);
    let warnings = strict_fields(req, checked.unknown_fields())?;
    checked.validate(resource, &obj)?;
    if !warnings.is_empty() {
        tracing::debug!(?warnings, "unknown fields ignored");
    }
    let name = object::name(&obj).unwrap_or_default().to_string();
    check_namespace(state, resource, path.namespace.as_deref(), &name).await?;
    let key = object_key(resource, path.namespace.as_deref(), &name);
    let written = if services::is_service(resource) {
        services::create(state, &key, obj, is_dry_run(req)).await?
    } else if is_dry_run(req) {
        return Ok((StatusCode::CREATED, obj));
    } else {
        state.storage.create(&key, obj).await?.map(|s| s.object)
    };
    match written {
        Ok(object) => Ok((StatusCode::CREATED, object)),
        Err(_) => Err(StatusError::already_exists(
            resource.group,
            resource.plural,
            &name,
        )),
    }
}

fn is_dry_run(req: &ApiRequest) -> bool {
    req.param("dryRun") == Some("All")
}

pub(crate) async fn create(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let mut obj = req.body_value()?;
    check_type(path.resource, &mut obj)?;
    check_identity(path, &mut obj)?;
    let manager = req.param("fieldManager").unwrap_or("unknown").to_string();
    let obj = patch::update_managed_fields(&manager, "Update", None, obj, &now_rfc3339());
    create_object(state, req, path, obj).await
}

/// Builds the object an update writes from what the client sent and what is stored.
fn merge_for_update(
    resource: &Resource,
    subresource: Option<&str>,
    current: &Value,
    mut new: Value,
) -> Result<Value, StatusError> {
    if subresource == Some("status") {
        // A status update changes only the status.
        let mut merged = current.clone();
        if let Some(map) = merged.as_object_mut() {
            match new.get_mut("status").map(Value::take) {
                Some(status) => {
                    map.insert("status".into(), status);
                }
                None => {
                    map.remove("status");
                }
            }
        }
        if let (Some(rv), Some(metadata)) = (
            object::resource_version(&new).map(str::to_string),
            merged.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            metadata.insert("resourceVersion".into(), Value::String(rv));
        }
        return Ok(merged);
    }
    // System fields always come from the stored object.
    let generation = current
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let spec_changed = current.get("spec") != new.get("spec");
    let current_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    {
        let metadata = metadata_mut(&mut new)?;
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            match current_meta.get(field) {
                Some(value) => {
                    metadata.insert(field.into(), value.clone());
                }
                None => {
                    metadata.remove(field);
                }
            }
        }
        if current_meta.get("generation").is_some() || spec_changed {
            let next = if spec_changed {
                generation + 1
            } else {
                generation
            };
            metadata.insert("generation".into(), json!(next));
        }
    }
    if has_status_subresource(resource) {
        if let Some(map) = new.as_object_mut() {
            match current.get("status") {
                Some(status) => {
                    map.insert("status".into(), status.clone());
                }
                None => {
                    map.remove("status");
                }
            }
        }
    }
    Ok(new)
}

/// Whether two versions of an object differ in anything but their resourceVersion and the
/// time stamps of managed fields.
fn differs(a: &Value, b: &Value) -> bool {
    /// Compares two maps but for `skipped` keys, without copying either.
    fn maps_differ(a: &Map<String, Value>, b: &Map<String, Value>, skipped: &[&str]) -> bool {
        let kept = |key: &&String| !skipped.contains(&key.as_str());
        a.keys().filter(kept).count() != b.keys().filter(kept).count()
            || a.iter()
                .any(|(key, value)| kept(&key) && b.get(key) != Some(value))
    }
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            maps_differ(a, b, &["metadata"])
                || match (a.get("metadata"), b.get("metadata")) {
                    (Some(Value::Object(a)), Some(Value::Object(b))) => {
                        maps_differ(a, b, &["resourceVersion", "managedFields"])
                    }
                    (a, b) => a != b,
                }
        }
        _ => a != b,
    }
}

/// Writes `new` over `current` (with `expected` as the compare revision), after defaulting and
/// validation. An object marked for deletion whose last finalizer is gone is deleted instead.
async fn write_update(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
    current: &Stored,
    mut new: Value,
    manager: &str,
) -> Result<Result<Value, WriteRefused>, StatusError> {
    let resource = path.resource;
    let service = services::is_service(resource);
    if service {
        super::ranges::prepare_update(&current.object, &mut new);
    }
    defaults::apply(resource, &mut new);
    let checked = validation::check(resource, &new);
    strict_fields(req, checked.unknown_fields())?;
    if path.subresource.as_deref() == Some("status") {
        checked.validate_status_update()?;
    } else {
        checked.validate_update(resource, &current.object, &new)?;
    }
    if !differs(&current.object, &new) {
        return Ok(Ok(current.object.clone()));
    }
    let new = patch::update_managed_fields(
        manager,
        "Update",
        Some(&current.object),
        new,
        &now_rfc3339(),
    );
    if is_dry_run(req) {
        return Ok(Ok(new));
    }
    let name = path.name.as_deref().unwrap_or_default();
    let key = object_key(resource, path.namespace.as_deref(), name);
    if object::deletion_timestamp(&new).is_some()
        && object::finalizers(&new).is_empty()
        && !is_graceful_pod(resource, &new)
        && (resource.kind != "Namespace" || namespace_finalized(&new))
    {
        return match delete_stored(state, resource, &key, current).await? {
            Ok(_) => Ok(Ok(new)),
            Err(refused) => Ok(Err(refused)),
        };
    }
    if service {
        return services::update(state, &key, current, new).await;
    }
    Ok(state
        .storage
        .update(&key, current.revision, new)
        .await?
        .map(|stored| stored.object))
}

/// Deletes a stored object; a Service releases its allocations in the same transaction.
async fn delete_stored(
    state: &ApiState,
    resource: &Resource,
    key: &str,
    current: &Stored,
) -> Result<Result<u64, WriteRefused>, StatusError> {
    if services::is_service(resource) {
        services::delete(state, key, current).await
    } else {
        state.storage.delete(key, current.revision).await
    }
}

/// Whether a namespace's `spec.finalizers` is empty (the namespace controller is done).
fn namespace_finalized(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
        && object::finalizers(obj).is_empty()
}

/// A pod marked for graceful deletion stays until its kubelet (or a delete with grace 0)
/// removes it.
fn is_graceful_pod(resource: &Resource, obj: &Value) -> bool {
    resource.kind == "Pod"
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0)
}

pub(crate) async fn update(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let resource = path.resource;
    let name = path.name.clone().unwrap_or_default();
    let mut body = req.body_value()?;
    check_type(resource, &mut body)?;
    check_identity(path, &mut body)?;
    let precondition = object::resource_version(&body)
        .map(parse_resource_version)
        .transpose()?;
    let manager = req.param("fieldManager").unwrap_or("unknown").to_string();
    read_modify_write(resource, &name, |consistency| {
        let (body, manager, name) = (&body, &manager, &name);
        async move {
            let current = read(state, path, consistency).await?;
            if precondition.is_some_and(|rv| rv != current.revision) {
                return Err(conflict(resource, name));
            }
            let (patched, held) = (body.clone(), precondition.is_some());
            write_merged(state, req, path, &current, patched, manager, held).await
        }
    })
    .await
}

/// The kinds of PATCH bodies, by content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

fn patch_kind(content_type: &str) -> Result<PatchKind, StatusError> {
    match content_type {
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
        other => Err(StatusError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({other}) - accepted media types \
             include: application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml, application/strategic-merge-patch+json"
        ))),
    }
}

fn patch_error(e: impl std::fmt::Display) -> StatusError {
    StatusError::bad_request(format!("the patch could not be applied: {e}"))
}

/// Applies a non-apply patch to `current`.
fn apply_patch(
    kind: PatchKind,
    resource: &Resource,
    current: &Value,
    body: &[u8],
) -> Result<Value, StatusError> {
    match kind {
        PatchKind::Json => {
            let patch_doc = decode_json(body)?;
            patch::json_patch(current, &patch_doc)
                .map_err(|e| StatusError::new(422, "Invalid", e.to_string()))
        }
        PatchKind::Merge => {
            let patch_doc = decode_json(body)?;
            patch::merge_patch(current, &patch_doc).map_err(patch_error)
        }
        PatchKind::Strategic => {
            let patch_doc = decode_json(body)?;
            patch::strategic_merge_patch(resource.kind, current, &patch_doc).map_err(patch_error)
        }
        PatchKind::Apply => Err(StatusError::internal(
            "server-side apply is not a plain patch",
        )),
    }
}

pub(crate) async fn patch_object(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let resource = path.resource;
    let name = path.name.clone().unwrap_or_default();
    let kind = patch_kind(&req.content_type())?;
    if kind == PatchKind::Apply {
        return server_side_apply(state, req, path).await;
    }
    let manager = req.param("fieldManager").unwrap_or("unknown").to_string();
    let manager = manager.as_str();
    read_modify_write(resource, &name, |consistency| async move {
        let current = read(state, path, consistency).await?;
        patch_once(state, req, path, kind, manager, current).await
    })
    .await
}

/// Runs `round` (read with the consistency it is given, modify, compare-and-swap) until it
/// writes, refuses or loses [`CONFLICT_RETRIES_MAX`] times to other writes (`Ok(None)`).
/// The first round reads optimistically ([`update_read`]).
async fn read_modify_write<F, R>(resource: &Resource, name: &str, mut round: F) -> Reply
where
    F: FnMut(Consistency) -> R,
    R: std::future::Future<Output = Result<Option<Value>, StatusError>>,
{
    for attempt in 0..CONFLICT_RETRIES_MAX {
        match round(update_read(attempt)).await {
            Ok(Some(object)) => return Ok((StatusCode::OK, object)),
            Ok(None) => continue,
            Err(e) if decide_again(attempt, &e) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(conflict(resource, name))
}

/// Patches `current` and writes it: the patched object, or `None` when another write came
/// first.
async fn patch_once(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
    kind: PatchKind,
    manager: &str,
    current: Stored,
) -> Result<Option<Value>, StatusError> {
    let resource = path.resource;
    let name = path.name.as_deref().unwrap_or_default();
    let mut patched = apply_patch(kind, resource, &current.object, &req.body)?;
    // A resourceVersion in the patch is a precondition.
    let precondition = match object::resource_version(&patched) {
        Some(rv) if rv != current.revision.to_string() => {
            parse_resource_version(rv)?;
            return Err(conflict(resource, name));
        }
        Some(_) => true,
        None => false,
    };
    check_type(resource, &mut patched)?;
    check_identity(path, &mut patched)?;
    write_merged(state, req, path, &current, patched, manager, precondition).await
}

/// Merges `patched` into `current` (as far as the subresource may change it) and writes it
/// if `current` is still the stored object: `None` when another write came first, a conflict
/// when the client's `precondition` held it to `current`.
async fn write_merged(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
    current: &Stored,
    patched: Value,
    manager: &str,
    precondition: bool,
) -> Result<Option<Value>, StatusError> {
    let resource = path.resource;
    let new = merge_for_update(
        resource,
        path.subresource.as_deref(),
        &current.object,
        patched,
    )?;
    match write_update(state, req, path, current, new, manager).await? {
        Ok(object) => Ok(Some(object)),
        Err(_) if precondition => Err(conflict(resource, path.name.as_deref().unwrap_or_default())),
        Err(_) => Ok(None),
    }
}

/// How a read-modify-write reads the object on its `attempt` (0 is the first). The first
/// reads this master's applied state, without a read-index round: the write's compare on the
/// object's revision commits only if that state was current, and whatever was refused on it
/// is decided again on a linearizable read ([`decide_again`]), as Kubernetes' apiserver
/// updates from its watch cache and rereads from etcd on a conflict.
pub(crate) fn update_read(attempt: usize) -> Consistency {
    if attempt == 0 {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    }
}

/// Whether a refusal on the first, optimistic, attempt is decided again: those of the request
/// against the state (404, 409, 422, ...); never a failed or timed-out write (5xx), whose
/// outcome may be unknown.
pub(crate) fn decide_again(attempt: usize, e: &StatusError) -> bool {
    attempt == 0 && e.code() < 500
}

async fn server_side_apply(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let resource = path.resource;
    let name = path.name.clone().unwrap_or_default();
    let Some(manager) = req.param("fieldManager").map(str::to_string) else {
        return Err(StatusError::bad_request(
            "PATCH with application/apply-patch+yaml requires the fieldManager query parameter"
                .to_string(),
        ));
    };
    let force = req.flag("force");
    let mut applied = decode_yaml(&req.body)?;
    check_type(resource, &mut applied)?;
    check_identity(path, &mut applied)?;
    for _ in 0..CONFLICT_RETRIES_MAX {
        let key = object_key(resource, path.namespace.as_deref(), &name);
        let current = state.storage.get(&key, Consistency::Linearizable).await?;
        let now = now_rfc3339();
        let Some(current) = current else {
            let obj =
                patch::server_side_apply(resource.kind, &manager, None, &applied, force, &now)
                    .map_err(apply_status)?;
            match create_object(state, req, path, obj).await {
                Err(e) if e.code() == 409 && e.reason() == "AlreadyExists" => continue,
                other => return other,
            }
        };
        let patched = patch::server_side_apply(
            resource.kind,
            &manager,
            Some(&current.object),
            &applied,
            force,
            &now,
        )
        .map_err(apply_status)?;
        let precondition = match object::resource_version(&applied) {
            Some(rv) if rv != current.revision.to_string() => {
                return Err(conflict(resource, &name))
            }
            Some(_) => true,
            None => false,
        };
        if let Some(object) =
            write_merged(state, req, path, &current, patched, &manager, precondition).await?
        {
            return Ok((StatusCode::OK, object));
        }
    }
    Err(conflict(resource, &name))
}

fn apply_status(error: patch::ApplyError) -> StatusError {
    match &error {
        patch::ApplyError::Conflict { .. } => StatusError::new(409, "Conflict", error.to_string()),
        _ => StatusError::bad_request(error.to_string()),
    }
}

/// Options of a DELETE, from its body (DeleteOptions) or query.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    /// The finalizer the garbage collector acts on (`orphan`, `foregroundDeletion`), from
    /// propagationPolicy or orphanDependents; `None` for Background (the default).
    gc_finalizer: Option<&'static str>,
    precondition_uid: Option<String>,
    precondition_resource_version: Option<String>,
}

fn delete_options(req: &ApiRequest) -> Result<DeleteOptions, StatusError> {
    let mut options = DeleteOptions::default();
    if !req.body.iter().all(u8::is_ascii_whitespace) {
        let body = req.body_value()?;
        options.grace_period_seconds = body.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.precondition_uid = body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string);
        options.precondition_resource_version = body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
            options.gc_finalizer = Some(ORPHAN_FINALIZER);
        }
        if let Some(policy) = body.get("propagationPolicy").and_then(Value::as_str) {
            options.gc_finalizer = check_propagation(policy)?;
        }
    }
    if let Some(grace) = req.param("gracePeriodSeconds") {
        options.grace_period_seconds = Some(grace.parse().map_err(|_| {
            StatusError::bad_request(format!("gracePeriodSeconds {grace:?} is not a number"))
        })?);
    }
    if req.param("orphanDependents") == Some("true") {
        options.gc_finalizer = Some(ORPHAN_FINALIZER);
    }
    if let Some(policy) = req.param("propagationPolicy") {
        options.gc_finalizer = check_propagation(policy)?;
    }
    Ok(options)
}

/// The finalizer of an Orphan delete: the garbage collector removes the object's
/// ownerReferences from its dependents, then this finalizer.
pub(crate) const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer of a Foreground delete: the garbage collector deletes the dependents (the
/// blocking ones first), then this finalizer.
pub(crate) const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// The garbage-collector finalizer a propagation policy asks for (Background: none, the
/// object goes at once and the collector deletes its dependents afterwards).
fn check_propagation(policy: &str) -> Result<Option<&'static str>, StatusError> {
    match policy {
        "Orphan" => Ok(Some(ORPHAN_FINALIZER)),
        "Foreground" => Ok(Some(FOREGROUND_FINALIZER)),
        "Background" => Ok(None),
        other => Err(StatusError::bad_request(format!(
            "propagationPolicy {other:?} is not one of Orphan, Background, Foreground"
        ))),
    }
}

pub(crate) async fn delete(state: &ApiState, req: &ApiRequest, path: &ResourcePath) -> Reply {
    let options = delete_options(req)?;
    delete_with(state, req, path, &options).await
}

async fn delete_with(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
    options: &DeleteOptions,
) -> Reply {
    let resource = path.resource;
    let name = path.name.clone().unwrap_or_default();
    let key = object_key(resource, path.namespace.as_deref(), &name);
    for _ in 0..CONFLICT_RETRIES_MAX {
        let current = read(state, path, Consistency::Linearizable).await?;
        if let Some(uid) = &options.precondition_uid {
            let actual = object::uid(&current.object).unwrap_or_default();
            if uid != actual {
                return Err(StatusError::conflict(
                    resource.group,
                    resource.plural,
                    &name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(rv) = &options.precondition_resource_version {
            if *rv != current.revision.to_string() {
                return Err(StatusError::conflict(
                    resource.group,
                    resource.plural,
                    &name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, \
                         ResourceVersion in object meta: {}",
                        current.revision
                    ),
                ));
            }
        }
        let mut marked = current.object.clone();
        let graceful = graceful_seconds(resource, &current.object, options.grace_period_seconds);
        let finalizers = object::finalizers(&current.object);
        let already = object::deletion_timestamp(&current.object).is_some();
        let namespace_kind = resource.kind == "Namespace";
        // Namespaces are finalized by the namespace controller, not the garbage collector.
        let gc_finalizer = options
            .gc_finalizer
            .filter(|f| !namespace_kind && !finalizers.iter().any(|have| have == f));
        if namespace_kind && already && namespace_finalized(&current.object) {
            // The namespace controller emptied and finalized it: it goes now.
            if is_dry_run(req) {
                return Ok((StatusCode::OK, current.object));
            }
            match delete_stored(state, resource, &key, &current).await? {
                Ok(_) => return Ok((StatusCode::OK, current.object)),
                Err(_) => continue,
            }
        }
        if graceful.is_none() && finalizers.is_empty() && gc_finalizer.is_none() && !namespace_kind
        {
            if is_dry_run(req) {
                return Ok((StatusCode::OK, current.object));
            }
            match delete_stored(state, resource, &key, &current).await? {
                Ok(_) => return Ok((StatusCode::OK, current.object)),
                Err(_) => continue,
            }
        }
        if already && graceful.is_none() && gc_finalizer.is_none() && !namespace_kind {
            // Finalizers still pending: the object stays until they are removed.
            return Ok((StatusCode::OK, current.object));
        }
        {
            let metadata = metadata_mut(&mut marked)?;
            let grace = graceful.unwrap_or(0);
            let shorten = metadata
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_none_or(|existing| grace < existing);
            if !already || shorten {
                metadata.insert(
                    "deletionTimestamp".into(),
                    Value::String(rfc3339_after(grace)),
                );
                metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
            }
            if let Some(finalizer) = gc_finalizer {
                let list = metadata
                    .entry("finalizers")
                    .or_insert_with(|| Value::Array(Vec::new()));
                match list.as_array_mut() {
                    Some(list) => list.push(Value::String(finalizer.to_string())),
                    None => *list = json!([finalizer]),
                }
            }
        }
        if namespace_kind {
            if let Some(map) = marked.as_object_mut() {
                map.insert("status".into(), json!({"phase": "Terminating"}));
            }
        }
        if !differs(&current.object, &marked) {
            return Ok((StatusCode::OK, current.object));
        }
        if is_dry_run(req) {
            return Ok((StatusCode::OK, marked));
        }
        match state.storage.update(&key, current.revision, marked).await? {
            Ok(stored) => return Ok((StatusCode::OK, stored.object)),
            Err(_) => continue,
        }
    }
    Err(conflict(resource, &name))
}

/// For a pod bound to a node and not finished, the grace period its kubelet gets; `None`
/// when the object can go at once.
fn graceful_seconds(resource: &Resource, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if resource.kind != "Pod" {
        return None;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    );
    if !bound || finished {
        return None;
    }
    let grace = requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0);
    (grace > 0).then_some(grace)
}

/// DELETE on a collection: deletes every object the selectors match.
pub(crate) async fn delete_collection(
    state: &ApiState,
    req: &ApiRequest,
    path: &ResourcePath,
) -> Reply {
    let options = delete_options(req)?;
    let listed = super::list::list_all(state, req, path).await?;
    let mut deleted = Vec::new();
    for stored in listed.items {
        let Some(name) = object::name(&stored.object).map(str::to_string) else {
            continue;
        };
        let item_path = ResourcePath {
            resource: path.resource,
            namespace: object::namespace(&stored.object).map(str::to_string),
            name: Some(name),
            subresource: None,
            watch: false,
        };
        match delete_with(state, req, &item_path, &options).await {
            Ok((_, object)) => deleted.push(object),
            Err(e) if e.code() == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok((
        StatusCode::OK,
        json!({
            "kind": path.resource.list_kind(),
            "apiVersion": path.resource.api_version(),
            "metadata": {"resourceVersion": listed.revision.to_string()},
            "items": deleted,
        }),
    ))
}

/// The collection prefix of a path, for lists and watches.
pub(crate) fn prefix_of(path: &ResourcePath) -> String {
    collection_prefix(path.resource, path.namespace.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_differ_in_anything_but_their_resource_version_and_managed_fields() {
        let stored = json!({
            "kind": "Pod",
            "metadata": {"name": "web", "resourceVersion": "7", "labels": {"app": "web"},
                         "managedFields": [{"manager": "a"}]},
            "spec": {"nodeName": "n1"},
        });
        let mut same = stored.clone();
        same["metadata"]["resourceVersion"] = json!("9");
        same["metadata"]["managedFields"] = json!([{"manager": "b"}]);
        assert!(!differs(&stored, &same));
        let mut without = stored.clone();
        if let Some(metadata) = without["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        assert!(!differs(&stored, &without));
        assert!(!differs(&without, &stored));

        let mut label = stored.clone();
        label["metadata"]["labels"]["app"] = json!("db");
        assert!(differs(&stored, &label));
        let mut extra = stored.clone();
        extra["status"] = json!({"phase": "Running"});
        assert!(differs(&stored, &extra));
        assert!(differs(&extra, &stored));
        let mut no_metadata = stored.clone();
        if let Some(map) = no_metadata.as_object_mut() {
            map.remove("metadata");
        }
        assert!(differs(&stored, &no_metadata));
        assert!(differs(&stored, &json!("not an object")));
    }

    #[test]
    fn only_the_first_attempt_reads_optimistically_and_only_its_refusals_are_decided_again() {
        assert_eq!(update_read(0), Consistency::Serializable);
        assert_eq!(update_read(1), Consistency::Linearizable);
        assert_eq!(
            update_read(CONFLICT_RETRIES_MAX - 1),
            Consistency::Linearizable
        );
        let refusals = [
            StatusError::conflict("", "pods", "web", "already assigned"),
            StatusError::not_found("", "pods", "web"),
            StatusError::bad_request("bad patch".to_string()),
        ];
        for refusal in &refusals {
            assert!(decide_again(0, refusal), "{refusal:?} on a local read");
            assert!(
                !decide_again(1, refusal),
                "{refusal:?} on a linearizable read"
            );
        }
        // A write that failed or timed out may have happened: never tried again.
        for failure in [
            StatusError::timeout("the write timed out"),
            StatusError::internal("storage"),
        ] {
            assert!(!decide_again(0, &failure), "{failure:?}");
        }
    }
}
