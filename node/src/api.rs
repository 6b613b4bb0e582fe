//! A client of the Kubernetes API that fails over between masters, over either transport:
//! HTTPS with a kubeconfig (a request that cannot reach a server, or gets 503 from it, is tried
//! on the next one, a bounded number of times), or the node's QUIC link ([`NodeLink`]), which
//! fails over by itself. Requests and watches behave the same over both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::Value;

use crate::kubeconfig::Kubeconfig;
use crate::link::NodeLink;

/// The most bytes of a reply read over the node link.
const REPLY_BYTES_MAX: usize = 64 << 20;

/// The timeout of one ordinary request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long an idle watch stream may stay silent before it is dropped (the server sends
/// bookmarks well within this).
pub const WATCH_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Connections kept open per master (many hollow nodes share one client).
const IDLE_CONNECTIONS_PER_HOST_MAX: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a Kubernetes `Status` (or another non-2xx reply).
    #[error("{code} {reason}: {message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("no master could be reached: {0}")]
    Unreachable(String),
    #[error("the reply is not JSON: {0}")]
    Decode(String),
    #[error("cannot build the HTTPS client: {0}")]
    Setup(String),
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }
}

/// The API of a set of masters; clones share connections and the current server.
#[derive(Clone)]
pub struct ApiClient {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    Https(HttpsClient),
    Quic(NodeLink),
}

/// HTTPS with a kubeconfig's CA and token.
#[derive(Clone)]
struct HttpsClient {
    http: reqwest::Client,
    servers: Arc<Vec<String>>,
    current: Arc<AtomicUsize>,
    token: Arc<str>,
}

impl ApiClient {
    /// A client for the kubeconfig's server first, then `extra_servers` (duplicates dropped).
    pub fn new(config: &Kubeconfig, extra_servers: &[String]) -> Result<ApiClient, ApiError> {
        let mut servers = vec![config.server.clone()];
        for server in extra_servers {
            let server = server.trim().trim_end_matches('/').to_string();
            if !server.is_empty() && !servers.contains(&server) {
                servers.push(server);
            }
        }
        let ca = reqwest::Certificate::from_pem(&config.ca_pem)
            .map_err(|e| ApiError::Setup(format!("the CA is not PEM: {e}")))?;
        let http = reqwest::Client::builder()
            .tls_certs_only([ca])
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST_MAX)
            .user_agent("keelson-node/hollow")
            .build()
            .map_err(|e| ApiError::Setup(e.to_string()))?;
        Ok(ApiClient {
            transport: Transport::Https(HttpsClient {
                http,
                servers: Arc::new(servers),
                current: Arc::new(AtomicUsize::new(0)),
                token: Arc::from(config.token.as_str()),
            }),
        })
    }

    /// A client over the node's QUIC link.
    pub fn over_quic(link: NodeLink) -> ApiClient {
        ApiClient {
            transport: Transport::Quic(link),
        }
    }

    /// The masters: API URLs (HTTPS) or addresses (QUIC).
    pub fn servers(&self) -> &[String] {
        match &self.transport {
            Transport::Https(https) => &https.servers,
            Transport::Quic(link) => link.masters(),
        }
    }

    /// The node link, when this client uses one.
    pub fn link(&self) -> Option<&NodeLink> {
        match &self.transport {
            Transport::Https(_) => None,
            Transport::Quic(link) => Some(link),
        }
    }

    /// Sends one request: the reply's JSON (`Null` for an empty body), or its `Status` error.
    pub async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.request_as(method, path_and_query, content_type, body)
            .await
    }

    /// Sends one write whose answer is not needed: success or its `Status` error. The reply is
    /// checked to be JSON without being built into a value (a pod's, parsed and freed, was
    /// most of what a hollow node spent reporting a pod Running).
    pub async fn write(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<(), ApiError> {
        self.request_as::<Option<IgnoredAny>>(method, path_and_query, content_type, body)
            .await
            .map(|_| ())
    }

    /// Sends one request and reads the reply as `T` (from `null` for an empty body).
    async fn request_as<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        match &self.transport {
            Transport::Https(https) => {
                https
                    .request(method, path_and_query, content_type, body)
                    .await
            }
            Transport::Quic(link) => {
                let exchange = async {
                    let response =
                        quic_send(link, method, path_and_query, content_type, body).await?;
                    let success = (200..300).contains(&response.head.status);
                    let status = response.head.status;
                    let text = response
                        .collect(REPLY_BYTES_MAX)
                        .await
                        .map_err(|e| ApiError::Unreachable(e.to_string()))?;
                    if !success {
                        return Err(status_error_of(status, &text));
                    }
                    parse_reply(&text)
                };
                tokio::time::timeout(REQUEST_TIMEOUT, exchange)
                    .await
                    .unwrap_or_else(|_| {
                        Err(ApiError::Unreachable(format!(
                            "no answer within {REQUEST_TIMEOUT:?}"
                        )))
                    })
            }
        }
    }

    /// Opens a watch (`path_and_query` with `watch=1`): its events, one JSON object each.
    pub async fn watch(&self, path_and_query: &str) -> Result<WatchEvents, ApiError> {
        match &self.transport {
            Transport::Https(https) => https.watch(path_and_query).await,
            Transport::Quic(link) => {
                let response =
                    quic_send(link, Method::GET, path_and_query, "application/json", None).await?;
                if !(200..300).contains(&response.head.status) {
                    let status = response.head.status;
                    let text = response.collect(REPLY_BYTES_MAX).await.unwrap_or_default();
                    return Err(status_error_of(status, &text));
                }
                use futures::StreamExt;
                let body = response.into_stream().map(|chunk| {
                    chunk
                        .map(bytes::Bytes::from)
                        .map_err(|e| ApiError::Unreachable(e.to_string()))
                });
                Ok(WatchEvents {
                    body: Box::pin(body),
                    buffer: Vec::new(),
                })
            }
        }
    }
}

async fn quic_send(
    link: &NodeLink,
    method: Method,
    path_and_query: &str,
    content_type: &str,
    body: Option<&Value>,
) -> Result<crate::link::LinkResponse, ApiError> {
    let body = match body {
        Some(value) => {
            serde_json::to_vec(value).map_err(|e| ApiError::Decode(format!("encode: {e}")))?
        }
        None => Vec::new(),
    };
    let request = keelson_api::node_link::Request {
        method: method.as_str().to_string(),
        path_and_query: path_and_query.to_string(),
        content_type: content_type.to_string(),
        body,
    };
    link.request(&request)
        .await
        .map_err(|e| ApiError::Unreachable(e.to_string()))
}

/// A reply body as `T`; an empty body reads as JSON `null`.
fn parse_reply<T: DeserializeOwned>(text: &[u8]) -> Result<T, ApiError> {
    let text = if text.is_empty() { &b"null"[..] } else { text };
    serde_json::from_slice(text).map_err(|e| ApiError::Decode(e.to_string()))
}

impl HttpsClient {
    fn server(&self, attempt: usize) -> (usize, &str) {
        let index = (self.current.load(Ordering::Relaxed) + attempt) % self.servers.len();
        (index, &self.servers[index])
    }

    /// Sends one request, failing over to the next server on a transport error or a 503.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<T, ApiError> {
        let response = self
            .send(
                method,
                path_and_query,
                content_type,
                body,
                Some(REQUEST_TIMEOUT),
            )
            .await?;
        let text = response
            .bytes()
            .await
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        parse_reply(&text)
    }

    /// Opens a watch (`path_and_query` with `watch=1`): its events, one JSON object each.
    async fn watch(&self, path_and_query: &str) -> Result<WatchEvents, ApiError> {
        let response = self
            .send(Method::GET, path_and_query, "application/json", None, None)
            .await?;
        use futures::StreamExt;
        let body = response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| ApiError::Unreachable(e.to_string())));
        Ok(WatchEvents {
            body: Box::pin(body),
            buffer: Vec::new(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        content_type: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ApiError> {
        let body = match body {
            Some(value) => Some(
                serde_json::to_vec(value).map_err(|e| ApiError::Decode(format!("encode: {e}")))?,
            ),
            None => None,
        };
        let mut last_error = String::new();
        for attempt in 0..self.servers.len() {
            let (index, server) = self.server(attempt);
            let mut request = self
                .http
                .request(method.clone(), format!("{server}{path_and_query}"))
                .bearer_auth(&*self.token)
                .header(reqwest::header::CONTENT_TYPE, content_type);
            if let Some(timeout) = timeout {
                request = request.timeout(timeout);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(response) if response.status().as_u16() == 503 => {
                    last_error = format!("{server} answered 503");
                }
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Err(status_error(response).await);
                }
                Err(e) => last_error = format!("{server}: {e}"),
            }
            tracing::debug!(server, error = %last_error, "failing over to the next master");
        }
        Err(ApiError::Unreachable(last_error))
    }
}

/// How large one watch event may be.
const WATCH_EVENT_BYTES_MAX: usize = 8 << 20;

/// The events of one watch, as the API sends them (`{"type": ..., "object": ...}`).
pub struct WatchEvents {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = Result<bytes::Bytes, ApiError>> + Send>>,
    buffer: Vec<u8>,
}

impl WatchEvents {
    /// The next event; `None` when the server ends the watch. An event that does not decode is
    /// skipped with a warning; silence longer than [`WATCH_IDLE_TIMEOUT`] is an error.
    pub async fn next(&mut self) -> Option<Result<Value, ApiError>> {
        use futures::StreamExt;
        loop {
            while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice(&line) {
                    Ok(event) => return Some(Ok(event)),
                    Err(e) => tracing::warn!(error = %e, "skipping an undecodable watch event"),
                }
            }
            if self.buffer.len() > WATCH_EVENT_BYTES_MAX {
                return Some(Err(ApiError::Decode(
                    "a watch event is too large".to_string(),
                )));
            }
            match tokio::time::timeout(WATCH_IDLE_TIMEOUT, self.body.next()).await {
                Err(_) => {
                    return Some(Err(ApiError::Unreachable(
                        "the watch went silent".to_string(),
                    )))
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => return Some(Err(e)),
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
            }
        }
    }
}

async fn status_error(response: reqwest::Response) -> ApiError {
    let code = response.status().as_u16();
    let text = response.bytes().await.unwrap_or_default();
    status_error_of(code, &text)
}

/// The error a non-2xx reply carries (its `Status`, or the start of its text).
fn status_error_of(code: u16, body: &[u8]) -> ApiError {
    let text = String::from_utf8_lossy(body);
    let status: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    ApiError::Status {
        code,
        reason: status["reason"].as_str().unwrap_or("Unknown").to_string(),
        message: status["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text.chars().take(200).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_checked_to_be_json_whether_or_not_it_is_kept() {
        assert_eq!(parse_reply::<Value>(b"").ok(), Some(Value::Null));
        assert_eq!(
            parse_reply::<Value>(br#"{"kind":"Pod"}"#).ok(),
            Some(serde_json::json!({"kind": "Pod"}))
        );
        assert!(parse_reply::<Option<IgnoredAny>>(b"").is_ok());
        assert!(parse_reply::<Option<IgnoredAny>>(br#"{"kind":"Pod","spec":{}}"#).is_ok());
        for broken in [&b"{not json"[..], b"{\"kind\":"] {
            assert!(matches!(
                parse_reply::<Option<IgnoredAny>>(broken),
                Err(ApiError::Decode(_))
            ));
            assert!(matches!(
                parse_reply::<Value>(broken),
                Err(ApiError::Decode(_))
            ));
        }
    }
}
