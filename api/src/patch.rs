//! Patches and Server-Side Apply: JSON patch (RFC 6902), JSON merge patch (RFC 7386),
//! Kubernetes' strategic merge patch, and apply with its `metadata.managedFields` bookkeeping.
//!
//! Pure functions over `serde_json::Value`s: the API server reads the live object, calls one of
//! these, then defaults, validates and stores the result. Nothing here knows about the store.
//!
//! The merge metadata (which lists merge by which key) comes from Kubernetes 1.37's Go types
//! (`patchStrategy`/`patchMergeKey` tags for strategic merge patch, `listType`/`listMapKey`
//! markers for apply) for the kinds Keelson serves; see [`root_fields`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde_json::{Map, Value};

type Object = Map<String, Value>;

/// The most operations a JSON patch may hold (Kubernetes' `maxJSONPatchOperations`).
pub const JSON_PATCH_OPERATIONS_MAX: usize = 10_000;

/// The deepest nesting of lists and objects accepted in a patch, an applied configuration or a
/// live object (serde_json's own parser stops at 128).
pub const NESTING_DEPTH_MAX: usize = 128;

/// The most `Update` entries kept in `metadata.managedFields`; older ones are merged into one
/// `ancient-changes` entry (Kubernetes' `DefaultMaxUpdateManagers`).
pub const UPDATE_MANAGERS_MAX: usize = 10;

const ANCIENT_CHANGES_MANAGER: &str = "ancient-changes";
const OPERATION_APPLY: &str = "Apply";
const OPERATION_UPDATE: &str = "Update";

const DIRECTIVE_PATCH: &str = "$patch";
const DIRECTIVE_RETAIN_KEYS: &str = "$retainKeys";
const PREFIX_SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const PREFIX_DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Metadata the server owns: never taken from an applied configuration.
const SERVER_SET_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Metadata never recorded in `managedFields` (Kubernetes' strip set, plus deletion fields).
const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "generation",
    "managedFields",
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// How the API server should answer a failed patch or apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400 BadRequest: the patch or the applied configuration is malformed.
    BadRequest,
    /// 409 Conflict: an apply would change fields another manager owns.
    Conflict,
    /// 413 RequestEntityTooLarge: too many JSON patch operations.
    RequestEntityTooLarge,
    /// 422 Invalid: well-formed, but it cannot be applied to this object.
    Invalid,
}

impl ErrorKind {
    /// The HTTP status code Kubernetes answers with.
    pub fn status_code(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Conflict => 409,
            ErrorKind::RequestEntityTooLarge => 413,
            ErrorKind::Invalid => 422,
        }
    }
}

/// A patch that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The patch body has the wrong shape (400).
    #[error("malformed patch: {0}")]
    Malformed(String),
    /// A JSON patch with more than [`JSON_PATCH_OPERATIONS_MAX`] operations (413).
    #[error("the allowed maximum operations in a json patch is {max}, got {count}")]
    TooManyOperations { count: usize, max: usize },
    /// The patch nests deeper than [`NESTING_DEPTH_MAX`] (400).
    #[error("patch nests deeper than {max} levels")]
    TooDeep { max: usize },
    /// A JSON patch `test` operation did not match (422).
    #[error("json patch test failed: {0}")]
    TestFailed(String),
    /// A JSON patch operation names a path that does not exist (422).
    #[error("json patch cannot be applied: {0}")]
    Unappliable(String),
    /// A strategic merge patch breaks the format's rules (400).
    #[error("invalid strategic merge patch: {0}")]
    Strategic(String),
}

impl PatchError {
    /// How the server should answer.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PatchError::Malformed(_) | PatchError::TooDeep { .. } | PatchError::Strategic(_) => {
                ErrorKind::BadRequest
            }
            PatchError::TooManyOperations { .. } => ErrorKind::RequestEntityTooLarge,
            PatchError::TestFailed(_) | PatchError::Unappliable(_) => ErrorKind::Invalid,
        }
    }
}

/// One field an apply would take from another manager.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldConflict {
    /// The other manager as Kubernetes prints it: `"kubectl"` for an applier,
    /// `"kube-controller-manager" using apps/v1` for an updater. A `Status` cause's message is
    /// `conflict with {manager}`.
    pub manager: String,
    /// The field in Kubernetes' path form, e.g. `.spec.replicas` or
    /// `.spec.containers[name="nginx"].image`; a `Status` cause's `field`.
    pub field: String,
}

/// A Server-Side Apply that could not be done.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change value (409). `message` is Kubernetes' text,
    /// e.g. `Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1:
    /// .spec.replicas`.
    #[error("{message}")]
    Conflict {
        message: String,
        conflicts: Vec<FieldConflict>,
    },
    /// The request is malformed: not an object, no `apiVersion`/`kind`, no manager (400).
    #[error("bad apply request: {0}")]
    BadRequest(String),
    /// The configuration cannot be tracked: a keyed list item without its key, duplicate keys,
    /// too deep (422).
    #[error("invalid applied configuration: {0}")]
    Invalid(String),
}

impl ApplyError {
    /// How the server should answer.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::Conflict { .. } => ErrorKind::Conflict,
            ApplyError::BadRequest(_) => ErrorKind::BadRequest,
            ApplyError::Invalid(_) => ErrorKind::Invalid,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// JSON patch and merge patch
// ---------------------------------------------------------------------------------------------

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`) to `target`.
///
/// All operations apply or none: on error `target` is untouched (it is only read).
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(operations) = patch else {
        return Err(PatchError::Malformed(
            "a json patch must be a list of operations".to_string(),
        ));
    };
    if operations.len() > JSON_PATCH_OPERATIONS_MAX {
        return Err(PatchError::TooManyOperations {
            count: operations.len(),
            max: JSON_PATCH_OPERATIONS_MAX,
        });
    }
    check_patch_depth(patch)?;
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|error| PatchError::Malformed(error.to_string()))?;
    let mut document = target.clone();
    json_patch::patch(&mut document, &operations).map_err(|error| match error.kind {
        json_patch::PatchErrorKind::TestFailed => PatchError::TestFailed(error.to_string()),
        _ => PatchError::Unappliable(error.to_string()),
    })?;
    Ok(document)
}

/// Applies an RFC 7386 JSON merge patch (`application/merge-patch+json`): objects merge key by
/// key, `null` deletes a key, everything else (lists included) replaces.
pub fn merge_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        return Err(PatchError::Malformed(
            "a merge patch must be a json object".to_string(),
        ));
    }
    check_patch_depth(patch)?;
    let mut document = target.clone();
    json_patch::merge(&mut document, patch);
    Ok(document)
}

fn check_patch_depth(patch: &Value) -> Result<(), PatchError> {
    if nesting_exceeds(patch, NESTING_DEPTH_MAX) {
        return Err(PatchError::TooDeep {
            max: NESTING_DEPTH_MAX,
        });
    }
    Ok(())
}

/// Whether lists and objects nest more than `max` levels (iterative: safe on any input).
fn nesting_exceeds(value: &Value, max: usize) -> bool {
    nesting_exceeds_from(vec![(value, 1)], max)
}

/// [`nesting_exceeds`] for an object's fields, without wrapping the object in a `Value`.
fn object_nesting_exceeds(object: &Object, max: usize) -> bool {
    nesting_exceeds_from(object.values().map(|value| (value, 2)).collect(), max)
}

fn nesting_exceeds_from(mut stack: Vec<(&Value, usize)>, max: usize) -> bool {
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::Array(items) => {
                if depth > max {
                    return true;
                }
                stack.extend(items.iter().map(|child| (child, depth + 1)));
            }
            Value::Object(map) => {
                if depth > max {
                    return true;
                }
                stack.extend(map.values().map(|child| (child, depth + 1)));
            }
            _ => {}
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Merge metadata per kind
// ---------------------------------------------------------------------------------------------

type Fields = &'static [Field];

/// How a field merges, for strategic merge patch and for apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Merge {
    /// Objects merge key by key; lists are replaced whole (and owned as one field by apply).
    Default,
    /// An object apply owns as one field (`+structType=atomic`); patches still merge it.
    AtomicObject,
    /// A list of primitives merged as a set (`patchStrategy:"merge"`, `listType=set`).
    Set,
    /// A list of objects merged by `smp_key` (`patchMergeKey`); apply identifies an item by
    /// `ssa_keys` (`listMapKey`s, with the defaults the schema declares).
    Keyed {
        smp_key: &'static str,
        ssa_keys: &'static [KeyField],
    },
}

impl Merge {
    fn is_associative(self) -> bool {
        matches!(self, Merge::Set | Merge::Keyed { .. })
    }
}

#[derive(Debug, PartialEq, Eq)]
struct KeyField {
    name: &'static str,
    default: Option<&'static str>,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    merge: Merge,
    /// A non-pointer Go struct (always present): an `Update` never owns the node itself.
    implicit: bool,
    children: Fields,
}

static UNKNOWN_FIELD: Field = plain("", &[]);

const fn plain(name: &'static str, children: Fields) -> Field {
    Field {
        name,
        merge: Merge::Default,
        implicit: false,
        children,
    }
}

const fn implicit(name: &'static str, children: Fields) -> Field {
    Field {
        name,
        merge: Merge::Default,
        implicit: true,
        children,
    }
}

const fn atomic(name: &'static str) -> Field {
    Field {
        name,
        merge: Merge::AtomicObject,
        implicit: false,
        children: &[],
    }
}

const fn set(name: &'static str) -> Field {
    Field {
        name,
        merge: Merge::Set,
        implicit: false,
        children: &[],
    }
}

const fn keyed(
    name: &'static str,
    smp_key: &'static str,
    ssa_keys: &'static [KeyField],
    children: Fields,
) -> Field {
    Field {
        name,
        merge: Merge::Keyed { smp_key, ssa_keys },
        implicit: false,
        children,
    }
}

const fn key(name: &'static str) -> KeyField {
    KeyField {
        name,
        default: None,
    }
}

const KEY_NAME: &[KeyField] = &[key("name")];
const KEY_TYPE: &[KeyField] = &[key("type")];
const KEY_IP: &[KeyField] = &[key("ip")];
const KEY_CONTAINER_PORT: &[KeyField] = &[
    key("containerPort"),
    KeyField {
        name: "protocol",
        default: Some("TCP"),
    },
];
const KEY_SERVICE_PORT: &[KeyField] = &[
    key("port"),
    KeyField {
        name: "protocol",
        default: Some("TCP"),
    },
];

const OBJECT_META: Fields = &[
    set("finalizers"),
    keyed("ownerReferences", "uid", &[key("uid")], &[]),
];

const CONTAINER: Fields = &[
    keyed("ports", "containerPort", KEY_CONTAINER_PORT, &[]),
    keyed("env", "name", KEY_NAME, &[]),
    keyed("volumeMounts", "mountPath", &[key("mountPath")], &[]),
    keyed("volumeDevices", "devicePath", &[key("devicePath")], &[]),
];

const POD_SPEC: Fields = &[
    keyed("containers", "name", KEY_NAME, CONTAINER),
    keyed("initContainers", "name", KEY_NAME, CONTAINER),
    keyed("ephemeralContainers", "name", KEY_NAME, CONTAINER),
    keyed("volumes", "name", KEY_NAME, &[]),
    keyed("imagePullSecrets", "name", KEY_NAME, &[]),
    keyed("hostAliases", "ip", KEY_IP, &[]),
    keyed(
        "topologySpreadConstraints",
        "topologyKey",
        &[key("topologyKey"), key("whenUnsatisfiable")],
        &[],
    ),
    keyed("resourceClaims", "name", KEY_NAME, &[]),
    keyed("schedulingGates", "name", KEY_NAME, &[]),
];

const POD_STATUS: Fields = &[
    keyed("conditions", "type", KEY_TYPE, &[]),
    keyed("podIPs", "ip", KEY_IP, &[]),
    keyed("hostIPs", "ip", KEY_IP, &[]),
    keyed("resourceClaimStatuses", "name", KEY_NAME, &[]),
];

const POD_TEMPLATE_SPEC: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit("spec", POD_SPEC),
];

const CONDITIONS_STATUS: Fields = &[keyed("conditions", "type", KEY_TYPE, &[])];

const POD: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit("spec", POD_SPEC),
    implicit("status", POD_STATUS),
];

const SERVICE: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit("spec", &[keyed("ports", "port", KEY_SERVICE_PORT, &[])]),
    implicit("status", CONDITIONS_STATUS),
];

const NODE: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit("spec", &[set("podCIDRs")]),
    implicit(
        "status",
        &[
            keyed("conditions", "type", KEY_TYPE, &[]),
            keyed("addresses", "type", KEY_TYPE, &[]),
        ],
    ),
];

const NAMESPACE: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit("spec", &[]),
    implicit("status", CONDITIONS_STATUS),
];

const SERVICE_ACCOUNT: Fields = &[
    implicit("metadata", OBJECT_META),
    keyed("secrets", "name", KEY_NAME, &[]),
];

const REPLICATION_CONTROLLER: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit("spec", &[plain("template", POD_TEMPLATE_SPEC)]),
    implicit("status", CONDITIONS_STATUS),
];

const REPLICA_SET: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit(
        "spec",
        &[atomic("selector"), implicit("template", POD_TEMPLATE_SPEC)],
    ),
    implicit("status", CONDITIONS_STATUS),
];

const DEPLOYMENT: Fields = &[
    implicit("metadata", OBJECT_META),
    implicit(
        "spec",
        &[
            atomic("selector"),
            implicit("template", POD_TEMPLATE_SPEC),
            implicit("strategy", &[]),
        ],
    ),
    implicit("status", CONDITIONS_STATUS),
];

/// Only `metadata` has merge rules (Endpoints, ConfigMap, Secret, Event, Lease and unknown
/// kinds): every other list is replaced whole.
const METADATA_ONLY: Fields = &[implicit("metadata", OBJECT_META)];

/// The merge metadata of a kind's top-level fields.
///
/// Covered (strategic merge key / apply list-map keys):
/// - `metadata`: `finalizers` (set), `ownerReferences` (`uid`).
/// - pod spec, also in RC/RS/Deployment `spec.template.spec`: `containers`, `initContainers`,
///   `ephemeralContainers` (`name`), and in each container `ports` (`containerPort`; apply:
///   `containerPort`+`protocol`, default TCP), `env` (`name`), `volumeMounts` (`mountPath`),
///   `volumeDevices` (`devicePath`); `volumes`, `imagePullSecrets`, `resourceClaims`,
///   `schedulingGates` (`name`), `hostAliases` (`ip`), `topologySpreadConstraints`
///   (`topologyKey`; apply: `topologyKey`+`whenUnsatisfiable`). `tolerations`,
///   `readinessGates` and the rest are replaced.
/// - pod status: `conditions` (`type`), `podIPs`, `hostIPs` (`ip`), `resourceClaimStatuses`.
/// - service `spec.ports` (`port`; apply: `port`+`protocol`), `status.conditions`.
/// - node `spec.podCIDRs` (set), `status.conditions`, `status.addresses` (`type`).
/// - namespace, RC, RS, Deployment `status.conditions` (`type`); RS and Deployment
///   `spec.selector` is atomic for apply; ServiceAccount `secrets` (`name`).
fn root_fields(kind: &str) -> Fields {
    match kind {
        "Pod" => POD,
        "Service" => SERVICE,
        "Node" => NODE,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "ReplicationController" => REPLICATION_CONTROLLER,
        "ReplicaSet" => REPLICA_SET,
        "Deployment" => DEPLOYMENT,
        _ => METADATA_ONLY,
    }
}

fn field_of(fields: Fields, name: &str) -> &'static Field {
    fields
        .iter()
        .find(|field| field.name == name)
        .unwrap_or(&UNKNOWN_FIELD)
}

// ---------------------------------------------------------------------------------------------
// Strategic merge patch
// ---------------------------------------------------------------------------------------------

/// Applies a Kubernetes strategic merge patch (`application/strategic-merge-patch+json`) to
/// `target`, an object of `kind`.
///
/// Lists with a merge key merge item by item (see [`root_fields`] for the keys covered), other
/// lists are replaced. Directives: `$patch: replace|delete|merge` on objects and list items,
/// `$setElementOrder/<list>`, `$retainKeys`, `$deleteFromPrimitiveList/<list>`; `null` deletes a
/// key. No directive key is left in the result. Unknown kinds merge like a merge patch except
/// in `metadata`, whose rules hold for every kind.
pub fn strategic_merge_patch(
    kind: &str,
    target: &Value,
    patch: &Value,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::Malformed(
            "a strategic merge patch must be a json object".to_string(),
        ));
    };
    if object_nesting_exceeds(patch, NESTING_DEPTH_MAX) {
        return Err(PatchError::TooDeep {
            max: NESTING_DEPTH_MAX,
        });
    }
    let Value::Object(original) = target else {
        return Err(PatchError::Strategic(
            "the patched object is not a json object".to_string(),
        ));
    };
    let merged = smp_merge_map(original.clone(), patch.clone(), root_fields(kind))?;
    Ok(Value::Object(merged))
}

fn strategic(message: impl Into<String>) -> PatchError {
    PatchError::Strategic(message.into())
}

/// The list a `$setElementOrder/x` or `$deleteFromPrimitiveList/x` key is about.
fn directive_target<'k>(key: &'k str, prefix: &str) -> Result<&'k str, PatchError> {
    match key.strip_prefix(prefix) {
        Some(target) if !target.is_empty() => Ok(target),
        _ => Err(strategic(format!("directive {key:?} names no field"))),
    }
}

fn smp_merge_map(
    mut original: Object,
    mut patch: Object,
    fields: Fields,
) -> Result<Object, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE_PATCH) {
        match directive.as_str() {
            // The patch replaces the object: merge it into nothing, which still honours
            // directives nested in it.
            Some("replace") => return smp_merge_map(Object::new(), patch, fields),
            Some("delete") => return Ok(Object::new()),
            Some("merge") => {}
            _ => return Err(strategic(format!("unknown $patch directive {directive}"))),
        }
    }

    if let Some(retain) = patch.remove(DIRECTIVE_RETAIN_KEYS) {
        apply_retain_keys(&mut original, &patch, &retain)?;
    }

    let order_keys: Vec<String> = patch
        .keys()
        .filter(|key| key.starts_with(PREFIX_SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for order_key in order_keys {
        let Some(order) = patch.remove(&order_key) else {
            continue;
        };
        let name = directive_target(&order_key, PREFIX_SET_ELEMENT_ORDER)?;
        let Value::Array(order) = order else {
            return Err(strategic(format!("{order_key} must be a list")));
        };
        let field = field_of(fields, name);
        let patch_list = match patch.remove(name) {
            None => None,
            Some(Value::Array(items)) => Some(items),
            Some(_) => return Err(strategic(format!("{name} must be a list"))),
        };
        let original_list = match original.remove(name) {
            Some(Value::Array(items)) => Some(items),
            Some(other) => {
                original.insert(name.to_string(), other);
                None
            }
            None => None,
        };
        let merge_key = smp_merge_key(field);
        validate_set_element_order(patch_list.as_deref(), &order, merge_key)?;
        let server_order = original_list.clone().unwrap_or_default();
        let merged = match (original_list, patch_list) {
            (Some(items), None) => items,
            (original_items, Some(patch_items)) => {
                smp_list(original_items.unwrap_or_default(), patch_items, field)?
            }
            (None, None) => continue,
        };
        let (in_order, server_only) = partition_by_presence(merged, &order, merge_key);
        let ordered =
            normalize_element_order(in_order, server_only, &order, &server_order, merge_key)?;
        original.insert(name.to_string(), Value::Array(ordered));
    }

    for (key, value) in patch {
        if key.starts_with(PREFIX_DELETE_FROM_PRIMITIVE_LIST) {
            let name = directive_target(&key, PREFIX_DELETE_FROM_PRIMITIVE_LIST)?;
            let Value::Array(to_delete) = value else {
                return Err(strategic(format!("{key} must be a list")));
            };
            if let Some(Value::Array(items)) = original.get_mut(name) {
                items.retain(|item| !to_delete.contains(item));
            }
            continue;
        }
        if key.starts_with('$') {
            return Err(strategic(format!("unknown directive {key}")));
        }
        if value.is_null() {
            original.remove(&key);
            continue;
        }
        let field = field_of(fields, &key);
        let current = original.remove(&key);
        let merged = smp_value(current, value, field)?;
        original.insert(key, merged);
    }
    Ok(original)
}

fn smp_value(current: Option<Value>, patch: Value, field: &Field) -> Result<Value, PatchError> {
    Ok(match (current, patch) {
        (Some(Value::Object(current)), Value::Object(patch)) => {
            Value::Object(smp_merge_map(current, patch, field.children)?)
        }
        (_, Value::Object(patch)) => {
            Value::Object(smp_merge_map(Object::new(), patch, field.children)?)
        }
        (Some(Value::Array(current)), Value::Array(patch)) => {
            Value::Array(smp_list(current, patch, field)?)
        }
        (_, Value::Array(patch)) => Value::Array(smp_list(Vec::new(), patch, field)?),
        (_, scalar) => scalar,
    })
}

fn smp_merge_key(field: &Field) -> Option<&'static str> {
    match field.merge {
        Merge::Keyed { smp_key, .. } => Some(smp_key),
        _ => None,
    }
}

fn apply_retain_keys(
    original: &mut Object,
    patch: &Object,
    retain: &Value,
) -> Result<(), PatchError> {
    let Value::Array(retain) = retain else {
        return Err(strategic("$retainKeys must be a list of field names"));
    };
    let mut keep = HashSet::new();
    for name in retain {
        let Some(name) = name.as_str() else {
            return Err(strategic("$retainKeys must be a list of field names"));
        };
        keep.insert(name);
    }
    for (key, value) in patch {
        let directive = key.starts_with(PREFIX_DELETE_FROM_PRIMITIVE_LIST)
            || key.starts_with(PREFIX_SET_ELEMENT_ORDER);
        if !value.is_null() && !directive && !keep.contains(key.as_str()) {
            return Err(strategic(format!(
                "field {key} is in the patch but not in its $retainKeys list"
            )));
        }
    }
    original.retain(|key, _| keep.contains(key.as_str()));
    Ok(())
}

/// Merges or replaces a list according to its field's strategy.
fn smp_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: &Field,
) -> Result<Vec<Value>, PatchError> {
    if field.merge.is_associative() {
        smp_merge_list(original, patch, field)
    } else {
        smp_replace_list(patch, field)
    }
}

/// A replaced list still gets its objects' directives processed; bare directive items go.
fn smp_replace_list(patch: Vec<Value>, field: &Field) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for item in patch {
        match item {
            Value::Object(map) if map.len() == 1 && map.contains_key(DIRECTIVE_PATCH) => {}
            Value::Object(map) => out.push(Value::Object(smp_merge_map(
                Object::new(),
                map,
                field.children,
            )?)),
            Value::Array(items) => out.push(Value::Array(smp_replace_list(items, field)?)),
            scalar => out.push(scalar),
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    Object,
    String,
    Number,
    Bool,
    Null,
}

fn element_kind(original: &[Value], patch: &[Value]) -> Result<Option<ElementKind>, PatchError> {
    let mut kind = None;
    for item in original.iter().chain(patch) {
        let this = match item {
            Value::Object(_) => ElementKind::Object,
            Value::String(_) => ElementKind::String,
            Value::Number(_) => ElementKind::Number,
            Value::Bool(_) => ElementKind::Bool,
            Value::Null => ElementKind::Null,
            Value::Array(_) => return Err(strategic("lists of lists are not supported")),
        };
        match kind {
            None => kind = Some(this),
            Some(seen) if seen != this => {
                return Err(strategic("list element types are not identical"));
            }
            Some(_) => {}
        }
    }
    Ok(kind)
}

fn smp_merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    field: &Field,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if element_kind(&original, &patch)? != Some(ElementKind::Object) {
        // A set of primitives: union, the patch's items in the patch's order.
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for item in original.iter().chain(&patch) {
            if !merged.contains(item) {
                merged.push(item.clone());
            }
        }
        let (in_patch, server_only) = partition_by_presence(merged, &patch, None);
        return normalize_element_order(in_patch, server_only, &patch, &original, None);
    }

    let Some(merge_key) = smp_merge_key(field) else {
        return Err(strategic(format!(
            "cannot merge lists of objects without a merge key (field {:?})",
            field.name
        )));
    };
    let mut original = original;
    let mut plain_items: Vec<Object> = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Value::Object(mut map) = item else {
            return Err(strategic("list element types are not identical"));
        };
        let Some(directive) = map.get(DIRECTIVE_PATCH) else {
            plain_items.push(map);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(key_value) = map.get(merge_key) else {
                    return Err(no_merge_key(merge_key));
                };
                original.retain(|existing| existing.get(merge_key) != Some(key_value));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                map.remove(DIRECTIVE_PATCH);
                if !map.is_empty() {
                    plain_items.push(map);
                }
            }
            _ => return Err(strategic(format!("unknown $patch directive {directive}"))),
        }
    }
    if replace {
        let mut replaced = Vec::with_capacity(plain_items.len());
        for item in plain_items {
            replaced.push(Value::Object(smp_merge_map(
                Object::new(),
                item,
                field.children,
            )?));
        }
        return Ok(replaced);
    }

    let server_order = original.clone();
    let mut merged = original;
    for item in &plain_items {
        let Some(key_value) = item.get(merge_key) else {
            return Err(no_merge_key(merge_key));
        };
        match merged
            .iter()
            .position(|existing| existing.get(merge_key) == Some(key_value))
        {
            Some(index) => {
                let existing = std::mem::take(&mut merged[index]);
                let Value::Object(existing) = existing else {
                    return Err(strategic("list element types are not identical"));
                };
                merged[index] =
                    Value::Object(smp_merge_map(existing, item.clone(), field.children)?);
            }
            None => merged.push(Value::Object(smp_merge_map(
                Object::new(),
                item.clone(),
                field.children,
            )?)),
        }
    }
    let patch_order: Vec<Value> = plain_items.into_iter().map(Value::Object).collect();
    let (in_patch, server_only) = partition_by_presence(merged, &patch_order, Some(merge_key));
    normalize_element_order(
        in_patch,
        server_only,
        &patch_order,
        &server_order,
        Some(merge_key),
    )
}

fn no_merge_key(merge_key: &str) -> PatchError {
    strategic(format!(
        "a list item does not contain its merge key {merge_key:?}"
    ))
}

/// Whether two list items are the same item: equal merge key values, or equal primitives.
fn same_item(a: &Value, b: &Value, merge_key: Option<&str>) -> bool {
    match merge_key {
        Some(key) => a.get(key).is_some() && a.get(key) == b.get(key),
        None => a == b,
    }
}

fn position_in(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    list.iter()
        .position(|candidate| same_item(candidate, item, merge_key))
}

fn partition_by_presence(
    items: Vec<Value>,
    by: &[Value],
    merge_key: Option<&str>,
) -> (Vec<Value>, Vec<Value>) {
    items
        .into_iter()
        .partition(|item| position_in(by, item, merge_key).is_some())
}

/// Kubernetes' `normalizeElementOrder`: the patch's items in patch order, the server-only items
/// in server order, interleaved as the live list had them.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Result<Vec<Value>, PatchError> {
    if let Some(key) = merge_key {
        let lists = [&patch_items, &server_only, patch_order, server_order];
        if lists
            .iter()
            .flat_map(|list| list.iter())
            .any(|item| item.get(key).is_none())
        {
            return Err(no_merge_key(key));
        }
    }
    let patch_items = sort_by_order(patch_items, patch_order, merge_key);
    let server_only = sort_by_order(server_only, server_order, merge_key);

    // Kubernetes' `mergeSortedSlice`: take the server item first only when both are in the
    // live list and the server item comes first there.
    let mut left = VecDeque::from(server_only);
    let mut right = VecDeque::from(patch_items);
    let mut out = Vec::with_capacity(left.len() + right.len());
    loop {
        let take_left = match (left.front(), right.front()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position_in(server_order, l, merge_key), position_in(server_order, r, merge_key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left {
            left.pop_front()
        } else {
            right.pop_front()
        };
        out.extend(next);
    }
    Ok(out)
}

fn sort_by_order(mut items: Vec<Value>, order: &[Value], merge_key: Option<&str>) -> Vec<Value> {
    items.sort_by_key(|item| position_in(order, item, merge_key).unwrap_or(usize::MAX));
    items
}

/// Kubernetes' `validatePatchWithSetOrderList`: the patch's items appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_set_element_order(
    patch_list: Option<&[Value]>,
    order: &[Value],
    merge_key: Option<&str>,
) -> Result<(), PatchError> {
    let Some(patch_list) = patch_list else {
        return Ok(());
    };
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let is_delete =
        |item: &Value| item.get(DIRECTIVE_PATCH).and_then(Value::as_str) == Some("delete");
    let items: Vec<&Value> = match merge_key {
        Some(_) => patch_list.iter().filter(|item| !is_delete(item)).collect(),
        None => patch_list.iter().collect(),
    };
    let (mut patch_index, mut order_index) = (0, 0);
    while patch_index < items.len() && order_index < order.len() {
        let item = items[patch_index];
        if item.get(DIRECTIVE_PATCH).is_some() {
            patch_index += 1;
            continue;
        }
        if let Some(key) = merge_key {
            if item.get(key).is_none() || order[order_index].get(key).is_none() {
                return Err(no_merge_key(key));
            }
        }
        if same_item(item, &order[order_index], merge_key) {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < items.len() {
        return Err(strategic(
            "the order of the patch list does not match its $setElementOrder list",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Field sets (managedFields' FieldsV1)
// ---------------------------------------------------------------------------------------------

/// A set of field paths as a tree keyed by FieldsV1 path elements: `f:<field>`,
/// `k:<json key object>` (keyed list item), `v:<json value>` (set item), `i:<index>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct FieldSet {
    /// The path ending here is in the set (FieldsV1 `"."`, or `{}` for a leaf).
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    fn child_mut(&mut self, element: String) -> &mut FieldSet {
        self.children.entry(element).or_default()
    }

    fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    fn prune(&mut self) {
        self.children.retain(|_, child| {
            child.prune();
            !child.is_empty()
        });
    }

    fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (element, child) in &other.children {
            self.child_mut(element.clone()).union_with(child);
        }
    }

    fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(other_child) => child.difference(other_child),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(other_child) = other.children.get(element) {
                let both = child.intersection(other_child);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// The member paths, parents before children, siblings in element order.
    fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect_paths(&mut prefix, &mut out);
        out
    }

    fn collect_paths(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect_paths(prefix, out);
            prefix.pop();
        }
    }

    fn from_fields_v1(value: &Value) -> Option<FieldSet> {
        let Value::Object(map) = value else {
            return None;
        };
        let mut out = FieldSet::default();
        for (element, child) in map {
            if element == "." {
                out.member = true;
                continue;
            }
            let mut parsed = FieldSet::from_fields_v1(child)?;
            if child.as_object().is_some_and(Map::is_empty) {
                parsed.member = true;
            }
            out.children.insert(element.clone(), parsed);
        }
        Some(out)
    }

    fn to_fields_v1(&self) -> Value {
        let mut map = Object::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".to_string(), Value::Object(Object::new()));
        }
        for (element, child) in &self.children {
            if !child.is_empty() {
                map.insert(element.clone(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }
}

/// A path in Kubernetes' printed form: `.spec.containers[name="nginx"].image`.
fn display_path(path: &[String]) -> String {
    path.iter()
        .map(|element| display_element(element))
        .collect()
}

fn display_element(element: &str) -> String {
    if let Some(name) = element.strip_prefix("f:") {
        return format!(".{name}");
    }
    if let Some(key) = element.strip_prefix("k:") {
        return match serde_json::from_str::<Object>(key) {
            Ok(fields) => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                format!("[{}]", parts.join(","))
            }
            Err(_) => format!("[{key}]"),
        };
    }
    if let Some(value) = element.strip_prefix("v:") {
        return format!("[={value}]");
    }
    if let Some(index) = element.strip_prefix("i:") {
        return format!("[{index}]");
    }
    element.to_string()
}

/// The FieldsV1 element naming each item of an associative list: `k:{"name":"x"}` for keyed
/// lists (key fields sorted by name, declared defaults filled in), `v:"x"` for sets.
fn list_item_elements(items: &[Value], field: &Field) -> Result<Vec<String>, String> {
    items
        .iter()
        .map(|item| match field.merge {
            Merge::Set => match item {
                Value::Object(_) | Value::Array(_) => {
                    Err("a set list holds a non-primitive element".to_string())
                }
                _ => Ok(format!("v:{item}")),
            },
            Merge::Keyed { ssa_keys, .. } => keyed_item_element(item, ssa_keys),
            Merge::Default | Merge::AtomicObject => Err("the list is not associative".to_string()),
        })
        .collect()
}

fn keyed_item_element(item: &Value, keys: &[KeyField]) -> Result<String, String> {
    let Value::Object(map) = item else {
        return Err("an associative list holds an element that is not an object".to_string());
    };
    let mut sorted: Vec<&KeyField> = keys.iter().collect();
    sorted.sort_by_key(|key| key.name);
    let mut key_fields = Object::new();
    for key in sorted {
        let value = match (map.get(key.name), key.default) {
            (Some(value), _) if !value.is_null() => value.clone(),
            (_, Some(default)) => Value::String(default.to_string()),
            _ => {
                return Err(format!(
                    "associative list with keys has an element that omits key field {:?}",
                    key.name
                ))
            }
        };
        key_fields.insert(key.name.to_string(), value);
    }
    Ok(format!("k:{}", Value::Object(key_fields)))
}

/// The fields an applied configuration sets: leaves, atomic values and associative list items
/// (Kubernetes' `ToFieldSet`; objects themselves are not members).
fn applied_fields(config: &Object, fields: Fields) -> Result<FieldSet, String> {
    let mut set = FieldSet::default();
    applied_fields_of_map(config, fields, &mut set)?;
    set.prune();
    Ok(set)
}

fn applied_fields_of_map(map: &Object, fields: Fields, set: &mut FieldSet) -> Result<(), String> {
    for (name, value) in map {
        if value.is_null() {
            continue;
        }
        let field = field_of(fields, name);
        applied_fields_of_value(value, field, set.child_mut(format!("f:{name}")))?;
    }
    Ok(())
}

fn applied_fields_of_value(value: &Value, field: &Field, set: &mut FieldSet) -> Result<(), String> {
    match value {
        Value::Object(map) if field.merge != Merge::AtomicObject => {
            applied_fields_of_map(map, field.children, set)
        }
        Value::Array(items) if field.merge.is_associative() => {
            let elements = list_item_elements(items, field)
                .map_err(|error| format!("field {:?}: {error}", field.name))?;
            let mut seen = HashSet::new();
            for (element, item) in elements.into_iter().zip(items) {
                if !seen.insert(element.clone()) {
                    return Err(format!(
                        "field {:?}: duplicate entries for key {}",
                        field.name,
                        display_element(&element)
                    ));
                }
                let child = set.child_mut(element);
                child.member = true;
                if let Value::Object(map) = item {
                    applied_fields_of_map(map, field.children, child)?;
                }
            }
            Ok(())
        }
        _ => {
            set.member = true;
            Ok(())
        }
    }
}

/// What changed between two versions of an object, as field sets.
#[derive(Default)]
struct Comparison {
    added: FieldSet,
    removed: FieldSet,
    modified: FieldSet,
}

fn compare_objects(old: &Object, new: &Object, fields: Fields) -> Comparison {
    compare_objects_with_metadata(old, None, new, fields)
}

/// [`compare_objects`] of `old` and `new` as if neither had `metadata.managedFields` (`new`
/// has none), without copying `old`: only its metadata is copied, without the list.
fn compare_objects_but_managed_fields(old: &Object, new: &Object, fields: Fields) -> Comparison {
    let old_metadata = old.get("metadata").map(|metadata| match metadata {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| *key != "managedFields")
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        ),
        other => other.clone(),
    });
    compare_objects_with_metadata(old, old_metadata.as_ref(), new, fields)
}

/// [`compare_objects`], with `old_metadata`, when given, standing for `old`'s `metadata`.
fn compare_objects_with_metadata(
    old: &Object,
    old_metadata: Option<&Value>,
    new: &Object,
    fields: Fields,
) -> Comparison {
    let mut comparison = Comparison::default();
    compare_maps_with_metadata(
        old,
        old_metadata,
        new,
        fields,
        &mut comparison.added,
        &mut comparison.removed,
        &mut comparison.modified,
    );
    comparison.added.prune();
    comparison.removed.prune();
    comparison.modified.prune();
    comparison
}

fn compare_maps(
    old: &Object,
    new: &Object,
    fields: Fields,
    added: &mut FieldSet,
    removed: &mut FieldSet,
    modified: &mut FieldSet,
) {
    compare_maps_with_metadata(old, None, new, fields, added, removed, modified);
}

fn compare_maps_with_metadata(
    old: &Object,
    old_metadata: Option<&Value>,
    new: &Object,
    fields: Fields,
    added: &mut FieldSet,
    removed: &mut FieldSet,
    modified: &mut FieldSet,
) {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let before = match old_metadata {
            Some(metadata) if name == "metadata" => Some(metadata),
            _ => old.get(name),
        };
        compare_field(
            name,
            before,
            new.get(name),
            fields,
            added,
            removed,
            modified,
        );
    }
}

/// Compares the field `name` of a map (a null value counts as absent).
fn compare_field(
    name: &str,
    before: Option<&Value>,
    after: Option<&Value>,
    fields: Fields,
    added: &mut FieldSet,
    removed: &mut FieldSet,
    modified: &mut FieldSet,
) {
    let before = before.filter(|value| !value.is_null());
    let after = after.filter(|value| !value.is_null());
    // Equal values change nothing below them: skip building (and pruning) their field sets.
    if before == after {
        return;
    }
    let element = format!("f:{name}");
    compare_values(
        before,
        after,
        field_of(fields, name),
        added.child_mut(element.clone()),
        removed.child_mut(element.clone()),
        modified.child_mut(element),
    );
}

fn compare_values(
    before: Option<&Value>,
    after: Option<&Value>,
    field: &Field,
    added: &mut FieldSet,
    removed: &mut FieldSet,
    modified: &mut FieldSet,
) {
    match (before, after) {
        (None, None) => {}
        (None, Some(value)) => mark_all(value, field, added),
        (Some(value), None) => mark_all(value, field, removed),
        (Some(Value::Object(old)), Some(Value::Object(new)))
            if field.merge != Merge::AtomicObject =>
        {
            compare_maps(old, new, field.children, added, removed, modified);
        }
        (Some(Value::Array(old)), Some(Value::Array(new))) if field.merge.is_associative() => {
            let (Ok(old_elements), Ok(new_elements)) = (
                list_item_elements(old, field),
                list_item_elements(new, field),
            ) else {
                // Items without keys: the list can only be tracked as one value.
                if old != new {
                    modified.member = true;
                }
                return;
            };
            let old_items = index_items(&old_elements, old);
            let new_items = index_items(&new_elements, new);
            let elements: BTreeSet<&str> =
                old_items.keys().chain(new_items.keys()).copied().collect();
            for element in elements {
                match (old_items.get(element), new_items.get(element)) {
                    (None, Some(item)) => {
                        mark_item(item, field, added.child_mut(element.to_string()))
                    }
                    (Some(item), None) => {
                        mark_item(item, field, removed.child_mut(element.to_string()))
                    }
                    (Some(Value::Object(old)), Some(Value::Object(new))) => compare_maps(
                        old,
                        new,
                        field.children,
                        added.child_mut(element.to_string()),
                        removed.child_mut(element.to_string()),
                        modified.child_mut(element.to_string()),
                    ),
                    _ => {}
                }
            }
        }
        (Some(old), Some(new)) => {
            if old != new {
                modified.member = true;
            }
        }
    }
}

fn index_items<'a>(elements: &'a [String], items: &'a [Value]) -> HashMap<&'a str, &'a Value> {
    let mut index = HashMap::with_capacity(items.len());
    for (element, item) in elements.iter().zip(items) {
        index.entry(element.as_str()).or_insert(item);
    }
    index
}

/// Every path of `value`, the node itself included (what an `Update` adding it comes to own).
fn mark_all(value: &Value, field: &Field, set: &mut FieldSet) {
    if !field.implicit {
        set.member = true;
    }
    match value {
        Value::Object(map) if field.merge != Merge::AtomicObject => {
            mark_map(map, field.children, set)
        }
        Value::Array(items) if field.merge.is_associative() => {
            if let Ok(elements) = list_item_elements(items, field) {
                for (element, item) in elements.into_iter().zip(items) {
                    mark_item(item, field, set.child_mut(element));
                }
            }
        }
        _ => {}
    }
}

fn mark_item(item: &Value, field: &Field, set: &mut FieldSet) {
    set.member = true;
    if let Value::Object(map) = item {
        mark_map(map, field.children, set);
    }
}

fn mark_map(map: &Object, fields: Fields, set: &mut FieldSet) {
    for (name, child) in map {
        if !child.is_null() {
            mark_all(
                child,
                field_of(fields, name),
                set.child_mut(format!("f:{name}")),
            );
        }
    }
}

/// Drops the fields nobody may own: `apiVersion`, `kind`, server-set metadata, and with
/// `strip_status` the whole `status` (apply on the main resource).
fn strip_untracked(set: &mut FieldSet, strip_status: bool) {
    set.children.remove("f:apiVersion");
    set.children.remove("f:kind");
    if strip_status {
        set.children.remove("f:status");
    }
    if let Some(metadata) = set.children.get_mut("f:metadata") {
        metadata.member = false;
        for name in UNTRACKED_METADATA {
            metadata.children.remove(&format!("f:{name}"));
        }
    }
    set.prune();
}

/// Removes the fields of `set` from an object; objects and lists emptied by it go too.
fn remove_fields(object: &mut Object, set: &FieldSet, fields: Fields) {
    for (element, child) in &set.children {
        let Some(name) = element.strip_prefix("f:") else {
            continue;
        };
        if child.member {
            object.remove(name);
            continue;
        }
        let field = field_of(fields, name);
        let emptied = match object.get_mut(name) {
            Some(Value::Object(map)) => {
                remove_fields(map, child, field.children);
                map.is_empty()
            }
            Some(Value::Array(items)) => {
                remove_items(items, child, field);
                items.is_empty()
            }
            _ => false,
        };
        if emptied {
            object.remove(name);
        }
    }
}

fn remove_items(items: &mut Vec<Value>, set: &FieldSet, field: &Field) {
    let Ok(elements) = list_item_elements(items, field) else {
        return;
    };
    let mut kept = Vec::with_capacity(items.len());
    for (mut item, element) in items.drain(..).zip(elements) {
        match set.children.get(&element) {
            Some(child) if child.member => {}
            Some(child) => {
                if let Value::Object(map) = &mut item {
                    remove_fields(map, child, field.children);
                }
                kept.push(item);
            }
            None => kept.push(item),
        }
    }
    *items = kept;
}

// ---------------------------------------------------------------------------------------------
// Apply's merge
// ---------------------------------------------------------------------------------------------

/// Merges an applied configuration into the live object (structured-merge-diff's `Merge`).
fn ssa_merge_map(live: &mut Object, config: &Object, fields: Fields) {
    for (name, value) in config {
        let field = field_of(fields, name);
        match live.get_mut(name) {
            Some(current) => ssa_merge_value(current, value, field),
            None => {
                live.insert(name.clone(), value.clone());
            }
        }
    }
}

fn ssa_merge_value(live: &mut Value, config: &Value, field: &Field) {
    match (&mut *live, config) {
        (Value::Object(current), Value::Object(applied)) if field.merge != Merge::AtomicObject => {
            ssa_merge_map(current, applied, field.children);
        }
        (Value::Array(current), Value::Array(applied)) if field.merge.is_associative() => {
            *current = ssa_merge_list(current, applied, field).unwrap_or_else(|| applied.clone());
        }
        _ => *live = config.clone(),
    }
}

/// structured-merge-diff's associative list merge: the configuration's items in its order,
/// live-only items kept where they were. `None` if the live list has items without keys.
fn ssa_merge_list(lhs: &[Value], rhs: &[Value], field: &Field) -> Option<Vec<Value>> {
    let lhs_elements = list_item_elements(lhs, field).ok()?;
    let rhs_elements = list_item_elements(rhs, field).ok()?;
    let lhs_index = index_items(&lhs_elements, lhs);
    let rhs_index = index_items(&rhs_elements, rhs);
    let merge_item = |element: &str| -> Option<Value> {
        let applied = rhs_index.get(element)?;
        Some(match (lhs_index.get(element), applied) {
            (Some(Value::Object(current)), Value::Object(config)) => {
                let mut merged = current.clone();
                ssa_merge_map(&mut merged, config, field.children);
                Value::Object(merged)
            }
            _ => (*applied).clone(),
        })
    };

    let mut merged_rhs: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() && lhs_elements[li] == rhs_elements[ri] {
            let element = lhs_elements[li].as_str();
            if merged_rhs.insert(element) {
                out.push(merge_item(element)?);
            }
            li += 1;
            ri += 1;
            continue;
        }
        if li < lhs.len() {
            let element = lhs_elements[li].as_str();
            if !rhs_index.contains_key(element) {
                out.push(lhs[li].clone());
                li += 1;
                continue;
            }
            if merged_rhs.contains(element) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let element = rhs_elements[ri].as_str();
            if merged_rhs.insert(element) {
                out.push(merge_item(element)?);
            }
            ri += 1;
        } else {
            // Unreachable: a live item also in the configuration was merged when the
            // configuration's cursor passed it. Advancing keeps the loop finite regardless.
            li += 1;
        }
    }
    Some(out)
}

/// Drops `null` values from an applied configuration, and the objects left empty by that:
/// `annotations: {note: null}` sets nothing.
fn strip_nulls(map: &mut Object) {
    map.retain(|_, value| !value.is_null());
    map.retain(|_, value| !strip_nulls_value(value));
}

/// Strips nulls below `value`; true if it is an object that this emptied.
fn strip_nulls_value(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let had_fields = !map.is_empty();
            strip_nulls(map);
            had_fields && map.is_empty()
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                strip_nulls_value(item);
            }
            false
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// managedFields entries
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct ManagedEntry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: Option<String>,
    set: FieldSet,
    /// The entry as read, re-emitted byte for byte while its fields and time are unchanged.
    read: Option<(Value, FieldSet, Option<String>)>,
}

impl ManagedEntry {
    fn new(
        manager: &str,
        operation: &str,
        api_version: &str,
        time: &str,
        set: FieldSet,
    ) -> ManagedEntry {
        ManagedEntry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            subresource: String::new(),
            api_version: api_version.to_string(),
            time: Some(time.to_string()),
            set,
            read: None,
        }
    }

    fn is(&self, manager: &str, operation: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource.is_empty()
    }

    /// The manager as Kubernetes prints it in conflicts.
    fn display(&self) -> String {
        let mut out = Value::String(self.manager.clone()).to_string();
        if !self.subresource.is_empty() {
            out = format!(
                "{out} with subresource {}",
                Value::String(self.subresource.clone())
            );
        }
        if self.operation == OPERATION_UPDATE {
            out = format!("{out} using {}", self.api_version);
        }
        out
    }

    fn to_value(&self) -> Value {
        if let Some((value, set, time)) = &self.read {
            if *set == self.set && *time == self.time {
                return value.clone();
            }
        }
        let mut map = Object::new();
        map.insert("manager".to_string(), Value::String(self.manager.clone()));
        map.insert(
            "operation".to_string(),
            Value::String(self.operation.clone()),
        );
        map.insert(
            "apiVersion".to_string(),
            Value::String(self.api_version.clone()),
        );
        if let Some(time) = &self.time {
            map.insert("time".to_string(), Value::String(time.clone()));
        }
        map.insert(
            "fieldsType".to_string(),
            Value::String("FieldsV1".to_string()),
        );
        map.insert("fieldsV1".to_string(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            map.insert(
                "subresource".to_string(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(map)
    }
}

fn managed_fields_of(object: &Object) -> Option<&Value> {
    object.get("metadata")?.get("managedFields")
}

/// Reads `metadata.managedFields`; entries that are not FieldsV1 or do not parse are dropped,
/// as Kubernetes resets managed fields it cannot decode.
fn read_managed_fields(list: Option<&Value>) -> Vec<ManagedEntry> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let map = item.as_object()?;
            let text = |name: &str| {
                map.get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            if map
                .get("fieldsType")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind != "FieldsV1")
            {
                return None;
            }
            let set = match map.get("fieldsV1") {
                Some(fields) => FieldSet::from_fields_v1(fields)?,
                None => FieldSet::default(),
            };
            let time = map.get("time").and_then(Value::as_str).map(str::to_string);
            Some(ManagedEntry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: text("subresource"),
                api_version: text("apiVersion"),
                time: time.clone(),
                set: set.clone(),
                read: Some((item.clone(), set, time)),
            })
        })
        .collect()
}

fn unix_seconds(time: Option<&str>) -> i64 {
    time.and_then(|time| time.parse::<jiff::Timestamp>().ok())
        .map_or(0, |time| time.as_second())
}

/// Drops emptied entries, caps the `Update` entries and sorts as Kubernetes does (operation,
/// time, manager, apiVersion, subresource).
fn finish_entries(entries: &mut Vec<ManagedEntry>) {
    entries.retain(|entry| !entry.set.is_empty());
    cap_update_managers(entries);
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| unix_seconds(p.time.as_deref()).cmp(&unix_seconds(q.time.as_deref())))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
}

fn cap_update_managers(entries: &mut Vec<ManagedEntry>) {
    let updates = entries
        .iter()
        .filter(|entry| entry.operation != OPERATION_APPLY)
        .count();
    if updates <= UPDATE_MANAGERS_MAX {
        return;
    }
    let (mut old, mut kept): (Vec<ManagedEntry>, Vec<ManagedEntry>) = std::mem::take(entries)
        .into_iter()
        .partition(|entry| entry.operation != OPERATION_APPLY);
    old.sort_by(|p, q| {
        unix_seconds(p.time.as_deref())
            .cmp(&unix_seconds(q.time.as_deref()))
            .then_with(|| p.manager.cmp(&q.manager))
    });
    // Merge the oldest into one bucket so that UPDATE_MANAGERS_MAX entries remain; an existing
    // bucket always joins it.
    let merge_count = updates - UPDATE_MANAGERS_MAX + 1;
    let mut bucket: Option<ManagedEntry> = None;
    for (index, entry) in old.into_iter().enumerate() {
        if index < merge_count || entry.manager == ANCIENT_CHANGES_MANAGER {
            match &mut bucket {
                Some(bucket) => {
                    bucket.set.union_with(&entry.set);
                    if unix_seconds(entry.time.as_deref()) >= unix_seconds(bucket.time.as_deref()) {
                        bucket.time = entry.time;
                        bucket.api_version = entry.api_version;
                    }
                }
                None => {
                    let mut first = entry;
                    first.manager = ANCIENT_CHANGES_MANAGER.to_string();
                    first.subresource = String::new();
                    first.read = None;
                    bucket = Some(first);
                }
            }
        } else {
            kept.push(entry);
        }
    }
    kept.extend(bucket);
    *entries = kept;
}

fn remove_managed_fields(object: &mut Object) {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.remove("managedFields");
    }
}

fn write_managed_fields(object: &mut Object, entries: &[ManagedEntry]) {
    if entries.is_empty() {
        remove_managed_fields(object);
        return;
    }
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Object::new()));
    if let Value::Object(metadata) = metadata {
        let list = entries.iter().map(ManagedEntry::to_value).collect();
        metadata.insert("managedFields".to_string(), Value::Array(list));
    }
}

fn conflict_error(entries: &[ManagedEntry], conflicts: &[(usize, FieldSet)]) -> ApplyError {
    let mut groups: Vec<(&ManagedEntry, Vec<String>)> = conflicts
        .iter()
        .filter_map(|(index, set)| {
            let entry = entries.get(*index)?;
            Some((
                entry,
                set.paths().iter().map(|path| display_path(path)).collect(),
            ))
        })
        .collect();
    groups.sort_by(|(p, _), (q, _)| {
        (&p.manager, &p.operation, &p.subresource).cmp(&(&q.manager, &q.operation, &q.subresource))
    });
    let conflicts: Vec<FieldConflict> = groups
        .iter()
        .flat_map(|(entry, paths)| {
            paths.iter().map(|path| FieldConflict {
                manager: entry.display(),
                field: path.clone(),
            })
        })
        .collect();
    let message = match conflicts.as_slice() {
        [only] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.field
        ),
        _ => {
            let mut lines = Vec::new();
            for (entry, paths) in &groups {
                lines.push(format!("conflicts with {}:", entry.display()));
                lines.extend(paths.iter().map(|path| format!("- {path}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        }
    };
    ApplyError::Conflict { message, conflicts }
}

// ---------------------------------------------------------------------------------------------
// Server-Side Apply and Update bookkeeping
// ---------------------------------------------------------------------------------------------

/// Server-Side Apply (`application/apply-patch+yaml`, already parsed to JSON) of `applied` by
/// `manager` onto `live` (`None`: the object is created), at `now` (RFC 3339).
///
/// The result is the live object with the applied fields merged in (keyed lists merge by their
/// keys), minus the fields this manager applied last time, no longer applies and nobody else
/// owns; its `metadata.managedFields` holds this manager's `Apply` entry (FieldsV1). A field
/// owned by another manager whose value would change is a [`ApplyError::Conflict`] unless
/// `force`, which moves it to this manager.
///
/// The applied configuration's `status`, `managedFields` and server-set metadata
/// (`resourceVersion`, `uid`, `creationTimestamp`, `generation`, ...) are ignored and never
/// tracked: a `resourceVersion` precondition is for the server to check first. `null` values in
/// the configuration are ignored. When nothing changes the result equals `live`, time
/// included, so the server can skip the write.
pub fn server_side_apply(
    kind: &str,
    manager: &str,
    live: Option<&Value>,
    applied: &Value,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    if manager.is_empty() {
        return Err(ApplyError::BadRequest(
            "fieldManager is required for apply requests".to_string(),
        ));
    }
    let Value::Object(applied) = applied else {
        return Err(ApplyError::BadRequest(
            "the applied configuration must be an object".to_string(),
        ));
    };
    let api_version = match applied.get("apiVersion").and_then(Value::as_str) {
        Some(version) if !version.is_empty() => version,
        _ => return Err(ApplyError::BadRequest("apiVersion must be set".to_string())),
    };
    match applied.get("kind").and_then(Value::as_str) {
        Some(applied_kind) if applied_kind == kind => {}
        Some(applied_kind) => {
            return Err(ApplyError::BadRequest(format!(
                "the applied configuration is a {applied_kind:?}, the request is for a {kind:?}"
            )))
        }
        None => return Err(ApplyError::BadRequest("kind must be set".to_string())),
    }
    let live = match live {
        None => None,
        Some(Value::Object(live)) => Some(live),
        Some(_) => {
            return Err(ApplyError::Invalid(
                "the live object is not an object".to_string(),
            ))
        }
    };
    let too_deep = |map: &Object| object_nesting_exceeds(map, NESTING_DEPTH_MAX);
    if too_deep(applied) || live.is_some_and(too_deep) {
        return Err(ApplyError::Invalid(format!(
            "objects nest deeper than {NESTING_DEPTH_MAX} levels"
        )));
    }
    let fields = root_fields(kind);

    let mut config = applied.clone();
    config.remove("status");
    if let Some(Value::Object(metadata)) = config.get_mut("metadata") {
        for name in SERVER_SET_METADATA {
            metadata.remove(*name);
        }
    }
    strip_nulls(&mut config);
    let mut applied_set = applied_fields(&config, fields).map_err(ApplyError::Invalid)?;
    strip_untracked(&mut applied_set, true);

    let mut entries = read_managed_fields(live.and_then(managed_fields_of));
    let mut base = live.cloned().unwrap_or_default();
    remove_managed_fields(&mut base);
    let mut merged = base.clone();
    ssa_merge_map(&mut merged, &config, fields);

    let is_me = |entry: &ManagedEntry| entry.is(manager, OPERATION_APPLY);
    let comparison = compare_objects(&base, &merged, fields);
    let mut changed = comparison.modified;
    changed.union_with(&comparison.added);
    strip_untracked(&mut changed, false);
    let conflicts: Vec<(usize, FieldSet)> = entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| !is_me(entry))
        .map(|(index, entry)| (index, entry.set.intersection(&changed)))
        .filter(|(_, set)| !set.is_empty())
        .collect();
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&entries, &conflicts));
    }
    for (index, taken) in &conflicts {
        if let Some(entry) = entries.get_mut(*index) {
            entry.set = entry.set.difference(taken);
        }
    }

    // Fields this manager applied before, applies no more and nobody else owns are removed.
    let last_applied = entries
        .iter()
        .find(|entry| is_me(entry))
        .map(|entry| entry.set.clone())
        .unwrap_or_default();
    let mut owned_by_others = FieldSet::default();
    for entry in entries.iter().filter(|entry| !is_me(entry)) {
        owned_by_others.union_with(&entry.set);
    }
    let to_remove = last_applied
        .difference(&applied_set)
        .difference(&owned_by_others);
    remove_fields(&mut merged, &to_remove, fields);
    let removed = compare_objects(&base, &merged, fields).removed;
    for entry in entries
        .iter_mut()
        .filter(|entry| !entry.is(manager, OPERATION_APPLY))
    {
        entry.set = entry.set.difference(&removed);
    }

    let object_changed = merged != base;
    match entries
        .iter_mut()
        .find(|entry| entry.is(manager, OPERATION_APPLY))
    {
        Some(entry) => {
            entry.set = applied_set;
            entry.api_version = api_version.to_string();
            if object_changed || entry.time.is_none() {
                entry.time = Some(now.to_string());
            }
        }
        None => entries.push(ManagedEntry::new(
            manager,
            OPERATION_APPLY,
            api_version,
            now,
            applied_set,
        )),
    }
    finish_entries(&mut entries);
    write_managed_fields(&mut merged, &entries);
    Ok(Value::Object(merged))
}

/// Records a non-apply write (create, update, patch) by `manager` in the new object's
/// `metadata.managedFields` and returns that object.
///
/// `operation` is `Update` (an empty string means the same). The fields that changed between
/// `old` (`None` for a create) and `new` become this manager's and stop being anyone else's;
/// removed fields leave every entry. The entries are read from `new` when it carries
/// `metadata.managedFields`, else from `old`. A write that changes nothing leaves the entries
/// as they were, time included. `new` that is not an object is returned unchanged.
pub fn update_managed_fields(
    manager: &str,
    operation: &str,
    old: Option<&Value>,
    new: Value,
    now: &str,
) -> Value {
    let Value::Object(mut result) = new else {
        return new;
    };
    let old = old.and_then(Value::as_object);
    if object_nesting_exceeds(&result, NESTING_DEPTH_MAX)
        || old.is_some_and(|old| object_nesting_exceeds(old, NESTING_DEPTH_MAX))
    {
        return Value::Object(result);
    }
    let operation = if operation.is_empty() {
        OPERATION_UPDATE
    } else {
        operation
    };
    let kind = result
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let fields = root_fields(&kind);

    let mut entries = match managed_fields_of(&result) {
        Some(list) if !list.is_null() => read_managed_fields(Some(list)),
        _ => read_managed_fields(old.and_then(managed_fields_of)),
    };
    remove_managed_fields(&mut result);

    let empty = Object::new();
    let comparison = compare_objects_but_managed_fields(old.unwrap_or(&empty), &result, fields);
    let mut touched = comparison.modified;
    touched.union_with(&comparison.added);
    strip_untracked(&mut touched, false);
    let mut removed = comparison.removed;
    strip_untracked(&mut removed, false);
    for entry in &mut entries {
        entry.set = entry.set.difference(&removed).difference(&touched);
    }
    if !touched.is_empty() {
        let api_version = result
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let api_version = api_version.as_str();
        match entries
            .iter_mut()
            .find(|entry| entry.is(manager, operation))
        {
            Some(entry) => {
                entry.set.union_with(&touched);
                entry.time = Some(now.to_string());
                entry.api_version = api_version.to_string();
            }
            None => entries.push(ManagedEntry::new(
                manager,
                operation,
                api_version,
                now,
                touched,
            )),
        }
    }
    finish_entries(&mut entries);
    write_managed_fields(&mut result, &entries);
    Value::Object(result)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Fails if a directive key (`$patch`, `$setElementOrder/...`, ...) is anywhere in `value`.
    fn assert_no_directives(name: &str, value: &Value) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    assert!(
                        !key.starts_with('$'),
                        "{name}: directive {key} leaked into {value}"
                    );
                    assert_no_directives(name, child);
                }
            }
            Value::Array(items) => items
                .iter()
                .for_each(|item| assert_no_directives(name, item)),
            _ => {}
        }
    }

    // -- JSON patch -----------------------------------------------------------------------------

    #[test]
    fn json_patch_cases() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}
        });
        let ok_cases = [
            (
                "replace replicas",
                json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
                json!(3),
                "/spec/replicas",
            ),
            (
                "add a label whose key needs ~1 escaping",
                json!([{"op": "add", "path": "/metadata/labels/app.kubernetes.io~1name", "value": "web"}]),
                json!("web"),
                "/metadata/labels/app.kubernetes.io~1name",
            ),
            (
                "test then replace the image",
                json!([
                    {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.27"},
                    {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.28"}
                ]),
                json!("nginx:1.28"),
                "/spec/template/spec/containers/0/image",
            ),
            (
                "append a container",
                json!([{"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "sidecar", "image": "busybox"}}]),
                json!("sidecar"),
                "/spec/template/spec/containers/1/name",
            ),
        ];
        for (name, patch, expected, pointer) in ok_cases {
            let patched = json_patch(&deployment, &patch).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(patched.pointer(pointer), Some(&expected), "{name}");
        }

        let removed = json_patch(
            &deployment,
            &json!([{"op": "remove", "path": "/metadata/labels/app"}]),
        )
        .unwrap();
        assert_eq!(removed["metadata"]["labels"], json!({}), "remove a label");

        let too_many: Vec<Value> = (0..=JSON_PATCH_OPERATIONS_MAX)
            .map(|_| json!({"op": "test", "path": "/kind", "value": "Deployment"}))
            .collect();
        let error_cases = [
            (
                "failing test op",
                json!([
                    {"op": "replace", "path": "/spec/replicas", "value": 5},
                    {"op": "test", "path": "/spec/replicas", "value": 1}
                ]),
                ErrorKind::Invalid,
                "json patch test failed",
            ),
            (
                "remove a missing path",
                json!([{"op": "remove", "path": "/spec/paused"}]),
                ErrorKind::Invalid,
                "json patch cannot be applied",
            ),
            (
                "patch is an object",
                json!({"op": "remove", "path": "/spec"}),
                ErrorKind::BadRequest,
                "malformed patch",
            ),
            (
                "unknown op",
                json!([{"op": "frobnicate", "path": "/spec"}]),
                ErrorKind::BadRequest,
                "malformed patch",
            ),
            (
                "too many operations",
                Value::Array(too_many),
                ErrorKind::RequestEntityTooLarge,
                "the allowed maximum operations in a json patch is 10000, got 10001",
            ),
        ];
        for (name, patch, kind, message) in error_cases {
            let error = json_patch(&deployment, &patch).expect_err(name);
            assert_eq!(error.kind(), kind, "{name}: {error}");
            assert!(error.to_string().starts_with(message), "{name}: {error}");
        }
    }

    #[test]
    fn json_patch_failing_test_names_the_operation() {
        let pod = json!({"metadata": {"resourceVersion": "1003"}});
        let patch = json!([{"op": "test", "path": "/metadata/resourceVersion", "value": "999"}]);
        let error = json_patch(&pod, &patch).expect_err("stale resourceVersion");
        assert_eq!(
            error.to_string(),
            "json patch test failed: operation '/0' failed at path '/metadata/resourceVersion': value did not match"
        );
    }

    // -- Merge patch ------------------------------------------------------------------------------

    #[test]
    fn merge_patch_rfc7386_examples() {
        // RFC 7386 appendix A (the cases whose patch is an object).
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (json!(["a", "b"]), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
            // kubectl scale's body.
            (
                json!({"spec": {"replicas": 1, "selector": {"app": "rc-1"}}}),
                json!({"spec": {"replicas": 3}}),
                json!({"spec": {"replicas": 3, "selector": {"app": "rc-1"}}}),
            ),
        ];
        for (target, patch, expected) in cases {
            assert_eq!(
                merge_patch(&target, &patch).unwrap(),
                expected,
                "{target} + {patch}"
            );
        }
        for patch in [json!(["c"]), json!(null), json!("bar")] {
            let error = merge_patch(&json!({"a": "b"}), &patch).expect_err("non-object patch");
            assert_eq!(error.kind(), ErrorKind::BadRequest, "{patch}");
        }
    }

    // -- Strategic merge patch --------------------------------------------------------------------

    fn check_smp(cases: Vec<(&str, &str, Value, Value, Value)>) {
        for (name, kind, target, patch, expected) in cases {
            let patched = strategic_merge_patch(kind, &target, &patch)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(patched, expected, "{name}");
            assert_no_directives(name, &patched);
        }
    }

    /// `value` with `pointer` set to `new`, the last key inserted if missing.
    fn set_at(mut value: Value, pointer: &str, new: Value) -> Value {
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        match value.pointer_mut(parent).unwrap() {
            Value::Object(map) => {
                map.insert(last.to_string(), new);
            }
            Value::Array(items) => items[last.parse::<usize>().unwrap()] = new,
            other => panic!("cannot set {pointer} in {other}"),
        }
        value
    }

    fn demo_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "demo", "namespace": "default", "labels": {"app": "demo"},
                "finalizers": ["example.com/a", "example.com/b"]
            },
            "spec": {
                "containers": [{
                    "name": "main", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "MODE", "value": "prod"}]
                }],
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"}],
                "nodeSelector": {"disk": "ssd"}
            }
        })
    }

    #[test]
    fn strategic_merge_patch_pod_cases() {
        let pod = demo_pod();
        let with = |pointer: &str, value: Value| set_at(demo_pod(), pointer, value);
        check_smp(vec![
            (
                // kubectl 1.37 `apply` of a changed pod.yaml, from shared/reference.
                "kubectl apply: new label, new image, $setElementOrder",
                "Pod",
                pod.clone(),
                json!({
                    "metadata": {
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"},
                        "labels": {"tier": "web"}
                    },
                    "spec": {
                        "$setElementOrder/containers": [{"name": "main"}],
                        "containers": [{"image": "nginx:1.28", "name": "main"}]
                    }
                }),
                {
                    let mut expected = demo_pod();
                    expected["metadata"]["labels"]["tier"] = json!("web");
                    expected["metadata"]["annotations"] =
                        json!({"kubectl.kubernetes.io/last-applied-configuration": "{}\n"});
                    expected["spec"]["containers"][0]["image"] = json!("nginx:1.28");
                    expected
                },
            ),
            (
                "null deletes a label",
                "Pod",
                pod.clone(),
                json!({"metadata": {"labels": {"app": null, "never-there": null}}}),
                with("/metadata/labels", json!({})),
            ),
            (
                "a new container merges by name, ahead of the live ones (as kubectl patch docs show)",
                "Pod",
                pod.clone(),
                json!({"spec": {"containers": [{"name": "sidecar", "image": "redis"}]}}),
                with(
                    "/spec/containers",
                    json!([{"name": "sidecar", "image": "redis"}, demo_pod()["spec"]["containers"][0].clone()]),
                ),
            ),
            (
                "$patch: delete removes a container",
                "Pod",
                {
                    let mut two = demo_pod();
                    two["spec"]["containers"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"name": "sidecar", "image": "redis"}));
                    two
                },
                json!({"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}),
                pod.clone(),
            ),
            (
                "$patch: replace on a list keeps only the patch's items",
                "Pod",
                pod.clone(),
                json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "busybox"}]}}),
                with("/spec/containers", json!([{"name": "only", "image": "busybox"}])),
            ),
            (
                "$patch: replace on a map",
                "Pod",
                pod.clone(),
                json!({"metadata": {"labels": {"$patch": "replace", "team": "a"}}}),
                with("/metadata/labels", json!({"team": "a"})),
            ),
            (
                "$patch: delete on a map empties it",
                "Pod",
                pod.clone(),
                json!({"spec": {"nodeSelector": {"$patch": "delete"}}}),
                with("/spec/nodeSelector", json!({})),
            ),
            (
                "$patch: merge is the default",
                "Pod",
                pod.clone(),
                json!({"spec": {"nodeSelector": {"$patch": "merge", "zone": "a"}}}),
                with("/spec/nodeSelector", json!({"disk": "ssd", "zone": "a"})),
            ),
            (
                "tolerations have no merge key: replaced",
                "Pod",
                pod.clone(),
                json!({"spec": {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}),
                with(
                    "/spec/tolerations",
                    json!([{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]),
                ),
            ),
            (
                "ports merge by containerPort, env by name",
                "Pod",
                pod.clone(),
                json!({"spec": {"containers": [{
                    "name": "main",
                    "ports": [{"containerPort": 443, "protocol": "TCP"}, {"containerPort": 80, "name": "http"}],
                    "env": [{"name": "MODE", "value": "debug"}]
                }]}}),
                {
                    let mut expected = demo_pod();
                    expected["spec"]["containers"][0]["ports"] = json!([
                        {"containerPort": 443, "protocol": "TCP"},
                        {"containerPort": 80, "protocol": "TCP", "name": "http"}
                    ]);
                    expected["spec"]["containers"][0]["env"] = json!([{"name": "MODE", "value": "debug"}]);
                    expected
                },
            ),
            (
                "finalizers merge as a set",
                "Pod",
                pod.clone(),
                json!({"metadata": {"finalizers": ["example.com/b", "example.com/c"]}}),
                with(
                    "/metadata/finalizers",
                    json!(["example.com/a", "example.com/b", "example.com/c"]),
                ),
            ),
            (
                "$deleteFromPrimitiveList/finalizers",
                "Pod",
                pod.clone(),
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["example.com/a"]}}),
                with("/metadata/finalizers", json!(["example.com/b"])),
            ),
            (
                "$setElementOrder on primitives with a deletion",
                "Pod",
                with("/metadata/finalizers", json!(["a", "b", "c"])),
                json!({"metadata": {
                    "$setElementOrder/finalizers": ["c", "a"],
                    "$deleteFromPrimitiveList/finalizers": ["b"]
                }}),
                with("/metadata/finalizers", json!(["c", "a"])),
            ),
            (
                "new container carrying directives of its own",
                "Pod",
                pod.clone(),
                json!({"spec": {"containers": [{
                    "name": "sidecar", "image": "redis",
                    "env": [{"$patch": "replace"}, {"name": "A", "value": "1"}],
                    "resources": {"$patch": "replace", "limits": {"cpu": "1"}}
                }]}}),
                with(
                    "/spec/containers",
                    json!([
                        {"name": "sidecar", "image": "redis", "env": [{"name": "A", "value": "1"}], "resources": {"limits": {"cpu": "1"}}},
                        demo_pod()["spec"]["containers"][0].clone()
                    ]),
                ),
            ),
            (
                "volumes merge by name and honour $retainKeys (kubectl's shape)",
                "Pod",
                with("/spec/volumes", json!([{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}])),
                json!({"spec": {
                    "$setElementOrder/volumes": [{"name": "data"}, {"name": "tmp"}],
                    "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "data"}]
                }}),
                with(
                    "/spec/volumes",
                    json!([{"name": "data", "configMap": {"name": "cfg"}}, {"name": "tmp", "emptyDir": {}}]),
                ),
            ),
        ]);
    }

    #[test]
    fn strategic_merge_patch_list_order() {
        let containers = |names: &[&str]| -> Value {
            Value::Array(
                names
                    .iter()
                    .map(|name| json!({"name": name, "image": "busybox"}))
                    .collect(),
            )
        };
        let pod = |names: &[&str]| json!({"spec": {"containers": containers(names)}});
        check_smp(vec![
            (
                // Kubernetes' "preserve the order from the patch in a merging list 2".
                "patch order wins, server-only items keep their place",
                "Pod",
                pod(&["a", "b", "c"]),
                json!({"spec": {"containers": [{"name": "c", "image": "c"}, {"name": "a", "image": "a"}]}}),
                json!({"spec": {"containers": [
                    {"name": "b", "image": "busybox"},
                    {"name": "c", "image": "c"},
                    {"name": "a", "image": "a"}
                ]}}),
            ),
            (
                "$setElementOrder alone reorders",
                "Pod",
                pod(&["a", "b"]),
                json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
                pod(&["b", "a"]),
            ),
            (
                "$setElementOrder places a new item",
                "Pod",
                pod(&["a", "c"]),
                json!({"spec": {
                    "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
                    "containers": [{"name": "b", "image": "busybox"}]
                }}),
                pod(&["a", "b", "c"]),
            ),
        ]);
    }

    #[test]
    fn strategic_merge_patch_other_kinds() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "patch-demo"},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"spec": {"containers": [{"name": "patch-demo-ctr", "image": "nginx"}]}}
            }
        });
        let with = |pointer: &str, value: Value| set_at(deployment.clone(), pointer, value);
        let service = json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]}
        });
        let node = json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "node-1"}],
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]
            }
        });
        check_smp(vec![
            (
                // kubectl patch docs: patch-file-containers.yaml on a Deployment.
                "pod template containers merge by name",
                "Deployment",
                deployment.clone(),
                json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}}),
                with(
                    "/spec/template/spec/containers",
                    json!([{"name": "patch-demo-ctr-2", "image": "redis"}, {"name": "patch-demo-ctr", "image": "nginx"}]),
                ),
            ),
            (
                // kubectl patch docs: the retainKeys strategy.
                "$retainKeys drops rollingUpdate when switching to Recreate",
                "Deployment",
                deployment.clone(),
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
                with("/spec/strategy", json!({"type": "Recreate"})),
            ),
            (
                "service ports merge by port",
                "Service",
                service.clone(),
                json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}, {"port": 80, "targetPort": 9090}]}}),
                {
                    let mut expected = service.clone();
                    expected["spec"]["ports"] = json!([
                        {"port": 443, "targetPort": 8443},
                        {"port": 80, "protocol": "TCP", "targetPort": 9090, "nodePort": 30080}
                    ]);
                    expected
                },
            ),
            (
                "node status: conditions and addresses merge by type",
                "Node",
                node.clone(),
                json!({"status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]
                }}),
                {
                    let mut expected = node.clone();
                    expected["status"]["conditions"] =
                        json!([{"type": "Ready", "status": "True", "reason": "KubeletReady"}]);
                    expected["status"]["addresses"][0]["address"] = json!("10.0.0.2");
                    expected
                },
            ),
            (
                "ownerReferences merge by uid",
                "ReplicaSet",
                json!({"metadata": {"ownerReferences": [{"uid": "u1", "kind": "Deployment", "name": "a"}]}}),
                json!({"metadata": {"ownerReferences": [{"uid": "u1", "controller": true}, {"uid": "u2", "kind": "Deployment", "name": "b"}]}}),
                json!({"metadata": {"ownerReferences": [
                    {"uid": "u1", "kind": "Deployment", "name": "a", "controller": true},
                    {"uid": "u2", "kind": "Deployment", "name": "b"}
                ]}}),
            ),
            (
                // Items new to the live list go ahead of the live-only ones, as Kubernetes'
                // `mergeSortedSlice` does when no $setElementOrder says otherwise.
                "unknown kind: lists replaced, metadata rules still hold",
                "Widget",
                json!({"metadata": {"finalizers": ["a"]}, "spec": {"items": [{"name": "a", "size": 1}]}}),
                json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "b"}]}}),
                json!({"metadata": {"finalizers": ["b", "a"]}, "spec": {"items": [{"name": "b"}]}}),
            ),
        ]);
    }

    #[test]
    fn strategic_merge_patch_errors() {
        let cases = [
            ("patch is a list", json!([{"op": "add"}]), "malformed patch"),
            (
                "$retainKeys misses a patched field",
                json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}),
                "invalid strategic merge patch: field rollingUpdate is in the patch but not in its $retainKeys list",
            ),
            (
                "unknown $patch value",
                json!({"spec": {"strategy": {"$patch": "explode"}}}),
                "invalid strategic merge patch: unknown $patch directive \"explode\"",
            ),
            (
                "unknown directive",
                json!({"spec": {"$frobnicate": 1}}),
                "invalid strategic merge patch: unknown directive $frobnicate",
            ),
            (
                "container without its merge key",
                json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx"}]}}}}),
                "invalid strategic merge patch: a list item does not contain its merge key \"name\"",
            ),
            (
                "patch list out of $setElementOrder's order",
                json!({"spec": {"template": {"spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]
                }}}}),
                "invalid strategic merge patch: the order of the patch list does not match its $setElementOrder list",
            ),
            (
                "mixed element types",
                json!({"metadata": {"finalizers": ["a", {"b": 1}]}}),
                "invalid strategic merge patch: list element types are not identical",
            ),
        ];
        let deployment = json!({
            "kind": "Deployment",
            "metadata": {"finalizers": ["x"]},
            "spec": {"strategy": {"type": "RollingUpdate"}, "template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}
        });
        for (name, patch, message) in cases {
            let error = strategic_merge_patch("Deployment", &deployment, &patch).expect_err(name);
            assert_eq!(error.kind(), ErrorKind::BadRequest, "{name}");
            assert!(error.to_string().starts_with(message), "{name}: {error}");
        }
    }

    // -- Server-Side Apply ------------------------------------------------------------------------

    const T1: &str = "2026-11-27T16:11:25Z";
    const T2: &str = "2026-11-27T16:20:00Z";
    const T3: &str = "2026-11-27T16:30:00Z";

    fn entries(object: &Value) -> Vec<Value> {
        object["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(object: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
        object["metadata"]["managedFields"]
            .as_array()?
            .iter()
            .find(|entry| entry["manager"] == manager && entry["operation"] == operation)
    }

    fn apply_pod(labels: Value, image: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "demo", "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}]}
        })
    }

    #[test]
    fn apply_creates_with_fields_v1() {
        let applied = apply_pod(json!({"app": "demo"}), "nginx:1.27");
        let created = server_side_apply("Pod", "kubectl", None, &applied, false, T1).unwrap();
        let mut expected = applied.clone();
        expected["metadata"]["managedFields"] = json!([{
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "v1",
            "time": T1,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"nginx\"}": {
                    ".": {}, "f:image": {}, "f:name": {},
                    "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                }}}
            }
        }]);
        assert_eq!(created, expected);
    }

    #[test]
    fn apply_ignores_status_server_metadata_and_nulls() {
        let mut applied = apply_pod(json!({"app": "demo"}), "nginx:1.27");
        applied["status"] = json!({"phase": "Running"});
        applied["metadata"]["resourceVersion"] = json!("42");
        applied["metadata"]["uid"] = json!("u-1");
        applied["metadata"]["managedFields"] = json!([{"manager": "forged", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {}}]);
        applied["metadata"]["annotations"] = json!({"note": null});
        let created = server_side_apply("Pod", "kubectl", None, &applied, false, T1).unwrap();
        assert!(created.get("status").is_none(), "status applied: {created}");
        for key in ["resourceVersion", "uid", "annotations"] {
            assert!(
                created["metadata"].get(key).is_none(),
                "{key} kept: {created}"
            );
        }
        assert_eq!(entries(&created).len(), 1);
        assert_eq!(entries(&created)[0]["manager"], "kubectl");
    }

    #[test]
    fn apply_again_without_a_label_removes_it() {
        let first = apply_pod(json!({"app": "demo", "tier": "web"}), "nginx:1.27");
        let live = server_side_apply("Pod", "kubectl", None, &first, false, T1).unwrap();
        let second = apply_pod(json!({"app": "demo"}), "nginx:1.28");
        let applied = server_side_apply("Pod", "kubectl", Some(&live), &second, false, T2).unwrap();
        assert_eq!(applied["metadata"]["labels"], json!({"app": "demo"}));
        assert_eq!(applied["spec"]["containers"][0]["image"], "nginx:1.28");
        let mine = entry(&applied, "kubectl", "Apply").unwrap();
        assert_eq!(mine["time"], T2);
        assert_eq!(
            mine["fieldsV1"]["f:metadata"],
            json!({"f:labels": {"f:app": {}}})
        );
    }

    #[test]
    fn apply_without_a_container_removes_it_but_keeps_others_fields() {
        let mut first = apply_pod(json!({"app": "demo"}), "nginx:1.27");
        first["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "sidecar", "image": "redis"}));
        let live = server_side_apply("Pod", "kubectl", None, &first, false, T1).unwrap();
        // Another manager co-owns the `tier` label by applying the same value.
        let labels = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo", "labels": {"app": "demo"}}});
        let live = server_side_apply("Pod", "labeller", Some(&live), &labels, false, T2).unwrap();
        let second = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo"},
            "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
        });
        let applied = server_side_apply("Pod", "kubectl", Some(&live), &second, false, T3).unwrap();
        let names: Vec<&Value> = applied["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| &c["name"])
            .collect();
        assert_eq!(names, [&json!("nginx")], "sidecar should be pruned");
        assert_eq!(
            applied["metadata"]["labels"],
            json!({"app": "demo"}),
            "label co-owned by labeller stays"
        );
    }

    #[test]
    fn unchanged_apply_is_a_no_op() {
        let applied = apply_pod(json!({"app": "demo"}), "nginx:1.27");
        let live = server_side_apply("Pod", "kubectl", None, &applied, false, T1).unwrap();
        let again = server_side_apply("Pod", "kubectl", Some(&live), &applied, false, T2).unwrap();
        assert_eq!(
            again, live,
            "an unchanged apply must not even move the time"
        );
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "nginx", "image": image}]}
                }
            }
        })
    }

    #[test]
    fn apply_conflicts_with_an_updater() {
        let created = update_managed_fields(
            "kubectl-client-side-apply",
            "Update",
            None,
            deployment(3, "nginx:1.27"),
            T1,
        );
        let cases = [
            (
                "one conflict",
                deployment(5, "nginx:1.27"),
                "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas",
                vec![(r#""kubectl-client-side-apply" using apps/v1"#, ".spec.replicas")],
            ),
            (
                "two conflicts",
                deployment(5, "nginx:1.28"),
                "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n\
                 - .spec.replicas\n\
                 - .spec.template.spec.containers[name=\"nginx\"].image",
                vec![
                    (r#""kubectl-client-side-apply" using apps/v1"#, ".spec.replicas"),
                    (r#""kubectl-client-side-apply" using apps/v1"#, r#".spec.template.spec.containers[name="nginx"].image"#),
                ],
            ),
        ];
        for (name, applied, message, expected) in cases {
            let error =
                server_side_apply("Deployment", "kubectl", Some(&created), &applied, false, T2)
                    .expect_err(name);
            assert_eq!(error.kind(), ErrorKind::Conflict, "{name}");
            assert_eq!(error.to_string(), message, "{name}");
            let ApplyError::Conflict { conflicts, .. } = error else {
                panic!("{name}: not a conflict");
            };
            let got: Vec<(&str, &str)> = conflicts
                .iter()
                .map(|c| (c.manager.as_str(), c.field.as_str()))
                .collect();
            assert_eq!(got, expected, "{name}");
        }

        // The same values are no conflict: both managers own them.
        let shared = server_side_apply(
            "Deployment",
            "kubectl",
            Some(&created),
            &deployment(3, "nginx:1.27"),
            false,
            T2,
        )
        .unwrap();
        assert_eq!(shared["spec"]["replicas"], 3);
        let updater = entry(&shared, "kubectl-client-side-apply", "Update").unwrap();
        let applier = entry(&shared, "kubectl", "Apply").unwrap();
        assert_eq!(updater["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
        assert_eq!(applier["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
    }

    #[test]
    fn forced_apply_takes_ownership() {
        let created = update_managed_fields(
            "kubectl-client-side-apply",
            "Update",
            None,
            deployment(3, "nginx:1.27"),
            T1,
        );
        let forced = server_side_apply(
            "Deployment",
            "kubectl",
            Some(&created),
            &deployment(5, "nginx:1.27"),
            true,
            T2,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        let updater = entry(&forced, "kubectl-client-side-apply", "Update").unwrap();
        let applier = entry(&forced, "kubectl", "Apply").unwrap();
        assert!(
            updater["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
            "updater still owns replicas: {updater}"
        );
        assert_eq!(updater["time"], T1, "the updater's entry keeps its time");
        assert_eq!(applier["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            applier["fieldsV1"]["f:spec"]["f:selector"],
            json!({}),
            "selector is atomic"
        );
        // Apply entries sort before Update entries.
        let operations: Vec<Value> = entries(&forced)
            .iter()
            .map(|e| e["operation"].clone())
            .collect();
        assert_eq!(operations, [json!("Apply"), json!("Update")]);

        // Once it owns replicas, a later apply without it removes the field.
        let mut without = deployment(5, "nginx:1.27");
        without["spec"].as_object_mut().unwrap().remove("replicas");
        let pruned =
            server_side_apply("Deployment", "kubectl", Some(&forced), &without, false, T3).unwrap();
        assert!(
            pruned["spec"].get("replicas").is_none(),
            "replicas kept: {pruned}"
        );
    }

    #[test]
    fn apply_rejects_bad_requests() {
        let good = apply_pod(json!({"app": "demo"}), "nginx");
        let mut missing_key = good.clone();
        missing_key["spec"]["containers"] = json!([{"image": "nginx"}]);
        let mut duplicate = good.clone();
        duplicate["spec"]["containers"] = json!([{"name": "a"}, {"name": "a"}]);
        let cases = [
            ("no manager", "", json!(good.clone()), ErrorKind::BadRequest),
            (
                "not an object",
                "kubectl",
                json!("pod"),
                ErrorKind::BadRequest,
            ),
            (
                "no apiVersion",
                "kubectl",
                json!({"kind": "Pod"}),
                ErrorKind::BadRequest,
            ),
            (
                "no kind",
                "kubectl",
                json!({"apiVersion": "v1"}),
                ErrorKind::BadRequest,
            ),
            (
                "wrong kind",
                "kubectl",
                json!({"apiVersion": "v1", "kind": "Service"}),
                ErrorKind::BadRequest,
            ),
            (
                "container without name",
                "kubectl",
                missing_key,
                ErrorKind::Invalid,
            ),
            (
                "duplicate container names",
                "kubectl",
                duplicate,
                ErrorKind::Invalid,
            ),
        ];
        for (name, manager, applied, kind) in cases {
            let error =
                server_side_apply("Pod", manager, None, &applied, false, T1).expect_err(name);
            assert_eq!(error.kind(), kind, "{name}: {error}");
        }
    }

    // -- Update bookkeeping -----------------------------------------------------------------------

    #[test]
    fn update_moves_changed_fields_to_the_writer() {
        let created = update_managed_fields(
            "kubectl-create",
            "Update",
            None,
            deployment(1, "nginx:1.27"),
            T1,
        );
        let create_entry = entry(&created, "kubectl-create", "Update").unwrap();
        assert_eq!(create_entry["time"], T1);
        assert_eq!(create_entry["apiVersion"], "apps/v1");
        assert_eq!(
            create_entry["fieldsV1"]["f:metadata"],
            json!({"f:labels": {".": {}, "f:app": {}}})
        );
        assert_eq!(
            create_entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
                ["k:{\"name\":\"nginx\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );

        // `kubectl scale`: the controller-manager-like writer takes replicas.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(4);
        let scaled = update_managed_fields("kubectl", "Update", Some(&created), scaled, T2);
        assert_eq!(scaled["spec"]["replicas"], 4);
        let creator = entry(&scaled, "kubectl-create", "Update").unwrap();
        let scaler = entry(&scaled, "kubectl", "Update").unwrap();
        assert!(creator["fieldsV1"]["f:spec"].get("f:replicas").is_none());
        assert_eq!(creator["time"], T1);
        assert_eq!(scaler["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));

        // A write that changes nothing changes no entry.
        let same = update_managed_fields("someone", "Update", Some(&scaled), scaled.clone(), T3);
        assert_eq!(same, scaled);

        // A removed label leaves its owner's entry; an entry left empty goes.
        let mut unlabelled = scaled.clone();
        unlabelled["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        let unlabelled =
            update_managed_fields("kubectl-label", "Update", Some(&scaled), unlabelled, T3);
        let creator = entry(&unlabelled, "kubectl-create", "Update").unwrap();
        assert!(creator["fieldsV1"].get("f:metadata").is_none(), "{creator}");
        assert!(
            entry(&unlabelled, "kubectl-label", "Update").is_none(),
            "a pure removal owns nothing"
        );
    }

    #[test]
    fn update_entries_are_capped() {
        let mut object = update_managed_fields(
            "m0",
            "Update",
            None,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k0": "v"}}),
            T1,
        );
        for i in 1..=UPDATE_MANAGERS_MAX + 2 {
            let mut next = object.clone();
            next["data"][format!("k{i}")] = json!("v");
            let time = format!("2026-11-27T17:{i:02}:00Z");
            object = update_managed_fields(&format!("m{i}"), "Update", Some(&object), next, &time);
        }
        let managers: Vec<String> = entries(&object)
            .iter()
            .map(|e| e["manager"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(managers.len(), UPDATE_MANAGERS_MAX, "{managers:?}");
        assert_eq!(managers[0], ANCIENT_CHANGES_MANAGER, "{managers:?}");
        let bucket = &entries(&object)[0]["fieldsV1"]["f:data"];
        for owned in ["f:k0", "f:k1", "f:k2", "f:k3"] {
            assert!(bucket.get(owned).is_some(), "{owned} missing from {bucket}");
        }
    }

    fn labels() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[a-d]{1,2}", "[a-z]{0,2}", 0..6)
    }

    proptest::proptest! {
        /// Whatever labels a manager applied before, re-applying leaves exactly the new ones.
        #[test]
        fn reapply_leaves_exactly_the_applied_labels(first in labels(), second in labels()) {
            let pod = |labels: &BTreeMap<String, String>| {
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels}})
            };
            let live = server_side_apply("Pod", "m", None, &pod(&first), false, T1).unwrap();
            let next = server_side_apply("Pod", "m", Some(&live), &pod(&second), false, T2).unwrap();
            let got = next["metadata"].get("labels").cloned().unwrap_or_else(|| json!({}));
            proptest::prop_assert_eq!(got, json!(second));
        }

        /// Without lists, a strategic merge patch is a merge patch.
        #[test]
        fn strategic_merge_patch_of_maps_is_a_merge_patch(
            target in labels(),
            patch in proptest::collection::btree_map("[a-d]{1,2}", proptest::option::of("[a-z]{0,2}"), 0..6),
        ) {
            let target = json!({"metadata": {"labels": target}});
            let patch = json!({"metadata": {"labels": patch}});
            proptest::prop_assert_eq!(
                strategic_merge_patch("Pod", &target, &patch).unwrap(),
                merge_patch(&target, &patch).unwrap()
            );
        }
    }

    #[test]
    fn field_sets_round_trip_and_print() {
        let fields_v1 = json!({
            "f:metadata": {"f:finalizers": {".": {}, "v:\"example.com/a\"": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:targetPort": {}}}}
        });
        let set = FieldSet::from_fields_v1(&fields_v1).unwrap();
        assert_eq!(set.to_fields_v1(), fields_v1);
        let printed: Vec<String> = set.paths().iter().map(|path| display_path(path)).collect();
        assert_eq!(
            printed,
            [
                ".metadata.finalizers",
                ".metadata.finalizers[=\"example.com/a\"]",
                ".spec.ports[port=80,protocol=\"TCP\"]",
                ".spec.ports[port=80,protocol=\"TCP\"].targetPort",
            ]
        );
        assert!(FieldSet::from_fields_v1(&json!(["not", "fields"])).is_none());
    }
}
