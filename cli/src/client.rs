//! HTTP client for the API server: TLS from the kubeconfig, bearer token, bounded bodies, and
//! Kubernetes `Status` errors decoded into [`ApiError`].

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;

use crate::kubeconfig::ConnectionConfig;

/// Accept header for plain JSON objects and lists.
pub(crate) const ACCEPT_JSON: &str = "application/json";
/// Accept header asking for the server-side `Table` rendering, falling back to JSON.
pub(crate) const ACCEPT_TABLE: &str =
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
/// Accept header of raw text endpoints (logs, /readyz); errors still come back as JSON.
pub(crate) const ACCEPT_ANY: &str = "application/json, */*";

pub(crate) const CONTENT_JSON: &str = "application/json";
pub(crate) const CONTENT_MERGE_PATCH: &str = "application/merge-patch+json";
pub(crate) const CONTENT_APPLY_PATCH: &str = "application/apply-patch+yaml";

/// The largest response body read into memory (one list page, one object, discovery).
pub(crate) const RESPONSE_BYTES_MAX: usize = 64 << 20;
/// The largest error body read.
const ERROR_BODY_BYTES_MAX: usize = 1 << 20;
/// Unary requests time out after this long unless `--request-timeout` says otherwise.
const UNARY_TIMEOUT_DEFAULT_MS: u64 = 60_000;
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Warnings printed per response (from `Warning:` headers).
const WARNINGS_PER_RESPONSE_MAX: usize = 16;

/// A Kubernetes `meta/v1 Status` as returned in error responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct Status {
    pub(crate) status: String,
    pub(crate) message: String,
    pub(crate) reason: String,
    pub(crate) code: u16,
    pub(crate) details: Option<StatusDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct StatusDetails {
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) kind: String,
    pub(crate) causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct StatusCause {
    pub(crate) reason: String,
    pub(crate) message: String,
    pub(crate) field: String,
}

impl Status {
    /// Decodes an error response: a `Status` body if there is one, else a generic status for
    /// the HTTP code, as client-go builds it.
    pub(crate) fn from_response(code: u16, body: &[u8]) -> Status {
        if let Ok(mut status) = serde_json::from_slice::<Status>(body) {
            let is_status = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| v.get("kind").and_then(Value::as_str).map(|k| k == "Status"))
                .unwrap_or(false);
            if is_status && (!status.message.is_empty() || !status.reason.is_empty()) {
                if status.code == 0 {
                    status.code = code;
                }
                return status;
            }
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let (reason, message) = match code {
            400 => ("BadRequest", "the server rejected our request for an unknown reason"),
            401 => ("Unauthorized", "the server has asked for the client to provide credentials"),
            403 => ("Forbidden", "the server does not allow access to the requested resource"),
            404 => ("NotFound", "the server could not find the requested resource"),
            405 => ("MethodNotAllowed", "the server does not allow this method on the requested resource"),
            406 => ("NotAcceptable", "the server was unable to respond with a content type that the client supports"),
            409 => ("Conflict", "the server reported a conflict"),
            410 => ("Expired", "the resource version is too old"),
            413 => ("RequestEntityTooLarge", "the request entity is too large"),
            415 => ("UnsupportedMediaType", "the server was unable to process the request body's content type"),
            422 => ("Invalid", "the server rejected our request due to an error in our request"),
            429 => ("TooManyRequests", "the server has received too many requests and has asked us to try again later"),
            500 => ("InternalError", ""),
            503 => ("ServiceUnavailable", "the server is currently unable to handle the request"),
            504 => ("Timeout", "the server was unable to return a response in the time allotted, but may still be processing the request"),
            _ => ("", ""),
        };
        let message = if code == 500 || message.is_empty() {
            let shown: String = text.chars().take(512).collect();
            format!("an error on the server ({shown:?}) has prevented the request from succeeding")
        } else if !text.is_empty() && code != 404 {
            let shown: String = text.chars().take(512).collect();
            format!("{message} ({shown})")
        } else {
            message.to_string()
        };
        Status {
            status: "Failure".to_string(),
            message,
            reason: reason.to_string(),
            code,
            details: None,
        }
    }

    /// What kubectl prints for this error (without a trailing newline).
    pub(crate) fn kubectl_message(&self) -> String {
        if self.reason == "Invalid" {
            if let Some(details) = &self.details {
                let head = if !details.kind.is_empty() || !details.name.is_empty() {
                    format!("The {} {:?} is invalid", details.kind, details.name)
                } else {
                    format!("The request is invalid: {}", self.message)
                };
                let causes: Vec<String> = details
                    .causes
                    .iter()
                    .map(|c| {
                        if c.field.is_empty() {
                            c.message.clone()
                        } else {
                            format!("{}: {}", c.field, c.message)
                        }
                    })
                    .collect();
                return match causes.as_slice() {
                    [] => head,
                    [one] => format!("{head}: {one}"),
                    many => {
                        let mut text = format!("{head}: \n");
                        for cause in many {
                            text.push_str(&format!("* {cause}\n"));
                        }
                        text.trim_end().to_string()
                    }
                };
            }
        }
        if self.reason == "Unauthorized" {
            return format!(
                "error: You must be logged in to the server ({})",
                self.message
            );
        }
        if self.reason.is_empty() {
            format!("Error from server: {}", self.message)
        } else {
            format!("Error from server ({}): {}", self.reason, self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The server answered with an error `Status`.
    #[error("{}", .0.message)]
    Status(Box<Status>),
    /// No answer: connection refused, TLS failure, reset. Safe to report as failed.
    #[error("Unable to connect to the server: {0}")]
    Connect(String),
    /// A write whose answer never came: it may or may not have happened.
    #[error("the request timed out after the server received it; its outcome is unknown: {0}")]
    OutcomeUnknown(String),
    #[error("the response of {url} is larger than {limit_bytes} bytes")]
    TooLarge { url: String, limit_bytes: usize },
    #[error("cannot decode the response of {url}: {source}")]
    Decode {
        url: String,
        source: serde_json::Error,
    },
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ApiError {
    /// The server's status, if this is an error from the server.
    pub(crate) fn status(&self) -> Option<&Status> {
        match self {
            ApiError::Status(status) => Some(status),
            _ => None,
        }
    }

    pub(crate) fn code(&self) -> Option<u16> {
        self.status().map(|s| s.code)
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// kubectl's `error when creating "FILE": ...` decoration of a server error.
    pub(crate) fn with_source(self, verb: &str, source: &str) -> ApiError {
        match self {
            ApiError::Status(mut status) => {
                status.message = format!("error when {verb} {source:?}: {}", status.message);
                ApiError::Status(status)
            }
            other => other,
        }
    }

    /// What kubectl prints for this error.
    pub(crate) fn kubectl_message(&self) -> String {
        match self {
            ApiError::Status(status) => status.kubectl_message(),
            ApiError::Connect(_) => self.to_string(),
            other => format!("error: {other}"),
        }
    }
}

/// Flattens a reqwest error into one line: the URL, then the causes (without hyper's
/// generic wrapper).
fn describe_transport_error(err: &reqwest::Error) -> String {
    let mut pieces: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        let piece = inner.to_string();
        if !piece.starts_with("client error (") && !pieces.iter().any(|p| p.contains(&piece)) {
            pieces.push(piece);
        }
        source = inner.source();
    }
    if err.is_timeout() {
        pieces.push("request timed out".to_string());
    }
    match (err.url(), pieces.is_empty()) {
        (Some(url), false) => format!("{:?}: {}", url.as_str(), pieces.join(": ")),
        (_, false) => pieces.join(": "),
        _ => err.to_string(),
    }
}

/// How long requests may take. `unary` applies to ordinary requests; `stream` to watches and
/// followed logs (none by default: they run until the user stops them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestTimeouts {
    pub(crate) unary: Option<Duration>,
    pub(crate) stream: Option<Duration>,
}

impl RequestTimeouts {
    /// From `--request-timeout`: absent gives the default unary bound and unbounded streams;
    /// `0` disables both bounds, as kubectl's `0`; any other value bounds every request.
    pub(crate) fn from_flag(flag: Option<Duration>) -> Self {
        match flag {
            None => RequestTimeouts {
                unary: Some(Duration::from_millis(UNARY_TIMEOUT_DEFAULT_MS)),
                stream: None,
            },
            Some(d) if d.is_zero() => RequestTimeouts {
                unary: None,
                stream: None,
            },
            Some(d) => RequestTimeouts {
                unary: Some(d),
                stream: Some(d),
            },
        }
    }
}

/// A request body with its content type.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    pub(crate) content_type: &'static str,
    pub(crate) bytes: Vec<u8>,
}

impl Body {
    pub(crate) fn json(value: &Value) -> Body {
        Body {
            content_type: CONTENT_JSON,
            bytes: value.to_string().into_bytes(),
        }
    }

    pub(crate) fn with_type(content_type: &'static str, value: &Value) -> Body {
        Body {
            content_type,
            bytes: value.to_string().into_bytes(),
        }
    }
}

/// Installs ring as rustls' process-wide crypto provider (reqwest is built without one).
/// Idempotent: a provider installed earlier is kept.
pub(crate) fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The API server connection: one reqwest client, the base URL and the credentials.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    basic_auth: Option<(String, String)>,
    timeouts: RequestTimeouts,
}

impl Client {
    /// Builds the client. The rustls crypto provider must be installed first.
    pub(crate) fn new(
        config: &ConnectionConfig,
        timeouts: RequestTimeouts,
    ) -> Result<Client, ApiError> {
        let base = Url::parse(&config.server)
            .map_err(|err| ApiError::Config(format!("server {:?}: {err}", config.server)))?;
        if base.scheme() != "https" && base.scheme() != "http" {
            return Err(ApiError::Config(format!(
                "server {:?} must be an http or https URL",
                config.server
            )));
        }
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("kctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
        if config.insecure_skip_tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|err| ApiError::Config(format!("certificate authority: {err}")))?;
            if certs.is_empty() {
                return Err(ApiError::Config(
                    "certificate authority: no PEM certificate found".to_string(),
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = &config.client_identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|err| ApiError::Config(format!("client certificate: {err}")))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|err| ApiError::Config(describe_transport_error(&err)))?;
        // kubectl sends credentials only over TLS.
        let https = base.scheme() == "https";
        Ok(Client {
            http,
            base,
            token: config.token.clone().filter(|_| https),
            basic_auth: config.basic_auth.clone().filter(|_| https),
            timeouts,
        })
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `path` (absolute, e.g. `/api/v1/pods`) under the base URL, with query parameters.
    pub(crate) fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}{path}"));
        url.set_query(None);
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    fn builder(
        &self,
        method: Method,
        url: Url,
        accept: &str,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let mut req = self.http.request(method, url).header("Accept", accept);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        } else if let Some((user, password)) = &self.basic_auth {
            req = req.basic_auth(user, Some(password));
        }
        let timeout = if stream {
            self.timeouts.stream
        } else {
            self.timeouts.unary
        };
        if let Some(timeout) = timeout {
            req = req.timeout(timeout);
        }
        req
    }

    /// Sends a request and returns the response if its status is a success; an error status
    /// becomes [`ApiError::Status`].
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        url: Url,
        accept: &str,
        body: Option<Body>,
        stream: bool,
    ) -> Result<reqwest::Response, ApiError> {
        let is_read = method == Method::GET;
        let mut req = self.builder(method, url, accept, stream);
        if let Some(body) = body {
            req = req
                .header("Content-Type", body.content_type)
                .body(body.bytes);
        }
        let response = req.send().await.map_err(|err| {
            let text = describe_transport_error(&err);
            if err.is_timeout() && !is_read && !err.is_connect() {
                ApiError::OutcomeUnknown(text)
            } else {
                ApiError::Connect(text)
            }
        })?;
        print_warnings(&response);
        let code = response.status().as_u16();
        if response.status().is_success() {
            return Ok(response);
        }
        let url = response.url().to_string();
        let body = read_bounded(response, ERROR_BODY_BYTES_MAX, &url)
            .await
            .unwrap_or_default();
        Err(ApiError::Status(Box::new(Status::from_response(
            code, &body,
        ))))
    }

    /// Sends a request and decodes its JSON answer (`Null` for an empty body).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        accept: &str,
        body: Option<Body>,
    ) -> Result<Value, ApiError> {
        let url = self.url(path, query);
        let is_read = method == Method::GET;
        let response = self
            .send_raw(method, url.clone(), accept, body, false)
            .await?;
        let bytes = read_bounded(response, RESPONSE_BYTES_MAX, url.as_str())
            .await
            .map_err(|err| match err {
                ApiError::Connect(text) if !is_read => ApiError::OutcomeUnknown(text),
                other => other,
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
            url: url.to_string(),
            source,
        })
    }

    /// GET as JSON.
    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Value, ApiError> {
        self.send(Method::GET, path, query, ACCEPT_JSON, None).await
    }

    /// GET a short text answer (e.g. `/readyz`), returning the status code instead of failing
    /// on an error status.
    pub(crate) async fn get_text(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), ApiError> {
        let url = self.url(path, &[]);
        let response = self
            .builder(Method::GET, url.clone(), ACCEPT_ANY, false)
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| ApiError::Connect(describe_transport_error(&err)))?;
        let code = response.status().as_u16();
        let body = read_bounded(response, ERROR_BODY_BYTES_MAX, url.as_str()).await?;
        Ok((code, String::from_utf8_lossy(&body).trim().to_string()))
    }
}

/// Prints the server's `Warning: 299 - "text"` headers to stderr, as kubectl does.
fn print_warnings(response: &reqwest::Response) {
    for value in response
        .headers()
        .get_all("warning")
        .iter()
        .take(WARNINGS_PER_RESPONSE_MAX)
    {
        let Ok(text) = value.to_str() else { continue };
        let text = warning_text(text);
        if !text.is_empty() {
            crate::printer::warn(&format!("Warning: {text}"));
        }
    }
}

/// The text of a `Warning` header value (`299 - "text"` or plain text).
fn warning_text(header: &str) -> String {
    let mut parts = header.splitn(3, ' ');
    let (code, agent, rest) = (parts.next(), parts.next(), parts.next());
    match (code, agent, rest) {
        (Some(code), Some(_), Some(rest))
            if code.len() == 3 && code.chars().all(|c| c.is_ascii_digit()) =>
        {
            let rest = rest.trim();
            let text = rest
                .strip_prefix('"')
                .and_then(|r| r.find('"').map(|end| &r[..end]))
                .unwrap_or(rest);
            text.to_string()
        }
        _ => header.trim().to_string(),
    }
}

/// Reads a whole response body, failing past `limit_bytes`.
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    limit_bytes: usize,
    url: &str,
) -> Result<Vec<u8>, ApiError> {
    if let Some(length) = response.content_length() {
        if length > limit_bytes as u64 {
            return Err(ApiError::TooLarge {
                url: url.to_string(),
                limit_bytes,
            });
        }
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| ApiError::Connect(describe_transport_error(&err)))?
    {
        if bytes.len() + chunk.len() > limit_bytes {
            return Err(ApiError::TooLarge {
                url: url.to_string(),
                limit_bytes,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_is_printed_like_kubectl() {
        let body = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods \"x\" not found","reason":"NotFound","details":{"name":"x","kind":"pods"},"code":404}"#;
        let status = Status::from_response(404, body);
        assert_eq!(status.code, 404);
        assert_eq!(
            status.kubectl_message(),
            r#"Error from server (NotFound): pods "x" not found"#
        );
        let err = ApiError::Status(Box::new(status)).with_source("creating", "pod.yaml");
        assert_eq!(
            err.kubectl_message(),
            r#"Error from server (NotFound): error when creating "pod.yaml": pods "x" not found"#
        );
    }

    #[test]
    fn status_without_reason_and_unauthorized() {
        let status = Status::from_response(
            500,
            br#"{"kind":"Status","status":"Failure","message":"boom","code":500}"#,
        );
        assert_eq!(status.kubectl_message(), "Error from server: boom");
        let status = Status::from_response(
            401,
            br#"{"kind":"Status","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#,
        );
        assert_eq!(
            status.kubectl_message(),
            "error: You must be logged in to the server (Unauthorized)"
        );
    }

    #[test]
    fn invalid_status_lists_causes() {
        let one = Status::from_response(
            422,
            br#"{"kind":"Status","status":"Failure","reason":"Invalid","code":422,"message":"Pod \"x\" is invalid","details":{"name":"x","kind":"Pod","causes":[{"reason":"FieldValueRequired","message":"Required value","field":"spec.containers"}]}}"#,
        );
        assert_eq!(
            one.kubectl_message(),
            r#"The Pod "x" is invalid: spec.containers: Required value"#
        );
        let two = Status::from_response(
            422,
            br#"{"kind":"Status","status":"Failure","reason":"Invalid","code":422,"message":"m","details":{"name":"x","kind":"Pod","causes":[{"message":"Required value","field":"spec.containers"},{"message":"Invalid value: \"A\"","field":"metadata.name"}]}}"#,
        );
        assert_eq!(
            two.kubectl_message(),
            "The Pod \"x\" is invalid: \n* spec.containers: Required value\n* metadata.name: Invalid value: \"A\""
        );
    }

    #[test]
    fn non_status_bodies_get_client_go_messages() {
        let status = Status::from_response(404, b"404 page not found");
        assert_eq!(
            status.kubectl_message(),
            "Error from server (NotFound): the server could not find the requested resource"
        );
        let status = Status::from_response(500, b"oops");
        assert_eq!(
            status.kubectl_message(),
            "Error from server (InternalError): an error on the server (\"oops\") has prevented the request from succeeding"
        );
        let status = Status::from_response(503, b"");
        assert_eq!(
            status.kubectl_message(),
            "Error from server (ServiceUnavailable): the server is currently unable to handle the request"
        );
    }

    #[test]
    fn warning_header_text() {
        assert_eq!(
            warning_text(r#"299 - "spec.foo: deprecated""#),
            "spec.foo: deprecated"
        );
        assert_eq!(warning_text("plain words here"), "plain words here");
    }

    #[test]
    fn timeouts_from_flag() {
        assert_eq!(
            RequestTimeouts::from_flag(None),
            RequestTimeouts {
                unary: Some(Duration::from_secs(60)),
                stream: None
            }
        );
        assert_eq!(
            RequestTimeouts::from_flag(Some(Duration::ZERO)),
            RequestTimeouts {
                unary: None,
                stream: None
            }
        );
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            RequestTimeouts::from_flag(five),
            RequestTimeouts {
                unary: five,
                stream: five
            }
        );
    }

    #[test]
    fn urls_keep_a_path_prefix_and_encode_queries() {
        let config = ConnectionConfig {
            server: "http://h:8080/prefix/".to_string(),
            ..ConnectionConfig::default()
        };
        install_crypto_provider();
        let client = Client::new(&config, RequestTimeouts::from_flag(None)).unwrap();
        let url = client.url(
            "/api/v1/namespaces/default/events",
            &[(
                "fieldSelector",
                "involvedObject.name=x,involvedObject.uid=u".to_string(),
            )],
        );
        assert_eq!(
            url.as_str(),
            "http://h:8080/prefix/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dx%2CinvolvedObject.uid%3Du"
        );
    }
}
