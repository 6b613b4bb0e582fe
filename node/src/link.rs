//! The node's QUIC link to the masters: one connection at a time to one of them, failing over
//! to the next on failure; one stream per API request (a watch streams its body); callbacks
//! the master opens on the connection (a pod's logs, the node's resource use) are served by a
//! [`Callbacks`].
//!
//! First contact uses the join token `K10<ca sha256>::<secret>`: the node fetches the CA
//! without verifying the server, checks the CA against the token's hash, saves it as
//! `ca.crt`, then connects verifying the master and joins, getting a credential it keeps in
//! `node-credential`. Later connections present the credential.

mod tls;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use keelson_api::node_link::{
    close_code, decode_body, encode_frame, frame_len, hex, Callback, Chunk, Hello, JoinToken,
    NodeStats, Request, ResponseHead, StatsRequest, Welcome, CHUNK_BYTES_MAX, FRAME_BYTES_MAX,
    FRAME_HEADER_BYTES, STATS_BYTES_MAX,
};
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a master asks the node for `pods/NAME/log`.
pub use keelson_api::node_link::LogRequest;

/// How long connecting and the hello may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Dials per master before a request gives up (with back-off between rounds).
const DIAL_ROUNDS_MAX: usize = 3;
/// How long the link waits between reconnect attempts after every master failed.
const RECONNECT_PAUSE: Duration = Duration::from_secs(5);
const HELLO_BYTES_MAX: usize = 64 * 1024;
/// The file the node keeps its credential in.
pub const CREDENTIAL_FILE: &str = "node-credential";
/// The file the node keeps the cluster CA in.
pub const CA_FILE: &str = "ca.crt";

#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("the join token is malformed: {0}")]
    BadToken(String),
    #[error(
        "the cluster CA of {master} (sha256 {got}) does not match the join token's hash {want}: \
         the token is for another cluster, or someone is in the middle"
    )]
    CaMismatch {
        master: String,
        want: String,
        got: String,
    },
    /// The master closed the connection with a reason (a wrong join token or credential).
    #[error("{master} refused this node: {reason}")]
    Refused { master: String, reason: String },
    /// Nothing reached a master (safe to retry elsewhere).
    #[error("cannot reach {master}: {reason}")]
    Unreachable { master: String, reason: String },
    /// The connection failed after the response began.
    #[error("the stream broke: {0}")]
    Stream(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the QUIC endpoint: {0}")]
    Setup(String),
}

impl LinkError {
    /// Errors no other master or retry can fix.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            LinkError::BadToken(_) | LinkError::CaMismatch { .. } | LinkError::Refused { .. }
        )
    }
}

/// A `Status`-like error a callback answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackError {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl CallbackError {
    pub fn not_found(message: impl Into<String>) -> Self {
        CallbackError {
            code: 404,
            reason: "NotFound".to_string(),
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        CallbackError {
            code: 400,
            reason: "BadRequest".to_string(),
            message: message.into(),
        }
    }

    /// The Kubernetes `Status` object.
    pub fn to_status(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        })
    }
}

/// A log body: chunks of text, ending when the log does (or, following, never).
pub type LogStream = Pin<Box<dyn futures::Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

/// What the node serves the masters (the kubelet implements it).
pub trait Callbacks: Send + Sync {
    fn logs(&self, request: LogRequest) -> BoxFuture<'static, Result<LogStream, CallbackError>>;

    /// The node's and its pods' CPU and memory use (for the metrics API).
    fn stats(
        &self,
        _request: StatsRequest,
    ) -> BoxFuture<'static, Result<NodeStats, CallbackError>> {
        Box::pin(async {
            Err(CallbackError {
                code: 503,
                reason: "ServiceUnavailable".to_string(),
                message: "this node serves no resource metrics".to_string(),
            })
        })
    }
}

/// The link; clones share the connection.
#[derive(Clone)]
pub struct NodeLink {
    inner: Arc<Inner>,
}

struct Inner {
    masters: Vec<String>,
    data_dir: PathBuf,
    token: JoinToken,
    node_name: String,
    endpoint: Endpoint,
    current: tokio::sync::Mutex<Current>,
    callbacks: std::sync::RwLock<Option<Arc<dyn Callbacks>>>,
}

#[derive(Default)]
struct Current {
    conn: Option<Live>,
    /// The master dialled next.
    next: usize,
}

#[derive(Clone)]
struct Live {
    conn: Connection,
    master: String,
    master_name: String,
}

/// A response: its head, then its body chunk by chunk.
pub struct LinkResponse {
    pub head: ResponseHead,
    recv: RecvStream,
    _send: SendStream,
}

impl LinkResponse {
    /// The next piece of the body; `None` at its end.
    pub async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, LinkError>> {
        match read_frame::<Chunk>(&mut self.recv, FRAME_BYTES_MAX).await {
            Ok(Some(Chunk(chunk))) => Some(Ok(chunk)),
            Ok(None) => None,
            Err(e) => Some(Err(LinkError::Stream(e))),
        }
    }

    /// The whole body, at most `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Vec<u8>, LinkError> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            body.extend_from_slice(&chunk?);
            if body.len() > limit {
                return Err(LinkError::Protocol(format!(
                    "the response is larger than {limit} bytes"
                )));
            }
        }
        Ok(body)
    }

    /// The body as a stream (for watches).
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, LinkError>> + Send + 'static {
        futures::stream::unfold(Some(self), |state| async move {
            let mut response = state?;
            match response.next_chunk().await {
                None => None,
                Some(Ok(chunk)) => Some((Ok(chunk), Some(response))),
                Some(Err(e)) => Some((Err(e), None)),
            }
        })
    }
}

async fn write_frame<T: Serialize>(send: &mut SendStream, value: &T) -> Result<(), String> {
    let frame = encode_frame(value).map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())
}

async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Option<T>, String> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = frame_len(header, limit).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    decode_body(std::any::type_name::<T>(), &body)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Why a connection closed, as the master said it.
fn refusal(master: &str, error: &quinn::ConnectionError) -> Option<LinkError> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close)
            if u64::from(close.error_code) == u64::from(close_code::UNAUTHENTICATED)
                || u64::from(close.error_code) == u64::from(close_code::PROTOCOL) =>
        {
            Some(LinkError::Refused {
                master: master.to_string(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            })
        }
        _ => None,
    }
}

/// The host part of `host:port` (without IPv6 brackets).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The lower-case hex SHA-256 of the first certificate of `pem`.
fn ca_hash(pem: &str) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("the CA is not PEM: {e}"))?;
    Ok(hex(ring::digest::digest(
        &ring::digest::SHA256,
        der.as_ref(),
    )
    .as_ref()))
}

fn write_private(path: &Path, contents: &str) -> Result<(), LinkError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let write = || -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| LinkError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl NodeLink {
    /// Connects to one of `masters` (`host:port`, the API addresses), joining with
    /// `join_token` if `data_dir` holds no credential for `node_name` yet. Fails at once on a
    /// wrong token; a master that cannot be reached is skipped (bounded rounds).
    pub async fn connect(
        masters: Vec<String>,
        data_dir: impl Into<PathBuf>,
        join_token: &str,
        node_name: &str,
    ) -> Result<NodeLink, LinkError> {
        let token = JoinToken::parse(join_token).map_err(|e| LinkError::BadToken(e.to_string()))?;
        let masters: Vec<String> = masters
            .into_iter()
            .map(|m| {
                m.trim()
                    .trim_start_matches("https://")
                    .trim_end_matches('/')
                    .to_string()
            })
            .filter(|m| !m.is_empty())
            .collect();
        if masters.is_empty() {
            return Err(LinkError::Setup("no master addresses".to_string()));
        }
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir).map_err(|e| LinkError::Io {
            path: data_dir.clone(),
            reason: e.to_string(),
        })?;
        let bind = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let endpoint = Endpoint::client(bind).map_err(|e| LinkError::Setup(e.to_string()))?;
        let link = NodeLink {
            inner: Arc::new(Inner {
                masters,
                data_dir,
                token,
                node_name: node_name.to_string(),
                endpoint,
                current: tokio::sync::Mutex::new(Current::default()),
                callbacks: std::sync::RwLock::new(None),
            }),
        };
        link.connection().await?;
        Ok(link)
    }

    /// Serves the masters' callbacks with `callbacks` from now on.
    pub fn set_callbacks(&self, callbacks: Arc<dyn Callbacks>) {
        *self
            .inner
            .callbacks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(callbacks);
    }

    pub fn masters(&self) -> &[String] {
        &self.inner.masters
    }

    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The name of the master connected now, if any.
    pub async fn connected_master(&self) -> Option<String> {
        let current = self.inner.current.lock().await;
        current
            .conn
            .as_ref()
            .filter(|live| live.conn.close_reason().is_none())
            .map(|live| live.master_name.clone())
    }

    /// Closes the connection; later requests connect again.
    pub async fn close(&self) {
        let mut current = self.inner.current.lock().await;
        if let Some(live) = current.conn.take() {
            live.conn
                .close(close_code::DONE.into(), b"the node is stopping");
        }
    }

    /// Sends one request: fails over to the next master while no response head has arrived
    /// (at most once per master); after the head, a broken stream is the caller's error.
    pub async fn request(&self, request: &Request) -> Result<LinkResponse, LinkError> {
        let frame = encode_frame(request).map_err(|e| LinkError::Protocol(e.to_string()))?;
        let mut last = None;
        for _ in 0..self.inner.masters.len() {
            let live = self.connection().await?;
            match send_on(&live.conn, &frame).await {
                Ok(response) => return Ok(response),
                Err(reason) => {
                    tracing::debug!(master = %live.master, %reason, "request failed; failing over");
                    self.forget(&live).await;
                    last = Some(LinkError::Unreachable {
                        master: live.master,
                        reason,
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| LinkError::Setup("no masters".to_string())))
    }

    /// Drops a connection that failed a request, closing it so the master forgets it at
    /// once (and stops naming itself the node's master).
    async fn forget(&self, dead: &Live) {
        dead.conn
            .close(close_code::DONE.into(), b"the connection failed a request");
        let mut current = self.inner.current.lock().await;
        if current
            .conn
            .as_ref()
            .is_some_and(|live| live.conn.stable_id() == dead.conn.stable_id())
        {
            current.conn = None;
        }
    }

    /// The live connection, dialling masters in turn (with back-off) when there is none.
    /// (Boxed: the callback task it spawns reconnects through it.)
    fn connection(&self) -> BoxFuture<'_, Result<Live, LinkError>> {
        Box::pin(async move {
            let mut current = self.inner.current.lock().await;
            if let Some(live) = &current.conn {
                if live.conn.close_reason().is_none() {
                    return Ok(live.clone());
                }
                tracing::info!(master = %live.master, "the connection to the master ended");
                current.conn = None;
            }
            let masters = self.inner.masters.len();
            let mut backoff = BACKOFF_MIN;
            let mut last = None;
            for attempt in 0..masters * DIAL_ROUNDS_MAX {
                let index = current.next % masters;
                current.next = (index + 1) % masters;
                let master = self.inner.masters[index].clone();
                match self.dial(&master).await {
                    Ok(live) => {
                        tracing::info!(master = %live.master, name = %live.master_name, "connected to a master");
                        current.conn = Some(live.clone());
                        tokio::spawn(serve_callbacks(
                            Arc::downgrade(&self.inner),
                            live.conn.clone(),
                        ));
                        return Ok(live);
                    }
                    Err(e) if e.is_fatal() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to a master");
                        last = Some(e);
                    }
                }
                if (attempt + 1) % masters == 0 {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            Err(last.unwrap_or_else(|| LinkError::Setup("no masters".to_string())))
        })
    }

    /// The CA (from `ca.crt` if it matches the token, else fetched and checked).
    async fn ca(&self, master: &str, addr: std::net::SocketAddr) -> Result<String, LinkError> {
        let path = self.inner.data_dir.join(CA_FILE);
        if let Ok(pem) = std::fs::read_to_string(&path) {
            if ca_hash(&pem).ok().as_deref() == Some(self.inner.token.ca_hash.as_str()) {
                return Ok(pem);
            }
        }
        let unreachable = |reason: String| LinkError::Unreachable {
            master: master.to_string(),
            reason,
        };
        let config = tls::unverified_client().map_err(LinkError::Setup)?;
        let connecting = self
            .inner
            .endpoint
            .connect_with(config, addr, tls::UNVERIFIED_SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| unreachable("the handshake timed out".to_string()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let welcome = hello(&conn, master, &Hello::GetCa).await;
        conn.close(close_code::DONE.into(), b"thanks");
        let Welcome::Ca { pem } = welcome? else {
            return Err(LinkError::Protocol("expected the CA".to_string()));
        };
        let got = ca_hash(&pem).map_err(LinkError::Protocol)?;
        if got != self.inner.token.ca_hash {
            return Err(LinkError::CaMismatch {
                master: master.to_string(),
                want: self.inner.token.ca_hash.clone(),
                got,
            });
        }
        write_private(&path, &pem)?;
        Ok(pem)
    }

    fn saved_credential(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.inner.data_dir.join(CREDENTIAL_FILE)).ok()?;
        let text = text.trim().to_string();
        let (name, _) = keelson_api::node_link::parse_credential(&text).ok()?;
        (name == self.inner.node_name).then_some(text)
    }

    async fn dial(&self, master: &str) -> Result<Live, LinkError> {
        let unreachable = |reason: String| LinkError::Unreachable {
            master: master.to_string(),
            reason,
        };
        let addr = tokio::net::lookup_host(master)
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .next()
            .ok_or_else(|| unreachable("the address resolves to nothing".to_string()))?;
        let ca = self.ca(master, addr).await?;
        let config = tls::verified_client(&ca).map_err(LinkError::Setup)?;
        let mut joined = false;
        loop {
            let connecting = self
                .inner
                .endpoint
                .connect_with(config.clone(), addr, host_of(master))
                .map_err(|e| unreachable(e.to_string()))?;
            let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| unreachable("the handshake timed out".to_string()))?
                .map_err(|e| unreachable(e.to_string()))?;
            let saved = if joined {
                None
            } else {
                self.saved_credential()
            };
            let greeting = match &saved {
                Some(credential) => Hello::Node {
                    credential: credential.clone(),
                },
                None => Hello::Join {
                    node_name: self.inner.node_name.clone(),
                    secret: self.inner.token.secret.clone(),
                },
            };
            let welcome = match hello(&conn, master, &greeting).await {
                // A credential of an older cluster: join again with the token.
                Err(LinkError::Refused { reason, .. }) if saved.is_some() => {
                    tracing::warn!(%master, %reason, "the saved credential was refused; joining again");
                    joined = true;
                    continue;
                }
                other => other?,
            };
            let master_name = match welcome {
                Welcome::Joined { credential, master } => {
                    write_private(
                        &self.inner.data_dir.join(CREDENTIAL_FILE),
                        &format!("{credential}\n"),
                    )?;
                    tracing::info!(node = %self.inner.node_name, "joined the cluster");
                    master
                }
                Welcome::Accepted { master } => master,
                Welcome::Ca { .. } => {
                    return Err(LinkError::Protocol("unexpected CA".to_string()));
                }
            };
            return Ok(Live {
                conn,
                master: master.to_string(),
                master_name,
            });
        }
    }
}

/// Sends a hello on a new stream and reads the welcome; a refusal comes as the connection's
/// close reason.
async fn hello(conn: &Connection, master: &str, greeting: &Hello) -> Result<Welcome, LinkError> {
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        write_frame(&mut send, greeting).await?;
        let _ = send.finish();
        read_frame::<Welcome>(&mut recv, HELLO_BYTES_MAX)
            .await?
            .ok_or_else(|| "the master ended the stream".to_string())
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, exchange).await {
        Ok(Ok(welcome)) => Ok(welcome),
        Ok(Err(reason)) => {
            // A refusal closes the connection: wait briefly for its reason.
            let closed = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            match closed.ok().and_then(|e| refusal(master, &e)) {
                Some(refused) => Err(refused),
                None => Err(LinkError::Unreachable {
                    master: master.to_string(),
                    reason,
                }),
            }
        }
        Err(_) => Err(LinkError::Unreachable {
            master: master.to_string(),
            reason: "no welcome in time".to_string(),
        }),
    }
}

/// Opens a stream, sends the request and reads the head; any error means "no head".
async fn send_on(conn: &Connection, frame: &[u8]) -> Result<LinkResponse, String> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(frame).await.map_err(|e| e.to_string())?;
    let _ = send.finish();
    let head = read_frame::<ResponseHead>(&mut recv, HELLO_BYTES_MAX)
        .await?
        .ok_or_else(|| "the master ended the stream before answering".to_string())?;
    Ok(LinkResponse {
        head,
        recv,
        _send: send,
    })
}

/// Serves the master's callbacks on `conn` until it ends, then keeps the link connected (the
/// masters need a connection to reach the node even when it sends nothing).
async fn serve_callbacks(link: Weak<Inner>, conn: Connection) {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(_) => break,
        };
        let Some(inner) = link.upgrade() else { return };
        let callbacks = inner
            .callbacks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        drop(inner);
        tokio::spawn(async move {
            if let Err(e) = serve_callback(callbacks, send, recv).await {
                tracing::debug!(error = %e, "a callback stream failed");
            }
        });
    }
    // Reconnect, unless the link is gone or another connection took over.
    loop {
        let Some(inner) = link.upgrade() else { return };
        let link_now = NodeLink { inner };
        {
            let current = link_now.inner.current.lock().await;
            if current
                .conn
                .as_ref()
                .is_some_and(|live| live.conn.stable_id() != conn.stable_id())
            {
                return;
            }
        }
        match link_now.connection().await {
            Ok(_) => return,
            Err(e) if e.is_fatal() => {
                tracing::error!(error = %e, "cannot reconnect to the masters");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reconnect to the masters yet"),
        }
        drop(link_now);
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}

async fn serve_callback(
    callbacks: Option<Arc<dyn Callbacks>>,
    mut send: SendStream,
    mut recv: RecvStream,
) -> Result<(), String> {
    let callback: Callback = read_frame(&mut recv, HELLO_BYTES_MAX)
        .await?
        .ok_or_else(|| "the master ended the callback stream".to_string())?;
    let request = match callback {
        Callback::Logs(request) => request,
        Callback::Stats(request) => return serve_stats(callbacks, request, send).await,
    };
    let answer = match callbacks {
        Some(callbacks) => callbacks.logs(request).await,
        None => Err(CallbackError {
            code: 503,
            reason: "ServiceUnavailable".to_string(),
            message: "this node serves no logs".to_string(),
        }),
    };
    let mut stream = match answer {
        Ok(stream) => stream,
        Err(e) => {
            let head = ResponseHead {
                status: e.code,
                content_type: "application/json".to_string(),
            };
            write_frame(&mut send, &head).await?;
            let body = serde_json::to_vec(&e.to_status()).unwrap_or_default();
            write_frame(&mut send, &Chunk(body)).await?;
            let _ = send.finish();
            return Ok(());
        }
    };
    let head = ResponseHead {
        status: 200,
        content_type: "text/plain".to_string(),
    };
    write_frame(&mut send, &head).await?;
    loop {
        use futures::StreamExt;
        let next = tokio::select! {
            _ = send.stopped() => return Ok(()),
            next = stream.next() => next,
        };
        match next {
            None => break,
            Some(Err(e)) => {
                let _ = send.reset(1u32.into());
                return Err(format!("the log failed: {e}"));
            }
            Some(Ok(chunk)) => {
                for piece in chunk.chunks(CHUNK_BYTES_MAX) {
                    write_frame(&mut send, &Chunk(piece.to_vec())).await?;
                }
            }
        }
    }
    let _ = send.finish();
    Ok(())
}

/// Answers a stats callback: the [`NodeStats`] as one JSON body, in chunks.
async fn serve_stats(
    callbacks: Option<Arc<dyn Callbacks>>,
    request: StatsRequest,
    mut send: SendStream,
) -> Result<(), String> {
    let answer = match callbacks {
        Some(callbacks) => callbacks.stats(request).await,
        None => Err(CallbackError {
            code: 503,
            reason: "ServiceUnavailable".to_string(),
            message: "this node serves no resource metrics".to_string(),
        }),
    };
    let (status, body) = match answer.and_then(|stats| {
        serde_json::to_vec(&stats).map_err(|e| CallbackError {
            code: 500,
            reason: "InternalError".to_string(),
            message: format!("cannot encode the stats: {e}"),
        })
    }) {
        Ok(body) if body.len() <= STATS_BYTES_MAX => (200, body),
        Ok(body) => {
            let e = CallbackError {
                code: 500,
                reason: "InternalError".to_string(),
                message: format!(
                    "the stats take {} bytes, over the limit of {STATS_BYTES_MAX}",
                    body.len()
                ),
            };
            (
                e.code,
                serde_json::to_vec(&e.to_status()).unwrap_or_default(),
            )
        }
        Err(e) => (
            e.code,
            serde_json::to_vec(&e.to_status()).unwrap_or_default(),
        ),
    };
    let head = ResponseHead {
        status,
        content_type: "application/json".to_string(),
    };
    write_frame(&mut send, &head).await?;
    for piece in body.chunks(CHUNK_BYTES_MAX) {
        write_frame(&mut send, &Chunk(piece.to_vec())).await?;
    }
    let _ = send.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_addresses() {
        assert_eq!(host_of("127.0.0.1:6443"), "127.0.0.1");
        assert_eq!(host_of("master-1:6443"), "master-1");
        assert_eq!(host_of("[::1]:6443"), "::1");
    }
}
