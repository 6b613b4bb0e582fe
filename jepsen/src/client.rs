//! Clients of the system under test. A register client reads, writes and compare-and-sets
//! integer values under independent keys; every error says whether the operation certainly did
//! not happen (`Definite`) or may have (`Indefinite`), which decides between `fail` and `info`
//! in the history.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

/// Why an operation did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// It certainly did not take effect (refused before anything was written).
    #[error("{0}")]
    Definite(String),
    /// It may or may not have taken effect (a timeout, a dropped connection, a 5xx).
    #[error("{0}")]
    Indefinite(String),
}

/// A value with the version the store gave it (Keelson's resourceVersion, etcd's mod revision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: i64,
    pub version: String,
}

/// A register per key, as the linearizability checker models it.
#[async_trait::async_trait]
pub trait Register: Send + Sync {
    /// The member this client speaks to, for the history.
    fn node(&self) -> &str;
    /// The key's value and version; `None` when it does not exist.
    async fn read(&self, key: &str) -> Result<Option<Versioned>, ClientError>;
    /// Sets the key to `value`, creating it when absent.
    async fn write(&self, key: &str, value: i64) -> Result<(), ClientError>;
    /// Sets the key to `to` if its version is still `version`; `Ok(false)` when it was not.
    async fn cas(&self, key: &str, version: &str, to: i64) -> Result<bool, ClientError>;
}

/// The namespace every Jepsen object lives in.
pub const NAMESPACE: &str = "jepsen";

/// How long one watch request lasts before the client watches again.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTPS client for one Keelson master's API, with the admin kubeconfig's CA and token.
#[derive(Clone)]
pub struct Api {
    /// E.g. `https://10.101.1.2:6443`.
    pub base: String,
    /// The master's name, for the history.
    pub node: String,
    token: String,
    http: reqwest::Client,
}

/// One reply: the status code and the JSON body (`Null` when it was not JSON).
pub struct Reply {
    pub code: u16,
    pub body: Value,
}

impl Api {
    /// A client of `base` with the CA and token of the kubeconfig at `path`; every request
    /// gives up after `timeout`.
    pub fn from_kubeconfig(
        path: &Path,
        base: &str,
        node: &str,
        timeout: Duration,
    ) -> anyhow::Result<Api> {
        use base64::Engine;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read kubeconfig {}", path.display()))?;
        let config: Value = serde_norway::from_str(&text).context("parse kubeconfig")?;
        let ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .context("kubeconfig without certificate-authority-data")?;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .context("kubeconfig CA is not base64")?;
        let token = config["users"][0]["user"]["token"]
            .as_str()
            .context("kubeconfig without a token")?
            .to_string();
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).context("kubeconfig CA")?])
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .context("build HTTPS client")?;
        Ok(Api {
            base: base.to_string(),
            node: node.to_string(),
            token,
            http,
        })
    }

    /// Sends a request; a transport error (timeout, refused, reset) is the error.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        reply(request).await
    }

    /// Sends `body` with its content type (e.g. a merge patch).
    pub async fn send_with_type(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: &Value,
    ) -> Result<Reply, reqwest::Error> {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .body(body.to_string());
        reply(request).await
    }

    /// A GET whose body is read as a stream (a watch); the request gives up after
    /// [`WATCH_TIMEOUT`], and the watcher starts again from where it got to.
    pub async fn stream(&self, path: &str) -> Result<reqwest::Response, reqwest::Error> {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(WATCH_TIMEOUT)
            .send()
            .await
    }

    /// A request whose outcome matters: transport errors and 5xx are `Indefinite`; other
    /// non-2xx codes are returned for the caller to judge.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, ClientError> {
        let reply = self.send(method, path, body).await.map_err(|e| {
            // Without a connection the request was never sent.
            if e.is_connect() {
                ClientError::Definite(transport_error(&e))
            } else {
                ClientError::Indefinite(transport_error(&e))
            }
        })?;
        if reply.code >= 500 {
            return Err(ClientError::Indefinite(status_message(&reply)));
        }
        Ok(reply)
    }

    /// Makes sure the Jepsen namespace exists.
    pub async fn ensure_namespace(&self) -> Result<(), ClientError> {
        let body =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
        let reply = self
            .call(reqwest::Method::POST, "/api/v1/namespaces", Some(&body))
            .await?;
        match reply.code {
            200..=299 | 409 => Ok(()),
            _ => Err(ClientError::Definite(status_message(&reply))),
        }
    }
}

/// Sends a request and reads its whole reply.
async fn reply(request: reqwest::RequestBuilder) -> Result<Reply, reqwest::Error> {
    let response = request.send().await?;
    let code = response.status().as_u16();
    let bytes = response.bytes().await?;
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply { code, body })
}

/// A transport error in a few words, with its causes.
pub fn transport_error(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timeout".to_string()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A Kubernetes Status reply as `CODE Reason: message`.
pub fn status_message(reply: &Reply) -> String {
    format!(
        "{} {}: {}",
        reply.code,
        reply.body["reason"].as_str().unwrap_or(""),
        reply.body["message"].as_str().unwrap_or("")
    )
}

fn configmap_path(key: &str) -> String {
    format!("/api/v1/namespaces/{NAMESPACE}/configmaps/{key}")
}

fn configmap(key: &str, value: i64, version: Option<&str>) -> Value {
    let mut metadata = json!({"name": key, "namespace": NAMESPACE});
    if let Some(version) = version {
        metadata["resourceVersion"] = json!(version);
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {"value": value.to_string()},
    })
}

/// Keelson's register: a ConfigMap per key in the `jepsen` namespace, its `data.value` the
/// register's value; compare-and-set is an update with a resourceVersion precondition.
#[async_trait::async_trait]
impl Register for Api {
    fn node(&self) -> &str {
        &self.node
    }

    async fn read(&self, key: &str) -> Result<Option<Versioned>, ClientError> {
        let reply = self
            .call(reqwest::Method::GET, &configmap_path(key), None)
            .await?;
        match reply.code {
            200 => {
                let value = reply.body["data"]["value"]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        ClientError::Definite(format!("configmap {key} has no integer value"))
                    })?;
                let version = reply.body["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                Ok(Some(Versioned { value, version }))
            }
            404 => Ok(None),
            _ => Err(ClientError::Definite(status_message(&reply))),
        }
    }

    async fn write(&self, key: &str, value: i64) -> Result<(), ClientError> {
        let body = configmap(key, value, None);
        let reply = self
            .call(reqwest::Method::PUT, &configmap_path(key), Some(&body))
            .await?;
        match reply.code {
            200 | 201 => return Ok(()),
            404 => {}
            _ => return Err(ClientError::Definite(status_message(&reply))),
        }
        // Absent: create it. A create that loses to another client's is refused (409).
        let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
        let reply = self.call(reqwest::Method::POST, &path, Some(&body)).await?;
        match reply.code {
            200 | 201 => Ok(()),
            _ => Err(ClientError::Definite(status_message(&reply))),
        }
    }

    async fn cas(&self, key: &str, version: &str, to: i64) -> Result<bool, ClientError> {
        let body = configmap(key, to, Some(version));
        let reply = self
            .call(reqwest::Method::PUT, &configmap_path(key), Some(&body))
            .await?;
        match reply.code {
            200 => Ok(true),
            409 => Ok(false),
            _ => Err(ClientError::Definite(status_message(&reply))),
        }
    }
}
