//! Writes taken by a follower go to the leader's API, so that the leader stamps what a write
//! stamps (uids, creation and deletion times, managed-field times) with one clock, and the
//! client never sees which master leads.
//!
//! A forwarded request carries a header and is never forwarded again. When the leader's API
//! cannot be reached before the request is sent, the follower handles the write itself (the
//! store forwards the transaction to the leader); once sent, a failure is an unknown outcome.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use keelson_api::status::StatusError;
use keelson_raft::Consistency;
use serde_json::Value;
use warp::reply::Response;

use super::cluster::MASTERS_PREFIX;
use super::request::{status_reply, ApiRequest};
use super::ApiState;

/// Marks a request a master forwarded; such a request is handled where it arrives.
pub(crate) const FORWARDED_HEADER: &str = "x-keelson-forwarded-by";
/// The longest a forwarded write may take, as a client would wait for any write.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);
/// The most bytes of a forwarded answer read.
const RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// An HTTPS client that trusts the cluster CA.
pub(crate) fn client(ca_pem: &str) -> Option<reqwest::Client> {
    // reqwest is built without a crypto provider of its own and panics without one; ring is
    // the process's provider (an error only means one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certificate = reqwest::Certificate::from_pem(ca_pem.as_bytes()).ok()?;
    reqwest::Client::builder()
        .tls_certs_only([certificate])
        .timeout(FORWARD_TIMEOUT)
        .build()
        .ok()
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The leader's API URL when this master is not the leader and the leader is known.
async fn leader_api(state: &ApiState) -> Option<String> {
    let store = state.storage.store();
    let leader = store.leader()?;
    if leader == store.name() {
        return None;
    }
    let key = format!("{MASTERS_PREFIX}{leader}");
    let range = keelson_raft::RangeRequest {
        range: keelson_raft::KeyRange::key(key.as_bytes()),
        revision: 0,
        limit: 1,
        consistency: Consistency::Serializable,
    };
    let response = store.range(range).await.ok()?;
    let record: Value = serde_json::from_slice(&response.kvs.first()?.value).ok()?;
    record["api"].as_str().map(str::to_string)
}

/// Sends a write to the leader's API when this master is a follower; `None` means "handle it
/// here".
pub(crate) async fn to_leader(state: &ApiState, req: &ApiRequest) -> Option<Response> {
    if !is_write(&req.method) || req.headers.contains_key(FORWARDED_HEADER) {
        return None;
    }
    let client = state.forward_client.as_ref()?;
    let base = leader_api(state).await?;
    let mut url = format!("{base}{}", req.path);
    let query: Vec<(&String, &String)> = req.query.iter().collect();
    if !query.is_empty() {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        url.push('?');
        url.push_str(&encoded);
    }
    let mut request = client
        .request(req.method.clone(), url)
        .header(FORWARDED_HEADER, state.name.as_str())
        .body(req.body.clone());
    for name in ["authorization", "content-type", "accept"] {
        if let Some(value) = req.headers.get(name) {
            request = request.header(name, value.clone());
        }
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_connect() => {
            tracing::debug!(error = %e, "the leader's API is unreachable; handling the write here");
            return None;
        }
        Err(e) => {
            return Some(status_reply(&StatusError::timeout(&format!(
                "the write was sent to the leader's API and its outcome is unknown: {e}"
            ))))
        }
    };
    let code = response.status();
    let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
    let body = match read_limited(response).await {
        Ok(body) => body,
        Err(e) => {
            return Some(status_reply(&StatusError::timeout(&format!(
                "the leader's answer to the write was cut off, so its outcome is unknown: {e}"
            ))))
        }
    };
    let mut reply = Response::new(body.into());
    *reply.status_mut() = StatusCode::from_u16(code.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    Some(reply)
}

/// How long a forwarded log request may stream (a followed log runs until the client goes).
const LOG_FORWARD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The API URL `master` recorded in the store.
async fn master_api(state: &ApiState, master: &str) -> Option<String> {
    let key = format!("{MASTERS_PREFIX}{master}");
    let range = keelson_raft::RangeRequest {
        range: keelson_raft::KeyRange::key(key.as_bytes()),
        revision: 0,
        limit: 1,
        consistency: Consistency::Serializable,
    };
    let response = state.storage.store().range(range).await.ok()?;
    let record: Value = serde_json::from_slice(&response.kvs.first()?.value).ok()?;
    record["api"].as_str().map(str::to_string)
}

/// Sends a `pods/NAME/log` request to the API of `master` (which holds the node's
/// connection) and streams its answer back; `None` when that master cannot be reached.
pub(crate) async fn log_to_master(
    state: &ApiState,
    req: &ApiRequest,
    master: &str,
) -> Option<Result<Response, StatusError>> {
    let mut path_and_query = req.path.clone();
    let query: Vec<(&String, &String)> = req.query.iter().collect();
    if !query.is_empty() {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(query)
            .finish();
        path_and_query.push('?');
        path_and_query.push_str(&encoded);
    }
    let response = send_to_master(state, req, master, &path_and_query, LOG_FORWARD_TIMEOUT).await?;
    let code = StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("text/plain"));
    let body = futures::StreamExt::map(response.bytes_stream(), |chunk| {
        chunk.map_err(std::io::Error::other)
    });
    Some(Ok(super::request::stream_reply(code, content_type, body)))
}

/// GETs `path_and_query` from the API of `master` with the client's authorization (marked
/// forwarded); the body of a 200 answer, else `None` (unreachable, too slow, an error).
pub(crate) async fn get_from_master(
    state: &ApiState,
    req: &ApiRequest,
    master: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Option<Bytes> {
    let response = send_to_master(state, req, master, path_and_query, timeout).await?;
    if response.status() != reqwest::StatusCode::OK {
        tracing::debug!(%master, status = %response.status(), "another master refused a request");
        return None;
    }
    read_limited(response).await.ok()
}

/// GETs `path_and_query` from the API of `master` with the client's authorization, marked
/// forwarded; `None` when there is no forwarding client or the master cannot be reached.
async fn send_to_master(
    state: &ApiState,
    req: &ApiRequest,
    master: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Option<reqwest::Response> {
    let client = state.forward_client.as_ref()?;
    let base = master_api(state, master).await?;
    let mut request = client
        .get(format!("{base}{path_and_query}"))
        .timeout(timeout)
        .header(FORWARDED_HEADER, state.name.as_str());
    if let Some(value) = req.headers.get("authorization") {
        request = request.header("authorization", value.clone());
    }
    match request.send().await {
        Ok(response) => Some(response),
        Err(e) => {
            tracing::debug!(%master, path = %req.path, error = %e, "cannot reach another master");
            None
        }
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Bytes, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(format!("more than {RESPONSE_BYTES_MAX} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}
