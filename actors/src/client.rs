//! The in-process API client the scheduler and controllers write through: every call goes
//! through the same handler as an HTTPS request (authentication, validation, defaulting,
//! admission, resourceVersion checks, forwarding to the store leader), never to the store
//! directly.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use keelson_api::resources::Resource;
use keelson_api::status::StatusError;
use serde_json::Value;

use crate::apiserver::{handler_serve, ApiRequestParts, ApiState};

/// The largest reply body read back from the handler.
const REPLY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Calls the API of this master as its administrator.
#[derive(Clone)]
pub struct ApiClient {
    state: ApiState,
    /// The component named in Events and logs (`scheduler`, `replicaset-controller`).
    component: &'static str,
    /// For the control loops: writes are refused once the leadership may have passed on.
    fence: Option<LeaseFence>,
}

/// Until when this master may write as the leader, on the monotonic clock: a loop resumed
/// after a pause longer than the renew deadline (a stopped process, a stalled VM) has its
/// writes refused before the election loop has even noticed, because the clock kept running.
#[derive(Clone)]
pub struct LeaseFence {
    origin: std::time::Instant,
    valid_until_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LeaseFence {
    /// A fence that refuses everything until [`LeaseFence::extend`].
    pub fn new() -> Self {
        LeaseFence {
            origin: std::time::Instant::now(),
            valid_until_ms: std::sync::Arc::default(),
        }
    }

    /// Allows writes until `until`.
    pub fn extend(&self, until: std::time::Instant) {
        let ms = until.saturating_duration_since(self.origin).as_millis() as u64;
        self.valid_until_ms
            .store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Refuses writes from now on.
    pub fn revoke(&self) {
        self.valid_until_ms
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_valid(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64;
        now < self
            .valid_until_ms
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Default for LeaseFence {
    fn default() -> Self {
        Self::new()
    }
}

/// The URL path of one object, or of a collection when `name` is `None`.
pub fn object_path(resource: &Resource, namespace: Option<&str>, name: Option<&str>) -> String {
    let collection = resource.collection_path(namespace);
    match name {
        Some(name) => format!("{collection}/{name}"),
        None => collection,
    }
}

impl ApiClient {
    pub(crate) fn new(state: ApiState, component: &'static str) -> Self {
        ApiClient {
            state,
            component,
            fence: None,
        }
    }

    /// The same client under another component name.
    pub fn for_component(&self, component: &'static str) -> Self {
        ApiClient {
            component,
            ..self.clone()
        }
    }

    /// The same client, writing only while `fence` is valid.
    pub fn fenced(&self, fence: LeaseFence) -> Self {
        ApiClient {
            fence: Some(fence),
            ..self.clone()
        }
    }

    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The parsed recent changes this master's watches share (informers share them too).
    pub(crate) fn decoded(&self) -> std::sync::Arc<crate::apiserver::decoded::Decoded> {
        self.state.decoded.clone()
    }

    /// The store this master serves (informers read it; writes never go there directly).
    pub(crate) fn store(&self) -> &keelson_raft::Store {
        self.state.storage.store()
    }

    /// The cluster CA's certificate (PEM).
    pub fn ca_cert_pem(&self) -> &str {
        &self.state.ca_cert_pem
    }

    /// This master's name.
    pub fn master_name(&self) -> &str {
        &self.state.name
    }

    /// Whether this master's store member leads the store (its API commits writes itself).
    pub fn leads_store(&self) -> bool {
        self.state.storage.store().is_leader()
    }

    /// Sends one request; a reply outside 2xx becomes the `Status` error it carries.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: Option<&str>,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, StatusError> {
        if method != Method::GET && self.fence.as_ref().is_some_and(|f| !f.is_valid()) {
            return Err(StatusError::service_unavailable(
                "this master no longer holds the controller Lease; its control loops are stopping",
                Some(1),
            ));
        }
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", self.state.admin_token);
        let value = HeaderValue::from_str(&bearer)
            .map_err(|_| StatusError::internal("the admin token is not a valid header"))?;
        headers.insert(http::header::AUTHORIZATION, value);
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(http::header::CONTENT_TYPE, value);
        }
        if let Ok(value) = HeaderValue::from_str(&format!("keelson/{}", self.component)) {
            headers.insert(http::header::USER_AGENT, value);
        }
        let body = match body {
            Some(value) => Bytes::from(
                serde_json::to_vec(value)
                    .map_err(|e| StatusError::internal(&format!("cannot encode: {e}")))?,
            ),
            None => Bytes::new(),
        };
        let parts = ApiRequestParts {
            method,
            path: path.to_string(),
            query: query.map(str::to_string),
            headers,
            body,
        };
        let response = handler_serve(&self.state, parts).await?;
        let status = response.status();
        let collected = http_body_util::Limited::new(response.into_body(), REPLY_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| StatusError::internal(&format!("cannot read the reply: {e}")))?
            .to_bytes();
        let value: Value = if collected.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&collected).map_err(|e| {
                StatusError::internal(&format!("the reply to {path} is not JSON: {e}"))
            })?
        };
        if status.is_success() {
            Ok(value)
        } else {
            Err(StatusError::from_value(&value).unwrap_or_else(|| {
                StatusError::new(
                    status.as_u16(),
                    "Unknown",
                    format!("{path} answered {status} without a Status"),
                )
            }))
        }
    }

    pub async fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, StatusError> {
        let path = object_path(resource, namespace, Some(name));
        self.request(Method::GET, &path, None, "application/json", None)
            .await
    }

    /// Lists a collection (up to the API's page size) with an optional label selector.
    pub async fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Vec<Value>, StatusError> {
        let path = object_path(resource, namespace, None);
        let query = label_selector.map(|s| {
            form_urlencoded::Serializer::new(String::new())
                .append_pair("labelSelector", s)
                .finish()
        });
        let list = self
            .request(
                Method::GET,
                &path,
                query.as_deref(),
                "application/json",
                None,
            )
            .await?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    pub async fn create(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        object: &Value,
    ) -> Result<Value, StatusError> {
        let path = object_path(resource, namespace, None);
        self.request(Method::POST, &path, None, "application/json", Some(object))
            .await
    }

    /// Replaces an object; the body's resourceVersion makes it a compare-and-swap.
    pub async fn update(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, StatusError> {
        let path = object_path(resource, namespace, Some(name));
        self.request(Method::PUT, &path, None, "application/json", Some(object))
            .await
    }

    /// Replaces an object's status; the body's resourceVersion makes it a compare-and-swap.
    pub async fn update_status(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        object: &Value,
    ) -> Result<Value, StatusError> {
        let path = format!("{}/status", object_path(resource, namespace, Some(name)));
        self.request(Method::PUT, &path, None, "application/json", Some(object))
            .await
    }

    /// A JSON merge patch (RFC 7386) of an object or, with `subresource`, of its status.
    pub async fn merge_patch(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        subresource: Option<&str>,
        patch: &Value,
    ) -> Result<Value, StatusError> {
        let mut path = object_path(resource, namespace, Some(name));
        if let Some(sub) = subresource {
            path = format!("{path}/{sub}");
        }
        self.request(
            Method::PATCH,
            &path,
            None,
            "application/merge-patch+json",
            Some(patch),
        )
        .await
    }

    /// Deletes an object; `propagation` is `Background`, `Foreground` or `Orphan`, and
    /// `preconditions_uid` refuses to delete a newer object of the same name.
    pub async fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, StatusError> {
        let path = object_path(resource, namespace, Some(name));
        let mut body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(policy) = options.propagation {
            body["propagationPolicy"] = Value::String(policy.to_string());
        }
        if let Some(grace) = options.grace_period_seconds {
            body["gracePeriodSeconds"] = Value::from(grace);
        }
        if let Some(uid) = &options.precondition_uid {
            body["preconditions"] = serde_json::json!({"uid": uid});
        }
        self.request(Method::DELETE, &path, None, "application/json", Some(&body))
            .await
    }

    /// Binds a pod to a node through the `binding` subresource.
    pub async fn bind(
        &self,
        namespace: &str,
        pod: &str,
        pod_uid: Option<&str>,
        node: &str,
    ) -> Result<(), StatusError> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}/binding");
        let mut binding = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        if let Some(uid) = pod_uid {
            binding["metadata"]["uid"] = Value::String(uid.to_string());
        }
        self.request(
            Method::POST,
            &path,
            None,
            "application/json",
            Some(&binding),
        )
        .await
        .map(|_| ())
    }
}

/// How to delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<&'static str>,
    pub grace_period_seconds: Option<i64>,
    pub precondition_uid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_fence_allows_writes_only_until_its_deadline() {
        let fence = LeaseFence::new();
        assert!(!fence.is_valid(), "a new fence refuses");
        fence.extend(Instant::now() + Duration::from_millis(50));
        assert!(fence.is_valid());
        std::thread::sleep(Duration::from_millis(60));
        assert!(!fence.is_valid(), "the deadline passed");
        fence.extend(Instant::now() + Duration::from_secs(5));
        fence.revoke();
        assert!(!fence.is_valid(), "revoked");
    }
}
