//! The Kubernetes `Status` error: what every failed API request answers, with Kubernetes'
//! exact codes, reasons and messages, and the field-level causes of a 422 Invalid.

use std::fmt;

use serde_json::{json, Map, Value};

/// The tail of a 409 Conflict on a stale resourceVersion, as Kubernetes writes it.
pub const CONFLICT_MODIFIED: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

/// A failed API request, as the `Status` object Kubernetes answers.
///
/// Deliberately not `Serialize`: [`StatusError::to_value`] builds the JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusError {
    code: u16,
    reason: String,
    message: String,
    details: Option<Box<Details>>,
}

/// `status.details`: which object the error is about, why, and when to retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// The object's name, when the error is about one object.
    pub name: String,
    /// The API group ("" for core).
    pub group: String,
    /// The kind (Invalid) or the plural resource (NotFound, AlreadyExists, Conflict).
    pub kind: String,
    /// The object's uid, when known.
    pub uid: String,
    /// Field-level causes.
    pub causes: Vec<Cause>,
    /// When the client may retry.
    pub retry_after_seconds: Option<u32>,
}

/// One field-level cause of an error (`status.details.causes[]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// The cause type, e.g. `FieldValueRequired`.
    pub reason: String,
    /// The message without the field, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

/// Quotes a string as Go's `%q` does (close enough for the printable strings we meet).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Renders a bad value as Kubernetes' field errors do: strings quoted, numbers and booleans
/// bare, anything else as compact JSON.
fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => go_quote(s),
        Value::Null => "null".to_owned(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        other => other.to_string(),
    }
}

impl Cause {
    fn new(reason: &str, field: &str, message: String) -> Self {
        Self {
            reason: reason.to_owned(),
            message,
            field: field.to_owned(),
        }
    }

    fn with_detail(head: String, detail: &str) -> String {
        if detail.is_empty() {
            head
        } else {
            format!("{head}: {detail}")
        }
    }

    /// `FieldValueRequired`: `Required value[: detail]`.
    pub fn required(field: &str, detail: &str) -> Self {
        Self::new(
            "FieldValueRequired",
            field,
            Self::with_detail("Required value".to_owned(), detail),
        )
    }

    /// `FieldValueInvalid`: `Invalid value: "x": detail`.
    pub fn invalid(field: &str, value: impl Into<Value>, detail: &str) -> Self {
        let head = format!("Invalid value: {}", render_value(&value.into()));
        Self::new("FieldValueInvalid", field, Self::with_detail(head, detail))
    }

    /// `FieldValueNotSupported`: `Unsupported value: "x": supported values: "a", "b"`.
    pub fn not_supported(field: &str, value: impl Into<Value>, supported: &[&str]) -> Self {
        let head = format!("Unsupported value: {}", render_value(&value.into()));
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(
            "FieldValueNotSupported",
            field,
            Self::with_detail(head, &detail),
        )
    }

    /// `FieldValueDuplicate`: `Duplicate value: "x"`.
    pub fn duplicate(field: &str, value: impl Into<Value>) -> Self {
        let message = format!("Duplicate value: {}", render_value(&value.into()));
        Self::new("FieldValueDuplicate", field, message)
    }

    /// `FieldValueNotFound`: `Not found: "x"`.
    pub fn not_found(field: &str, value: impl Into<Value>) -> Self {
        let message = format!("Not found: {}", render_value(&value.into()));
        Self::new("FieldValueNotFound", field, message)
    }

    /// `FieldValueForbidden`: `Forbidden: detail`.
    pub fn forbidden(field: &str, detail: &str) -> Self {
        Self::new(
            "FieldValueForbidden",
            field,
            Self::with_detail("Forbidden".to_owned(), detail),
        )
    }

    /// `FieldValueTooLong`: `Too long: may not be more than N bytes`.
    pub fn too_long(field: &str, max_bytes: usize) -> Self {
        let unit = if max_bytes == 1 { "byte" } else { "bytes" };
        let message = format!("Too long: may not be more than {max_bytes} {unit}");
        Self::new("FieldValueTooLong", field, message)
    }

    /// `FieldValueTooMany`: `Too many: N: must have at most M items`.
    pub fn too_many(field: &str, actual: usize, max_items: usize) -> Self {
        let message = format!("Too many: {actual}: must have at most {max_items} items");
        Self::new("FieldValueTooMany", field, message)
    }

    /// `FieldValueTypeInvalid`: `Invalid value: "x": detail`.
    pub fn type_invalid(field: &str, value: impl Into<Value>, detail: &str) -> Self {
        let head = format!("Invalid value: {}", render_value(&value.into()));
        Self::new(
            "FieldValueTypeInvalid",
            field,
            Self::with_detail(head, detail),
        )
    }

    /// The cause as Kubernetes prints it in a message: `field: message`.
    pub fn to_text(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }

    fn to_value(&self) -> Value {
        let mut map = Map::new();
        if !self.reason.is_empty() {
            map.insert("reason".to_owned(), Value::from(self.reason.as_str()));
        }
        if !self.message.is_empty() {
            map.insert("message".to_owned(), Value::from(self.message.as_str()));
        }
        if !self.field.is_empty() {
            map.insert("field".to_owned(), Value::from(self.field.as_str()));
        }
        Value::Object(map)
    }

    fn from_value(value: &Value) -> Self {
        let text = |key: &str| {
            value
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            reason: text("reason"),
            message: text("message"),
            field: text("field"),
        }
    }
}

/// `group` + `resource` as Kubernetes' `GroupResource.String()`: `pods`, `deployments.apps`.
fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

impl StatusError {
    /// A status error with no details.
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    fn about(
        code: u16,
        reason: &str,
        message: String,
        group: &str,
        kind: &str,
        name: &str,
    ) -> Self {
        let details = Details {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
            ..Details::default()
        };
        Self {
            code,
            reason: reason.to_owned(),
            message,
            details: Some(Box::new(details)),
        }
    }

    fn retry_after(mut self, seconds: Option<u32>) -> Self {
        if let Some(seconds) = seconds {
            self.details
                .get_or_insert_with(Box::default)
                .retry_after_seconds = Some(seconds);
        }
        self
    }

    /// 404 NotFound: `pods "x" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        let message = format!(
            "{} {} not found",
            group_resource(group, plural),
            go_quote(name)
        );
        Self::about(404, "NotFound", message, group, plural, name)
    }

    /// 409 AlreadyExists: `pods "x" already exists`.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        let message = format!(
            "{} {} already exists",
            group_resource(group, plural),
            go_quote(name)
        );
        Self::about(409, "AlreadyExists", message, group, plural, name)
    }

    /// 409 Conflict: `Operation cannot be fulfilled on pods "x": <why>`; the usual `why` is
    /// [`CONFLICT_MODIFIED`].
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {}: {why}",
            group_resource(group, plural),
            go_quote(name)
        );
        Self::about(409, "Conflict", message, group, plural, name)
    }

    /// 422 Invalid: `Pod "x" is invalid: <cause>` or `... is invalid: [<cause>, <cause>]`,
    /// with `details.causes`. Identical cause texts are printed once, as `ToAggregate` does.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let mut texts: Vec<String> = Vec::new();
        for cause in &causes {
            let text = cause.to_text();
            if !texts.contains(&text) {
                texts.push(text);
            }
        }
        let message = match texts.len() {
            0 => format!("{qualified_kind} {} is invalid", go_quote(name)),
            1 => format!(
                "{qualified_kind} {} is invalid: {}",
                go_quote(name),
                texts[0]
            ),
            _ => format!(
                "{qualified_kind} {} is invalid: [{}]",
                go_quote(name),
                texts.join(", ")
            ),
        };
        let mut error = Self::about(422, "Invalid", message, group, kind, name);
        if let Some(details) = error.details.as_mut() {
            details.causes = causes;
        }
        error
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized; an empty message becomes `not authorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let message = message.into();
        let message = if message.is_empty() {
            "not authorized".to_owned()
        } else {
            message
        };
        Self::new(401, "Unauthorized", message)
    }

    /// 403 Forbidden: `pods "x" is forbidden: why` (`pods is forbidden: why` without a name,
    /// `forbidden: why` without a resource).
    pub fn forbidden(group: &str, plural: &str, name: &str, why: &str) -> Self {
        let message = if plural.is_empty() {
            format!("forbidden: {why}")
        } else if name.is_empty() {
            format!("{} is forbidden: {why}", group_resource(group, plural))
        } else {
            format!(
                "{} {} is forbidden: {why}",
                group_resource(group, plural),
                go_quote(name)
            )
        };
        Self::about(403, "Forbidden", message, group, plural, name)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 410 Expired (a compacted resourceVersion or continue token).
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 410 Expired for a watch or list from a compacted revision:
    /// `too old resource version: X (Y)`.
    pub fn too_old_resource_version(requested: u64, oldest: u64) -> Self {
        Self::expired(format!("too old resource version: {requested} ({oldest})"))
    }

    /// 410 Gone.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Gone", message)
    }

    /// 413 RequestEntityTooLarge: `Request entity too large: msg`.
    pub fn request_entity_too_large(message: &str) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: {message}"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 429 TooManyRequests with an optional retry hint.
    pub fn too_many_requests(message: impl Into<String>, retry_after_seconds: Option<u32>) -> Self {
        Self::new(429, "TooManyRequests", message).retry_after(retry_after_seconds)
    }

    /// 500 InternalError: `Internal error occurred: msg`, the message also as a cause.
    pub fn internal(message: &str) -> Self {
        let mut error = Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        );
        error.details = Some(Box::new(Details {
            causes: vec![Cause {
                reason: String::new(),
                message: message.to_owned(),
                field: String::new(),
            }],
            ..Details::default()
        }));
        error
    }

    /// 503 ServiceUnavailable with an optional retry hint (e.g. no Raft leader yet).
    pub fn service_unavailable(
        message: impl Into<String>,
        retry_after_seconds: Option<u32>,
    ) -> Self {
        Self::new(503, "ServiceUnavailable", message).retry_after(retry_after_seconds)
    }

    /// 504 Timeout: `Timeout: msg`.
    pub fn timeout(message: &str) -> Self {
        Self::new(504, "Timeout", format!("Timeout: {message}"))
    }

    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The machine-readable reason, e.g. `NotFound`.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The details, if any.
    pub fn details(&self) -> Option<&Details> {
        self.details.as_deref()
    }

    /// The field-level causes (empty when there are none).
    pub fn causes(&self) -> &[Cause] {
        self.details
            .as_ref()
            .map(|d| d.causes.as_slice())
            .unwrap_or_default()
    }

    /// The full `Status` object a server answers.
    pub fn to_value(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if !self.reason.is_empty() {
            status["reason"] = Value::from(self.reason.as_str());
        }
        if let Some(details) = &self.details {
            let mut map = Map::new();
            for (key, value) in [
                ("name", &details.name),
                ("group", &details.group),
                ("kind", &details.kind),
                ("uid", &details.uid),
            ] {
                if !value.is_empty() {
                    map.insert(key.to_owned(), Value::from(value.as_str()));
                }
            }
            if !details.causes.is_empty() {
                let causes = details.causes.iter().map(Cause::to_value).collect();
                map.insert("causes".to_owned(), Value::Array(causes));
            }
            if let Some(seconds) = details.retry_after_seconds {
                map.insert("retryAfterSeconds".to_owned(), Value::from(seconds));
            }
            status["details"] = Value::Object(map);
        }
        status
    }

    /// Reads a `Status` object a server answered (`None` when `value` is not a failure
    /// `Status`).
    pub fn from_value(value: &Value) -> Option<Self> {
        if value.get("kind").and_then(Value::as_str) != Some("Status") {
            return None;
        }
        if value.get("status").and_then(Value::as_str) == Some("Success") {
            return None;
        }
        let code = value
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())?;
        let text = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let details = value.get("details").filter(|d| d.is_object()).map(|d| {
            Box::new(Details {
                name: text(d, "name"),
                group: text(d, "group"),
                kind: text(d, "kind"),
                uid: text(d, "uid"),
                causes: d
                    .get("causes")
                    .and_then(Value::as_array)
                    .map(|causes| causes.iter().map(Cause::from_value).collect())
                    .unwrap_or_default(),
                retry_after_seconds: d
                    .get("retryAfterSeconds")
                    .and_then(Value::as_u64)
                    .and_then(|s| u32::try_from(s).ok()),
            })
        });
        Some(Self {
            code,
            reason: text(value, "reason"),
            message: text(value, "message"),
            details,
        })
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StatusError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_use_kubernetes_codes_reasons_and_messages() {
        let cases: Vec<(StatusError, u16, &str, &str)> = vec![
            (StatusError::not_found("", "pods", "x"), 404, "NotFound", r#"pods "x" not found"#),
            (
                StatusError::not_found("apps", "deployments", "web"),
                404,
                "NotFound",
                r#"deployments.apps "web" not found"#,
            ),
            (
                StatusError::already_exists("", "pods", "x"),
                409,
                "AlreadyExists",
                r#"pods "x" already exists"#,
            ),
            (
                StatusError::conflict("", "pods", "x", CONFLICT_MODIFIED),
                409,
                "Conflict",
                "Operation cannot be fulfilled on pods \"x\": the object has been modified; please apply your changes to the latest version and try again",
            ),
            (StatusError::bad_request("bad"), 400, "BadRequest", "bad"),
            (StatusError::unauthorized(""), 401, "Unauthorized", "not authorized"),
            (
                StatusError::forbidden("", "pods", "x", "no"),
                403,
                "Forbidden",
                r#"pods "x" is forbidden: no"#,
            ),
            (StatusError::forbidden("", "pods", "", "no"), 403, "Forbidden", "pods is forbidden: no"),
            (StatusError::forbidden("", "", "", "no"), 403, "Forbidden", "forbidden: no"),
            (StatusError::method_not_allowed("m"), 405, "MethodNotAllowed", "m"),
            (StatusError::not_acceptable("n"), 406, "NotAcceptable", "n"),
            (StatusError::expired("e"), 410, "Expired", "e"),
            (
                StatusError::too_old_resource_version(5, 90),
                410,
                "Expired",
                "too old resource version: 5 (90)",
            ),
            (StatusError::gone("g"), 410, "Gone", "g"),
            (
                StatusError::request_entity_too_large("limit is 3145728"),
                413,
                "RequestEntityTooLarge",
                "Request entity too large: limit is 3145728",
            ),
            (StatusError::unsupported_media_type("u"), 415, "UnsupportedMediaType", "u"),
            (StatusError::too_many_requests("slow down", Some(1)), 429, "TooManyRequests", "slow down"),
            (StatusError::internal("boom"), 500, "InternalError", "Internal error occurred: boom"),
            (
                StatusError::service_unavailable("no leader", Some(2)),
                503,
                "ServiceUnavailable",
                "no leader",
            ),
            (StatusError::timeout("too slow"), 504, "Timeout", "Timeout: too slow"),
        ];
        for (error, code, reason, message) in cases {
            assert_eq!(error.code(), code, "{message}");
            assert_eq!(error.reason(), reason, "{message}");
            assert_eq!(error.message(), message);
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn cause_messages_match_kubernetes() {
        let cases = vec![
            (
                Cause::required("spec.containers", ""),
                "FieldValueRequired",
                "spec.containers: Required value",
            ),
            (
                Cause::required("metadata.name", "name or generateName is required"),
                "FieldValueRequired",
                "metadata.name: Required value: name or generateName is required",
            ),
            (
                Cause::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
                "FieldValueInvalid",
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                Cause::invalid("metadata.name", "A", "bad"),
                "FieldValueInvalid",
                r#"metadata.name: Invalid value: "A": bad"#,
            ),
            (
                Cause::not_supported(
                    "spec.restartPolicy",
                    "Sometimes",
                    &["Always", "OnFailure", "Never"],
                ),
                "FieldValueNotSupported",
                r#"spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never""#,
            ),
            (
                Cause::duplicate("spec.containers[1].name", "main"),
                "FieldValueDuplicate",
                r#"spec.containers[1].name: Duplicate value: "main""#,
            ),
            (
                Cause::forbidden("spec", "nope"),
                "FieldValueForbidden",
                "spec: Forbidden: nope",
            ),
            (
                Cause::too_long("metadata.annotations", 262144),
                "FieldValueTooLong",
                "metadata.annotations: Too long: may not be more than 262144 bytes",
            ),
            (
                Cause::type_invalid("spec.x", "s", "must be an integer"),
                "FieldValueTypeInvalid",
                r#"spec.x: Invalid value: "s": must be an integer"#,
            ),
            (
                Cause::not_found("spec.containers[0].volumeMounts[0].name", "data"),
                "FieldValueNotFound",
                r#"spec.containers[0].volumeMounts[0].name: Not found: "data""#,
            ),
        ];
        for (cause, reason, text) in cases {
            assert_eq!(cause.reason, reason);
            assert_eq!(cause.to_text(), text);
        }
    }

    #[test]
    fn invalid_aggregates_causes_like_kubernetes() {
        let one = StatusError::invalid(
            "",
            "Pod",
            "x",
            vec![Cause::required("spec.containers[0].image", "")],
        );
        assert_eq!(one.code(), 422);
        assert_eq!(one.reason(), "Invalid");
        assert_eq!(
            one.message(),
            r#"Pod "x" is invalid: spec.containers[0].image: Required value"#
        );

        let two = StatusError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                Cause::required("spec.selector", ""),
                Cause::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
                Cause::required("spec.selector", ""),
            ],
        );
        assert_eq!(
            two.message(),
            r#"Deployment.apps "web" is invalid: [spec.selector: Required value, spec.replicas: Invalid value: -1: must be greater than or equal to 0]"#
        );
        assert_eq!(two.causes().len(), 3);
        let value = two.to_value();
        assert_eq!(value["details"]["kind"], "Deployment");
        assert_eq!(value["details"]["group"], "apps");
        assert_eq!(
            value["details"]["causes"][0]["reason"],
            "FieldValueRequired"
        );
        assert_eq!(value["details"]["causes"][0]["message"], "Required value");
        assert_eq!(value["details"]["causes"][0]["field"], "spec.selector");
    }

    #[test]
    fn to_value_is_a_full_status_and_round_trips() {
        let error = StatusError::not_found("", "pods", "x");
        let value = error.to_value();
        assert_eq!(
            value,
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods \"x\" not found", "reason": "NotFound",
                "details": {"name": "x", "kind": "pods"}, "code": 404
            })
        );
        for error in [
            error,
            StatusError::service_unavailable("no leader", Some(3)),
            StatusError::invalid("", "Pod", "p", vec![Cause::required("spec.containers", "")]),
            StatusError::internal("boom"),
        ] {
            assert_eq!(
                StatusError::from_value(&error.to_value()),
                Some(error.clone())
            );
        }
        assert_eq!(
            StatusError::service_unavailable("x", Some(3)).to_value()["details"]
                ["retryAfterSeconds"],
            3
        );
        assert_eq!(StatusError::from_value(&json!({"kind": "Pod"})), None);
        assert_eq!(
            StatusError::from_value(&json!({"kind": "Status", "status": "Success", "code": 200})),
            None
        );
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
