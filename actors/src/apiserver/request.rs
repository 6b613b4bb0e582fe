//! One API request as the handler sees it (method, path, query, headers, a bounded body), the
//! media types it may carry, and the replies built from values and `Status` errors.

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use keelson_api::status::StatusError;
use serde_json::Value;
use warp::reply::Response;

/// The largest request body accepted, as Kubernetes' API server does (3 MiB).
pub(crate) const REQUEST_BODY_BYTES_MAX: usize = 3 * 1024 * 1024;
/// The most query parameters looked at.
const QUERY_PARAMS_MAX: usize = 64;

pub(crate) struct ApiRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) query: HashMap<String, String>,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl ApiRequest {
    pub(crate) fn new(
        method: Method,
        path: String,
        raw_query: Option<&str>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Self, StatusError> {
        let mut query = HashMap::new();
        if let Some(raw) = raw_query {
            for (key, value) in form_urlencoded::parse(raw.as_bytes()).take(QUERY_PARAMS_MAX) {
                query.insert(key.into_owned(), value.into_owned());
            }
        }
        Ok(ApiRequest {
            method,
            path,
            query,
            headers,
            body,
        })
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean query parameter (`true`/`1`; absent is false).
    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.param(name), Some("true") | Some("1"))
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn content_type(&self) -> String {
        self.header("content-type")
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default()
    }

    /// Whether the client asked for a server-side `Table`.
    pub(crate) fn wants_table(&self) -> bool {
        self.header("accept").is_some_and(|accept| {
            accept
                .split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
    }

    /// The request body as a JSON value: JSON, or YAML when the content type says so. No
    /// content type means JSON, as kubectl and the Python client send some requests.
    pub(crate) fn body_value(&self) -> Result<Value, StatusError> {
        let content_type = self.content_type();
        match content_type.as_str() {
            "" | "application/json" | "*/*" => decode_json(&self.body),
            "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(&self.body),
            "application/vnd.kubernetes.protobuf" => keelson_api::protobuf::decode(&self.body)
                .map_err(|e| match e {
                    keelson_api::protobuf::ProtobufError::Unsupported(_)
                    | keelson_api::protobuf::ProtobufError::Encoding(_) => {
                        StatusError::unsupported_media_type(e.to_string())
                    }
                    _ => StatusError::bad_request(e.to_string()),
                }),
            other => Err(unsupported_media_type(other)),
        }
    }
}

pub(crate) fn unsupported_media_type(content_type: &str) -> StatusError {
    StatusError::unsupported_media_type(format!(
        "the body of the request was in an unknown format ({content_type}) - accepted media \
         types include: application/json, application/yaml"
    ))
}

pub(crate) fn decode_json(body: &[u8]) -> Result<Value, StatusError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(StatusError::bad_request(
            "the request body is empty; send the object as JSON".to_string(),
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| StatusError::bad_request(format!("the request body is not valid JSON: {e}")))
}

pub(crate) fn decode_yaml(body: &[u8]) -> Result<Value, StatusError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| StatusError::bad_request("the YAML body is not UTF-8".to_string()))?;
    let value: Value = serde_norway::from_str(text).map_err(|e| {
        StatusError::bad_request(format!("the request body is not valid YAML: {e}"))
    })?;
    if value.is_null() {
        return Err(StatusError::bad_request(
            "the request body is empty; send the object as YAML".to_string(),
        ));
    }
    Ok(value)
}

/// A JSON reply.
pub(crate) fn json_reply(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Bytes::from(body).into());
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A `Status` reply for an error.
pub(crate) fn status_reply(error: &StatusError) -> Response {
    let code = StatusCode::from_u16(error.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_reply(code, &error.to_value())
}

/// How many chunks of a streamed reply wait for the client.
const STREAM_CHUNKS_BUFFERED: usize = 16;

/// A reply whose body streams from `chunks` until they end or the client goes away (a task
/// pumps them through a bounded channel, so the body needs no `Sync`).
pub(crate) fn stream_reply<S>(code: StatusCode, content_type: HeaderValue, chunks: S) -> Response
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS_BUFFERED);
    tokio::spawn(async move {
        use futures::StreamExt;
        let mut chunks = std::pin::pin!(chunks);
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = chunks.next() => next,
            };
            let Some(chunk) = next else { return };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = warp::reply::Reply::into_response(warp::reply::stream(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, content_type);
    response
}

/// A plain-text reply (health checks).
pub(crate) fn text_reply(code: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Bytes::from(text.to_string()).into());
    *response.status_mut() = code;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
