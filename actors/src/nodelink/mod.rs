//! The node link's master side: a QUIC endpoint on the API's address (UDP, like HTTP/3) that
//! nodes connect to. A node proves itself with the join secret (then gets a credential) or its
//! credential; each request stream is served in-process through the API handler with the
//! node's credential as bearer token, so a node's request is validated, admitted and forwarded
//! exactly as an HTTPS one; response bodies (watches) stream chunk by chunk.

mod keys;
mod registry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use keelson_api::node_link::{
    close_code, decode_body, encode_frame, frame_len, Chunk, Hello, Request, ResponseHead, Welcome,
    ALPN, CHUNK_BYTES_MAX, CONNECTED_MASTER_ANNOTATION, FRAME_HEADER_BYTES, REQUEST_BODY_BYTES_MAX,
};
use keelson_api::status::StatusError;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{watch as signal, Semaphore};

use crate::apiserver::{handler_serve, ApiRequestParts, ApiState};
use crate::pki::ServingCert;

pub(crate) use keys::NodeKeys;
pub(crate) use registry::{LogChunks, Registry};

/// The most node connections one master serves.
const CONNECTIONS_MAX: usize = 4096;
/// The most concurrent request streams per node connection.
const STREAMS_PER_CONNECTION_MAX: u32 = 256;
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// How long a node has for the handshake and its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_BYTES_MAX: usize = 16 * 1024;
/// A request frame: the body and its envelope.
const REQUEST_FRAME_BYTES_MAX: usize = REQUEST_BODY_BYTES_MAX + 64 * 1024;
/// How often the master checks the Node names it as the connected master.
const ANNOTATE_INTERVAL: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum NodeLinkServerError {
    #[error("tls: {0}")]
    Tls(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("{0}")]
    Link(#[from] keelson_api::node_link::NodeLinkError),
    #[error("stream: {0}")]
    Io(String),
}

pub(crate) async fn write_frame<T: Serialize>(
    send: &mut SendStream,
    value: &T,
) -> Result<(), FrameError> {
    let frame = encode_frame(value)?;
    send.write_all(&frame)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))
}

/// One frame; `Ok(None)` when the peer finished the stream before it.
pub(crate) async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(FrameError::Io(e.to_string())),
    }
    let len = frame_len(header, limit)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameError::Io(e.to_string()))?;
    Ok(Some(decode_body(std::any::type_name::<T>(), &body)?))
}

fn server_config(serving: &ServingCert) -> Result<quinn::ServerConfig, NodeLinkServerError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| NodeLinkServerError::Tls(e.to_string());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(crypto).map_err(|e| tls(&e))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(STREAMS_PER_CONNECTION_MAX.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    if let Ok(idle) = IDLE_TIMEOUT.try_into() {
        transport.max_idle_timeout(Some(idle));
    }
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// Binds the node endpoint at `addr` (UDP) and serves it until `stopped` turns true.
pub(crate) fn start(
    state: ApiState,
    keys: Arc<NodeKeys>,
    addr: SocketAddr,
    serving: &ServingCert,
    stopped: signal::Receiver<bool>,
) -> Result<(Endpoint, tokio::task::JoinHandle<()>), NodeLinkServerError> {
    let config = server_config(serving)?;
    let endpoint = Endpoint::server(config, addr)
        .map_err(|source| NodeLinkServerError::Bind { addr, source })?;
    let task = tokio::spawn(accept_loop(endpoint.clone(), state, keys, stopped));
    Ok((endpoint, task))
}

async fn accept_loop(
    endpoint: Endpoint,
    state: ApiState,
    keys: Arc<NodeKeys>,
    mut stopped: signal::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let incoming = tokio::select! {
            _ = stopped.changed() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("refusing a node connection: {CONNECTIONS_MAX} are open");
            incoming.refuse();
            continue;
        };
        let state = state.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let remote = incoming.remote_address();
            if let Err(reason) = serve_connection(state, keys, incoming).await {
                tracing::debug!(%remote, %reason, "node connection ended");
            }
        });
    }
    endpoint.close(
        close_code::UNAVAILABLE.into(),
        b"the master is shutting down",
    );
}

/// Refuses a node: closes its connection with a reason it logs.
fn refuse(conn: &Connection, code: u32, reason: &str) -> String {
    conn.close(code.into(), reason.as_bytes());
    reason.to_string()
}

async fn serve_connection(
    state: ApiState,
    keys: Arc<NodeKeys>,
    incoming: quinn::Incoming,
) -> Result<(), String> {
    let conn = tokio::time::timeout(HELLO_TIMEOUT, incoming)
        .await
        .map_err(|_| "the handshake timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| "no hello in time".to_string())?
        .map_err(|e| e.to_string())?;
    let hello: Hello =
        match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, HELLO_BYTES_MAX)).await {
            Ok(Ok(Some(hello))) => hello,
            _ => return Err(refuse(&conn, close_code::PROTOCOL, "expected a hello")),
        };
    let master = state.name.to_string();
    let (node, welcome) = match hello {
        Hello::GetCa => {
            let welcome = Welcome::Ca {
                pem: state.ca_cert_pem.to_string(),
            };
            write_frame(&mut send, &welcome)
                .await
                .map_err(|e| e.to_string())?;
            let _ = send.finish();
            // The node closes once it has the CA.
            let _ = tokio::time::timeout(HELLO_TIMEOUT, conn.closed()).await;
            return Ok(());
        }
        Hello::Join { node_name, secret } => {
            if !keys.join_secret_matches(&secret) {
                return Err(refuse(
                    &conn,
                    close_code::UNAUTHENTICATED,
                    "the join token is wrong: its secret is not this cluster's",
                ));
            }
            let invalid = keelson_api::validation::is_dns1123_subdomain(&node_name);
            if !invalid.is_empty() {
                return Err(refuse(
                    &conn,
                    close_code::PROTOCOL,
                    &format!(
                        "the node name {node_name:?} is invalid: {}",
                        invalid.join("; ")
                    ),
                ));
            }
            let credential = keys.credential(&node_name);
            tracing::info!(node = %node_name, "a node joined");
            (
                node_name,
                Welcome::Joined {
                    credential,
                    master: master.clone(),
                },
            )
        }
        Hello::Node { credential } => match keys.verify(&credential) {
            Some(node) => (
                node,
                Welcome::Accepted {
                    master: master.clone(),
                },
            ),
            None => {
                return Err(refuse(
                    &conn,
                    close_code::UNAUTHENTICATED,
                    "the node credential is not valid for this cluster (join again with the \
                     join token)",
                ))
            }
        },
    };
    write_frame(&mut send, &welcome)
        .await
        .map_err(|e| e.to_string())?;
    let _ = send.finish();
    let credential = keys.credential(&node);
    let Ok(bearer) = HeaderValue::from_str(&format!("Bearer {credential}")) else {
        return Err(refuse(
            &conn,
            close_code::PROTOCOL,
            "the node name is not a valid header",
        ));
    };
    tracing::info!(node = %node, remote = %conn.remote_address(), "node connected");
    state.node_links.insert(&node, conn.clone());
    let annotate = tokio::spawn(annotate(state.clone(), node.clone(), conn.clone()));
    let served = loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let state = state.clone();
                let bearer = bearer.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_request(&state, bearer, send, recv).await {
                        tracing::debug!(error = %e, "a node request stream failed");
                    }
                });
            }
            Err(e) => break e,
        }
    };
    annotate.abort();
    state.node_links.remove(&node, conn.stable_id());
    tracing::info!(node = %node, reason = %served, "node disconnected");
    Ok(())
}

/// Keeps `keelson.io/connected-master` on the node's Node naming this master while the
/// connection lasts (the Node may not exist yet when the node first connects).
async fn annotate(state: ApiState, node: String, conn: Connection) {
    let client = crate::client::ApiClient::new(state.clone(), "nodelink");
    let Some(nodes) = keelson_api::resources::find("", "v1", "nodes") else {
        return;
    };
    let master = state.name.to_string();
    let patch = json!({"metadata": {"annotations": {CONNECTED_MASTER_ANNOTATION: master}}});
    loop {
        if conn.close_reason().is_some() {
            return;
        }
        match client.get(nodes, None, &node).await {
            Ok(obj) => {
                let current = keelson_api::object::annotations(&obj)
                    .get(CONNECTED_MASTER_ANNOTATION)
                    .cloned();
                if current.as_deref() != Some(master.as_str()) {
                    match client.merge_patch(nodes, None, &node, None, &patch).await {
                        Ok(_) => tracing::info!(%node, %master, "recorded the node's master"),
                        Err(e) => tracing::debug!(%node, error = %e, "cannot annotate the node"),
                    }
                }
            }
            Err(e) => tracing::debug!(%node, error = %e, "the node is not readable yet"),
        }
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(ANNOTATE_INTERVAL) => {}
        }
    }
}

fn head_and_status(error: &StatusError) -> (ResponseHead, Vec<u8>) {
    (
        ResponseHead {
            status: error.code(),
            content_type: "application/json".to_string(),
        },
        serde_json::to_vec(&error.to_value()).unwrap_or_default(),
    )
}

async fn write_status(send: &mut SendStream, error: &StatusError) -> Result<(), FrameError> {
    let (head, body) = head_and_status(error);
    write_frame(send, &head).await?;
    write_frame(send, &Chunk(body)).await?;
    let _ = send.finish();
    Ok(())
}

/// Serves one request stream through the API handler, streaming the body back.
async fn serve_request(
    state: &ApiState,
    bearer: HeaderValue,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), FrameError> {
    let request: Request = match read_frame(&mut recv, REQUEST_FRAME_BYTES_MAX).await {
        Ok(Some(request)) => request,
        Ok(None) => return Ok(()),
        Err(FrameError::Link(keelson_api::node_link::NodeLinkError::TooLarge(_))) => {
            let error = StatusError::request_entity_too_large(&format!(
                "the request body is larger than the limit of {REQUEST_BODY_BYTES_MAX} bytes"
            ));
            return write_status(&mut send, &error).await;
        }
        Err(e) => return Err(e),
    };
    if request.body.len() > REQUEST_BODY_BYTES_MAX {
        let error = StatusError::request_entity_too_large(&format!(
            "the request body is larger than the limit of {REQUEST_BODY_BYTES_MAX} bytes"
        ));
        return write_status(&mut send, &error).await;
    }
    let Ok(method) = Method::from_bytes(request.method.as_bytes()) else {
        let error = StatusError::bad_request(format!("bad method {:?}", request.method));
        return write_status(&mut send, &error).await;
    };
    let (path, query) = match request.path_and_query.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (request.path_and_query.clone(), None),
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, bearer);
    if let Ok(value) = HeaderValue::from_str(&request.content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    headers.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static("keelson-node/quic"),
    );
    let parts = ApiRequestParts {
        method,
        path,
        query,
        headers,
        body: Bytes::from(request.body),
    };
    let response = match handler_serve(state, parts).await {
        Ok(response) => response,
        Err(e) => return write_status(&mut send, &e).await,
    };
    let head = ResponseHead {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
    };
    write_frame(&mut send, &head).await?;
    let mut body = Box::pin(response.into_body());
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = send.stopped() => return Ok(()),
        };
        match frame {
            None => break,
            Some(Err(e)) => {
                let _ = send.reset(1u32.into());
                return Err(FrameError::Io(format!("the response body failed: {e}")));
            }
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data() else {
                    continue;
                };
                while data.has_remaining() {
                    let n = data.remaining().min(CHUNK_BYTES_MAX);
                    let chunk = data.copy_to_bytes(n);
                    write_frame(&mut send, &Chunk(chunk.to_vec())).await?;
                }
            }
        }
    }
    let _ = send.finish();
    Ok(())
}
